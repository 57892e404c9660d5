//! What a rollout judges on: the requests that finished since its step's
//! observation began, added up over every replica that served them. In a
//! single process that is one replica (this one's metrics); in a fleet,
//! every replica's published since-start totals (`{prefix}/stats/`). Each
//! replica's share is its totals now minus its totals at the start, and
//! HDR histograms add and subtract exactly: the judge sees the fleet's
//! percentiles, not an average of averages.

use std::collections::BTreeMap;
use std::sync::Arc;

use switchyard_proxy::metrics::{Metrics, Tally};

use crate::config::RolloutPolicy;
use crate::plane::{SharedStore, StoreError};

/// Replica name → one version's since-start totals ("" in one process).
pub(crate) type Totals = BTreeMap<String, Tally>;

/// The canary's and the baseline's totals now.
pub(super) async fn read(
    metrics: &Metrics,
    store: Option<&Arc<dyn SharedStore>>,
    route: &str,
    policy: &RolloutPolicy,
) -> Result<(Totals, Totals), StoreError> {
    let Some(store) = store else {
        let local = |version: &str| -> Totals {
            metrics
                .snapshot(route, version)
                .map(|snapshot| (String::new(), snapshot.tally().clone()))
                .into_iter()
                .collect()
        };
        return Ok((local(&policy.canary), local(&policy.baseline)));
    };
    let published = store.published().await?;
    let mut canary = Totals::new();
    let mut baseline = Totals::new();
    for replica in published {
        for series in replica.series {
            if *series.route != *route {
                continue;
            }
            if *series.version == *policy.canary {
                canary.insert(replica.replica.clone(), series.totals);
            } else if *series.version == *policy.baseline {
                baseline.insert(replica.replica.clone(), series.totals);
            }
        }
    }
    Ok((canary, baseline))
}

/// The requests between `start` and `now`, summed over replicas. A replica
/// absent at the start (joined since) counts whole; one whose totals went
/// down (it restarted) counts from its restart.
pub(super) fn since(now: &Totals, start: &Totals) -> Tally {
    let mut sum = Tally::empty();
    for (replica, totals) in now {
        match start.get(replica).and_then(|earlier| totals.minus(earlier)) {
            Some(delta) => sum.add(&delta),
            None => sum.add(totals),
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use switchyard_proxy::metrics::Outcome;

    fn tally(n: usize, status: u16, ms: u64) -> Tally {
        let mut tally = Tally::empty();
        for _ in 0..n {
            tally.record(&Outcome {
                status,
                upstream_error: None,
                headers: Duration::from_millis(ms),
                last_byte: Duration::from_millis(ms),
                aborted: false,
                finished: switchyard_proxy::metrics::Instant::now(),
            });
        }
        tally
    }

    #[test]
    fn the_fleet_sum_is_each_replicas_share_since_the_start() {
        let start: Totals = [
            ("a".into(), tally(10, 200, 5)),
            ("b".into(), tally(4, 200, 5)),
        ]
        .into_iter()
        .collect();
        let mut a_now = tally(10, 200, 5);
        a_now.add(&tally(6, 500, 900));
        let now: Totals = [
            ("a".into(), a_now),
            // b restarted: fewer than at the start, all of them new.
            ("b".into(), tally(2, 200, 5)),
            // c joined during the step.
            ("c".into(), tally(3, 200, 5)),
        ]
        .into_iter()
        .collect();
        let stats = since(&now, &start).stats(Duration::from_secs(1));
        assert_eq!(stats.requests, 6 + 2 + 3);
        assert_eq!(stats.errors, 6);
        // The slow errors dominate the p99 of the merged histogram.
        assert!(stats.latency.p99 >= Duration::from_millis(890), "{stats:?}");
    }
}
