//! The control plane's shared store on etcd: a change is one `Txn` that
//! writes the table key only if its `mod_revision` is still the revision the
//! change was computed from; the new mod revision is the fleet's revision.
//! The same `Txn` adds the change to the shared history (`{prefix}/history/`,
//! one key per change, its create revision the change's revision), which is
//! trimmed to the last [`HISTORY_LIMIT`] entries after each change.
//! Rollout records are guarded the same way, per route, and the judge's
//! writes also by its leadership.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use etcd_client::{Client, Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp};
use serde_json::Value;

use super::connect::Options;
use super::keys::Keys;
use crate::history::{Change, HISTORY_LIMIT};
use crate::plane::store::BoxFuture;
use crate::plane::{
    ReplicaTallies, RolloutRecord, SharedState, SharedStore, StoreError, StoreStatus,
};

/// The etcd connection shared by the follower, the membership task and the
/// admin API's writes.
pub struct EtcdStore {
    options: Options,
    keys: Keys,
    name: String,
    link: Mutex<Link>,
    /// `switchyard_cluster_connected`: 1 while this replica follows the
    /// fleet, 0 while it serves its last table without etcd.
    gauge: Option<prometheus::IntGauge>,
}

#[derive(Default)]
struct Link {
    /// `None` until the first connection succeeds.
    client: Option<Client>,
    connected: bool,
    error: Option<String>,
    /// Who leads the fleet, as of this replica's last heartbeat.
    leader: Option<String>,
}

impl EtcdStore {
    pub fn new(options: Options, keys: Keys, name: String) -> EtcdStore {
        EtcdStore {
            options,
            keys,
            name,
            link: Mutex::new(Link {
                error: Some("not connected yet".into()),
                ..Link::default()
            }),
            gauge: prometheus::IntGauge::new(
                "switchyard_cluster_connected",
                "1 while this replica reaches etcd and follows the fleet's table, 0 while it serves its last table without etcd.",
            )
            .ok(),
        }
    }

    /// The gauge, for the metrics registry.
    pub fn gauge(&self) -> Option<prometheus::IntGauge> {
        self.gauge.clone()
    }

    fn link(&self) -> MutexGuard<'_, Link> {
        self.link
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// A client to talk to etcd with: the one connected, or a new one.
    pub async fn client(&self) -> Result<Client, StoreError> {
        if let Some(client) = self.link().client.clone() {
            return Ok(client);
        }
        let client = self
            .options
            .connect()
            .await
            .map_err(|e| self.unavailable(&e))?;
        self.link().client = Some(client.clone());
        Ok(client)
    }

    /// Records that etcd answered.
    pub fn connected(&self) {
        let mut link = self.link();
        if !link.connected {
            tracing::info!(endpoints = %self.options.endpoint_list(), "connected to etcd");
        }
        link.connected = true;
        link.error = None;
        if let Some(gauge) = &self.gauge {
            gauge.set(1);
        }
    }

    /// Records that etcd did not answer; requests keep flowing meanwhile.
    pub fn disconnected(&self, error: &str) {
        let mut link = self.link();
        if link.connected {
            tracing::warn!(endpoints = %self.options.endpoint_list(), %error, "lost etcd; serving the last table");
        }
        link.connected = false;
        link.error = Some(error.to_owned());
        if let Some(gauge) = &self.gauge {
            gauge.set(0);
        }
        // Without etcd this replica cannot know it still leads.
        link.leader = None;
    }

    /// Who leads, as the last campaign found (`None`: unknown).
    pub fn set_leader(&self, leader: Option<String>) {
        self.link().leader = leader;
    }

    pub fn is_connected(&self) -> bool {
        self.link().connected
    }

    /// The error an operation reports while etcd is unreachable (and the
    /// state it leaves: disconnected).
    pub fn unavailable(&self, error: &dyn std::fmt::Display) -> StoreError {
        let reason = error.to_string();
        self.disconnected(&reason);
        StoreError::Unavailable {
            endpoints: self.options.endpoint_list(),
            reason,
        }
    }

    async fn commit_state(
        &self,
        guard: u64,
        state: SharedState,
        changes: Vec<Change>,
    ) -> Result<u64, StoreError> {
        let value = serde_json::to_vec(&state).map_err(|e| self.unavailable(&e))?;
        let entry = serde_json::to_vec(&changes).map_err(|e| self.unavailable(&e))?;
        let mut client = self.client().await?;
        let key = self.keys.table();
        let guard_revision = i64::try_from(guard).unwrap_or(i64::MAX);
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                guard_revision,
            )])
            .and_then([
                TxnOp::put(key.clone(), value.clone(), None),
                TxnOp::put(self.keys.history_entry(&self.name), entry, None),
            ])
            .or_else([TxnOp::get(key, None)]);
        let response = match client.txn(txn).await {
            Ok(response) => response,
            // The request may have reached etcd and been applied before the
            // answer was lost (a timeout): find out rather than report
            // "nothing changed".
            Err(error) => return self.settle(&mut client, guard, &value, &error).await,
        };
        self.connected();
        let revision = committed_revision(&response);
        if response.succeeded() {
            if let Err(error) = self.trim_history(&mut client).await {
                tracing::warn!(%error, "the fleet's history could not be trimmed; trying again after the next change");
            }
            return Ok(revision);
        }
        let current = guarded_key_revision(response);
        Err(StoreError::Conflict {
            expected: guard,
            current,
        })
    }

    /// After a commit whose answer was lost: the table now holding exactly
    /// `value` at a revision past `guard` means the commit was applied;
    /// still at `guard`, it was not; unreadable, nobody can tell yet.
    async fn settle(
        &self,
        client: &mut Client,
        guard: u64,
        value: &[u8],
        error: &etcd_client::Error,
    ) -> Result<u64, StoreError> {
        let read = client.get(self.keys.table(), None).await;
        let Ok(read) = read else {
            self.disconnected(&error.to_string());
            return Err(StoreError::Unknown {
                endpoints: self.options.endpoint_list(),
                reason: error.to_string(),
            });
        };
        self.connected();
        let current = read.kvs().first();
        let revision = current.map_or(0, |kv| u64::try_from(kv.mod_revision()).unwrap_or(0));
        if revision > guard && current.is_some_and(|kv| kv.value() == value) {
            tracing::info!(revision, "a commit whose answer was lost had been applied");
            return Ok(revision);
        }
        if revision == guard {
            return Err(self.unavailable(error));
        }
        Err(StoreError::Conflict {
            expected: guard,
            current: revision,
        })
    }

    /// Deletes the oldest entries beyond [`HISTORY_LIMIT`].
    async fn trim_history(&self, client: &mut Client) -> Result<(), etcd_client::Error> {
        let prefix = self.keys.history();
        let count = client
            .get(
                prefix.clone(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await?
            .count();
        let excess = count - i64::try_from(HISTORY_LIMIT).unwrap_or(i64::MAX);
        if excess <= 0 {
            return Ok(());
        }
        let oldest = client
            .get(
                prefix,
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_keys_only()
                        .with_sort(SortTarget::Create, SortOrder::Ascend)
                        .with_limit(excess),
                ),
            )
            .await?;
        for kv in oldest.kvs() {
            client.delete(kv.key().to_vec(), None).await?;
        }
        Ok(())
    }

    /// The last [`HISTORY_LIMIT`] changes, oldest first.
    async fn read_history(&self) -> Result<Vec<Change>, StoreError> {
        let mut client = self.client().await?;
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(i64::try_from(HISTORY_LIMIT).unwrap_or(i64::MAX));
        let response = client
            .get(self.keys.history(), Some(options))
            .await
            .map_err(|e| self.unavailable(&e))?;
        self.connected();
        let mut changes = Vec::new();
        for kv in response.kvs().iter().rev() {
            let revision = u64::try_from(kv.create_revision()).unwrap_or(0);
            // An entry this version cannot read is left out, not fatal.
            let entry: Vec<Change> = serde_json::from_slice(kv.value()).unwrap_or_default();
            changes.extend(
                entry
                    .into_iter()
                    .map(|change| Change { revision, ..change }),
            );
        }
        Ok(changes)
    }

    async fn list_members(&self) -> Result<Vec<Value>, StoreError> {
        let mut client = self.client().await?;
        let response = client
            .get(self.keys.members(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| self.unavailable(&e))?;
        self.connected();
        Ok(response
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect())
    }
}

impl EtcdStore {
    // The judge's reads do not mark the link connected: "connected" in the
    // status means this replica follows the fleet's table (the follower
    // says so once it has read and applied it).
    async fn read_published(&self) -> Result<Vec<ReplicaTallies>, StoreError> {
        let mut client = self.client().await?;
        let response = client
            .get(self.keys.stats(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| self.unavailable(&e))?;
        let mut replicas = Vec::new();
        for kv in response.kvs() {
            match super::publish::decode(kv.value()) {
                Ok(tallies) => replicas.push(tallies),
                // One replica's unreadable figures must not stop the judge
                // from seeing that the fleet's data is incomplete: say so.
                Err(error) => {
                    return Err(StoreError::Unreadable {
                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                        reason: error.to_string(),
                    })
                }
            }
        }
        Ok(replicas)
    }

    async fn read_rollouts(&self) -> Result<BTreeMap<String, RolloutRecord>, StoreError> {
        let mut client = self.client().await?;
        let prefix = self.keys.rollouts();
        let response = client
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| self.unavailable(&e))?;
        Ok(response
            .kvs()
            .iter()
            .filter_map(|kv| {
                let route = kv.key_str().ok()?.strip_prefix(&prefix)?.to_owned();
                let value = serde_json::from_slice(kv.value()).ok()?;
                let revision = u64::try_from(kv.mod_revision()).ok()?;
                Some((route, RolloutRecord { revision, value }))
            })
            .collect())
    }

    async fn write_rollout(
        &self,
        route: &str,
        value: Value,
        guard: u64,
        leader_only: bool,
    ) -> Result<u64, StoreError> {
        let bytes = serde_json::to_vec(&value).map_err(|e| self.unavailable(&e))?;
        let mut client = self.client().await?;
        let key = self.keys.rollout(route);
        let mut compares = vec![Compare::mod_revision(
            key.clone(),
            CompareOp::Equal,
            i64::try_from(guard).unwrap_or(i64::MAX),
        )];
        if leader_only {
            compares.push(Compare::value(
                self.keys.leader(),
                CompareOp::Equal,
                self.name.as_bytes(),
            ));
        }
        let txn = Txn::new()
            .when(compares)
            .and_then([TxnOp::put(key.clone(), bytes, None)])
            .or_else([TxnOp::get(key, None)]);
        let response = client.txn(txn).await.map_err(|e| self.unavailable(&e))?;
        self.connected();
        let revision = committed_revision(&response);
        if response.succeeded() {
            return Ok(revision);
        }
        let current = guarded_key_revision(response);
        if current == guard {
            self.set_leader(None);
            return Err(StoreError::NotLeader);
        }
        Err(StoreError::Conflict {
            expected: guard,
            current,
        })
    }
}

impl SharedStore for EtcdStore {
    fn commit(
        &self,
        guard: u64,
        state: SharedState,
        changes: Vec<Change>,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.commit_state(guard, state, changes))
    }

    fn history(&self) -> BoxFuture<'_, Result<Vec<Change>, StoreError>> {
        Box::pin(self.read_history())
    }

    fn members(&self) -> BoxFuture<'_, Result<Vec<Value>, StoreError>> {
        Box::pin(self.list_members())
    }

    fn is_leader(&self) -> bool {
        let link = self.link();
        link.connected && link.leader.as_deref() == Some(self.name.as_str())
    }

    fn published(&self) -> BoxFuture<'_, Result<Vec<ReplicaTallies>, StoreError>> {
        Box::pin(self.read_published())
    }

    fn rollouts(&self) -> BoxFuture<'_, Result<BTreeMap<String, RolloutRecord>, StoreError>> {
        Box::pin(self.read_rollouts())
    }

    fn put_rollout(
        &self,
        route: &str,
        value: Value,
        guard: u64,
        leader_only: bool,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        let route = route.to_owned();
        Box::pin(async move { self.write_rollout(&route, value, guard, leader_only).await })
    }

    fn status(&self) -> StoreStatus {
        let link = self.link();
        StoreStatus {
            state: if link.connected {
                "connected"
            } else {
                "disconnected"
            },
            endpoints: self.options.endpoints.clone(),
            prefix: self.keys.prefix().to_owned(),
            name: self.name.clone(),
            leader: link.leader.clone(),
            error: link.error.clone(),
        }
    }
}

/// The store's revision after a `Txn` (the new one when it succeeded).
fn committed_revision(response: &etcd_client::TxnResponse) -> u64 {
    response
        .header()
        .map_or(0, |h| u64::try_from(h.revision()).unwrap_or(0))
}

/// After a failed guarded `Txn` whose else-branch read the guarded key:
/// that key's mod revision now (0: absent).
fn guarded_key_revision(response: etcd_client::TxnResponse) -> u64 {
    response
        .op_responses()
        .into_iter()
        .find_map(|op| match op {
            etcd_client::TxnOpResponse::Get(get) => get
                .kvs()
                .first()
                .map(|kv| u64::try_from(kv.mod_revision()).unwrap_or(0)),
            _ => None,
        })
        .unwrap_or(0)
}

/// Shared by the tasks of one replica.
pub type Shared = Arc<EtcdStore>;
