//! Certificate reload: when a certificate or key file of the listener
//! changes on disk, and on every config reload (SIGHUP, the admin API), every
//! certificate is re-read and swapped in for new handshakes; established
//! connections keep theirs. Same directory watch as the config file
//! ([`crate::reload`]): cert-manager and Kubernetes Secrets replace files by
//! rename or by swapping a `..data` symlink.
//!
//! A half-written pair (new certificate, old key) fails the key check and
//! changes nothing; the write of the second file triggers another attempt.
//!
//! The CA files versions trust upstream (`ca_file`) are re-read on every
//! config reload too.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use notify::RecommendedWatcher;
use switchyard_proxy::tls::ServerTls;
use switchyard_proxy::{TableHandle, Upstream};
use tokio::sync::mpsc;

use crate::plane::{Observer, PlaneEvent};
use crate::reload::{concerns, watch_dirs, SETTLE};

/// Re-reads the certificates after every successful config reload: what
/// `nginx -s reload` users expect, and the way to rotate them when files
/// are not watched (`--no-watch`).
pub fn on_config_reload(tls: Arc<ServerTls>) -> Observer {
    Box::new(move |event| {
        if let PlaneEvent::Reload { ok: true } = event {
            reload(&tls);
        }
    })
}

/// Re-reads the upstream CA files of the live table's versions after every
/// successful config reload (the reload has already checked them).
pub fn upstream_trust_on_config_reload(upstream: Upstream, table: TableHandle) -> Observer {
    Box::new(move |event| {
        if let PlaneEvent::Reload { ok: true } = event {
            let table = table.load();
            let transports = table
                .routes()
                .iter()
                .flat_map(|route| route.versions.iter().map(|v| &v.transport));
            match upstream.reload_tls(transports) {
                Ok(0) => {}
                Ok(clients) => tracing::info!(clients, "upstream TLS trust re-read"),
                Err(error) => {
                    tracing::warn!(%error, "upstream TLS trust not re-read; keeping the previous")
                }
            }
        }
    })
}

fn reload(tls: &ServerTls) {
    match tls.reload() {
        Ok(true) => tracing::info!("TLS certificates reloaded"),
        Ok(false) => {}
        Err(error) => {
            tracing::warn!(%error, "TLS certificates not reloaded; serving the previous ones")
        }
    }
}

/// Watches the listener's certificate and key files and reloads `tls` when
/// one changes. Runs until the returned task is aborted.
pub fn watch_certificates(tls: Arc<ServerTls>) -> notify::Result<tokio::task::JoinHandle<()>> {
    let files: Vec<PathBuf> = tls
        .files()
        .iter()
        .flat_map(|f| [f.cert.clone(), f.key.clone()])
        .collect();
    let (tx, mut rx) = mpsc::channel::<()>(16);
    let relevant_files = files.clone();
    let mut watcher: RecommendedWatcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let relevant = matches!(&event, Ok(event)
            if !event.kind.is_access()
                && event.paths.iter().any(|changed| {
                    relevant_files.iter().any(|file| concerns(file, changed))
                }));
            if relevant {
                // A full channel already holds a wake-up.
                let _ = tx.try_send(());
            }
        })?;
    let mut watched = BTreeSet::new();
    for file in &files {
        watch_dirs(&mut watcher, &mut watched, file)?;
    }
    Ok(tokio::spawn(async move {
        while rx.recv().await.is_some() {
            tokio::time::sleep(SETTLE).await;
            while rx.try_recv().is_ok() {}
            reload(&tls);
            for file in &files {
                if let Err(error) = watch_dirs(&mut watcher, &mut watched, file) {
                    tracing::warn!(%error, "cannot watch a certificate's directory");
                }
            }
        }
    }))
}
