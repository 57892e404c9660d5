//! The audit trail of table changes: who changed which route's weights, from
//! what to what, when, and through which channel. Bounded to the last 1,000.

use std::collections::{BTreeMap, VecDeque};
use std::time::SystemTime;

use serde::Serialize;
use switchyard_proxy::{FlagSpec, RouteSpec, TableSpec};

pub const HISTORY_LIMIT: usize = 1_000;

/// Where a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Api,
    File,
    Signal,
    Auto,
}

pub type Weights = BTreeMap<String, u32>;

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Change {
    /// RFC 3339, UTC.
    pub time: String,
    pub source: Source,
    /// Token name, `file`, `signal` or `auto`.
    pub who: String,
    pub route: String,
    /// What happened to the route: `weights`, `added`, `removed`, `updated`.
    pub action: String,
    /// Absent for a route that did not exist before.
    pub before: Option<Weights>,
    /// Absent for a removed route.
    pub after: Option<Weights>,
    pub revision: u64,
    /// Why, when the change says (e.g. a rollout verdict).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A flag's change: its name (`route` is empty, `reason` says what
    /// changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
}

#[derive(Debug, Default)]
pub struct History {
    changes: VecDeque<Change>,
}

impl History {
    pub fn push(&mut self, change: Change) {
        if self.changes.len() == HISTORY_LIMIT {
            self.changes.pop_front();
        }
        self.changes.push_back(change);
    }

    /// Oldest first.
    pub fn all(&self) -> Vec<Change> {
        self.changes.iter().cloned().collect()
    }
}

pub fn weights(route: &RouteSpec) -> Weights {
    route
        .versions
        .iter()
        .map(|v| (v.name.clone(), v.weight))
        .collect()
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// One entry per route that differs between `before` and `after`.
pub fn diff(
    before: &TableSpec,
    after: &TableSpec,
    source: Source,
    who: &str,
    revision: u64,
    reason: Option<&str>,
) -> Vec<Change> {
    let time = now_rfc3339();
    let entry = |route: &str, action: &str, old: Option<Weights>, new: Option<Weights>| Change {
        time: time.clone(),
        source,
        who: who.to_owned(),
        route: route.to_owned(),
        action: action.to_owned(),
        before: old,
        after: new,
        revision,
        reason: reason.map(str::to_owned),
        flag: None,
    };
    let mut changes = Vec::new();
    for new in &after.routes {
        match before.routes.iter().find(|r| r.name == new.name) {
            None => changes.push(entry(&new.name, "added", None, Some(weights(new)))),
            Some(old) if old != new => {
                let (old_w, new_w) = (weights(old), weights(new));
                let action = if old_w != new_w && only_weights_differ(old, new) {
                    "weights"
                } else {
                    "updated"
                };
                changes.push(entry(&new.name, action, Some(old_w), Some(new_w)));
            }
            Some(_) => {}
        }
    }
    for old in &before.routes {
        if !after.routes.iter().any(|r| r.name == old.name) {
            changes.push(entry(&old.name, "removed", Some(weights(old)), None));
        }
    }
    let flag_entry = |name: &str, action: &str, what: String| Change {
        reason: Some(match reason {
            Some(why) => format!("{what} ({why})"),
            None => what,
        }),
        flag: Some(name.to_owned()),
        ..entry("", action, None, None)
    };
    for new in &after.flags {
        match before.flags.iter().find(|f| f.name == new.name) {
            None => changes.push(flag_entry(&new.name, "flag added", describe_flag(new))),
            Some(old) if old != new => changes.push(flag_entry(
                &new.name,
                "flag",
                format!("{} → {}", describe_flag(old), describe_flag(new)),
            )),
            Some(_) => {}
        }
    }
    for old in &before.flags {
        if !after.flags.iter().any(|f| f.name == old.name) {
            changes.push(flag_entry(&old.name, "flag removed", describe_flag(old)));
        }
    }
    changes
}

/// A flag's state in words: `on for 10%`, `off (disabled)`, `light 50 / dark 50`.
pub fn describe_flag(flag: &FlagSpec) -> String {
    let split = if flag.variants.is_empty() {
        format!("on for {}%", flag.percent)
    } else {
        flag.variants
            .iter()
            .map(|(name, weight)| format!("{name} {weight}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    if flag.enabled {
        split
    } else {
        format!("disabled ({split})")
    }
}

fn only_weights_differ(old: &RouteSpec, new: &RouteSpec) -> bool {
    let mut old = old.clone();
    for (version, new_version) in old.versions.iter_mut().zip(&new.versions) {
        version.weight = new_version.weight;
    }
    &old == new
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use switchyard_proxy::{Settings, VersionSpec};

    fn spec(weights: &[(&str, u32)]) -> TableSpec {
        TableSpec {
            routes: vec![RouteSpec {
                name: "web".into(),
                host: None,
                path_prefix: "/".into(),
                versions: weights
                    .iter()
                    .map(|(name, weight)| VersionSpec {
                        name: (*name).into(),
                        weight: *weight,
                        endpoints: vec!["127.0.0.1:1".into()],
                        ..Default::default()
                    })
                    .collect(),
                baseline: "stable".into(),
                timeout: Duration::from_secs(1),
                shadows: Vec::new(),
                ..Default::default()
            }],
            settings: Settings::default(),
            flags: Vec::new(),
        }
    }

    #[test]
    fn diff_reports_weight_changes_only_for_changed_routes() {
        let a = spec(&[("stable", 90), ("canary", 10)]);
        let b = spec(&[("stable", 50), ("canary", 50)]);
        assert!(diff(&a, &a, Source::Api, "t", 2, None).is_empty());
        let changes = diff(&a, &b, Source::Api, "t", 2, None);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].action, "weights");
        assert_eq!(
            changes[0].before.as_ref().and_then(|w| w.get("stable")),
            Some(&90)
        );
        assert_eq!(
            changes[0].after.as_ref().and_then(|w| w.get("canary")),
            Some(&50)
        );
    }

    #[test]
    fn history_is_bounded() {
        let mut history = History::default();
        let a = spec(&[("stable", 1)]);
        let b = spec(&[("stable", 2)]);
        for revision in 0..(HISTORY_LIMIT as u64 + 5) {
            for change in diff(&a, &b, Source::File, "file", revision, None) {
                history.push(change);
            }
        }
        let all = history.all();
        assert_eq!(all.len(), HISTORY_LIMIT);
        assert_eq!(all[0].revision, 5);
    }
}
