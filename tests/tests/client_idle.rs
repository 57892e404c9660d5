//! `[timeouts] client_idle`: a downstream connection with no request in
//! flight that starts none for that long is closed — an unused keep-alive
//! connection, one that never sends a request, one trickling header bytes —
//! while a slow upstream answer or a response streaming with pauses is
//! never cut.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use switchyard_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CLIENT_IDLE: Duration = Duration::from_millis(300);

async fn proxy_in_front_of(stable: &Backend) -> TestProxy {
    start_proxy(&format!(
        "[timeouts]\nclient_idle = \"300ms\"\nupstream_response = \"10s\"\n\n{}",
        config(&route("web").backend("stable", 1, stable).build())
    ))
    .await
}

/// Reads until the proxy closes the connection; returns what came and when
/// the close was seen.
async fn read_until_closed(stream: &mut TcpStream) -> (String, Instant) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return (String::from_utf8_lossy(&seen).into_owned(), Instant::now()),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_keep_alive_connection_is_closed_after_client_idle() {
    let stable = backend("stable").start().await;
    let proxy = proxy_in_front_of(&stable).await;
    let mut stream = TcpStream::connect(proxy.running.data_addr)
        .await
        .expect("connect");
    // The proxy's timer starts as it writes the answer: after `sent`, and
    // before the test, on a busy machine maybe well before, sees it at
    // `answered`.
    let sent = Instant::now();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .expect("write");
    let mut answer = [0u8; 1024];
    let n = stream.read(&mut answer).await.expect("read");
    let answered = Instant::now();
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    let (rest, closed) = bounded(
        Duration::from_secs(10),
        "the idle close",
        read_until_closed(&mut stream),
    )
    .await;
    assert!(rest.is_empty() || rest.ends_with("stable"), "{rest:?}");
    // Not early: measured from before the request, which a late read of the
    // answer cannot shorten.
    let idle = closed - sent;
    assert!(
        idle >= CLIENT_IDLE - Duration::from_millis(50),
        "closed {idle:?} after the request was sent"
    );
    // Not late: measured from the answer as seen here. Late timers on a
    // busy machine only make it later.
    let idle = closed - answered;
    assert!(idle < CLIENT_IDLE * 10, "closed after {idle:?}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_completes_a_request_is_closed() {
    let stable = backend("stable").start().await;
    let proxy = proxy_in_front_of(&stable).await;
    for trickle in [false, true] {
        let stream = TcpStream::connect(proxy.running.data_addr)
            .await
            .expect("connect");
        let opened = Instant::now();
        let (mut reader, mut writer) = stream.into_split();
        // The slow client sends a header byte every 50 ms, never the end;
        // the silent one nothing.
        let slow = tokio::spawn(async move {
            let line = b"GET / HTTP/1.1\r\nHost: app\r\nX-Slow: ";
            for byte in line.iter().cycle().take(if trickle { 200 } else { 0 }) {
                if writer.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Keep the write side open.
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let closed = bounded(Duration::from_secs(10), "the close", async {
            let mut buf = [0u8; 1024];
            while matches!(reader.read(&mut buf).await, Ok(n) if n > 0) {}
            Instant::now()
        })
        .await;
        slow.abort();
        let open_for = closed - opened;
        assert!(
            open_for < CLIENT_IDLE * 10,
            "trickle {trickle}: open {open_for:?}"
        );
    }
    assert_eq!(stable.hits(), 0);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_answer_is_not_cut() {
    let slow = backend("stable").delay(CLIENT_IDLE * 3).start().await;
    let proxy = proxy_in_front_of(&slow).await;
    let reply = bounded(Duration::from_secs(10), "slow answer", proxy.get("/")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "stable");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_exchange_with_long_pauses_completes() {
    // The backend echoes the upload as it arrives: pauses longer than
    // client_idle, in both directions, with the response already started.
    let stable = backend("stable").start().await;
    let proxy = proxy_in_front_of(&stable).await;
    let (tx, body) = channel_body();
    let request = Request::post(proxy.url("/echo"))
        .body(body)
        .expect("request");
    let client = proxy.client.clone();
    let exchange = tokio::spawn(async move { send(&client, request).await });
    for chunk in ["first;", "second;", "third"] {
        tx.send(Bytes::from(chunk)).await.expect("chunk");
        tokio::time::sleep(CLIENT_IDLE * 2).await;
    }
    drop(tx);
    let reply = bounded(Duration::from_secs(10), "the echo", exchange)
        .await
        .expect("join")
        .expect("echo");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "first;second;third");
    proxy.shutdown().await;
}
