//! WebSocket passthrough: the handshake reaches the chosen version, its 101
//! switches the client's connection too, messages echo both ways, an open
//! WebSocket survives a table swap that sends new connections elsewhere,
//! the upgraded-connection gauge follows opens and closes, and a tunnel
//! idle past `[timeouts] tunnel_idle` is closed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use switchyard_proxy::TableError;
use switchyard_tests::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A WebSocket echo server answering `NAME:text` to every text message.
struct EchoBackend {
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn echo_backend(name: &'static str) -> EchoBackend {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind echo backend");
    let addr = listener.local_addr().expect("echo address");
    let accept = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    let reply = match message {
                        Message::Text(text) => Message::text(format!("{name}:{}", text.as_str())),
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    if ws.send(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    EchoBackend { addr, accept }
}

type Ws = WebSocketStream<TcpStream>;

async fn connect(proxy: &TestProxy) -> Ws {
    let stream = TcpStream::connect(proxy.running.data_addr)
        .await
        .expect("connect");
    let url = format!("ws://{}/chat", proxy.running.data_addr);
    let (ws, response) = bounded(
        Duration::from_secs(10),
        "WebSocket handshake",
        tokio_tungstenite::client_async(url, stream),
    )
    .await
    .expect("handshake through the proxy");
    assert_eq!(response.status(), 101);
    ws
}

async fn echo(ws: &mut Ws, text: &str) -> String {
    ws.send(Message::text(text)).await.expect("send");
    let reply = bounded(Duration::from_secs(10), "echo", ws.next())
        .await
        .expect("a reply")
        .expect("a message");
    reply.to_text().expect("text").to_owned()
}

async fn wait_for_gauge(gauge: &AtomicI64, want: i64) {
    bounded(
        Duration::from_secs(10),
        "upgraded-connection gauge",
        async {
            while gauge.load(Ordering::Relaxed) != want {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        },
    )
    .await;
}

fn send_everything_to(proxy: &TestProxy, version: &str) {
    proxy
        .running
        .table
        .update(|current| {
            let mut spec = current.spec().clone();
            for v in &mut spec.routes[0].versions {
                v.weight = u32::from(v.name == version);
            }
            Ok::<_, TableError>(spec)
        })
        .expect("valid swap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_survives_a_table_swap() {
    let stable = echo_backend("stable").await;
    let canary = echo_backend("canary").await;
    let proxy = start_proxy(&config(
        &route("ws")
            .version("stable", 1, &[stable.addr.to_string()])
            .version("canary", 0, &[canary.addr.to_string()])
            .build(),
    ))
    .await;
    let gauge = Arc::clone(&proxy.running.upgraded_connections);
    assert_eq!(gauge.load(Ordering::Relaxed), 0);

    let mut first = connect(&proxy).await;
    assert_eq!(echo(&mut first, "one").await, "stable:one");
    wait_for_gauge(&gauge, 1).await;

    send_everything_to(&proxy, "canary");
    assert_eq!(proxy.running.table.load().revision(), 2);
    // The open tunnel is untouched; new connections follow the new table.
    assert_eq!(echo(&mut first, "two").await, "stable:two");
    let mut second = connect(&proxy).await;
    assert_eq!(echo(&mut second, "three").await, "canary:three");
    wait_for_gauge(&gauge, 2).await;
    let admin = switchyard_tests::admin::AdminClient::new(proxy.running.admin_addr, None);
    let metrics = admin
        .call(http::Method::GET, "/metrics", None, None)
        .await
        .text();
    assert!(
        metrics.contains("switchyard_connections_upgraded 2"),
        "{metrics}"
    );
    for i in 0..20 {
        assert_eq!(
            echo(&mut first, &format!("a{i}")).await,
            format!("stable:a{i}")
        );
        assert_eq!(
            echo(&mut second, &format!("b{i}")).await,
            format!("canary:b{i}")
        );
    }

    // A client closes the WebSocket, reads to the end, then the TCP
    // connection: the tunnel ends with it.
    first.close(None).await.expect("close");
    bounded(Duration::from_secs(10), "close handshake", async {
        while let Some(Ok(_)) = first.next().await {}
    })
    .await;
    drop(first);
    wait_for_gauge(&gauge, 1).await;
    drop(second);
    wait_for_gauge(&gauge, 0).await;

    // Plain requests on the same route are unaffected by upgrade handling.
    let plain = proxy.get("/").await;
    assert_ne!(plain.status, 101);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tunnel_is_closed_and_a_busy_one_is_not() {
    let stable = echo_backend("stable").await;
    let proxy = start_proxy(&format!(
        "[timeouts]\ntunnel_idle = \"400ms\"\n\n{}",
        config(
            &route("ws")
                .version("stable", 1, &[stable.addr.to_string()])
                .build()
        )
    ))
    .await;
    let gauge = Arc::clone(&proxy.running.upgraded_connections);
    let mut busy = connect(&proxy).await;
    let mut idle = connect(&proxy).await;
    assert_eq!(echo(&mut busy, "hello").await, "stable:hello");
    assert_eq!(echo(&mut idle, "hello").await, "stable:hello");
    wait_for_gauge(&gauge, 2).await;

    // Over three idle timeouts, one tunnel keeps talking, the other is quiet.
    for i in 0..12 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            echo(&mut busy, &format!("m{i}")).await,
            format!("stable:m{i}")
        );
    }
    wait_for_gauge(&gauge, 1).await;
    let closed = bounded(
        Duration::from_secs(10),
        "the idle tunnel's end",
        idle.next(),
    )
    .await;
    assert!(
        !matches!(closed, Some(Ok(Message::Text(_)))),
        "the idle tunnel should be closed: {closed:?}"
    );
    assert_eq!(echo(&mut busy, "still").await, "stable:still");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_tunnel_outlives_the_client_idle_timeout() {
    // client_idle times HTTP connections waiting for a request; a tunnel
    // has its own idle timeout (tunnel_idle, 1 h by default).
    let stable = echo_backend("stable").await;
    let proxy = start_proxy(&format!(
        "[timeouts]\nclient_idle = \"200ms\"\n\n{}",
        config(
            &route("ws")
                .version("stable", 1, &[stable.addr.to_string()])
                .build()
        )
    ))
    .await;
    let mut ws = connect(&proxy).await;
    assert_eq!(echo(&mut ws, "hello").await, "stable:hello");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(echo(&mut ws, "later").await, "stable:later");
    proxy.shutdown().await;
}
