//! HTTPRoutes → switchyard routes: each hostname × rule × match of each
//! document becomes one [`RouteConfig`], the same value a `[[routes]]`
//! table of the TOML file
//! gives, so the table build, reloads, overrides and history treat both
//! alike. The values keep their byte ranges in the YAML text, so the table
//! build's own problems (a duplicate version, a bad header name) point
//! into the YAML too.

use std::collections::BTreeMap;

use switchyard_proxy::shadow::{DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_IN_FLIGHT};
use switchyard_proxy::split::MAX_WEIGHT;
use switchyard_proxy::RoutingTable;
use toml::Spanned;

use super::types::{self, At, BackendRef, HttpRoute, Rule, Session};
use super::yaml::{self, FieldError, Node};
use crate::config::routing::StickyConfig;
use crate::config::values::{unset, Dur};
use crate::config::{line_column, Config, ConfigError, RouteConfig, ShadowConfig, VersionConfig};

/// Where an imported route came from, to name it in errors.
#[derive(Debug, Clone)]
pub struct Origin {
    /// `document 2, HTTPRoute web`.
    pub label: String,
    pub rule: usize,
    /// The index of the rule's match it was made from.
    pub matched: usize,
}

/// The routes of every HTTPRoute in `text`, or every problem found (each
/// document is read to its first problem).
pub fn routes(
    text: &str,
    service_address: &str,
) -> Result<Vec<(RouteConfig, Origin)>, Vec<ConfigError>> {
    let documents = yaml::documents(text).map_err(|e| vec![config_error(None, e)])?;
    let mut routes = Vec::new();
    let mut errors = Vec::new();
    for (d, document) in documents.iter().enumerate() {
        let node = Node::root(document, text);
        let label = match types::document_name(&node) {
            Some(name) => format!("document {}, HTTPRoute {name}", d + 1),
            None => format!("document {}", d + 1),
        };
        let mapped = types::read_route(&node).and_then(|route| match route {
            Some(route) => map_route(&route, service_address),
            None => Ok(Vec::new()),
        });
        match mapped {
            Ok(mapped) => routes.extend(mapped.into_iter().map(|(route, (rule, matched))| {
                let origin = Origin {
                    label: label.clone(),
                    rule,
                    matched,
                };
                (route, origin)
            })),
            Err(error) => errors.push(config_error(Some(&label), error)),
        }
    }
    if errors.is_empty() && routes.is_empty() {
        errors.push(ConfigError {
            path: String::new(),
            position: None,
            message: format!("no {} documents: add at least one", types::KIND),
        });
    }
    if errors.is_empty() {
        Ok(routes)
    } else {
        Err(errors)
    }
}

/// The table build's problems with the routes from `first` on (the ones
/// imported from `text`), positioned in `text` and named by document.
pub fn table_problems(
    config: &Config,
    first: usize,
    origins: &[Origin],
    text: &str,
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for problem in RoutingTable::check(&config.table_spec()) {
        let Some((index, rest)) = problem
            .path
            .strip_prefix("routes[")
            .and_then(|p| p.split_once(']'))
            .and_then(|(i, rest)| Some((i.parse::<usize>().ok()?, rest)))
        else {
            continue;
        };
        let Some(origin) = index.checked_sub(first).and_then(|i| origins.get(i)) else {
            continue;
        };
        let span = config.span_of(&problem.path);
        errors.push(ConfigError {
            path: format!(
                "{}: {}",
                origin.label,
                field_path(origin.rule, origin.matched, rest)
            ),
            position: (span.end > 0).then(|| line_column(text, span.start)),
            message: problem.error.to_string(),
        });
    }
    errors
}

/// The HTTPRoute field a table problem's key (`.versions[1].weight`, of
/// the route made from match `matched` of rule `rule`) was made from.
pub(crate) fn field_path(rule: usize, matched: usize, key: &str) -> String {
    let key = key.trim_start_matches('.');
    let (head, tail) = key.split_once('.').unwrap_or((key, ""));
    let (name, index) = match head.split_once('[') {
        Some((name, index)) => (name, index.trim_end_matches(']')),
        None => (head, ""),
    };
    let rule_path = format!("spec.rules[{rule}]");
    match (name, tail) {
        ("name", _) => "metadata.name".into(),
        ("host", _) => "spec.hostnames[0]".into(),
        ("path_prefix", _) => format!("{rule_path}.matches[{matched}].path.value"),
        ("match_headers", _) => format!("{rule_path}.matches[{matched}].headers"),
        ("match_method", _) => format!("{rule_path}.matches[{matched}].method"),
        ("sticky", _) => format!("{rule_path}.sessionPersistence"),
        ("timeout", _) => format!("{rule_path}.timeouts"),
        ("versions", "") if index.is_empty() => format!("{rule_path}.backendRefs"),
        // An endpoint is the backendRef as a whole, through service_address.
        ("versions", tail) if tail.is_empty() || tail.starts_with("endpoints") => {
            format!("{rule_path}.backendRefs[{index}]")
        }
        ("versions", tail) => format!("{rule_path}.backendRefs[{index}].{tail}"),
        // Every filter is a RequestMirror, each the shadow of its index.
        ("shadows", "percent") => format!("{rule_path}.filters[{index}].requestMirror"),
        ("shadows", _) if !index.is_empty() => {
            format!("{rule_path}.filters[{index}].requestMirror.backendRef")
        }
        _ => rule_path,
    }
}

fn config_error(label: Option<&str>, error: FieldError) -> ConfigError {
    let path = match (label, error.path.is_empty()) {
        (Some(label), true) => label.to_owned(),
        (Some(label), false) => format!("{label}: {}", error.path),
        (None, _) => error.path,
    };
    ConfigError {
        path,
        position: error.position,
        message: error.message,
    }
}

/// The rule and the match of it a route was made from.
type RuleMatch = (usize, usize);

/// One route per hostname, rule and match: `name`, with `-h<hostname>`,
/// `-<rule>` and `-m<match>` added where there are several (the Gateway
/// API ORs a rule's matches and a route's hostnames; each switchyard route
/// matches one of each, in the same precedence).
fn map_route(
    route: &HttpRoute,
    service_address: &str,
) -> Result<Vec<(RouteConfig, RuleMatch)>, FieldError> {
    let hosts: Vec<Option<Spanned<String>>> = if route.hostnames.is_empty() {
        vec![None]
    } else {
        route.hostnames.iter().map(|h| Some(spanned(h))).collect()
    };
    let mut routes = Vec::new();
    for (h, host) in hosts.iter().enumerate() {
        for (r, rule) in route.rules.iter().enumerate() {
            let matches: Vec<Option<&types::Match>> = if rule.matches.is_empty() {
                vec![None]
            } else {
                rule.matches.iter().map(Some).collect()
            };
            for (m, matched) in matches.iter().enumerate() {
                let mut name = route.name.value.clone();
                if hosts.len() > 1 {
                    name.push_str(&format!("-h{h}"));
                }
                if route.rules.len() > 1 {
                    name.push_str(&format!("-{r}"));
                }
                if matches.len() > 1 {
                    name.push_str(&format!("-m{m}"));
                }
                let name = Spanned::new(route.name.span.clone(), name);
                let mapped = map_rule(
                    rule,
                    *matched,
                    name,
                    host.clone(),
                    &route.namespace,
                    service_address,
                )?;
                routes.push((mapped, (r, m)));
            }
        }
    }
    Ok(routes)
}

fn map_rule(
    rule: &Rule,
    matched: Option<&types::Match>,
    name: Spanned<String>,
    host: Option<Spanned<String>>,
    namespace: &str,
    service_address: &str,
) -> Result<RouteConfig, FieldError> {
    let refs = &rule.backend_refs;
    if refs.value.is_empty() {
        return Err(refs.error(
            "a rule needs backendRefs: the Gateway API answers a rule without backends \
             with 500, which switchyard does not serve; add at least one",
        ));
    }
    if refs.value.iter().all(|b| b.weight.value == 0) {
        return Err(refs.error(
            "every backendRef weighs 0: the Gateway API answers such a rule with 500, \
             which switchyard does not serve; give one backendRef a weight above 0",
        ));
    }
    let versions = refs
        .value
        .iter()
        .map(|backend| version(backend, namespace, service_address))
        .collect::<Result<Vec<_>, _>>()?;
    let shadows = rule
        .mirrors
        .iter()
        .map(|mirror| {
            let endpoint = endpoint(&mirror.backend, namespace, service_address);
            ShadowConfig {
                name: spanned(&mirror.backend.name),
                endpoints: Spanned::new(
                    mirror.backend.name.span.clone(),
                    vec![Spanned::new(mirror.backend.name.span.clone(), endpoint)],
                ),
                percent: spanned(&mirror.percent),
                methods: None,
                max_in_flight: Spanned::new(0..0, DEFAULT_MAX_IN_FLIGHT),
                max_body_bytes: Spanned::new(0..0, DEFAULT_MAX_BODY_BYTES),
                timeout: None,
                strip_headers: Vec::new(),
                compare: false,
                compare_ignore_body: unset(),
            }
        })
        .collect();
    let match_headers = matched.filter(|m| !m.headers.is_empty()).map(|m| {
        let headers: BTreeMap<String, String> = m.headers.iter().cloned().collect();
        Spanned::new(m.at.span.clone(), headers)
    });
    let match_headers_regex = matched.filter(|m| !m.header_patterns.is_empty()).map(|m| {
        let headers: BTreeMap<String, String> = m.header_patterns.iter().cloned().collect();
        Spanned::new(m.at.span.clone(), headers)
    });
    let path = matched
        .filter(|m| m.path_exact)
        .and_then(|m| m.path_prefix.as_ref())
        .map(spanned);
    let sticky = rule.session.as_ref().map(|session| {
        let config = match &session.value {
            Session::Header(header) => StickyConfig {
                header: Some(header.clone()),
                cookie: None,
                set_cookie: false,
                seed: 0,
            },
            // The gateway issues the session cookie, as the Gateway API's
            // Cookie persistence does.
            Session::Cookie(cookie) => StickyConfig {
                header: None,
                cookie: cookie.clone(),
                set_cookie: true,
                seed: 0,
            },
        };
        Spanned::new(session.span.clone(), config)
    });
    Ok(RouteConfig {
        name,
        host,
        path_prefix: matched
            .filter(|m| !m.path_exact)
            .and_then(|m| m.path_prefix.as_ref())
            .map_or_else(|| Spanned::new(0..0, "/".to_owned()), spanned),
        path,
        match_method: matched.and_then(|m| m.method.as_ref()).map(spanned),
        match_headers_regex,
        baseline: None,
        timeout: rule.timeout.as_ref().map(|t| Dur(t.value)),
        versions: Spanned::new(refs.span.clone(), versions),
        shadows: Spanned::new(0..0, shadows),
        health_check: None,
        outlier_detection: None,
        rollout: None,
        match_headers,
        sticky,
        max_request_body_bytes: None,
        experiment: None,
    })
}

fn version(
    backend: &BackendRef,
    namespace: &str,
    service_address: &str,
) -> Result<VersionConfig, FieldError> {
    if backend.weight.value > MAX_WEIGHT {
        return Err(backend.weight.error(format!(
            "weight {} is above switchyard's {MAX_WEIGHT}: only the weights' ratio counts, \
             so divide them all by the same number",
            backend.weight.value
        )));
    }
    let at = backend.name.span.clone();
    Ok(VersionConfig {
        name: spanned(&backend.name),
        weight: spanned(&backend.weight),
        endpoints: Spanned::new(
            at.clone(),
            vec![Spanned::new(
                at,
                endpoint(backend, namespace, service_address),
            )],
        ),
        tls: false,
        ca_file: None,
        server_name: None,
        http2: false,
        max_requests: None,
        max_pending: None,
    })
}

/// `service_address` with the backend's name, namespace and port.
pub fn endpoint(backend: &BackendRef, namespace: &str, service_address: &str) -> String {
    service_address
        .replace("{name}", &backend.name.value)
        .replace(
            "{namespace}",
            backend.namespace.as_deref().unwrap_or(namespace),
        )
        .replace("{port}", &backend.port.to_string())
}

fn spanned<T: Clone>(at: &At<T>) -> Spanned<T> {
    Spanned::new(at.span.clone(), at.value.clone())
}
