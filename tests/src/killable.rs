//! A backend that can fail on demand, be slow, die (connections refused,
//! open ones closed) and come back on the same port: for health checks,
//! ejection and rollouts. While dead its port stays reserved
//! ([`crate::ReservedPort`]): no other test's bind to port 0 can take it
//! meanwhile, so it refuses connections and can be bound again.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::backend::BACKEND_HEADER;
use crate::backend::{reserve, ReservedPort};
use crate::body::{full, TestBody};

/// What the backend does to each request.
#[derive(Default)]
struct Behaviour {
    /// Answer 500 to every n-th request (0: never, 1: always).
    fail_every: AtomicUsize,
    /// Hold each answer this many milliseconds.
    delay_ms: AtomicU64,
    /// Hold only the next answer this many milliseconds (0: none pending).
    stall_next_ms: AtomicU64,
}

pub struct Killable {
    pub name: String,
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    behaviour: Arc<Behaviour>,
    tasks: Option<tokio::task::JoinHandle<()>>,
    /// The port, held while the backend is dead.
    reserved: Option<ReservedPort>,
}

impl Killable {
    pub async fn start(name: &str) -> Killable {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut backend = Killable {
            name: name.to_owned(),
            addr,
            hits: Arc::default(),
            behaviour: Arc::default(),
            tasks: None,
            reserved: None,
        };
        backend.serve(listener);
        backend
    }

    fn serve(&mut self, listener: TcpListener) {
        let name = self.name.clone();
        let hits = Arc::clone(&self.hits);
        let behaviour = Arc::clone(&self.behaviour);
        self.tasks = Some(tokio::spawn(async move {
            // Connections live in this set: aborting the accept task drops
            // the set, which aborts (closes) every open connection too.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let name = name.clone();
                let hits = Arc::clone(&hits);
                let behaviour = Arc::clone(&behaviour);
                connections.spawn(async move {
                    let service = service_fn(move |_req| {
                        let answer = respond(&name, &hits, &behaviour);
                        async move {
                            let (response, delay) = answer;
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        }));
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Answer 500 (or 200 again) from now on.
    pub fn set_failing(&self, failing: bool) {
        self.fail_every(usize::from(failing));
    }

    /// Answer 500 to every n-th request (0: never).
    pub fn fail_every(&self, n: usize) {
        self.behaviour.fail_every.store(n, Ordering::Relaxed);
    }

    /// Hold every answer this long.
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.behaviour.delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Hold only the next answer this long: exactly one request stalls,
    /// whatever else arrives while the caller looks.
    pub fn stall_next(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.behaviour.stall_next_ms.store(ms, Ordering::Relaxed);
    }

    /// Whether the stall asked for by `stall_next` has been taken.
    pub fn stall_taken(&self) -> bool {
        self.behaviour.stall_next_ms.load(Ordering::Relaxed) == 0
    }

    /// Stop listening and close every open connection; the port stays
    /// reserved for [`Killable::revive`].
    pub async fn kill(&mut self) {
        if let Some(task) = self.tasks.take() {
            task.abort();
            let _ = task.await;
            self.reserved = Some(reserve(self.addr).expect("reserve the killed backend's port"));
        }
    }

    /// Listen again on the same port.
    pub async fn revive(&mut self) {
        // Both sockets set SO_REUSEADDR and the reserving one does not
        // listen: the listener binds while the port is still held.
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("rebind the same port");
        self.reserved = None;
        self.serve(listener);
    }
}

/// The answer to one request and how long to hold it.
fn respond(
    name: &str,
    hits: &AtomicUsize,
    behaviour: &Behaviour,
) -> (Response<TestBody>, Duration) {
    let n = hits.fetch_add(1, Ordering::Relaxed) + 1;
    let every = behaviour.fail_every.load(Ordering::Relaxed);
    let mut response: Response<TestBody> = Response::new(full(name.to_owned()));
    if every > 0 && n.is_multiple_of(every) {
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    }
    response.headers_mut().insert(
        BACKEND_HEADER,
        http::HeaderValue::from_str(name).expect("header-safe name"),
    );
    let once = behaviour.stall_next_ms.swap(0, Ordering::Relaxed);
    let ms = behaviour.delay_ms.load(Ordering::Relaxed).max(once);
    (response, Duration::from_millis(ms))
}

impl Drop for Killable {
    fn drop(&mut self) {
        if let Some(task) = self.tasks.take() {
            task.abort();
        }
    }
}
