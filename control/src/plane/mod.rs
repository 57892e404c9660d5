//! The control plane's state and the only way the live table changes: every
//! change (admin API, file reload, signal, automated decision) goes through
//! [`ControlPlane`], which checks it, builds and swaps a whole new table,
//! records it in the history and tells observers (metrics, health).
//!
//! How API changes and the file interact: an API (or automated) change to a
//! route's weights is a *runtime override* of that route. A later file
//! reload keeps the override as long as the file's definition of that route
//! is unchanged since the previous load; once the file changes that route
//! (any key), the file wins and the override ends. Routes added to or removed
//! from the file are added or removed. `GET /api/v1/status` lists the routes
//! currently overridden.
//!
//! The traffic operations (set weights, promote, rollback, flip) are in
//! [`traffic`]: methods of [`ControlPlane`] the admin API and the rollout
//! controller share.
//!
//! In a fleet (`[cluster]`), a [`store`] holds the routes' weights: an
//! admin change is committed there first (guarded by the revision it was
//! computed from) and every replica applies what the store holds through
//! [`ControlPlane::apply_shared`], with the store's revision as the table's
//! (both in [`shared`]).
//! A file reload then changes only the route definitions (endpoints,
//! matching, settings): the weights stay the fleet's; `switchyard ctl apply
//! FILE` pushes a file's weights to the fleet as guarded changes.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Instant;

use switchyard_proxy::{RouteSpec, RoutingTable, TableError, TableHandle, TableSpec};

use crate::config::Config;
use crate::history::{self, Change, History, Source};

mod experiment;
mod flags;
mod reload;
mod shared;
pub mod store;
pub mod traffic;

pub use flags::FlagEdit;
pub use reload::{ReloadError, ReloadOutcome};
pub use store::{ReplicaTallies, RolloutRecord, SharedState, SharedStore, StoreError, StoreStatus};
pub use traffic::{Origin, TrafficOp};

/// Something the control plane tells observers about.
pub enum PlaneEvent<'a> {
    /// A new table is live.
    TableChanged(&'a Arc<RoutingTable>),
    /// A reload from the file was attempted.
    Reload { ok: bool },
    /// These routes' definitions or weights changed (after `TableChanged`).
    RoutesChanged {
        routes: &'a [String],
        source: Source,
    },
}

pub type Observer = Box<dyn Fn(&PlaneEvent<'_>) + Send + Sync>;

/// Why a change was refused; the table is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("route '{0}' does not exist")]
    UnknownRoute(String),
    #[error("flag '{0}' does not exist")]
    UnknownFlag(String),
    #[error("the table is at revision {current}, not {expected}: another change came first; read the routes again and retry")]
    RevisionMismatch { expected: u64, current: u64 },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Table(#[from] TableError),
    /// The fleet's store cannot be reached: nothing changed.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Experiment(#[from] crate::readout::ConcludeError),
}

struct State {
    history: History,
    /// The table spec from the last file load, to tell which routes the file
    /// changed since.
    file_spec: TableSpec,
    /// The file text last applied.
    file_text: Option<String>,
    /// The file text of the last failed reload, so it is reported once.
    failed_text: Option<String>,
    config: Config,
    overrides: BTreeSet<String>,
    last_reload: Option<String>,
    last_reload_error: Option<String>,
    restart_required: Vec<String>,
    /// The fleet's state last applied (cluster mode only).
    shared: Option<(u64, SharedState)>,
}

pub struct ControlPlane {
    table: TableHandle,
    config_path: Option<PathBuf>,
    started: Instant,
    state: Mutex<State>,
    observers: RwLock<Vec<Observer>>,
    ready: AtomicBool,
    /// Set in cluster mode: changes are committed there first.
    store: OnceLock<Arc<dyn SharedStore>>,
}

/// Read-only view for `GET /api/v1/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub version: &'static str,
    pub uptime_seconds: u64,
    pub revision: u64,
    pub config_path: Option<String>,
    pub last_reload: Option<String>,
    pub last_reload_error: Option<String>,
    pub overridden_routes: Vec<String>,
    pub restart_required: Vec<String>,
    pub ready: bool,
    /// The fleet connection; absent in single-process mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<StoreStatus>,
}

impl ControlPlane {
    pub fn new(
        table: TableHandle,
        config: Config,
        config_path: Option<PathBuf>,
        file_text: Option<String>,
    ) -> ControlPlane {
        let file_spec = config.table_spec();
        ControlPlane {
            table,
            config_path,
            started: Instant::now(),
            state: Mutex::new(State {
                history: History::default(),
                file_spec,
                file_text,
                failed_text: None,
                config,
                overrides: BTreeSet::new(),
                last_reload: None,
                last_reload_error: None,
                restart_required: Vec::new(),
                shared: None,
            }),
            observers: RwLock::new(Vec::new()),
            ready: AtomicBool::new(false),
            store: OnceLock::new(),
        }
    }

    pub fn table(&self) -> &TableHandle {
        &self.table
    }

    pub fn observe(&self, observer: Observer) {
        self.observers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(observer);
    }

    fn notify(&self, event: PlaneEvent<'_>) {
        for observer in self
            .observers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            observer(&event);
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Joins a fleet: from now on changes are committed to `store` first.
    pub fn set_store(&self, store: Arc<dyn SharedStore>) {
        if self.store.set(store).is_err() {
            tracing::warn!("the control plane already has a shared store; keeping the first");
        }
    }

    pub fn store(&self) -> Option<&Arc<dyn SharedStore>> {
        self.store.get()
    }

    /// The config currently applied (listener addresses as started).
    pub fn config(&self) -> Config {
        self.state().config.clone()
    }

    /// Edits one route. `expected` is the revision the caller read (for
    /// compare-and-set); `None` skips the check.
    pub fn change_route(
        &self,
        route: &str,
        expected: Option<u64>,
        source: Source,
        who: &str,
        reason: Option<&str>,
        edit: impl FnOnce(&mut RouteSpec) -> Result<(), ChangeError>,
    ) -> Result<Arc<RoutingTable>, ChangeError> {
        if self.store().is_some() {
            return Err(ChangeError::Conflict(
                "in a fleet a change is committed to the shared store first (ControlPlane::traffic / commit_route), never applied to one replica alone".into(),
            ));
        }
        let mut state = self.state();
        let mut before = None;
        let mut changed = false;
        let table = self.table.update(|current| {
            let spec = edited(current, route, expected, edit)?;
            before = Some(current.spec().clone());
            Ok::<_, ChangeError>(spec)
        })?;
        if let Some(before) = before {
            let changes =
                history::diff(&before, table.spec(), source, who, table.revision(), reason);
            if !changes.is_empty() {
                state.overrides.insert(route.to_owned());
            }
            changed = !changes.is_empty();
            record(&mut state.history, changes);
        }
        drop(state);
        self.notify(PlaneEvent::TableChanged(&table));
        if changed {
            self.notify(PlaneEvent::RoutesChanged {
                routes: &[route.to_owned()],
                source,
            });
        }
        Ok(table)
    }

    /// This replica's record of changes, oldest first.
    pub fn history(&self) -> Vec<Change> {
        self.state().history.all()
    }

    /// Records a change made outside [`Self::change_route`] (e.g. a health
    /// decision that rebuilt the table).
    pub fn record_changes(&self, changes: Vec<Change>) {
        record(&mut self.state().history, changes);
    }

    pub fn status(&self) -> Status {
        let state = self.state();
        Status {
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: self.started.elapsed().as_secs(),
            revision: self.table.load().revision(),
            config_path: self.config_path.as_ref().map(|p| p.display().to_string()),
            last_reload: state.last_reload.clone(),
            last_reload_error: state.last_reload_error.clone(),
            overridden_routes: state.overrides.iter().cloned().collect(),
            restart_required: state.restart_required.clone(),
            ready: self.is_ready(),
            cluster: self.store().map(|store| store.status()),
        }
    }

    pub fn config_path(&self) -> Option<&PathBuf> {
        self.config_path.as_ref()
    }
}

/// `current`'s spec with `edit` applied to `route`, if `current` is still
/// at the `expected` revision.
fn edited(
    current: &RoutingTable,
    route: &str,
    expected: Option<u64>,
    edit: impl FnOnce(&mut RouteSpec) -> Result<(), ChangeError>,
) -> Result<TableSpec, ChangeError> {
    at_revision(current, expected)?;
    let mut spec = current.spec().clone();
    let target = spec
        .routes
        .iter_mut()
        .find(|r| r.name == route)
        .ok_or_else(|| ChangeError::UnknownRoute(route.to_owned()))?;
    edit(target)?;
    Ok(spec)
}

/// Whether `current` is still at the revision the caller read (`None`:
/// no check).
fn at_revision(current: &RoutingTable, expected: Option<u64>) -> Result<(), ChangeError> {
    match expected {
        Some(expected) if expected != current.revision() => Err(ChangeError::RevisionMismatch {
            expected,
            current: current.revision(),
        }),
        _ => Ok(()),
    }
}

fn record(history: &mut History, changes: Vec<Change>) {
    for change in changes {
        history.push(change);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(super) const CONFIG: &str = r#"
[[routes]]
name = "web"
  [[routes.versions]]
  name = "stable"
  weight = 90
  endpoints = ["127.0.0.1:9001"]
  [[routes.versions]]
  name = "canary"
  weight = 10
  endpoints = ["127.0.0.1:9002"]
[[routes]]
name = "api"
path_prefix = "/api"
  [[routes.versions]]
  name = "stable"
  weight = 1
  endpoints = ["127.0.0.1:9001"]
"#;

    pub(super) fn plane(text: &str) -> ControlPlane {
        let config = Config::parse(text, "t").expect("valid");
        let table = TableHandle::new(config.table_spec()).expect("table");
        ControlPlane::new(table, config, None, Some(text.to_owned()))
    }

    #[test]
    fn compare_and_set_refuses_a_stale_revision() {
        let plane = plane(CONFIG);
        let set = |w: u32| {
            move |route: &mut RouteSpec| {
                route.versions[1].weight = w;
                Ok(())
            }
        };
        plane
            .change_route("web", Some(1), Source::Api, "t", None, set(20))
            .expect("first");
        let second = plane.change_route("web", Some(1), Source::Api, "t", None, set(30));
        assert!(matches!(
            second,
            Err(ChangeError::RevisionMismatch { current: 2, .. })
        ));
        assert_eq!(plane.table().load().spec().routes[0].versions[1].weight, 20);
        assert_eq!(plane.history().len(), 1);
        assert_eq!(plane.status().overridden_routes, vec!["web".to_owned()]);
    }

    #[test]
    fn invalid_edit_changes_nothing() {
        let plane = plane(CONFIG);
        let result = plane.change_route("web", None, Source::Api, "t", None, |route| {
            for v in &mut route.versions {
                v.weight = 0;
            }
            Ok(())
        });
        assert!(matches!(
            result,
            Err(ChangeError::Table(TableError::AllZero(_)))
        ));
        assert_eq!(plane.table().load().revision(), 1);
        assert!(plane.history().is_empty());
        let result = plane.change_route("nope", None, Source::Api, "t", None, |_| Ok(()));
        assert!(matches!(result, Err(ChangeError::UnknownRoute(_))));
    }
}
