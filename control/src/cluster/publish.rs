//! Each replica's measurements, published under `{prefix}/stats/{name}`
//! (with its membership lease: a stopped replica's figures leave with it)
//! every `[cluster] publish_interval`: per live series, the since-start
//! totals (the judge subtracts two of them: the exact requests of a step)
//! and the last window (`stats?scope=fleet`), each an HDR tally in its
//! published form ([`switchyard_proxy::metrics::Tally::encode`]), base64 in
//! a JSON envelope that `etcdctl get` shows readably.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use etcd_client::{Client, PutOptions};
use serde::{Deserialize, Serialize};
use switchyard_proxy::metrics::{Metrics, SeriesTally, Tally};

use super::keys::Keys;
use crate::plane::ReplicaTallies;

#[derive(Serialize, Deserialize)]
struct Envelope {
    replica: String,
    at: String,
    series: Vec<Series>,
}

#[derive(Serialize, Deserialize)]
struct Series {
    route: String,
    version: String,
    weight: Option<u32>,
    totals: String,
    window: String,
    covered_ms: u64,
}

/// What this replica publishes now.
pub fn encode(replica: &str, metrics: &Metrics) -> Vec<u8> {
    let series = metrics
        .tallies(metrics.max_window())
        .into_iter()
        .map(|s| Series {
            route: s.route.to_string(),
            version: s.version.to_string(),
            weight: s.weight,
            totals: BASE64.encode(s.totals.encode()),
            window: BASE64.encode(s.window.encode()),
            covered_ms: u64::try_from(s.covered.as_millis()).unwrap_or(u64::MAX),
        })
        .collect();
    let envelope = Envelope {
        replica: replica.to_owned(),
        at: crate::history::now_rfc3339(),
        series,
    };
    serde_json::to_vec(&envelope).unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a published stats envelope: {0}")]
    Json(#[from] serde_json::Error),
    #[error("series {route}/{version}: {reason}")]
    Series {
        route: String,
        version: String,
        reason: String,
    },
}

/// Another replica's publication.
pub fn decode(bytes: &[u8]) -> Result<ReplicaTallies, DecodeError> {
    let envelope: Envelope = serde_json::from_slice(bytes)?;
    let series = envelope
        .series
        .into_iter()
        .map(|s| {
            let tally = |text: &str| -> Result<Tally, String> {
                let bytes = BASE64.decode(text).map_err(|e| e.to_string())?;
                Tally::decode(&bytes).map_err(|e| e.to_string())
            };
            let wrap = |reason| DecodeError::Series {
                route: s.route.clone(),
                version: s.version.clone(),
                reason,
            };
            Ok(SeriesTally {
                totals: tally(&s.totals).map_err(wrap)?,
                window: tally(&s.window).map_err(wrap)?,
                covered: Duration::from_millis(s.covered_ms),
                route: Arc::from(s.route.as_str()),
                version: Arc::from(s.version.as_str()),
                weight: s.weight,
            })
        })
        .collect::<Result<_, DecodeError>>()?;
    Ok(ReplicaTallies {
        replica: envelope.replica,
        series,
    })
}

/// Writes this replica's figures under `lease`; returns the bytes written.
pub async fn publish(
    client: &mut Client,
    keys: &Keys,
    name: &str,
    lease: i64,
    metrics: &Metrics,
) -> Result<usize, etcd_client::Error> {
    let value = encode(name, metrics);
    let len = value.len();
    client
        .put(
            keys.stat(name),
            value,
            Some(PutOptions::new().with_lease(lease)),
        )
        .await?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_published_decodes_and_garbage_is_refused() {
        let metrics = Metrics::disabled();
        let bytes = encode("pod-1", &metrics);
        let back = decode(&bytes).expect("decodes");
        assert_eq!(back.replica, "pod-1");
        assert!(back.series.is_empty());
        assert!(decode(b"{").is_err());
        let bad = br#"{"replica":"a","at":"t","series":[{"route":"web","version":"v1","weight":1,"totals":"!!","window":"","covered_ms":0}]}"#;
        let error = decode(bad).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("web/v1"), "{error}");
    }
}
