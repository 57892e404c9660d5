//! A backend that can fail on demand, die (connections refused, open ones
//! closed) and come back on the same port: for health checks and ejection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use http::{Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::{full, TestBody, BACKEND_HEADER};

pub struct Killable {
    pub name: String,
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
    tasks: Option<tokio::task::JoinHandle<()>>,
}

impl Killable {
    pub async fn start(name: &str) -> Killable {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut backend = Killable {
            name: name.to_owned(),
            addr,
            hits: Arc::default(),
            failing: Arc::default(),
            tasks: None,
        };
        backend.serve(listener);
        backend
    }

    fn serve(&mut self, listener: TcpListener) {
        let (name, hits, failing) = (self.name.clone(), Arc::clone(&self.hits), Arc::clone(&self.failing));
        self.tasks = Some(tokio::spawn(async move {
            // Connections live in this set: aborting the accept task drops
            // the set, which aborts (closes) every open connection too.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (name, hits, failing) = (name.clone(), Arc::clone(&hits), Arc::clone(&failing));
                connections.spawn(async move {
                    let service = service_fn(move |_req| {
                        hits.fetch_add(1, Ordering::Relaxed);
                        let status = if failing.load(Ordering::Relaxed) {
                            StatusCode::INTERNAL_SERVER_ERROR
                        } else {
                            StatusCode::OK
                        };
                        let mut response: Response<TestBody> = Response::new(full(name.clone()));
                        *response.status_mut() = status;
                        response.headers_mut().insert(
                            BACKEND_HEADER,
                            http::HeaderValue::from_str(&name).expect("header-safe name"),
                        );
                        async move { Ok::<_, Infallible>(response) }
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
        self.failing.store(failing, Ordering::Relaxed);
    }

    /// Stop listening and close every open connection.
    pub async fn kill(&mut self) {
        if let Some(task) = self.tasks.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listen again on the same port.
    pub async fn revive(&mut self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind the same port");
        self.serve(listener);
    }
}

impl Drop for Killable {
    fn drop(&mut self) {
        if let Some(task) = self.tasks.take() {
            task.abort();
        }
    }
}
