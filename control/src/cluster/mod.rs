//! The fleet: many switchyards sharing one routing state through etcd
//! (`[cluster]` in the config). Without that section nothing here runs.
//!
//! Key layout under the prefix (see [`keys`]):
//! - `{prefix}/table`: the routing state, ONE key holding the JSON of every
//!   route's weights and the change that set them
//!   ([`crate::plane::SharedState`]). One key because then a compare-and-set
//!   of the whole table is one `Txn` comparing that key's `mod_revision`, and
//!   that mod revision *is* the fleet's revision: what `ETag`,
//!   `x-switchyard-revision` and the history report on every replica.
//! - `{prefix}/members/{name}`: one key per replica, attached to its lease.
//! - `{prefix}/leader`: the name of the replica running the rollout judge,
//!   under its lease ([`leader`]).
//! - `{prefix}/stats/{name}`: each replica's published figures, under its
//!   lease ([`publish`]).
//! - `{prefix}/rollouts/{route}`: each rollout's state (phase, step,
//!   verdicts), written by the judge and by rollout commands on any replica.
//!
//! [`connect`] builds the etcd client (TLS, client certificates, user and
//! password); [`store`] is the control plane's shared store on etcd (guarded
//! commits, members); [`sync`] seeds the table, follows it and applies each
//! change through the control plane; [`members`] keeps this replica listed.
//! The request path never touches etcd: it reads the table the control plane
//! swapped in, whatever etcd's state.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::task::JoinHandle;

use switchyard_proxy::metrics::Metrics;

use crate::config::ClusterConfig;
use crate::plane::ControlPlane;

pub mod connect;
pub mod keys;
pub mod leader;
pub mod members;
pub mod publish;
pub mod store;
pub mod sync;

pub use connect::ConnectError;
pub use keys::Keys;
pub use store::EtcdStore;

/// Joins the fleet `config` names: the plane commits changes to etcd from
/// now on; the returned tasks follow the table and keep this replica
/// listed. Never waits for etcd: a replica starting while etcd is down
/// serves its file's table and reports `cluster: disconnected`.
pub fn join(
    plane: &Arc<ControlPlane>,
    config: &ClusterConfig,
    base_dir: Option<&Path>,
    data_addr: SocketAddr,
    admin_addr: SocketAddr,
    metrics: Metrics,
) -> Result<Vec<JoinHandle<()>>, ConnectError> {
    let options = connect::Options::from_config(config, base_dir)?;
    let name = config.replica_name(data_addr.port());
    let keys = Keys::new(config.prefix.get_ref());
    let store = Arc::new(EtcdStore::new(options, keys, name.clone()));
    plane.set_store(store.clone());
    if let Some(gauge) = store.gauge() {
        if let Err(error) = metrics.registry().register(Box::new(gauge)) {
            tracing::warn!(%error, "switchyard_cluster_connected not registered");
        }
    }
    let member = members::Member {
        name,
        data: data_addr.to_string(),
        admin: admin_addr.to_string(),
    };
    Ok(vec![
        tokio::spawn(sync::follow(Arc::downgrade(plane), Arc::clone(&store))),
        tokio::spawn(members::register(
            Arc::downgrade(plane),
            store,
            member,
            metrics,
            members::Cadence {
                ttl: config.lease_ttl.0,
                publish: config.publish_interval.0,
            },
        )),
    ])
}
