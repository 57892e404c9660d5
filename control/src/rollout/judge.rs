//! A rollout's state machine and its judge: the phases a rollout moves
//! through, what it remembers per step, and the verdict on a canary's
//! figures against the policy and the baseline.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use switchyard_proxy::metrics::VersionStats;

use super::observe::Totals;
use crate::config::RolloutPolicy;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    pub(super) fn gauge(self) -> i64 {
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figures {
    pub requests: u64,
    pub error_rate: f64,
    pub p99_ms: f64,
}

impl Figures {
    pub(super) fn of(stats: &VersionStats) -> Figures {
        Figures {
            requests: stats.requests,
            error_rate: stats.error_rate(),
            p99_ms: stats.latency.p99.as_secs_f64() * 1e3,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verdict {
    pub time: String,
    pub decision: String,
    pub step: usize,
    pub reason: String,
    pub canary: Option<Figures>,
    pub baseline: Option<Figures>,
    /// The statistical judge's estimates, intervals, p-values and counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistics: Option<serde_json::Value>,
}

pub(super) struct State {
    pub(super) phase: Phase,
    pub(super) step: usize,
    pub(super) step_started: Instant,
    pub(super) last_hold: Option<Instant>,
    /// Since-start totals (canary, baseline) per replica when the step's
    /// observation began. `None`: not yet (a rollout just started or
    /// resumed, a judge that just took over, a record changed elsewhere):
    /// the next evaluation takes them, and the interval counts from there.
    pub(super) start: Option<(Totals, Totals)>,
    pub(super) last_verdict: Option<Verdict>,
    /// The fleet record's revision this state matches (0: none, or no
    /// fleet).
    pub(super) revision: u64,
    /// Statistical tests made in this rollout so far (each spends its
    /// share of `alpha`).
    pub(super) looks: u64,
}

impl Default for State {
    fn default() -> Self {
        State {
            phase: Phase::Idle,
            step: 0,
            step_started: Instant::now(),
            last_hold: None,
            start: None,
            last_verdict: None,
            revision: 0,
            looks: 0,
        }
    }
}

impl State {
    /// Starts observing the current step anew at the next evaluation.
    pub(super) fn observe_afresh(&mut self) {
        self.step_started = Instant::now();
        self.last_hold = None;
        self.start = None;
    }
}

/// Why the canary fails the policy, if it does.
pub(super) fn failure(
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
    use crate::config::OnSuccess;

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
            judge: crate::config::Judge::Threshold,
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
