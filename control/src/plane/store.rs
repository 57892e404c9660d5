//! The seam between the control plane and a store the routing state is
//! shared through. Without one (single process), a change is swapped in
//! locally, as always. With one (`[cluster]`, see `crate::cluster`), a
//! change is first committed to the store, guarded by the revision it was
//! computed from, and the store's revision becomes the table's.
//!
//! What is shared is each route's weights per version and each flag's
//! state (what the admin API and automated decisions change), with who made
//! the last change; route and flag definitions (endpoints, matching, keys)
//! come from each replica's file.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use switchyard_proxy::metrics::SeriesTally;
use switchyard_proxy::TableSpec;

use crate::history::{Change, Source};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Route → version → weight.
pub type SharedWeights = BTreeMap<String, BTreeMap<String, u32>>;

/// The shared routing state: the routes' weights, the flags' states and
/// the change that set them (so every replica's history names who made it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedState {
    pub routes: SharedWeights,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub flags: BTreeMap<String, SharedFlag>,
    pub source: Source,
    pub who: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the API and the guard change of a flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedFlag {
    pub enabled: bool,
    pub percent: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<(String, u32)>,
}

impl SharedState {
    /// The weights of every route of `spec`, the state of every flag.
    pub fn from_spec(spec: &TableSpec, source: Source, who: &str, reason: Option<&str>) -> Self {
        SharedState {
            routes: spec
                .routes
                .iter()
                .map(|r| (r.name.clone(), crate::history::weights(r)))
                .collect(),
            flags: spec
                .flags
                .iter()
                .map(|f| {
                    let shared = SharedFlag {
                        enabled: f.enabled,
                        percent: f.percent,
                        variants: f.variants.clone(),
                    };
                    (f.name.clone(), shared)
                })
                .collect(),
            source,
            who: who.to_owned(),
            reason: reason.map(str::to_owned),
        }
    }

    /// `spec` with the shared weights laid over it: routes and versions the
    /// state does not name keep the file's weights.
    pub fn overlay(&self, spec: &TableSpec) -> TableSpec {
        let mut spec = spec.clone();
        for route in &mut spec.routes {
            if let Some(weights) = self.routes.get(&route.name) {
                for version in &mut route.versions {
                    if let Some(weight) = weights.get(&version.name) {
                        version.weight = *weight;
                    }
                }
            }
        }
        for flag in &mut spec.flags {
            if let Some(shared) = self.flags.get(&flag.name) {
                flag.enabled = shared.enabled;
                flag.percent = shared.percent;
                // Variants the file renamed keep the file's weights.
                for (name, weight) in &mut flag.variants {
                    if let Some((_, w)) = shared.variants.iter().find(|(n, _)| n == name) {
                        *weight = *w;
                    }
                }
            }
        }
        spec
    }
}

/// Why the store refused or failed a change; nothing changed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the fleet's table is at revision {current}, not {expected}: another change came first; read the routes again and retry")]
    Conflict { expected: u64, current: u64 },
    #[error("etcd ({endpoints}) did not answer whether the change was applied ({reason}): it may or may not be; read the routes (their revision and weights) before retrying")]
    Unknown { endpoints: String, reason: String },
    #[error("this replica no longer leads the fleet: its decision was not written")]
    NotLeader,
    #[error("the fleet's key {key} cannot be read ({reason}): a replica of another version may be publishing; the rollout waits rather than judge on part of the fleet")]
    Unreadable { key: String, reason: String },
    #[error("etcd ({endpoints}) is unavailable: {reason}; nothing changed and requests keep flowing on the last table; retry when etcd answers (if this persists, check [cluster] etcd, username/SWITCHYARD_ETCD_PASSWORD and [cluster.tls])")]
    Unavailable { endpoints: String, reason: String },
}

/// The connection to the shared store, as `GET /api/v1/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StoreStatus {
    /// `connected` or `disconnected`.
    pub state: &'static str,
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub name: String,
    /// The replica running the rollout judge, as last seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// The last error talking to the store, while disconnected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One replica's published measurements ([`SharedStore::published`]).
#[derive(Debug, Clone)]
pub struct ReplicaTallies {
    pub replica: String,
    pub series: Vec<SeriesTally>,
}

/// A rollout's shared record and the store revision it was written at
/// (the guard of the next write).
#[derive(Debug, Clone)]
pub struct RolloutRecord {
    pub revision: u64,
    pub value: serde_json::Value,
}

/// A store the routing state is shared through.
pub trait SharedStore: Send + Sync {
    /// Writes `state`, and `changes` to the shared history, if the shared
    /// revision is still `guard`; returns the new revision.
    fn commit(
        &self,
        guard: u64,
        state: SharedState,
        changes: Vec<Change>,
    ) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// The fleet's history, oldest first, each change at its revision.
    fn history(&self) -> BoxFuture<'_, Result<Vec<Change>, StoreError>>;

    /// Replicas of the fleet, as JSON objects.
    fn members(&self) -> BoxFuture<'_, Result<Vec<serde_json::Value>, StoreError>>;

    fn status(&self) -> StoreStatus;

    /// This replica leads the fleet: it runs the rollout judge. False while
    /// the store is unreachable (a judge never decides without the fleet).
    fn is_leader(&self) -> bool;

    /// Every live replica's latest published measurements.
    fn published(&self) -> BoxFuture<'_, Result<Vec<ReplicaTallies>, StoreError>>;

    /// Every route's rollout record.
    fn rollouts(&self) -> BoxFuture<'_, Result<BTreeMap<String, RolloutRecord>, StoreError>>;

    /// Writes `route`'s rollout record if it is still at `guard` (0: none
    /// yet); returns the new revision. Only the leader's writes pass
    /// `leader_only`, so a deposed leader cannot overwrite its successor.
    fn put_rollout(
        &self,
        route: &str,
        value: serde_json::Value,
        guard: u64,
        leader_only: bool,
    ) -> BoxFuture<'_, Result<u64, StoreError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_sets_named_weights_and_keeps_the_rest() {
        let spec = TableSpec {
            routes: vec![switchyard_proxy::RouteSpec {
                name: "web".into(),
                versions: vec![
                    switchyard_proxy::VersionSpec {
                        name: "stable".into(),
                        weight: 90,
                        ..Default::default()
                    },
                    switchyard_proxy::VersionSpec {
                        name: "canary".into(),
                        weight: 10,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            settings: Default::default(),
            flags: Vec::new(),
        };
        let mut state = SharedState::from_spec(&spec, Source::Api, "t", None);
        state.routes.insert("gone".into(), BTreeMap::new());
        state
            .routes
            .get_mut("web")
            .map(|w| w.insert("canary".into(), 50));
        state.routes.get_mut("web").map(|w| w.remove("stable"));
        let laid = state.overlay(&spec);
        assert_eq!(laid.routes[0].versions[0].weight, 90);
        assert_eq!(laid.routes[0].versions[1].weight, 50);
        let json = serde_json::to_string(&state).expect("json");
        let back: SharedState = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, state);
    }
}
