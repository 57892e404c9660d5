//! Sends sequences of admin API requests with arbitrary bodies, preconditions
//! and flags (set weights, promote, rollback, flip, the rollout actions)
//! through the admin router itself (`Admin::handle`: auth, body parsing,
//! validation) to a control plane built from a fixed config. Nothing may
//! panic, and a request the API refuses must change nothing: not the table,
//! its revision, the history or the rollout's state.
//!
//! Input: up to eight requests, each four bytes (operation, route, If-Match,
//! flags) then a length byte and that many body bytes.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use switchyard_control::admin::{Admin, AdminAuth};
use switchyard_control::config::AdminConfig;
use switchyard_control::plane::ControlPlane;
use switchyard_control::rollout::{admin_extension, Rollouts};
use switchyard_control::Config;
use switchyard_proxy::{Metrics, TableHandle};

const CONFIG: &str = r#"
[[routes]]
name = "web"
baseline = "stable"
  [[routes.versions]]
  name = "stable"
  weight = 90
  endpoints = ["127.0.0.1:9001"]
  [[routes.versions]]
  name = "canary"
  weight = 10
  endpoints = ["127.0.0.1:9002"]
  [[routes.versions]]
  name = "green"
  weight = 0
  endpoints = ["127.0.0.1:9003"]

[[routes]]
name = "shop"
path_prefix = "/shop/"
baseline = "stable"
  [routes.rollout]
  canary = "canary"
  steps = [5, 25, 50, 100]
  interval = "60s"
  [[routes.versions]]
  name = "stable"
  weight = 100
  endpoints = ["127.0.0.1:9011", "127.0.0.1:9012"]
  [[routes.versions]]
  name = "canary"
  weight = 0
  endpoints = ["127.0.0.1:9013"]
"#;

const TOKEN: &str = "fuzz-token";
const ROUTES: [&str; 4] = ["web", "shop", "nope", ""];

struct Plane {
    admin: Admin,
    plane: Arc<ControlPlane>,
    rollouts: Arc<Rollouts>,
}

fn plane() -> Plane {
    static CONFIG_PARSED: OnceLock<Config> = OnceLock::new();
    let config = CONFIG_PARSED
        .get_or_init(|| Config::parse(CONFIG, "fuzz.toml").expect("the fixed config is valid"))
        .clone();
    let table = TableHandle::new(config.table_spec()).expect("the fixed config builds");
    let policies = config.rollout_policies();
    let plane = Arc::new(ControlPlane::new(table, config, None, None));
    let metrics = Metrics::new(Default::default()).expect("default metrics settings");
    let rollouts = Rollouts::new(Arc::clone(&plane), metrics, policies);
    let loopback: SocketAddr = "127.0.0.1:9901".parse().expect("address");
    let auth = AdminAuth::load(&AdminConfig::default(), None, loopback, Some(TOKEN.into()))
        .expect("a token from the environment");
    let admin = Admin {
        plane: Arc::clone(&plane),
        auth,
        extensions: vec![admin_extension(Arc::clone(&rollouts))],
    };
    Plane {
        admin,
        plane,
        rollouts,
    }
}

/// What a refused request must leave as it was.
#[derive(Debug, PartialEq)]
struct Observed {
    revision: u64,
    spec: switchyard_proxy::TableSpec,
    history: usize,
    rollout: Option<serde_json::Value>,
}

fn observe(plane: &Plane) -> Observed {
    let table = plane.plane.table().load();
    Observed {
        revision: table.revision(),
        spec: table.spec().clone(),
        history: plane.plane.history().len(),
        rollout: runtime()
            .block_on(plane.rollouts.status("shop"))
            .ok()
            .and_then(|status| status.get("state").cloned()),
    }
}

fn request(
    plane: &Plane,
    op: u8,
    route: u8,
    if_match: u8,
    flags: u8,
    body: &[u8],
) -> Request<Full<Bytes>> {
    let route = ROUTES[usize::from(route) % ROUTES.len()];
    let (method, action) = match op % 10 {
        0 => (Method::PUT, "weights"),
        1 => (Method::POST, "promote"),
        2 => (Method::POST, "rollback"),
        3 => (Method::POST, "flip"),
        4 => (Method::POST, "rollout/start"),
        5 => (Method::POST, "rollout/pause"),
        6 => (Method::POST, "rollout/resume"),
        7 => (Method::POST, "rollout/abort"),
        8 => (Method::GET, "rollout"),
        _ => (Method::GET, ""),
    };
    let mut query = Vec::new();
    if flags & 1 != 0 {
        query.push("force=true");
    }
    if flags & 2 != 0 {
        query.push("exact=true");
    }
    let uri = if action.is_empty() {
        "/api/v1/routes".to_owned()
    } else {
        format!("/api/v1/routes/{route}/{action}?{}", query.join("&"))
    };
    let mut builder = Request::builder().method(method).uri(uri);
    match (flags >> 2) % 4 {
        0 | 1 => builder = builder.header("authorization", format!("Bearer {TOKEN}")),
        2 => builder = builder.header("authorization", "Bearer wrong"),
        _ => {}
    }
    let revision = plane.plane.table().load().revision();
    match if_match % 5 {
        0 => {}
        1 => builder = builder.header("if-match", format!("\"{revision}\"")),
        2 => builder = builder.header("if-match", format!("\"{}\"", revision.wrapping_add(1))),
        3 => builder = builder.header("if-match", "*"),
        _ => builder = builder.header("if-match", &body[..body.len().min(8)]),
    }
    match builder.body(Full::new(Bytes::copy_from_slice(body))) {
        Ok(req) => req,
        // An If-Match the http crate refuses: send none.
        Err(_) => Request::builder()
            .method(Method::POST)
            .uri(format!("/api/v1/routes/{route}/rollback"))
            .body(Full::new(Bytes::copy_from_slice(body)))
            .expect("a fixed request"),
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let plane = plane();
    let mut rest = data;
    for _ in 0..8 {
        let [op, route, if_match, flags, len, tail @ ..] = rest else {
            break;
        };
        let body = &tail[..usize::from(*len).min(tail.len())];
        rest = &tail[body.len()..];
        let req = request(&plane, *op, *route, *if_match, *flags, body);
        let before = observe(&plane);
        let response = runtime().block_on(plane.admin.handle(req));
        let status = response.status();
        let text = runtime()
            .block_on(response.into_body().collect())
            .map(|collected| collected.to_bytes())
            .unwrap_or_default();
        let after = observe(&plane);
        if !status.is_success() {
            assert_eq!(
                before,
                after,
                "a refused request ({status}: {}) changed the plane",
                String::from_utf8_lossy(&text)
            );
            // The error envelope is JSON with an error message.
            let envelope: serde_json::Value =
                serde_json::from_slice(&text).expect("error bodies are JSON");
            assert!(
                envelope["error"].is_string(),
                "no error message: {envelope}"
            );
        }
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR);
        // Whatever was accepted still builds a routing table.
        let spec = after.spec.clone();
        if let Err(error) = switchyard_proxy::RoutingTable::build(spec, 1) {
            panic!("the live table's spec no longer builds: {error}");
        }
    }
});
