//! Progressive rollout with automatic rollback: per route, the canary's
//! weight walks through `steps`; each step is observed for `interval`, and
//! the canary is judged against the baseline on the exact requests that
//! finished during the step (metrics snapshots, not sampled summaries).
//!
//! Each evaluation (four per interval) decides one of:
//! - `hold`: fewer than `min_requests` canary requests so far; never advances;
//! - `rollback`: error rate above `max_error_rate`, p99 above `max_p99`, or
//!   p99 above `max_p99_ratio` × the baseline's: canary weight → 0 in one
//!   swap, at once, without waiting for the interval to end;
//! - `advance`: the interval passed and every check held: the next step;
//! - `complete`: the last step passed: `on_success = "promote"` gives the
//!   canary all the traffic, `"hold"` leaves the last step's weights.
//!
//! A manual weight change of the route (API or file) while a rollout runs
//! pauses it: the operator's change wins, and `resume` starts observing the
//! current step afresh.
//!
//! Here: the controller (commands, the evaluation loop, its metrics);
//! `judge`: phases, per-step state and the verdict on the figures; `api`:
//! the admin endpoints. The policy's schema is `crate::config::rollout`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use serde_json::{json, Value};
use switchyard_proxy::metrics::{Metrics, Snapshot, VersionStats};

use crate::config::{OnSuccess, RolloutPolicy};
use crate::history::{self, Change, Source};
use crate::plane::{ChangeError, ControlPlane, Origin, PlaneEvent};

mod api;
mod judge;

pub use api::admin_extension;
use judge::{failure, State};
pub use judge::{Figures, Phase, Verdict};

/// Why a rollout command was refused.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("route '{0}' has no [routes.rollout] policy")]
    NoPolicy(String),
    #[error("the rollout of route '{route}' is {phase:?}: cannot {action} it")]
    WrongPhase {
        route: String,
        phase: Phase,
        action: &'static str,
    },
    #[error("rollouts judge from per-version metrics: set [metrics] enabled = true")]
    MetricsOff,
    #[error(transparent)]
    Change(#[from] ChangeError),
}

pub struct Rollouts {
    plane: Arc<ControlPlane>,
    metrics: Metrics,
    policies: Mutex<HashMap<String, RolloutPolicy>>,
    states: Mutex<HashMap<String, State>>,
    state_gauge: Option<IntGaugeVec>,
    decisions: Option<IntCounterVec>,
}

impl Rollouts {
    /// The controller for `policies` (by route); registers its metrics.
    pub fn new(
        plane: Arc<ControlPlane>,
        metrics: Metrics,
        policies: HashMap<String, RolloutPolicy>,
    ) -> Arc<Rollouts> {
        let state_gauge = IntGaugeVec::new(
            Opts::new(
                "switchyard_rollout_state",
                "Rollout state per route: 0 idle, 1 running, 2 paused, 3 completed, 4 rolled back, 5 aborted.",
            ),
            &["route"],
        )
        .ok();
        let decisions = IntCounterVec::new(
            Opts::new(
                "switchyard_rollout_decisions_total",
                "Rollout decisions per route: hold, advance, rollback, complete, pause.",
            ),
            &["route", "decision"],
        )
        .ok();
        for collector in [
            state_gauge
                .clone()
                .map(|g| Box::new(g) as Box<dyn prometheus::core::Collector>),
            decisions
                .clone()
                .map(|c| Box::new(c) as Box<dyn prometheus::core::Collector>),
        ]
        .into_iter()
        .flatten()
        {
            if let Err(error) = metrics.registry().register(collector) {
                tracing::warn!(%error, "rollout metric not registered");
            }
        }
        let rollouts = Arc::new(Rollouts {
            plane,
            metrics,
            policies: Mutex::new(HashMap::new()),
            states: Mutex::new(HashMap::new()),
            state_gauge,
            decisions,
        });
        rollouts.set_policies(policies);
        rollouts
    }

    fn states(&self) -> MutexGuard<'_, HashMap<String, State>> {
        self.states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn policies(&self) -> MutexGuard<'_, HashMap<String, RolloutPolicy>> {
        self.policies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// New policies (after a reload): routes without one stop rolling out.
    pub fn set_policies(&self, policies: HashMap<String, RolloutPolicy>) {
        let mut states = self.states();
        states.retain(|route, _| policies.contains_key(route));
        for route in policies.keys() {
            states.entry(route.clone()).or_default();
            self.gauge(route, states.get(route).map_or(Phase::Idle, |s| s.phase));
        }
        *self.policies() = policies;
    }

    fn gauge(&self, route: &str, phase: Phase) {
        if let Some(gauge) = &self.state_gauge {
            gauge.with_label_values(&[route]).set(phase.gauge());
        }
    }

    fn count(&self, route: &str, decision: &str) {
        if let Some(decisions) = &self.decisions {
            decisions.with_label_values(&[route, decision]).inc();
        }
    }

    /// Runs the evaluations until aborted; also starts `autostart` rollouts
    /// and pauses rollouts whose route is changed by hand.
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        self.plane.observe(Box::new(move |event| {
            if let (PlaneEvent::RoutesChanged { routes, source }, Some(rollouts)) =
                (event, weak.upgrade())
            {
                if *source != Source::Auto {
                    for route in routes.iter() {
                        rollouts.pause_for_manual_change(route);
                    }
                }
            }
        }));
        let autostart: Vec<String> = self
            .policies()
            .iter()
            .filter(|(_, p)| p.autostart)
            .map(|(r, _)| r.clone())
            .collect();
        for route in autostart {
            if let Err(error) = self.begin(&route) {
                tracing::warn!(%route, %error, "rollout did not start");
            }
        }
        let rollouts = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let tick = rollouts
                    .policies()
                    .values()
                    .map(|p| p.interval / 4)
                    .min()
                    .unwrap_or(Duration::from_secs(1))
                    .clamp(Duration::from_millis(20), Duration::from_secs(5));
                tokio::time::sleep(tick).await;
                let routes: Vec<String> = rollouts.policies().keys().cloned().collect();
                for route in routes {
                    rollouts.evaluate(&route);
                }
            }
        })
    }

    fn policy(&self, route: &str) -> Result<RolloutPolicy, RolloutError> {
        self.policies()
            .get(route)
            .cloned()
            .ok_or_else(|| RolloutError::NoPolicy(route.to_owned()))
    }

    /// `start`: the first step's weights, observation from now.
    pub fn begin(&self, route: &str) -> Result<Value, RolloutError> {
        let policy = self.policy(route)?;
        if !self.metrics.enabled() {
            return Err(RolloutError::MetricsOff);
        }
        let mut states = self.states();
        let state = states.entry(route.to_owned()).or_default();
        if matches!(state.phase, Phase::Running | Phase::Paused) {
            return Err(RolloutError::WrongPhase {
                route: route.to_owned(),
                phase: state.phase,
                action: "start",
            });
        }
        let weight = policy.steps.first().copied().unwrap_or(100);
        self.set_canary(
            route,
            &policy,
            weight,
            &format!(
                "rollout started: step 1 of {}, canary {weight}%",
                policy.steps.len()
            ),
        )?;
        *state = State {
            phase: Phase::Running,
            ..State::default()
        };
        self.observe_afresh(route, &policy, state);
        self.gauge(route, Phase::Running);
        Ok(self.describe(route, &policy, state))
    }

    pub fn pause(&self, route: &str) -> Result<Value, RolloutError> {
        self.transition(route, "pause", &[Phase::Running], Phase::Paused)
    }

    pub fn resume(&self, route: &str) -> Result<Value, RolloutError> {
        let value = self.transition(route, "resume", &[Phase::Paused], Phase::Running)?;
        let policy = self.policy(route)?;
        if let Some(state) = self.states().get_mut(route) {
            self.observe_afresh(route, &policy, state);
        }
        Ok(value)
    }

    /// `abort`: canary weight 0 at once.
    pub fn abort(&self, route: &str) -> Result<Value, RolloutError> {
        let policy = self.policy(route)?;
        let mut states = self.states();
        let state = states.entry(route.to_owned()).or_default();
        if !matches!(state.phase, Phase::Running | Phase::Paused) {
            return Err(RolloutError::WrongPhase {
                route: route.to_owned(),
                phase: state.phase,
                action: "abort",
            });
        }
        self.set_canary(route, &policy, 0, "rollout aborted by an operator")?;
        state.phase = Phase::Aborted;
        self.gauge(route, Phase::Aborted);
        Ok(self.describe(route, &policy, state))
    }

    pub fn status(&self, route: &str) -> Result<Value, RolloutError> {
        let policy = self.policy(route)?;
        let mut states = self.states();
        let state = states.entry(route.to_owned()).or_default();
        Ok(self.describe(route, &policy, state))
    }

    fn transition(
        &self,
        route: &str,
        action: &'static str,
        from: &[Phase],
        to: Phase,
    ) -> Result<Value, RolloutError> {
        let policy = self.policy(route)?;
        let mut states = self.states();
        let state = states.entry(route.to_owned()).or_default();
        if !from.contains(&state.phase) {
            return Err(RolloutError::WrongPhase {
                route: route.to_owned(),
                phase: state.phase,
                action,
            });
        }
        state.phase = to;
        self.gauge(route, to);
        Ok(self.describe(route, &policy, state))
    }

    fn pause_for_manual_change(&self, route: &str) {
        let mut states = self.states();
        if let Some(state) = states.get_mut(route).filter(|s| s.phase == Phase::Running) {
            state.phase = Phase::Paused;
            state.last_verdict = Some(Verdict {
                time: history::now_rfc3339(),
                decision: "pause",
                step: state.step,
                reason:
                    "the route's weights were changed by hand: rollout paused (resume to continue)"
                        .into(),
                canary: None,
                baseline: None,
            });
            self.gauge(route, Phase::Paused);
            self.count(route, "pause");
            tracing::warn!(%route, "manual change during a rollout: paused");
        }
    }

    fn observe_afresh(&self, route: &str, policy: &RolloutPolicy, state: &mut State) {
        state.step_started = Instant::now();
        state.last_hold = None;
        state.canary_start = self.metrics.snapshot(route, &policy.canary);
        state.baseline_start = self.metrics.snapshot(route, &policy.baseline);
    }

    /// Since the step started: (canary, baseline).
    fn step_stats(
        &self,
        route: &str,
        policy: &RolloutPolicy,
        state: &State,
    ) -> (Option<VersionStats>, Option<VersionStats>) {
        let since = |version: &str, start: &Option<Snapshot>| {
            let now = self.metrics.snapshot(route, version)?;
            match start {
                Some(start) => now.since(start),
                None => Some(now.totals(state.step_started)),
            }
        };
        (
            since(&policy.canary, &state.canary_start),
            since(&policy.baseline, &state.baseline_start),
        )
    }

    /// One evaluation of one route.
    fn evaluate(&self, route: &str) {
        let Ok(policy) = self.policy(route) else {
            return;
        };
        let mut states = self.states();
        let Some(state) = states.get_mut(route).filter(|s| s.phase == Phase::Running) else {
            return;
        };
        let (canary, baseline) = self.step_stats(route, &policy, state);
        let canary = canary.unwrap_or_default();
        let elapsed = state.step_started.elapsed();
        let figures = (
            Some(Figures::of(&canary)),
            baseline.as_ref().map(Figures::of),
        );
        if canary.requests < policy.min_requests {
            let due = state.last_hold.map_or(elapsed, |at| at.elapsed()) >= policy.interval;
            if due {
                state.last_hold = Some(Instant::now());
                let reason = format!(
                    "too little traffic: {} canary requests this step, {} needed",
                    canary.requests, policy.min_requests
                );
                self.verdict(route, state, "hold", reason, figures);
            }
            return;
        }
        if let Some(reason) = failure(&policy, &canary, baseline.as_ref()) {
            let reason = format!("rolled back at step {}: {reason}", state.step + 1);
            match self.set_canary(route, &policy, 0, &reason) {
                Ok(()) => {
                    state.phase = Phase::RolledBack;
                    self.gauge(route, Phase::RolledBack);
                    tracing::warn!(%route, %reason, "rollout rolled back");
                    self.verdict(route, state, "rollback", reason, figures);
                }
                Err(error) => tracing::error!(%route, %error, "rollback failed"),
            }
            return;
        }
        if elapsed < policy.interval {
            return;
        }
        let next = state.step + 1;
        let passed = format!(
            "step {} passed: canary error rate {:.2}%, p99 {:.1} ms over {} requests",
            state.step + 1,
            canary.error_rate() * 100.0,
            canary.latency.p99.as_secs_f64() * 1e3,
            canary.requests
        );
        if let Some(weight) = policy.steps.get(next).copied() {
            let reason = format!(
                "{passed}; advancing to step {} (canary {weight}%)",
                next + 1
            );
            if let Err(error) = self.set_canary(route, &policy, weight, &reason) {
                tracing::error!(%route, %error, "rollout could not advance");
                return;
            }
            state.step = next;
            self.observe_afresh(route, &policy, state);
            self.verdict(route, state, "advance", reason, figures);
        } else {
            let reason = match policy.on_success {
                OnSuccess::Promote => format!("{passed}; rollout complete: canary promoted"),
                OnSuccess::Hold => format!("{passed}; rollout complete: weights held"),
            };
            if policy.on_success == OnSuccess::Promote {
                if let Err(error) = self.promote(route, &policy, &reason) {
                    tracing::error!(%route, %error, "promotion failed");
                    return;
                }
            }
            state.phase = Phase::Completed;
            self.gauge(route, Phase::Completed);
            self.verdict(route, state, "complete", reason, figures);
        }
    }

    fn verdict(
        &self,
        route: &str,
        state: &mut State,
        decision: &'static str,
        reason: String,
        figures: (Option<Figures>, Option<Figures>),
    ) {
        self.count(route, decision);
        if decision == "hold" {
            // Holds change no weight: record them in the history anyway, so
            // the trail explains why nothing moved.
            let table = self.plane.table().load();
            let weights = table
                .spec()
                .routes
                .iter()
                .find(|r| r.name == route)
                .map(history::weights);
            self.plane.record_changes(vec![Change {
                time: history::now_rfc3339(),
                source: Source::Auto,
                who: "rollout".into(),
                route: route.to_owned(),
                action: "hold".into(),
                before: weights.clone(),
                after: weights,
                revision: table.revision(),
                reason: Some(reason.clone()),
            }]);
        }
        state.last_verdict = Some(Verdict {
            time: history::now_rfc3339(),
            decision,
            step: state.step,
            reason,
            canary: figures.0,
            baseline: figures.1,
        });
    }

    /// Canary to `weight`, baseline to the rest of 100; others unchanged.
    fn set_canary(
        &self,
        route: &str,
        policy: &RolloutPolicy,
        weight: u32,
        reason: &str,
    ) -> Result<(), ChangeError> {
        let weights = [
            (policy.canary.clone(), i64::from(weight)),
            (
                policy.baseline.clone(),
                i64::from(100u32.saturating_sub(weight)),
            ),
        ];
        self.plane
            .set_weights(route, &weights.into(), false, None, automatic(reason))
            .map(|_| ())
    }

    fn promote(
        &self,
        route: &str,
        policy: &RolloutPolicy,
        reason: &str,
    ) -> Result<(), ChangeError> {
        self.plane
            .promote(route, &policy.canary, None, automatic(reason))
            .map(|_| ())
    }

    fn describe(&self, route: &str, policy: &RolloutPolicy, state: &State) -> Value {
        json!({
            "route": route,
            "state": state.phase,
            "step": state.step + 1,
            "steps": policy.steps,
            "canary": policy.canary,
            "baseline": policy.baseline,
            "canary_weight": policy.steps.get(state.step),
            "interval_ms": u64::try_from(policy.interval.as_millis()).unwrap_or(u64::MAX),
            "step_elapsed_ms": u64::try_from(state.step_started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "last_verdict": state.last_verdict,
        })
    }
}

/// A change the rollout makes on its own, for `reason`.
fn automatic(reason: &str) -> Origin<'_> {
    Origin {
        source: Source::Auto,
        who: "rollout",
        reason: Some(reason),
    }
}
