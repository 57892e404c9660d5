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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use serde::Serialize;
use serde_json::{json, Value};
use switchyard_proxy::metrics::{Metrics, Snapshot, VersionStats};
use switchyard_proxy::RouteSpec;

use crate::history::{self, Change, Source};
use crate::plane::{ChangeError, ControlPlane, PlaneEvent};

/// What to do after the last step passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnSuccess {
    Promote,
    Hold,
}

/// A route's rollout policy (`[routes.rollout]`).
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutPolicy {
    pub canary: String,
    pub baseline: String,
    /// Canary weight (percent) per step.
    pub steps: Vec<u32>,
    pub interval: Duration,
    pub min_requests: u64,
    pub max_error_rate: f64,
    pub max_p99_ratio: Option<f64>,
    pub max_p99: Option<Duration>,
    pub on_success: OnSuccess,
    /// Start when the proxy starts (otherwise through the API).
    pub autostart: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Idle,
    Running,
    Paused,
    Completed,
    RolledBack,
    Aborted,
}

impl Phase {
    /// The value of `switchyard_rollout_state`.
    fn gauge(self) -> i64 {
        match self {
            Phase::Idle => 0,
            Phase::Running => 1,
            Phase::Paused => 2,
            Phase::Completed => 3,
            Phase::RolledBack => 4,
            Phase::Aborted => 5,
        }
    }
}

/// The figures a verdict was made on.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub requests: u64,
    pub error_rate: f64,
    pub p99_ms: f64,
}

impl Figures {
    fn of(stats: &VersionStats) -> Figures {
        Figures {
            requests: stats.requests,
            error_rate: stats.error_rate(),
            p99_ms: stats.latency.p99.as_secs_f64() * 1e3,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub time: String,
    pub decision: &'static str,
    pub step: usize,
    pub reason: String,
    pub canary: Option<Figures>,
    pub baseline: Option<Figures>,
}

struct State {
    phase: Phase,
    step: usize,
    step_started: Instant,
    last_hold: Option<Instant>,
    canary_start: Option<Snapshot>,
    baseline_start: Option<Snapshot>,
    last_verdict: Option<Verdict>,
}

impl Default for State {
    fn default() -> Self {
        State {
            phase: Phase::Idle,
            step: 0,
            step_started: Instant::now(),
            last_hold: None,
            canary_start: None,
            baseline_start: None,
            last_verdict: None,
        }
    }
}

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
        self.plane
            .change_route(route, None, Source::Auto, "rollout", Some(reason), |spec| {
                set_weight(spec, &policy.canary, weight)?;
                set_weight(spec, &policy.baseline, 100u32.saturating_sub(weight))
            })
            .map(|_| ())
    }

    fn promote(
        &self,
        route: &str,
        policy: &RolloutPolicy,
        reason: &str,
    ) -> Result<(), ChangeError> {
        self.plane
            .change_route(route, None, Source::Auto, "rollout", Some(reason), |spec| {
                for version in &mut spec.versions {
                    version.weight = if version.name == policy.canary {
                        100
                    } else {
                        0
                    };
                }
                Ok(())
            })
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

/// `GET /api/v1/routes/{route}/rollout` and
/// `POST /api/v1/routes/{route}/rollout/{start|pause|resume|abort}`.
pub fn admin_extension(rollouts: Arc<Rollouts>) -> crate::admin::Extension {
    use crate::admin::json_response;
    use http::{Method, StatusCode};
    Box::new(move |method: &Method, path: &str, _query: Option<&str>| {
        let rest = path.strip_prefix("/api/v1/routes/")?;
        let (route, action) = match rest.split('/').collect::<Vec<_>>().as_slice() {
            [route, "rollout"] => (route.to_string(), None),
            [route, "rollout", action] => (route.to_string(), Some(action.to_string())),
            _ => return None,
        };
        let result = match (method, action.as_deref()) {
            (&Method::GET, None) => rollouts.status(&route),
            (&Method::POST, Some("start")) => rollouts.begin(&route),
            (&Method::POST, Some("pause")) => rollouts.pause(&route),
            (&Method::POST, Some("resume")) => rollouts.resume(&route),
            (&Method::POST, Some("abort")) => rollouts.abort(&route),
            _ => return None,
        };
        Some(match result {
            Ok(value) => json_response(StatusCode::OK, &value),
            Err(error) => {
                let status = match &error {
                    RolloutError::NoPolicy(_) => StatusCode::NOT_FOUND,
                    RolloutError::WrongPhase { .. } | RolloutError::MetricsOff => {
                        StatusCode::CONFLICT
                    }
                    RolloutError::Change(ChangeError::UnknownRoute(_)) => StatusCode::NOT_FOUND,
                    RolloutError::Change(_) => StatusCode::BAD_REQUEST,
                };
                json_response(status, &json!({"error": error.to_string(), "detail": null}))
            }
        })
    })
}

fn set_weight(spec: &mut RouteSpec, version: &str, weight: u32) -> Result<(), ChangeError> {
    let target = spec
        .versions
        .iter_mut()
        .find(|v| v.name == version)
        .ok_or_else(|| {
            ChangeError::Invalid(format!(
                "route '{}' has no version '{version}' (named by its rollout policy)",
                spec.name
            ))
        })?;
    target.weight = weight;
    Ok(())
}

/// Why the canary fails the policy, if it does.
fn failure(
    policy: &RolloutPolicy,
    canary: &VersionStats,
    baseline: Option<&VersionStats>,
) -> Option<String> {
    let error_rate = canary.error_rate();
    if error_rate > policy.max_error_rate {
        return Some(format!(
            "canary error rate {:.2}% ({} of {} requests) is above the maximum {:.2}%",
            error_rate * 100.0,
            canary.errors,
            canary.requests,
            policy.max_error_rate * 100.0
        ));
    }
    let p99 = canary.latency.p99;
    if let Some(max) = policy.max_p99.filter(|max| p99 > *max) {
        return Some(format!(
            "canary p99 {:.1} ms is above the maximum {:.1} ms",
            ms(p99),
            ms(max)
        ));
    }
    if let (Some(ratio), Some(baseline)) =
        (policy.max_p99_ratio, baseline.filter(|b| b.requests > 0))
    {
        let base = baseline.latency.p99;
        if !base.is_zero() && p99.as_secs_f64() / base.as_secs_f64() > ratio {
            return Some(format!(
                "canary p99 {:.1} ms is {:.2}x the baseline's {:.1} ms (maximum {ratio}x)",
                ms(p99),
                p99.as_secs_f64() / base.as_secs_f64(),
                ms(base)
            ));
        }
    }
    None
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RolloutPolicy {
        RolloutPolicy {
            canary: "canary".into(),
            baseline: "stable".into(),
            steps: vec![5, 25, 50, 100],
            interval: Duration::from_millis(200),
            min_requests: 10,
            max_error_rate: 0.01,
            max_p99_ratio: Some(1.5),
            max_p99: Some(Duration::from_millis(500)),
            on_success: OnSuccess::Promote,
            autostart: false,
        }
    }

    fn stats(requests: u64, errors: u64, p99_ms: u64) -> VersionStats {
        VersionStats {
            requests,
            errors,
            latency: switchyard_proxy::metrics::Latency {
                p99: Duration::from_millis(p99_ms),
                ..Default::default()
            },
            ..VersionStats::default()
        }
    }

    #[test]
    fn judges_error_rate_absolute_and_relative_latency() {
        let p = policy();
        assert!(failure(&p, &stats(100, 1, 10), Some(&stats(100, 0, 10))).is_none());
        let reason = failure(&p, &stats(100, 20, 10), None).unwrap_or_default();
        assert!(reason.contains("20.00%"), "{reason}");
        assert!(
            failure(&p, &stats(100, 0, 600), None).is_some_and(|r| r.contains("maximum 500.0 ms"))
        );
        assert!(failure(&p, &stats(100, 0, 40), Some(&stats(100, 0, 10)))
            .is_some_and(|r| r.contains("4.00x")));
        // No baseline traffic (canary at 100 %): the ratio cannot be judged.
        assert!(failure(&p, &stats(100, 0, 40), Some(&stats(0, 0, 0))).is_none());
    }
}
