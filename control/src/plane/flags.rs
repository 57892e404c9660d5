//! Changing a flag at run time (the admin API, ctl, the guard): one table
//! swap, recorded in the history, and an override the next reload keeps
//! while the file's definition of the flag is unchanged, as for routes.

use std::collections::BTreeMap;
use std::sync::Arc;

use switchyard_proxy::{FlagSpec, RoutingTable};

use super::{at_revision, record, ChangeError, ControlPlane, Origin, PlaneEvent};
use crate::history;

/// What `PUT /api/v1/flags/{name}` may change; absent fields stay.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagEdit {
    pub enabled: Option<bool>,
    pub percent: Option<f64>,
    /// Variant → weight (every variant of the flag, none added).
    pub variants: Option<BTreeMap<String, u32>>,
}

/// The key of a flag in the plane's set of run-time overrides (route names
/// cannot contain ':').
pub(super) fn override_key(flag: &str) -> String {
    format!("flag:{flag}")
}

/// `current`'s spec with `edit` applied to flag `name`, if `current` is
/// still at the `expected` revision.
fn edited_flag(
    current: &RoutingTable,
    name: &str,
    edit: &FlagEdit,
    expected: Option<u64>,
) -> Result<switchyard_proxy::TableSpec, ChangeError> {
    at_revision(current, expected)?;
    let mut spec = current.spec().clone();
    let flag = spec
        .flags
        .iter_mut()
        .find(|f| f.name == name)
        .ok_or_else(|| ChangeError::UnknownFlag(name.to_owned()))?;
    edit.apply(flag)?;
    Ok(spec)
}

impl FlagEdit {
    fn apply(&self, flag: &mut FlagSpec) -> Result<(), ChangeError> {
        if self.enabled.is_none() && self.percent.is_none() && self.variants.is_none() {
            return Err(ChangeError::Invalid(
                "nothing to change: send e.g. {\"percent\": 25} or {\"enabled\": false}".into(),
            ));
        }
        if let Some(enabled) = self.enabled {
            flag.enabled = enabled;
        }
        if let Some(percent) = self.percent {
            if !flag.variants.is_empty() {
                return Err(ChangeError::Invalid(format!(
                    "flag '{}' has variants: set their weights, not a percent",
                    flag.name
                )));
            }
            flag.percent = percent;
        }
        if let Some(weights) = &self.variants {
            if let Some(unknown) = weights
                .keys()
                .find(|name| !flag.variants.iter().any(|(v, _)| v == *name))
            {
                return Err(ChangeError::Invalid(format!(
                    "flag '{}' has no variant '{unknown}'",
                    flag.name
                )));
            }
            for (name, weight) in &mut flag.variants {
                if let Some(new) = weights.get(name) {
                    *weight = *new;
                }
            }
        }
        Ok(())
    }
}

impl ControlPlane {
    /// Applies `edit` to flag `name`: in a fleet, committed to the shared
    /// store first; otherwise swapped in here. `expected`: the revision the
    /// caller read (compare-and-set), `None` skips the check.
    pub async fn set_flag(
        &self,
        name: &str,
        edit: &FlagEdit,
        expected: Option<u64>,
        origin: Origin<'_>,
    ) -> Result<Arc<RoutingTable>, ChangeError> {
        let Some(store) = self.store().cloned() else {
            return self.change_flag(name, edit, expected, origin);
        };
        self.commit(store, expected, origin, |current| {
            edited_flag(current, name, edit, expected)
        })
        .await
    }

    /// [`Self::set_flag`] in a single process.
    pub fn change_flag(
        &self,
        name: &str,
        edit: &FlagEdit,
        expected: Option<u64>,
        origin: Origin<'_>,
    ) -> Result<Arc<RoutingTable>, ChangeError> {
        if self.store().is_some() {
            return Err(ChangeError::Conflict(
                "in a fleet a flag change is committed to the shared store first (ControlPlane::set_flag)".into(),
            ));
        }
        let mut state = self.state();
        let mut before = None;
        let table = self.table.update(|current| {
            let spec = edited_flag(current, name, edit, expected)?;
            before = Some(current.spec().clone());
            Ok::<_, ChangeError>(spec)
        })?;
        if let Some(before) = before {
            let changes = history::diff(
                &before,
                table.spec(),
                origin.source,
                origin.who,
                table.revision(),
                origin.reason,
            );
            if !changes.is_empty() {
                state.overrides.insert(override_key(name));
            }
            record(&mut state.history, changes);
        }
        drop(state);
        self.notify(PlaneEvent::TableChanged(&table));
        Ok(table)
    }
}
