//! The whole request path in memory: a client connection served over a
//! duplex stream, upstreams answering from memory through the pool's
//! in-memory connector. Its own module because it spans the listener, the
//! handler, the table and the pool (a test inside `pool` importing the table
//! would make the module graph cycle).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::pool::memory::*;
use crate::table::tests::{route, version};
use crate::table::{Settings, TableHandle, TableSpec};
use crate::upstream::{Upstream, UpstreamSettings};
use crate::{serve_stream, ListenerSettings, Proxy};

/// Upstreams answering "ok" from memory and counting requests; `down`
/// refuses connections.
fn upstreams(requests: Arc<AtomicU64>) -> MemoryConnect {
    MemoryConnect::new(move |authority| {
        if authority.host() == "down" {
            return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "down"));
        }
        let (proxy_end, upstream_end) = tokio::io::duplex(4096);
        let requests = Arc::clone(&requests);
        let service = service_fn(move |_: Request<Incoming>| {
            requests.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, io::Error>(Response::new(Full::new(Bytes::from_static(b"ok")))) }
        });
        tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(upstream_end), service),
        );
        Ok(proxy_end)
    })
}

#[tokio::test]
async fn the_whole_request_path_runs_in_memory_and_a_retry_is_one_upstream_request() {
    let requests = Arc::new(AtomicU64::new(0));
    let table = TableHandle::new(TableSpec {
        routes: vec![route(
            "web",
            None,
            "/",
            vec![version("stable", 1, &["down:80", "up:80"])],
        )],
        settings: Settings::default(),
        flags: Vec::new(),
    })
    .expect("valid table");
    let upstream = Upstream::in_memory(
        &UpstreamSettings::default(),
        upstreams(Arc::clone(&requests)),
    );
    let proxy = Proxy::new(table, upstream, "http");
    let (mut client, server_end) = tokio::io::duplex(4096);
    let peer: SocketAddr = "192.0.2.1:1000".parse().expect("address");
    let served = tokio::spawn(async move {
        serve_stream(server_end, proxy, &ListenerSettings::default(), peer).await
    });
    // Round robin: one of the two requests meets `down` first and is
    // retried on `up`; the last one closes the connection.
    let ask =
        "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    client.write_all(ask.as_bytes()).await.expect("write");
    let mut answer = String::new();
    client.read_to_string(&mut answer).await.expect("read");
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
    assert_eq!(served.await.expect("served"), 2);
    assert_eq!(requests.load(Ordering::SeqCst), 2);
}
