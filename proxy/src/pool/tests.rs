//! The pool against real loopback servers: reuse, caps, timeouts, stale
//! and refused connections, uploads and trailers.

use super::*;
use crate::body;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::task::Context;

/// A listener answering every connection with `handle` on raw bytes.
async fn raw_server<F, Fut>(handle: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(handle(stream));
        }
    });
    (addr, accepted)
}

/// Reads what a request sent first and writes `response` as it is.
async fn answer_raw(stream: &mut tokio::net::TcpStream, response: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = [0u8; 4096];
    let _ = stream.read(&mut buf).await;
    let _ = stream.write_all(response).await;
}

/// A loopback HTTP/1.1 server counting the connections it accepts.
/// `/close` answers with `Connection: close`; `/big` with 1 MiB;
/// `/slow/MS` after MS milliseconds.
async fn server() -> (SocketAddr, Arc<AtomicUsize>) {
    raw_server(|stream| async move {
        let service = service_fn(|req: Request<Incoming>| async move {
            if let Some(ms) = req.uri().path().strip_prefix("/slow/") {
                let ms = ms.parse().expect("milliseconds");
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let mut response = match req.uri().path() {
                "/big" => Response::new(body::full(vec![b'x'; 1 << 20])),
                path => Response::new(body::full(path.to_string())),
            };
            if req.uri().path() == "/close" {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, std::convert::Infallible>(response)
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    })
    .await
}

fn pool(idle_timeout: Duration, max_idle_per_host: usize) -> Pool<TcpConnect> {
    Pool::new(
        PoolSettings {
            idle_timeout,
            max_idle_per_host,
        },
        TcpConnect {
            timeout: Duration::from_secs(1),
        },
    )
}

impl<C: Connect> Pool<C> {
    /// `send` with a timeout no test here reaches.
    async fn send_within(
        &self,
        req: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, PoolError> {
        self.send(req, Duration::from_secs(10)).await
    }
}

/// A request whose answer takes 2 s, sent with a 100 ms timeout.
async fn assert_times_out(pool: &Pool<TcpConnect>, addr: SocketAddr) {
    let started = std::time::Instant::now();
    let error = pool
        .send(get(addr, "/slow/2000"), Duration::from_millis(100))
        .await
        .expect_err("timed out");
    assert!(matches!(error, PoolError::Timeout(_)), "{error:?}");
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[tokio::test]
async fn response_headers_later_than_the_timeout_fail_with_a_timeout() {
    let (addr, _) = server().await;
    let pool = pool(Duration::from_secs(60), 8);
    assert_times_out(&pool, addr).await;
    // The connection still waiting for that answer is not lent again.
    assert_eq!(pool.idle_count(&addr.to_string()), 0);
}

#[tokio::test]
async fn a_busy_connection_outlives_the_timeout_of_its_first_request() {
    // The connection's timer, set for the first request, fires during a
    // later one: it must move to that request's deadline, not fail it.
    let (addr, accepted) = server().await;
    let pool = pool(Duration::from_secs(60), 8);
    let timeout = Duration::from_millis(500);
    let started = std::time::Instant::now();
    while started.elapsed() < timeout * 3 {
        let response = pool
            .send(get(addr, "/slow/100"), timeout)
            .await
            .expect("in time");
        assert_eq!(text(response).await, "/slow/100");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_shorter_timeout_on_a_reused_connection_applies() {
    let (addr, accepted) = server().await;
    let pool = pool(Duration::from_secs(60), 8);
    let response = pool.send_within(get(addr, "/warm")).await.expect("send");
    assert_eq!(text(response).await, "/warm");
    assert_times_out(&pool, addr).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the pooled connection was used"
    );
}

fn get(addr: SocketAddr, path: &str) -> Request<ProxyBody> {
    Request::builder()
        .uri(format!("http://{addr}{path}"))
        .body(body::empty())
        .expect("request")
}

async fn text(response: Response<UpstreamBody>) -> String {
    let bytes = response.into_body().collect().await.expect("body");
    String::from_utf8(bytes.to_bytes().to_vec()).expect("utf-8")
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let (addr, accepted) = server().await;
    let pool = pool(Duration::from_secs(60), 8);
    for i in 0..20 {
        let response = pool
            .send_within(get(addr, &format!("/{i}")))
            .await
            .expect("send");
        assert_eq!(text(response).await, format!("/{i}"));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(pool.idle_count(&addr.to_string()), 1);
}

#[tokio::test]
async fn concurrent_requests_open_connections_and_keep_at_most_the_cap() {
    let (addr, accepted) = server().await;
    let pool = pool(Duration::from_secs(60), 2);
    let mut held = Vec::new();
    for _ in 0..4 {
        // Response heads held, bodies unread: each needs its own connection.
        held.push(pool.send_within(get(addr, "/x")).await.expect("send"));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 4);
    for response in held {
        assert_eq!(text(response).await, "/x");
    }
    assert_eq!(pool.idle_count(&addr.to_string()), 2);
}

#[tokio::test]
async fn a_body_dropped_before_its_end_closes_its_connection() {
    let (addr, accepted) = server().await;
    let pool = pool(Duration::from_secs(60), 8);
    let response = pool.send_within(get(addr, "/big")).await.expect("send");
    drop(response);
    assert_eq!(pool.idle_count(&addr.to_string()), 0);
    // The next request gets a connection of its own, and its own answer.
    let response = pool.send_within(get(addr, "/after")).await.expect("send");
    assert_eq!(text(response).await, "/after");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn connection_close_from_the_upstream_is_not_reused() {
    let (addr, accepted) = server().await;
    let pool = pool(Duration::from_secs(60), 8);
    for _ in 0..3 {
        let response = pool.send_within(get(addr, "/close")).await.expect("send");
        assert_eq!(text(response).await, "/close");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_replaced_without_an_error() {
    // A server that answers one request per connection, then closes
    // without saying so: the pooled connection goes stale.
    let (addr, _) = raw_server(|mut stream| async move {
        answer_raw(
            &mut stream,
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        )
        .await;
    })
    .await;
    let pool = pool(Duration::from_secs(60), 8);
    // With a pause the close is seen before the next checkout; without
    // one the request may meet the closing connection and go again.
    for pause in [true, true, false, false, false, false] {
        let response = pool.send_within(get(addr, "/")).await.expect("send");
        assert_eq!(text(response).await, "ok");
        if pause {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_reused_connection_closed_unanswered_is_sent_again_only_when_safe() {
    // Answers the first request on each connection; reads the second and
    // closes unanswered, as an upstream reaping it at that moment would.
    let (addr, accepted) = raw_server(|mut stream| async move {
        use tokio::io::AsyncReadExt;
        answer_raw(
            &mut stream,
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        )
        .await;
        let _ = stream.read(&mut [0u8; 4096]).await;
    })
    .await;
    let pool = pool(Duration::from_secs(60), 8);
    let response = pool.send_within(get(addr, "/")).await.expect("first");
    assert_eq!(text(response).await, "ok");
    // Idempotent, no body: once more, on a new connection.
    let response = pool.send_within(get(addr, "/")).await.expect("replayed");
    assert_eq!(text(response).await, "ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // A body (or a POST) is never sent twice.
    let post = Request::post(format!("http://{addr}/"))
        .body(body::full("order=1"))
        .expect("request");
    let error = pool.send_within(post).await.expect_err("not replayed");
    assert!(
        matches!(&error, PoolError::Http(e) if e.is_incomplete_message()),
        "{error:?}"
    );
    let delete = Request::delete(format!("http://{addr}/"))
        .body(body::empty())
        .expect("request");
    let response = pool
        .send_within(delete)
        .await
        .expect("idempotent, replayed");
    assert_eq!(text(response).await, "ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn idle_connections_past_the_idle_timeout_are_closed() {
    let (addr, _) = server().await;
    let pool = pool(Duration::from_secs(1), 8);
    let response = pool.send_within(get(addr, "/")).await.expect("send");
    text(response).await;
    assert_eq!(pool.idle_count(&addr.to_string()), 1);
    // The sweeper runs once a second: gone within two.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(pool.idle_count(&addr.to_string()), 0);
}

#[tokio::test]
async fn a_bursts_surplus_connections_are_closed_half_at_a_time() {
    let (addr, _) = server().await;
    let pool = pool(Duration::from_secs(60), 64);
    // Sixteen at once: sixteen connections, all idle afterwards.
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let pool = pool.clone();
        burst.spawn(async move {
            let response = pool
                .send_within(get(addr, "/slow/100"))
                .await
                .expect("send");
            text(response).await
        });
    }
    while burst.join_next().await.is_some() {}
    assert_eq!(pool.idle_count(&addr.to_string()), 16);
    // Each sweep closes half of what the previous second left untouched;
    // one request a second keeps its own connection warm.
    let mut counts = Vec::new();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        text(pool.send_within(get(addr, "/")).await.expect("send")).await;
        counts.push(pool.idle_count(&addr.to_string()));
    }
    assert!(counts.windows(2).all(|w| w[1] <= w[0]), "{counts:?}");
    let last = counts[counts.len() - 1];
    assert!((1..=3).contains(&last), "{counts:?}");
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error_naming_the_address() {
    // Bound but not listening: refuses, and no other test can take the
    // port while it is held.
    let held = tokio::net::TcpSocket::new_v4().expect("socket");
    held.bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let addr = held.local_addr().expect("addr");
    let pool = pool(Duration::from_secs(60), 8);
    let error = pool.send_within(get(addr, "/")).await.expect_err("refused");
    assert!(error.is_connect());
    assert!(error.to_string().contains(&addr.to_string()), "{error}");
}

#[tokio::test]
async fn an_upstream_closing_new_connections_fails_fast_as_a_connect_error() {
    let (addr, accepted) = raw_server(|stream| async move { drop(stream) }).await;
    let pool = pool(Duration::from_secs(60), 8);
    let error = pool.send_within(get(addr, "/")).await.expect_err("closed");
    assert!(error.is_connect(), "{error}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one attempt, no storm");
}

/// A request body that never ends.
struct Endless;
impl Body for Endless {
    type Data = Bytes;
    type Error = crate::body::BoxError;
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Pending
    }
}

#[tokio::test]
async fn a_connection_still_sending_an_upload_is_not_reused() {
    // Answers at once without reading the upload, and keeps the
    // connection open, as servers refusing a body early do.
    let (addr, accepted) = raw_server(|mut stream| async move {
        let too_large = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 3\r\n\r\nbig";
        answer_raw(&mut stream, too_large).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    })
    .await;
    let pool = pool(Duration::from_secs(60), 8);
    let upload = Request::post(format!("http://{addr}/upload"))
        .body(crate::body::boxed(Endless))
        .expect("request");
    let response = pool.send_within(upload).await.expect("send");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(text(response).await, "big");
    assert_eq!(pool.idle_count(&addr.to_string()), 0);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_response_ending_in_trailers_gives_its_connection_back() {
    let (addr, accepted) = raw_server(|mut stream| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                return;
            }
            let answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-digest\r\n\r\n2\r\nok\r\n0\r\nx-digest: 1\r\n\r\n";
            if stream.write_all(answer).await.is_err() {
                return;
            }
        }
    })
    .await;
    let pool = pool(Duration::from_secs(60), 8);
    for _ in 0..3 {
        let mut request = get(addr, "/");
        request
            .headers_mut()
            .insert(header::TE, HeaderValue::from_static("trailers"));
        let mut body = pool.send_within(request).await.expect("send").into_body();
        // Read as hyper's server does: up to the trailers, then drop.
        loop {
            let frame = body.frame().await.expect("frame").expect("ok");
            if frame.is_trailers() {
                break;
            }
        }
        drop(body);
        assert_eq!(pool.idle_count(&addr.to_string()), 1);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_endpoint_named_by_host_name_is_resolved() {
    let (addr, _) = server().await;
    let pool = pool(Duration::from_secs(60), 8);
    let request = Request::builder()
        .uri(format!("http://localhost:{}/named", addr.port()))
        .body(body::empty())
        .expect("request");
    let response = pool.send_within(request).await.expect("send");
    assert_eq!(text(response).await, "/named");
}

/// A loopback h2c server counting the connections it accepts; `/close`
/// answers and then closes the connection (GOAWAY).
async fn h2c_server() -> (SocketAddr, Arc<AtomicUsize>) {
    raw_server(|stream| async move {
        let (closing, mut close) = tokio::sync::mpsc::channel::<()>(1);
        let service = service_fn(move |req: Request<Incoming>| {
            let closing = closing.clone();
            async move {
                if req.uri().path() == "/close" {
                    let _ = closing.try_send(());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, std::convert::Infallible>(Response::new(body::full(
                    req.uri().path().to_string(),
                )))
            }
        });
        let builder =
            hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        tokio::select! {
            _ = connection.as_mut() => {}
            _ = close.recv() => {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
        }
    })
    .await
}

#[tokio::test]
async fn http2_requests_share_one_connection_and_a_closed_one_is_replaced() {
    let (addr, accepted) = h2c_server().await;
    let pool = http2::Multiplexed::new(
        Duration::from_secs(60),
        TcpConnect {
            timeout: Duration::from_secs(1),
        },
    );
    let sends: Vec<_> = (0..10)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let response = pool
                    .send(get(addr, &format!("/{i}")), Duration::from_secs(10))
                    .await
                    .expect("send");
                text(response).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for send in sends {
        answers.push(send.await.expect("request task"));
    }
    assert_eq!(
        answers,
        (0..10).map(|i| format!("/{i}")).collect::<Vec<_>>()
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one shared connection");
    assert!(pool.is_connected(&addr.to_string()));

    let response = pool
        .send(get(addr, "/close"), Duration::from_secs(10))
        .await
        .expect("send");
    assert_eq!(text(response).await, "/close");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let response = pool
        .send(get(addr, "/after"), Duration::from_secs(10))
        .await
        .expect("a new connection");
    assert_eq!(text(response).await, "/after");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}
