//! Starting and stopping a proxy process from a config: bind the listeners,
//! build the first table, spawn the serving tasks, and drain on shutdown.

use std::net::SocketAddr;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use switchyard_proxy::{Proxy, TableError, TableHandle, Upstream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({which} listener, [listen] {which}): {source}: stop what uses it or choose another address")]
    Bind {
        which: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the routing table cannot be built: {0}")]
    Table(#[from] TableError),
}

/// A running proxy: its bound addresses, its table handle and a way to stop.
pub struct Running {
    pub data_addr: SocketAddr,
    pub table: TableHandle,
    pub active_connections: Arc<AtomicI64>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Binds the listeners and starts serving; returns once they are bound.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    let table = TableHandle::new(config.table_spec())?;
    let data_addr = config.data_addr();
    let data = bind(data_addr, "data")?;
    let data_addr = data.local_addr().map_err(|source| StartError::Bind {
        which: "data",
        addr: data_addr,
        source,
    })?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let active_connections = Arc::new(AtomicI64::new(0));
    let proxy = Proxy::new(
        table.clone(),
        Upstream::new(&config.upstream_settings()),
        "http",
    );
    let data_task = tokio::spawn(switchyard_proxy::serve(
        data,
        proxy,
        config.listener_settings(),
        Arc::clone(&active_connections),
        stopped(shutdown_rx),
    ));
    tracing::info!(%data_addr, "data listener ready");
    Ok(Running {
        data_addr,
        table,
        active_connections,
        shutdown,
        tasks: vec![data_task],
    })
}

fn bind(addr: SocketAddr, which: &'static str) -> Result<tokio::net::TcpListener, StartError> {
    switchyard_proxy::bind(addr)
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(|source| StartError::Bind {
            which,
            addr,
            source,
        })
}

/// Resolves when `true` is sent (or the sender is dropped).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

impl Running {
    /// Stops accepting, drains in-flight requests, and waits for the tasks.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
