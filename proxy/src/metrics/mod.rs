//! Measurement of every proxied request, per route × version: status class,
//! upstream error kind, latency to the response headers and to the last
//! body byte. Recorded into HDR histograms sharded per worker thread
//! (`shards`), keyed by names that survive table swaps (`directory`),
//! and read back as windowed stats (stats API, health decisions) and as
//! Prometheus metrics with a registry of their own (`export`).
//!
//! The request path pays: three clock reads (start, response headers, last
//! byte), an index lookup and one reference count at pick time
//! ([`Metrics::start`]), and one uncontended lock plus two histogram
//! increments when the response body ends ([`Measure`]). The clock is
//! [`quanta`]'s TSC clock: about 15 ns a read where `std::time::Instant`
//! takes 35 ns on the KVM machines this was measured on, which is most of the
//! cost of measuring a request.

mod body;
mod directory;
mod export;
mod shards;
mod tally;
mod wire;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::{IntCounterVec, Opts, Registry};

use crate::error::ProxyError;
use crate::limits::Limit;
use crate::table::{Route, RoutingTable, TableHandle, Version};

pub use body::{boxed_response, Measure, Measured};
/// The clock requests are timed with (see the module comment).
pub use quanta::Instant;
pub use tally::{Latency, Outcome, SeriesStats, Snapshot, Tally, VersionStats, CODE_CLASSES};
pub use wire::WireError;

use directory::{Directory, TableIndex};
use shards::{lock, Core, Store};

/// Prometheus latency histogram bucket bounds (seconds) unless configured.
pub const DEFAULT_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
pub const DEFAULT_SLICE: Duration = Duration::from_secs(10);
pub const DEFAULT_SLICES: usize = 6;
pub const MAX_SLICES: usize = 360;
pub const MIN_SLICE: Duration = Duration::from_millis(10);
/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// How requests are measured; fixed for the life of a [`Metrics`].
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSettings {
    /// Off: requests are not timed or counted at all (the process, reload,
    /// connection and table metrics are still exported).
    pub enabled: bool,
    /// Length of one window slice: windows are whole slices.
    pub slice: Duration,
    /// Slices kept: the longest window is `slice × slices`.
    pub slices: usize,
    /// Upper bounds (seconds) of the exported latency histogram buckets.
    pub buckets: Vec<f64>,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            enabled: true,
            slice: DEFAULT_SLICE,
            slices: DEFAULT_SLICES,
            buckets: DEFAULT_BUCKETS.to_vec(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetricsError {
    #[error("histogram buckets {0:?} are not valid: list bucket upper bounds in seconds, above 0, at most 60, strictly increasing, e.g. [0.005, 0.01, 0.1, 1]")]
    BadBuckets(Vec<f64>),
    #[error("window slice {0:?} is too short: use at least 10ms")]
    SliceTooShort(Duration),
    #[error("window slices must be between 1 and {MAX_SLICES}, not {0}")]
    BadSliceCount(usize),
    #[error("cannot encode the metrics: {0}")]
    Encode(String),
}

impl MetricsSettings {
    pub fn validate(&self) -> Result<(), MetricsError> {
        let buckets_ok = !self.buckets.is_empty()
            && self
                .buckets
                .iter()
                .all(|b| b.is_finite() && *b > 0.0 && *b <= 60.0)
            && self.buckets.windows(2).all(|pair| pair[0] < pair[1]);
        if !buckets_ok {
            return Err(MetricsError::BadBuckets(self.buckets.clone()));
        }
        if self.slice < MIN_SLICE {
            return Err(MetricsError::SliceTooShort(self.slice));
        }
        if self.slices == 0 || self.slices > MAX_SLICES {
            return Err(MetricsError::BadSliceCount(self.slices));
        }
        Ok(())
    }
}

/// A handle on a series: what [`Metrics::record`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesId(usize);

/// The metrics of one proxy. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Metrics {
    shared: Arc<Shared>,
    registry: Registry,
    reloads: Option<IntCounterVec>,
}

pub(crate) struct Shared {
    enabled: bool,
    core: Arc<Core>,
    directory: Mutex<Directory>,
    /// The newest table's index: the request path's lookup.
    index: ArcSwap<TableIndex>,
    /// The live table, when the owner handed it over: reads then always
    /// see the current weights and retire removed versions by themselves.
    table: OnceLock<TableHandle>,
    connections: Arc<AtomicI64>,
    /// Connections closed at once: `max_connections` were open.
    connections_rejected: Arc<AtomicU64>,
    /// Requests refused by a `[limits]` key, in [`Limit::ALL`] order.
    rejected: [AtomicU64; 3],
    buckets: Vec<f64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.shared.enabled)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Validates `settings` and builds the registry (per-version metrics,
    /// reloads, connections, table, process).
    pub fn new(settings: MetricsSettings) -> Result<Metrics, MetricsError> {
        settings.validate()?;
        Ok(Metrics::build(settings))
    }

    /// Metrics that measure no request (the other metrics still work).
    pub fn disabled() -> Metrics {
        Metrics::build(MetricsSettings {
            enabled: false,
            ..MetricsSettings::default()
        })
    }

    fn build(settings: MetricsSettings) -> Metrics {
        let shards = if settings.enabled {
            // Threads beyond this share shards (round-robin): still correct.
            std::thread::available_parallelism().map_or(4, |n| n.get() * 2)
        } else {
            1
        };
        if settings.enabled {
            // The first read calibrates the clock: not on a request.
            let _ = Instant::now();
        }
        let core = Arc::new(Core::new(settings.slice, settings.slices, shards));
        let shared = Arc::new(Shared {
            enabled: settings.enabled,
            core: Arc::clone(&core),
            directory: Mutex::new(Directory::default()),
            index: ArcSwap::from_pointee(TableIndex::empty(Arc::clone(&core))),
            table: OnceLock::new(),
            connections: Arc::new(AtomicI64::new(0)),
            connections_rejected: Arc::default(),
            rejected: Default::default(),
            buckets: settings.buckets,
        });
        let registry = Registry::new();
        let reloads = IntCounterVec::new(
            Opts::new(
                "switchyard_config_reloads_total",
                "Config reloads attempted, by result (success: applied or unchanged; failure: the old table was kept).",
            ),
            &["result"],
        );
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(export::Exporter::new(Arc::clone(&shared))),
            #[cfg(target_os = "linux")]
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        for collector in collectors {
            if let Err(error) = registry.register(collector) {
                tracing::warn!(%error, "metric not registered");
            }
        }
        // Constant, valid names: registration cannot fail; if it somehow
        // did, the process runs on without that metric.
        let reloads = match reloads {
            Ok(reloads) => {
                for result in ["success", "failure"] {
                    reloads.with_label_values(&[result]);
                }
                match registry.register(Box::new(reloads.clone())) {
                    Ok(()) => Some(reloads),
                    Err(error) => {
                        tracing::warn!(%error, "metric not registered");
                        None
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "reload counter not created");
                None
            }
        };
        Metrics {
            shared,
            registry,
            reloads,
        }
    }

    /// Whether requests are measured.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.shared.enabled
    }

    /// The start time of a request, when requests are measured.
    #[inline]
    pub fn clock(&self) -> Option<Instant> {
        self.shared.enabled.then(Instant::now)
    }

    /// The registry, for other modules' metrics (health decisions, …).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The counter the data listener keeps of its open connections.
    pub fn connections_active(&self) -> Arc<AtomicI64> {
        Arc::clone(&self.shared.connections)
    }

    /// The counter the data listener keeps of connections it closed at
    /// once because `max_connections` were open.
    pub fn connections_rejected(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.shared.connections_rejected)
    }

    /// Counts a request refused by a size limit (431, 413) in
    /// `switchyard_requests_rejected_total{limit}`; other errors are not.
    pub fn count_rejection(&self, error: &ProxyError) {
        let limit = match error {
            ProxyError::HeadersTooLarge { key, .. } => {
                match Limit::ALL.into_iter().find(|limit| limit.key() == *key) {
                    Some(limit) => limit,
                    None => return,
                }
            }
            ProxyError::BodyTooLarge { .. } => Limit::BodyBytes,
            _ => return,
        };
        self.shared.rejected[limit as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Hands over the live table: reads use its current table (weights,
    /// revision) and retire removed versions without waiting for a
    /// [`Metrics::sync_table`]. Only the first handle is kept.
    pub fn watch_table(&self, table: TableHandle) {
        let current = table.load();
        let _ = self.shared.table.set(table);
        self.sync_table(&current);
    }

    /// Tells metrics about a new table (call after every swap): its series
    /// exist from now on (at zero), and versions no live table names any
    /// more are retired.
    pub fn sync_table(&self, table: &Arc<RoutingTable>) {
        self.register(table);
    }

    /// Counts a config reload in `switchyard_config_reloads_total{result}`:
    /// `ok` when the new config was applied (or unchanged), not when it was
    /// rejected and the old table kept.
    pub fn record_reload(&self, ok: bool) {
        if let Some(reloads) = &self.reloads {
            reloads
                .with_label_values(&[if ok { "success" } else { "failure" }])
                .inc();
        }
    }

    /// Begins measuring a request `table` routed to `route` and `version`
    /// (both borrowed from `table`), started at `started`.
    #[inline]
    pub fn start(
        &self,
        table: &Arc<RoutingTable>,
        route: &Route,
        version: &Version,
        started: Instant,
    ) -> Option<Measure> {
        if !self.shared.enabled {
            return None;
        }
        let mut index = self.shared.index.load_full();
        if !index.is_for(table) {
            index = self.register(table);
        }
        let slot = index.slot(table, route, version)?;
        Some(Measure {
            index,
            slot,
            started,
            client_body: None,
        })
    }

    /// The series of `version` of `route` in `table`.
    #[inline]
    pub fn series(
        &self,
        table: &Arc<RoutingTable>,
        route: &Route,
        version: &Version,
    ) -> Option<SeriesId> {
        {
            let index = self.shared.index.load();
            if index.is_for(table) {
                return index.slot(table, route, version).map(SeriesId);
            }
        }
        self.register(table)
            .slot(table, route, version)
            .map(SeriesId)
    }

    /// Records one request. `series` must come from [`Metrics::series`]
    /// for a table the caller still holds.
    #[inline]
    pub fn record(&self, series: SeriesId, outcome: &Outcome) {
        if self.shared.enabled {
            self.shared.core.record(series.0, outcome);
        }
    }

    #[cold]
    fn register(&self, table: &Arc<RoutingTable>) -> Arc<TableIndex> {
        self.shared
            .register(&mut lock(&self.shared.directory), table)
    }

    /// Windowed figures of one version: the current slice plus whole
    /// earlier slices reaching back `window` (at most `slice × slices`).
    pub fn window_stats(
        &self,
        route: &str,
        version: &str,
        window: Duration,
    ) -> Option<VersionStats> {
        let store = self
            .shared
            .prepare_read(|directory| directory.store(route, version))?;
        Some(self.shared.core.window(&store, window, Instant::now()))
    }

    /// Since-start totals of one version at this moment; two of them give
    /// exact figures for the time in between ([`Snapshot::since`]).
    pub fn snapshot(&self, route: &str, version: &str) -> Option<Snapshot> {
        let store = self
            .shared
            .prepare_read(|directory| directory.store(route, version))?;
        Some(self.shared.core.snapshot(&store))
    }

    /// Since-start totals of one version.
    pub fn totals(&self, route: &str, version: &str) -> Option<VersionStats> {
        let store = self
            .shared
            .prepare_read(|directory| directory.store(route, version))?;
        let covered = store.created.elapsed();
        Some(self.shared.core.snapshot(&store).tally.stats(covered))
    }

    /// Windowed figures of every live series: the current table's versions
    /// in config order, then versions being retired (weight `None`).
    pub fn stats(&self, window: Duration) -> Vec<SeriesStats> {
        let now = Instant::now();
        self.shared
            .live()
            .into_iter()
            .map(|live| SeriesStats {
                stats: self.shared.core.window(&live.store, window, now),
                route: Arc::clone(&live.store.route),
                version: Arc::clone(&live.store.version),
                weight: live.weight,
            })
            .collect()
    }

    /// Every live series' since-start totals and its last `window`: what a
    /// replica publishes to its fleet (see [`Tally::encode`]).
    pub fn tallies(&self, window: Duration) -> Vec<SeriesTally> {
        let now = Instant::now();
        self.shared
            .live()
            .into_iter()
            .map(|live| {
                let (recent, covered) = self.shared.core.window_tally(&live.store, window, now);
                SeriesTally {
                    totals: self.shared.core.snapshot(&live.store).tally,
                    window: recent,
                    covered,
                    route: Arc::clone(&live.store.route),
                    version: Arc::clone(&live.store.version),
                    weight: live.weight,
                }
            })
            .collect()
    }

    /// The newest table metrics know of (the live one when watched).
    pub fn table(&self) -> Option<Arc<RoutingTable>> {
        self.shared.current_table()
    }

    /// The longest window reads can cover.
    pub fn max_window(&self) -> Duration {
        self.shared.core.slice() * self.shared.core.slices() as u32
    }

    /// Every metric in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, MetricsError> {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .map_err(|e| MetricsError::Encode(e.to_string()))
    }
}

/// One live series' tallies, as [`Metrics::tallies`] reads them.
#[derive(Debug, Clone)]
pub struct SeriesTally {
    pub route: Arc<str>,
    pub version: Arc<str>,
    pub weight: Option<u32>,
    /// Every request since the series started.
    pub totals: Tally,
    /// The requests of the window asked for, and the time it covers.
    pub window: Tally,
    pub covered: Duration,
}

/// A live series and its weight in the current table.
pub(crate) struct Live {
    pub(crate) store: Arc<Store>,
    pub(crate) weight: Option<u32>,
}

impl Shared {
    /// Registers `table` (retiring what no live table names) and makes its
    /// index the request path's when it is the newest table seen.
    fn register(&self, directory: &mut Directory, table: &Arc<RoutingTable>) -> Arc<TableIndex> {
        let current = self.index.load_full();
        if current.is_for(table) {
            directory.sweep(&self.core);
            return current;
        }
        let newest = current.revision() <= table.revision();
        drop(current);
        let index = Arc::new(directory.register(&self.core, table));
        if newest {
            self.index.store(Arc::clone(&index));
            // The replaced index held the previous table: without it, its
            // removed versions may retire now.
            directory.sweep(&self.core);
        }
        index
    }

    fn current_table(&self) -> Option<Arc<RoutingTable>> {
        match self.table.get() {
            Some(handle) => Some(handle.load()),
            None => lock(&self.directory).newest(),
        }
    }

    /// Syncs with the live table, flushes every shard, then looks up.
    fn prepare_read<R>(&self, find: impl FnOnce(&Directory) -> Option<R>) -> Option<R> {
        let current = self.table.get().map(TableHandle::load);
        let found = {
            let mut directory = lock(&self.directory);
            match &current {
                Some(table) => {
                    self.register(&mut directory, table);
                }
                None => directory.sweep(&self.core),
            }
            find(&directory)
        };
        self.core.flush();
        found
    }

    /// Every live series, flushed: the current table's versions in config
    /// order first, then the rest (versions being retired).
    pub(crate) fn live(&self) -> Vec<Live> {
        let Some(stores) = self.prepare_read(|directory| Some(directory.stores())) else {
            return Vec::new();
        };
        let table = self.current_table();
        let mut ordered: Vec<Live> = Vec::with_capacity(stores.len());
        let mut rest = stores;
        if let Some(table) = &table {
            for route in &table.spec().routes {
                for version in &route.versions {
                    if let Some(at) = rest
                        .iter()
                        .position(|s| *s.route == *route.name && *s.version == *version.name)
                    {
                        ordered.push(Live {
                            store: rest.swap_remove(at),
                            weight: Some(version.weight),
                        });
                    }
                }
            }
        }
        rest.sort_by(|a, b| (&a.route, &a.version).cmp(&(&b.route, &b.version)));
        ordered.extend(rest.into_iter().map(|store| Live {
            store,
            weight: None,
        }));
        ordered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ProxyError, UpstreamErrorKind};
    use crate::table::tests::{route, version};
    use crate::table::{Settings, TableSpec};
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    fn spec(versions: Vec<crate::table::VersionSpec>) -> TableSpec {
        TableSpec {
            routes: vec![route("web", None, "/", versions)],
            settings: Settings::default(),
            flags: Vec::new(),
        }
    }

    fn three_versions() -> TableSpec {
        spec(vec![
            version("stable", 90, &["127.0.0.1:1"]),
            version("canary", 10, &["127.0.0.1:2"]),
            version("green", 0, &["127.0.0.1:3"]),
        ])
    }

    /// Metrics (200 ms slices) watching a three-version table.
    fn watched() -> (TableHandle, Metrics) {
        let handle = TableHandle::new(three_versions()).expect("table");
        let metrics = Metrics::new(MetricsSettings {
            slice: Duration::from_millis(200),
            ..MetricsSettings::default()
        })
        .expect("valid settings");
        metrics.watch_table(handle.clone());
        (handle, metrics)
    }

    fn start(metrics: &Metrics, table: &Arc<RoutingTable>, name: &str, ago: Duration) -> Measure {
        let route = table.route("web").expect("route");
        let version = route.version(name).expect("version");
        metrics
            .start(table, route, version, Instant::now() - ago)
            .expect("enabled")
    }

    async fn respond(measure: Measure, status: u16) {
        let response = http::Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(b"hello")))
            .expect("response");
        let body = boxed_response(Some(measure), response).into_body();
        body.collect().await.expect("body");
    }

    fn parse(text: &str) -> prometheus_parse::Scrape {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        prometheus_parse::Scrape::parse(lines).expect("valid exposition text")
    }

    fn sample<'a>(
        scrape: &'a prometheus_parse::Scrape,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Option<&'a prometheus_parse::Value> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| &s.value)
    }

    #[tokio::test]
    async fn records_status_errors_and_latency_per_version() {
        let (handle, metrics) = watched();
        let table = handle.load();
        for _ in 0..3 {
            respond(
                start(&metrics, &table, "stable", Duration::from_millis(5)),
                200,
            )
            .await;
        }
        respond(
            start(&metrics, &table, "canary", Duration::from_millis(20)),
            503,
        )
        .await;
        start(&metrics, &table, "canary", Duration::from_millis(30)).failed(&ProxyError::timeout(
            "canary",
            "127.0.0.1:2",
            Duration::from_millis(30),
        ));

        let stable = metrics
            .window_stats("web", "stable", Duration::from_secs(1))
            .expect("stable");
        assert_eq!(stable.requests, 3);
        assert_eq!(stable.status[1], 3);
        assert_eq!(stable.errors, 0);
        assert!(stable.latency.p50 >= Duration::from_millis(5));
        assert!(stable.latency.p50 < Duration::from_millis(50));
        let canary = metrics.totals("web", "canary").expect("canary");
        assert_eq!(canary.requests, 2);
        assert_eq!(canary.status[4], 2);
        assert_eq!(canary.errors, 2);
        assert_eq!(canary.upstream_errors[kind(UpstreamErrorKind::Timeout)], 1);
        assert!((canary.error_rate() - 1.0).abs() < 1e-9);
        let green = metrics
            .totals("web", "green")
            .expect("green exists at zero");
        assert_eq!(green.requests, 0);
        let all = metrics.stats(Duration::from_secs(1));
        let names: Vec<&str> = all.iter().map(|s| &*s.version).collect();
        assert_eq!(names, ["stable", "canary", "green"], "config order");
        assert_eq!(all[0].weight, Some(90));
    }

    fn kind(kind: UpstreamErrorKind) -> usize {
        UpstreamErrorKind::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("listed")
    }

    #[tokio::test]
    async fn exported_text_parses_and_matches() {
        let (handle, metrics) = watched();
        metrics
            .connections_active()
            .store(3, std::sync::atomic::Ordering::Relaxed);
        metrics.record_reload(true);
        metrics.record_reload(false);
        metrics.record_reload(false);
        let table = handle.load();
        for _ in 0..4 {
            respond(
                start(&metrics, &table, "stable", Duration::from_millis(2)),
                200,
            )
            .await;
        }
        respond(
            start(&metrics, &table, "stable", Duration::from_millis(40)),
            404,
        )
        .await;
        let text = metrics.encode().expect("encode");
        let scrape = parse(&text);
        let value = |name: &str, labels: &[(&str, &str)]| match sample(&scrape, name, labels) {
            Some(prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v)) => *v,
            other => panic!("{name} {labels:?}: {other:?}\n{text}"),
        };
        let stable = [("route", "web"), ("version", "stable")];
        assert_eq!(
            value(
                "switchyard_requests_total",
                &[stable[0], stable[1], ("code_class", "2xx")]
            ),
            4.0
        );
        assert_eq!(
            value(
                "switchyard_requests_total",
                &[stable[0], stable[1], ("code_class", "4xx")]
            ),
            1.0
        );
        assert_eq!(
            value(
                "switchyard_upstream_errors_total",
                &[stable[0], stable[1], ("kind", "reset")]
            ),
            0.0
        );
        assert_eq!(value("switchyard_route_weight", &stable), 90.0);
        assert_eq!(value("switchyard_table_revision", &[]), 1.0);
        assert_eq!(value("switchyard_connections_active", &[]), 3.0);
        assert_eq!(
            value("switchyard_config_reloads_total", &[("result", "failure")]),
            2.0
        );
        let Some(prometheus_parse::Value::Histogram(buckets)) =
            sample(&scrape, "switchyard_request_duration_seconds", &stable)
        else {
            panic!("no histogram\n{text}");
        };
        let le = |bound: f64| {
            buckets
                .iter()
                .find(|b| b.less_than == bound || (b.less_than - bound).abs() < 1e-12)
                .map(|b| b.count)
        };
        assert_eq!(le(0.001), Some(0.0));
        assert_eq!(le(0.005), Some(4.0), "{buckets:?}");
        assert_eq!(le(0.05), Some(5.0));
        assert_eq!(le(f64::INFINITY), Some(5.0));
        assert!(
            text.contains("process_cpu_seconds_total"),
            "process metrics"
        );
    }

    #[tokio::test]
    async fn removed_version_is_retired_once_its_requests_end() {
        let (handle, metrics) = watched();
        let old = handle.load();
        let in_flight = start(&metrics, &old, "green", Duration::from_millis(1));
        drop(old);
        let next = handle
            .store(spec(vec![
                version("stable", 50, &["127.0.0.1:1"]),
                version("canary", 50, &["127.0.0.1:2"]),
            ]))
            .expect("swap");
        metrics.sync_table(&next);
        let during = metrics.stats(Duration::from_secs(1));
        let green = during
            .iter()
            .find(|s| &*s.version == "green")
            .expect("kept");
        assert_eq!(green.weight, None, "no longer in the table");
        respond(in_flight, 200).await;
        let text = metrics.encode().expect("encode");
        assert!(!text.contains("version=\"green\""), "retired:\n{text}");
        assert!(metrics.totals("web", "green").is_none());
        assert_eq!(metrics.stats(Duration::from_secs(1)).len(), 2);
        // Same name again: a fresh series from zero, no ghost of the old one.
        let again = handle.store(three_versions()).expect("swap");
        metrics.sync_table(&again);
        assert_eq!(metrics.totals("web", "green").map(|s| s.requests), Some(0));
        // Nothing in flight: retired by the sync itself.
        drop((again, next));
        let two = handle
            .store(spec(vec![version("stable", 1, &["127.0.0.1:1"])]))
            .expect("swap");
        metrics.sync_table(&two);
        assert!(metrics.totals("web", "green").is_none());
        assert!(metrics.totals("web", "canary").is_none());
    }

    #[tokio::test]
    async fn aborted_and_empty_bodies() {
        let (handle, metrics) = watched();
        let table = handle.load();
        // Never polled, with body left: the client went away.
        let response = http::Response::new(Full::new(Bytes::from_static(b"unread")));
        drop(boxed_response(
            Some(start(&metrics, &table, "stable", Duration::ZERO)),
            response,
        ));
        // Empty body, never polled: complete.
        let response = http::Response::new(http_body_util::Empty::<Bytes>::new());
        drop(boxed_response(
            Some(start(&metrics, &table, "stable", Duration::ZERO)),
            response,
        ));
        let stats = metrics.totals("web", "stable").expect("stable");
        assert_eq!(stats.requests, 2);
        assert_eq!(stats.aborted, 1);
    }

    /// A body whose first frame is a broken connection.
    struct Broken;

    impl http_body::Body for Broken {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
            let error = std::io::Error::other("connection error");
            std::task::Poll::Ready(Some(Err(error)))
        }
    }

    #[tokio::test]
    async fn a_body_broken_by_the_clients_failed_upload_is_an_abort() {
        let (handle, metrics) = watched();
        let table = handle.load();
        for client_failed in [false, true] {
            let mut measure = start(&metrics, &table, "stable", Duration::ZERO);
            let failed = crate::limits::ClientBodyFailed::default();
            measure.watch_client_body(failed.clone());
            if client_failed {
                failed.set();
            }
            let body = boxed_response(Some(measure), http::Response::new(Broken)).into_body();
            assert!(body.collect().await.is_err());
        }
        let stats = metrics.totals("web", "stable").expect("stable");
        assert_eq!(stats.requests, 2);
        assert_eq!(stats.upstream_errors, [0, 0, 1, 0], "only the first");
        assert_eq!(stats.errors, 1);
        assert_eq!(stats.aborted, 1);
    }

    #[test]
    fn disabled_measures_nothing_but_exports_the_rest() {
        let handle = TableHandle::new(three_versions()).expect("table");
        let metrics = Metrics::disabled();
        metrics.watch_table(handle.clone());
        let table = handle.load();
        let route = table.route("web").expect("route");
        let version = route.version("stable").expect("version");
        assert!(metrics
            .start(&table, route, version, Instant::now())
            .is_none());
        assert!(metrics.clock().is_none());
        let text = metrics.encode().expect("encode");
        assert!(text.contains("switchyard_table_revision 1"), "{text}");
        assert!(!text.contains("switchyard_requests_total"));
    }

    #[test]
    fn settings_are_validated() {
        let with = |f: fn(&mut MetricsSettings)| {
            let mut settings = MetricsSettings::default();
            f(&mut settings);
            Metrics::new(settings).map(|_| ())
        };
        assert!(with(|_| {}).is_ok());
        assert!(matches!(
            with(|s| s.buckets = vec![0.1, 0.05]),
            Err(MetricsError::BadBuckets(_))
        ));
        assert!(matches!(
            with(|s| s.buckets = vec![]),
            Err(MetricsError::BadBuckets(_))
        ));
        assert!(matches!(
            with(|s| s.slice = Duration::from_millis(1)),
            Err(MetricsError::SliceTooShort(_))
        ));
        assert!(matches!(
            with(|s| s.slices = 0),
            Err(MetricsError::BadSliceCount(0))
        ));
    }
}
