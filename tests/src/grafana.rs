//! The Grafana dashboard shipped in `config/grafana/switchyard.json`, read
//! the way the tests check it: every PromQL query it sends (panels and
//! template variables) and the metric names those queries use.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::workspace_root;

/// One query of the dashboard: where it is and its PromQL.
#[derive(Debug, Clone)]
pub struct Query {
    /// The panel's title, or `variable NAME`.
    pub place: String,
    pub expr: String,
}

/// The dashboard's JSON; fails the test when it is missing or not JSON.
pub fn dashboard() -> Value {
    let path = workspace_root().join("config/grafana/switchyard.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every query: each panel's targets, then each template variable's.
pub fn queries(dashboard: &Value) -> Vec<Query> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("untitled").to_owned();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("a target of panel {title} has no expr"));
            queries.push(Query {
                place: title.clone(),
                expr: expr.to_owned(),
            });
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] != "query" {
            continue;
        }
        let name = variable["name"].as_str().unwrap_or("unnamed");
        let query = &variable["query"];
        let expr = query["query"].as_str().or_else(|| query.as_str());
        if let Some(expr) = expr {
            queries.push(Query {
                place: format!("variable {name}"),
                expr: expr.to_owned(),
            });
        }
    }
    queries
}

/// The metric names `expr` uses: switchyard's own and the process
/// collector's (`process_…`).
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("switchyard_") || word.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// `expr` as Prometheus itself would run it: Grafana's template variables
/// replaced by what they stand for.
pub fn as_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$route", ".*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_variables_are_read_from_an_expression() {
        let expr = r#"histogram_quantile(0.99, sum by (route, le) (rate(switchyard_request_duration_seconds_bucket{route=~"$route"}[$__rate_interval]))) and on (instance) process_cpu_seconds_total"#;
        let names: Vec<String> = metric_names(expr).into_iter().collect();
        assert_eq!(
            names,
            [
                "process_cpu_seconds_total",
                "switchyard_request_duration_seconds_bucket"
            ]
        );
        let promql = as_promql(expr);
        assert!(promql.contains(r#"route=~".*""#) && promql.contains("[1m]"));
        assert!(!promql.contains('$'));
    }
}
