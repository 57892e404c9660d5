//! The fleet's one rollout judge: the replica whose name `{prefix}/leader`
//! holds. The key is written only when absent and under the writer's
//! membership lease, so it disappears when that replica stops (or loses
//! etcd) for a lease TTL, and the next replica to heartbeat takes it: a
//! judge dies, another continues within the TTL.

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};

use super::keys::Keys;

/// Takes the leadership if nobody holds it; returns who holds it now.
pub async fn campaign(
    client: &mut Client,
    keys: &Keys,
    name: &str,
    lease: i64,
) -> Result<Option<String>, etcd_client::Error> {
    let key = keys.leader();
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key.clone(),
            name,
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(key, None)]);
    let response = client.txn(txn).await?;
    if response.succeeded() {
        tracing::info!(
            replica = name,
            "this replica now leads the fleet (rollout judge)"
        );
        return Ok(Some(name.to_owned()));
    }
    Ok(response.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => get
            .kvs()
            .first()
            .and_then(|kv| kv.value_str().ok().map(str::to_owned)),
        _ => None,
    }))
}
