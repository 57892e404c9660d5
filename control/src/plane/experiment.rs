//! Concluding an experiment: the winner takes all of the route's traffic
//! through the same operation as promote, and the history records the
//! figures the decision was made on.

use std::sync::Arc;

use switchyard_proxy::RoutingTable;

use super::{ChangeError, ControlPlane, Origin, TrafficOp};
use crate::readout;

impl ControlPlane {
    /// Concludes experiment `name` of `route` with `winner` (a variant);
    /// `expected`: the revision the caller read.
    pub async fn conclude(
        &self,
        route: &str,
        name: &str,
        winner: &str,
        expected: Option<u64>,
        origin: Origin<'_>,
    ) -> Result<Arc<RoutingTable>, ChangeError> {
        let table = self.table().load();
        let live = table
            .route(route)
            .ok_or_else(|| ChangeError::UnknownRoute(route.to_owned()))?;
        let figures = readout::conclusion(live, name, winner)?;
        let reason = match origin.reason {
            Some(why) => format!("{figures} ({why})"),
            None => figures,
        };
        let op = TrafficOp::Promote {
            version: winner.to_owned(),
        };
        let origin = Origin {
            reason: Some(&reason),
            ..origin
        };
        self.traffic(route, &op, expected, origin).await
    }
}
