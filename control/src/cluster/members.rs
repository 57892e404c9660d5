//! Membership: each replica keeps `{prefix}/members/{name}` under a lease,
//! with its addresses, the revision it serves and its last heartbeat. A
//! replica that stops (or loses etcd) disappears when its lease expires.

use std::sync::Weak;
use std::time::Duration;

use etcd_client::{Client, PutOptions};
use serde::Serialize;

use super::store::Shared;
use crate::plane::ControlPlane;

/// This replica as the fleet lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub name: String,
    pub data: String,
    pub admin: String,
}

#[derive(Serialize)]
struct Record<'a> {
    #[serde(flatten)]
    member: &'a Member,
    /// The fleet revision this replica's table is at.
    revision: Option<u64>,
    heartbeat: String,
}

/// Runs until the control plane is dropped: heartbeats every third of the
/// lease, and at once when the applied revision changes.
pub async fn register(plane: Weak<ControlPlane>, store: Shared, member: Member, ttl: Duration) {
    let beat = (ttl / 3).max(Duration::from_millis(200));
    let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(5).max(2);
    let mut lease: Option<i64> = None;
    let mut published: Option<Option<u64>> = None;
    let mut last_beat = tokio::time::Instant::now();
    loop {
        let Some(plane) = plane.upgrade() else { return };
        let revision = plane.shared().map(|(revision, _)| revision);
        drop(plane);
        let due = last_beat.elapsed() >= beat || published != Some(revision);
        if due {
            match heartbeat(&store, &member, ttl_secs, &mut lease, revision).await {
                Ok(()) => published = Some(revision),
                Err(error) => {
                    lease = None;
                    published = None;
                    tracing::debug!(%error, "fleet heartbeat failed");
                }
            }
            last_beat = tokio::time::Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn heartbeat(
    store: &Shared,
    member: &Member,
    ttl_secs: i64,
    lease: &mut Option<i64>,
    revision: Option<u64>,
) -> Result<(), etcd_client::Error> {
    let mut client: Client = match store.client().await {
        Ok(client) => client,
        Err(error) => return Err(etcd_client::Error::InvalidArgs(error.to_string())),
    };
    let id = match *lease {
        Some(id) => {
            let (mut keeper, mut responses) = client.lease_keep_alive(id).await?;
            keeper.keep_alive().await?;
            let alive = responses.message().await?.is_some_and(|r| r.ttl() > 0);
            if !alive {
                return Err(etcd_client::Error::LeaseKeepAliveError(
                    "the lease expired".into(),
                ));
            }
            id
        }
        None => client.lease_grant(ttl_secs, None).await?.id(),
    };
    *lease = Some(id);
    let record = Record {
        member,
        revision,
        heartbeat: crate::history::now_rfc3339(),
    };
    let value = serde_json::to_vec(&record).unwrap_or_default();
    client
        .put(
            store.keys().member(&member.name),
            value,
            Some(PutOptions::new().with_lease(id)),
        )
        .await?;
    Ok(())
}
