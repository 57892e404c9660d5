//! `switchyard demo` end to end, started in-process the way the binary
//! starts it: its background traffic reaches the backends, the shadow's
//! compare shows matches and mismatches on the one designated path only, the
//! demo endpoint refuses bad input and changes nothing, and a canary made bad
//! through it is rolled back by the rollout on its own within seconds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;
use switchyard_control::ctl::{Ctl, CtlCommand};
use switchyard_control::demo::{self, DemoOptions};
use switchyard_tests::admin::{weight, AdminClient};
use switchyard_tests::*;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn shadow<'a>(shadows: &'a Value, route: &str, name: &str) -> &'a Value {
    shadows["shadows"]
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|s| s["route"] == route && s["name"] == name)
        })
        .unwrap_or_else(|| panic!("no shadow {route}/{name} in {shadows}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_moves_by_itself_and_rolls_a_bad_canary_back_on_its_own() {
    let demo = bounded(
        Duration::from_secs(10),
        "starting the demo",
        demo::start(DemoOptions {
            data: loopback(),
            admin: loopback(),
            traffic: Some(demo::traffic::DEFAULT_RATE),
        }),
    )
    .await
    .unwrap_or_else(|e| panic!("demo did not start: {e}"));
    let admin = AdminClient::new(demo.running.admin_addr, None);
    let (stable, canary, green) = (
        demo.backend("stable").expect("stable").clone(),
        demo.backend("canary").expect("canary").clone(),
        demo.backend("green").expect("green").clone(),
    );

    // Nobody sends a request: the demo's own traffic reaches both versions
    // with weight (and the canary gets the API's shadow copies too).
    eventually(Duration::from_secs(15), "background traffic", || async {
        (stable.requests() > 100 && canary.requests() > 20).then_some(())
    })
    .await;
    assert_eq!(green.requests(), 0, "green has weight 0");
    let traffic = demo.traffic.as_ref().expect("traffic is on");
    assert!(traffic.sent() > 100, "sent {}", traffic.sent());

    // Its shoppers: the experiment counts them on both versions, checkouts
    // included, and the flag turns on for some of them.
    eventually(Duration::from_secs(15), "shoppers counted", || async {
        let readout = admin
            .call(Method::GET, "/api/v1/experiments", None, None)
            .await
            .json();
        let rows = &readout["experiments"][0]["goals"][0]["variants"];
        let flags = admin
            .call(Method::GET, "/api/v1/flags", None, None)
            .await
            .json();
        let on = flags["flags"][0]["states"][0]["requests"]
            .as_u64()
            .unwrap_or(0);
        (rows[0]["conversions"].as_u64() > Some(0)
            && rows[1]["conversions"].as_u64() > Some(0)
            && on > 0)
            .then_some(())
    })
    .await;

    // The shadow compares: matches everywhere, mismatches on /api/prices.
    let shadows = eventually(Duration::from_secs(15), "shadow compare counts", || async {
        let reply = admin.call(Method::GET, "/api/v1/shadows", None, None).await;
        let body = reply.json();
        let counts = &shadow(&body, "api", "canary")["counts"];
        (counts["matched"].as_u64() > Some(20) && counts["body_mismatch"].as_u64() > Some(2))
            .then_some(body)
    })
    .await;
    let api_shadow = shadow(&shadows, "api", "canary");
    assert_eq!(api_shadow["compare"], true);
    assert_eq!(api_shadow["counts"]["status_mismatch"], 0, "{api_shadow}");
    let mismatches = api_shadow["mismatches"].as_array().expect("mismatches");
    assert!(!mismatches.is_empty());
    for mismatch in mismatches {
        assert_eq!(
            mismatch["path"],
            demo::backends::DIVERGENT_PATH,
            "{mismatch}"
        );
        assert_eq!(mismatch["kind"], "body_mismatch", "{mismatch}");
    }

    // Bad input: a clear 400 (or 404 for a backend that does not exist),
    // and the backend keeps its state.
    for (path, status, says) in [
        ("canary?error_rate=1.5", 400, "error_rate '1.5'"),
        ("canary?latency=soon", 400, "latency 'soon'"),
        (
            "canary?error_rate=0.2&speed=9",
            400,
            "unknown parameter 'speed'",
        ),
        ("canary", 400, "nothing to change"),
        ("blue?reset=true", 404, "no demo backend 'blue'"),
    ] {
        let reply = admin
            .call(
                Method::POST,
                &format!("/api/v1/demo/backends/{path}"),
                None,
                None,
            )
            .await;
        assert_eq!(reply.status, status, "{path}: {}", reply.text());
        let error = reply.json()["error"].as_str().unwrap_or("").to_owned();
        assert!(error.contains(says), "{path}: {error}");
    }
    let now = admin
        .call(Method::GET, "/api/v1/demo/backends/canary", None, None)
        .await
        .json();
    assert_eq!(
        (now["error_rate"].as_f64(), now["latency_ms"].as_f64()),
        (Some(0.0), Some(0.0))
    );

    // `switchyard ctl demo` over the same endpoint.
    let ctl = Ctl::new(&demo.running.admin_addr.to_string(), None, false);
    let demo_command = |error_rate: Option<&str>, latency: Option<&str>| CtlCommand::Demo {
        backend: Some("canary".into()),
        error_rate: error_rate.map(str::to_owned),
        latency: latency.map(str::to_owned),
        reset: false,
    };
    let refused = ctl
        .run(demo_command(Some("-1"), None))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        refused.contains("400") && refused.contains("error_rate '-1'"),
        "{refused}"
    );
    let text = ctl
        .run(demo_command(Some("0.2"), Some("80ms")))
        .await
        .unwrap_or_else(|e| panic!("ctl demo: {e}"));
    assert!(text.contains("error rate 20%, latency +80 ms"), "{text}");
    assert_eq!(canary.fault().error_rate, 0.2);

    // The tour's rollback: start the rollout on the bad canary; it rolls
    // back by itself.
    let started = admin
        .call(Method::POST, "/api/v1/routes/web/rollout/start", None, None)
        .await;
    assert_eq!(started.status, 200, "{}", started.text());
    let began = Instant::now();
    let status = eventually(Duration::from_secs(15), "automatic rollback", || async {
        let status = admin.rollout_status("web").await;
        (status["state"] != "running").then_some(status)
    })
    .await;
    eprintln!(
        "rolled back after {:?}: {}",
        began.elapsed(),
        status["last_verdict"]["reason"]
    );
    assert_eq!(status["state"], "rolled_back", "{status}");
    let reason = status["last_verdict"]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("rolled back at step 1: canary"), "{reason}");
    let (_, routes) = admin.routes().await;
    assert_eq!(weight(&routes, "web", "canary"), 0);
    assert_eq!(weight(&routes, "web", "stable"), 100);
    let changes = admin.changes().await;
    assert!(
        changes.iter().any(|c| c["who"] == "rollout"
            && c["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("rolled back"))),
        "{changes:?}"
    );

    // Healed again.
    let healed = ctl
        .run(CtlCommand::Demo {
            backend: Some("canary".into()),
            error_rate: None,
            latency: None,
            reset: true,
        })
        .await
        .unwrap_or_else(|e| panic!("ctl demo --reset: {e}"));
    assert!(healed.contains("healthy"), "{healed}");
    bounded(Duration::from_secs(20), "demo shutdown", demo.shutdown()).await;
}
