//! Failures a client can meet, with their plain-text bodies: 404 (no route,
//! naming host and path), 502 (connect refused, naming version and
//! endpoint), 504 (upstream slower than the route's timeout); and malformed
//! requests that must not disturb the proxy.

use std::time::Duration;

use http::{Request, StatusCode};
use switchyard_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn assert_plain_text(reply: &Reply) {
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_is_404_naming_host_and_path() {
    let stable = backend("stable").start().await;
    let proxy = start_proxy(&config(
        &route("app")
            .key("host", "app.example.com")
            .key("path_prefix", "/api")
            .backend("stable", 1, &stable)
            .build(),
    ))
    .await;

    let req = Request::get(proxy.url("/elsewhere/page"))
        .header("host", "other.example.org")
        .body(empty())
        .expect("request");
    let reply = send(&proxy.client, req).await.expect("GET");
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_plain_text(&reply);
    let body = reply.text();
    assert!(body.contains("other.example.org"), "{body}");
    assert!(body.contains("/elsewhere/page"), "{body}");

    // Right host, path outside the prefix: still no route.
    let req = Request::get(proxy.url("/other"))
        .header("host", "app.example.com")
        .body(empty())
        .expect("request");
    let reply = send(&proxy.client, req).await.expect("GET");
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(reply.text().contains("/other"), "{}", reply.text());
    assert_eq!(stable.hits(), 0);

    // And the route itself works, host matched without its port.
    let req = Request::get(proxy.url("/api/x"))
        .header("host", "APP.example.com:8080")
        .body(empty())
        .expect("request");
    let reply = send(&proxy.client, req).await.expect("GET");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(stable.hits(), 1);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refused_is_502_naming_version_and_endpoint() {
    let dead = refusing_port();
    let proxy = start_proxy(&config(
        &route("web")
            .version("canary", 1, &[dead.to_string()])
            .build(),
    ))
    .await;
    let reply = proxy.get("/").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_plain_text(&reply);
    let body = reply.text();
    assert!(body.contains("canary"), "{body}");
    assert!(body.contains(&dead.to_string()), "{body}");
    assert!(body.contains("connect"), "{body}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_slower_than_the_route_timeout_is_504() {
    // The backend would answer after 20 s; the route allows 300 ms.
    let slow = backend("stable")
        .delay(Duration::from_secs(20))
        .start()
        .await;
    let proxy = start_proxy(&config(
        &route("web")
            .key("timeout", "300ms")
            .backend("stable", 1, &slow)
            .build(),
    ))
    .await;
    let reply = bounded(
        Duration::from_secs(10),
        "504 well before the backend answers",
        proxy.get("/"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_plain_text(&reply);
    let body = reply.text();
    assert!(body.contains("stable"), "{body}");
    assert!(body.contains(&slow.endpoint()), "{body}");
    assert!(body.contains("timed out"), "{body}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_comes_from_the_timeouts_section_when_the_route_has_none() {
    let slow = backend("stable")
        .delay(Duration::from_secs(20))
        .start()
        .await;
    let proxy = start_proxy(&config(&format!(
        "[timeouts]\nupstream_response = \"300ms\"\n\n{}",
        route("web").backend("stable", 1, &slow).build()
    )))
    .await;
    let reply = bounded(Duration::from_secs(10), "504", proxy.get("/")).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    proxy.shutdown().await;
}

/// Sends raw bytes on a fresh connection and returns what came back.
async fn raw_exchange(proxy: &TestProxy, bytes: &[u8]) -> String {
    bounded(Duration::from_secs(10), "raw exchange", async {
        let mut stream = tokio::net::TcpStream::connect(proxy.running.data_addr)
            .await
            .expect("connect");
        stream.write_all(bytes).await.expect("write");
        let mut answer = Vec::new();
        // The proxy closes after an error response; read until it does.
        let _ = stream.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_an_error_and_the_proxy_keeps_serving() {
    let stable = backend("stable").start().await;
    let proxy = start_proxy(&config(&route("web").backend("stable", 1, &stable).build())).await;
    for garbage in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: nope\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nbad header line\r\n\r\n",
        b"GET /\xff\xfe HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let answer = raw_exchange(&proxy, garbage).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "{garbage:?} got {answer:?}"
        );
    }
    assert_eq!(stable.hits(), 0);
    let reply = proxy.get("/").await;
    assert_eq!(reply.status, StatusCode::OK);
    proxy.shutdown().await;
}
