//! Sampling, spec checks, in-flight places and the mismatch log.

use super::state::InFlight;
use super::*;
use http::StatusCode;
use std::time::SystemTime;

fn build(spec: &ShadowSpec) -> Result<Shadow, String> {
    Shadow::build("web", spec, Duration::from_secs(1), None)
}

fn spec() -> ShadowSpec {
    ShadowSpec::new("next", vec!["127.0.0.1:9003".into()])
}

#[test]
fn sampling_is_exact_over_any_full_window() {
    for (percent, every) in [(25.0, 4usize), (50.0, 2), (10.0, 10), (0.5, 200)] {
        let shadow = build(&ShadowSpec { percent, ..spec() }).expect("valid");
        let hits = (0..every * 100).filter(|_| shadow.sampled()).count();
        assert_eq!(hits, 100, "{percent}%");
    }
    let none = build(&ShadowSpec {
        percent: 0.0,
        ..spec()
    })
    .expect("valid");
    assert!((0..1000).all(|_| !none.sampled()));
    let all = build(&spec()).expect("valid");
    assert!((0..1000).all(|_| all.sampled()));
    // 100 % never touches the shared counter.
    assert_eq!(all.state.sampled.load(Ordering::Relaxed), 0);
    let fraction = build(&ShadowSpec {
        percent: 33.3,
        ..spec()
    })
    .expect("valid");
    let hits = (0..10_000).filter(|_| fraction.sampled()).count();
    assert!((3329..=3331).contains(&hits), "{hits}");
}

#[test]
fn rejects_bad_specs_with_the_reason() {
    let bad = |spec: ShadowSpec, needle: &str| {
        let error = build(&spec).expect_err("should fail");
        assert!(error.contains(needle), "{error}");
    };
    bad(
        ShadowSpec {
            name: "a b".into(),
            ..spec()
        },
        "name",
    );
    bad(
        ShadowSpec {
            endpoints: vec![],
            ..spec()
        },
        "endpoints",
    );
    bad(
        ShadowSpec {
            endpoints: vec!["x".into()],
            ..spec()
        },
        "'x'",
    );
    bad(
        ShadowSpec {
            percent: 100.5,
            ..spec()
        },
        "0 to 100",
    );
    bad(
        ShadowSpec {
            percent: f64::NAN,
            ..spec()
        },
        "0 to 100",
    );
    bad(
        ShadowSpec {
            methods: vec!["get".into()],
            ..spec()
        },
        "'GET'",
    );
    bad(
        ShadowSpec {
            methods: vec!["G ET".into()],
            ..spec()
        },
        "method",
    );
    bad(
        ShadowSpec {
            methods: vec![],
            ..spec()
        },
        "methods",
    );
    bad(
        ShadowSpec {
            max_in_flight: 0,
            ..spec()
        },
        "max_in_flight",
    );
    bad(
        ShadowSpec {
            strip_headers: vec!["a:b".into()],
            ..spec()
        },
        "header",
    );
    bad(
        ShadowSpec {
            compare_ignore_body: true,
            ..spec()
        },
        "compare = true",
    );
    assert!(parse_method("PURGE").is_ok());
    let problems = check(&ShadowSpec {
        endpoints: vec!["127.0.0.1:1".into(), "nope".into()],
        methods: vec!["GET".into(), "post".into()],
        percent: -1.0,
        ..spec()
    });
    let keys: Vec<String> = problems
        .iter()
        .map(|p| format!("{}{:?}", p.key, p.index))
        .collect();
    assert_eq!(keys, ["endpointsSome(1)", "percentNone", "methodsSome(1)"]);
}

#[test]
fn in_flight_places_are_bounded_and_returned() {
    let state = Arc::new(ShadowState::new("web", "next"));
    let held: Vec<InFlight> = (0..3)
        .filter_map(|_| InFlight::acquire(&state, 3))
        .collect();
    assert_eq!(held.len(), 3);
    assert!(InFlight::acquire(&state, 3).is_none());
    drop(held);
    assert_eq!(state.in_flight(), 0);
}

#[test]
fn mismatch_log_keeps_the_last_hundred() {
    let state = ShadowState::new("web", "next");
    for i in 0..150u16 {
        state.log(Mismatch {
            time: SystemTime::now(),
            method: Method::GET,
            path: format!("/{i}"),
            primary_status: StatusCode::OK,
            shadow_status: StatusCode::OK,
            kind: ShadowResult::BodyMismatch,
        });
    }
    let log = state.mismatches();
    assert_eq!(log.len(), MISMATCH_LOG);
    assert_eq!(log[0].path, "/50");
    assert_eq!(log[99].path, "/149");
}

#[test]
fn result_labels_are_distinct() {
    let labels: std::collections::HashSet<&str> =
        ShadowResult::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(labels.len(), ShadowResult::COUNT);
    for (i, result) in ShadowResult::ALL.iter().enumerate() {
        assert_eq!(*result as usize, i);
    }
}
