//! The part of the Gateway API's `HTTPRoute` (`gateway.networking.k8s.io/v1`)
//! that switchyard honours, read from YAML against the published CRD schema
//! by hand rather than through the `gateway-api` crate, which would bring
//! kube and k8s-openapi into the control plane for a handful of fields.
//! Every field the schema has and switchyard cannot honour is refused here
//! with its path and position; values are checked as the CRD does (weights
//! 0 to 1,000,000, ports 1 to 65535, percentages 0 to 100, GEP-2257
//! durations).

use std::time::Duration;

use super::yaml::{FieldError, Fields, Node};

pub const API_VERSION: &str = "gateway.networking.k8s.io/v1";
pub const KIND: &str = "HTTPRoute";
/// The CRD's upper bound for `backendRefs[].weight`.
pub const MAX_GATEWAY_WEIGHT: i64 = 1_000_000;

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct At<T> {
    pub value: T,
    pub path: String,
    pub position: (usize, usize),
    /// Byte range in the file.
    pub span: std::ops::Range<usize>,
}

impl<T> At<T> {
    fn new(node: &Node<'_>, value: T) -> At<T> {
        At {
            value,
            path: node.path(),
            position: node.position(),
            span: node.span(),
        }
    }

    pub fn error(&self, message: impl Into<String>) -> FieldError {
        FieldError {
            path: self.path.clone(),
            position: Some(self.position),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpRoute {
    pub name: At<String>,
    /// `metadata.namespace`, `default` when absent.
    pub namespace: String,
    pub hostnames: Vec<At<String>>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub at: At<()>,
    pub matches: Vec<Match>,
    pub backend_refs: At<Vec<BackendRef>>,
    pub mirrors: Vec<Mirror>,
    pub session: Option<At<Session>>,
    /// `timeouts.backendRequest`, else `timeouts.request`.
    pub timeout: Option<At<Duration>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub at: At<()>,
    /// The path value (`/` when the match has none).
    pub path_prefix: Option<At<String>>,
    /// `path.type: Exact`.
    pub path_exact: bool,
    /// `Exact` header matches, in the order written.
    pub headers: Vec<(String, String)>,
    /// `RegularExpression` header matches.
    pub header_patterns: Vec<(String, String)>,
    pub method: Option<At<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackendRef {
    pub name: At<String>,
    pub namespace: Option<String>,
    pub port: u16,
    pub weight: At<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    pub backend: BackendRef,
    pub percent: At<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Session {
    Header(String),
    Cookie(Option<String>),
}

/// `metadata.name` as written, to name the document in its errors even
/// when it fails to read.
pub fn document_name(doc: &Node<'_>) -> Option<String> {
    let metadata = doc.lookup("metadata")?;
    let name = metadata.lookup("name")?;
    name.str().ok().map(str::to_owned)
}

/// Reads one document; `Ok(None)` for an empty document.
pub fn read_route(doc: &Node<'_>) -> Result<Option<HttpRoute>, FieldError> {
    if doc.is_null() {
        return Ok(None);
    }
    let top = doc.fields(&["apiVersion", "kind", "metadata", "spec", "status"])?;
    let api_version = top.required("apiVersion")?;
    let kind = top.required("kind")?;
    if kind.str()? != KIND {
        return Err(kind.error(format!(
            "switchyard reads only {KIND} documents, not {}: keep other kinds in other files",
            kind.str()?
        )));
    }
    if api_version.str()? != API_VERSION {
        return Err(api_version.error(format!(
            "must be {API_VERSION} (the HTTPRoute version switchyard maps)"
        )));
    }
    let metadata = top.required("metadata")?;
    let meta = metadata.fields(&[
        "name",
        "namespace",
        "labels",
        "annotations",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "managedFields",
        "finalizers",
        "ownerReferences",
    ])?;
    let name = meta.required("name")?;
    let name = At::new(&name, name.str()?.to_owned());
    let namespace = match meta.get("namespace") {
        Some(ns) => ns.str()?.to_owned(),
        None => "default".to_owned(),
    };
    let spec = top.required("spec")?;
    // parentRefs attach the route to a Gateway; the switchyard listener the
    // file is loaded into is that Gateway, so they are read past.
    let spec = spec.fields(&["parentRefs", "hostnames", "rules"])?;
    let hostnames = match spec.get("hostnames") {
        Some(list) => list
            .items()?
            .iter()
            .map(|h| Ok(At::new(h, h.str()?.to_owned())))
            .collect::<Result<_, FieldError>>()?,
        None => Vec::new(),
    };
    let rules_node = spec.get("rules");
    let rules = match &rules_node {
        Some(list) => list
            .items()?
            .iter()
            .map(read_rule)
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    if rules.is_empty() {
        return Err(spec
            .node()
            .error("`rules` is empty: add at least one rule with backendRefs"));
    }
    Ok(Some(HttpRoute {
        name,
        namespace,
        hostnames,
        rules,
    }))
}

fn read_rule(node: &Node<'_>) -> Result<Rule, FieldError> {
    let fields = node.fields(&[
        "name",
        "matches",
        "backendRefs",
        "filters",
        "sessionPersistence",
        "timeouts",
    ])?;
    let matches = match fields.get("matches") {
        Some(list) => list
            .items()?
            .iter()
            .map(read_match)
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let backend_refs = match fields.get("backendRefs") {
        Some(list) => {
            let refs = list
                .items()?
                .iter()
                .map(|r| read_backend(r, true))
                .collect::<Result<_, _>>()?;
            At::new(&list, refs)
        }
        None => At::new(node, Vec::new()),
    };
    let mut mirrors = Vec::new();
    if let Some(list) = fields.get("filters") {
        for filter in list.items()? {
            mirrors.push(read_filter(&filter)?);
        }
    }
    let session = match fields.get("sessionPersistence") {
        Some(node) => Some(At::new(&node, read_session(&node)?)),
        None => None,
    };
    let timeout = match fields.get("timeouts") {
        Some(node) => read_timeouts(&node)?,
        None => None,
    };
    Ok(Rule {
        at: At::new(node, ()),
        matches,
        backend_refs,
        mirrors,
        session,
        timeout,
    })
}

fn read_match(node: &Node<'_>) -> Result<Match, FieldError> {
    let fields = node.fields(&["path", "headers", "queryParams", "method"])?;
    if let Some(at) = fields.get("queryParams") {
        return Err(at.error(
            "switchyard routes by host, path, method and headers; `queryParams` matches \
             are not supported: remove it",
        ));
    }
    let method = match fields.get("method") {
        Some(method) => Some(At::new(&method, method.str()?.to_owned())),
        None => None,
    };
    let mut path_exact = false;
    let path_prefix = match fields.get("path") {
        Some(path) => {
            let path_fields = path.fields(&["type", "value"])?;
            let kind = match path_fields.get("type") {
                Some(kind) => Some((kind, kind.str()?)),
                None => None,
            };
            match kind {
                None | Some((_, "PathPrefix")) => {}
                Some((_, "Exact")) => path_exact = true,
                Some((at, kind)) => {
                    return Err(at.error(format!(
                        "path match type {kind} is not supported: use PathPrefix or Exact"
                    )))
                }
            }
            match path_fields.get("value") {
                Some(value) => Some(At::new(&value, value.str()?.to_owned())),
                None => Some(At::new(&path, "/".to_owned())),
            }
        }
        None => None,
    };
    let mut headers = Vec::new();
    let mut header_patterns = Vec::new();
    if let Some(list) = fields.get("headers") {
        for header in list.items()? {
            let header_fields = header.fields(&["type", "name", "value"])?;
            let regex = match header_fields.get("type") {
                None => false,
                Some(kind) => match kind.str()? {
                    "Exact" => false,
                    "RegularExpression" => true,
                    other => {
                        return Err(kind.error(format!(
                            "header match type {other} is not supported: use Exact or \
                             RegularExpression"
                        )))
                    }
                },
            };
            let name = header_fields.required("name")?.str()?.to_owned();
            let value = header_fields.required("value")?.text()?;
            if regex {
                header_patterns.push((name, value));
            } else {
                headers.push((name, value));
            }
        }
    }
    Ok(Match {
        at: At::new(node, ()),
        path_prefix,
        path_exact,
        headers,
        header_patterns,
        method,
    })
}

fn read_backend(node: &Node<'_>, weighted: bool) -> Result<BackendRef, FieldError> {
    let mut keys = vec!["name", "namespace", "port", "group", "kind"];
    if weighted {
        keys.push("weight");
        keys.push("filters");
    }
    let fields = node.fields(&keys)?;
    check_service(&fields)?;
    if let Some(filters) = fields.get("filters") {
        if !filters.items()?.is_empty() {
            return Err(filters.error(
                "filters on a backendRef are not supported: switchyard forwards requests \
                 unchanged; remove them",
            ));
        }
    }
    let name = fields.required("name")?;
    let name = At::new(&name, name.str()?.to_owned());
    let namespace = match fields.get("namespace") {
        Some(ns) => Some(ns.str()?.to_owned()),
        None => None,
    };
    let port_node = fields.required("port")?;
    let port = u16::try_from(port_node.int()?)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| port_node.error("a port is 1 to 65535"))?;
    let weight = match fields.get("weight") {
        Some(w) => {
            let value = w.int()?;
            if !(0..=MAX_GATEWAY_WEIGHT).contains(&value) {
                return Err(w.error(format!(
                    "weight {value} is out of range: the Gateway API allows 0 to \
                     {MAX_GATEWAY_WEIGHT}"
                )));
            }
            // In range of u32 by the check above.
            At::new(&w, u32::try_from(value).unwrap_or(u32::MAX))
        }
        None => At::new(node, 1),
    };
    Ok(BackendRef {
        name,
        namespace,
        port,
        weight,
    })
}

/// `group` and `kind` default to a core Service, the only backend a
/// service address can be made from.
fn check_service(fields: &Fields<'_>) -> Result<(), FieldError> {
    if let Some(group) = fields.get("group") {
        if !group.text()?.is_empty() {
            return Err(group.error(
                "only Services (the core group \"\") can be backends: switchyard reaches \
                 them at [gateway_api] service_address",
            ));
        }
    }
    if let Some(kind) = fields.get("kind") {
        if kind.str()? != "Service" {
            return Err(kind.error(format!(
                "backend kind {} is not supported: only Service",
                kind.str()?
            )));
        }
    }
    Ok(())
}

fn read_filter(node: &Node<'_>) -> Result<Mirror, FieldError> {
    let fields = node.fields(&[
        "type",
        "requestMirror",
        "requestHeaderModifier",
        "responseHeaderModifier",
        "requestRedirect",
        "urlRewrite",
        "extensionRef",
        "cors",
    ])?;
    let kind = fields.required("type")?;
    if kind.str()? != "RequestMirror" {
        return Err(kind.error(format!(
            "filter type {} is not supported: switchyard forwards requests unchanged and \
             supports RequestMirror only",
            kind.str()?
        )));
    }
    let mirror = fields.required("requestMirror")?;
    let mirror_fields = mirror.fields(&["backendRef", "percent", "fraction"])?;
    let backend = read_backend(&mirror_fields.required("backendRef")?, false)?;
    let percent = match (mirror_fields.get("percent"), mirror_fields.get("fraction")) {
        (Some(p), Some(_)) => {
            return Err(p.error("set `percent` or `fraction`, not both"));
        }
        (Some(p), None) => {
            let value = p.int()?;
            if !(0..=100).contains(&value) {
                return Err(p.error(format!("percent {value} is not 0 to 100")));
            }
            At::new(&p, value as f64)
        }
        (None, Some(f)) => {
            let fraction = f.fields(&["numerator", "denominator"])?;
            let numerator = fraction.required("numerator")?.int()?;
            let denominator = match fraction.get("denominator") {
                Some(d) => d.int()?,
                None => 100,
            };
            if denominator < 1 || numerator < 0 || numerator > denominator {
                return Err(f.error(format!(
                    "fraction {numerator}/{denominator}: the numerator must be 0 to the \
                     denominator, and the denominator at least 1"
                )));
            }
            At::new(&f, numerator as f64 * 100.0 / denominator as f64)
        }
        (None, None) => At::new(&mirror, 100.0),
    };
    Ok(Mirror { backend, percent })
}

fn read_session(node: &Node<'_>) -> Result<Session, FieldError> {
    let fields = node.fields(&[
        "type",
        "sessionName",
        "absoluteTimeout",
        "idleTimeout",
        "cookieConfig",
    ])?;
    for unsupported in ["absoluteTimeout", "idleTimeout", "cookieConfig"] {
        if let Some(at) = fields.get(unsupported) {
            return Err(at.error(format!(
                "`{unsupported}` is not supported: switchyard's sessions never expire (the \
                 key maps to a version for as long as the weights stay); remove it"
            )));
        }
    }
    let name = match fields.get("sessionName") {
        Some(n) => Some(n.str()?.to_owned()),
        None => None,
    };
    let kind = match fields.get("type") {
        Some(kind) => kind.str()?.to_owned(),
        None => "Cookie".to_owned(),
    };
    match (kind.as_str(), name) {
        ("Cookie", name) => Ok(Session::Cookie(name)),
        ("Header", Some(name)) => Ok(Session::Header(name)),
        ("Header", None) => {
            Err(node.error("a Header session needs `sessionName`, the header carrying the key"))
        }
        (other, _) => Err(fields.get("type").unwrap_or(*node).error(format!(
            "session type {other} is not supported: Cookie or Header"
        ))),
    }
}

fn read_timeouts(node: &Node<'_>) -> Result<Option<At<Duration>>, FieldError> {
    let fields = node.fields(&["request", "backendRequest"])?;
    let mut chosen = None;
    // The data plane's route timeout bounds the wait for the backend's
    // response, which is what backendRequest means; request bounds more,
    // so it stands in only when backendRequest is absent.
    for key in ["request", "backendRequest"] {
        if let Some(at) = fields.get(key) {
            let text = at.str()?;
            let duration = parse_duration(text).map_err(|e| at.error(e))?;
            if duration.is_zero() {
                return Err(at.error(
                    "0s (no timeout) is not supported: switchyard always bounds the wait \
                     for a backend; give a duration",
                ));
            }
            chosen = Some(At::new(&at, duration));
        }
    }
    Ok(chosen)
}

/// A GEP-2257 duration: one to four `<number><unit>` parts, units h, m, s
/// and ms, e.g. `1h30m`, `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "'{text}' is not a Gateway API duration: write e.g. \"10s\", \"500ms\" or \"1m30s\""
        )
    };
    let mut total = Duration::ZERO;
    let mut rest = text;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, millis) = if rest.starts_with("ms") {
            ("ms", 1)
        } else if rest.starts_with('h') {
            ("h", 3_600_000)
        } else if rest.starts_with('m') {
            ("m", 60_000)
        } else if rest.starts_with('s') {
            ("s", 1_000)
        } else {
            return Err(bad());
        };
        rest = &rest[unit.len()..];
        total += Duration::from_millis(number * millis);
        parts += 1;
    }
    if parts == 0 || parts > 4 {
        return Err(bad());
    }
    Ok(total)
}

/// The GEP-2257 form of a duration (whole milliseconds).
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    match millis {
        m if m % 3_600_000 == 0 && m > 0 => format!("{}h", m / 3_600_000),
        m if m % 60_000 == 0 && m > 0 => format!("{}m", m / 60_000),
        m if m % 1_000 == 0 => format!("{}s", m / 1_000),
        m => format!("{m}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_gep_2257() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "10", "1.5s", "s", "123456s", "1h1h1h1h1h", "10 s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for d in [
            Duration::from_millis(1500),
            Duration::from_secs(120),
            Duration::from_secs(7200),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
