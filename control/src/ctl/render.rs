//! What `switchyard ctl` prints for each reply: the routes and their
//! weights, a change, the history, a rollout, the fleet, the demo's
//! backends; anything else as its fields.

use std::fmt::Write as _;

use serde_json::Value;

pub(super) fn render_fleet(body: &Value) -> String {
    let mut text = format!(
        "fleet {} at revision {}\n",
        body["prefix"].as_str().unwrap_or("?"),
        body["revision"]
    );
    for replica in body["replicas"].as_array().into_iter().flatten() {
        let _ = writeln!(
            text,
            "{:<16} data={} admin={} revision={} heartbeat={}",
            replica["name"].as_str().unwrap_or("?"),
            replica["data"].as_str().unwrap_or("?"),
            replica["admin"].as_str().unwrap_or("?"),
            replica["revision"],
            replica["heartbeat"].as_str().unwrap_or("?"),
        );
    }
    text
}

pub(super) fn weights_line(versions: &Value) -> String {
    versions
        .as_array()
        .map(|versions| {
            versions
                .iter()
                .map(|v| format!("{}={}", v["name"].as_str().unwrap_or("?"), v["weight"]))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

pub(super) fn render_routes(body: &Value) -> String {
    let mut text = format!("revision {}\n", body["revision"]);
    for route in body["routes"].as_array().into_iter().flatten() {
        let _ = writeln!(
            text,
            "{:<16} host={} prefix={} baseline={}",
            route["name"].as_str().unwrap_or("?"),
            route["host"].as_str().unwrap_or("*"),
            route["path_prefix"].as_str().unwrap_or("/"),
            route["baseline"].as_str().unwrap_or("?"),
        );
        for version in route["versions"].as_array().into_iter().flatten() {
            let endpoints: Vec<&str> = version["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let _ = writeln!(
                text,
                "  {:<14} weight {:>5}  {}",
                version["name"].as_str().unwrap_or("?"),
                version["weight"],
                endpoints.join(", ")
            );
        }
    }
    text
}

pub(super) fn render_change(body: &Value) -> String {
    format!(
        "ok: revision {}; {} now {}",
        body["revision"],
        body["route"]["name"].as_str().unwrap_or("?"),
        weights_line(&body["route"]["versions"])
    )
}

pub(super) fn render_history(body: &Value) -> String {
    let mut text = String::new();
    for change in body["changes"].as_array().into_iter().flatten() {
        let weights = |key: &str| match change[key].as_object() {
            Some(map) => map
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            None => "-".into(),
        };
        let _ = writeln!(
            text,
            "{}  rev {:<5} {:<6} {:<10} {:<12} {:<8} {} -> {}{}",
            change["time"].as_str().unwrap_or("?"),
            change["revision"],
            change["source"].as_str().unwrap_or("?"),
            change["who"].as_str().unwrap_or("?"),
            change["route"].as_str().unwrap_or("?"),
            change["action"].as_str().unwrap_or("?"),
            weights("before"),
            weights("after"),
            change["reason"]
                .as_str()
                .map(|r| format!("  ({r})"))
                .unwrap_or_default(),
        );
    }
    if text.is_empty() {
        text.push_str("no changes yet\n");
    }
    text
}

pub(super) fn render_rollout(body: &Value) -> String {
    let mut text = format!(
        "route {}: {} (step {} of {}, canary {}% ; {} vs {})\n",
        body["route"].as_str().unwrap_or("?"),
        body["state"].as_str().unwrap_or("?"),
        body["step"],
        body["steps"].as_array().map_or(0, Vec::len),
        body["canary_weight"],
        body["canary"].as_str().unwrap_or("?"),
        body["baseline"].as_str().unwrap_or("?"),
    );
    let verdict = &body["last_verdict"];
    if verdict.is_object() {
        let _ = writeln!(
            text,
            "last verdict {} at {}: {}",
            verdict["decision"].as_str().unwrap_or("?"),
            verdict["time"].as_str().unwrap_or("?"),
            verdict["reason"].as_str().unwrap_or("")
        );
    }
    text
}

/// One demo backend per line: its fault and how many requests it answered.
pub(super) fn render_demo(body: &Value) -> String {
    let one = |b: &Value| {
        let rate = b["error_rate"].as_f64().unwrap_or(0.0);
        let latency = b["latency_ms"].as_f64().unwrap_or(0.0);
        let fault = if rate == 0.0 && latency == 0.0 {
            "healthy".to_owned()
        } else {
            format!("error rate {:.0}%, latency +{latency} ms", rate * 100.0)
        };
        format!(
            "{:<8} {:<22} {fault}  ({} requests)\n",
            b["name"].as_str().unwrap_or("?"),
            b["address"].as_str().unwrap_or("?"),
            b["requests"],
        )
    };
    match body["backends"].as_array() {
        Some(backends) => backends.iter().map(one).collect(),
        None => one(body),
    }
}

pub(super) fn render_object(body: &Value) -> String {
    let mut text = String::new();
    for (key, value) in body.as_object().into_iter().flatten() {
        let value = match value {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            other => other.to_string(),
        };
        let _ = writeln!(text, "{key:<20} {value}");
    }
    text
}
