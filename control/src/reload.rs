//! Reloading the config file: on SIGHUP, and when the file changes on disk.
//!
//! The watch is on the file's *directory*, not the file: editors replace
//! files by rename, and Kubernetes ConfigMaps swap a `..data` directory
//! symlink atomically, so the file's inode never changes. Every event in the
//! directory re-reads the path (re-resolving symlinks); a content identical
//! to what is applied is ignored.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::history::Source;
use crate::plane::ControlPlane;

/// Events closer together than this are handled as one reload.
pub(crate) const SETTLE: Duration = Duration::from_millis(150);

/// Watches `path` and reloads `plane` when it changes. Runs until the
/// returned task is aborted.
pub fn watch_file(
    plane: Arc<ControlPlane>,
    path: PathBuf,
) -> notify::Result<tokio::task::JoinHandle<()>> {
    let (tx, mut rx) = mpsc::channel::<()>(16);
    let watched_path = path.clone();
    let mut watcher: RecommendedWatcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Reading the file ourselves raises access events, and the directory
            // may hold other files (logs): only changes to the config count.
            let relevant = matches!(&event, Ok(event)
            if !event.kind.is_access()
                && event.paths.iter().any(|changed| concerns(&watched_path, changed)));
            if relevant {
                // A full channel already holds a wake-up: dropping this one is fine.
                let _ = tx.try_send(());
            }
        })?;
    let mut watched = BTreeSet::new();
    watch_dirs(&mut watcher, &mut watched, &path)?;
    Ok(tokio::spawn(async move {
        while rx.recv().await.is_some() {
            tokio::time::sleep(SETTLE).await;
            while rx.try_recv().is_ok() {}
            let _ = plane.reload(Source::File);
            // The symlink may now point into another directory.
            if let Err(error) = watch_dirs(&mut watcher, &mut watched, &path) {
                tracing::warn!(%error, "cannot watch the config file's directory");
            }
        }
    }))
}

/// Whether a change to `changed` can change what `config` reads: the file
/// itself, what it resolves to, or a symlink on the way (Kubernetes swaps
/// `..data`, and stages `..data_tmp` and `..<timestamp>` directories).
pub(crate) fn concerns(config: &Path, changed: &Path) -> bool {
    if changed == config || config.starts_with(changed) {
        return true;
    }
    if let Ok(resolved) = std::fs::canonicalize(config) {
        if changed == resolved || resolved.starts_with(changed) {
            return true;
        }
    }
    let hidden_k8s = changed
        .file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with(".."));
    // The HTTPRoute files a TOML config names sit beside it; a reload that
    // finds them unchanged changes nothing.
    let yaml_beside = changed.parent() == config.parent() && crate::gateway_api::is_yaml(changed);
    hidden_k8s || yaml_beside || changed.file_name() == config.file_name()
}

/// Watches the directory of `path` and of what it resolves to.
pub(crate) fn watch_dirs(
    watcher: &mut RecommendedWatcher,
    watched: &mut BTreeSet<PathBuf>,
    path: &Path,
) -> notify::Result<()> {
    let mut dirs = vec![parent(path)];
    if let Ok(resolved) = std::fs::canonicalize(path) {
        dirs.push(parent(&resolved));
    }
    for dir in dirs {
        if watched.insert(dir.clone()) {
            watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        }
    }
    Ok(())
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Reloads on every SIGHUP.
#[cfg(unix)]
pub fn on_sighup(plane: Arc<ControlPlane>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config file");
            let _ = plane.reload(Source::Signal);
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_config_paths_concern_the_watch() {
        let config = Path::new("/etc/sy/config.toml");
        assert!(concerns(config, Path::new("/etc/sy/config.toml")));
        assert!(concerns(config, Path::new("/etc/sy/..data")));
        assert!(concerns(config, Path::new("/etc/sy/..data_tmp")));
        assert!(!concerns(config, Path::new("/etc/sy/switchyard.log")));
        assert!(!concerns(config, Path::new("/etc/sy/.config.toml.swp")));
        assert!(concerns(config, Path::new("/etc/sy/routes.yaml")));
        assert!(!concerns(config, Path::new("/etc/other/routes.yaml")));
    }
}
