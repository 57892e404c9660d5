//! The mapping both ways: the Gateway API's documented examples, every
//! refusal with its field and line, and round trips through the export.

use std::time::Duration;

use super::{config_from_yaml, to_yaml, GatewayApiConfig};
use crate::config::{Config, ConfigError};

const LOCAL: &str = "127.0.0.1:{port}";

fn local() -> GatewayApiConfig {
    GatewayApiConfig {
        service_address: LOCAL.into(),
        ..Default::default()
    }
}

fn load(yaml: &str) -> Config {
    config_from_yaml(yaml, "t.yaml", local()).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(yaml: &str) -> Vec<ConfigError> {
    config_from_yaml(yaml, "t.yaml", local())
        .expect_err("invalid")
        .errors
}

fn route(rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: web\n\
         spec:\n  rules:\n{rules}"
    )
}

/// The Gateway API's traffic splitting example (90/10).
pub(crate) const SPLIT: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: foo-route
  labels:
    gateway: prod-web-gw
spec:
  parentRefs:
  - name: prod-web
  hostnames:
  - foo.example.com
  rules:
  - backendRefs:
    - name: foo-v1
      port: 8080
      weight: 90
    - name: foo-v2
      port: 8080
      weight: 10
";

/// The Gateway API's header-matched canary example.
pub(crate) const CANARY: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: foo-route
spec:
  hostnames:
  - foo.example.com
  rules:
  - backendRefs:
    - name: foo-v1
      port: 8080
  - matches:
    - headers:
      - name: traffic
        value: test
    backendRefs:
    - name: foo-v2
      port: 8080
";

#[test]
fn traffic_splitting_maps_to_weighted_versions() {
    let spec = load(SPLIT).table_spec();
    let route = &spec.routes[0];
    assert_eq!(route.name, "foo-route");
    assert_eq!(route.host.as_deref(), Some("foo.example.com"));
    assert_eq!(route.path_prefix, "/");
    let versions: Vec<_> = route
        .versions
        .iter()
        .map(|v| (v.name.as_str(), v.weight, v.endpoints.clone()))
        .collect();
    assert_eq!(
        versions,
        [
            ("foo-v1", 90, vec!["127.0.0.1:8080".to_owned()]),
            ("foo-v2", 10, vec!["127.0.0.1:8080".to_owned()])
        ]
    );
    assert_eq!(route.baseline, "foo-v1");
}

#[test]
fn the_default_service_address_is_the_cluster_name() {
    let config = config_from_yaml(SPLIT, "t.yaml", GatewayApiConfig::default()).expect("valid");
    let endpoints = &config.table_spec().routes[0].versions[1].endpoints;
    assert_eq!(endpoints, &["foo-v2.default.svc.cluster.local:8080"]);
}

#[test]
fn header_canary_maps_to_one_route_per_rule() {
    let spec = load(CANARY).table_spec();
    let names: Vec<_> = spec.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["foo-route-0", "foo-route-1"]);
    assert!(spec.routes[0].match_headers.is_empty());
    assert_eq!(
        spec.routes[1].match_headers,
        [("traffic".to_owned(), "test".to_owned())]
    );
    assert_eq!(spec.routes[1].versions[0].weight, 1);
}

#[test]
fn mirror_session_timeouts_and_prefix() {
    let yaml = route(
        "  - matches:
    - path:
        type: PathPrefix
        value: /api
    backendRefs:
    - name: stable
      port: 9001
    filters:
    - type: RequestMirror
      requestMirror:
        backendRef:
          name: shadow
          port: 9003
        percent: 25
    - type: RequestMirror
      requestMirror:
        backendRef:
          name: other
          port: 9004
        fraction:
          numerator: 1
          denominator: 8
    sessionPersistence:
      sessionName: uid
      type: Cookie
    timeouts:
      request: 10s
      backendRequest: 1500ms
",
    );
    let spec = load(&yaml).table_spec();
    let route = &spec.routes[0];
    assert_eq!(route.path_prefix, "/api");
    let shadows: Vec<_> = route
        .shadows
        .iter()
        .map(|s| (s.name.as_str(), s.percent, s.endpoints[0].as_str()))
        .collect();
    assert_eq!(
        shadows,
        [
            ("shadow", 25.0, "127.0.0.1:9003"),
            ("other", 12.5, "127.0.0.1:9004")
        ]
    );
    let sticky = route.sticky.as_ref().expect("sticky");
    assert_eq!(
        (sticky.cookie.as_deref(), sticky.set_cookie),
        (Some("uid"), true)
    );
    assert_eq!(route.timeout, Duration::from_millis(1500));

    let header = yaml.replace("type: Cookie", "type: Header");
    let sticky = load(&header).table_spec().routes[0]
        .sticky
        .clone()
        .expect("sticky");
    assert_eq!(
        (sticky.header.as_deref(), sticky.cookie),
        (Some("uid"), None)
    );
}

fn assert_error(yaml: &str, path: &str, line: usize, says: &str) {
    let found = errors(yaml);
    assert!(
        found.iter().any(|e| e.path.ends_with(path)
            && e.position.map(|p| p.0) == Some(line)
            && e.message.contains(says)),
        "expected {path} at line {line} saying '{says}', got {found:#?}"
    );
}

#[test]
fn unsupported_fields_are_errors_with_field_and_line() {
    let base = "  - backendRefs:\n    - name: a\n      port: 1\n";
    // Line 7 is the first line of the rule.
    let rule = |extra: &str| route(&format!("{base}{extra}"));
    assert_error(
        &rule("    retry: {}\n"),
        "spec.rules[0].retry",
        10,
        "unsupported field `retry`",
    );
    assert_error(
        &rule("    filters:\n    - type: RequestHeaderModifier\n"),
        "spec.rules[0].filters[0].type",
        11,
        "RequestHeaderModifier is not supported",
    );
    assert_error(
        &rule("    matches:\n    - queryParams:\n      - name: a\n        value: b\n"),
        "spec.rules[0].matches[0].queryParams",
        12,
        "`queryParams` matches are not supported",
    );
    assert_error(
        &rule("    matches:\n    - path:\n        type: RegularExpression\n        value: /a.*\n"),
        "spec.rules[0].matches[0].path.type",
        12,
        "RegularExpression is not supported",
    );
    assert_error(
        &rule("    matches:\n    - headers:\n      - type: RegularExpression\n        name: x\n        value: \"(\"\n"),
        "spec.rules[0].matches[0].headers",
        11,
        "not a regular expression",
    );
    assert_error(
        &rule("    sessionPersistence:\n      idleTimeout: 1h\n"),
        "spec.rules[0].sessionPersistence.idleTimeout",
        11,
        "not supported",
    );
    let kind = SPLIT.replace("kind: HTTPRoute", "kind: GRPCRoute");
    assert_error(
        &kind,
        "document 1, HTTPRoute foo-route: kind",
        2,
        "only HTTPRoute",
    );
}

#[test]
fn weights_are_checked_as_the_gateway_api_does() {
    let weights = |a: &str, b: &str| {
        route(&format!(
            "  - backendRefs:\n    - name: a\n      port: 1\n      weight: {a}\n    - name: b\n      port: 2\n      weight: {b}\n"
        ))
    };
    assert_error(
        &weights("-1", "1"),
        "backendRefs[0].weight",
        10,
        "out of range",
    );
    assert_error(
        &weights("1", "1000001"),
        "backendRefs[1].weight",
        13,
        "out of range",
    );
    assert_error(
        &weights("1", "20000"),
        "backendRefs[1].weight",
        13,
        "divide them all",
    );
    assert_error(
        &weights("0", "0"),
        "spec.rules[0].backendRefs",
        8,
        "weighs 0",
    );
    assert_error(&weights("x", "1"), "backendRefs[0].weight", 10, "integer");
    let spec = load(&weights("0", "3")).table_spec();
    assert_eq!(spec.routes[0].versions[0].weight, 0);
}

#[test]
fn table_problems_point_into_the_yaml() {
    let twice =
        route("  - backendRefs:\n    - name: a\n      port: 1\n    - name: a\n      port: 2\n");
    let found = errors(&twice);
    assert!(
        found.iter().any(|e| e.path
            == "document 1, HTTPRoute web: spec.rules[0].backendRefs[1].name"
            && e.position.map(|p| p.0) == Some(10)),
        "{found:#?}"
    );
}

#[test]
fn table_problems_name_the_httproute_field() {
    use super::import::field_path;
    assert_eq!(
        field_path(1, 0, ".versions[2].weight"),
        "spec.rules[1].backendRefs[2].weight"
    );
    assert_eq!(
        field_path(0, 0, ".versions[0].endpoints[0]"),
        "spec.rules[0].backendRefs[0]"
    );
    assert_eq!(field_path(0, 0, ".versions"), "spec.rules[0].backendRefs");
    assert_eq!(
        field_path(0, 0, ".shadows[1].name"),
        "spec.rules[0].filters[1].requestMirror.backendRef"
    );
    assert_eq!(field_path(0, 0, ".host"), "spec.hostnames[0]");
    assert_eq!(
        field_path(2, 0, ".match_headers"),
        "spec.rules[2].matches[0].headers"
    );
    assert_eq!(field_path(0, 0, ".baseline"), "spec.rules[0]");
    let bad_header = route(
        "  - matches:\n    - headers:\n      - name: \"x y\"\n        value: \"1\"\n    backendRefs:\n    - name: a\n      port: 1\n",
    );
    let found = errors(&bad_header);
    assert_eq!(
        found[0].path, "document 1, HTTPRoute web: spec.rules[0].matches[0].headers",
        "{found:#?}"
    );
    assert_eq!(found[0].position.map(|p| p.0), Some(8), "{found:#?}");
}

#[test]
fn syntax_errors_and_empty_files_are_reported() {
    assert!(errors("a: [\n")[0].message.contains("not valid YAML"));
    assert!(errors("")[0].message.contains("no HTTPRoute"));
}

const TOML: &str = r#"
[[routes]]
name = "web"
host = "*.example.com"
path_prefix = "/api"
match_headers = { "x-beta" = "1" }
timeout = "5s"
  [[routes.versions]]
  name = "stable"
  weight = 75
  endpoints = ["127.0.0.1:9001"]
  [[routes.versions]]
  name = "canary"
  weight = 25
  endpoints = ["127.0.0.1:9002"]
  [[routes.shadows]]
  name = "dark"
  endpoints = ["127.0.0.1:9003"]
  percent = 12.5
  [routes.sticky]
  cookie = "uid"
  set_cookie = true
[[routes]]
name = "plain"
  [[routes.versions]]
  name = "v1"
  weight = 1
  endpoints = ["127.0.0.1:9004"]
"#;

#[test]
fn toml_to_export_to_load_gives_the_same_table() {
    let spec = Config::parse(TOML, "t.toml").expect("valid").table_spec();
    let yaml = to_yaml(&spec, None, LOCAL).expect("export");
    assert!(!yaml.contains("# not expressible"), "{yaml}");
    assert_eq!(load(&yaml).table_spec(), spec, "{yaml}");
}

#[test]
fn yaml_to_export_gives_equivalent_yaml() {
    for example in [SPLIT, CANARY] {
        let spec = load(example).table_spec();
        let yaml = to_yaml(&spec, None, LOCAL).expect("export");
        assert_eq!(load(&yaml).table_spec(), spec, "{yaml}");
        // And again: the export of an export is the same text.
        assert_eq!(to_yaml(&load(&yaml).table_spec(), None, LOCAL), Ok(yaml));
    }
}

#[test]
fn export_names_what_it_cannot_write() {
    let text = TOML.replace(
        "endpoints = [\"127.0.0.1:9004\"]",
        "endpoints = [\"127.0.0.1:9004\", \"127.0.0.1:9005\"]",
    );
    let spec = Config::parse(&text, "t.toml").expect("valid").table_spec();
    let error = to_yaml(&spec, None, LOCAL).expect_err("two endpoints");
    assert!(error.to_string().contains("version 'v1'"), "{error}");
    assert!(to_yaml(&spec, Some("web"), LOCAL).is_ok());
    assert!(to_yaml(&spec, Some("nope"), LOCAL).is_err());
    let error =
        to_yaml(&spec, Some("web"), super::DEFAULT_SERVICE_ADDRESS).expect_err("not a Service");
    assert!(error.to_string().contains("does not fit"), "{error}");

    let checked = TOML.replace(
        "[[routes]]\nname = \"plain\"\n",
        "[[routes]]\nname = \"plain\"\nmax_request_body_bytes = 10\n",
    );
    let spec = Config::parse(&checked, "t.toml")
        .expect("valid")
        .table_spec();
    let yaml = to_yaml(&spec, Some("plain"), LOCAL).expect("export");
    assert!(yaml.starts_with("# not expressible as an HTTPRoute, kept in switchyard's config: max_request_body_bytes = 10\n"), "{yaml}");
}

#[test]
fn toml_names_yaml_files_relative_to_itself() {
    let dir = std::env::temp_dir().join(format!("switchyard-gw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("routes.yaml"), CANARY).expect("write");
    let toml = "[gateway_api]\nfiles = [\"routes.yaml\"]\nservice_address = \"127.0.0.1:{port}\"\n";
    let path = dir.join("switchyard.toml");
    let config = super::parse_checked(&format!("{TOML}{toml}"), &path).expect("valid");
    let names: Vec<_> = config
        .routes
        .iter()
        .map(|r| r.name.get_ref().as_str())
        .collect();
    assert_eq!(names, ["web", "plain", "foo-route-0", "foo-route-1"]);

    std::fs::write(
        dir.join("routes.yaml"),
        CANARY.replace("port: 8080", "port: 0"),
    )
    .expect("write");
    let errors = super::parse_checked(toml, &path).expect_err("port 0");
    assert!(errors.source_name.ends_with("routes.yaml"), "{errors}");
    assert_eq!(errors.errors[0].position, Some((11, 13)), "{errors}");
    let missing = super::parse_checked(&toml.replace("routes.yaml", "gone.yaml"), &path);
    assert!(missing
        .expect_err("missing")
        .to_string()
        .contains("cannot read"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_cookie_session_without_a_name_gets_the_route_cookie() {
    let yaml = route(
        "  - backendRefs:\n    - name: a\n      port: 1\n    sessionPersistence:\n      type: Cookie\n",
    );
    let spec = load(&yaml).table_spec();
    let sticky = spec.routes[0].sticky.clone().expect("sticky");
    assert_eq!((sticky.cookie, sticky.set_cookie), (None, true));
    switchyard_proxy::RoutingTable::build(spec, 1).expect("a table");
}

#[test]
fn hostnames_and_matches_each_become_a_route_with_exact_paths_methods_and_patterns() {
    let text = SPLIT
        .replace("  - foo.example.com\n", "  - foo.example.com\n  - bar.example.com\n")
        .replace(
            "  - backendRefs:\n",
            "  - matches:\n    - path:\n        type: Exact\n        value: /login\n      method: POST\n    - headers:\n      - type: RegularExpression\n        name: x-user\n        value: beta-[0-9]+\n    backendRefs:\n",
        );
    let config = load(&text);
    let spec = config.table_spec();
    let names: Vec<&str> = spec.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "foo-route-h0-m0",
            "foo-route-h0-m1",
            "foo-route-h1-m0",
            "foo-route-h1-m1"
        ]
    );
    let login = &spec.routes[0];
    assert_eq!(
        (
            login.host.as_deref(),
            login.path_prefix.as_str(),
            login.path_exact
        ),
        (Some("foo.example.com"), "/login", true)
    );
    assert_eq!(login.match_method.as_deref(), Some("POST"));
    let beta = &spec.routes[3];
    assert_eq!(beta.host.as_deref(), Some("bar.example.com"));
    assert_eq!(
        beta.match_headers_regex,
        [("x-user".to_owned(), "beta-[0-9]+".to_owned())]
    );
    assert!(!beta.path_exact);
    switchyard_proxy::RoutingTable::build(spec, 1).expect("table");
}
