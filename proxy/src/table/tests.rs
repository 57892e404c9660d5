//! Tests of table building, matching and swapping; `route` and `version`
//! build specs for the other modules' tests too.

use super::*;
use crate::shadow::ShadowSpec;

pub fn version(name: &str, weight: u32, endpoints: &[&str]) -> VersionSpec {
    VersionSpec {
        name: name.into(),
        weight,
        endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
        ..VersionSpec::default()
    }
}

pub fn route(
    name: &str,
    host: Option<&str>,
    prefix: &str,
    versions: Vec<VersionSpec>,
) -> RouteSpec {
    RouteSpec {
        name: name.into(),
        host: host.map(Into::into),
        path_prefix: prefix.into(),
        baseline: versions[0].name.clone(),
        versions,
        timeout: Duration::from_secs(1),
        ..RouteSpec::default()
    }
}

fn spec(routes: Vec<RouteSpec>) -> TableSpec {
    TableSpec {
        routes,
        settings: Settings::default(),
        flags: Vec::new(),
    }
}

#[test]
fn most_specific_route_wins() {
    let v = || vec![version("stable", 1, &["127.0.0.1:1"])];
    let table = RoutingTable::build(
        spec(vec![
            route("root", None, "/", v()),
            route("api", None, "/api", v()),
            route("host", Some("a.example.com"), "/", v()),
            route("wild", Some("*.example.com"), "/", v()),
        ]),
        1,
    )
    .expect("valid");
    let found = |host: &str, path: &str| table.find(host, path).map(|r| r.name.to_string());
    assert_eq!(found("x.org", "/api/v1").as_deref(), Some("api"));
    assert_eq!(found("x.org", "/other").as_deref(), Some("root"));
    assert_eq!(found("a.example.com", "/api").as_deref(), Some("host"));
    assert_eq!(found("b.example.com", "/x").as_deref(), Some("wild"));
}

#[test]
fn rejects_bad_specs() {
    let ok = || vec![version("stable", 1, &["127.0.0.1:1"])];
    let build = |routes| RoutingTable::build(spec(routes), 1).map(|_| ());
    assert!(matches!(
        build(vec![
            route("a", None, "/", ok()),
            route("a", None, "/x", ok())
        ]),
        Err(TableError::DuplicateRoute(_))
    ));
    assert!(matches!(
        build(vec![
            route("a", None, "/", ok()),
            route("b", Some("*"), "/", ok())
        ]),
        Err(TableError::DuplicateMatch { .. })
    ));
    assert!(matches!(
        build(vec![route(
            "a",
            None,
            "/",
            vec![version("s", 0, &["127.0.0.1:1"])]
        )]),
        Err(TableError::AllZero(_))
    ));
    assert!(matches!(
        build(vec![route("a", None, "/", vec![version("s", 1, &[])])]),
        Err(TableError::NoEndpoints { .. })
    ));
    assert!(matches!(
        build(vec![route(
            "a",
            None,
            "/",
            vec![
                version("s", 1, &["127.0.0.1:1"]),
                version("s", 1, &["127.0.0.1:2"])
            ]
        )]),
        Err(TableError::DuplicateVersion { .. })
    ));
    for bad in [
        "127.0.0.1",
        "nope nope:80",
        "127.0.0.1:0",
        "u@h:80",
        "1.2.3:80",
        "h:99999",
    ] {
        assert!(
            matches!(
                build(vec![route("a", None, "/", vec![version("s", 1, &[bad])])]),
                Err(TableError::BadEndpoint { .. })
            ),
            "{bad} accepted"
        );
    }
}

#[test]
fn duplicate_match_found_when_not_adjacent() {
    let v = || vec![version("stable", 1, &["127.0.0.1:1"])];
    let result = RoutingTable::build(
        spec(vec![
            route("a", Some("a.example.com"), "/x", v()),
            route("b", Some("b.example.com"), "/x", v()),
            route("c", Some("a.example.com"), "/x", v()),
        ]),
        1,
    );
    assert!(
        matches!(&result, Err(TableError::DuplicateMatch { first, second, .. }) if first == "a" && second == "c"),
        "{:?}",
        result.map(|_| ())
    );
}

#[test]
fn shadow_state_survives_swaps_by_route_and_name() {
    let shadow = |name: &str| ShadowSpec::new(name, vec!["127.0.0.1:9".into()]);
    let mut web = route(
        "web",
        None,
        "/",
        vec![version("stable", 1, &["127.0.0.1:1"])],
    );
    web.shadows = vec![shadow("next"), shadow("audit")];
    let handle = TableHandle::new(spec(vec![web])).expect("valid");
    let first = handle.load();
    let state = |t: &RoutingTable, name: &str| {
        t.route("web")
            .and_then(|r| r.shadow(name))
            .map(|s| s.state() as *const _)
    };
    let next = handle
        .update(|t| {
            let mut spec = t.spec().clone();
            spec.routes[0].versions[0].weight = 2;
            spec.routes[0].shadows.remove(1);
            Ok::<_, TableError>(spec)
        })
        .expect("valid");
    assert_eq!(state(&next, "next"), state(&first, "next"));
    assert_eq!(state(&next, "audit"), None);
    let back = handle.store(first.spec().clone()).expect("valid");
    assert_eq!(state(&back, "next"), state(&first, "next"));
    assert_ne!(state(&back, "audit"), state(&first, "audit"));

    let mut twice = first.spec().clone();
    twice.routes[0].shadows = vec![shadow("next"), shadow("next")];
    assert!(matches!(
        RoutingTable::build(twice, 1),
        Err(TableError::BadShadow { .. })
    ));
    let mut bad = first.spec().clone();
    bad.routes[0].shadows[0].percent = 200.0;
    let error = RoutingTable::build(bad, 1)
        .expect_err("invalid")
        .to_string();
    assert!(error.contains("shadow 'next': percent"), "{error}");
}

#[test]
fn update_bumps_revision_and_keeps_table_on_error() {
    let handle = TableHandle::new(spec(vec![route(
        "a",
        None,
        "/",
        vec![version("stable", 1, &["127.0.0.1:1"])],
    )]))
    .expect("valid");
    let before = handle.load();
    let failed = handle.update(|current| {
        let mut next = current.spec().clone();
        next.routes[0].versions[0].weight = 0;
        Ok::<_, TableError>(next)
    });
    assert!(failed.is_err());
    assert_eq!(handle.load().revision(), before.revision());
    let next = handle.store(before.spec().clone()).expect("valid");
    assert_eq!(next.revision(), before.revision() + 1);
}

#[test]
fn header_routes_win_over_the_same_host_and_prefix() {
    let v = || vec![version("stable", 1, &["127.0.0.1:1"])];
    let mut beta = route("beta", None, "/", v());
    beta.match_headers = vec![("x-beta".into(), "1".into())];
    let mut beta_qa = route("beta-qa", None, "/", v());
    beta_qa.match_headers = vec![
        ("x-beta".into(), "1".into()),
        ("x-team".into(), "qa".into()),
    ];
    let table = RoutingTable::build(
        spec(vec![route("web", None, "/", v()), beta, beta_qa.clone()]),
        1,
    )
    .expect("valid");
    let found = |pairs: &[(&'static str, &'static str)]| {
        let mut headers = http::HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, http::HeaderValue::from_static(value));
        }
        table
            .find_request("x.org", &http::Method::GET, "/", &headers)
            .map(|r| r.name.to_string())
    };
    assert_eq!(found(&[]).as_deref(), Some("web"));
    assert_eq!(found(&[("x-beta", "1")]).as_deref(), Some("beta"));
    assert_eq!(found(&[("x-beta", "2")]).as_deref(), Some("web"));
    assert_eq!(
        found(&[("x-beta", "1"), ("x-team", "qa")]).as_deref(),
        Some("beta-qa")
    );
    assert_eq!(table.find("x.org", "/").map(|r| &*r.name), Some("web"));

    let mut again = beta_qa;
    again.name = "again".into();
    again.match_headers.reverse();
    let result = RoutingTable::build(
        spec(vec![route("web", None, "/", v()), again, {
            let mut r = route("beta-qa", None, "/", v());
            r.match_headers = vec![
                ("x-team".into(), "qa".into()),
                ("x-beta".into(), "1".into()),
            ];
            r
        }]),
        1,
    );
    assert!(
        matches!(&result, Err(TableError::DuplicateMatch { headers, .. }) if headers == "x-beta: 1, x-team: qa"),
        "{:?}",
        result.map(|_| ())
    );
}

#[test]
fn check_reports_every_problem_by_config_path() {
    let mut bad = route(
        "a b",
        Some("bad host!"),
        "x",
        vec![
            version("s", 0, &["nowhere"]),
            version("s", crate::split::MAX_WEIGHT + 1, &[]),
        ],
    );
    bad.baseline = "gone".into();
    bad.health_check = Some(crate::health::HealthCheckSpec {
        path: "healthz".into(),
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        healthy_threshold: 1,
        unhealthy_threshold: 0,
    });
    let good = route("ok", None, "/", vec![version("s", 1, &["127.0.0.1:1"])]);
    let problems = RoutingTable::check(&spec(vec![good.clone(), bad]));
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "routes[1].name",
            "routes[1].host",
            "routes[1].path_prefix",
            "routes[1].versions[0].endpoints[0]",
            "routes[1].versions[1].name",
            "routes[1].versions[1].weight",
            "routes[1].versions[1].endpoints",
            "routes[1].baseline",
            "routes[1].health_check.path",
            "routes[1].health_check.unhealthy_threshold",
        ]
    );
    assert!(matches!(
        problems[3].error,
        TableError::BadEndpoint { ref endpoint, .. } if endpoint == "nowhere"
    ));
    assert!(RoutingTable::check(&spec(vec![good])).is_empty());
}
