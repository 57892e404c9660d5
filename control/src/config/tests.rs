//! The config tests shared by the sections: a good file and the errors a
//! bad one reports.

use std::time::Duration;

use switchyard_proxy::ShadowSpec;

use super::*;

const GOOD: &str = r#"
[listen]
data = "127.0.0.1:8080"

[[routes]]
name = "web"

  [[routes.versions]]
  name = "stable"
  weight = 90
  endpoints = ["127.0.0.1:9001"]

  [[routes.versions]]
  name = "canary"
  weight = 10
  endpoints = ["127.0.0.1:9002"]
"#;

/// The errors a config that must fail reports (shared by the config tests).
pub(crate) fn errors(text: &str) -> Vec<ConfigError> {
    Config::parse(text, "t.toml")
        .expect_err("should fail")
        .errors
}

#[test]
fn good_config_builds_a_table() {
    let config = Config::parse(GOOD, "t.toml").expect("valid");
    let spec = config.table_spec();
    assert_eq!(spec.routes[0].baseline, "stable");
    assert_eq!(spec.routes[0].path_prefix, "/");
    assert_eq!(spec.routes[0].timeout, Duration::from_secs(30));
    switchyard_proxy::RoutingTable::build(spec, 1).expect("table");
}

#[test]
fn unknown_key_names_path_and_line() {
    let text = GOOD.replace("weight = 10", "weight = 10\n  wieght = 3");
    let errors = errors(&text);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "routes[0].versions[1].wieght");
    assert!(
        errors[0].message.contains("wieght"),
        "{}",
        errors[0].message
    );
    assert_eq!(errors[0].position.map(|p| p.0), Some(16));
}

#[test]
fn negative_weight_is_a_type_error() {
    let text = GOOD.replace("weight = 10", "weight = -1");
    let errors = errors(&text);
    assert_eq!(errors[0].path, "routes[0].versions[1].weight");
    assert_eq!(errors[0].position.map(|p| p.0), Some(15));
}

#[test]
fn reports_every_semantic_error() {
    let text = GOOD
        .replace("weight = 90", "weight = 0")
        .replace("weight = 10", "weight = 0")
        .replace("\"127.0.0.1:9002\"", "\"not an address\"")
        .replace("name = \"canary\"", "name = \"stable\"");
    let errors = errors(&text);
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"routes[0].versions[1].name"), "{paths:?}");
    assert!(
        paths.contains(&"routes[0].versions[1].endpoints[0]"),
        "{paths:?}"
    );
    assert!(paths.contains(&"routes[0].versions"), "{paths:?}");
    let endpoint = errors
        .iter()
        .find(|e| e.path.ends_with("endpoints[0]"))
        .expect("endpoint error");
    assert_eq!(endpoint.position, Some((16, 16)));
}

#[test]
fn duplicate_routes_and_matches() {
    let text = format!(
        "{GOOD}\n{}",
        &GOOD[GOOD.find("[[routes]]").expect("routes")..]
    );
    let errors = errors(&text);
    assert!(errors.iter().any(|e| e.path == "routes[1].name"));
    assert!(errors
        .iter()
        .any(|e| e.path == "routes[1].path_prefix" && e.message.contains("already matches")));
}

#[test]
fn bad_durations_and_empty_endpoints() {
    let text = format!("[timeouts]\nconnect = \"soon\"\n{GOOD}");
    assert_eq!(errors(&text)[0].path, "timeouts.connect");
    let text = GOOD.replace("[\"127.0.0.1:9002\"]", "[]");
    assert_eq!(errors(&text)[0].path, "routes[0].versions[1].endpoints");
}

#[test]
fn line_column_counts_from_one() {
    assert_eq!(line_column("ab\ncd", 4), (2, 2));
    assert_eq!(line_column("ab", 0), (1, 1));
}

const SHADOWS: &str = r#"
  [[routes.shadows]]
  name = "next"
  endpoints = ["127.0.0.1:9003"]

  [[routes.shadows]]
  name = "audit"
  endpoints = ["127.0.0.1:9004", "127.0.0.1:9005"]
  percent = 12.5
  methods = ["GET", "POST"]
  max_in_flight = 8
  max_body_bytes = 1024
  timeout = "250ms"
  strip_headers = ["Authorization", "cookie"]
  compare = true
  compare_ignore_body = true
"#;

#[test]
fn shadows_get_defaults_and_every_key() {
    let config = Config::parse(&format!("{GOOD}{SHADOWS}"), "t.toml").expect("valid");
    let spec = config.table_spec();
    let shadows = &spec.routes[0].shadows;
    assert_eq!(
        shadows[0],
        ShadowSpec::new("next", vec!["127.0.0.1:9003".into()])
    );
    let audit = &shadows[1];
    assert_eq!(audit.percent, 12.5);
    assert_eq!(audit.methods, ["GET", "POST"]);
    assert_eq!((audit.max_in_flight, audit.max_body_bytes), (8, 1024));
    assert_eq!(audit.timeout, Duration::from_millis(250));
    assert_eq!(audit.strip_headers, ["Authorization", "cookie"]);
    assert!(audit.compare && audit.compare_ignore_body);
    let table = switchyard_proxy::RoutingTable::build(spec, 1).expect("table");
    assert_eq!(table.routes()[0].shadows.len(), 2);
}

#[test]
fn shadow_errors_name_key_and_line() {
    let bad = |from: &str, to: &str| {
        let text = format!("{GOOD}{}", SHADOWS.replace(from, to));
        errors(&text)
    };
    let e = bad("percent = 12.5", "percent = 101");
    assert_eq!(e[0].path, "routes[0].shadows[1].percent");
    assert_eq!(e[0].position.map(|p| p.0), Some(25));
    let e = bad("\"GET\", \"POST\"", "\"GET\", \"post\"");
    assert_eq!(e[0].path, "routes[0].shadows[1].methods[1]");
    assert!(e[0].message.contains("'POST'"), "{}", e[0].message);
    assert_eq!(e[0].position, Some((26, 21)));
    let e = bad("\"127.0.0.1:9005\"", "\"nowhere\"");
    assert_eq!(e[0].path, "routes[0].shadows[1].endpoints[1]");
    let e = bad("compare = true\n", "");
    assert_eq!(e[0].path, "routes[0].shadows[1].compare_ignore_body");
    assert!(e[0].message.contains("compare = true"), "{}", e[0].message);
    let e = bad("max_in_flight = 8", "max_in_flight = 0");
    assert_eq!(e[0].path, "routes[0].shadows[1].max_in_flight");
    let e = bad("max_in_flight = 8", "max_in_flight = -8");
    assert_eq!(e[0].path, "routes[0].shadows[1].max_in_flight");
    let e = bad("timeout = \"250ms\"", "timeout = \"0s\"");
    assert_eq!(e[0].path, "routes[0].shadows[1].timeout");
    let e = bad(
        "strip_headers = [\"Authorization\"",
        "strip_headers = [\"bad header\"",
    );
    assert_eq!(e[0].path, "routes[0].shadows[1].strip_headers[0]");
    let e = bad("name = \"audit\"", "name = \"next\"");
    assert_eq!(e[0].path, "routes[0].shadows[1].name");
    assert!(e[0].message.contains("twice"), "{}", e[0].message);
    let e = bad("endpoints = [\"127.0.0.1:9003\"]", "endpoints = []");
    assert_eq!(e[0].path, "routes[0].shadows[0].endpoints");
    let e = bad("compare = true", "compare = true\n  sample = 3");
    assert_eq!(e[0].path, "routes[0].shadows[1].sample");
}

#[test]
fn table_problems_of_health_keys_point_at_their_lines() {
    let text = format!(
        "{GOOD}  [routes.health_check]\n  path = \"healthz\"\n  [routes.outlier_detection]\n  max_ejection_percent = 120\n"
    );
    let errors = errors(&text);
    let found: Vec<(&str, Option<usize>)> = errors
        .iter()
        .map(|e| (e.path.as_str(), e.position.map(|p| p.0)))
        .collect();
    assert_eq!(
        found,
        [
            ("routes[0].health_check.path", Some(18)),
            ("routes[0].outlier_detection.max_ejection_percent", Some(20)),
        ]
    );
}

const EXPERIMENT: &str = r#"
  [routes.sticky]
  header = "x-user"

  [routes.experiment]
  name = "checkout-v2"

  [[routes.experiment.goals]]
  name = "purchase"
  method = "POST"
  path_prefix = "/checkout/complete"
  status = "2xx"
"#;

#[test]
fn an_experiment_defaults_its_control_to_the_baseline() {
    let config = Config::parse(&format!("{GOOD}{EXPERIMENT}"), "t.toml").expect("valid");
    let spec = config.table_spec();
    let experiment = spec.routes[0].experiment.as_ref().expect("experiment");
    assert_eq!(experiment.control, "stable");
    assert_eq!(
        experiment.minimum_effect,
        experiment::DEFAULT_MINIMUM_EFFECT
    );
    assert_eq!(experiment.goals[0].method.as_deref(), Some("POST"));
    switchyard_proxy::RoutingTable::build(spec, 1).expect("table");
}

#[test]
fn experiment_errors_name_the_key_and_its_line() {
    let cases = [
        (
            EXPERIMENT.replace("status = \"2xx\"", "status = \"2xy\""),
            "routes[0].experiment.goals[0].status",
            "status class",
        ),
        (
            EXPERIMENT.replace("name = \"checkout-v2\"", "name = \"checkout-v2\"\n  control = \"blue\""),
            "routes[0].experiment.control",
            "'blue' is not a version",
        ),
        (
            EXPERIMENT.replace("name = \"checkout-v2\"", "name = \"checkout-v2\"\n  minimum_effect = 2.0"),
            "routes[0].experiment.minimum_effect",
            "between 0 and 1",
        ),
        (
            EXPERIMENT.replace("[routes.sticky]\n  header = \"x-user\"\n", ""),
            "routes[0].experiment",
            "sticky key",
        ),
        (
            format!("{EXPERIMENT}\n  [[routes.experiment.goals]]\n  name = \"purchase\"\n  path_prefix = \"/\"\n"),
            "routes[0].experiment.goals[1].name",
            "defined twice",
        ),
    ];
    for (section, path, message) in cases {
        let errors = errors(&format!("{GOOD}{section}"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, path, "{errors:?}");
        assert!(errors[0].message.contains(message), "{}", errors[0].message);
        if path != "routes[0].experiment" {
            assert!(errors[0].position.is_some(), "{path}: no line");
        }
    }
}

#[test]
fn flag_errors_name_the_key_and_its_line() {
    let flag = "\n[[flags]]\nname = \"new-checkout\"\npercent = 10\nkey = { header = \"x-user-id\" }\nroutes = [\"web\"]\n";
    let config = Config::parse(&format!("{GOOD}{flag}"), "t.toml").expect("valid");
    assert_eq!(config.table_spec().flags[0].percent, 10.0);
    let cases = [
        (
            flag.replace("percent = 10", "percent = 120"),
            "flags[0].percent",
            "between 0 and 100",
        ),
        (
            flag.replace("[\"web\"]", "[\"shop\"]"),
            "flags[0].routes",
            "route 'shop' does not exist",
        ),
        (
            flag.replace("header = \"x-user-id\"", "header = \"bad header\""),
            "flags[0].key",
            "not a header name",
        ),
        (
            format!("{flag}  [flags.guard]\n  alpha = 2.0\n"),
            "flags[0].guard.alpha",
            "between 0 and 1",
        ),
    ];
    for (section, path, message) in cases {
        let errors = errors(&format!("{GOOD}{section}"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, path, "{errors:?}");
        assert!(errors[0].message.contains(message), "{}", errors[0].message);
        assert!(errors[0].position.is_some(), "{path}: no line");
    }
}

#[test]
fn exact_paths_methods_and_header_patterns_reach_the_table() {
    let text = GOOD.replace(
        "name = \"web\"\n",
        "name = \"web\"\npath = \"/login\"\nmatch_method = \"post\"\nmatch_headers_regex = { \"x-user\" = \"beta-.*\" }\n",
    );
    let spec = Config::parse(&text, "t.toml").expect("valid").table_spec();
    let web = &spec.routes[0];
    assert_eq!((web.path_prefix.as_str(), web.path_exact), ("/login", true));
    assert_eq!(web.match_method.as_deref(), Some("post"));
    switchyard_proxy::RoutingTable::build(spec, 1).expect("table");
    let both = GOOD.replace(
        "name = \"web\"\n",
        "name = \"web\"\npath = \"/a\"\npath_prefix = \"/b\"\n",
    );
    assert_eq!(errors(&both)[0].path, "routes[0].path");
    let bad = GOOD.replace(
        "name = \"web\"\n",
        "name = \"web\"\nmatch_method = \"GE T\"\nmatch_headers_regex = { \"x\" = \"(\" }\n",
    );
    let found: Vec<String> = errors(&bad).into_iter().map(|e| e.path).collect();
    assert_eq!(
        found,
        ["routes[0].match_headers", "routes[0].match_method"],
        "{found:?}"
    );
}
