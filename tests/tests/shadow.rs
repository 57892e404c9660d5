//! Shadow traffic end to end: copies reach shadow backends (safe methods
//! only by default, sampled, headers stripped, bodies capped), a dead, silent
//! or resetting shadow changes nothing for clients, and `compare` counts
//! exactly the requests a shadow answers differently.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use switchyard_control::ctl::{Ctl, CtlCommand};
use switchyard_proxy::ShadowResult;
use switchyard_tests::admin::AdminClient;
use switchyard_tests::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------
// Shadow backends
// ---------------------------------------------------------------------------

/// What a recording shadow saw of one copy.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A shadow backend that records every request (whole body included) and
/// answers `answer(path)`: (status, body).
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

type Answer = fn(&str) -> (u16, &'static str);

async fn recorder(answer: Answer) -> Recorder {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let (log, conns) = (Arc::clone(&seen), Arc::clone(&connections));
    let accept = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            conns.fetch_add(1, Ordering::Relaxed);
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let log = Arc::clone(&log);
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await?.to_bytes();
                        let (status, text) = answer(parts.uri.path());
                        log.lock().expect("log").push(Seen {
                            method: parts.method,
                            path: parts.uri.path().to_owned(),
                            headers: parts.headers,
                            body,
                        });
                        let mut response = Response::new(full(text));
                        *response.status_mut() =
                            http::StatusCode::from_u16(status).expect("status");
                        Ok::<_, hyper::Error>(response)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Recorder {
        addr,
        seen,
        connections,
        accept,
    }
}

impl Recorder {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("log").clone()
    }

    fn hits(&self) -> usize {
        self.seen.lock().expect("log").len()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The same body the support backend named `stable` answers a GET with.
fn like_stable(_: &str) -> (u16, &'static str) {
    (200, "stable")
}

/// A shadow that accepts connections, reads the requests and never answers.
async fn silent_shadow() -> RawBackend {
    raw_backend(|mut stream, _| async move {
        let mut buf = vec![0u8; 16 * 1024];
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await
}

/// A shadow that reads the start of each request, then resets the
/// connection (RST, not FIN).
async fn resetting_shadow() -> RawBackend {
    raw_backend(|mut stream, _| async move {
        let mut buf = [0u8; 64];
        let _ = stream.read(&mut buf).await;
        let _ = stream.set_zero_linger();
        drop(stream);
    })
    .await
}

// ---------------------------------------------------------------------------
// Config and counters
// ---------------------------------------------------------------------------

/// One `[[routes.shadows]]` block; `extra` is more `key = value` lines.
fn shadow(name: &str, endpoint: SocketAddr, extra: &[&str]) -> String {
    let mut text =
        format!("\n  [[routes.shadows]]\n  name = \"{name}\"\n  endpoints = [\"{endpoint}\"]\n");
    for line in extra {
        text.push_str(&format!("  {line}\n"));
    }
    text
}

/// A proxy with one route `web` (prefix `prefix`) served by `primary`,
/// with the given shadow blocks.
fn web_route(name: &str, prefix: &str, primary: &Backend, shadows: &[String]) -> String {
    let mut text = route(name)
        .key("path_prefix", prefix)
        .backend("stable", 100, primary)
        .build();
    for block in shadows {
        text.push_str(block);
    }
    text
}

/// The common setup: route `web` on a `stable` backend, one shadow `next`
/// on a recorder that answers like `stable`, with `extra` shadow keys.
async fn one_shadow(extra: &[&str]) -> (Backend, Recorder, TestProxy) {
    let primary = backend("stable").start().await;
    let shadow_backend = recorder(like_stable).await;
    let toml = config(&web_route(
        "web",
        "/",
        &primary,
        &[shadow("next", shadow_backend.addr, extra)],
    ));
    let proxy = start_proxy(&toml).await;
    (primary, shadow_backend, proxy)
}

fn count(proxy: &TestProxy, route: &str, shadow: &str, result: ShadowResult) -> u64 {
    let table = proxy.running.table.load();
    table
        .route(route)
        .and_then(|r| r.shadow(shadow))
        .map(|s| s.state().count(result))
        .unwrap_or_else(|| panic!("no shadow {route}/{shadow}"))
}

fn in_flight(proxy: &TestProxy, route: &str, shadow: &str) -> usize {
    let table = proxy.running.table.load();
    table
        .route(route)
        .and_then(|r| r.shadow(shadow))
        .map(|s| s.state().in_flight())
        .unwrap_or_else(|| panic!("no shadow {route}/{shadow}"))
}

/// Waits (bounded) until `done` holds; fails the test with `what` and the
/// last value seen otherwise.
async fn eventually<T: std::fmt::Debug>(
    what: &str,
    mut probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let value = probe();
        if done(&value) {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}; last value {value:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn request(proxy: &TestProxy, method: Method, path: &str, body: TestBody) -> Reply {
    let req = Request::builder()
        .method(method.clone())
        .uri(proxy.url(path))
        .body(body)
        .expect("request");
    send(&proxy.client, req)
        .await
        .unwrap_or_else(|e| panic!("{method} {path} failed: {e}"))
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_safe_methods_are_copied_unless_configured() {
    let primary = backend("stable").start().await;
    let safe = recorder(like_stable).await;
    let writes = recorder(like_stable).await;
    let toml = config(&format!(
        "{}{}",
        web_route("safe", "/safe", &primary, &[shadow("next", safe.addr, &[])]),
        web_route(
            "writes",
            "/writes",
            &primary,
            &[shadow("audit", writes.addr, &["methods = [\"POST\"]"])]
        ),
    ));
    let proxy = start_proxy(&toml).await;

    let methods = [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ];
    for method in &methods {
        let reply = request(&proxy, method.clone(), "/safe/x", full("order #1")).await;
        assert_eq!(reply.status, 200, "{method}");
    }
    // Every request is accounted for: 4 refused by method, 3 answered.
    assert_eq!(count(&proxy, "safe", "next", ShadowResult::Method), 4);
    eventually(
        "3 answered copies",
        || count(&proxy, "safe", "next", ShadowResult::Answered),
        |n| *n == 3,
    )
    .await;
    // Copies race each other: compare as a set.
    let mut got: Vec<String> = safe.seen().iter().map(|s| s.method.to_string()).collect();
    got.sort();
    assert_eq!(got, ["GET", "HEAD", "OPTIONS"]);
    for copy in safe.seen() {
        assert_eq!(copy.path, "/safe/x");
        assert_eq!(copy.headers["x-switchyard-shadow"], "next");
    }

    // The POST-only shadow gets the POST, with its body, and nothing else.
    for method in [Method::GET, Method::POST] {
        let reply = request(&proxy, method.clone(), "/writes/orders", full("order #2")).await;
        assert_eq!(reply.status, 200);
    }
    eventually("the POST copy", || writes.hits(), |n| *n == 1).await;
    let copy = &writes.seen()[0];
    assert_eq!(copy.method, Method::POST);
    assert_eq!(&copy.body[..], b"order #2");
    assert_eq!(copy.headers["x-switchyard-shadow"], "audit");
    assert_eq!(count(&proxy, "writes", "audit", ShadowResult::Method), 1);
    assert_eq!(primary.hits(), methods.len() + 2);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarter_sampled_over_5000_requests_is_within_two_points() {
    let (_primary, shadow_backend, proxy) = one_shadow(&["percent = 25"]).await;
    let total = 5_000;
    let replies = bounded(
        Duration::from_secs(120),
        "5000 requests",
        load(&proxy, "/", total, 8),
    )
    .await;
    assert!(replies.iter().all(|r| r.status == 200));
    let sampled_out = count(&proxy, "web", "next", ShadowResult::SampledOut);
    let copies = total as u64 - sampled_out;
    let arrived = eventually(
        "every sampled copy to land",
        || shadow_backend.hits() as u64,
        |n| *n >= copies,
    )
    .await;
    let share = arrived as f64 / total as f64 * 100.0;
    assert!(
        (23.0..=27.0).contains(&share),
        "shadow got {share:.2} % of requests"
    );
    assert_eq!(arrived, copies);
    eventually(
        "every copy's answer",
        || count(&proxy, "web", "next", ShadowResult::Answered),
        |n| *n == copies,
    )
    .await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_silent_and_resetting_shadows_change_nothing_for_clients() {
    let primary = backend("stable").start().await;
    let refusing = refusing_port();
    let silent = silent_shadow().await;
    let resetting = resetting_shadow().await;
    let toml = config(&web_route(
        "web",
        "/",
        &primary,
        &[
            shadow("refusing", refusing.addr, &[]),
            shadow(
                "silent",
                silent.addr,
                &["max_in_flight = 4", "timeout = \"60s\""],
            ),
            shadow("resetting", resetting.addr, &[]),
        ],
    ));
    let proxy = start_proxy(&toml).await;
    let total = 200;
    let started = Instant::now();
    // With a silent shadow held for 60 s, a proxy that waited for it would
    // not get through even the first request within this bound.
    let replies = bounded(
        Duration::from_secs(30),
        "200 requests",
        load(&proxy, "/", total, 8),
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(replies.len(), total);
    assert!(replies
        .iter()
        .all(|r| r.status == 200 && r.text() == "stable"));
    assert_eq!(primary.hits(), total);

    // The silent shadow holds exactly max_in_flight copies; the rest drop.
    assert_eq!(in_flight(&proxy, "web", "silent"), 4);
    assert_eq!(
        count(&proxy, "web", "silent", ShadowResult::Overload),
        total as u64 - 4
    );
    let more = load(&proxy, "/", 20, 2).await;
    assert!(more.iter().all(|r| r.status == 200));
    assert_eq!(in_flight(&proxy, "web", "silent"), 4);
    assert_eq!(
        count(&proxy, "web", "silent", ShadowResult::Overload),
        total as u64 + 16
    );

    let all = total as u64 + 20;
    for name in ["refusing", "resetting"] {
        eventually(
            &format!("{name}: every copy counted as an error"),
            || count(&proxy, "web", name, ShadowResult::Error),
            |n| *n == all,
        )
        .await;
        assert_eq!(in_flight(&proxy, "web", name), 0);
    }
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_reaches_the_primary_intact_and_is_not_copied() {
    let (_primary, shadow_backend, proxy) =
        one_shadow(&["methods = [\"POST\"]", "max_body_bytes = 65536"]).await;
    let mib = 1024 * 1024;

    // Streamed without a length: the copy is abandoned as the body passes
    // 64 KiB, the primary gets every byte.
    let req = Request::post(proxy.url("/upload"))
        .body(Pattern::new(mib).boxed())
        .expect("request");
    let response = bounded(REQUEST_TIMEOUT, "1 MiB upload", proxy.client.request(req))
        .await
        .expect("upload");
    assert_eq!(response.status(), 200);
    let (len, hash) = hash_body(response.into_body()).await.expect("echo");
    assert_eq!((len, hash), (mib, Pattern::hash(mib)));
    assert_eq!(count(&proxy, "web", "next", ShadowResult::BodyTooLarge), 1);

    // With a declared length it is not even teed.
    let body: Vec<u8> = (0..mib).map(pattern_byte).collect();
    let reply = request(&proxy, Method::POST, "/upload", full(body)).await;
    assert_eq!(reply.body.len() as u64, mib);
    assert_eq!(count(&proxy, "web", "next", ShadowResult::BodyTooLarge), 2);

    // Exactly at the cap, it is copied whole.
    let body: Vec<u8> = (0..65536).map(pattern_byte).collect();
    let reply = request(&proxy, Method::POST, "/small", full(body.clone())).await;
    assert_eq!(&reply.body[..], &body[..]);
    eventually("the small copy", || shadow_backend.hits(), |n| *n == 1).await;
    let copy = &shadow_backend.seen()[0];
    assert_eq!(copy.path, "/small");
    assert_eq!(&copy.body[..], &body[..]);
    // The copy reaches the backend before its answer is counted.
    eventually(
        "the small copy's answer",
        || count(&proxy, "web", "next", ShadowResult::Answered),
        |n| *n == 1,
    )
    .await;
    eventually(
        "no copy in flight",
        || in_flight(&proxy, "web", "next"),
        |n| *n == 0,
    )
    .await;
    proxy.shutdown().await;
}

fn differs_on_some_paths(path: &str) -> (u16, &'static str) {
    match path {
        "/diff" => (200, "not stable"),
        "/broken" => (503, "stable"),
        _ => (200, "stable"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_counts_exactly_the_requests_answered_differently() {
    let primary = backend("stable").start().await;
    let twin = recorder(differs_on_some_paths).await;
    let same = recorder(like_stable).await;
    let toml = config(&web_route(
        "web",
        "/",
        &primary,
        &[
            shadow("twin", twin.addr, &["compare = true"]),
            shadow("same", same.addr, &["compare = true"]),
            shadow(
                "status",
                twin.addr,
                &["compare = true", "compare_ignore_body = true"],
            ),
        ],
    ));
    let proxy = start_proxy(&toml).await;
    let mut paths = Vec::new();
    paths.extend(std::iter::repeat_n("/a", 30));
    paths.extend(std::iter::repeat_n("/diff", 7));
    paths.extend(std::iter::repeat_n("/broken", 3));
    for path in &paths {
        let reply = proxy.get(path).await;
        assert_eq!(
            (reply.status.as_u16(), reply.text().as_str()),
            (200, "stable")
        );
    }
    let judged = |name: &str| {
        [
            ShadowResult::Matched,
            ShadowResult::StatusMismatch,
            ShadowResult::BodyMismatch,
        ]
        .map(|r| count(&proxy, "web", name, r))
    };
    let twin_counts = eventually(
        "twin judged",
        || judged("twin"),
        |c| c.iter().sum::<u64>() == 40,
    )
    .await;
    assert_eq!(twin_counts, [30, 3, 7]);
    let same_counts = eventually(
        "same judged",
        || judged("same"),
        |c| c.iter().sum::<u64>() == 40,
    )
    .await;
    assert_eq!(same_counts, [40, 0, 0]);
    let status_counts = eventually(
        "status judged",
        || judged("status"),
        |c| c.iter().sum::<u64>() == 40,
    )
    .await;
    assert_eq!(status_counts, [37, 3, 0]);
    for name in ["twin", "same", "status"] {
        assert_eq!(count(&proxy, "web", name, ShadowResult::Error), 0);
        assert_eq!(count(&proxy, "web", name, ShadowResult::Aborted), 0);
    }

    // The admin API lists the same counts and the mismatches themselves.
    let admin = AdminClient::new(proxy.running.admin_addr, None);
    let reply = admin.call(Method::GET, "/api/v1/shadows", None, None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    let listed = |name: &str| {
        body["shadows"]
            .as_array()
            .and_then(|all| all.iter().find(|s| s["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in {body}"))
    };
    let twin_json = listed("twin");
    assert_eq!(twin_json["counts"]["body_mismatch"], 7);
    assert_eq!(twin_json["counts"]["status_mismatch"], 3);
    let mismatches = twin_json["mismatches"].as_array().expect("mismatches");
    assert_eq!(mismatches.len(), 10);
    for m in mismatches {
        assert_eq!(m["method"], "GET");
        assert_eq!(m["primary_status"], 200);
        match m["path"].as_str() {
            Some("/diff") => assert_eq!(
                (m["shadow_status"].as_u64(), m["kind"].as_str()),
                (Some(200), Some("body_mismatch"))
            ),
            Some("/broken") => assert_eq!(
                (m["shadow_status"].as_u64(), m["kind"].as_str()),
                (Some(503), Some("status_mismatch"))
            ),
            other => panic!("unexpected mismatch path {other:?}"),
        }
        assert!(m["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{m}");
    }
    assert_eq!(listed("same")["mismatches"], serde_json::json!([]));
    assert_eq!(listed("same")["counts"]["matched"], 40);

    // And `switchyard ctl shadows` prints them (the command's own code; the
    // binary's ctl round trip: control/tests/cli.rs).
    let ctl = Ctl::new(&proxy.running.admin_addr.to_string(), None, false);
    let text = ctl
        .run(CtlCommand::Shadows)
        .await
        .unwrap_or_else(|error| panic!("switchyard ctl shadows failed: {error}"));
    assert!(text.contains("web/twin"), "{text}");
    assert!(
        text.contains("matched 30  status_mismatch 3  body_mismatch 7"),
        "{text}"
    );
    assert!(
        text.contains("GET /broken  primary 200  shadow 503  status_mismatch"),
        "{text}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_headers_removes_them_from_the_copy_only() {
    let (_primary, shadow_backend, proxy) =
        one_shadow(&["strip_headers = [\"Authorization\", \"cookie\"]"]).await;
    let req = Request::get(proxy.url("/headers?q=1"))
        .header("authorization", "Bearer secret")
        .header("cookie", "session=1")
        .header("x-keep", "yes")
        .body(empty())
        .expect("request");
    let reply = send(&proxy.client, req).await.expect("reply");
    let primary_saw = reply.json();
    assert_eq!(primary_saw["headers"]["authorization"][0], "Bearer secret");
    assert_eq!(primary_saw["headers"]["cookie"][0], "session=1");
    assert!(primary_saw["headers"]["x-switchyard-shadow"].is_null());

    eventually("the copy", || shadow_backend.hits(), |n| *n == 1).await;
    let copy = &shadow_backend.seen()[0];
    assert!(!copy.headers.contains_key("authorization"));
    assert!(!copy.headers.contains_key("cookie"));
    assert_eq!(copy.headers["x-keep"], "yes");
    assert_eq!(copy.headers["x-switchyard-shadow"], "next");
    assert_eq!(copy.path, "/headers");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_connections_are_read_to_the_end_and_reused() {
    let (_primary, shadow_backend, proxy) = one_shadow(&[]).await;
    for i in 0..100 {
        proxy.get("/").await;
        // One at a time, so each copy can return its connection to the pool.
        eventually("the copy", || shadow_backend.hits(), |n| *n == i + 1).await;
        eventually(
            "the copy to finish",
            || in_flight(&proxy, "web", "next"),
            |n| *n == 0,
        )
        .await;
    }
    // The pool takes a connection back on its own task, so a copy may now
    // and then open a new one before that; without reuse there would be 100.
    let connections = shadow_backend.connections.load(Ordering::Relaxed);
    assert!(
        connections <= 10,
        "{connections} connections for 100 sequential copies"
    );
    // A copy leaves its in-flight place just before its answer is counted.
    eventually(
        "every copy's answer",
        || count(&proxy, "web", "next", ShadowResult::Answered),
        |n| *n == 100,
    )
    .await;
    proxy.shutdown().await;
}
