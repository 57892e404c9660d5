//! Shadow traffic as the control plane shows it: `GET /api/v1/shadows` (per
//! route and shadow: settings, copies in flight, counts by result, the last
//! mismatches) and its text form for `switchyard ctl shadows`.
//!
//! Everything is read from the live table; the counters themselves live in
//! the data plane and survive table swaps.

use std::fmt::Write as _;
use std::time::SystemTime;

use http::{Method, StatusCode};
use serde_json::{json, Map, Value};
use switchyard_proxy::shadow::{Mismatch, Shadow};
use switchyard_proxy::{RoutingTable, ShadowResult, TableHandle};

use crate::admin::api::{json_response, sync_extension, Extension};

/// The admin endpoint `GET /api/v1/shadows`.
pub fn admin_extension(table: TableHandle) -> Extension {
    sync_extension(move |method, path, _query| {
        let path = path.trim_end_matches('/');
        (*method == Method::GET && path == "/api/v1/shadows")
            .then(|| json_response(StatusCode::OK, &shadows_json(&table.load())))
    })
}

/// Every shadow of every route, in config order.
pub fn shadows_json(table: &RoutingTable) -> Value {
    let shadows: Vec<Value> = table
        .spec()
        .routes
        .iter()
        .filter_map(|spec| table.route(&spec.name))
        .flat_map(|route| {
            route
                .shadows
                .iter()
                .map(move |shadow| shadow_json(&route.name, shadow))
        })
        .collect();
    json!({ "revision": table.revision(), "shadows": shadows })
}

fn shadow_json(route: &str, shadow: &Shadow) -> Value {
    let spec = shadow.spec();
    let state = shadow.state();
    let mut counts = Map::new();
    let (mut copied, mut dropped) = (0, 0);
    for (result, count) in state.counts() {
        counts.insert(result.as_str().to_owned(), count.into());
        if result.is_dropped() {
            dropped += count;
        } else {
            copied += count;
        }
    }
    // Newest first: the one an operator looks for.
    let mismatches: Vec<Value> = state.mismatches().iter().rev().map(mismatch_json).collect();
    json!({
        "route": route,
        "name": &*shadow.name,
        "endpoints": spec.endpoints,
        "percent": spec.percent,
        "methods": spec.methods,
        "max_in_flight": spec.max_in_flight,
        "max_body_bytes": spec.max_body_bytes,
        "timeout": humantime::format_duration(spec.timeout).to_string(),
        "strip_headers": spec.strip_headers,
        "compare": spec.compare,
        "compare_ignore_body": spec.compare_ignore_body,
        "in_flight": state.in_flight(),
        "copied": copied,
        "dropped": dropped,
        "counts": counts,
        "mismatches": mismatches,
    })
}

fn mismatch_json(mismatch: &Mismatch) -> Value {
    json!({
        "time": rfc3339(mismatch.time),
        "method": mismatch.method.as_str(),
        "path": mismatch.path,
        "primary_status": mismatch.primary_status.as_u16(),
        "shadow_status": mismatch.shadow_status.as_u16(),
        "kind": mismatch.kind.as_str(),
    })
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// `switchyard ctl shadows`: the endpoint's JSON as text.
pub fn render(body: &Value) -> String {
    let mut text = String::new();
    for shadow in body["shadows"].as_array().into_iter().flatten() {
        let str_list = |key: &str| -> String {
            let items: Vec<&str> = shadow[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            items.join(", ")
        };
        let compare = match (
            shadow["compare"].as_bool(),
            shadow["compare_ignore_body"].as_bool(),
        ) {
            (Some(true), Some(true)) => "compare status",
            (Some(true), _) => "compare status+body",
            _ => "no compare",
        };
        let _ = writeln!(
            text,
            "{}/{}  -> {}  {}% of {}  in flight {}/{}  {compare}",
            shadow["route"].as_str().unwrap_or("?"),
            shadow["name"].as_str().unwrap_or("?"),
            str_list("endpoints"),
            shadow["percent"],
            str_list("methods"),
            shadow["in_flight"],
            shadow["max_in_flight"],
        );
        let counts = |dropped: bool| -> String {
            ShadowResult::ALL
                .iter()
                .filter(|r| r.is_dropped() == dropped)
                .map(|r| {
                    let label = r.as_str().trim_start_matches("dropped_");
                    format!("{label} {}", shadow["counts"][r.as_str()])
                })
                .collect::<Vec<_>>()
                .join("  ")
        };
        let _ = writeln!(text, "  copied {}: {}", shadow["copied"], counts(false));
        let _ = writeln!(text, "  dropped {}: {}", shadow["dropped"], counts(true));
        let mismatches = shadow["mismatches"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        if !mismatches.is_empty() {
            let _ = writeln!(text, "  last mismatches (newest first):");
        }
        for m in mismatches {
            let _ = writeln!(
                text,
                "    {}  {} {}  primary {}  shadow {}  {}",
                m["time"].as_str().unwrap_or("?"),
                m["method"].as_str().unwrap_or("?"),
                m["path"].as_str().unwrap_or("?"),
                m["primary_status"],
                m["shadow_status"],
                m["kind"].as_str().unwrap_or("?"),
            );
        }
    }
    if text.is_empty() {
        text.push_str("no shadows configured\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_proxy::{RouteSpec, Settings, ShadowSpec, TableSpec, VersionSpec};

    fn table() -> RoutingTable {
        let mut next = ShadowSpec::new("next", vec!["127.0.0.1:9003".into()]);
        next.compare = true;
        let spec = TableSpec {
            routes: vec![RouteSpec {
                name: "web".into(),
                host: None,
                path_prefix: "/".into(),
                versions: vec![VersionSpec {
                    name: "stable".into(),
                    weight: 1,
                    endpoints: vec!["127.0.0.1:9001".into()],
                    ..Default::default()
                }],
                baseline: "stable".into(),
                timeout: std::time::Duration::from_secs(1),
                shadows: vec![next],
                ..Default::default()
            }],
            settings: Settings::default(),
            flags: Vec::new(),
        };
        RoutingTable::build(spec, 7).expect("valid")
    }

    #[test]
    fn lists_each_shadow_with_every_count() {
        let body = shadows_json(&table());
        assert_eq!(body["revision"], 7);
        let shadow = &body["shadows"][0];
        assert_eq!(shadow["route"], "web");
        assert_eq!(shadow["name"], "next");
        assert_eq!(shadow["timeout"], "2s");
        assert_eq!(shadow["methods"], json!(["GET", "HEAD", "OPTIONS"]));
        for result in ShadowResult::ALL {
            assert_eq!(shadow["counts"][result.as_str()], 0, "{}", result.as_str());
        }
        let text = render(&body);
        assert!(
            text.contains("web/next  -> 127.0.0.1:9003  100.0% of GET, HEAD, OPTIONS"),
            "{text}"
        );
        assert!(
            text.contains("dropped 0: sampled_out 0  method 0  overload 0  body_too_large 0"),
            "{text}"
        );
        assert!(text.contains("compare status+body"), "{text}");
    }

    #[test]
    fn renders_mismatches_and_an_empty_list() {
        assert_eq!(
            render(&json!({"revision": 1, "shadows": []})),
            "no shadows configured\n"
        );
        let body = json!({"shadows": [{"route": "web", "name": "next", "counts": {}, "mismatches": [
            {"time": "2026-01-01T00:00:00.000Z", "method": "GET", "path": "/x", "primary_status": 200, "shadow_status": 500, "kind": "status_mismatch"}
        ]}]});
        let text = render(&body);
        assert!(
            text.contains("GET /x  primary 200  shadow 500  status_mismatch"),
            "{text}"
        );
    }
}
