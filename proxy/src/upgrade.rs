//! HTTP/1.1 Upgrade (WebSocket) passthrough. A request asking to upgrade
//! keeps its `Upgrade` header, with `Connection: upgrade`, on the way to the
//! chosen version ([`crate::forward::Hop::Upgrade`]); when that version
//! answers 101, hyper hands over both
//! connections and bytes are copied both ways until either side closes, or
//! nothing has moved either way for the tunnel idle timeout.
//!
//! A tunnel holds nothing of the routing table, so table swaps never touch
//! it; open tunnels are counted in a gauge. They are not part of the
//! listener's drain: shutdown waits for requests, not for tunnels.

use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A request that asked to switch protocols, with hyper's handle on the
/// client's connection.
pub struct UpgradeRequest {
    client: OnUpgrade,
    protocol: HeaderValue,
}

/// Takes the upgrade handle if `req` asks to upgrade: HTTP/1.1 with an
/// `Upgrade` header and `upgrade` among the `Connection` options.
pub fn requested<B>(req: &mut Request<B>) -> Option<UpgradeRequest> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let protocol = req.headers().get(header::UPGRADE)?.clone();
    if !connection_has_upgrade(req.headers()) {
        return None;
    }
    Some(UpgradeRequest {
        client: hyper::upgrade::on(req),
        protocol,
    })
}

fn connection_has_upgrade(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|value| {
        value
            .as_bytes()
            .split(|b| *b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    })
}

impl UpgradeRequest {
    /// If the upstream switched protocols, spawns the tunnel between the two
    /// connections and returns the protocol to announce downstream.
    pub fn tunnel<B>(
        self,
        response: &mut Response<B>,
        open: &Arc<AtomicI64>,
        idle_timeout: Duration,
    ) -> Option<HeaderValue> {
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return None;
        }
        let protocol = response
            .headers()
            .get(header::UPGRADE)
            .cloned()
            .unwrap_or(self.protocol);
        let upstream = hyper::upgrade::on(response);
        let client = self.client;
        let open = Arc::clone(open);
        tokio::spawn(async move {
            let (client, upstream) = match tokio::try_join!(client, upstream) {
                Ok(both) => both,
                Err(error) => {
                    tracing::debug!(%error, "upgrade did not complete");
                    return;
                }
            };
            let _counted = Counted::new(open);
            let activity = Activity::new();
            let mut client = Active::new(TokioIo::new(client), &activity);
            let mut upstream = Active::new(TokioIo::new(upstream), &activity);
            let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
            match activity.close_when_idle(copy, idle_timeout).await {
                Some(Ok((up, down))) => tracing::debug!(up, down, "upgraded connection closed"),
                Some(Err(error)) => tracing::debug!(%error, "upgraded connection ended"),
                None => tracing::debug!(?idle_timeout, "upgraded connection idle: closed"),
            }
        });
        Some(protocol)
    }
}

/// When a tunnel last moved bytes, shared by its two ends.
#[derive(Clone)]
struct Activity {
    since: Instant,
    /// Milliseconds after `since` of the last read on either end.
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            since: Instant::now(),
            last_ms: Arc::default(),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.since + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Runs `copy` to its end, or `None` once nothing moved for `idle`
    /// (dropping the copy closes both connections). One timer per tunnel,
    /// re-armed only when it fires.
    async fn close_when_idle<F: std::future::Future>(
        self,
        copy: F,
        idle: Duration,
    ) -> Option<F::Output> {
        tokio::pin!(copy);
        let mut deadline = self.last() + idle;
        loop {
            tokio::select! {
                done = &mut copy => return Some(done),
                () = tokio::time::sleep_until(deadline.into()) => {
                    let next = self.last() + idle;
                    if next <= Instant::now() {
                        return None;
                    }
                    deadline = next;
                }
            }
        }
    }
}

/// One end of a tunnel, noting each read in the tunnel's [`Activity`].
struct Active<T> {
    io: T,
    activity: Activity,
}

impl<T> Active<T> {
    fn new(io: T, activity: &Activity) -> Active<T> {
        Active {
            io,
            activity: activity.clone(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Active<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Active<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// One open tunnel in the gauge, for as long as it lives.
struct Counted(Arc<AtomicI64>);

impl Counted {
    fn new(gauge: Arc<AtomicI64>) -> Counted {
        gauge.fetch_add(1, Ordering::Relaxed);
        Counted(gauge)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, connection: &str, upgrade: Option<&str>) -> Request<()> {
        let mut builder = Request::get("/")
            .version(version)
            .header("connection", connection);
        if let Some(upgrade) = upgrade {
            builder = builder.header("upgrade", upgrade);
        }
        builder.body(()).expect("request")
    }

    #[test]
    fn detects_upgrade_requests() {
        let mut ws = request(Version::HTTP_11, "keep-alive, Upgrade", Some("websocket"));
        requested(&mut ws).expect("an upgrade");
        let client = crate::connection::ClientConnection::new(([127, 0, 0, 1], 9).into());
        let endpoint = http::uri::Authority::from_static("127.0.0.1:9001");
        let upstream = crate::forward::upstream_request(
            ws.map(|()| crate::body::empty()),
            &endpoint,
            &client,
            "http",
            crate::forward::Hop::Upgrade,
        )
        .expect("rewrite");
        assert_eq!(upstream.headers()["connection"], "upgrade");
        assert_eq!(upstream.headers()["upgrade"], "websocket");
        assert!(requested(&mut request(
            Version::HTTP_11,
            "keep-alive",
            Some("websocket")
        ))
        .is_none());
        assert!(requested(&mut request(Version::HTTP_11, "upgrade", None)).is_none());
        assert!(requested(&mut request(Version::HTTP_10, "upgrade", Some("websocket"))).is_none());
    }

    #[test]
    fn gauge_counts_while_alive() {
        let gauge = Arc::new(AtomicI64::new(0));
        let counted = Counted::new(Arc::clone(&gauge));
        assert_eq!(gauge.load(Ordering::Relaxed), 1);
        drop(counted);
        assert_eq!(gauge.load(Ordering::Relaxed), 0);
    }
}
