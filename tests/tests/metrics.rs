//! Measurement end to end: per-version latency and counts against backends
//! with fixed delays, status classes and upstream error kinds in the right
//! series, `GET /metrics` valid (parsed, and checked by promtool when
//! installed) and stable across a reload, and a removed version retired once
//! its last request ends.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;
use switchyard_control::ctl::{Ctl, CtlCommand};
use switchyard_control::{Config, StartOptions};
use switchyard_tests::admin::AdminClient;
use switchyard_tests::grafana;
use switchyard_tests::tools::promtool_check;
use switchyard_tests::*;

const STABLE_DELAY: Duration = Duration::from_millis(5);
const CANARY_DELAY: Duration = Duration::from_millis(20);

fn admin(proxy: &switchyard_control::Running) -> AdminClient {
    AdminClient::new(proxy.admin_addr, None)
}

async fn scrape(admin: &AdminClient) -> (String, prometheus_parse::Scrape) {
    let reply = admin.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        reply.headers
    );
    let text = reply.text();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{text}"));
    (text, scrape)
}

/// A counter or gauge sample; 0 when the series is absent (so a test that
/// expects a count fails on a missing series too).
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map_or(0.0, |s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// Every (metric, labels) of the per-version families.
fn series_keys(scrape: &prometheus_parse::Scrape) -> BTreeSet<String> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric.starts_with("switchyard_") && s.labels.get("version").is_some())
        .map(|s| {
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            format!("{}{{{}}}", s.metric, labels.join(","))
        })
        .collect()
}

async fn stats(admin: &AdminClient, window: &str) -> Value {
    let reply = admin
        .call(
            Method::GET,
            &format!("/api/v1/stats?window={window}"),
            None,
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

fn version<'a>(stats: &'a Value, route: &str, version: &str) -> Option<&'a Value> {
    stats["routes"]
        .as_array()?
        .iter()
        .find(|r| r["route"] == route)?["versions"]
        .as_array()?
        .iter()
        .find(|v| v["version"] == version)
}

/// Polls the stats API until `done` holds (5 s at most): a response is
/// recorded as its last byte is handed over, a moment before the client
/// has it.
async fn stats_until(admin: &AdminClient, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = stats(admin, "60s").await;
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "stats never settled: {stats:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_version_latency_and_counts_match_the_backends() {
    let stable = backend("stable").delay(STABLE_DELAY).start().await;
    let canary = backend("canary").delay(CANARY_DELAY).start().await;
    // Twins with the same delays, called directly: what a request costs
    // without the proxy, under the same load at the same moments.
    let stable_direct = backend("stable-direct").delay(STABLE_DELAY).start().await;
    let canary_direct = backend("canary-direct").delay(CANARY_DELAY).start().await;
    let proxy = start_proxy(&config(
        &route("web")
            .backend("stable", 1, &stable)
            .backend("canary", 1, &canary)
            .build(),
    ))
    .await;
    let client = client();
    let mut direct = [Vec::new(), Vec::new()];
    let rounds = 60;
    for _ in 0..rounds {
        for (i, twin) in [&stable_direct, &canary_direct].into_iter().enumerate() {
            let started = Instant::now();
            get(&client, &format!("http://{}/", twin.addr)).await;
            direct[i].push(started.elapsed().as_secs_f64() * 1e3);
        }
        for _ in 0..2 {
            assert_eq!(proxy.get("/").await.status, 200);
        }
    }
    let admin = admin(&proxy.running);
    let stats = stats_until(&admin, |stats| {
        ["stable", "canary"]
            .iter()
            .map(|v| version(stats, "web", v).map_or(0, |v| v["requests"].as_u64().unwrap_or(0)))
            .sum::<u64>()
            == 2 * rounds
    })
    .await;
    for (name, backend, delay, direct) in [
        ("stable", &stable, STABLE_DELAY, median(direct[0].clone())),
        ("canary", &canary, CANARY_DELAY, median(direct[1].clone())),
    ] {
        let v = version(&stats, "web", name).expect("version in stats");
        assert_eq!(
            v["requests"].as_u64(),
            Some(backend.hits() as u64),
            "{name}: counted requests differ from what the backend saw: {v:#}"
        );
        assert_eq!(v["status"]["2xx"], v["requests"]);
        assert_eq!(v["errors"], 0);
        let p50 = v["latency_ms"]["p50"].as_f64().expect("p50");
        eprintln!("{name}: proxy-reported p50 {p50:.3} ms, direct p50 {direct:.3} ms");
        // Never less than the backend takes: the proxy times the whole
        // upstream exchange (and rounds up). Not more than the direct median
        // (the delay plus what any loopback request costs) with its own
        // hop, allowed 1 ms. The direct median is no lower bound: it also
        // holds the test client's own waits for a CPU, which on a busy
        // machine are milliseconds the proxy rightly does not see.
        let delay_ms = delay.as_secs_f64() * 1e3;
        assert!(
            p50 >= delay_ms && p50 <= direct * 1.1 + 1.0,
            "{name}: p50 {p50} ms is below the backend's {delay_ms} ms or not within 10 % of {direct} ms (+1 ms proxy overhead)"
        );
        for field in ["p90", "p99", "p999", "max"] {
            assert!(
                v["latency_ms"][field].as_f64().expect(field) >= p50,
                "{v:#}"
            );
        }
    }
    // `switchyard ctl stats` prints the same figures as a table.
    let ctl = Ctl::new(&proxy.running.admin_addr.to_string(), None, false);
    let table = ctl
        .run(CtlCommand::Stats {
            window: "1m".into(),
            fleet: false,
        })
        .await
        .expect("ctl stats");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[1].starts_with("ROUTE") && lines[1].contains("P99.9 ms"),
        "{table}"
    );
    for (line, name) in lines[2..4].iter().zip(["stable", "canary"]) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[..3], ["web", name, "1"], "{table}");
        assert_eq!(cells[3], rounds.to_string(), "{table}");
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_classes_and_upstream_errors_land_in_their_series() {
    let ok = backend("ok").start().await;
    let unavailable = backend("unavailable").start().await;
    let slow = backend("slow").delay(Duration::from_secs(3)).start().await;
    let refusing = refusing_port();
    let refused = refusing.to_string();
    let proxy = start_proxy(&config(&format!(
        "{}{}{}{}",
        route("ok")
            .key("path_prefix", "/ok")
            .backend("stable", 1, &ok)
            .build(),
        route("unavailable")
            .key("path_prefix", "/unavailable")
            .backend("stable", 1, &unavailable)
            .build(),
        route("refused")
            .key("path_prefix", "/refused")
            .version("stable", 1, &[refused])
            .build(),
        route("slow")
            .key("path_prefix", "/slow")
            .key("timeout", "300ms")
            .backend("stable", 1, &slow)
            .build(),
    )))
    .await;
    for (path, times, status) in [
        ("/ok", 5, 200),
        ("/unavailable?status=503", 4, 503),
        ("/refused", 3, 502),
        ("/slow", 2, 504),
    ] {
        for _ in 0..times {
            assert_eq!(proxy.get(path).await.status, status, "{path}");
        }
    }
    let admin = admin(&proxy.running);
    let (text, scrape) = scrape(&admin).await;
    let requests = |route: &str, class: &str| {
        value(
            &scrape,
            "switchyard_requests_total",
            &[
                ("route", route),
                ("version", "stable"),
                ("code_class", class),
            ],
        )
    };
    let errors = |route: &str, kind: &str| {
        value(
            &scrape,
            "switchyard_upstream_errors_total",
            &[("route", route), ("version", "stable"), ("kind", kind)],
        )
    };
    let expected: [(&str, [f64; 5], [f64; 4]); 4] = [
        ("ok", [0.0, 5.0, 0.0, 0.0, 0.0], [0.0; 4]),
        ("unavailable", [0.0, 0.0, 0.0, 0.0, 4.0], [0.0; 4]),
        ("refused", [0.0, 0.0, 0.0, 0.0, 3.0], [3.0, 0.0, 0.0, 0.0]),
        ("slow", [0.0, 0.0, 0.0, 0.0, 2.0], [0.0, 2.0, 0.0, 0.0]),
    ];
    for (route, classes, kinds) in expected {
        for (class, count) in ["1xx", "2xx", "3xx", "4xx", "5xx"].into_iter().zip(classes) {
            assert_eq!(requests(route, class), count, "{route} {class}\n{text}");
        }
        for (kind, count) in ["connect", "timeout", "reset", "protocol"]
            .into_iter()
            .zip(kinds)
        {
            assert_eq!(errors(route, kind), count, "{route} {kind}\n{text}");
        }
    }
    let stats = stats(&admin, "60s").await;
    for (route, rate) in [
        ("ok", 0.0),
        ("unavailable", 1.0),
        ("refused", 1.0),
        ("slow", 1.0),
    ] {
        let v = version(&stats, route, "stable").expect("in stats");
        assert_eq!(v["error_rate"].as_f64(), Some(rate), "{route}: {v:#}");
    }
    let slow_p50 = version(&stats, "slow", "stable").expect("slow")["latency_ms"]["p50"]
        .as_f64()
        .expect("p50");
    assert!(
        (300.0..1_000.0).contains(&slow_p50),
        "timeouts are timed: {slow_p50}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_text_is_valid_and_stable_across_a_weight_change() {
    weight_change_scrapes().await;
}

/// The metrics text before and after a weight change, every figure in it
/// checked.
async fn weight_change_scrapes() -> [String; 2] {
    let stable = backend("stable").start().await;
    let canary = backend("canary").start().await;
    let next = backend("next").start().await;
    let shadow = format!(
        "\n  [[routes.shadows]]\n  name = \"next\"\n  endpoints = [\"{}\"]\n  \
         compare = true\n  compare_ignore_body = true\n",
        next.endpoint()
    );
    let proxy = start_proxy(&config(&format!(
        "{}{shadow}",
        route("web")
            .backend("stable", 90, &stable)
            .backend("canary", 10, &canary)
            .build()
    )))
    .await;
    // The test client's pooled connection stays open: one active at least.
    assert_eq!(proxy.get("/").await.status, 200);
    load(&proxy, "/", 19, 2).await;
    let admin = admin(&proxy.running);
    // Shadow copies finish on their own time.
    let stats = stats_until(&admin, |stats| {
        stats["routes"][0]["shadows"][0]["compared"].as_u64() == Some(20)
    })
    .await;
    assert_eq!(
        stats["routes"][0]["shadows"][0]["match_rate"], 1.0,
        "{stats:#}"
    );
    let (before_text, before) = scrape(&admin).await;
    let shadow_matched = [("route", "web"), ("shadow", "next"), ("result", "matched")];
    assert_eq!(
        value(&before, "switchyard_shadow_requests_total", &shadow_matched),
        20.0
    );
    // Every metric the Grafana dashboard queries (panels and variables) is
    // exported.
    let queries = grafana::queries(&grafana::dashboard());
    let queried: BTreeSet<String> = queries
        .iter()
        .flat_map(|query| grafana::metric_names(&query.expr))
        .collect();
    assert!(queried.len() >= 8, "{queried:?}");
    // Each sample line's name, as exposed (`…_bucket`, `…_sum` included).
    let exported: BTreeSet<&str> = before_text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .collect();
    for query in &queries {
        for name in grafana::metric_names(&query.expr) {
            assert!(
                exported.contains(name.as_str()),
                "Grafana's {} queries {name}, which /metrics does not export",
                query.place
            );
        }
    }
    for family in [
        "switchyard_requests_total",
        "switchyard_request_duration_seconds",
        "switchyard_upstream_errors_total",
        "switchyard_route_weight",
        "switchyard_table_revision",
        "switchyard_config_reloads_total",
        "switchyard_connections_active",
        "process_cpu_seconds_total",
    ] {
        assert!(
            before_text.contains(family),
            "{family} missing:\n{before_text}"
        );
    }
    let web = |v: &'static str| [("route", "web"), ("version", v)];
    assert_eq!(
        value(&before, "switchyard_route_weight", &web("canary")),
        10.0
    );
    let ok = |scrape: &prometheus_parse::Scrape, v: &str| {
        let labels = [("route", "web"), ("version", v), ("code_class", "2xx")];
        value(scrape, "switchyard_requests_total", &labels)
    };
    assert_eq!(ok(&before, "stable") + ok(&before, "canary"), 20.0);
    assert_eq!(ok(&before, "canary"), 2.0, "90/10 over 20 requests");
    assert!(value(&before, "switchyard_connections_active", &[]) >= 1.0);

    let (revision, _) = admin.routes().await;
    let reply = admin
        .set_weights("web", revision, r#"{"stable": 50, "canary": 50}"#)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    load(&proxy, "/", 20, 2).await;

    let (after_text, after) = scrape(&admin).await;
    assert_eq!(
        series_keys(&before),
        series_keys(&after),
        "same series after the swap"
    );
    assert_eq!(
        value(&after, "switchyard_route_weight", &web("canary")),
        50.0
    );
    assert_eq!(
        value(&after, "switchyard_table_revision", &[]),
        (revision + 1) as f64
    );
    for sample in &before.samples {
        if sample.metric == "switchyard_requests_total" {
            let labels: Vec<(&str, &str)> = sample
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let prometheus_parse::Value::Counter(then) = sample.value else {
                panic!("not a counter: {sample:?}");
            };
            assert!(
                value(&after, &sample.metric, &labels) >= then,
                "counter went down: {labels:?}"
            );
        }
    }
    assert_eq!(ok(&after, "stable") + ok(&after, "canary"), 40.0);
    assert_eq!(ok(&after, "canary"), 12.0, "then 50/50 over 20 more");
    proxy.shutdown().await;
    [before_text, after_text]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_version_is_retired_after_its_last_request() {
    retired_version_scrapes().await;
}

/// The metrics texts (two scrapes) once a removed version has been
/// retired, every figure in them checked.
async fn retired_version_scrapes() -> Vec<String> {
    let stable = backend("stable").start().await;
    let green = backend("green").start().await;
    let with_green = config(
        &route("web")
            .backend("stable", 0, &stable)
            .backend("green", 1, &green)
            .build(),
    );
    let without_green = config(&route("web").backend("stable", 1, &stable).build());
    let dir = temp_dir("metrics-retire");
    let path = dir.join("switchyard.toml");
    std::fs::write(&path, &with_green).expect("write config");
    let options = StartOptions {
        config_path: Some(path.clone()),
        config_text: Some(with_green.clone()),
        admin_token: None,
        watch: false,
    };
    let config = Config::parse(&with_green, "test").expect("valid");
    let running = bounded(
        Duration::from_secs(10),
        "start",
        switchyard_control::start_with(&config, options),
    )
    .await
    .expect("proxy starts");
    let admin = admin(&running);
    let url = format!("http://{}/?delay_ms=1000", running.data_addr);
    let in_flight = tokio::spawn(async move { get(&client(), &url).await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while green.hits() == 0 {
        assert!(
            Instant::now() < deadline,
            "the slow request never reached green"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    std::fs::write(&path, &without_green).expect("rewrite config");
    let reply = admin.call(Method::POST, "/api/v1/reload", None, None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let during = stats(&admin, "60s").await;
    let retiring = version(&during, "web", "green").expect("kept while its request runs");
    assert_eq!(retiring["weight"], Value::Null, "{during:#}");
    let (text, _) = scrape(&admin).await;
    assert!(text.contains("version=\"green\""), "{text}");
    assert!(!text.contains("switchyard_route_weight{route=\"web\",version=\"green\"}"));

    let reply = bounded(Duration::from_secs(10), "slow request", in_flight)
        .await
        .expect("request task");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header(BACKEND_HEADER), Some("green"));
    // Gone now, and stays gone: nothing can record into it any more.
    let mut texts = Vec::new();
    for _ in 0..2 {
        let (text, scrape) = scrape(&admin).await;
        assert!(!text.contains("version=\"green\""), "ghost series:\n{text}");
        assert_eq!(
            value(
                &scrape,
                "switchyard_config_reloads_total",
                &[("result", "success")]
            ),
            1.0,
            "{text}"
        );
        let now = stats(&admin, "60s").await;
        assert!(version(&now, "web", "green").is_none(), "{now:#}");
        assert!(version(&now, "web", "stable").is_some());
        texts.push(text);
    }
    bounded(Duration::from_secs(20), "shutdown", running.shutdown()).await;
    texts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    missing_promtool,
    ignore = "promtool is not installed (scripts/test.sh installs it)"
)]
async fn metrics_text_passes_promtool_before_and_after_changes() {
    for text in weight_change_scrapes().await {
        promtool_check(&text);
    }
    for text in retired_version_scrapes().await {
        promtool_check(&text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_measurement_records_nothing() {
    let stable = backend("stable").start().await;
    let proxy = start_proxy(&config(&format!(
        "[metrics]\nenabled = false\n\n{}",
        route("web").backend("stable", 1, &stable).build()
    )))
    .await;
    load(&proxy, "/", 5, 1).await;
    let admin = admin(&proxy.running);
    let (text, _) = scrape(&admin).await;
    assert!(!text.contains("switchyard_requests_total"), "{text}");
    assert!(text.contains("switchyard_route_weight"), "{text}");
    let stats = stats(&admin, "60s").await;
    assert_eq!(stats["enabled"], false);
    proxy.shutdown().await;
}
