//! Following the fleet's table: seed it from this replica's table when the
//! prefix is empty, read it, then watch it and apply every change through
//! the control plane. On any error (etcd down, watch cancelled, compaction)
//! the replica keeps serving its last table and tries again; each attempt
//! starts with a read of the table key, so a change made while it was away
//! is applied at once. The state is one key, so that read *is* the resume
//! from the last revision seen, and it cannot fall into a compacted gap.

use std::sync::Weak;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, EventType, Txn, TxnOp, WatchOptions};

use super::store::Shared;
use crate::history::Source;
use crate::plane::{ControlPlane, SharedState};

/// Between attempts while etcd is unreachable.
const RETRY: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("the watch of the table was cancelled (compacted at {0}); reading the table again")]
    Cancelled(i64),
    #[error("the watch ended")]
    Ended,
    #[error("the control plane is gone")]
    Stopped,
}

/// Runs until the control plane is dropped.
pub async fn follow(plane: Weak<ControlPlane>, store: Shared) {
    loop {
        let error = match store.client().await {
            Ok(client) => match follow_once(&plane, &store, client).await {
                Err(FollowError::Stopped) => return,
                Err(error) => error.to_string(),
                Ok(()) => FollowError::Ended.to_string(),
            },
            Err(error) => error.to_string(),
        };
        store.disconnected(&error);
        tokio::time::sleep(RETRY).await;
    }
}

async fn follow_once(
    plane: &Weak<ControlPlane>,
    store: &Shared,
    mut client: Client,
) -> Result<(), FollowError> {
    let key = store.keys().table();
    let seed = {
        let plane = plane.upgrade().ok_or(FollowError::Stopped)?;
        let table = plane.table().load();
        SharedState::from_spec(table.spec(), Source::File, "seed", None)
    };
    let value = serde_json::to_vec(&seed).unwrap_or_default();
    // Only when the prefix has no table yet: afterwards etcd is the truth.
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key.clone(), value, None)]);
    client.txn(txn).await?;
    let read = client.get(key.clone(), None).await?;
    store.connected();
    let mut revision = read.header().map_or(0, |h| h.revision());
    if let Some(kv) = read.kvs().first() {
        apply(plane, kv.mod_revision(), kv.value())?;
    }
    let options = WatchOptions::new().with_start_revision(revision + 1);
    let mut stream = client.watch(key, Some(options)).await?;
    while let Some(response) = stream.message().await? {
        if response.canceled() || response.compact_revision() > 0 {
            return Err(FollowError::Cancelled(response.compact_revision()));
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            if event.event_type() == EventType::Delete {
                tracing::warn!(
                    "the fleet's table key was deleted; seeding it again from this replica's table"
                );
                return Err(FollowError::Ended);
            }
            revision = revision.max(kv.mod_revision());
            apply(plane, kv.mod_revision(), kv.value())?;
        }
    }
    tracing::debug!(revision, "the watch of the fleet's table ended");
    Ok(())
}

/// Applies one version of the table; a value this replica cannot use is
/// logged and skipped (the next good one applies).
fn apply(plane: &Weak<ControlPlane>, revision: i64, value: &[u8]) -> Result<(), FollowError> {
    let plane = plane.upgrade().ok_or(FollowError::Stopped)?;
    let Ok(revision) = u64::try_from(revision) else {
        return Ok(());
    };
    match serde_json::from_slice::<SharedState>(value) {
        Ok(state) => {
            if let Err(error) = plane.apply_shared(revision, state) {
                tracing::error!(revision, %error, "the fleet's table cannot be applied here; keeping the current one");
            }
        }
        Err(error) => {
            tracing::error!(revision, %error, "the fleet's table key holds something that is not a switchyard table; keeping the current one");
        }
    }
    Ok(())
}
