//! Request smuggling and malformed framing over raw sockets, against the
//! real proxy and a real backend: for each attempt, what the client gets
//! and how many requests the upstream received. One smuggling attempt
//! never becomes two upstream requests.

use std::time::Duration;

use switchyard_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Raw bytes on a fresh connection; everything read until the proxy closes
/// (or 3 s of silence: a connection left open is no answer).
async fn raw(proxy: &TestProxy, bytes: &[u8]) -> Vec<u8> {
    bounded(Duration::from_secs(10), "raw exchange", async {
        let mut stream = TcpStream::connect(proxy.running.data_addr)
            .await
            .expect("connect");
        let _ = stream.write_all(bytes).await;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        answer
    })
    .await
}

/// The status of each response in `answer`, in order.
fn statuses(answer: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(answer);
    text.match_indices("HTTP/1.")
        .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse().ok())
        .collect()
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    /// The statuses the client gets, in order.
    statuses: &'static [u16],
    /// Requests the upstream receives.
    upstream: usize,
}

fn case(name: &'static str, bytes: &[u8], statuses: &'static [u16], upstream: usize) -> Case {
    Case {
        name,
        bytes: bytes.to_vec(),
        statuses,
        upstream,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_attempts_never_reach_the_upstream_twice() {
    let stable = backend("stable").start().await;
    let proxy = start_proxy(&config(&route("web").backend("stable", 1, &stable).build())).await;
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(200_000));
    let mut many_headers = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..500 {
        many_headers.push_str(&format!("x-h{i}: v\r\n"));
    }
    many_headers.push_str("\r\n");
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nx-big: {}\r\n\r\n",
        "v".repeat(300_000)
    );
    let smuggled = "GPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 15\r\n\r\nx=1";
    let te_cl = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\nConnection: close\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
        smuggled.len()
    );
    let cases = [
        case(
            "CL.TE: chunked wins, the trailing byte is no second request",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\nG",
            &[200],
            1,
        ),
        case(
            "TE.CL: the smuggled request inside the chunk stays body",
            te_cl.as_bytes(),
            &[200],
            1,
        ),
        case(
            "duplicate Content-Length",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
            &[400],
            0,
        ),
        case(
            "Transfer-Encoding: xchunked",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
            &[400],
            0,
        ),
        case(
            "Transfer-Encoding: chunked, identity",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
            &[400],
            0,
        ),
        case(
            "a space before the colon",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nabcde",
            &[400],
            0,
        ),
        case(
            "obs-fold",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
            &[400],
            0,
        ),
        case("NUL in a header", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n", &[400], 0),
        case("CR in a header", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", &[400], 0),
        case("a 200 KB URI", long_uri.as_bytes(), &[431], 0),
        case("a 300 KB header", big_header.as_bytes(), &[431], 0),
        case("500 headers", many_headers.as_bytes(), &[431], 0),
        case(
            "three pipelined requests",
            b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            &[200, 200, 200],
            3,
        ),
        case(
            "absolute-form URI",
            b"GET http://a/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            &[200],
            1,
        ),
        case("HTTP/1.0 without Host", b"GET / HTTP/1.0\r\n\r\n", &[200], 1),
        case(
            "TLS ClientHello bytes on the plain port",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03abcdefghijklmnopqrstuvwxyz012345",
            &[400],
            0,
        ),
    ];
    for case in cases {
        let before = stable.hits();
        let answer = raw(&proxy, &case.bytes).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            statuses(&answer),
            case.statuses,
            "{}: {:?}",
            case.name,
            String::from_utf8_lossy(&answer[..answer.len().min(300)])
        );
        assert_eq!(stable.hits() - before, case.upstream, "{}", case.name);
    }
    assert_eq!(proxy.get("/").await.status, http::StatusCode::OK);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_chunk_size_is_400_and_an_h2_preface_is_answered_in_h2() {
    let stable = backend("stable").start().await;
    let proxy = start_proxy(&config(&route("web").backend("stable", 1, &stable).build())).await;
    let answer = raw(
        &proxy,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nx\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(
        statuses(&answer),
        [400],
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        stable.hits() <= 1,
        "the head at most, never a second request"
    );
    // An h2 preface to an HTTP/1.1 upstream's route: the proxy speaks h2
    // (a SETTINGS frame, type 4), never HTTP/1.1, and forwards nothing.
    let hits = stable.hits();
    let answer = raw(&proxy, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    assert!(answer.len() >= 9 && answer[3] == 4, "{answer:?}");
    assert_eq!(stable.hits(), hits);
    assert_eq!(proxy.get("/").await.status, http::StatusCode::OK);
    proxy.shutdown().await;
}
