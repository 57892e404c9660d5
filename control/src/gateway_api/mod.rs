//! Kubernetes Gateway API `HTTPRoute`s as switchyard's routes, both ways:
//! a YAML file of HTTPRoutes is a config on its own (`switchyard run
//! --config routes.yaml`), or a TOML config names such files in
//! `[gateway_api] files` and keeps its listeners, timeouts and admin
//! settings; and the live table prints back as HTTPRoutes
//! (`GET /api/v1/export?format=gateway-api`, `switchyard export`) so a
//! rollout's result can be committed where the routes are kept.
//!
//! The mapping is in docs/gateway-api.md. The files: [`yaml`] (YAML with a
//! field path and position for every value), [`types`] (the HTTPRoute
//! fields switchyard honours, everything else refused), [`import`] (rules
//! → routes) and [`export`] (routes → HTTPRoutes, the export endpoint's
//! answer).

use std::path::Path;

pub use crate::config::gateway_api::{GatewayApiConfig, DEFAULT_SERVICE_ADDRESS};
use crate::config::{Config, ConfigError, ConfigErrors};

pub mod export;
pub mod import;
#[cfg(test)]
mod tests;
pub mod types;
pub mod yaml;

pub use export::{to_yaml, ExportError};

/// A config file of either kind, read and checked: HTTPRoute YAML by the
/// extension `.yaml` or `.yml`, else TOML with the files its
/// `[gateway_api]` names.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    parse_checked(&Config::read(path)?, path)
}

/// [`Config::parse_checked`] for either kind of file (see [`load`]).
pub fn parse_checked(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    if is_yaml(path) {
        // HTTPRoutes name no certificate or CA file to check.
        let source_name = path.display().to_string();
        return config_from_yaml(text, &source_name, GatewayApiConfig::default());
    }
    let mut config = Config::parse_checked(text, path)?;
    import_files(&mut config, path.parent())?;
    Ok(config)
}

/// Whether `path` is read as Gateway API YAML rather than TOML.
pub fn is_yaml(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

/// A config made of the HTTPRoutes in `text` and every default of the TOML
/// file's sections.
pub fn config_from_yaml(
    text: &str,
    source_name: &str,
    settings: GatewayApiConfig,
) -> Result<Config, ConfigErrors> {
    let fail = |errors| ConfigErrors {
        source_name: source_name.to_owned(),
        errors,
    };
    let mut config: Config = toml::from_str("").map_err(|e| {
        fail(vec![ConfigError {
            path: String::new(),
            position: None,
            message: format!("the default settings do not load: {e}"),
        }])
    })?;
    config.gateway_api = Some(settings);
    add_routes(&mut config, text).map_err(fail)?;
    // The file itself is the config text a reload compares.
    if let Some(settings) = config.gateway_api.as_mut() {
        settings.loaded.clear();
    }
    Ok(config)
}

/// Appends the routes of every file `[gateway_api] files` names (relative
/// to `dir`); the errors of the first file that has any, under its name.
pub fn import_files(config: &mut Config, dir: Option<&Path>) -> Result<(), ConfigErrors> {
    let Some(files) = config.gateway_api.as_ref().map(|g| g.files.clone()) else {
        return Ok(());
    };
    for file in files {
        let path = match dir {
            Some(dir) => dir.join(&file),
            None => file.clone().into(),
        };
        let source_name = path.display().to_string();
        let fail = |errors| ConfigErrors {
            source_name: source_name.clone(),
            errors,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            fail(vec![ConfigError {
                path: String::new(),
                position: None,
                message: format!("cannot read this file, which [gateway_api] files names: {e}"),
            }])
        })?;
        add_routes(config, &text).map_err(fail)?;
    }
    Ok(())
}

/// The routes of `text` appended to `config`, then the table build's check
/// of the whole, its problems with those routes positioned in `text`.
fn add_routes(config: &mut Config, text: &str) -> Result<(), Vec<ConfigError>> {
    let service_address = config.gateway_api.as_ref().map_or_else(
        || DEFAULT_SERVICE_ADDRESS.to_owned(),
        |g| g.service_address.clone(),
    );
    let imported = import::routes(text, &service_address)?;
    let first = config.routes.len();
    let (routes, origins): (Vec<_>, Vec<_>) = imported.into_iter().unzip();
    config.routes.extend(routes);
    if let Some(settings) = config.gateway_api.as_mut() {
        settings.loaded.push(text.to_owned());
    }
    let problems = import::table_problems(config, first, &origins, text);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// What a reload compares to tell whether anything changed: the config's
/// own text and that of every file it imported.
pub fn source_text(config: &Config, text: String) -> String {
    match &config.gateway_api {
        Some(settings) if !settings.loaded.is_empty() => {
            let mut all = text;
            for loaded in &settings.loaded {
                all.push_str("\n---\n");
                all.push_str(loaded);
            }
            all
        }
        _ => text,
    }
}
