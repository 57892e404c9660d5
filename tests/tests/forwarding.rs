//! Forwarding: GET and POST through the proxy, 10 MiB bodies streamed each
//! way byte-identical, bodies streamed rather than collected, the version
//! header (and turning it off), and HTTP/2 prior knowledge downstream.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::BodyExt;
use switchyard_tests::*;

const TEN_MIB: u64 = 10 * 1024 * 1024;

async fn one_backend_proxy(extra: &str) -> (Backend, TestProxy) {
    let stable = backend("stable").start().await;
    let toml = config(&format!(
        "{extra}\n{}",
        route("web").backend("stable", 1, &stable).build()
    ));
    let proxy = start_proxy(&toml).await;
    (stable, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_reaches_the_backend_and_names_the_version() {
    let (stable, proxy) = one_backend_proxy("").await;
    let reply = proxy.get("/hello").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "stable");
    assert_eq!(reply.header(BACKEND_HEADER), Some("stable"));
    assert_eq!(reply.header("x-switchyard-version"), Some("stable"));
    assert_eq!(stable.hits(), 1);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_and_query_reach_the_backend_unchanged() {
    let (_stable, proxy) = one_backend_proxy("").await;
    let reply = proxy.get("/headers?a=1&b=two%20words").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["uri"], "/headers?a=1&b=two%20words");
    assert_eq!(reply.json()["method"], "GET");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_body_is_forwarded_and_echoed() {
    let (_stable, proxy) = one_backend_proxy("").await;
    let req = Request::post(proxy.url("/echo"))
        .header("content-type", "text/plain")
        .body(full("a small body"))
        .expect("request");
    let reply = send(&proxy.client, req).await.expect("POST");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "a small body");
    assert_eq!(reply.header("x-switchyard-version"), Some("stable"));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_upload_is_streamed_through_byte_identical() {
    let (_stable, proxy) = one_backend_proxy("").await;
    // The backend echoes the upload, so the proxy streams 10 MiB each way.
    let req = Request::post(proxy.url("/upload"))
        .body(Pattern::new(TEN_MIB).boxed())
        .expect("request");
    let (len, hash) = bounded(Duration::from_secs(60), "10 MiB echo", async {
        let response = proxy.client.request(req).await.expect("response headers");
        assert_eq!(response.status(), StatusCode::OK);
        hash_body(response.into_body()).await.expect("body")
    })
    .await;
    assert_eq!(len, TEN_MIB);
    assert_eq!(hash, Pattern::hash(TEN_MIB), "echoed bytes differ");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_download_is_streamed_through_byte_identical() {
    let (_stable, proxy) = one_backend_proxy("").await;
    let req = Request::get(proxy.url(&format!("/bytes/{TEN_MIB}")))
        .body(empty())
        .expect("request");
    let (len, hash) = bounded(Duration::from_secs(60), "10 MiB download", async {
        let response = proxy.client.request(req).await.expect("response headers");
        assert_eq!(response.status(), StatusCode::OK);
        hash_body(response.into_body()).await.expect("body")
    })
    .await;
    assert_eq!(len, TEN_MIB);
    assert_eq!(hash, Pattern::hash(TEN_MIB), "downloaded bytes differ");
    proxy.shutdown().await;
}

/// The client sends one chunk and waits for the echo of that chunk before it
/// sends the next. That can only finish if the proxy passes each chunk on as
/// it arrives, in both directions: a proxy that collected either body first
/// would wait forever (and the bounded wait fails the test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_chunk_by_chunk_in_both_directions() {
    let (_stable, proxy) = one_backend_proxy("").await;
    let (chunks, body) = channel_body();
    let req = Request::post(proxy.url("/ping-pong"))
        .body(body)
        .expect("request");
    bounded(Duration::from_secs(20), "chunk ping-pong", async {
        let response_future = proxy.client.request(req);
        chunks
            .send(Bytes::from_static(b"first"))
            .await
            .expect("send");
        let response = response_future.await.expect("response headers");
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        for next in ["second", "third"] {
            let frame = body.frame().await.expect("a frame").expect("no error");
            assert!(frame.is_data());
            chunks
                .send(Bytes::from(next.to_owned()))
                .await
                .expect("send");
        }
        drop(chunks);
        let mut echoed = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("no error").into_data() {
                echoed.extend_from_slice(&data);
            }
        }
        // "first" was consumed above, together with whatever arrived with it.
        let rest = String::from_utf8(echoed).expect("utf-8");
        assert!(rest.ends_with("third"), "echo ended with {rest:?}");
    })
    .await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_header_can_be_turned_off() {
    let (_stable, proxy) = one_backend_proxy("[proxy]\nversion_header = false\n").await;
    let reply = proxy.get("/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "stable");
    assert_eq!(reply.header("x-switchyard-version"), None);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_get_and_post_work() {
    let (stable, proxy) = one_backend_proxy("").await;
    let h2 = h2c_client();
    let reply = get(&h2, &proxy.url("/over-h2")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.version, Version::HTTP_2);
    assert_eq!(reply.text(), "stable");
    assert_eq!(reply.header("x-switchyard-version"), Some("stable"));

    let req = Request::post(proxy.url("/echo"))
        .body(Pattern::new(1024 * 1024).boxed())
        .expect("request");
    let reply = send(&h2, req).await.expect("h2c POST");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len(), 1024 * 1024);
    let mut hash = Fnv::default();
    hash.write(&reply.body);
    assert_eq!(hash.finish(), Pattern::hash(1024 * 1024));

    // The upstream side stays HTTP/1.1 with a Host built from :authority.
    let reply = get(&h2, &proxy.url("/headers")).await;
    let seen = reply.json();
    assert_eq!(
        seen["headers"]["host"][0].as_str(),
        Some(proxy.running.data_addr.to_string().as_str())
    );
    assert_eq!(stable.hits(), 3);
    proxy.shutdown().await;
}
