//! Matches arbitrary requests against a routing table with exact, wildcard
//! and any-host routes, nested path prefixes, exact paths, methods, header
//! values and header expressions, the way the request path does
//! (`request_host`, `find_request`, then the version pick with its override
//! header and sticky key). Nothing may panic, and the route found must be
//! the one a plain reading of the rules picks: among the routes whose host,
//! path, method and headers all match, the most specific host, then the
//! longest path, an exact path before a prefix, a method before none, then
//! the most header matches.
//!
//! Input: lines of text: the method, the URI, then `name: value` headers;
//! requests the `http` crate refuses are skipped.
#![no_main]

use std::sync::OnceLock;

use http::header::{HeaderName, HeaderValue};
use http::Request;
use libfuzzer_sys::fuzz_target;
use switchyard_control::Config;
use switchyard_proxy::route::request_host;
use switchyard_proxy::{select, RouteSpec, RoutingTable};

const CONFIG: &str = r#"
[proxy]
version_override = true
override_header = "x-switchyard-version"
override_secret = "s3cret"

[[routes]]
name = "shop"
host = "shop.example.com"
  [[routes.versions]]
  name = "stable"
  weight = 90
  endpoints = ["127.0.0.1:9001"]
  [[routes.versions]]
  name = "canary"
  weight = 10
  endpoints = ["127.0.0.1:9002"]

[[routes]]
name = "shop-api"
host = "shop.example.com"
path_prefix = "/api/"
  [routes.sticky]
  header = "x-user-id"
  [[routes.versions]]
  name = "stable"
  weight = 50
  endpoints = ["127.0.0.1:9001"]
  [[routes.versions]]
  name = "canary"
  weight = 50
  endpoints = ["127.0.0.1:9002"]

[[routes]]
name = "shop-api-beta"
host = "shop.example.com"
path_prefix = "/api/"
match_headers = { "x-beta" = "1" }
  [[routes.versions]]
  name = "beta"
  weight = 1
  endpoints = ["127.0.0.1:9003"]

[[routes]]
name = "wildcard"
host = "*.example.com"
  [routes.sticky]
  cookie = "uid"
  set_cookie = true
  [[routes.versions]]
  name = "stable"
  weight = 1
  endpoints = ["127.0.0.1:9001"]
  [[routes.versions]]
  name = "canary"
  weight = 1
  endpoints = ["127.0.0.1:9002"]

[[routes]]
name = "wildcard-eu"
host = "*.eu.example.com"
path_prefix = "/"
  [[routes.versions]]
  name = "stable"
  weight = 1
  endpoints = ["127.0.0.1:9001"]

[[routes]]
name = "static"
host = "*"
path_prefix = "/static/"
  [[routes.versions]]
  name = "stable"
  weight = 1
  endpoints = ["127.0.0.1:9001"]

[[routes]]
name = "qa"
path_prefix = "/"
match_headers = { "X-Team" = "qa", "x-beta" = "1" }
  [[routes.versions]]
  name = "stable"
  weight = 1
  endpoints = ["127.0.0.1:9001"]

[[routes]]
name = "login"
host = "shop.example.com"
path = "/api/login"
match_method = "POST"
  [[routes.versions]]
  name = "stable"
  weight = 1
  endpoints = ["127.0.0.1:9001"]

[[routes]]
name = "api-users"
host = "shop.example.com"
path_prefix = "/api/"
match_headers_regex = { "x-user" = "beta-[0-9]+" }
  [[routes.versions]]
  name = "stable"
  weight = 1
  endpoints = ["127.0.0.1:9001"]

[[routes]]
name = "other"
host = "Other.Test"
path_prefix = "/x"
  [[routes.versions]]
  name = "stable"
  weight = 0
  endpoints = ["127.0.0.1:9001"]
  [[routes.versions]]
  name = "canary"
  weight = 1
  endpoints = ["127.0.0.1:9002"]
"#;

fn table() -> &'static RoutingTable {
    static TABLE: OnceLock<RoutingTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let config = Config::parse(CONFIG, "fuzz.toml").expect("the fixed config is valid");
        RoutingTable::build(config.table_spec(), 1).expect("the fixed config builds")
    })
}

/// The rules as the README states them, over the spec (config order).
fn expected<'a>(
    routes: &'a [RouteSpec],
    host: &str,
    method: &http::Method,
    path: &str,
    headers: &http::HeaderMap,
) -> Option<&'a RouteSpec> {
    let host_rank = |route: &RouteSpec| -> Option<(u8, usize)> {
        let pattern = route.host.as_deref().unwrap_or("*").to_ascii_lowercase();
        if pattern == "*" {
            return Some((0, 0));
        }
        if let Some(domain) = pattern.strip_prefix('*') {
            let subdomain = host.strip_suffix(domain)?;
            return (!subdomain.is_empty()).then_some((1, domain.len()));
        }
        (pattern == host).then_some((2, 0))
    };
    let headers_match = |route: &RouteSpec| {
        route.match_headers.iter().all(|(name, value)| {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("a valid name");
            headers
                .get_all(name)
                .iter()
                .any(|v| v.as_bytes() == value.as_bytes())
        }) && route.match_headers_regex.iter().all(|(name, pattern)| {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("a valid name");
            let whole =
                regex::bytes::Regex::new(&format!("^(?:{pattern})$")).expect("a valid pattern");
            headers
                .get_all(name)
                .iter()
                .any(|v| whole.is_match(v.as_bytes()))
        })
    };
    let path_matches = |route: &RouteSpec| {
        if route.path_exact {
            path == route.path_prefix
        } else {
            path.starts_with(&route.path_prefix)
        }
    };
    let method_matches = |route: &RouteSpec| {
        route
            .match_method
            .as_deref()
            .is_none_or(|m| m.to_ascii_uppercase() == method.as_str())
    };
    routes
        .iter()
        .filter(|route| path_matches(route) && method_matches(route) && headers_match(route))
        .filter_map(|route| {
            let (rank, suffix) = host_rank(route)?;
            Some((
                (
                    rank,
                    suffix,
                    route.path_prefix.len(),
                    route.path_exact,
                    route.match_method.is_some(),
                    route.match_headers.len() + route.match_headers_regex.len(),
                ),
                route,
            ))
        })
        // The first of equals in config order: `max_by_key` keeps the last.
        .rev()
        .max_by_key(|(key, _)| *key)
        .map(|(_, route)| route)
}

fn request(data: &[u8]) -> Option<Request<()>> {
    let text = std::str::from_utf8(data).ok()?;
    let mut lines = text.split('\n');
    let mut builder = Request::builder().method(lines.next()?).uri(lines.next()?);
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(value.trim_start().as_bytes()).ok()?;
        builder = builder.header(name, value);
    }
    builder.body(()).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some(mut req) = request(data) else {
        return;
    };
    let table = table();
    let host = request_host(&req).unwrap_or_default();
    let path = req.uri().path().to_owned();
    let found = table.find_request(&host, req.method(), &path, req.headers());
    let want = expected(
        &table.spec().routes,
        &host,
        req.method(),
        &path,
        req.headers(),
    );
    assert_eq!(
        found.map(|route| &*route.name),
        want.map(|route| route.name.as_str()),
        "host {host:?}, path {path:?}, headers {:?}",
        req.headers()
    );
    let Some(route) = found else {
        return;
    };
    let override_header = table.settings().version_override.as_ref();
    if let Ok(choice) = select::choose(route, override_header, req.headers_mut()) {
        assert!(
            route
                .versions
                .iter()
                .any(|v| std::ptr::eq(v, choice.version)),
            "picked a version of another route"
        );
    }
});
