//! The traffic operations: set weights, promote, rollback and flip, each a
//! change of one route. Written once here ([`TrafficOp`]); the admin API
//! and the rollout controller apply them through [`ControlPlane::traffic`],
//! which in a fleet commits them to the shared store first.

use std::collections::BTreeMap;
use std::sync::Arc;

use switchyard_proxy::{RouteSpec, RoutingTable, TableError};

use super::{ChangeError, ControlPlane};
use crate::history::Source;

/// Who changes the traffic, and why: what the history records.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub source: Source,
    pub who: &'a str,
    pub reason: Option<&'a str>,
}

/// One traffic operation on a route.
#[derive(Debug, Clone)]
pub enum TrafficOp {
    /// With `exact`, every version not named gets 0.
    Weights {
        weights: BTreeMap<String, i64>,
        exact: bool,
    },
    /// `version` takes all the traffic, the others none.
    Promote { version: String },
    /// The route's baseline takes all the traffic.
    Rollback,
    /// Blue-green: `to` takes over `from`'s share in one swap.
    Flip { from: String, to: String },
}

impl TrafficOp {
    fn edit(&self, spec: &mut RouteSpec) -> Result<(), ChangeError> {
        match self {
            TrafficOp::Weights { weights, .. } if weights.is_empty() => Err(ChangeError::Invalid(
                "no weights given: send e.g. {\"stable\": 75, \"canary\": 25}".into(),
            )),
            TrafficOp::Weights { weights, exact } => set_weights(spec, weights, *exact),
            TrafficOp::Promote { version } => all_to(spec, version),
            TrafficOp::Rollback => {
                let baseline = spec.baseline.clone();
                all_to(spec, &baseline)
            }
            TrafficOp::Flip { from, to } => flip(spec, from, to),
        }
    }
}

impl ControlPlane {
    /// Applies `op` to `route`: in a fleet, committed to the shared store
    /// first; otherwise swapped in here. `expected`: the revision the
    /// caller read.
    pub async fn traffic(
        &self,
        route: &str,
        op: &TrafficOp,
        expected: Option<u64>,
        origin: Origin<'_>,
    ) -> Result<Arc<RoutingTable>, ChangeError> {
        self.commit_route(route, expected, origin, |spec| op.edit(spec))
            .await
    }
}

fn set_weights(
    spec: &mut RouteSpec,
    weights: &BTreeMap<String, i64>,
    exact: bool,
) -> Result<(), ChangeError> {
    for (name, weight) in weights {
        index(spec, name)?;
        if *weight < 0 {
            return Err(ChangeError::Invalid(format!(
                "weight of '{name}' is negative ({weight}): weights are 0 or more"
            )));
        }
    }
    let route = spec.name.clone();
    for version in &mut spec.versions {
        match weights.get(&version.name) {
            Some(weight) => {
                version.weight = u32::try_from(*weight).map_err(|_| {
                    ChangeError::Table(TableError::WeightTooLarge {
                        route: route.clone(),
                        version: version.name.clone(),
                        weight: u32::MAX,
                    })
                })?
            }
            None if exact => version.weight = 0,
            None => {}
        }
    }
    Ok(())
}

fn all_to(spec: &mut RouteSpec, version: &str) -> Result<(), ChangeError> {
    index(spec, version)?;
    for v in &mut spec.versions {
        v.weight = if v.name == version { 100 } else { 0 };
    }
    Ok(())
}

fn flip(spec: &mut RouteSpec, from: &str, to: &str) -> Result<(), ChangeError> {
    let (from_index, to_index) = (index(spec, from)?, index(spec, to)?);
    if from_index == to_index {
        return Err(ChangeError::Invalid(
            "from and to are the same version".into(),
        ));
    }
    let moved = spec.versions[from_index].weight;
    if moved == 0 {
        return Err(ChangeError::Conflict(format!(
            "version '{from}' carries no traffic: nothing to flip"
        )));
    }
    let to_weight = spec.versions[to_index].weight.saturating_add(moved);
    spec.versions[to_index].weight = to_weight;
    spec.versions[from_index].weight = 0;
    Ok(())
}

/// The position of version `name`, or the error naming the route's versions.
fn index(spec: &RouteSpec, name: &str) -> Result<usize, ChangeError> {
    spec.versions
        .iter()
        .position(|v| v.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = spec.versions.iter().map(|v| v.name.as_str()).collect();
            ChangeError::Invalid(format!(
                "route '{}' has no version '{name}' (versions: {})",
                spec.name,
                names.join(", ")
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flip_moves_the_share() {
        let mut spec = switchyard_proxy::RouteSpec {
            name: "web".into(),
            host: None,
            path_prefix: "/".into(),
            versions: vec![
                switchyard_proxy::VersionSpec {
                    name: "stable".into(),
                    weight: 100,
                    endpoints: vec![],
                    ..Default::default()
                },
                switchyard_proxy::VersionSpec {
                    name: "green".into(),
                    weight: 0,
                    endpoints: vec![],
                    ..Default::default()
                },
            ],
            baseline: "stable".into(),
            timeout: std::time::Duration::from_secs(1),
            shadows: Vec::new(),
            ..Default::default()
        };
        flip(&mut spec, "stable", "green").expect("flip");
        assert_eq!((spec.versions[0].weight, spec.versions[1].weight), (0, 100));
        assert!(matches!(
            flip(&mut spec, "stable", "green"),
            Err(ChangeError::Conflict(_))
        ));
    }

    #[test]
    fn weights_name_known_versions_and_are_not_negative() {
        let mut spec = switchyard_proxy::RouteSpec {
            name: "web".into(),
            versions: vec![switchyard_proxy::VersionSpec {
                name: "stable".into(),
                weight: 1,
                ..Default::default()
            }],
            ..Default::default()
        };
        let weights = |pairs: &[(&str, i64)]| -> BTreeMap<String, i64> {
            pairs.iter().map(|(n, w)| ((*n).to_owned(), *w)).collect()
        };
        assert!(set_weights(&mut spec, &weights(&[("nope", 1)]), false).is_err());
        assert!(set_weights(&mut spec, &weights(&[("stable", -1)]), false).is_err());
        assert!(matches!(
            set_weights(&mut spec, &weights(&[("stable", i64::MAX)]), false),
            Err(ChangeError::Table(TableError::WeightTooLarge { .. }))
        ));
        set_weights(&mut spec, &weights(&[("stable", 7)]), true).expect("valid");
        assert_eq!(spec.versions[0].weight, 7);
    }
}
