//! Upstream and client faults against the real proxy: for each, the
//! client's status (and the body naming the cause where the proxy
//! answers), how many requests the upstream saw, the proxy still serving,
//! the routing table unchanged (same revision), and how the version's
//! figures count it: an upstream's fault is the version's error, a
//! client's never is (it would roll back a healthy canary).
//!
//! Faults tested elsewhere, not repeated here:
//! - a malformed client body (bad chunk size) is 400 and no upstream error:
//!   `limits.rs`, `a_malformed_client_body_is_400_and_not_the_versions_upstream_error`;
//! - shadows that refuse, never answer or reset change nothing for clients:
//!   `shadow.rs`, `refusing_silent_and_resetting_shadows_change_nothing_for_clients`;
//! - an invalid config on reload keeps the table and is reported (file
//!   watch and `POST /api/v1/reload`, 422): `reload.rs`,
//!   `file_edit_reloads_and_invalid_file_is_reported`;
//! - admin writes with bad JSON, without or with a wrong token, without
//!   `If-Match` leave the table alone: `admin.rs`,
//!   `refused_changes_leave_the_table_alone`; a stale `If-Match` is 412:
//!   `two_writers_with_one_revision_one_wins`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;
use switchyard_proxy::metrics::VersionStats;
use switchyard_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// After a fault: a normal request is served and the table is the one the
/// proxy started with.
async fn still_serving_unchanged(proxy: &TestProxy, revision: u64) {
    assert_eq!(proxy.get("/").await.status, StatusCode::OK);
    assert_eq!(table_revision(proxy), revision);
}

fn table_revision(proxy: &TestProxy) -> u64 {
    proxy.running.table.load().revision()
}

/// The version's since-start figures, once `done` holds for them.
async fn figures_once(
    proxy: &TestProxy,
    route: &str,
    version: &str,
    what: &str,
    done: impl Fn(&VersionStats) -> bool,
) -> VersionStats {
    eventually(Duration::from_secs(10), what, || {
        let stats = proxy
            .running
            .metrics
            .totals(route, version)
            .filter(|stats| done(stats));
        async move { stats }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_answer_the_client_and_change_nothing() {
    let stable = backend("stable").start().await;
    let refusing = refusing_port();
    let text = route("web").backend("stable", 1, &stable).build()
        + &route("dead")
            .key("path_prefix", "/dead")
            .version("stable", 1, &[refusing.to_string()])
            .build()
        + &route("slow")
            .key("path_prefix", "/slow")
            .key("timeout", "200ms")
            .backend("stable", 1, &stable)
            .build();
    let proxy = start_proxy(&config(&text)).await;
    let revision = table_revision(&proxy);

    // Refused: 502 naming the version, nothing reached an upstream.
    let reply = proxy.get("/dead").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(reply.text().contains("'stable'"), "{}", reply.text());
    assert_eq!(stable.hits(), 0);
    // Never answers in time: 504, one upstream request.
    let reply = bounded(
        Duration::from_secs(5),
        "504",
        proxy.get("/slow?delay_ms=2000"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(reply.text().contains("'stable'"), "{}", reply.text());
    assert_eq!(stable.hits(), 1);
    // Answers 5xx: passed through as the upstream sent it, once.
    let reply = proxy.get("/x?status=503").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(stable.hits(), 2);

    still_serving_unchanged(&proxy, revision).await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_reset_mid_body_cuts_the_response_and_is_the_versions_reset() {
    let stable = backend("stable").start().await;
    // Answers 200 with 1000 bytes announced, sends 100, and resets the
    // connection once the client has the status.
    let reset = Arc::new(tokio::sync::Notify::new());
    let resetting = raw_backend({
        let reset = Arc::clone(&reset);
        move |mut stream, _| {
            let reset = Arc::clone(&reset);
            async move {
                if read_raw_request(&mut stream).await.is_some() {
                    let head = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(&[b'x'; 100]).await;
                    reset.notified().await;
                    let _ = stream.set_zero_linger();
                }
            }
        }
    })
    .await;
    let text = route("web").backend("stable", 1, &stable).build()
        + &route("cut")
            .key("path_prefix", "/cut")
            .version("stable", 1, &[resetting.endpoint()])
            .build();
    let proxy = start_proxy(&config(&text)).await;
    let revision = table_revision(&proxy);

    // The status went out before the reset: the client sees 200 and a
    // body that breaks off, never a complete short one.
    let req = http::Request::get(proxy.url("/cut"))
        .body(empty())
        .expect("request");
    let response = bounded(REQUEST_TIMEOUT, "the head", proxy.client.request(req))
        .await
        .expect("the response head");
    assert_eq!(response.status(), StatusCode::OK);
    reset.notify_one();
    let body = bounded(REQUEST_TIMEOUT, "the body", response.into_body().collect()).await;
    assert!(body.is_err(), "a cut body must not look complete");
    assert_eq!(resetting.connections(), 1);
    let figures = figures_once(&proxy, "cut", "stable", "the reset recorded", |s| {
        s.requests == 1
    })
    .await;
    assert_eq!(figures.errors, 1, "{figures:?}");
    assert_eq!(figures.upstream_errors, [0, 0, 1, 0], "{figures:?}");
    assert_eq!(figures.aborted, 0, "{figures:?}");

    still_serving_unchanged(&proxy, revision).await;
    assert_eq!(stable.hits(), 1);
    proxy.shutdown().await;
}

/// A backend that answers the first request on each connection (keeping
/// it open) and closes the connection when the next request arrives on it,
/// unanswered: an upstream whose keep-alive timeout fires just as the
/// proxy reuses the connection.
struct ClosesOnReuse {
    raw: RawBackend,
    answered: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

impl ClosesOnReuse {
    async fn start() -> ClosesOnReuse {
        let (answered, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (a, d) = (Arc::clone(&answered), Arc::clone(&dropped));
        let raw = raw_backend(move |mut stream, _| {
            let (answered, dropped) = (Arc::clone(&a), Arc::clone(&d));
            async move {
                if read_raw_request(&mut stream).await.is_none() {
                    return;
                }
                answered.fetch_add(1, Ordering::SeqCst);
                let answer = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nanswered";
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                if read_raw_request(&mut stream).await.is_some() {
                    dropped.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
        .await;
        ClosesOnReuse {
            raw,
            answered,
            dropped,
        }
    }

    /// Requests answered, requests dropped unanswered, connections.
    fn seen(&self) -> (usize, usize, usize) {
        (
            self.answered.load(Ordering::SeqCst),
            self.dropped.load(Ordering::SeqCst),
            self.raw.connections(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_closed_as_it_is_reused_is_retried_once_for_a_get_only() {
    let stable = backend("stable").start().await;
    let closing = ClosesOnReuse::start().await;
    let text = route("web").backend("stable", 1, &stable).build()
        + &route("reuse")
            .key("path_prefix", "/reuse")
            .version("stable", 1, &[closing.raw.endpoint()])
            .build();
    let proxy = start_proxy(&config(&text)).await;
    let revision = table_revision(&proxy);

    let first = proxy.get("/reuse").await;
    assert_eq!(
        (first.status, first.text().as_str()),
        (StatusCode::OK, "answered")
    );
    // The connection went back to the pool when the proxy handed on the
    // body's last bytes, before the client could read them.
    assert_eq!(closing.seen(), (1, 0, 1));

    // GET, no body: sent on the pooled connection, which closes unanswered;
    // sent once more on a new connection, and answered.
    let second = proxy.get("/reuse").await;
    assert_eq!(
        (second.status, second.text().as_str()),
        (StatusCode::OK, "answered"),
        "the GET was not retried"
    );
    assert_eq!(closing.seen(), (2, 1, 2));

    // POST with a body: the upstream may have acted on it, so it is never
    // sent twice: 502 naming the version, nothing answered.
    let post = http::Request::post(proxy.url("/reuse"))
        .body(full("order=1"))
        .expect("request");
    let reply = send(&proxy.client, post).await.expect("a 502, not a reset");
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert!(reply.text().contains("'stable'"), "{}", reply.text());
    assert_eq!(closing.seen(), (2, 2, 2));

    // The retried GET counts once, and as no error; the POST as the
    // version's reset.
    let figures = figures_once(&proxy, "reuse", "stable", "three requests", |s| {
        s.requests == 3
    })
    .await;
    assert_eq!(figures.errors, 1, "{figures:?}");
    assert_eq!(figures.upstream_errors, [0, 0, 1, 0], "{figures:?}");
    still_serving_unchanged(&proxy, revision).await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_name_that_does_not_resolve_is_502_naming_the_version() {
    let stable = backend("stable").start().await;
    // RFC 6761: names under .invalid never resolve.
    let text = route("web").backend("stable", 1, &stable).build()
        + &route("gone")
            .key("path_prefix", "/gone")
            .version("canary", 1, &["canary.switchyard.invalid:8080".to_owned()])
            .build();
    let proxy = start_proxy(&config(&text)).await;
    let revision = table_revision(&proxy);

    for _ in 0..2 {
        let reply = bounded(Duration::from_secs(10), "502", proxy.get("/gone")).await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
        let text = reply.text();
        assert!(text.contains("version 'canary'"), "{text}");
        assert!(text.contains("canary.switchyard.invalid:8080"), "{text}");
    }
    let figures = figures_once(&proxy, "gone", "canary", "two requests", |s| {
        s.requests == 2
    })
    .await;
    assert_eq!(figures.upstream_errors, [2, 0, 0, 0], "{figures:?}");
    still_serving_unchanged(&proxy, revision).await;
    assert_eq!(stable.hits(), 1);
    proxy.shutdown().await;
}

/// A raw client connection to the proxy that has sent `head` and `body`.
async fn sent(proxy: &TestProxy, head: &str, body: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(proxy.running.data_addr)
        .await
        .expect("connect to the proxy");
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(body).await.expect("write body");
    stream
}

/// Reads from `stream` until `wanted` bytes have come (head included).
async fn read_at_least(stream: &mut TcpStream, wanted: usize) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    bounded(Duration::from_secs(10), "the start of the answer", async {
        while got.len() < wanted {
            match stream.read(&mut buf).await {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
    })
    .await;
    String::from_utf8_lossy(&got).into_owned()
}

/// What a client aborting gives: the version's figures count one aborted
/// request and no error.
async fn counted_as_one_abort(proxy: &TestProxy) {
    // A request is recorded once, when it ends: then its figures are final.
    let figures = figures_once(proxy, "web", "stable", "the request recorded", |s| {
        s.requests == 1
    })
    .await;
    assert_eq!(figures.aborted, 1, "{figures:?}");
    assert_eq!(
        figures.errors, 0,
        "a client's abort is no error: {figures:?}"
    );
    assert_eq!(figures.upstream_errors, [0; 4], "{figures:?}");
}

const UPLOAD_HEAD: &str = "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_abort_mid_upload_before_the_answer_is_an_abort_not_an_error() {
    // Reads bodies and never answers.
    let reader = raw_backend(|mut stream, _| async move {
        let mut buf = [0u8; 16 * 1024];
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
    let ok = backend("ok").start().await;
    let text = route("ok").backend("stable", 1, &ok).build()
        + &route("web")
            .key("path_prefix", "/upload")
            .version("stable", 1, &[reader.endpoint()])
            .build();
    let proxy = start_proxy(&config(&text)).await;
    let revision = table_revision(&proxy);

    let client = sent(&proxy, UPLOAD_HEAD, &[b'x'; 10_000]).await;
    eventually(
        Duration::from_secs(10),
        "the upload reached the upstream",
        || {
            let connected = reader.connections() == 1;
            async move { connected.then_some(()) }
        },
    )
    .await;
    drop(client);
    counted_as_one_abort(&proxy).await;
    assert_eq!(reader.connections(), 1);
    still_serving_unchanged(&proxy, revision).await;
    proxy.shutdown().await;
}

/// A client that sends `head` and `body` to the support backend (which
/// echoes an upload as it arrives and streams `/bytes/N`), reads `wanted`
/// bytes of its 200 and goes away: one aborted request, no error.
async fn client_aborts_after_the_answer(head: &str, body: &[u8], wanted: usize) {
    let stable = backend("stable").start().await;
    let proxy = start_proxy(&config(&route("web").backend("stable", 1, &stable).build())).await;
    let revision = table_revision(&proxy);

    let mut client = sent(&proxy, head, body).await;
    let answer = read_at_least(&mut client, wanted).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(client);
    counted_as_one_abort(&proxy).await;
    assert_eq!(stable.hits(), 1);
    still_serving_unchanged(&proxy, revision).await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_abort_mid_upload_after_the_answer_is_an_abort_not_an_error() {
    // The echo starts long before the 1 MB upload ends.
    client_aborts_after_the_answer(UPLOAD_HEAD, &[b'x'; 10_000], 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_abort_mid_download_is_an_abort_not_an_error() {
    let head = "GET /bytes/100000000 HTTP/1.1\r\nHost: a\r\n\r\n";
    client_aborts_after_the_answer(head, b"", 100_000).await;
}
