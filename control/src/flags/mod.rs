//! Feature flags as the control plane serves them: `GET /api/v1/flags`
//! (each flag's live state, its requests per state since it began, and its
//! guard), the text `switchyard ctl flags` prints, and the [`guard`] that
//! turns a flag off when it hurts. Changing a flag is the plane's
//! (`ControlPlane::change_flag`); OpenFeature evaluation is `crate::ofrep`.

pub mod guard;

use std::fmt::Write as _;
use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::{json, Value};
use switchyard_proxy::flags::Flag;
use switchyard_proxy::TableHandle;

use crate::admin::api::{json_response, sync_extension, Extension};
use guard::Guards;

/// The admin endpoint `GET /api/v1/flags`.
pub fn admin_extension(table: TableHandle, guards: Arc<Guards>) -> Extension {
    sync_extension(move |method, path, _query| {
        let path = path.trim_end_matches('/');
        (*method == Method::GET && path == "/api/v1/flags").then(|| {
            let table = table.load();
            let flags: Vec<Value> = table
                .flags()
                .iter()
                .map(|f| flag_json(f, &guards))
                .collect();
            json_response(
                StatusCode::OK,
                &json!({
                    "revision": table.revision(),
                    "header": table.settings().flags_header.as_str(),
                    "flags": flags,
                }),
            )
        })
    })
}

fn flag_json(flag: &Flag, guards: &Guards) -> Value {
    let mut states = Vec::new();
    flag.counts().each(|state, classes, latency, _| {
        let requests: u64 = classes.iter().sum();
        let errors = classes[4];
        let ms = |q: f64| (!latency.is_empty()).then(|| latency.value_at_quantile(q) as f64 / 1e3);
        states.push(json!({
            "state": state,
            "requests": requests,
            "errors": errors,
            "error_rate": errors as f64 / requests.max(1) as f64,
            "p50_ms": ms(0.5),
            "p99_ms": ms(0.99),
        }));
    });
    let (header, cookie) = flag.key_source();
    let policy = guards.policy(&flag.name);
    json!({
        "name": &*flag.name,
        "enabled": flag.enabled,
        "percent": flag.is_boolean().then_some(flag.percent),
        "variants": (!flag.is_boolean()).then(|| flag
            .shares()
            .map(|(name, share)| json!({ "name": name, "share": share }))
            .collect::<Vec<_>>()),
        "default": flag.state_name(flag.default_state()),
        "key": { "header": header, "cookie": cookie },
        "routes": if flag.routes.is_empty() { Value::Null } else { json!(flag.routes) },
        "states": states,
        "guard": policy.map(|p| json!({
            "max_error_rate_increase": p.max_error_rate_increase,
            "min_requests": p.min_requests,
            "window_seconds": p.window.as_secs_f64(),
            "alpha": p.alpha,
            "last": guards.view(&flag.name),
        })),
        "guard_trips": flag.counts().trips(),
    })
}

/// `switchyard ctl flags`: one line per flag and state.
pub fn render(body: &Value) -> String {
    let Some(flags) = body["flags"].as_array() else {
        return format!("unexpected flags reply:\n{body}");
    };
    if flags.is_empty() {
        return "no flags: add [[flags]] to the config\n".into();
    }
    let mut out = String::new();
    for flag in flags {
        let split = match flag["percent"].as_f64() {
            Some(percent) => format!("on for {percent}% of units"),
            None => flag["variants"]
                .as_array()
                .map(|v| {
                    v.iter()
                        .map(|v| {
                            format!(
                                "{} {:.1}%",
                                v["name"].as_str().unwrap_or("?"),
                                v["share"].as_f64().unwrap_or(0.0)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(" / ")
                })
                .unwrap_or_default(),
        };
        let enabled = if flag["enabled"] == true {
            ""
        } else {
            "DISABLED, "
        };
        let _ = writeln!(
            out,
            "flag {}: {enabled}{split}",
            flag["name"].as_str().unwrap_or("?")
        );
        for state in flag["states"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  {:<8} {:>8} requests  {:>6.2}% errors  p50 {} ms  p99 {} ms",
                state["state"].as_str().unwrap_or("?"),
                state["requests"],
                state["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
                state["p50_ms"]
                    .as_f64()
                    .map_or_else(|| "-".into(), |v| format!("{v:.2}")),
                state["p99_ms"]
                    .as_f64()
                    .map_or_else(|| "-".into(), |v| format!("{v:.2}")),
            );
        }
        let guard = &flag["guard"];
        if guard.is_object() {
            let last = &guard["last"];
            let _ = writeln!(
                out,
                "  guard: {} (flagged {:.2}% vs unflagged {:.2}% errors over {:.0}s, allowed +{:.2} points; tripped {} times)",
                last["status"].as_str().unwrap_or("starting"),
                last["flagged"]["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
                last["unflagged"]["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
                last["window_seconds"].as_f64().unwrap_or(0.0),
                guard["max_error_rate_increase"].as_f64().unwrap_or(0.0) * 100.0,
                flag["guard_trips"],
            );
        }
    }
    out
}
