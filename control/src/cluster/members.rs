//! Membership: each replica keeps `{prefix}/members/{name}` under a lease,
//! with its addresses, the revision it serves and its last heartbeat. A
//! replica that stops (or loses etcd) disappears when its lease expires.
//! The same lease carries what else leaves with the replica: its claim to
//! lead ([`super::leader`]) and its published figures ([`super::publish`]).

use std::sync::Weak;
use std::time::Duration;

use etcd_client::{Client, PutOptions};
use serde::Serialize;
use switchyard_proxy::metrics::Metrics;

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

/// How often this replica heartbeats and publishes.
#[derive(Debug, Clone, Copy)]
pub struct Cadence {
    pub ttl: Duration,
    pub publish: Duration,
}

/// Runs until the control plane is dropped: heartbeats every third of the
/// lease (and at once when the applied revision changes), campaigning for
/// the leadership each time, and publishes the figures every
/// `cadence.publish`.
pub async fn register(
    plane: Weak<ControlPlane>,
    store: Shared,
    member: Member,
    metrics: Metrics,
    cadence: Cadence,
) {
    let beat = (cadence.ttl / 3).max(Duration::from_millis(200));
    let ttl_secs = i64::try_from(cadence.ttl.as_secs()).unwrap_or(5).max(2);
    let mut lease: Option<i64> = None;
    let mut published: Option<Option<u64>> = None;
    let mut last_beat = tokio::time::Instant::now();
    let mut last_publish: Option<tokio::time::Instant> = None;
    loop {
        let Some(plane) = plane.upgrade() else { return };
        let revision = plane.shared().map(|(revision, _)| revision);
        drop(plane);
        let due = last_beat.elapsed() >= beat || published != Some(revision);
        if due {
            let outcome = async {
                heartbeat(&store, &member, ttl_secs, &mut lease, revision).await?;
                let mut client = store.client().await.map_err(as_etcd)?;
                let id = lease.unwrap_or_default();
                let leader =
                    super::leader::campaign(&mut client, store.keys(), &member.name, id).await?;
                store.set_leader(leader);
                Ok::<_, etcd_client::Error>(())
            }
            .await;
            match outcome {
                Ok(()) => published = Some(revision),
                Err(error) => {
                    lease = None;
                    published = None;
                    store.set_leader(None);
                    tracing::debug!(%error, "fleet heartbeat failed");
                }
            }
            last_beat = tokio::time::Instant::now();
        }
        let publish_due = last_publish.is_none_or(|at| at.elapsed() >= cadence.publish);
        if let (Some(id), true) = (lease, publish_due && metrics.enabled()) {
            last_publish = Some(tokio::time::Instant::now());
            if let Err(error) = publish(&store, &member.name, id, &metrics).await {
                tracing::debug!(%error, "publishing this replica's figures failed");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn as_etcd(error: crate::plane::StoreError) -> etcd_client::Error {
    etcd_client::Error::InvalidArgs(error.to_string())
}

async fn publish(
    store: &Shared,
    name: &str,
    lease: i64,
    metrics: &Metrics,
) -> Result<usize, etcd_client::Error> {
    let mut client = store.client().await.map_err(as_etcd)?;
    super::publish::publish(&mut client, store.keys(), name, lease, metrics).await
}

async fn heartbeat(
    store: &Shared,
    member: &Member,
    ttl_secs: i64,
    lease: &mut Option<i64>,
    revision: Option<u64>,
) -> Result<(), etcd_client::Error> {
    let mut client: Client = store.client().await.map_err(as_etcd)?;
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
