//! `[limits]` and circuit breaking against the real proxy and real
//! backends: each limit's answer (status and a body naming its key), what
//! the upstream saw, the counters, and the proxy still serving after.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use switchyard_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that reads every request body to its end and counts the
/// requests whose body arrived complete and those whose body broke off.
struct BodyCounter {
    addr: std::net::SocketAddr,
    complete: Arc<AtomicUsize>,
    broken: Arc<AtomicUsize>,
}

async fn body_counter() -> BodyCounter {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (complete, broken) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c, b) = (Arc::clone(&complete), Arc::clone(&broken));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (c, b) = (Arc::clone(&c), Arc::clone(&b));
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let (c, b) = (Arc::clone(&c), Arc::clone(&b));
                    async move {
                        let counter = match req.into_body().collect().await {
                            Ok(_) => c,
                            Err(_) => b,
                        };
                        counter.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(Response::new(full("ok")))
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    BodyCounter {
        addr,
        complete,
        broken,
    }
}

/// Raw bytes on a fresh connection; what came back until the proxy closed.
async fn raw(proxy: &TestProxy, bytes: &[u8]) -> String {
    bounded(Duration::from_secs(10), "raw exchange", async {
        let mut stream = TcpStream::connect(proxy.running.data_addr)
            .await
            .expect("connect");
        stream.write_all(bytes).await.expect("write");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
}

fn metric(proxy: &TestProxy, line_start: &str) -> f64 {
    let text = proxy.running.metrics.encode().expect("metrics");
    text.lines()
        .find(|line| line.starts_with(line_start))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
}

fn head_with(headers: usize, value_len: usize) -> Vec<u8> {
    let mut head = String::from("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n");
    for i in 0..headers {
        head.push_str(&format!("x-h{i}: {}\r\n", "v".repeat(value_len)));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_size_and_count_are_431_naming_the_key_on_http1_and_h2() {
    let stable = backend("stable").start().await;
    let proxy = start_proxy(&config(&format!(
        "[limits]\nmax_request_header_bytes = 4096\nmax_request_headers = 20\n\n{}",
        route("web").backend("stable", 1, &stable).build()
    )))
    .await;
    // Within both limits: served.
    assert!(raw(&proxy, &head_with(10, 100))
        .await
        .starts_with("HTTP/1.1 200"));
    // One header of 5000 bytes: over the byte limit, under hyper's backstop.
    let answer = raw(&proxy, &head_with(1, 5000)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(answer.contains("max_request_header_bytes"), "{answer}");
    // 25 small headers: over the count.
    let answer = raw(&proxy, &head_with(25, 1)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(answer.contains("max_request_headers"), "{answer}");
    // Far beyond: hyper's own 431, still nothing forwarded.
    let answer = raw(&proxy, &head_with(1, 100_000)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(stable.hits(), 1);

    // h2c: the same limits, the same answers.
    let h2 = h2c_client();
    let big = Request::get(proxy.url("/"))
        .header("x-big", "v".repeat(5000))
        .body(empty())
        .expect("request");
    let reply = send(&h2, big).await.expect("h2 request");
    assert_eq!(reply.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(
        reply.text().contains("max_request_header_bytes"),
        "{}",
        reply.text()
    );
    let mut many = Request::get(proxy.url("/"));
    for i in 0..25 {
        many = many.header(format!("x-h{i}"), "v");
    }
    let reply = send(&h2, many.body(empty()).expect("request"))
        .await
        .expect("h2 request");
    assert_eq!(reply.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(
        reply.text().contains("max_request_headers"),
        "{}",
        reply.text()
    );
    assert_eq!(stable.hits(), 1);
    assert_eq!(
        metric(
            &proxy,
            "switchyard_requests_rejected_total{limit=\"max_request_headers\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &proxy,
            "switchyard_requests_rejected_total{limit=\"max_request_header_bytes\"}"
        ),
        2.0
    );
    let reply = send(
        &h2,
        Request::get(proxy.url("/")).body(empty()).expect("request"),
    )
    .await
    .expect("h2 request");
    assert_eq!(reply.status, StatusCode::OK);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_route_limit_are_413_and_the_upstream_never_sees_them_complete() {
    let upstream = body_counter().await;
    let proxy = start_proxy(&config(
        &route("web")
            .version("stable", 1, &[upstream.addr.to_string()])
            .build()
            .replace(
                "name = \"web\"\n",
                "name = \"web\"\nmax_request_body_bytes = 100\n",
            ),
    ))
    .await;
    // Declared too large: refused before the upstream is contacted.
    let answer = raw(
        &proxy,
        b"POST / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 101\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("max_request_body_bytes"), "{answer}");
    // Streamed: cut when it crosses the limit.
    let chunk = format!("3c\r\n{}\r\n", "x".repeat(60));
    let request = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}0\r\n\r\n"
    );
    let answer = raw(&proxy, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(upstream.complete.load(Ordering::SeqCst), 0);
    assert!(upstream.broken.load(Ordering::SeqCst) <= 1);
    // Within the limit: forwarded whole.
    let answer = raw(
        &proxy,
        b"POST / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 100\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(upstream.complete.load(Ordering::SeqCst), 1);
    assert_eq!(
        metric(
            &proxy,
            "switchyard_requests_rejected_total{limit=\"max_request_body_bytes\"}"
        ),
        2.0
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_client_body_is_400_and_not_the_versions_upstream_error() {
    let upstream = body_counter().await;
    let proxy = start_proxy(&config(
        &route("web")
            .version("stable", 1, &[upstream.addr.to_string()])
            .build(),
    ))
    .await;
    let answer = raw(
        &proxy,
        b"POST / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nxx\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(upstream.complete.load(Ordering::SeqCst), 0);
    let errors = proxy
        .running
        .metrics
        .encode()
        .expect("metrics")
        .lines()
        .filter(|l| l.starts_with("switchyard_upstream_errors_total{"))
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(-1.0)
        })
        .sum::<f64>();
    assert_eq!(errors, 0.0, "a client's broken body is no upstream error");
    assert_eq!(proxy.get("/").await.status, StatusCode::OK);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections_are_closed_and_counted() {
    let stable = backend("stable").start().await;
    let proxy = start_proxy(&config(&format!(
        "[limits]\nmax_connections = 2\n\n{}",
        route("web").backend("stable", 1, &stable).build()
    )))
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(
            TcpStream::connect(proxy.running.data_addr)
                .await
                .expect("connect"),
        );
    }
    bounded(Duration::from_secs(5), "two open", async {
        while proxy.running.active_connections.load(Ordering::Relaxed) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // Reset at once: the connect itself, the write or the read fails, or
    // the read sees the close; never an answer.
    if let Ok(mut third) = TcpStream::connect(proxy.running.data_addr).await {
        let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        let mut buf = Vec::new();
        let read = bounded(
            Duration::from_secs(5),
            "closed at once",
            third.read_to_end(&mut buf),
        )
        .await;
        assert!(
            read.is_err() || buf.is_empty(),
            "{:?}",
            String::from_utf8_lossy(&buf)
        );
    }
    assert_eq!(metric(&proxy, "switchyard_connections_rejected_total"), 1.0);
    // The held connections are untouched.
    let stream = &mut held[0];
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = bounded(
        Duration::from_secs(5),
        "held",
        stream.read_to_end(&mut answer),
    )
    .await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_at_max_requests_answers_503_naming_it_and_counts_it() {
    // Long enough for the second request to be answered while the first
    // still holds the version's one slot, on a busy machine too.
    let slow = backend("stable")
        .delay(Duration::from_millis(2_000))
        .start()
        .await;
    let text = route("web").backend("stable", 1, &slow).build().replace(
        "weight = 1\n",
        "weight = 1\n  max_requests = 1\n  max_pending = 1\n",
    );
    let proxy = start_proxy(&config(&text)).await;
    let first = tokio::spawn({
        let (client, url) = (proxy.client.clone(), proxy.url("/"));
        async move { get(&client, &url).await }
    });
    // The first holds the slot once it has reached the backend.
    eventually(
        Duration::from_secs(10),
        "the first request upstream",
        || async { (slow.hits() == 1).then_some(()) },
    )
    .await;
    let second = proxy.get("/").await;
    assert_eq!(second.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(second.text().contains("'stable'"), "{}", second.text());
    assert!(second.text().contains("max_requests"), "{}", second.text());
    assert_eq!(first.await.expect("first").status, StatusCode::OK);
    assert_eq!(slow.hits(), 1);
    assert_eq!(
        metric(
            &proxy,
            "switchyard_circuit_breaker_overflows_total{route=\"web\",version=\"stable\",limit=\"max_requests\"}"
        ),
        1.0
    );
    // The slot came back with the first response.
    assert_eq!(proxy.get("/").await.status, StatusCode::OK);
    proxy.shutdown().await;
}
