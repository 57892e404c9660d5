//! Feature flags through the real proxy: 10,000 distinct keys at 10 % see
//! the flag 10 ± 1 % of the time, the same keys on a restarted proxy, all
//! of them again after raising to 25 %; a client's own flags header never
//! reaches the upstream; OFREP single and bulk evaluation answer as the
//! spec says and agree with the proxy; a guard turns off a flag whose
//! requests fail and leaves a healthy one alone; the metrics pass promtool;
//! the console shows a flag and turns it off.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use switchyard_control::ctl::{Ctl, CtlCommand};
use switchyard_tests::admin::AdminClient;
use switchyard_tests::browser::{click_js, type_js, Browser};
use switchyard_tests::tools::promtool_check;
use switchyard_tests::*;
use tokio::net::TcpListener;

const CLIENTS: usize = 8;
const FLAGS_HEADER: &str = "x-switchyard-flags";

fn flag_config(backend: &str, percent: u32, guard: &str) -> String {
    config(&format!(
        "{}{}\n[[flags]]\nname = \"new-checkout\"\npercent = {percent}\nkey = {{ header = \"x-user-id\" }}\nroutes = [\"web\"]\n{guard}",
        route("web").version("stable", 100, &[backend.to_owned()]).build(),
        route("other")
            .section("match_headers = { \"x-route\" = \"other\" }")
            .version("stable", 100, &[backend.to_owned()])
            .build(),
    ))
}

/// The flags header each of `keys` reached the upstream with (`GET
/// /headers` describes the request), every request also carrying a
/// client-sent flags header that must not pass.
async fn flagged(proxy: &TestProxy, route: &'static str, keys: &[String]) -> BTreeSet<String> {
    let keys = Arc::new(keys.to_vec());
    let url = Arc::new(proxy.url("/headers"));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|w| {
            let (keys, url) = (Arc::clone(&keys), Arc::clone(&url));
            tokio::spawn(async move {
                let client = client();
                let mut on = Vec::new();
                for key in keys.iter().skip(w).step_by(CLIENTS) {
                    let req = Request::get(url.as_str())
                        .header("x-user-id", key)
                        .header(FLAGS_HEADER, "spoofed,admin")
                        .header("x-route", route)
                        .body(empty())
                        .expect("request");
                    let reply = send(&client, req).await.expect("proxied");
                    assert_eq!(reply.status, StatusCode::OK);
                    let seen = reply.json();
                    let values: Vec<String> = seen["headers"][FLAGS_HEADER]
                        .as_array()
                        .map(|v| {
                            v.iter()
                                .filter_map(|s| s.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    assert!(values.len() <= 1, "{values:?}");
                    for value in &values {
                        assert!(
                            !value.contains("spoofed"),
                            "the client's header passed: {value}"
                        );
                        assert_eq!(value, "new-checkout");
                    }
                    if !values.is_empty() {
                        on.push(key.clone());
                    }
                }
                on
            })
        })
        .collect();
    let mut on = BTreeSet::new();
    for worker in workers {
        on.extend(worker.await.expect("client task"));
    }
    on
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_percent_sticks_across_restarts_and_raising_only_adds_units() {
    let backend = backend("app").start().await;
    let text = flag_config(&backend.endpoint(), 10, "");
    let proxy = start_proxy(&text).await;
    let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
    let ten = flagged(&proxy, "web", &keys).await;
    assert!((900..=1100).contains(&ten.len()), "{} of 10,000", ten.len());
    // A route the flag does not cover: nothing, not even the client's.
    assert!(flagged(&proxy, "other", &keys[..200]).await.is_empty());

    // Another process with the same config: the same units.
    let again = start_proxy(&text).await;
    let sample = &keys[..2_000];
    let restarted = flagged(&again, "web", sample).await;
    let before: BTreeSet<String> = ten.iter().filter(|k| sample.contains(k)).cloned().collect();
    assert_eq!(restarted, before);
    again.shutdown().await;

    // Raised to 25 % through the API (compare-and-set): nobody leaves.
    let admin = AdminClient::new(proxy.running.admin_addr, None);
    let (revision, _) = admin.routes().await;
    let stale = admin
        .call(
            Method::PUT,
            "/api/v1/flags/new-checkout",
            Some("\"999\""),
            Some(r#"{"percent": 25}"#),
        )
        .await;
    assert_eq!(stale.status, 412, "{}", stale.text());
    for bad in [
        r#"{"percent": 101}"#,
        r#"{"percnt": 25}"#,
        "{}",
        r#"{"variants": {"x": 1}}"#,
    ] {
        let reply = admin
            .call(Method::PUT, "/api/v1/flags/new-checkout", None, Some(bad))
            .await;
        assert!(
            reply.status == 400 || reply.status == 428,
            "{bad}: {}",
            reply.text()
        );
    }
    let unknown = admin
        .call(
            Method::PUT,
            "/api/v1/flags/nope",
            Some(&format!("\"{revision}\"")),
            Some(r#"{"percent": 25}"#),
        )
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    assert_eq!(
        admin.routes().await.0,
        revision,
        "a refused change changed the table"
    );
    let ctl = Ctl::new(&proxy.running.admin_addr.to_string(), None, false);
    let said = ctl
        .run(CtlCommand::Flag {
            name: "new-checkout".into(),
            percent: Some(25.0),
            on: false,
            off: false,
        })
        .await
        .expect("ctl flag");
    assert!(said.contains("on for 25%"), "{said}");
    let change = admin.last_change().await;
    assert_eq!(change["flag"], "new-checkout", "{change}");
    assert!(
        change["reason"]
            .as_str()
            .is_some_and(|r| r.contains("on for 10% → on for 25%")),
        "{change}"
    );
    let twenty_five = flagged(&proxy, "web", &keys).await;
    assert!(
        (2_350..=2_650).contains(&twenty_five.len()),
        "{}",
        twenty_five.len()
    );
    assert!(
        ten.is_subset(&twenty_five),
        "units left the flag when it was raised"
    );

    let shown = ctl.run(CtlCommand::Flags).await.expect("ctl flags");
    assert!(
        shown.contains("flag new-checkout: on for 25% of units"),
        "{shown}"
    );
    proxy.shutdown().await;
}

async fn ofrep(admin: &AdminClient, path: &str, body: &str, etag: Option<&str>) -> Reply {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(format!("{}{path}", admin.base))
        .header("content-type", "application/json");
    if let Some(etag) = etag {
        req = req.header("if-none-match", etag);
    }
    send(&client(), req.body(full(body.to_owned())).expect("request"))
        .await
        .expect("ofrep call")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ofrep_evaluates_as_the_spec_says_and_agrees_with_the_proxy() {
    let backend = backend("app").start().await;
    let mut text = flag_config(&backend.endpoint(), 50, "");
    text.push_str("\n[[flags]]\nname = \"theme\"\nkey = { cookie = \"uid\" }\nvariants = [{ name = \"light\", weight = 1 }, { name = \"dark\", weight = 1 }]\n");
    let proxy = start_proxy(&text).await;
    let admin = AdminClient::new(proxy.running.admin_addr, None);
    let keys: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    let on = flagged(&proxy, "web", &keys).await;
    for key in &keys {
        let reply = ofrep(
            &admin,
            "/ofrep/v1/evaluate/flags/new-checkout",
            &format!(r#"{{"context": {{"targetingKey": "{key}"}}}}"#),
            None,
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let body = reply.json();
        assert_eq!(body["key"], "new-checkout");
        assert_eq!(body["value"], on.contains(key), "{key}: {body}");
        assert_eq!(body["variant"], if on.contains(key) { "on" } else { "off" });
        assert_eq!(body["reason"], "SPLIT");
    }
    let variant = ofrep(
        &admin,
        "/ofrep/v1/evaluate/flags/theme",
        r#"{"context": {"targetingKey": "user-1"}}"#,
        None,
    )
    .await;
    let value = variant.json()["value"].clone();
    assert!(value == "light" || value == "dark", "{}", variant.text());

    // Errors, in the spec's shapes.
    let cases = [
        (
            "/ofrep/v1/evaluate/flags/nope",
            r#"{"context": {"targetingKey": "u"}}"#,
            404,
            "FLAG_NOT_FOUND",
        ),
        (
            "/ofrep/v1/evaluate/flags/new-checkout",
            r#"{"context": {}}"#,
            400,
            "TARGETING_KEY_MISSING",
        ),
        (
            "/ofrep/v1/evaluate/flags/new-checkout",
            "{not json",
            400,
            "PARSE_ERROR",
        ),
        (
            "/ofrep/v1/evaluate/flags/new-checkout",
            r#"{"context": 3}"#,
            400,
            "INVALID_CONTEXT",
        ),
    ];
    for (path, body, status, code) in cases {
        let reply = ofrep(&admin, path, body, None).await;
        assert_eq!(reply.status, status, "{path} {body}: {}", reply.text());
        let json = reply.json();
        assert_eq!(json["errorCode"], code, "{json}");
        assert!(json["errorDetails"].is_string(), "{json}");
        if status != 404 || path.ends_with("nope") {
            assert!(json["key"].is_string(), "{json}");
        }
    }

    // Bulk: every flag, an ETag, 304 while nothing changed.
    let body = r#"{"context": {"targetingKey": "user-7"}}"#;
    let bulk = ofrep(&admin, "/ofrep/v1/evaluate/flags", body, None).await;
    assert_eq!(bulk.status, 200, "{}", bulk.text());
    let flags = bulk.json()["flags"].as_array().cloned().expect("flags");
    let keys: Vec<&str> = flags.iter().filter_map(|f| f["key"].as_str()).collect();
    assert_eq!(keys, ["new-checkout", "theme"]);
    let etag = bulk.header("etag").expect("etag").to_owned();
    let same = ofrep(&admin, "/ofrep/v1/evaluate/flags", body, Some(&etag)).await;
    assert_eq!(same.status, 304);
    // Without a targeting key each flag fails on its own; the bulk call does not.
    let keyless = ofrep(&admin, "/ofrep/v1/evaluate/flags", "{}", None).await;
    assert_eq!(keyless.status, 200);
    assert_eq!(
        keyless.json()["flags"][0]["errorCode"],
        "TARGETING_KEY_MISSING"
    );
    let broken = ofrep(&admin, "/ofrep/v1/evaluate/flags", "[", None).await;
    assert_eq!(broken.status, 400);
    assert_eq!(broken.json()["errorCode"], "PARSE_ERROR");

    // Turned off: DISABLED, false for everyone, the ETag changes.
    let off = admin
        .call(
            Method::PUT,
            "/api/v1/flags/new-checkout?force=true",
            None,
            Some(r#"{"enabled": false}"#),
        )
        .await;
    assert_eq!(off.status, 200, "{}", off.text());
    let reply = ofrep(&admin, "/ofrep/v1/evaluate/flags/new-checkout", body, None).await;
    assert_eq!(
        (
            reply.json()["value"].clone(),
            reply.json()["reason"].clone()
        ),
        (Value::Bool(false), Value::from("DISABLED"))
    );
    assert_eq!(
        ofrep(&admin, "/ofrep/v1/evaluate/flags", body, Some(&etag))
            .await
            .status,
        200
    );
    assert!(flagged(&proxy, "web", &keys_of(100)).await.is_empty());
    proxy.shutdown().await;
}

fn keys_of(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user-{i}")).collect()
}

/// A backend answering 500 to every fifth request that carries the flag
/// (and 200 to everything else).
async fn failing_flagged_backend() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let flagged = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let flagged = Arc::clone(&flagged);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let on = req.headers().contains_key(FLAGS_HEADER);
                    let n = if on {
                        flagged.fetch_add(1, Ordering::Relaxed)
                    } else {
                        1
                    };
                    let status = if on && n % 5 == 0 { 500 } else { 200 };
                    let mut response = Response::new(full("x"));
                    *response.status_mut() = StatusCode::from_u16(status).expect("status");
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr.to_string(), task)
}

const GUARD: &str = "  [flags.guard]\n  max_error_rate_increase = 0.01\n  min_requests = 100\n  window = \"10s\"\n  interval = \"200ms\"\n";

/// Sends requests from `keys` until `done` or `limit` requests.
async fn traffic(proxy: &TestProxy, limit: usize, done: impl Fn() -> bool) -> usize {
    let client = client();
    let mut sent = 0;
    while sent < limit && !done() {
        let req = Request::get(proxy.url("/"))
            .header("x-user-id", format!("user-{sent}"))
            .body(empty())
            .expect("request");
        send(&client, req).await.expect("proxied");
        sent += 1;
    }
    sent
}

async fn enabled(admin: &AdminClient) -> (bool, Value) {
    let reply = admin.call(Method::GET, "/api/v1/flags", None, None).await;
    let body = reply.json();
    (body["flags"][0]["enabled"] == true, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_turns_off_a_flag_that_fails_and_leaves_a_healthy_one() {
    let (failing, _task) = failing_flagged_backend().await;
    let proxy = start_proxy(&flag_config(&failing, 50, GUARD)).await;
    let admin = AdminClient::new(proxy.running.admin_addr, None);
    let started = Instant::now();
    let tripped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (admin, tripped) = (
            AdminClient::new(proxy.running.admin_addr, None),
            Arc::clone(&tripped),
        );
        tokio::spawn(async move {
            while !tripped.load(Ordering::Relaxed) {
                if !enabled(&admin).await.0 {
                    tripped.store(true, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let sent = bounded(
        Duration::from_secs(60),
        "the guard",
        traffic(&proxy, 20_000, || tripped.load(Ordering::Relaxed)),
    )
    .await;
    watcher.abort();
    let (on, body) = enabled(&admin).await;
    assert!(!on, "still enabled after {sent} requests: {body}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    // The guard counts its trip and notes it just after the flag is off.
    let body = eventually(Duration::from_secs(10), "the trip recorded", || async {
        let (_, body) = enabled(&admin).await;
        let flag = &body["flags"][0];
        (flag["guard_trips"] != 0 && flag["guard"]["last"]["status"] != "watching").then_some(body)
    })
    .await;
    let flag = &body["flags"][0];
    assert_eq!(flag["guard_trips"], 1, "{flag}");
    assert_eq!(flag["guard"]["last"]["status"], "tripped", "{flag}");
    let change = admin.last_change().await;
    assert_eq!(
        (change["who"].as_str(), change["flag"].as_str()),
        (Some("guard"), Some("new-checkout")),
        "{change}"
    );
    assert!(
        change["reason"]
            .as_str()
            .is_some_and(|r| r.contains("flagged requests failed")),
        "{change}"
    );
    let text = admin.call(Method::GET, "/metrics", None, None).await.text();
    assert!(
        text.contains("switchyard_flag_guard_trips_total{flag=\"new-checkout\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("switchyard_flag_enabled{flag=\"new-checkout\"} 0"),
        "{text}"
    );
    proxy.shutdown().await;

    // Healthy: 5,000 requests, the guard watching, the flag stays on.
    let healthy = backend("app").start().await;
    let proxy = start_proxy(&flag_config(&healthy.endpoint(), 50, GUARD)).await;
    let admin = AdminClient::new(proxy.running.admin_addr, None);
    traffic(&proxy, 5_000, || false).await;
    let (on, body) = enabled(&admin).await;
    assert!(on, "a healthy flag was turned off: {body}");
    assert_eq!(
        body["flags"][0]["guard"]["last"]["status"], "watching",
        "{body}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    missing_promtool,
    ignore = "promtool is not installed (scripts/test.sh installs it)"
)]
async fn flag_metrics_pass_promtool() {
    let backend = backend("app").start().await;
    let proxy = start_proxy(&flag_config(&backend.endpoint(), 50, GUARD)).await;
    flagged(&proxy, "web", &keys_of(100)).await;
    let admin = AdminClient::new(proxy.running.admin_addr, None);
    let text = admin.call(Method::GET, "/metrics", None, None).await.text();
    for series in [
        "switchyard_flag_requests_total{",
        "switchyard_flag_response_headers_duration_seconds_bucket{",
        "switchyard_flag_percent{",
    ] {
        assert!(text.contains(series), "{series}:\n{text}");
    }
    promtool_check(&text);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    missing_chromium,
    ignore = "chromium is not installed (scripts/test.sh installs it)"
)]
async fn the_console_shows_a_flag_and_sets_it() {
    let chromium_bin = require_tool("chromium");
    let backend = backend("app").start().await;
    let proxy = start_proxy(&flag_config(&backend.endpoint(), 10, GUARD)).await;
    flagged(&proxy, "web", &keys_of(300)).await;
    let admin = AdminClient::new(proxy.running.admin_addr, None);
    let url = format!("http://{}/dashboard", proxy.running.admin_addr);
    let mut page = Browser::open(&chromium_bin, &url, 1280, 900).await;
    let row = "document.querySelector('#flags tr[data-flag=\"new-checkout\"]')";
    let split = page
        .wait_for(
            "the flag's row",
            &format!("{row} && {row}.querySelector('[data-field=\"split\"]').textContent"),
        )
        .await;
    assert_eq!(split, "on for 10.0% of units");
    let on = page
        .eval(&format!(
            "{row}.querySelector('[data-state=\"on\"]').textContent"
        ))
        .await;
    assert!(
        on.as_str()
            .is_some_and(|t| t.starts_with("on ") && t.contains("req")),
        "{on}"
    );

    page.eval(&type_js(
        &format!("{row}.querySelector('input[data-flag-percent]')"),
        "25",
    ))
    .await;
    assert_eq!(
        page.eval(&click_js(&format!(
            "{row}.querySelector('button[data-action=\"flag-percent\"]')"
        )))
        .await,
        true
    );
    page.wait_for(
        "25 %",
        &format!(
            "{row}.querySelector('[data-field=\"split\"]').textContent === 'on for 25.0% of units'"
        ),
    )
    .await;
    assert_eq!(
        page.eval(&click_js(&format!(
            "{row}.querySelector('button[data-action=\"flag-off\"]')"
        )))
        .await,
        true
    );
    page.wait_for(
        "the flag off",
        &format!("{row}.querySelector('[data-field=\"enabled\"]').textContent === 'off'"),
    )
    .await;
    let (enabled, body) = enabled(&admin).await;
    assert!(!enabled, "{body}");
    assert_eq!(body["flags"][0]["percent"], 25.0);
    proxy.shutdown().await;
}
