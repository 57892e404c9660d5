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
//! In a fleet (`[cluster]`) one replica judges: the leader elected through
//! etcd. It judges the whole fleet's traffic (every replica's published
//! histograms, merged exactly: [`observe`]), changes weights through the
//! fleet's store, and keeps the rollout's record there ([`record`]), so
//! every replica shows the same status and commands work on any of them.
//! Without the fleet's figures (etcd unreachable) it holds and says so: it
//! never decides on part of the data. When the leader stops, another takes
//! over within the lease TTL and continues the same step, observing it
//! afresh (it never judges on figures it did not see begin).
//!
//! Here: the controller (commands, the evaluation loop, its metrics);
//! `judge`: phases, per-step state and the verdict on the figures;
//! `observe`: the figures; `record`: the fleet's record; `api`: the admin
//! endpoints. The policy's schema is `crate::config::rollout`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use serde_json::{json, Value};
use switchyard_proxy::metrics::Metrics;

use crate::config::{Judge, OnSuccess, RolloutPolicy};
use crate::history::{self, Change, Source};
use crate::plane::{
    ChangeError, ControlPlane, Origin, PlaneEvent, SharedStore, StoreError, TrafficOp,
};

mod api;
mod judge;
mod observe;
mod record;
mod statistical;

pub use api::admin_extension;
use judge::{failure, State};
pub use judge::{Figures, Phase, Verdict};
use record::Record;

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
    #[error("the rollout's record in the fleet: {0}")]
    Store(#[from] StoreError),
}

pub struct Rollouts {
    plane: Arc<ControlPlane>,
    metrics: Metrics,
    policies: Mutex<HashMap<String, RolloutPolicy>>,
    states: Mutex<HashMap<String, State>>,
    /// One command or evaluation at a time: each reads the state, awaits
    /// weight changes (and the fleet), then writes the state back.
    ops: tokio::sync::Mutex<()>,
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
            ops: tokio::sync::Mutex::new(()),
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

    fn store(&self) -> Option<&Arc<dyn SharedStore>> {
        self.plane.store()
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

    /// Runs the evaluations until aborted (starting `autostart` rollouts),
    /// and pauses rollouts whose route is changed by hand.
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        self.plane.observe(Box::new(move |event| {
            if let (PlaneEvent::RoutesChanged { routes, source }, Some(rollouts)) =
                (event, weak.upgrade())
            {
                if *source != Source::Auto {
                    for route in routes.iter() {
                        rollouts.manual_change(route);
                    }
                }
            }
        }));
        let rollouts = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                rollouts.tick().await;
                let tick = rollouts
                    .policies()
                    .values()
                    .map(|p| p.interval / 4)
                    .min()
                    .unwrap_or(Duration::from_secs(1))
                    .clamp(Duration::from_millis(20), Duration::from_secs(5));
                tokio::time::sleep(tick).await;
            }
        })
    }

    /// One round: in a fleet, the fleet's records first (and nothing more
    /// unless this replica leads); then autostarts and evaluations.
    async fn tick(&self) {
        let _ops = self.ops.lock().await;
        if let Some(store) = self.store() {
            if let Err(error) = self.sync(None).await {
                tracing::debug!(%error, "rollout records not read");
                return;
            }
            if !store.is_leader() {
                return;
            }
        }
        let routes: Vec<(String, bool)> = self
            .policies()
            .iter()
            .map(|(route, policy)| (route.clone(), policy.autostart))
            .collect();
        for (route, autostart) in routes {
            let fresh = self
                .states()
                .get(&route)
                .is_some_and(|s| s.phase == Phase::Idle && s.revision == 0);
            if autostart && fresh {
                if let Err(error) = self.begin_locked(&route).await {
                    tracing::warn!(%route, %error, "rollout did not start");
                }
                continue;
            }
            self.evaluate(&route).await;
        }
    }

    /// In a fleet: lays the fleet's records (of `route`, or all) over the
    /// local states. Without a fleet: nothing.
    async fn sync(&self, route: Option<&str>) -> Result<(), StoreError> {
        let Some(store) = self.store() else {
            return Ok(());
        };
        let records = store.rollouts().await?;
        let mut states = self.states();
        for (name, record) in records {
            if route.is_some_and(|r| r != name) {
                continue;
            }
            if let Some(state) = states.get_mut(&name) {
                Record::adopt(&record.value, record.revision, state);
                self.gauge(&name, state.phase);
            }
        }
        Ok(())
    }

    /// In a fleet: writes `route`'s state as its record. `judge`: a decision
    /// of the leader's (guarded by its leadership too).
    async fn persist(&self, route: &str, judge: bool) -> Result<(), StoreError> {
        let Some(store) = self.store() else {
            return Ok(());
        };
        let (value, guard) = {
            let states = self.states();
            let Some(state) = states.get(route) else {
                return Ok(());
            };
            (Record::of(state, &store.status().name), state.revision)
        };
        let revision = store.put_rollout(route, value, guard, judge).await?;
        if let Some(state) = self.states().get_mut(route) {
            state.revision = revision;
        }
        Ok(())
    }

    fn policy(&self, route: &str) -> Result<RolloutPolicy, RolloutError> {
        self.policies()
            .get(route)
            .cloned()
            .ok_or_else(|| RolloutError::NoPolicy(route.to_owned()))
    }

    /// Fails unless `route`'s rollout is in one of `from`.
    fn expect_phase(
        &self,
        route: &str,
        from: &[Phase],
        action: &'static str,
    ) -> Result<(), RolloutError> {
        let mut states = self.states();
        let phase = states.entry(route.to_owned()).or_default().phase;
        if from.contains(&phase) {
            Ok(())
        } else {
            Err(RolloutError::WrongPhase {
                route: route.to_owned(),
                phase,
                action,
            })
        }
    }

    /// `start`: the first step's weights, observation from now.
    pub async fn begin(&self, route: &str) -> Result<Value, RolloutError> {
        let _ops = self.ops.lock().await;
        self.begin_locked(route).await
    }

    async fn begin_locked(&self, route: &str) -> Result<Value, RolloutError> {
        let policy = self.policy(route)?;
        if !self.metrics.enabled() {
            return Err(RolloutError::MetricsOff);
        }
        self.sync(Some(route)).await?;
        let startable = [
            Phase::Idle,
            Phase::Completed,
            Phase::RolledBack,
            Phase::Aborted,
        ];
        self.expect_phase(route, &startable, "start")?;
        let weight = policy.steps.first().copied().unwrap_or(100);
        let reason = format!(
            "rollout started: step 1 of {}, canary {weight}%",
            policy.steps.len()
        );
        self.set_canary(route, &policy, weight, &reason).await?;
        self.update(route, |state| {
            *state = State {
                phase: Phase::Running,
                revision: state.revision,
                ..State::default()
            };
        });
        self.persist(route, false).await?;
        self.status_locked(route)
    }

    pub async fn pause(&self, route: &str) -> Result<Value, RolloutError> {
        self.transition(route, "pause", &[Phase::Running], Phase::Paused)
            .await
    }

    pub async fn resume(&self, route: &str) -> Result<Value, RolloutError> {
        self.transition(route, "resume", &[Phase::Paused], Phase::Running)
            .await
    }

    /// `abort`: canary weight 0 at once.
    pub async fn abort(&self, route: &str) -> Result<Value, RolloutError> {
        let _ops = self.ops.lock().await;
        let policy = self.policy(route)?;
        self.sync(Some(route)).await?;
        self.expect_phase(route, &[Phase::Running, Phase::Paused], "abort")?;
        self.set_canary(route, &policy, 0, "rollout aborted by an operator")
            .await?;
        self.update(route, |state| state.phase = Phase::Aborted);
        self.persist(route, false).await?;
        self.status_locked(route)
    }

    pub async fn status(&self, route: &str) -> Result<Value, RolloutError> {
        let _ops = self.ops.lock().await;
        self.policy(route)?;
        // Without etcd a replica still shows what it last knew.
        if let Err(error) = self.sync(Some(route)).await {
            tracing::debug!(%error, "showing the last known rollout record");
        }
        self.status_locked(route)
    }

    fn status_locked(&self, route: &str) -> Result<Value, RolloutError> {
        let policy = self.policy(route)?;
        let mut states = self.states();
        let state = states.entry(route.to_owned()).or_default();
        Ok(self.describe(route, &policy, state))
    }

    async fn transition(
        &self,
        route: &str,
        action: &'static str,
        from: &[Phase],
        to: Phase,
    ) -> Result<Value, RolloutError> {
        let _ops = self.ops.lock().await;
        self.policy(route)?;
        self.sync(Some(route)).await?;
        self.expect_phase(route, from, action)?;
        self.update(route, |state| {
            state.phase = to;
            // A resumed step is observed from now.
            state.observe_afresh();
        });
        self.persist(route, false).await?;
        self.status_locked(route)
    }

    /// Changes `route`'s state and its gauge.
    fn update(&self, route: &str, change: impl FnOnce(&mut State)) {
        let mut states = self.states();
        let state = states.entry(route.to_owned()).or_default();
        change(state);
        self.gauge(route, state.phase);
    }

    /// A weight change by someone else (API, file): the operator wins, the
    /// rollout pauses. In a fleet only the judge records that (every
    /// replica sees the change; one record is enough).
    fn manual_change(self: &Arc<Self>, route: &str) {
        if self.store().is_none() {
            self.pause_by_hand(route);
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (rollouts, route) = (Arc::clone(self), route.to_owned());
        runtime.spawn(async move {
            let _ops = rollouts.ops.lock().await;
            let leads = rollouts.store().is_some_and(|s| s.is_leader());
            if leads && rollouts.sync(Some(&route)).await.is_ok() && rollouts.pause_by_hand(&route)
            {
                if let Err(error) = rollouts.persist(&route, true).await {
                    tracing::warn!(%route, %error, "the rollout's pause was not recorded in the fleet");
                }
            }
        });
    }

    /// Pauses a running rollout after a manual change; true if it did.
    fn pause_by_hand(&self, route: &str) -> bool {
        let mut states = self.states();
        let Some(state) = states.get_mut(route).filter(|s| s.phase == Phase::Running) else {
            return false;
        };
        state.phase = Phase::Paused;
        state.last_verdict = Some(Verdict {
            time: history::now_rfc3339(),
            decision: "pause".into(),
            step: state.step,
            reason: "the route's weights were changed by hand: rollout paused (resume to continue)"
                .into(),
            canary: None,
            baseline: None,
            statistics: None,
        });
        self.gauge(route, Phase::Paused);
        self.count(route, "pause");
        tracing::warn!(%route, "manual change during a rollout: paused");
        true
    }

    /// One evaluation of one route (the caller holds `ops`).
    async fn evaluate(&self, route: &str) {
        let Ok(policy) = self.policy(route) else {
            return;
        };
        let (start, elapsed, last_hold, step) = {
            let states = self.states();
            let Some(state) = states.get(route).filter(|s| s.phase == Phase::Running) else {
                return;
            };
            (
                state.start.clone(),
                state.step_started.elapsed(),
                state.last_hold,
                state.step,
            )
        };
        let now = match observe::read(&self.metrics, self.store(), route, &policy).await {
            Ok(now) => now,
            Err(error) => {
                let due = last_hold.map_or(elapsed, |at| at.elapsed()) >= policy.interval;
                if due {
                    let reason = format!("waiting for the fleet's figures, not deciding: {error}");
                    self.update(route, |state| state.last_hold = Some(Instant::now()));
                    self.verdict(route, "hold", reason, (None, None));
                }
                return;
            }
        };
        let Some((canary_start, baseline_start)) = start else {
            // The step's observation begins now.
            self.update(route, |state| {
                state.start = Some(now);
                state.step_started = Instant::now();
            });
            return;
        };
        let canary_tally = observe::since(&now.0, &canary_start);
        let baseline_tally = observe::since(&now.1, &baseline_start);
        let canary = canary_tally.stats(elapsed);
        let baseline = (!now.1.is_empty()).then(|| baseline_tally.stats(elapsed));
        let figures = (
            Some(Figures::of(&canary)),
            baseline.as_ref().map(Figures::of),
        );
        if canary.requests < policy.min_requests {
            let due = last_hold.map_or(elapsed, |at| at.elapsed()) >= policy.interval;
            if due {
                self.update(route, |state| state.last_hold = Some(Instant::now()));
                let reason = format!(
                    "too little traffic: {} canary requests this step, {} needed",
                    canary.requests, policy.min_requests
                );
                self.verdict(route, "hold", reason, figures);
                self.record_decision(route).await;
            }
            return;
        }
        let (failed, statistics, passed_words) = match &policy.judge {
            Judge::Threshold => (failure(&policy, &canary, baseline.as_ref()), None, None),
            Judge::Statistical(statistical) => {
                let mut look = 0;
                self.update(route, |state| {
                    state.looks += 1;
                    look = state.looks;
                });
                let judged = statistical::judge(statistical, &canary_tally, &baseline_tally, look);
                (
                    judged.failure,
                    Some(judged.statistics),
                    Some(judged.summary),
                )
            }
        };
        if let Some(reason) = failed {
            let reason = format!("rolled back at step {}: {reason}", step + 1);
            match self.set_canary(route, &policy, 0, &reason).await {
                Ok(()) => {
                    self.update(route, |state| state.phase = Phase::RolledBack);
                    tracing::warn!(%route, %reason, "rollout rolled back");
                    self.verdict(route, "rollback", reason, figures);
                    self.attach(route, statistics);
                    self.record_decision(route).await;
                }
                Err(error) => tracing::error!(%route, %error, "rollback failed"),
            }
            return;
        }
        if elapsed < policy.interval {
            return;
        }
        let next = step + 1;
        let passed = match passed_words {
            Some(words) => format!("step {} passed: {words}", step + 1),
            None => format!(
                "step {} passed: canary error rate {:.2}%, p99 {:.1} ms over {} requests",
                step + 1,
                canary.error_rate() * 100.0,
                canary.latency.p99.as_secs_f64() * 1e3,
                canary.requests
            ),
        };
        if let Some(weight) = policy.steps.get(next).copied() {
            let reason = format!(
                "{passed}; advancing to step {} (canary {weight}%)",
                next + 1
            );
            if let Err(error) = self.set_canary(route, &policy, weight, &reason).await {
                tracing::error!(%route, %error, "rollout could not advance");
                return;
            }
            self.update(route, |state| {
                state.step = next;
                state.observe_afresh();
            });
            self.verdict(route, "advance", reason, figures);
            self.attach(route, statistics);
        } else {
            let reason = match policy.on_success {
                OnSuccess::Promote => format!("{passed}; rollout complete: canary promoted"),
                OnSuccess::Hold => format!("{passed}; rollout complete: weights held"),
            };
            if policy.on_success == OnSuccess::Promote {
                let op = TrafficOp::Promote {
                    version: policy.canary.clone(),
                };
                let result = self
                    .plane
                    .traffic(route, &op, None, automatic(&reason))
                    .await;
                if let Err(error) = result {
                    tracing::error!(%route, %error, "promotion failed");
                    return;
                }
            }
            self.update(route, |state| state.phase = Phase::Completed);
            self.verdict(route, "complete", reason, figures);
            self.attach(route, statistics);
        }
        self.record_decision(route).await;
    }

    /// The statistical judge's figures onto the last verdict.
    fn attach(&self, route: &str, statistics: Option<Value>) {
        if statistics.is_none() {
            return;
        }
        self.update(route, |state| {
            if let Some(verdict) = &mut state.last_verdict {
                verdict.statistics = statistics;
            }
        });
    }

    /// In a fleet: the judge's decision into the rollout's record.
    async fn record_decision(&self, route: &str) {
        if let Err(error) = self.persist(route, true).await {
            tracing::warn!(%route, %error, "the rollout decision was not recorded in the fleet");
        }
    }

    fn verdict(
        &self,
        route: &str,
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
                flag: None,
            }]);
        }
        self.update(route, |state| {
            state.last_verdict = Some(Verdict {
                time: history::now_rfc3339(),
                decision: decision.to_owned(),
                step: state.step,
                reason,
                canary: figures.0,
                baseline: figures.1,
                statistics: None,
            });
        });
    }

    /// Canary to `weight`, baseline to the rest of 100; others unchanged.
    async fn set_canary(
        &self,
        route: &str,
        policy: &RolloutPolicy,
        weight: u32,
        reason: &str,
    ) -> Result<(), ChangeError> {
        let op = TrafficOp::Weights {
            weights: [
                (policy.canary.clone(), i64::from(weight)),
                (
                    policy.baseline.clone(),
                    i64::from(100u32.saturating_sub(weight)),
                ),
            ]
            .into(),
            exact: false,
        };
        self.plane
            .traffic(route, &op, None, automatic(reason))
            .await
            .map(|_| ())
    }

    fn describe(&self, route: &str, policy: &RolloutPolicy, state: &State) -> Value {
        let judge = self.store().map(|store| {
            let status = store.status();
            json!({
                "leader": status.leader,
                "this_replica": status.name,
                "leads": store.is_leader(),
                "waiting": (status.state != "connected").then_some(
                    "etcd is unreachable: the rollout waits, it never decides without the fleet's figures",
                ),
            })
        });
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
            "scope": if judge.is_some() { "fleet" } else { "replica" },
            "judge": judge,
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
