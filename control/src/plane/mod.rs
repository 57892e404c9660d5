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
mod shared;
pub mod store;
pub mod traffic;

pub use flags::FlagEdit;
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

/// Why a reload failed; the table is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no config file: this process was started without one")]
    NoFile,
    #[error("{0}")]
    Invalid(String),
}

pub enum ReloadOutcome {
    /// The file's content is what is already applied.
    Unchanged,
    Applied {
        revision: u64,
        changes: usize,
        /// The routes the reload changed.
        routes: Vec<String>,
    },
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

    /// Re-reads the config file and applies it (see the module comment for
    /// how runtime overrides survive).
    pub fn reload(&self, source: Source) -> Result<ReloadOutcome, ReloadError> {
        let result = self.try_reload(source);
        self.notify(PlaneEvent::Reload { ok: result.is_ok() });
        if let Ok(ReloadOutcome::Applied { routes, .. }) = &result {
            let table = self.table.load();
            self.notify(PlaneEvent::TableChanged(&table));
            self.notify(PlaneEvent::RoutesChanged { routes, source });
        }
        result
    }

    fn try_reload(&self, source: Source) -> Result<ReloadOutcome, ReloadError> {
        let path = self.config_path.as_ref().ok_or(ReloadError::NoFile)?;
        let mut state = self.state();
        let read = std::fs::read_to_string(path);
        let parsed = match &read {
            // The files it names too: a broken CA or certificate file fails
            // the reload instead of breaking traffic after it.
            Ok(text) => {
                crate::gateway_api::parse_checked(text, path).map_err(|errors| errors.to_string())
            }
            Err(e) => Err(format!("{}: cannot read the file: {e}", path.display())),
        };
        let text = read.ok();
        let config = match parsed {
            Ok(config) => config,
            Err(error) => {
                // The watcher may see the same broken file several times.
                if !(source == Source::File && text.is_some() && text == state.failed_text) {
                    tracing::error!(%error, "config reload failed; keeping the current table");
                }
                state.failed_text = text;
                state.last_reload_error = Some(error.clone());
                state.last_reload = Some(history::now_rfc3339());
                return Err(ReloadError::Invalid(error));
            }
        };
        let text = crate::gateway_api::source_text(&config, text.unwrap_or_default());
        state.failed_text = None;
        if state.file_text.as_deref() == Some(text.as_str()) {
            state.last_reload_error = None;
            return Ok(ReloadOutcome::Unchanged);
        }
        let new_file_spec = config.table_spec();
        let mut before = None;
        let merged = match &state.shared {
            // In a fleet the weights are the fleet's, whatever the file says.
            Some((revision, shared)) => {
                before = Some(self.table.load().spec().clone());
                self.table
                    .store_at(shared.overlay(&new_file_spec), *revision)
            }
            None => self.table.update(|current| {
                before = Some(current.spec().clone());
                Ok::<_, TableError>(merge(
                    &state.file_spec,
                    &new_file_spec,
                    current.spec(),
                    &state.overrides,
                ))
            }),
        };
        let table = match merged {
            Ok(table) => table,
            Err(error) => {
                let error = format!("{}: {error}", path.display());
                tracing::error!(%error, "config reload failed; keeping the current table");
                state.last_reload_error = Some(error.clone());
                return Err(ReloadError::Invalid(error));
            }
        };
        // Overrides end where the file changed the route (or dropped it).
        let file_spec = std::mem::replace(&mut state.file_spec, new_file_spec);
        let still = |name: &String| match name.strip_prefix("flag:") {
            Some(flag) => {
                let old = file_spec.flags.iter().find(|f| f.name == flag);
                let new = state.file_spec.flags.iter().find(|f| f.name == flag);
                old.is_some() && old == new
            }
            None => {
                let old = file_spec.routes.iter().find(|r| &r.name == name);
                let new = state.file_spec.routes.iter().find(|r| &r.name == name);
                old.is_some() && old == new
            }
        };
        state.overrides = state
            .overrides
            .iter()
            .filter(|r| still(r))
            .cloned()
            .collect();
        let restart = restart_only_changes(&state.config, &config);
        for key in &restart {
            tracing::warn!(key = %key, "this setting changed in the file but needs a restart to take effect");
        }
        state.restart_required = restart;
        state.file_text = Some(text);
        state.config = config;
        state.last_reload = Some(history::now_rfc3339());
        state.last_reload_error = None;
        let who = match source {
            Source::Signal => "signal",
            Source::Api => "api",
            _ => "file",
        };
        let changes = before
            .map(|before| history::diff(&before, table.spec(), source, who, table.revision(), None))
            .unwrap_or_default();
        let count = changes.len();
        let routes = changes.iter().map(|c| c.route.clone()).collect();
        record(&mut state.history, changes);
        tracing::info!(
            revision = table.revision(),
            changes = count,
            "config reloaded"
        );
        Ok(ReloadOutcome::Applied {
            revision: table.revision(),
            changes: count,
            routes,
        })
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

/// The table a reload produces: the new file's routes, except that a route
/// overridden at run time whose file definition did not change keeps its
/// live weights.
fn merge(
    old_file: &TableSpec,
    new_file: &TableSpec,
    live: &TableSpec,
    overrides: &BTreeSet<String>,
) -> TableSpec {
    let mut merged = new_file.clone();
    for route in &mut merged.routes {
        let unchanged_in_file = old_file.routes.iter().any(|r| r == &*route);
        if !(overrides.contains(&route.name) && unchanged_in_file) {
            continue;
        }
        if let Some(live_route) = live.routes.iter().find(|r| r.name == route.name) {
            for version in &mut route.versions {
                if let Some(live_version) =
                    live_route.versions.iter().find(|v| v.name == version.name)
                {
                    version.weight = live_version.weight;
                }
            }
        }
    }
    for flag in &mut merged.flags {
        let unchanged_in_file = old_file.flags.iter().any(|f| f == &*flag);
        if !(overrides.contains(&flags::override_key(&flag.name)) && unchanged_in_file) {
            continue;
        }
        if let Some(live) = live.flags.iter().find(|f| f.name == flag.name) {
            flag.enabled = live.enabled;
            flag.percent = live.percent;
            flag.variants = live.variants.clone();
        }
    }
    merged
}

/// Keys that differ between two configs but only take effect on restart.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut keys = Vec::new();
    let mut check = |key: &str, differs: bool| {
        if differs {
            keys.push(key.to_owned());
        }
    };
    check(
        "listen.data",
        old.listen.data.get_ref() != new.listen.data.get_ref(),
    );
    check(
        "listen.admin",
        old.listen.admin.get_ref() != new.listen.admin.get_ref(),
    );
    // Certificate *contents* reload by themselves; their paths do not.
    check("listen.tls", old.listen.tls != new.listen.tls);
    check("metrics", old.metrics != new.metrics);
    check(
        "timeouts.connect",
        old.timeouts.connect != new.timeouts.connect,
    );
    check(
        "timeouts.client_idle",
        old.timeouts.client_idle != new.timeouts.client_idle,
    );
    check(
        "timeouts.upstream_idle",
        old.timeouts.upstream_idle != new.timeouts.upstream_idle,
    );
    check("timeouts.drain", old.timeouts.drain != new.timeouts.drain);
    check(
        "proxy.max_idle_per_endpoint",
        old.proxy.max_idle_per_endpoint != new.proxy.max_idle_per_endpoint,
    );
    check("admin", old.admin != new.admin);
    check("cluster", old.cluster != new.cluster);
    keys
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

    #[test]
    fn merge_keeps_flag_overrides_until_the_file_changes_the_flag() {
        let text = format!(
            "{CONFIG}\n[[flags]]\nname = \"f\"\npercent = 10\nkey = {{ header = \"x-user-id\" }}\n"
        );
        let old_file = Config::parse(&text, "t").expect("valid").table_spec();
        let mut live = old_file.clone();
        live.flags[0].percent = 25.0;
        let overrides: BTreeSet<String> = [flags::override_key("f")].into();
        let other_route = text.replace("weight = 1\n", "weight = 2\n");
        let new_file = Config::parse(&other_route, "t")
            .expect("valid")
            .table_spec();
        assert_eq!(
            merge(&old_file, &new_file, &live, &overrides).flags[0].percent,
            25.0
        );
        let flag_changed = text.replace("percent = 10", "percent = 5");
        let new_file = Config::parse(&flag_changed, "t")
            .expect("valid")
            .table_spec();
        assert_eq!(
            merge(&old_file, &new_file, &live, &overrides).flags[0].percent,
            5.0
        );
    }

    #[test]
    fn merge_keeps_overrides_until_the_file_changes_the_route() {
        let old_file = Config::parse(CONFIG, "t").expect("valid").table_spec();
        let mut live = old_file.clone();
        live.routes[0].versions[1].weight = 50;
        let overrides: BTreeSet<String> = ["web".to_owned()].into();
        // The file changes only the other route: the override survives.
        let new_text = CONFIG.replace("weight = 1\n", "weight = 2\n");
        let new_file = Config::parse(&new_text, "t").expect("valid").table_spec();
        let merged = merge(&old_file, &new_file, &live, &overrides);
        assert_eq!(merged.routes[0].versions[1].weight, 50);
        assert_eq!(merged.routes[1].versions[0].weight, 2);
        // The file changes the overridden route: the file wins.
        let new_text = CONFIG.replace("weight = 10", "weight = 5");
        let new_file = Config::parse(&new_text, "t").expect("valid").table_spec();
        let merged = merge(&old_file, &new_file, &live, &overrides);
        assert_eq!(merged.routes[0].versions[1].weight, 5);
    }
}
