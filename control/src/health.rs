//! Active health checks: one task per endpoint address that a route with a
//! `[routes.health_check]` names, probing it with an HTTP GET over the
//! transport its version speaks (HTTPS with the version's CA and server
//! name, HTTP/2 where configured: the data plane's upstream client sends
//! it), and marking it
//! down after `unhealthy_threshold` failures in a row, up again after
//! `healthy_threshold` passes. The data plane reads the mark on every pick
//! (`switchyard_proxy::health`); a version whose endpoints are all down hands
//! its share to the baseline there, at once.
//!
//! The set of checked endpoints follows the live table: after every change
//! the supervisor starts checks for new endpoints and stops removed ones.

use std::collections::HashMap;
use std::sync::Arc;

use switchyard_proxy::health::HealthCheckSpec;
use switchyard_proxy::{RoutingTable, Transport, Upstream};
use tokio::task::JoinHandle;

use crate::history::{self, Change, Source};
use crate::plane::{ControlPlane, PlaneEvent};

/// What one address's check does: the route's check settings, over the
/// transport of the (first) version listing the address.
#[derive(Debug, Clone, PartialEq)]
struct Check {
    spec: HealthCheckSpec,
    transport: Transport,
}

/// Starts the supervisor, probing through `upstream` (pools of its own:
/// probes never take the proxy's connections); it runs until aborted.
pub fn start(plane: Arc<ControlPlane>, upstream: Upstream) -> JoinHandle<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(4);
    plane.observe(Box::new(move |event| {
        if matches!(event, PlaneEvent::TableChanged(_)) {
            let _ = tx.try_send(());
        }
    }));
    tokio::spawn(async move {
        let mut checks: HashMap<String, (Check, JoinHandle<()>)> = HashMap::new();
        loop {
            reconcile(&plane, &upstream, &mut checks);
            if rx.recv().await.is_none() {
                break;
            }
        }
        for (_, (_, task)) in checks {
            task.abort();
        }
    })
}

/// Makes the running checks match the table: one per checked address.
fn reconcile(
    plane: &Arc<ControlPlane>,
    upstream: &Upstream,
    checks: &mut HashMap<String, (Check, JoinHandle<()>)>,
) {
    let table = plane.table().load();
    let mut wanted: HashMap<String, Check> = HashMap::new();
    for route in &table.spec().routes {
        let Some(spec) = &route.health_check else {
            continue;
        };
        for version in &route.versions {
            for endpoint in &version.endpoints {
                wanted.entry(endpoint.clone()).or_insert_with(|| Check {
                    spec: spec.clone(),
                    transport: version.transport.clone(),
                });
            }
        }
    }
    checks.retain(|address, (spec, task)| {
        let keep = wanted.get(address) == Some(spec);
        if !keep {
            task.abort();
            // An endpoint no longer checked must not stay marked down.
            table.health().get(address).set_active_down(false);
        }
        keep
    });
    for (address, check) in wanted {
        if checks.contains_key(&address) {
            continue;
        }
        let task = tokio::spawn(probe_loop(
            Arc::clone(plane),
            upstream.clone(),
            address.clone(),
            check.clone(),
        ));
        checks.insert(address, (check, task));
    }
}

async fn probe_loop(plane: Arc<ControlPlane>, upstream: Upstream, address: String, check: Check) {
    let Check { spec, transport } = check;
    let health = plane.table().load().health().get(&address);
    let (mut passes, mut failures) = (0u32, 0u32);
    let mut ticker = tokio::time::interval(spec.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let ok = probe(&upstream, &transport, &address, &spec).await;
        if ok {
            passes += 1;
            failures = 0;
        } else {
            failures += 1;
            passes = 0;
        }
        let down = health.is_active_down();
        let flip = if down && passes >= spec.healthy_threshold {
            Some(false)
        } else if !down && failures >= spec.unhealthy_threshold {
            Some(true)
        } else {
            None
        };
        if let Some(now_down) = flip {
            let before = plane.table().load();
            let weights_before = effective_weights(&before);
            health.set_active_down(now_down);
            tracing::warn!(endpoint = %address, down = now_down, "active health check changed the endpoint's state");
            record_effect(&plane, &address, now_down, weights_before);
        }
    }
}

/// One probe: GET the path, any 2xx within the timeout passes.
async fn probe(
    upstream: &Upstream,
    transport: &Transport,
    address: &str,
    spec: &HealthCheckSpec,
) -> bool {
    let Ok(endpoint) = address.parse::<http::uri::Authority>() else {
        return false;
    };
    match upstream
        .probe(transport, &endpoint, &spec.path, spec.timeout)
        .await
    {
        Ok(status) => status.is_success(),
        Err(error) => {
            tracing::debug!(%error, endpoint = %address, "health check failed");
            false
        }
    }
}

/// Exports what health makes of the table at scrape time:
/// `switchyard_route_effective_weight{route,version}` (a down version's share
/// shows under the version that serves it) and
/// `switchyard_endpoint_available{route,version,endpoint}` (0: failing checks
/// or ejected).
pub struct HealthCollector {
    plane: Arc<ControlPlane>,
    descs: Vec<prometheus::core::Desc>,
}

impl HealthCollector {
    pub fn new(plane: Arc<ControlPlane>) -> prometheus::Result<HealthCollector> {
        let descs = vec![
            prometheus::core::Desc::new(
                "switchyard_route_effective_weight".into(),
                "Weight each version really gets now: a version whose endpoints are all down gives its weight to the one serving instead.".into(),
                vec!["route".into(), "version".into()],
                HashMap::new(),
            )?,
            prometheus::core::Desc::new(
                "switchyard_endpoint_available".into(),
                "1 if the endpoint may be picked, 0 if it fails active checks or is ejected.".into(),
                vec!["route".into(), "version".into(), "endpoint".into()],
                HashMap::new(),
            )?,
        ];
        Ok(HealthCollector { plane, descs })
    }
}

impl prometheus::core::Collector for HealthCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let table = self.plane.table().load();
        let weights = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "switchyard_route_effective_weight",
                self.descs[0].help.clone(),
            ),
            &["route", "version"],
        );
        let available = prometheus::IntGaugeVec::new(
            prometheus::Opts::new("switchyard_endpoint_available", self.descs[1].help.clone()),
            &["route", "version", "endpoint"],
        );
        let (Ok(weights), Ok(available)) = (weights, available) else {
            return Vec::new();
        };
        for (route, shares) in effective_weights(&table) {
            for (version, weight) in shares {
                weights
                    .with_label_values(&[&route, &version])
                    .set(i64::from(weight));
            }
        }
        for route in table.routes() {
            for version in route.versions.iter() {
                for endpoint in version.endpoints.iter() {
                    available
                        .with_label_values(&[
                            &route.name,
                            &version.name,
                            endpoint.authority.as_str(),
                        ])
                        .set(i64::from(endpoint.health.is_available()));
                }
            }
        }
        let mut families = prometheus::core::Collector::collect(&weights);
        families.extend(prometheus::core::Collector::collect(&available));
        families
    }
}

/// Each route's versions with the share they really get now: a version
/// whose endpoints are all down gives its weight to the version the data
/// plane sends its requests to instead.
pub fn effective_weights(table: &RoutingTable) -> Vec<(String, history::Weights)> {
    table
        .routes()
        .iter()
        .map(|route| (route.name.to_string(), effective_route_weights(route)))
        .collect()
}

/// [`effective_weights`] of one route.
pub fn effective_route_weights(route: &switchyard_proxy::table::Route) -> history::Weights {
    let mut weights: history::Weights = route
        .versions
        .iter()
        .map(|v| (v.name.to_string(), 0))
        .collect();
    for version in route.versions.iter() {
        let target = route.available(version);
        *weights.entry(target.name.to_string()).or_default() += version.weight;
    }
    weights
}

/// Records in the history each route whose effective weights changed.
fn record_effect(
    plane: &ControlPlane,
    address: &str,
    down: bool,
    before: Vec<(String, history::Weights)>,
) {
    let table = plane.table().load();
    let after = effective_weights(&table);
    let reason = format!(
        "active health check: endpoint {address} is {}",
        if down { "down" } else { "up again" }
    );
    let changes: Vec<Change> = after
        .into_iter()
        .filter_map(|(route, weights)| {
            let old = before
                .iter()
                .find(|(r, _)| *r == route)
                .map(|(_, w)| w.clone());
            (old.as_ref() != Some(&weights)).then(|| Change {
                time: history::now_rfc3339(),
                source: Source::Auto,
                who: "health".into(),
                route,
                action: "health".into(),
                before: old,
                after: Some(weights),
                revision: table.revision(),
                reason: Some(reason.clone()),
                flag: None,
            })
        })
        .collect();
    plane.record_changes(changes);
}
