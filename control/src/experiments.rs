//! Experiments as the admin API and ctl show them: `GET
//! /api/v1/experiments[?route=NAME]` (the [`crate::readout`] of every
//! experiment of the live table, schema in docs/experiments.md) and its
//! text form for `switchyard ctl experiment`. Concluding one is a traffic
//! operation of the plane (`ControlPlane::conclude`).

use std::fmt::Write as _;

use http::{Method, StatusCode};
use serde_json::Value;
use switchyard_proxy::metrics::Metrics;
use switchyard_proxy::TableHandle;

use crate::admin::api::{json_response, sync_extension, Extension};
use crate::columns::write_columns;
use crate::readout::{self, ExperimentsReport};

/// The admin endpoint `GET /api/v1/experiments`.
pub fn admin_extension(table: TableHandle, metrics: Metrics) -> Extension {
    sync_extension(move |method, path, query| {
        let path = path.trim_end_matches('/');
        if *method != Method::GET || path != "/api/v1/experiments" {
            return None;
        }
        let mut report = readout::readout(&table.load(), Some(&metrics));
        if let Some(route) = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|pair| pair.strip_prefix("route="))
        {
            report.experiments.retain(|e| e.route == route);
        }
        Some(json_response(StatusCode::OK, &report))
    })
}

/// `switchyard ctl experiment`: per experiment, the variants' traffic and
/// per goal the conversion table and the verdicts in words.
pub fn render(body: &Value) -> String {
    let report: ExperimentsReport = match serde_json::from_value(body.clone()) {
        Ok(report) => report,
        Err(error) => return format!("unexpected experiments reply ({error}):\n{body}"),
    };
    if report.experiments.is_empty() {
        return "no experiment: add [routes.experiment] to a route with a sticky key\n".into();
    }
    let mut out = String::new();
    for e in &report.experiments {
        let _ = writeln!(
            out,
            "route {}: experiment {} (control {}), running {} since {}",
            e.route,
            e.name,
            e.control,
            humantime::format_duration(std::time::Duration::from_secs(e.running_seconds as u64)),
            e.started
        );
        let mut rows = vec![[
            "VARIANT",
            "UNITS",
            "REQUESTS",
            "ERRORS",
            "P50 ms",
            "P99 ms",
            "LATENCY SHIFT ms",
        ]
        .map(str::to_owned)];
        for v in &e.variants {
            let shift = v.latency_shift_ms.map_or_else(
                || "-".to_owned(),
                |s| format!("{:+.2} ({:+.2} to {:+.2})", s.estimate, s.low, s.high),
            );
            rows.push([
                v.variant.clone(),
                v.units.to_string(),
                v.requests.to_string(),
                format!("{} ({:.2}%)", v.errors, v.error_rate * 100.0),
                optional(v.latency_p50_ms, 2),
                optional(v.latency_p99_ms, 2),
                shift,
            ]);
        }
        write_columns(&mut out, "  ", &rows);
        for goal in &e.goals {
            let _ = writeln!(out, "goal {}:", goal.goal);
            let mut rows = vec![[
                "VARIANT",
                "UNITS",
                "CONVERTED",
                "RATE",
                "95% CI",
                "DIFF (points)",
                "P",
                "P (SEQ)",
            ]
            .map(str::to_owned)];
            for v in &goal.variants {
                rows.push([
                    v.variant.clone(),
                    v.units.to_string(),
                    v.conversions.to_string(),
                    v.conversion_rate
                        .map_or_else(|| "-".into(), |r| format!("{:.2}%", r * 100.0)),
                    match (v.ci_low, v.ci_high) {
                        (Some(l), Some(h)) => format!("{:.2}-{:.2}%", l * 100.0, h * 100.0),
                        _ => "-".into(),
                    },
                    match (v.difference, v.difference_low, v.difference_high) {
                        (Some(d), Some(l), Some(h)) => {
                            format!("{:+.2} ({:+.2} to {:+.2})", d * 100.0, l * 100.0, h * 100.0)
                        }
                        _ => "-".into(),
                    },
                    optional(v.p_value, 4),
                    optional(v.p_value_sequential, 4),
                ]);
            }
            write_columns(&mut out, "  ", &rows);
            for verdict in &goal.verdicts {
                let _ = writeln!(out, "  {verdict}");
            }
        }
    }
    out
}

fn optional(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}
