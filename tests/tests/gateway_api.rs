//! Gateway API HTTPRoutes as config, end to end: the Gateway API's own
//! examples (traffic splitting 90/10, a header-matched canary, request
//! mirroring at 25 %, cookie session persistence) loaded from YAML that a
//! TOML config names, routed and split by the real proxy to real backends;
//! a changed YAML file applied by a reload; the live table exported as
//! HTTPRoutes through the admin API and loaded back to the same table;
//! and unsupported fields refused with their path and line; exact paths,
//! methods, regular-expression headers, several matches and hostnames
//! routed as the Gateway API's precedence says.
//!
//! The examples are the documented ones with each `port: 8080` replaced by
//! the port of the test backend standing in for that Service, reached at
//! `service_address = "127.0.0.1:{port}"`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use http::{Method, Request};
use switchyard_control::gateway_api::{self, GatewayApiConfig};
use switchyard_control::{Config, StartOptions};
use switchyard_tests::admin::AdminClient;
use switchyard_tests::*;

const HOST: &str = "foo.example.com";

/// The traffic splitting example: 90 % to foo-v1, 10 % to foo-v2.
const SPLIT: &str = "\
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
      port: {foo-v1}
      weight: 90
    - name: foo-v2
      port: {foo-v2}
      weight: 10
";

/// The header-matched canary example: `traffic: test` goes to foo-v2.
const CANARY: &str = "\
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
      port: {foo-v1}
  - matches:
    - headers:
      - name: traffic
        value: test
    backendRefs:
    - name: foo-v2
      port: {foo-v2}
";

/// The request mirroring example, sampled at 25 %.
const MIRROR: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: http-filter-mirror
spec:
  parentRefs:
  - name: example-gateway
  hostnames:
  - foo.example.com
  rules:
  - backendRefs:
    - name: foo-v1
      port: {foo-v1}
    filters:
    - type: RequestMirror
      requestMirror:
        backendRef:
          name: foo-v2
          port: {foo-v2}
        percent: 25
";

/// The session persistence example (GEP-1619): a cookie named
/// foo-session keeps each client on one backend.
const SESSION: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: foo-route
spec:
  parentRefs:
  - name: foo-gateway
  hostnames:
  - foo.example.com
  rules:
  - backendRefs:
    - name: foo-v1
      port: {foo-v1}
      weight: 50
    - name: foo-v2
      port: {foo-v2}
      weight: 50
    sessionPersistence:
      sessionName: foo-session
      type: Cookie
";

/// `yaml` with each `{name}` placeholder replaced by that backend's port.
fn with_ports(yaml: &str, backends: &[(&str, &Backend)]) -> String {
    backends
        .iter()
        .fold(yaml.to_owned(), |text, (name, backend)| {
            let port = backend
                .endpoint()
                .rsplit(':')
                .next()
                .expect("port")
                .to_owned();
            text.replace(&format!("{{{name}}}"), &port)
        })
}

/// Writes `routes.yaml` and a TOML config naming it, loads them as
/// `switchyard run --config` does and starts the proxy (the files watched
/// when `watch`).
async fn start_watched(dir: &Path, yaml: &str, watch: bool) -> TestProxy {
    std::fs::write(dir.join("routes.yaml"), yaml).expect("write routes.yaml");
    let toml = config(
        "[gateway_api]\nfiles = [\"routes.yaml\"]\nservice_address = \"127.0.0.1:{port}\"\n",
    );
    let path = dir.join("switchyard.toml");
    std::fs::write(&path, &toml).expect("write switchyard.toml");
    let config = gateway_api::load(&path).unwrap_or_else(|e| panic!("{e}\n---\n{yaml}"));
    let options = StartOptions {
        config_path: Some(path),
        config_text: Some(toml),
        admin_token: None,
        watch,
    };
    let running = bounded(
        Duration::from_secs(10),
        "starting the proxy",
        switchyard_control::start_with(&config, options),
    )
    .await
    .unwrap_or_else(|e| panic!("proxy did not start: {e}"));
    TestProxy {
        running,
        client: client(),
    }
}

async fn start_from_yaml(dir: &Path, yaml: &str) -> TestProxy {
    start_watched(dir, yaml, false).await
}

/// An example served: backends foo-v1 and foo-v2, the proxy started from
/// `yaml` (with their ports) in a fresh directory named `name`.
struct Example {
    v1: Backend,
    v2: Backend,
    dir: std::path::PathBuf,
    proxy: TestProxy,
}

async fn example(name: &str, yaml: &str) -> Example {
    let v1 = backend("foo-v1").start().await;
    let v2 = backend("foo-v2").start().await;
    let dir = temp_dir(name);
    let proxy = start_from_yaml(&dir, &with_ports(yaml, &[("foo-v1", &v1), ("foo-v2", &v2)])).await;
    Example { v1, v2, dir, proxy }
}

/// GET / with Host `host` and `headers`.
async fn get_as(proxy: &TestProxy, host: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(proxy.url("/")).header("host", host);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(&proxy.client, req.body(empty()).expect("request"))
        .await
        .expect("request through the proxy")
}

/// `total` GETs with Host foo.example.com and `headers` from 4 clients,
/// all of which must be answered 200.
async fn many(proxy: &TestProxy, total: usize, headers: &[(&str, &str)]) -> Vec<Reply> {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    let replies = load_with(proxy, "/", total, 4, move |mut req| {
        req = req.header("host", HOST);
        for (name, value) in &headers {
            req = req.header(name, value);
        }
        req
    })
    .await;
    assert_eq!(replies.len(), total);
    assert!(replies.iter().all(|r| r.status == 200), "all answered");
    replies
}

fn share(counts: &BTreeMap<String, usize>, version: &str, total: usize) -> f64 {
    counts.get(version).copied().unwrap_or(0) as f64 * 100.0 / total as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_splitting_example_splits_ninety_ten() {
    let Example {
        v1: _v1,
        v2: _v2,
        dir,
        proxy,
    } = example("gw-split", SPLIT).await;
    let total = 2_000;
    let replies = bounded(
        Duration::from_secs(120),
        "split load",
        many(&proxy, total, &[]),
    )
    .await;
    let counts = count_by(&replies, BACKEND_HEADER);
    for (version, percent) in [("foo-v1", 90.0), ("foo-v2", 10.0)] {
        let got = share(&counts, version, total);
        assert!(
            (got - percent).abs() <= 1.0,
            "{version}: {got}% ({counts:?})"
        );
    }
    // The route is for its hostname only.
    assert_eq!(get_as(&proxy, "bar.example.com", &[]).await.status, 404);
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_matched_canary_example_routes_by_header() {
    let Example { v1, v2, dir, proxy } = example("gw-canary", CANARY).await;
    let tested = many(&proxy, 100, &[("traffic", "test")]).await;
    assert_eq!(count_by(&tested, BACKEND_HEADER).get("foo-v2"), Some(&100));
    let plain = many(&proxy, 100, &[("traffic", "other")]).await;
    assert_eq!(count_by(&plain, BACKEND_HEADER).get("foo-v1"), Some(&100));
    assert_eq!((v1.hits(), v2.hits()), (100, 100));
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_mirroring_example_copies_a_quarter() {
    let Example {
        v1: _v1,
        v2,
        dir,
        proxy,
    } = example("gw-mirror", MIRROR).await;
    let total = 1_000;
    let replies = bounded(
        Duration::from_secs(120),
        "mirror load",
        many(&proxy, total, &[]),
    )
    .await;
    // Clients only ever see the primary.
    assert_eq!(
        count_by(&replies, BACKEND_HEADER).get("foo-v1"),
        Some(&total)
    );
    // Every request's copy decided (sent or dropped) and none still on
    // its way: then the mirror has seen every copy it will get.
    let admin = AdminClient::new(proxy.running.admin_addr, None);
    let shadow = eventually(Duration::from_secs(20), "every copy settled", || async {
        let body = admin
            .call(Method::GET, "/api/v1/shadows", None, None)
            .await
            .json();
        let shadow = body["shadows"][0].clone();
        let decided =
            shadow["copied"].as_u64().unwrap_or(0) + shadow["dropped"].as_u64().unwrap_or(0);
        (decided == total as u64 && shadow["in_flight"] == 0).then_some(shadow)
    })
    .await;
    // A quarter of 1,000 is 250; the sampling is random (sd ≈ 14).
    let copies = v2.hits();
    assert!(
        (190..=310).contains(&copies),
        "{copies} copies of {total}: {shadow}"
    );
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_persistence_example_keeps_each_client_on_one_backend() {
    let Example {
        v1: _v1,
        v2: _v2,
        dir,
        proxy,
    } = example("gw-session", SESSION).await;
    let mut first_backends = BTreeMap::new();
    for _ in 0..40 {
        let first = get_as(&proxy, HOST, &[]).await;
        let cookie = first
            .header("set-cookie")
            .expect("a session cookie")
            .to_owned();
        assert!(cookie.starts_with("foo-session="), "{cookie}");
        let pair = cookie.split(';').next().expect("name=value").to_owned();
        // The cookie decides the backend, whichever served the first request.
        let pinned = get_as(&proxy, HOST, &[("cookie", &pair)]).await;
        let backend = pinned.header(BACKEND_HEADER).expect("backend").to_owned();
        for _ in 0..5 {
            let again = get_as(&proxy, HOST, &[("cookie", &pair)]).await;
            assert_eq!(
                again.header(BACKEND_HEADER),
                Some(backend.as_str()),
                "{pair}"
            );
        }
        *first_backends.entry(backend).or_insert(0) += 1;
    }
    // 50/50: both backends get sessions.
    assert_eq!(first_backends.len(), 2, "{first_backends:?}");
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_yaml_file_applies_on_reload() {
    let v1 = backend("foo-v1").start().await;
    let v2 = backend("foo-v2").start().await;
    let backends = [("foo-v1", &v1), ("foo-v2", &v2)];
    let dir = temp_dir("gw-reload");
    let proxy = start_from_yaml(&dir, &with_ports(SPLIT, &backends)).await;
    let admin = AdminClient::new(proxy.running.admin_addr, None);

    let promoted = SPLIT
        .replace("weight: 90", "weight: 0")
        .replace("weight: 10", "weight: 100");
    std::fs::write(dir.join("routes.yaml"), with_ports(&promoted, &backends)).expect("write");
    let reply = admin.call(Method::POST, "/api/v1/reload", None, None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["reloaded"], true, "{}", reply.text());
    let replies = many(&proxy, 50, &[]).await;
    assert_eq!(count_by(&replies, BACKEND_HEADER).get("foo-v2"), Some(&50));
    assert!(admin
        .changes()
        .await
        .iter()
        .any(|c| c["route"] == "foo-route"));

    // A broken file is refused with its line, and the table stays.
    let broken = promoted.replace(
        "      weight: 100\n",
        "      weight: 100\n      retries: 3\n",
    );
    std::fs::write(dir.join("routes.yaml"), with_ports(&broken, &backends)).expect("write");
    let reply = admin.call(Method::POST, "/api/v1/reload", None, None).await;
    assert!(reply.status.is_client_error(), "{}", reply.text());
    assert!(reply.text().contains("line 20"), "{}", reply.text());
    assert!(
        reply
            .text()
            .contains("spec.rules[0].backendRefs[1].retries"),
        "{}",
        reply.text()
    );
    let replies = many(&proxy, 20, &[]).await;
    assert_eq!(count_by(&replies, BACKEND_HEADER).get("foo-v2"), Some(&20));
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_of_a_named_yaml_file_is_watched() {
    let v1 = backend("foo-v1").start().await;
    let v2 = backend("foo-v2").start().await;
    let backends = [("foo-v1", &v1), ("foo-v2", &v2)];
    let dir = temp_dir("gw-watch");
    let proxy = start_watched(&dir, &with_ports(SPLIT, &backends), true).await;
    let admin = AdminClient::new(proxy.running.admin_addr, None);
    let promoted = SPLIT
        .replace("weight: 90", "weight: 0")
        .replace("weight: 10", "weight: 100");
    std::fs::write(dir.join("routes.yaml"), with_ports(&promoted, &backends)).expect("write");
    admin.wait_for_weight("foo-route", "foo-v2", 100).await;
    let replies = many(&proxy, 20, &[]).await;
    assert_eq!(count_by(&replies, BACKEND_HEADER).get("foo-v2"), Some(&20));
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_prints_the_live_weights_and_loads_back_to_the_same_table() {
    let stable = backend("stable").start().await;
    let canary = backend("canary").start().await;
    let toml = config(&format!(
        "[gateway_api]\nservice_address = \"127.0.0.1:{{port}}\"\n\n{}",
        route("web")
            .key("host", "api.example.com")
            .key("path_prefix", "/api")
            .section("match_headers = { \"x-beta\" = \"1\" }")
            .backend("stable", 90, &stable)
            .backend("canary", 10, &canary)
            .build()
    ));
    let proxy = start_proxy(&toml).await;
    let admin = AdminClient::new(proxy.running.admin_addr, None);
    let (revision, _) = admin.routes().await;
    let reply = admin
        .set_weights("web", revision, r#"{"stable": 40, "canary": 60}"#)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    let reply = admin
        .call(
            Method::GET,
            "/api/v1/export?format=gateway-api&route=web",
            None,
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/yaml"));
    let yaml = reply.text();
    assert!(yaml.contains("weight: 60"), "{yaml}");
    let local = GatewayApiConfig {
        service_address: "127.0.0.1:{port}".into(),
        ..Default::default()
    };
    let exported = gateway_api::config_from_yaml(&yaml, "export.yaml", local)
        .unwrap_or_else(|e| panic!("{e}\n---\n{yaml}"));
    let live = proxy.running.table.load().spec().clone();
    assert_eq!(exported.table_spec().routes, live.routes, "{yaml}");
    // What the file says is not what runs: the weights are the live ones.
    let file = Config::parse(&toml, "t.toml").expect("valid").table_spec();
    assert_ne!(file.routes, live.routes);

    let reply = admin.call(Method::GET, "/api/v1/export", None, None).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    let reply = admin
        .call(
            Method::GET,
            "/api/v1/export?format=gateway-api&route=nope",
            None,
            None,
        )
        .await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    proxy.shutdown().await;
}

#[tokio::test]
async fn unsupported_fields_and_bad_weights_name_the_field_and_line() {
    let dir = temp_dir("gw-errors");
    let path = dir.join("routes.yaml");
    let cases = [
        (
            SPLIT.replace("  - backendRefs:\n", "  - matches:\n    - method: PO ST\n    backendRefs:\n"),
            "line 14, column 15: document 1, HTTPRoute foo-route: spec.rules[0].matches[0].method",
        ),
        (
            SPLIT.replace("weight: 10", "weight: -10"),
            "line 19, column 15: document 1, HTTPRoute foo-route: spec.rules[0].backendRefs[1].weight",
        ),
        (
            SPLIT.replace("weight: 90", "weight: 0").replace("weight: 10", "weight: 0"),
            "line 14, column 7: document 1, HTTPRoute foo-route: spec.rules[0].backendRefs",
        ),
    ];
    for (yaml, expected) in cases {
        std::fs::write(
            &path,
            yaml.replace("{foo-v1}", "8080").replace("{foo-v2}", "8080"),
        )
        .expect("write");
        let error = gateway_api::load(&path).expect_err("refused").to_string();
        assert!(
            error.contains(expected),
            "expected '{expected}' in:\n{error}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The Kubernetes manifests (the HTTPRoute in the ingress ConfigMap among
/// them) against their vendored schemas, as scripts/validate-k8s.sh does.
#[test]
#[cfg_attr(missing_python3, ignore = "python3 is not installed")]
fn k8s_manifests_validate_against_their_schemas() {
    require_tool("python3");
    let output = std::process::Command::new("bash")
        .arg(workspace_root().join("scripts/validate-k8s.sh"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run scripts/validate-k8s.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "scripts/validate-k8s.sh failed:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("documents valid"), "{stdout}");
}

/// Several hostnames and matches: an exact path with a method, and a
/// regular-expression header, each to foo-v2 before the catch-all rule.
const MATCHES: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: foo-route
spec:
  hostnames:
  - foo.example.com
  - bar.example.com
  rules:
  - backendRefs:
    - name: foo-v1
      port: {foo-v1}
  - matches:
    - path:
        type: Exact
        value: /login
      method: POST
    - headers:
      - type: RegularExpression
        name: x-user
        value: beta-[0-9]+
    backendRefs:
    - name: foo-v2
      port: {foo-v2}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_paths_methods_patterns_and_hostnames_route_by_precedence() {
    let Example {
        v1: _v1,
        v2: _v2,
        dir,
        proxy,
    } = example("gw-matches", MATCHES).await;
    let answer =
        |method: Method, path: &'static str, host: &'static str, user: Option<&'static str>| {
            let proxy = &proxy;
            async move {
                let mut req = Request::builder()
                    .method(method)
                    .uri(proxy.url(path))
                    .header("host", host);
                if let Some(user) = user {
                    req = req.header("x-user", user);
                }
                let reply = send(&proxy.client, req.body(empty()).expect("request"))
                    .await
                    .expect("request through the proxy");
                reply.header(BACKEND_HEADER).unwrap_or("none").to_owned()
            }
        };
    assert_eq!(answer(Method::POST, "/login", HOST, None).await, "foo-v2");
    assert_eq!(
        answer(Method::POST, "/login", "bar.example.com", None).await,
        "foo-v2"
    );
    assert_eq!(
        answer(Method::GET, "/login", HOST, None).await,
        "foo-v1",
        "GET is not the match's method"
    );
    assert_eq!(
        answer(Method::POST, "/login/x", HOST, None).await,
        "foo-v1",
        "the path is exact"
    );
    assert_eq!(
        answer(Method::GET, "/", HOST, Some("beta-7")).await,
        "foo-v2"
    );
    assert_eq!(
        answer(Method::GET, "/", HOST, Some("beta-7x")).await,
        "foo-v1",
        "the whole value must match"
    );
    assert_eq!(
        answer(Method::GET, "/", "baz.example.com", None).await,
        "none"
    );
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
