//! `bare-hyper LISTEN UPSTREAM`: forwards every request to UPSTREAM over
//! pooled keep-alive connections and nothing else — the reference point
//! for what hyper itself costs per request.

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        return Err("usage: bare-hyper LISTEN_ADDR UPSTREAM_HOST:PORT".into());
    };
    let listen: std::net::SocketAddr = listen.parse()?;
    let upstream: &'static str = Box::leak(upstream.into_boxed_str());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client: Client<HttpConnector, Incoming> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let listener = tokio::net::TcpListener::bind(listen).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let client = client.clone();
            tokio::spawn(async move {
                let service = service_fn(move |mut req: Request<Incoming>| {
                    let client = client.clone();
                    async move {
                        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
                        let uri: Uri = format!("http://{upstream}{path}")
                            .parse()
                            .map_err(|e: hyper::http::uri::InvalidUri| e.to_string())?;
                        *req.uri_mut() = uri;
                        client.request(req).await.map_err(|e| e.to_string())
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
