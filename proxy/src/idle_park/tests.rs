use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::*;

/// Long enough that a busy machine's late timers do not close the
/// connection before the test looks; the tick (a quarter) parks it.
const TIMEOUT: Duration = Duration::from_secs(3);

struct Served {
    watch: Arc<IdleWatch>,
    client: DuplexStream,
    drain: watch::Sender<()>,
    task: JoinHandle<Result<(), ServeError>>,
}

/// `serve` on one end of a duplex stream, answering each request with its
/// path (after 2 s for `/slow`).
fn start() -> Served {
    let (server, client) = tokio::io::duplex(64 * 1024);
    let watch = Arc::new(IdleWatch::default());
    let io = CoalescedWrites::new(IdleTimeout::new(server, Arc::clone(&watch), TIMEOUT));
    let (drain, mut draining) = watch::channel(());
    let requests = Arc::clone(&watch);
    let service = service_fn(move |req: Request<Incoming>| {
        let in_flight = requests.request_started(req.version());
        async move {
            if req.uri().path() == "/slow" {
                tokio::time::sleep(TIMEOUT * 2 / 3).await;
            }
            drop(in_flight);
            let path = Bytes::copy_from_slice(req.uri().path().as_bytes());
            Ok::<_, Infallible>(Response::new(Full::new(path)))
        }
    });
    let mut http1 = http1::Builder::new();
    http1.timer(TokioTimer::new());
    let builders = Builders {
        http1,
        http2: http2::Builder::new(TokioExecutor::new()),
    };
    let server_watch = Arc::clone(&watch);
    let task =
        tokio::spawn(
            async move { serve(&builders, io, service, &server_watch, &mut draining).await },
        );
    Served {
        watch,
        client,
        drain,
        task,
    }
}

/// One HTTP/1.1 response's body (content-length framed).
async fn read_response(client: &mut DuplexStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = client.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before a response: {data:?}");
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .and_then(|value| value.parse().ok())
                .expect("content-length");
            if body.len() >= length {
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                return body.to_string();
            }
        }
    }
}

async fn request(client: &mut DuplexStream, path: &str) -> String {
    let head = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
    client.write_all(head.as_bytes()).await.expect("write");
    read_response(client).await
}

/// Waits (bounded) until the connection has been parked `parks` times.
async fn parked(watch: &IdleWatch, parks: u64) {
    let waited = tokio::time::timeout(TIMEOUT * 2 / 3, async {
        while watch.parks() < parks {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "not parked: {} parks", watch.parks());
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_parked_and_served_again() {
    let mut served = start();
    assert_eq!(request(&mut served.client, "/one").await, "/one");
    parked(&served.watch, 1).await;
    assert_eq!(request(&mut served.client, "/two").await, "/two");
    parked(&served.watch, 2).await;
    assert_eq!(request(&mut served.client, "/three").await, "/three");
    assert!(!served.task.is_finished());
}

#[tokio::test]
async fn a_partial_request_read_before_parking_is_kept() {
    let mut served = start();
    assert_eq!(request(&mut served.client, "/one").await, "/one");
    served
        .client
        .write_all(b"GET /two HTTP/1.1\r\nho")
        .await
        .expect("write");
    parked(&served.watch, 1).await;
    served
        .client
        .write_all(b"st: x\r\n\r\n")
        .await
        .expect("write");
    assert_eq!(read_response(&mut served.client).await, "/two");
}

#[tokio::test]
async fn a_request_in_flight_is_never_parked() {
    let mut served = start();
    assert_eq!(request(&mut served.client, "/one").await, "/one");
    assert_eq!(request(&mut served.client, "/slow").await, "/slow");
    assert_eq!(served.watch.parks(), 0, "parked while a request was served");
}

#[tokio::test]
async fn a_drain_closes_a_parked_connection_at_once() {
    let mut served = start();
    assert_eq!(request(&mut served.client, "/one").await, "/one");
    parked(&served.watch, 1).await;
    served.drain.send(()).expect("the connection listens");
    let ended = tokio::time::timeout(Duration::from_secs(1), served.task)
        .await
        .expect("ended at once")
        .expect("join");
    assert!(ended.is_ok(), "{ended:?}");
    let mut buf = [0u8; 16];
    assert_eq!(served.client.read(&mut buf).await.expect("eof"), 0);
}

#[tokio::test]
async fn http2_prior_knowledge_is_served_by_hyper_s_http2() {
    let served = start();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(served.client))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::get("http://x/h2")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(req).await.expect("response");
    let body = response.into_body().collect().await.expect("body");
    assert_eq!(body.to_bytes(), "/h2");
}
