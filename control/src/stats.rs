//! Per-version figures over a window, for people and tools: the JSON of
//! `GET /api/v1/stats?window=60s` (this replica's, or with `scope=fleet`
//! every replica's added up), the Prometheus text of `GET /metrics`
//! (both admin endpoints, dispatched from [`extension`]), and the table
//! `switchyard ctl stats` prints.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use switchyard_proxy::metrics::{
    self, Latency, Metrics, SeriesStats, Tally, VersionStats, CODE_CLASSES,
};
use switchyard_proxy::shadow::ShadowResult;
use switchyard_proxy::UpstreamErrorKind;

use crate::admin::api::{json_response, text_response, AdminResponse, Extension, PendingResponse};
use crate::plane::{ControlPlane, Observer, PlaneEvent, ReplicaTallies};

/// The window when the query names none.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// `GET /api/v1/stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    /// Whether requests are measured (`[metrics] enabled`).
    pub enabled: bool,
    /// The window used, in seconds (the asked one, capped by what is kept).
    pub window_seconds: f64,
    /// The routing table revision the weights come from.
    pub revision: Option<u64>,
    pub routes: Vec<RouteReport>,
    /// `scope=fleet`: the replicas whose figures were added up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetScope>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetScope {
    pub replicas: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteReport {
    pub route: String,
    /// In config order; versions being retired (removed, requests still
    /// finishing) last, with no weight.
    pub versions: Vec<VersionReport>,
    /// Shadow results since each shadow appeared (not windowed).
    #[serde(default)]
    pub shadows: Vec<ShadowReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionReport {
    pub version: String,
    pub weight: Option<u32>,
    pub requests: u64,
    pub rps: f64,
    /// 5xx responses plus upstream failures (each request counted once).
    pub errors: u64,
    pub error_rate: f64,
    /// By status class: `1xx` … `5xx`.
    pub status: BTreeMap<String, u64>,
    /// By kind: `connect`, `timeout`, `reset`, `protocol`.
    pub upstream_errors: BTreeMap<String, u64>,
    /// Responses the client abandoned before the last byte.
    pub aborted: u64,
    /// Milliseconds to the response headers (what decisions compare).
    pub latency_ms: LatencyReport,
    /// Milliseconds to the last body byte.
    pub last_byte_ms: LatencyReport,
    /// The span the figures cover (shorter than the window for a version
    /// younger than it).
    pub covered_seconds: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencyReport {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowReport {
    pub shadow: String,
    /// Every result label with its count.
    pub results: BTreeMap<String, u64>,
    /// Copies compared with the primary: matched + mismatched.
    pub compared: u64,
    pub matched: u64,
    /// Status or body mismatches.
    pub mismatched: u64,
    /// `matched / compared`; `null` before the first comparison.
    pub match_rate: Option<f64>,
    pub errors: u64,
    /// Copies never sent (sampled out, method, overload, body too large).
    pub dropped: u64,
}

fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

impl From<&Latency> for LatencyReport {
    fn from(latency: &Latency) -> LatencyReport {
        LatencyReport {
            p50: ms(latency.p50),
            p90: ms(latency.p90),
            p99: ms(latency.p99),
            p999: ms(latency.p999),
            max: ms(latency.max),
            mean: ms(latency.mean),
        }
    }
}

impl VersionReport {
    fn new(version: &str, weight: Option<u32>, stats: &VersionStats) -> VersionReport {
        VersionReport {
            version: version.to_owned(),
            weight,
            requests: stats.requests,
            rps: (stats.rps() * 1e3).round() / 1e3,
            errors: stats.errors,
            error_rate: stats.error_rate(),
            status: CODE_CLASSES
                .iter()
                .map(|class| class.to_string())
                .zip(stats.status)
                .collect(),
            upstream_errors: UpstreamErrorKind::ALL
                .iter()
                .map(|kind| kind.as_str().to_owned())
                .zip(stats.upstream_errors)
                .collect(),
            aborted: stats.aborted,
            latency_ms: (&stats.latency).into(),
            last_byte_ms: (&stats.last_byte).into(),
            covered_seconds: stats.covered.as_secs_f64(),
        }
    }
}

/// The report for `window` (capped at the longest window kept).
pub fn report(metrics: &Metrics, window: Duration) -> StatsReport {
    let window = window.min(metrics.max_window());
    report_of(metrics, window, metrics.stats(window), None)
}

/// The fleet's report: every replica's published window, added up exactly
/// per version (HDR histograms merge without loss), over the window each
/// replica publishes (`[metrics] slice × slices`).
pub fn fleet_report(metrics: &Metrics, published: &[ReplicaTallies]) -> StatsReport {
    let table = metrics.table();
    let weights: Vec<((String, String), Option<u32>)> = table
        .iter()
        .flat_map(|table| &table.spec().routes)
        .flat_map(|route| {
            route.versions.iter().map(|version| {
                (
                    (route.name.clone(), version.name.clone()),
                    Some(version.weight),
                )
            })
        })
        .collect();
    let mut sums: BTreeMap<(String, String), (Tally, Duration)> = BTreeMap::new();
    for series in published.iter().flat_map(|replica| &replica.series) {
        let key = (series.route.to_string(), series.version.to_string());
        let (sum, covered) = sums
            .entry(key)
            .or_insert_with(|| (Tally::empty(), Duration::ZERO));
        sum.add(&series.window);
        *covered = (*covered).max(series.covered);
    }
    // The local table's order first (as the replica view), then the rest.
    let mut series = Vec::new();
    for ((route, version), weight) in &weights {
        if let Some((sum, covered)) = sums.remove(&(route.clone(), version.clone())) {
            series.push(merged(route, version, *weight, &sum, covered));
        }
    }
    for ((route, version), (sum, covered)) in &sums {
        series.push(merged(route, version, None, sum, *covered));
    }
    let replicas = published.iter().map(|r| r.replica.clone()).collect();
    report_of(
        metrics,
        metrics.max_window(),
        series,
        Some(FleetScope { replicas }),
    )
}

fn merged(
    route: &str,
    version: &str,
    weight: Option<u32>,
    sum: &Tally,
    covered: Duration,
) -> SeriesStats {
    SeriesStats {
        route: route.into(),
        version: version.into(),
        weight,
        stats: sum.stats(covered),
    }
}

fn report_of(
    metrics: &Metrics,
    window: Duration,
    series: Vec<SeriesStats>,
    fleet: Option<FleetScope>,
) -> StatsReport {
    let table = metrics.table();
    let mut routes: Vec<RouteReport> = Vec::new();
    if let Some(table) = &table {
        for route in &table.spec().routes {
            routes.push(RouteReport {
                route: route.name.clone(),
                versions: Vec::new(),
                // Shadow results are this replica's own.
                shadows: if fleet.is_none() {
                    shadow_reports(table.route(&route.name))
                } else {
                    Vec::new()
                },
            });
        }
    }
    for series in series {
        let report = VersionReport::new(&series.version, series.weight, &series.stats);
        match routes.iter_mut().find(|r| *r.route == *series.route) {
            Some(route) => route.versions.push(report),
            None => routes.push(RouteReport {
                route: series.route.to_string(),
                versions: vec![report],
                shadows: Vec::new(),
            }),
        }
    }
    StatsReport {
        enabled: metrics.enabled(),
        window_seconds: window.as_secs_f64(),
        revision: table.map(|t| t.revision()),
        routes,
        fleet,
    }
}

fn shadow_reports(route: Option<&switchyard_proxy::table::Route>) -> Vec<ShadowReport> {
    let Some(route) = route else {
        return Vec::new();
    };
    route
        .shadows
        .iter()
        .map(|shadow| {
            let state = shadow.state();
            let count = |result| state.count(result);
            let matched = count(ShadowResult::Matched);
            let mismatched =
                count(ShadowResult::StatusMismatch) + count(ShadowResult::BodyMismatch);
            let compared = matched + mismatched;
            ShadowReport {
                shadow: shadow.name.to_string(),
                results: state
                    .counts()
                    .map(|(result, n)| (result.as_str().to_owned(), n))
                    .collect(),
                compared,
                matched,
                mismatched,
                match_rate: (compared > 0).then(|| matched as f64 / compared as f64),
                errors: count(ShadowResult::Error),
                dropped: state
                    .counts()
                    .filter(|(result, _)| result.is_dropped())
                    .map(|(_, n)| n)
                    .sum(),
            }
        })
        .collect()
}

/// The `window` query parameter: `60s`, `5m`, `500ms`; default 60 s.
pub fn parse_window(query: Option<&str>) -> Result<Duration, String> {
    let Some(text) = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("window="))
    else {
        return Ok(DEFAULT_WINDOW);
    };
    let window = humantime::parse_duration(text).map_err(|e| {
        format!("window '{text}' is not a duration ({e}): write e.g. window=60s, window=5m")
    })?;
    if window.is_zero() {
        return Err("window must be above 0, e.g. window=60s".into());
    }
    Ok(window)
}

/// `GET /metrics` and `GET /api/v1/stats[?window=…][&scope=fleet]` for the
/// admin listener.
pub fn extension(metrics: Metrics, plane: Arc<ControlPlane>) -> Extension {
    Box::new(move |method, path, query| {
        if method != Method::GET {
            return None;
        }
        let response: PendingResponse = match path {
            "/metrics" => Box::pin(std::future::ready(prometheus_text(&metrics))),
            "/api/v1/stats" => {
                let (metrics, plane) = (metrics.clone(), Arc::clone(&plane));
                let query = query.map(str::to_owned);
                Box::pin(async move { stats(&metrics, &plane, query.as_deref()).await })
            }
            _ => return None,
        };
        Some(response)
    })
}

async fn stats(metrics: &Metrics, plane: &ControlPlane, query: Option<&str>) -> AdminResponse {
    let error =
        |status, error: String| json_response(status, &json!({ "error": error, "detail": null }));
    let window = match parse_window(query) {
        Ok(window) => window,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let param = |name: &str| {
        query
            .unwrap_or("")
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
    };
    match param("scope") {
        None | Some("replica") => json_response(StatusCode::OK, &report(metrics, window)),
        Some("fleet") => {
            let published_window = metrics.max_window();
            if param("window").is_some() && window != published_window {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "scope=fleet covers the window every replica publishes, {}s ([metrics] slice × slices): leave window out or ask window={}s",
                        published_window.as_secs_f64(),
                        published_window.as_secs_f64()
                    ),
                );
            }
            let Some(store) = plane.store() else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "scope=fleet needs a fleet: this replica runs without [cluster]".into(),
                );
            };
            match store.published().await {
                Ok(published) => json_response(StatusCode::OK, &fleet_report(metrics, &published)),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            }
        }
        Some(other) => error(
            StatusCode::BAD_REQUEST,
            format!("scope '{other}' is not one of replica, fleet"),
        ),
    }
}

/// Keeps metrics in step with the control plane: reload results counted,
/// each new table synced (its series exist at once, removed versions retire).
pub fn observer(metrics: Metrics) -> Observer {
    Box::new(move |event| match event {
        PlaneEvent::Reload { ok } => metrics.record_reload(*ok),
        PlaneEvent::TableChanged(table) => metrics.sync_table(table),
        PlaneEvent::RoutesChanged { .. } => {}
    })
}

fn prometheus_text(metrics: &Metrics) -> AdminResponse {
    match metrics.encode() {
        Ok(text) => text_response(StatusCode::OK, metrics::CONTENT_TYPE, text),
        Err(error) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({ "error": error.to_string(), "detail": null }),
        ),
    }
}

/// `switchyard ctl stats`: one line per version.
pub fn render(body: &Value) -> String {
    let report: StatsReport = match serde_json::from_value(body.clone()) {
        Ok(report) => report,
        Err(error) => return format!("unexpected stats reply ({error}):\n{body}"),
    };
    let scope = report.fleet.as_ref().map_or_else(String::new, |fleet| {
        format!(
            "fleet of {} ({}), ",
            fleet.replicas.len(),
            fleet.replicas.join(", ")
        )
    });
    let mut out = format!(
        "{scope}window {}s, table revision {}{}\n",
        report.window_seconds,
        report
            .revision
            .map_or_else(|| "-".to_owned(), |r| r.to_string()),
        if report.enabled {
            ""
        } else {
            " (measurement disabled: [metrics] enabled = false)"
        }
    );
    let header = [
        "ROUTE", "VERSION", "WEIGHT", "REQUESTS", "RPS", "ERRORS", "P50 ms", "P90 ms", "P99 ms",
        "P99.9 ms", "MAX ms",
    ];
    let mut rows: Vec<[String; 11]> = vec![header.map(str::to_owned)];
    for route in &report.routes {
        for v in &route.versions {
            let l = &v.latency_ms;
            rows.push([
                route.route.clone(),
                v.version.clone(),
                v.weight
                    .map_or_else(|| "retiring".to_owned(), |w| w.to_string()),
                v.requests.to_string(),
                format!("{:.1}", v.rps),
                format!("{} ({:.2}%)", v.errors, v.error_rate * 100.0),
                format!("{:.2}", l.p50),
                format!("{:.2}", l.p90),
                format!("{:.2}", l.p99),
                format!("{:.2}", l.p999),
                format!("{:.2}", l.max),
            ]);
        }
    }
    crate::columns::write_columns(&mut out, "", &rows);
    for route in &report.routes {
        for shadow in &route.shadows {
            let rate = shadow
                .match_rate
                .map_or_else(|| "-".to_owned(), |r| format!("{:.2}%", r * 100.0));
            let _ = writeln!(
                out,
                "shadow {}/{}: {} compared, match rate {rate}, {} errors, {} dropped",
                route.route, shadow.shadow, shadow.compared, shadow.errors, shadow.dropped
            );
        }
    }
    out
}

/// Exports a gauge the data plane keeps as an atomic (read at scrape time).
pub struct AtomicGauge {
    gauge: prometheus::IntGauge,
    value: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl AtomicGauge {
    pub fn new(
        name: &str,
        help: &str,
        value: std::sync::Arc<std::sync::atomic::AtomicI64>,
    ) -> prometheus::Result<AtomicGauge> {
        Ok(AtomicGauge {
            gauge: prometheus::IntGauge::new(name, help)?,
            value,
        })
    }
}

impl prometheus::core::Collector for AtomicGauge {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.gauge
            .set(self.value.load(std::sync::atomic::Ordering::Relaxed));
        self.gauge.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_query() {
        assert_eq!(parse_window(None), Ok(DEFAULT_WINDOW));
        assert_eq!(parse_window(Some("x=1")), Ok(DEFAULT_WINDOW));
        assert_eq!(
            parse_window(Some("a=b&window=10s")),
            Ok(Duration::from_secs(10))
        );
        assert_eq!(
            parse_window(Some("window=500ms")),
            Ok(Duration::from_millis(500))
        );
        assert!(parse_window(Some("window=soon"))
            .expect_err("bad")
            .contains("window=60s"));
        assert!(parse_window(Some("window=0s")).is_err());
    }

    #[test]
    fn renders_a_table_row_per_version() {
        let stats = VersionStats {
            covered: Duration::from_secs(10),
            requests: 100,
            status: [0, 98, 0, 0, 2],
            upstream_errors: [1, 0, 0, 0],
            aborted: 0,
            errors: 2,
            latency: Latency {
                p50: Duration::from_micros(5_123),
                ..Latency::default()
            },
            last_byte: Latency::default(),
        };
        let report = StatsReport {
            enabled: true,
            window_seconds: 10.0,
            revision: Some(4),
            fleet: None,
            routes: vec![RouteReport {
                route: "web".into(),
                versions: vec![
                    VersionReport::new("stable", Some(90), &stats),
                    VersionReport::new("old", None, &stats),
                ],
                shadows: Vec::new(),
            }],
        };
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["routes"][0]["versions"][0]["status"]["5xx"], 2);
        assert_eq!(
            json["routes"][0]["versions"][0]["upstream_errors"]["connect"],
            1
        );
        assert_eq!(json["routes"][0]["versions"][0]["latency_ms"]["p50"], 5.123);
        let text = render(&json);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("revision 4"), "{text}");
        assert!(lines[1].starts_with("ROUTE"), "{text}");
        assert!(
            lines[2].contains("stable") && lines[2].contains("5.12"),
            "{text}"
        );
        assert!(lines[2].contains("2 (2.00%)"), "{text}");
        assert!(lines[3].contains("retiring"), "{text}");
    }
}
