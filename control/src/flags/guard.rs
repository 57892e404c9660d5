//! The kill switch (`[flags.guard]`): every `interval`, compare the flag's
//! flagged requests (any state but the default) with its unflagged ones
//! over the last `window`, on the same routes; when the flagged error rate
//! exceeds the unflagged by more than `max_error_rate_increase` with
//! evidence, turn the flag off in one swap (`enabled = false`), record why
//! in the history and count the trip.
//!
//! The test is the statistical judge's: one-sided, Fisher's exact test on
//! small counts, else a z-test; the k-th look since the flag last changed
//! tests at `alpha × 6/(π²k²)`, so a flag that hurts nobody is turned off
//! with probability at most `alpha` however long it is watched.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use switchyard_proxy::flags::{Flag, StateTotals};

use crate::config::flags::GuardPolicy;
use crate::history::{self, Source};
use crate::plane::{ControlPlane, FlagEdit, Origin};
use crate::statistics;

/// How often the task wakes to see whose interval is up.
const TICK: Duration = Duration::from_millis(100);

/// What a guard last saw, for `GET /api/v1/flags`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GuardView {
    /// `waiting` (too few requests), `watching`, `tripped`, `disabled`.
    pub status: &'static str,
    pub window_seconds: f64,
    pub flagged: Window,
    pub unflagged: Window,
    pub p_value: Option<f64>,
    /// The level this look tested at.
    pub level: Option<f64>,
    pub looks: u64,
    /// RFC 3339 of the last trip.
    pub tripped_at: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Window {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
}

impl Window {
    fn of(totals: StateTotals) -> Window {
        Window {
            requests: totals.requests,
            errors: totals.errors,
            error_rate: totals.errors as f64 / totals.requests.max(1) as f64,
        }
    }
}

struct Track {
    /// (when, flagged, unflagged) since-start totals, oldest first.
    samples: VecDeque<(Instant, StateTotals, StateTotals)>,
    looks: u64,
    last_look: Option<Instant>,
    /// The flag's state when the looks began: a change starts them over.
    signature: String,
    view: GuardView,
}

pub struct Guards {
    plane: Weak<ControlPlane>,
    policies: Mutex<BTreeMap<String, GuardPolicy>>,
    tracks: Mutex<BTreeMap<String, Track>>,
}

impl Guards {
    pub fn new(plane: &Arc<ControlPlane>, policies: BTreeMap<String, GuardPolicy>) -> Arc<Guards> {
        Arc::new(Guards {
            plane: Arc::downgrade(plane),
            policies: Mutex::new(policies),
            tracks: Mutex::default(),
        })
    }

    /// The policies after a reload.
    pub fn set_policies(&self, policies: BTreeMap<String, GuardPolicy>) {
        *self.policies.lock().unwrap_or_else(PoisonError::into_inner) = policies;
    }

    pub fn policy(&self, flag: &str) -> Option<GuardPolicy> {
        self.policies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(flag)
            .cloned()
    }

    pub fn view(&self, flag: &str) -> Option<GuardView> {
        self.tracks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(flag)
            .map(|t| t.view.clone())
    }

    /// Runs the guards until the plane is gone.
    pub fn spawn(self: &Arc<Guards>) -> tokio::task::JoinHandle<()> {
        let guards = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(TICK);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(plane) = guards.plane.upgrade() else {
                    return;
                };
                for (name, reason, flag) in guards.look_all(&plane, Instant::now()) {
                    guards.trip(&plane, &name, &reason, &flag).await;
                }
            }
        })
    }

    /// Looks at every flag whose interval is up; the ones to turn off.
    fn look_all(&self, plane: &ControlPlane, now: Instant) -> Vec<(String, String, Arc<Flag>)> {
        let policies = self
            .policies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let table = plane.table().load();
        let mut trips = Vec::new();
        {
            let mut tracks = self.tracks.lock().unwrap_or_else(PoisonError::into_inner);
            tracks.retain(|name, _| policies.contains_key(name));
            for (name, policy) in &policies {
                let Some(flag) = table.flag(name) else {
                    continue;
                };
                let track = tracks.entry(name.clone()).or_insert_with(|| Track {
                    samples: VecDeque::new(),
                    looks: 0,
                    last_look: None,
                    signature: String::new(),
                    view: GuardView::default(),
                });
                if track.last_look.is_some_and(|at| now < at + policy.interval) {
                    continue;
                }
                track.last_look = Some(now);
                if let Some(reason) = look(flag, policy, track, now, &table_signature(&table, name))
                {
                    trips.push((name.clone(), reason, Arc::clone(flag)));
                }
            }
        }
        trips
    }

    /// Turns `name` off (fleet-wide in a fleet), saying why.
    async fn trip(&self, plane: &ControlPlane, name: &str, reason: &str, flag: &Flag) {
        let edit = FlagEdit {
            enabled: Some(false),
            ..FlagEdit::default()
        };
        let origin = Origin {
            source: Source::Auto,
            who: "guard",
            reason: Some(reason),
        };
        match plane.set_flag(name, &edit, None, origin).await {
            Ok(_) => {
                flag.counts().count_trip();
                tracing::warn!(flag = %name, %reason, "flag guard turned the flag off");
                let mut tracks = self.tracks.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(track) = tracks.get_mut(name) {
                    track.view.status = "tripped";
                    track.view.tripped_at = Some(history::now_rfc3339());
                }
            }
            Err(error) => {
                tracing::error!(flag = %name, %error, "flag guard could not turn the flag off")
            }
        }
    }
}

/// The flag's spec as text: a change of it starts the looks over.
fn table_signature(table: &switchyard_proxy::RoutingTable, name: &str) -> String {
    table
        .spec()
        .flags
        .iter()
        .find(|f| f.name == name)
        .map(history::describe_flag)
        .unwrap_or_default()
}

/// The flagged (every state but the default) and unflagged totals so far.
fn totals(flag: &Flag) -> (StateTotals, StateTotals) {
    let default = flag.default_state();
    let mut flagged = StateTotals::default();
    for state in (0..flag.states().count()).filter(|s| *s != default) {
        let t = flag.counts().totals(state);
        flagged.requests += t.requests;
        flagged.errors += t.errors;
    }
    (flagged, flag.counts().totals(default))
}

fn minus(now: StateTotals, then: StateTotals) -> StateTotals {
    StateTotals {
        requests: now.requests.saturating_sub(then.requests),
        errors: now.errors.saturating_sub(then.errors),
    }
}

/// One look; the reason to trip, when it must.
fn look(
    flag: &Flag,
    policy: &GuardPolicy,
    track: &mut Track,
    now: Instant,
    signature: &str,
) -> Option<String> {
    if track.signature != signature {
        track.signature = signature.to_owned();
        track.samples.clear();
        track.looks = 0;
    }
    let (flagged, unflagged) = totals(flag);
    track.samples.push_back((now, flagged, unflagged));
    // Keep one sample at or before the window's start: the base.
    while track
        .samples
        .get(1)
        .is_some_and(|(at, _, _)| now.duration_since(*at) >= policy.window)
    {
        track.samples.pop_front();
    }
    let (since, base_flagged, base_unflagged) = track.samples.front().copied()?;
    let f = minus(flagged, base_flagged);
    let u = minus(unflagged, base_unflagged);
    let view = &mut track.view;
    view.window_seconds = now.duration_since(since).as_secs_f64();
    view.flagged = Window::of(f);
    view.unflagged = Window::of(u);
    if !flag.enabled {
        view.status = if view.tripped_at.is_some() {
            "tripped"
        } else {
            "disabled"
        };
        return None;
    }
    if f.requests < policy.min_requests || u.requests == 0 {
        view.status = "waiting";
        return None;
    }
    track.looks += 1;
    view.looks = track.looks;
    let level = statistics::spent_alpha(policy.alpha, track.looks);
    let (p, test) = statistics::rate_increase_p(
        f.errors,
        f.requests,
        u.errors,
        u.requests,
        policy.max_error_rate_increase,
    )?;
    view.p_value = Some(p);
    view.level = Some(level);
    view.status = "watching";
    (p < level).then(|| {
        format!(
            "flag guard: flagged requests failed {:.2}% ({} of {}) against {:.2}% ({} of {}) unflagged over {:.0}s, beyond the allowed +{:.2} points (one-sided {test} p = {p:.2e} < {level:.2e}, look {})",
            view.flagged.error_rate * 100.0,
            f.errors,
            f.requests,
            view.unflagged.error_rate * 100.0,
            u.errors,
            u.requests,
            view.window_seconds,
            policy.max_error_rate_increase * 100.0,
            track.looks
        )
    })
}
