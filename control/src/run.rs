//! Starting and stopping a proxy process from a config: bind the data and
//! admin listeners, build the first table, spawn the serving tasks (and the
//! file watcher when there is a file), and drain on shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use switchyard_proxy::metrics::{Metrics, MetricsError};
use switchyard_proxy::{Proxy, TableError, TableHandle, Upstream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, Admin, AdminAuth, AuthError, Extension};
use crate::config::tls::TlsConfigError;
use crate::config::{Config, ConfigErrors};
use crate::plane::{ControlPlane, PlaneEvent};
use crate::rollout::Rollouts;

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
    #[error("[metrics]: {0}")]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("cannot watch the config file for changes: {0}")]
    Watch(#[from] notify::Error),
    #[error("TLS cannot be set up: {0}")]
    Tls(#[from] TlsConfigError),
    #[error("{0}")]
    Files(ConfigErrors),
    #[cfg(feature = "fleet")]
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ConnectError),
}

/// How to start beyond what the config says.
pub struct StartOptions {
    /// The file the config came from: enables reload (API, watcher).
    pub config_path: Option<PathBuf>,
    /// Its text, so a reload of identical content is a no-op.
    pub config_text: Option<String>,
    /// `SWITCHYARD_ADMIN_TOKEN`.
    pub admin_token: Option<String>,
    /// Watch the config file (and the listener's certificates) for changes;
    /// on unless turned off (`--no-watch`).
    pub watch: bool,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            config_path: None,
            config_text: None,
            admin_token: None,
            watch: true,
        }
    }
}

/// A running proxy: its bound addresses, its control plane and a way to stop.
pub struct Running {
    pub data_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub table: TableHandle,
    pub plane: Arc<ControlPlane>,
    pub active_connections: Arc<AtomicI64>,
    /// Open upgraded (WebSocket) connections.
    pub upgraded_connections: Arc<AtomicI64>,
    /// Per-version measurement, Prometheus registry, windowed stats.
    pub metrics: Metrics,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

/// Starts from an in-memory config (no file to reload).
pub async fn start(config: &Config) -> Result<Running, StartError> {
    start_with(config, StartOptions::default()).await
}

/// Binds the listeners and starts serving; returns once they are bound.
pub async fn start_with(config: &Config, options: StartOptions) -> Result<Running, StartError> {
    start_with_extensions(config, options, Vec::new()).await
}

/// [`start_with`], with more admin endpoints (the demo's backend controls).
pub async fn start_with_extensions(
    config: &Config,
    options: StartOptions,
    more: Vec<Extension>,
) -> Result<Running, StartError> {
    let table = TableHandle::new(config.table_spec())?;
    let base_dir = options
        .config_path
        .as_ref()
        .and_then(|p| p.parent())
        .map(PathBuf::from);
    let auth = AdminAuth::load(
        &config.admin,
        base_dir.as_deref(),
        config.admin_addr(),
        options.admin_token.clone(),
    )?;
    let unusable = config.check_files(options.config_text.as_deref(), base_dir.as_deref());
    if !unusable.is_empty() {
        return Err(StartError::Files(ConfigErrors {
            source_name: options
                .config_path
                .as_ref()
                .map_or_else(|| "config".into(), |p| p.display().to_string()),
            errors: unusable,
        }));
    }
    let server_tls = config.server_tls(base_dir.as_deref())?.map(Arc::new);
    let (data, data_addr) = bind(config.data_addr(), "data")?;
    let (admin_listener, admin_addr) = bind(config.admin_addr(), "admin")?;

    let plane = Arc::new(ControlPlane::new(
        table.clone(),
        config.clone(),
        options.config_path.clone(),
        options.config_text.clone(),
    ));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let metrics = Metrics::new(config.metrics_settings())?;
    metrics.watch_table(table.clone());
    let active_connections = metrics.connections_active();
    let mut upstream_settings = config.upstream_settings();
    upstream_settings.files_dir = base_dir.clone();
    let scheme = if server_tls.is_some() {
        "https"
    } else {
        "http"
    };
    let upstream = Upstream::new(&upstream_settings);
    let proxy = Proxy::new(table.clone(), upstream.clone(), scheme)
        .with_metrics(metrics.clone())
        .with_limits(config.limits.client());
    let upgraded_connections = Arc::clone(proxy.upgraded_connections());
    let upgraded = crate::stats::AtomicGauge::new(
        "switchyard_connections_upgraded",
        "Open upgraded (WebSocket) tunnels.",
        Arc::clone(&upgraded_connections),
    )
    .map_err(|e| e.to_string())
    .and_then(|gauge| {
        metrics
            .registry()
            .register(Box::new(gauge))
            .map_err(|e| e.to_string())
    });
    if let Err(error) = upgraded {
        tracing::warn!(%error, "upgraded-connections gauge not registered");
    }
    match crate::health::HealthCollector::new(Arc::clone(&plane)) {
        Ok(collector) => {
            if let Err(error) = metrics.registry().register(Box::new(collector)) {
                tracing::warn!(%error, "health metrics not registered");
            }
        }
        Err(error) => tracing::warn!(%error, "health metrics not created"),
    }
    let rollouts = Rollouts::new(
        Arc::clone(&plane),
        metrics.clone(),
        config.rollout_policies(),
    );
    {
        // A reload brings new rollout policies.
        let rollouts = Arc::downgrade(&rollouts);
        let plane_for_reload = Arc::downgrade(&plane);
        plane.observe(Box::new(move |event| {
            if let (PlaneEvent::Reload { ok: true }, Some(rollouts), Some(plane)) =
                (event, rollouts.upgrade(), plane_for_reload.upgrade())
            {
                rollouts.set_policies(plane.config().rollout_policies());
            }
        }));
    }
    let guards = crate::flags::guard::Guards::new(&plane, config.flag_guards());
    {
        // A reload brings new guard policies.
        let guards = Arc::downgrade(&guards);
        let plane_for_reload = Arc::downgrade(&plane);
        plane.observe(Box::new(move |event| {
            if let (PlaneEvent::Reload { ok: true }, Some(guards), Some(plane)) =
                (event, guards.upgrade(), plane_for_reload.upgrade())
            {
                guards.set_policies(plane.config().flag_guards());
            }
        }));
    }
    let mut extensions: Vec<Extension> = vec![
        crate::rollout::admin_extension(Arc::clone(&rollouts)),
        crate::flags::admin_extension(table.clone(), Arc::clone(&guards)),
        crate::shadows::admin_extension(table.clone()),
        gateway_api_export(
            table.clone(),
            config
                .gateway_api
                .clone()
                .unwrap_or_default()
                .service_address,
        ),
        crate::experiments::admin_extension(table.clone(), metrics.clone()),
        crate::stats::extension(metrics.clone(), Arc::clone(&plane)),
        crate::dashboard::extension(),
    ];
    extensions.extend(more);
    plane.observe(crate::stats::observer(metrics.clone()));
    let admin = Arc::new(Admin {
        plane: Arc::clone(&plane),
        auth,
        extensions,
    });

    let mut background = Vec::new();
    if let (true, Some(path)) = (options.watch, options.config_path.clone()) {
        background.push(crate::reload::watch_file(Arc::clone(&plane), path)?);
    }
    let probes = upstream.separate_pool();
    plane.observe(crate::tls_reload::upstream_trust_on_config_reload(
        upstream,
        table.clone(),
    ));
    if let Some(tls) = &server_tls {
        if options.watch {
            background.push(crate::tls_reload::watch_certificates(Arc::clone(tls))?);
        }
        plane.observe(crate::tls_reload::on_config_reload(Arc::clone(tls)));
    }
    let mut listener_settings = config.listener_settings();
    listener_settings.tls = server_tls;
    listener_settings.connections_rejected = metrics.connections_rejected();
    let tasks = vec![
        tokio::spawn(switchyard_proxy::serve(
            data,
            proxy,
            listener_settings,
            Arc::clone(&active_connections),
            stopped(shutdown_rx.clone()),
        )),
        tokio::spawn(admin::serve(admin_listener, admin, stopped(shutdown_rx))),
    ];
    #[cfg(feature = "fleet")]
    if let Some(cluster) = &config.cluster {
        background.extend(crate::cluster::join(
            &plane,
            cluster,
            base_dir.as_deref(),
            data_addr,
            admin_addr,
            metrics.clone(),
        )?);
    }
    background.push(crate::health::start(Arc::clone(&plane), probes));
    background.push(rollouts.start());
    background.push(guards.spawn());
    plane.set_ready(true);
    tracing::info!(%data_addr, %admin_addr, "listeners ready");
    Ok(Running {
        data_addr,
        admin_addr,
        table,
        plane,
        active_connections,
        upgraded_connections,
        metrics,
        shutdown,
        tasks,
        background,
    })
}

fn bind(
    addr: SocketAddr,
    which: &'static str,
) -> Result<(tokio::net::TcpListener, SocketAddr), StartError> {
    let error = |source| StartError::Bind {
        which,
        addr,
        source,
    };
    let listener = switchyard_proxy::bind(addr)
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(error)?;
    let bound = listener.local_addr().map_err(error)?;
    Ok((listener, bound))
}

/// Resolves when `true` is sent (or the sender is dropped).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

impl Running {
    /// Keeps a background task (signal handler, health checker) to stop with
    /// the process.
    pub fn keep(&mut self, task: JoinHandle<()>) {
        self.background.push(task);
    }

    /// Stops accepting, drains in-flight requests, and waits for the tasks.
    pub async fn shutdown(self) {
        self.plane.set_ready(false);
        for task in &self.background {
            task.abort();
        }
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// `GET /api/v1/export?format=gateway-api`: the live table as HTTPRoutes.
fn gateway_api_export(table: TableHandle, service_address: String) -> Extension {
    use crate::admin::api::{sync_extension, text_response, ApiError};
    sync_extension(move |method, path, query| {
        let answer =
            crate::gateway_api::export::answer(method, path, query, &table, &service_address)?;
        Some(match answer {
            Ok(yaml) => text_response(http::StatusCode::OK, "application/yaml", yaml),
            Err((status, error)) => ApiError::new(status, error).into_response(),
        })
    })
}
