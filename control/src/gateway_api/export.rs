//! The live routing table as HTTPRoutes: one document per route, with the
//! weights in force, for `GET /api/v1/export?format=gateway-api` and
//! `switchyard export --gateway-api`. An endpoint is turned back into a
//! backendRef through the same `service_address` the import fills in, and
//! a version whose endpoints it cannot express is an error, never a
//! guess. Route settings an HTTPRoute has no field for (health checks,
//! circuit breaking, experiments…) are listed in a comment at the top of
//! the route's document: they stay in switchyard's own config.

use std::fmt::Write as _;
use std::time::Duration;

use http::{Method, StatusCode};
use switchyard_proxy::{RouteSpec, ShadowSpec, TableHandle, TableSpec, Transport};

use super::types::{format_duration, API_VERSION, KIND};
use crate::config::Timeouts;

/// Why (part of) the table cannot be printed as HTTPRoutes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("no route '{0}': `switchyard ctl routes` lists them")]
    UnknownRoute(String),
    #[error(
        "route '{route}': {what} '{name}' cannot be written as a backendRef: {reason}; \
         export needs each version and shadow to be one endpoint that fits \
         [gateway_api] service_address ('{template}')"
    )]
    Endpoint {
        route: String,
        what: &'static str,
        name: String,
        template: String,
        reason: String,
    },
}

/// The answer to `GET /api/v1/export?format=gateway-api[&route=NAME]`:
/// `None` for any other request, else the YAML or the status and error to
/// answer with. (The admin API's types stay out of this module: the control
/// plane loads HTTPRoutes through it on reload, and the admin API depends
/// on the plane.)
pub fn answer(
    method: &Method,
    path: &str,
    query: Option<&str>,
    table: &TableHandle,
    service_address: &str,
) -> Option<Result<String, (StatusCode, String)>> {
    if *method != Method::GET || path.trim_end_matches('/') != "/api/v1/export" {
        return None;
    }
    let (mut format, mut route) = (None, None);
    for (key, value) in query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
    {
        match key {
            "format" => format = Some(value),
            "route" => route = Some(value),
            _ => {}
        }
    }
    if format != Some("gateway-api") {
        return Some(Err((
            StatusCode::BAD_REQUEST,
            "add ?format=gateway-api (the only export format)".into(),
        )));
    }
    Some(
        to_yaml(table.load().spec(), route, service_address).map_err(|error| {
            let status = match error {
                ExportError::UnknownRoute(_) => StatusCode::NOT_FOUND,
                ExportError::Endpoint { .. } => StatusCode::CONFLICT,
            };
            (status, error.to_string())
        }),
    )
}

/// Every route of `spec` (or only `route`) as HTTPRoute documents.
pub fn to_yaml(
    spec: &TableSpec,
    route: Option<&str>,
    service_address: &str,
) -> Result<String, ExportError> {
    let routes: Vec<&RouteSpec> = spec
        .routes
        .iter()
        .filter(|r| route.is_none() || route == Some(r.name.as_str()))
        .collect();
    if let (Some(name), true) = (route, routes.is_empty()) {
        return Err(ExportError::UnknownRoute(name.to_owned()));
    }
    let template = Template::parse(service_address);
    let mut out = String::new();
    for (i, route) in routes.into_iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        write_route(&mut out, route, &template)?;
    }
    Ok(out)
}

fn write_route(
    out: &mut String,
    route: &RouteSpec,
    template: &Template,
) -> Result<(), ExportError> {
    for kept in not_expressible(route) {
        let _ = writeln!(
            out,
            "# not expressible as an HTTPRoute, kept in switchyard's config: {kept}"
        );
    }
    let _ = writeln!(out, "apiVersion: {API_VERSION}\nkind: {KIND}\nmetadata:");
    let _ = writeln!(out, "  name: {}", scalar(&route.name));
    out.push_str("spec:\n");
    if let Some(host) = route.host.as_deref().filter(|h| !h.is_empty() && *h != "*") {
        let _ = writeln!(out, "  hostnames:\n  - {}", scalar(host));
    }
    out.push_str("  rules:\n");
    let mut first = "  - ";
    let mut line = |out: &mut String, text: &str| {
        let _ = writeln!(out, "{first}{text}");
        first = "    ";
    };
    let headers = route.match_headers.iter().map(|h| ("Exact", h));
    let patterns = route
        .match_headers_regex
        .iter()
        .map(|h| ("RegularExpression", h));
    let headers: Vec<_> = headers.chain(patterns).collect();
    if route.path_prefix != "/"
        || route.path_exact
        || route.match_method.is_some()
        || !headers.is_empty()
    {
        line(out, "matches:");
        let kind = if route.path_exact {
            "Exact"
        } else {
            "PathPrefix"
        };
        let _ = writeln!(
            out,
            "    - path:\n        type: {kind}\n        value: {}",
            scalar(&route.path_prefix)
        );
        if let Some(method) = &route.match_method {
            let _ = writeln!(
                out,
                "      method: {}",
                scalar(&method.to_ascii_uppercase())
            );
        }
        if !headers.is_empty() {
            out.push_str("      headers:\n");
            for (kind, (name, value)) in headers {
                let _ = writeln!(
                    out,
                    "      - type: {kind}\n        name: {}\n        value: {}",
                    scalar(name),
                    scalar(value)
                );
            }
        }
    }
    line(out, "backendRefs:");
    for version in &route.versions {
        let backend = template.backend(route, "version", &version.name, &version.endpoints)?;
        backend.write(out, "    - ", "      ");
        let _ = writeln!(out, "      weight: {}", version.weight);
    }
    if !route.shadows.is_empty() {
        out.push_str("    filters:\n");
        for shadow in &route.shadows {
            let backend = template.backend(route, "shadow", &shadow.name, &shadow.endpoints)?;
            out.push_str("    - type: RequestMirror\n      requestMirror:\n");
            backend.write(out, "        backendRef:\n          ", "          ");
            write_percent(out, shadow.percent);
        }
    }
    if let Some(sticky) = &route.sticky {
        match (&sticky.header, &sticky.cookie) {
            (Some(header), _) => {
                let _ = writeln!(
                    out,
                    "    sessionPersistence:\n      type: Header\n      sessionName: {}",
                    scalar(header)
                );
            }
            (None, cookie) => {
                out.push_str("    sessionPersistence:\n      type: Cookie\n");
                if let Some(cookie) = cookie {
                    let _ = writeln!(out, "      sessionName: {}", scalar(cookie));
                }
            }
        }
    }
    if route.timeout != default_timeout() {
        let _ = writeln!(
            out,
            "    timeouts:\n      backendRequest: {}",
            format_duration(route.timeout)
        );
    }
    Ok(())
}

/// A whole percentage as `percent`, anything finer as a fraction.
fn write_percent(out: &mut String, percent: f64) {
    if percent.fract() == 0.0 {
        let _ = writeln!(out, "        percent: {}", percent as u32);
    } else {
        let numerator = (percent * 10_000.0).round() as u64;
        let _ = writeln!(
            out,
            "        fraction:\n          numerator: {numerator}\n          denominator: 1000000"
        );
    }
}

fn default_timeout() -> Duration {
    Timeouts::default().upstream_response.0
}

/// The route's settings an HTTPRoute has no field for.
fn not_expressible(route: &RouteSpec) -> Vec<String> {
    let mut kept = Vec::new();
    let default_baseline = if route.versions.iter().any(|v| v.name == "stable") {
        "stable"
    } else {
        route.versions.first().map_or("", |v| v.name.as_str())
    };
    if route.baseline != default_baseline {
        kept.push(format!("baseline = {}", route.baseline));
    }
    if route.health_check.is_some() {
        kept.push("health_check".into());
    }
    if route.outlier.is_some() {
        kept.push("outlier_detection".into());
    }
    if let Some(bytes) = route.max_request_body_bytes {
        kept.push(format!("max_request_body_bytes = {bytes}"));
    }
    if route.experiment.is_some() {
        kept.push("experiment".into());
    }
    for version in &route.versions {
        if version.transport != Transport::default() {
            kept.push(format!("versions {}: tls / http2", version.name));
        }
        if version.breaker != Default::default() {
            kept.push(format!(
                "versions {}: max_requests / max_pending",
                version.name
            ));
        }
    }
    if let Some(sticky) = &route.sticky {
        if sticky.header.is_some() && sticky.cookie.is_some() {
            kept.push("sticky: the cookie besides the header".into());
        }
        if sticky.header.is_none() && !sticky.set_cookie {
            kept.push("sticky: set_cookie = false".into());
        }
        if sticky.seed != 0 {
            kept.push(format!("sticky: seed = {}", sticky.seed));
        }
    }
    for shadow in &route.shadows {
        let mut defaults = ShadowSpec::new(shadow.name.clone(), shadow.endpoints.clone());
        defaults.percent = shadow.percent;
        if *shadow != defaults {
            kept.push(format!(
                "shadows {}: methods, limits, timeout, strip_headers or compare",
                shadow.name
            ));
        }
    }
    kept
}

/// A backendRef as written.
struct Backend {
    name: String,
    namespace: Option<String>,
    port: u16,
}

impl Backend {
    fn write(&self, out: &mut String, first: &str, indent: &str) {
        let _ = writeln!(out, "{first}name: {}", scalar(&self.name));
        if let Some(namespace) = &self.namespace {
            let _ = writeln!(out, "{indent}namespace: {}", scalar(namespace));
        }
        let _ = writeln!(out, "{indent}port: {}", self.port);
    }
}

/// `service_address` split at its placeholders, to read an endpoint back.
struct Template {
    text: String,
    parts: Vec<Part>,
}

#[derive(Debug, PartialEq)]
enum Part {
    Literal(String),
    Name,
    Namespace,
    Port,
}

impl Template {
    fn parse(text: &str) -> Template {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let next = ["{name}", "{namespace}", "{port}"]
                .iter()
                .filter_map(|p| rest.find(p).map(|at| (at, *p)))
                .min();
            match next {
                Some((at, placeholder)) => {
                    if at > 0 {
                        parts.push(Part::Literal(rest[..at].to_owned()));
                    }
                    parts.push(match placeholder {
                        "{name}" => Part::Name,
                        "{namespace}" => Part::Namespace,
                        _ => Part::Port,
                    });
                    rest = &rest[at + placeholder.len()..];
                }
                None => {
                    parts.push(Part::Literal(rest.to_owned()));
                    rest = "";
                }
            }
        }
        Template {
            text: text.to_owned(),
            parts,
        }
    }

    /// The placeholders' values in `endpoint`, each placeholder ending at
    /// the first occurrence of the literal after it.
    fn read(&self, endpoint: &str) -> Option<[Option<String>; 3]> {
        let mut values: [Option<String>; 3] = Default::default();
        let mut rest = endpoint;
        for (i, part) in self.parts.iter().enumerate() {
            let slot = match part {
                Part::Literal(literal) => {
                    rest = rest.strip_prefix(literal.as_str())?;
                    continue;
                }
                Part::Name => 0,
                Part::Namespace => 1,
                Part::Port => 2,
            };
            let end = match self.parts.get(i + 1) {
                Some(Part::Literal(next)) => rest.find(next.as_str())?,
                Some(_) => return None,
                None => rest.len(),
            };
            if end == 0 {
                return None;
            }
            values[slot] = Some(rest[..end].to_owned());
            rest = &rest[end..];
        }
        rest.is_empty().then_some(values)
    }

    fn backend(
        &self,
        route: &RouteSpec,
        what: &'static str,
        name: &str,
        endpoints: &[String],
    ) -> Result<Backend, ExportError> {
        let fail = |reason: String| ExportError::Endpoint {
            route: route.name.clone(),
            what,
            name: name.to_owned(),
            template: self.text.clone(),
            reason,
        };
        let [endpoint] = endpoints else {
            return Err(fail(format!(
                "it has {} endpoints and a backendRef is one Service",
                endpoints.len()
            )));
        };
        let [found_name, namespace, port] = self
            .read(endpoint)
            .ok_or_else(|| fail(format!("its endpoint {endpoint} does not fit the template")))?;
        if let Some(found) = found_name.filter(|found| found != name) {
            return Err(fail(format!(
                "its endpoint names the Service '{found}', and a backendRef's name is the \
                 version's"
            )));
        }
        let port = port
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or_else(|| fail(format!("no port can be read from {endpoint}")))?;
        Ok(Backend {
            name: name.to_owned(),
            namespace: namespace.filter(|ns| ns != "default"),
            port,
        })
    }
}

/// A YAML scalar for `text`: plain when it cannot be read as anything but
/// that string, else double-quoted (JSON strings are YAML).
fn scalar(text: &str) -> String {
    let plain = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._/".contains(c))
        && text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/')
        && !["true", "false", "null", "yes", "no", "on", "off", "y", "n"]
            .contains(&text.to_ascii_lowercase().as_str());
    if plain {
        text.to_owned()
    } else {
        serde_json::to_string(text).unwrap_or_else(|_| format!("\"{text}\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_read_endpoints_back() {
        let cluster = Template::parse(crate::gateway_api::DEFAULT_SERVICE_ADDRESS);
        assert_eq!(
            cluster.read("web.prod.svc.cluster.local:8080"),
            Some([Some("web".into()), Some("prod".into()), Some("8080".into())])
        );
        assert_eq!(cluster.read("10.0.0.1:8080"), None);
        let local = Template::parse("127.0.0.1:{port}");
        assert_eq!(
            local.read("127.0.0.1:9001"),
            Some([None, None, Some("9001".into())])
        );
        assert_eq!(local.read("127.0.0.2:9001"), None);
    }

    #[test]
    fn scalars_quote_what_yaml_would_read_otherwise() {
        assert_eq!(scalar("web"), "web");
        assert_eq!(scalar("/api"), "/api");
        assert_eq!(scalar("1"), "\"1\"");
        assert_eq!(scalar("*.example.com"), "\"*.example.com\"");
        assert_eq!(scalar("yes"), "\"yes\"");
        assert_eq!(scalar("a b"), "\"a b\"");
    }
}
