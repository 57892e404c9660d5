//! A reload of the config file: parsed and checked like a start, then
//! merged with what runs (the runtime overrides that the file did not
//! touch survive; in a fleet the weights stay the fleet's), recorded, and
//! the settings that only a restart applies are named.

use std::collections::BTreeSet;

use switchyard_proxy::{TableError, TableSpec};

use super::{flags, record, ControlPlane, PlaneEvent};
use crate::config::Config;
use crate::history::{self, Source};

/// Why a reload failed; the table is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no config file: this process was started without one")]
    NoFile,
    #[error("{0}")]
    Invalid(String),
}

pub enum ReloadOutcome {
    /// The file's content is what is already applied.
    Unchanged,
    Applied {
        revision: u64,
        changes: usize,
        /// The routes the reload changed.
        routes: Vec<String>,
    },
}

impl ControlPlane {
    /// Re-reads the config file and applies it (see the module comment for
    /// how runtime overrides survive).
    pub fn reload(&self, source: Source) -> Result<ReloadOutcome, ReloadError> {
        let result = self.try_reload(source);
        self.notify(PlaneEvent::Reload { ok: result.is_ok() });
        if let Ok(ReloadOutcome::Applied { routes, .. }) = &result {
            let table = self.table.load();
            self.notify(PlaneEvent::TableChanged(&table));
            self.notify(PlaneEvent::RoutesChanged { routes, source });
        }
        result
    }

    fn try_reload(&self, source: Source) -> Result<ReloadOutcome, ReloadError> {
        let path = self.config_path.as_ref().ok_or(ReloadError::NoFile)?;
        let mut state = self.state();
        let read = std::fs::read_to_string(path);
        let parsed = match &read {
            // The files it names too: a broken CA or certificate file fails
            // the reload instead of breaking traffic after it.
            Ok(text) => {
                crate::gateway_api::parse_checked(text, path).map_err(|errors| errors.to_string())
            }
            Err(e) => Err(format!("{}: cannot read the file: {e}", path.display())),
        };
        let text = read.ok();
        let config = match parsed {
            Ok(config) => config,
            Err(error) => {
                // The watcher may see the same broken file several times.
                if !(source == Source::File && text.is_some() && text == state.failed_text) {
                    tracing::error!(%error, "config reload failed; keeping the current table");
                }
                state.failed_text = text;
                state.last_reload_error = Some(error.clone());
                state.last_reload = Some(history::now_rfc3339());
                return Err(ReloadError::Invalid(error));
            }
        };
        let text = crate::gateway_api::source_text(&config, text.unwrap_or_default());
        state.failed_text = None;
        if state.file_text.as_deref() == Some(text.as_str()) {
            state.last_reload_error = None;
            return Ok(ReloadOutcome::Unchanged);
        }
        let new_file_spec = config.table_spec();
        let mut before = None;
        let merged = match &state.shared {
            // In a fleet the weights are the fleet's, whatever the file says.
            Some((revision, shared)) => {
                before = Some(self.table.load().spec().clone());
                self.table
                    .store_at(shared.overlay(&new_file_spec), *revision)
            }
            None => self.table.update(|current| {
                before = Some(current.spec().clone());
                Ok::<_, TableError>(merge(
                    &state.file_spec,
                    &new_file_spec,
                    current.spec(),
                    &state.overrides,
                ))
            }),
        };
        let table = match merged {
            Ok(table) => table,
            Err(error) => {
                let error = format!("{}: {error}", path.display());
                tracing::error!(%error, "config reload failed; keeping the current table");
                state.last_reload_error = Some(error.clone());
                return Err(ReloadError::Invalid(error));
            }
        };
        // Overrides end where the file changed the route (or dropped it).
        let file_spec = std::mem::replace(&mut state.file_spec, new_file_spec);
        let still = |name: &String| match name.strip_prefix("flag:") {
            Some(flag) => {
                let old = file_spec.flags.iter().find(|f| f.name == flag);
                let new = state.file_spec.flags.iter().find(|f| f.name == flag);
                old.is_some() && old == new
            }
            None => {
                let old = file_spec.routes.iter().find(|r| &r.name == name);
                let new = state.file_spec.routes.iter().find(|r| &r.name == name);
                old.is_some() && old == new
            }
        };
        state.overrides = state
            .overrides
            .iter()
            .filter(|r| still(r))
            .cloned()
            .collect();
        let restart = restart_only_changes(&state.config, &config);
        for key in &restart {
            tracing::warn!(key = %key, "this setting changed in the file but needs a restart to take effect");
        }
        state.restart_required = restart;
        state.file_text = Some(text);
        state.config = config;
        state.last_reload = Some(history::now_rfc3339());
        state.last_reload_error = None;
        let who = match source {
            Source::Signal => "signal",
            Source::Api => "api",
            _ => "file",
        };
        let changes = before
            .map(|before| history::diff(&before, table.spec(), source, who, table.revision(), None))
            .unwrap_or_default();
        let count = changes.len();
        let routes = changes.iter().map(|c| c.route.clone()).collect();
        record(&mut state.history, changes);
        tracing::info!(
            revision = table.revision(),
            changes = count,
            "config reloaded"
        );
        Ok(ReloadOutcome::Applied {
            revision: table.revision(),
            changes: count,
            routes,
        })
    }
}

/// The table a reload produces: the new file's routes, except that a route
/// overridden at run time whose file definition did not change keeps its
/// live weights.
fn merge(
    old_file: &TableSpec,
    new_file: &TableSpec,
    live: &TableSpec,
    overrides: &BTreeSet<String>,
) -> TableSpec {
    let mut merged = new_file.clone();
    for route in &mut merged.routes {
        let unchanged_in_file = old_file.routes.iter().any(|r| r == &*route);
        if !(overrides.contains(&route.name) && unchanged_in_file) {
            continue;
        }
        if let Some(live_route) = live.routes.iter().find(|r| r.name == route.name) {
            for version in &mut route.versions {
                if let Some(live_version) =
                    live_route.versions.iter().find(|v| v.name == version.name)
                {
                    version.weight = live_version.weight;
                }
            }
        }
    }
    for flag in &mut merged.flags {
        let unchanged_in_file = old_file.flags.iter().any(|f| f == &*flag);
        if !(overrides.contains(&flags::override_key(&flag.name)) && unchanged_in_file) {
            continue;
        }
        if let Some(live) = live.flags.iter().find(|f| f.name == flag.name) {
            flag.enabled = live.enabled;
            flag.percent = live.percent;
            flag.variants = live.variants.clone();
        }
    }
    merged
}

/// Keys that differ between two configs but only take effect on restart.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut keys = Vec::new();
    let mut check = |key: &str, differs: bool| {
        if differs {
            keys.push(key.to_owned());
        }
    };
    check(
        "listen.data",
        old.listen.data.get_ref() != new.listen.data.get_ref(),
    );
    check(
        "listen.admin",
        old.listen.admin.get_ref() != new.listen.admin.get_ref(),
    );
    // Certificate *contents* reload by themselves; their paths do not.
    check("listen.tls", old.listen.tls != new.listen.tls);
    check("metrics", old.metrics != new.metrics);
    check(
        "timeouts.connect",
        old.timeouts.connect != new.timeouts.connect,
    );
    check(
        "timeouts.client_idle",
        old.timeouts.client_idle != new.timeouts.client_idle,
    );
    check(
        "timeouts.upstream_idle",
        old.timeouts.upstream_idle != new.timeouts.upstream_idle,
    );
    check("timeouts.drain", old.timeouts.drain != new.timeouts.drain);
    check(
        "proxy.max_idle_per_endpoint",
        old.proxy.max_idle_per_endpoint != new.proxy.max_idle_per_endpoint,
    );
    check("admin", old.admin != new.admin);
    check("cluster", old.cluster != new.cluster);
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plane::tests::CONFIG;

    #[test]
    fn merge_keeps_flag_overrides_until_the_file_changes_the_flag() {
        let text = format!(
            "{CONFIG}\n[[flags]]\nname = \"f\"\npercent = 10\nkey = {{ header = \"x-user-id\" }}\n"
        );
        let old_file = Config::parse(&text, "t").expect("valid").table_spec();
        let mut live = old_file.clone();
        live.flags[0].percent = 25.0;
        let overrides: BTreeSet<String> = [flags::override_key("f")].into();
        let other_route = text.replace("weight = 1\n", "weight = 2\n");
        let new_file = Config::parse(&other_route, "t")
            .expect("valid")
            .table_spec();
        assert_eq!(
            merge(&old_file, &new_file, &live, &overrides).flags[0].percent,
            25.0
        );
        let flag_changed = text.replace("percent = 10", "percent = 5");
        let new_file = Config::parse(&flag_changed, "t")
            .expect("valid")
            .table_spec();
        assert_eq!(
            merge(&old_file, &new_file, &live, &overrides).flags[0].percent,
            5.0
        );
    }

    #[test]
    fn merge_keeps_overrides_until_the_file_changes_the_route() {
        let old_file = Config::parse(CONFIG, "t").expect("valid").table_spec();
        let mut live = old_file.clone();
        live.routes[0].versions[1].weight = 50;
        let overrides: BTreeSet<String> = ["web".to_owned()].into();
        // The file changes only the other route: the override survives.
        let new_text = CONFIG.replace("weight = 1\n", "weight = 2\n");
        let new_file = Config::parse(&new_text, "t").expect("valid").table_spec();
        let merged = merge(&old_file, &new_file, &live, &overrides);
        assert_eq!(merged.routes[0].versions[1].weight, 50);
        assert_eq!(merged.routes[1].versions[0].weight, 2);
        // The file changes the overridden route: the file wins.
        let new_text = CONFIG.replace("weight = 10", "weight = 5");
        let new_file = Config::parse(&new_text, "t").expect("valid").table_spec();
        let merged = merge(&old_file, &new_file, &live, &overrides);
        assert_eq!(merged.routes[0].versions[1].weight, 5);
    }
}
