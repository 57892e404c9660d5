//! The control plane in a fleet: changes committed to the shared store
//! first ([`ControlPlane::commit_route`]), the fleet's state applied as it
//! comes ([`ControlPlane::apply_shared`]), and the fleet's history.

use std::sync::Arc;
use std::time::Instant;

use switchyard_proxy::{RouteSpec, RoutingTable, TableError};

use super::{
    edited, record, ChangeError, ControlPlane, Origin, PlaneEvent, SharedState, StoreError,
};
use crate::history::{self, Change};

/// How often a change without `If-Match` is computed again after losing
/// to a change this replica had not applied yet, and how long it waits for
/// that change each time.
const FORCED_ATTEMPTS: u32 = 3;
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(1);

impl From<StoreError> for ChangeError {
    fn from(error: StoreError) -> ChangeError {
        match error {
            StoreError::Conflict { expected, current } => {
                ChangeError::RevisionMismatch { expected, current }
            }
            StoreError::Unavailable { .. }
            | StoreError::Unknown { .. }
            | StoreError::NotLeader
            | StoreError::Unreadable { .. } => ChangeError::Unavailable(error.to_string()),
        }
    }
}

impl ControlPlane {
    /// Commits an edit of one route to the fleet's store (guarded by the
    /// revision it was computed from, and by `expected` when given), then
    /// applies what was committed. Without a store: [`Self::change_route`].
    ///
    /// A change without `expected` (`?force=true`, promote without
    /// `If-Match`) that loses only because this replica had not yet applied
    /// the fleet's latest revision waits for it and is computed again.
    pub async fn commit_route(
        &self,
        route: &str,
        expected: Option<u64>,
        origin: Origin<'_>,
        edit: impl Fn(&mut RouteSpec) -> Result<(), ChangeError>,
    ) -> Result<Arc<RoutingTable>, ChangeError> {
        let Some(store) = self.store().cloned() else {
            return self.change_route(
                route,
                expected,
                origin.source,
                origin.who,
                origin.reason,
                edit,
            );
        };
        self.commit(store, expected, origin, |current| {
            edited(current, route, expected, &edit)
        })
        .await
    }

    /// Commits the spec `edit` makes of the live table to the fleet's
    /// store, guarded by the revision it was computed from, then applies
    /// what was committed (see [`Self::commit_route`]).
    pub(super) async fn commit(
        &self,
        store: Arc<dyn super::SharedStore>,
        expected: Option<u64>,
        origin: Origin<'_>,
        edit: impl Fn(&RoutingTable) -> Result<switchyard_proxy::TableSpec, ChangeError>,
    ) -> Result<Arc<RoutingTable>, ChangeError> {
        let mut attempts = 0;
        loop {
            let current = self.table.load();
            let spec = edit(&current)?;
            if let Some(problem) = RoutingTable::check(&spec).into_iter().next() {
                return Err(ChangeError::Table(problem.error));
            }
            let shared = SharedState::from_spec(&spec, origin.source, origin.who, origin.reason);
            // The revision is the commit's: the store fills it in.
            let changes = history::diff(
                current.spec(),
                &spec,
                origin.source,
                origin.who,
                0,
                origin.reason,
            );
            match store
                .commit(current.revision(), shared.clone(), changes)
                .await
            {
                Ok(revision) => {
                    self.apply_shared(revision, shared)?;
                    return Ok(self.table.load());
                }
                Err(StoreError::Conflict {
                    current: latest, ..
                }) if expected.is_none() && attempts < FORCED_ATTEMPTS => {
                    attempts += 1;
                    self.caught_up(latest).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Waits (briefly) until the fleet's revision `revision` is applied here.
    async fn caught_up(&self, revision: u64) {
        let deadline = Instant::now() + CATCH_UP;
        while self.table.load().revision() < revision && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Applies the fleet's state at `revision` (from the store's watch or a
    /// commit): the file's routes with the shared weights, stored as that
    /// revision. Older or already applied revisions change nothing.
    pub fn apply_shared(&self, revision: u64, shared: SharedState) -> Result<bool, TableError> {
        let mut state = self.state();
        if state
            .shared
            .as_ref()
            .is_some_and(|(applied, _)| *applied >= revision)
        {
            return Ok(false);
        }
        let before = self.table.load();
        let table = self
            .table
            .store_at(shared.overlay(&state.file_spec), revision)?;
        let changes = history::diff(
            before.spec(),
            table.spec(),
            shared.source,
            &shared.who,
            revision,
            shared.reason.as_deref(),
        );
        let routes: Vec<String> = changes.iter().map(|c| c.route.clone()).collect();
        let source = shared.source;
        state.shared = Some((revision, shared));
        record(&mut state.history, changes);
        drop(state);
        self.notify(PlaneEvent::TableChanged(&table));
        if !routes.is_empty() {
            self.notify(PlaneEvent::RoutesChanged {
                routes: &routes,
                source,
            });
        }
        Ok(true)
    }

    /// The fleet's state last applied and its revision (cluster mode).
    pub fn shared(&self) -> Option<(u64, SharedState)> {
        self.state().shared.clone()
    }

    /// The history `GET /api/v1/history` shows: in a fleet the fleet's
    /// (`"fleet"`), or this replica's record while etcd is unreachable
    /// (`"replica"`); otherwise this process's.
    pub async fn shown_history(&self) -> (Vec<Change>, &'static str) {
        match self.store().cloned() {
            Some(store) => match store.history().await {
                Ok(changes) => (changes, "fleet"),
                Err(_) => (self.history(), "replica"),
            },
            None => (self.history(), "process"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::history::Source;
    use crate::plane::tests::{plane, CONFIG};
    use crate::plane::ReloadOutcome;
    use switchyard_proxy::TableHandle;

    #[test]
    fn shared_state_applies_at_its_revision_once_and_in_order() {
        let plane = plane(CONFIG);
        let mut shared =
            SharedState::from_spec(plane.table().load().spec(), Source::Api, "deployer", None);
        if let Some(web) = shared.routes.get_mut("web") {
            web.insert("canary".into(), 60);
        }
        assert!(plane.apply_shared(42, shared.clone()).expect("applies"));
        let table = plane.table().load();
        assert_eq!(table.revision(), 42);
        assert_eq!(table.spec().routes[0].versions[1].weight, 60);
        let history = plane.history();
        assert_eq!(history.len(), 1);
        assert_eq!(
            (history[0].who.as_str(), history[0].revision),
            ("deployer", 42)
        );
        // A revision already applied, or older, changes nothing.
        if let Some(web) = shared.routes.get_mut("web") {
            web.insert("canary".into(), 5);
        }
        assert!(!plane.apply_shared(42, shared.clone()).expect("no-op"));
        assert!(!plane.apply_shared(7, shared).expect("no-op"));
        assert_eq!(plane.table().load().spec().routes[0].versions[1].weight, 60);
        assert_eq!(plane.shared().map(|(revision, _)| revision), Some(42));
    }

    #[test]
    fn in_a_fleet_a_reload_changes_definitions_and_keeps_the_fleets_weights() {
        let dir =
            std::env::temp_dir().join(format!("switchyard-plane-fleet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("switchyard.toml");
        std::fs::write(&path, CONFIG).expect("write");
        let config = Config::parse(CONFIG, "t").expect("valid");
        let table = TableHandle::new(config.table_spec()).expect("table");
        let plane = ControlPlane::new(table, config, Some(path.clone()), Some(CONFIG.to_owned()));
        let mut shared =
            SharedState::from_spec(plane.table().load().spec(), Source::Api, "t", None);
        if let Some(web) = shared.routes.get_mut("web") {
            web.insert("canary".into(), 60);
        }
        plane.apply_shared(9, shared).expect("applies");
        let edited = CONFIG
            .replace("weight = 10", "weight = 5")
            .replace("127.0.0.1:9002", "127.0.0.1:9012");
        std::fs::write(&path, edited).expect("write");
        assert!(matches!(
            plane.reload(Source::File),
            Ok(ReloadOutcome::Applied { .. })
        ));
        let table = plane.table().load();
        let canary = &table.spec().routes[0].versions[1];
        assert_eq!((table.revision(), canary.weight), (9, 60));
        assert_eq!(canary.endpoints[0].to_string(), "127.0.0.1:9012");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
