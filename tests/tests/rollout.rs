//! Progressive rollout: a failing or slow canary is rolled back, a healthy
//! one walks every step and is promoted, too little traffic holds, and a
//! manual change pauses the rollout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;
use switchyard_tests::admin::{weight, AdminClient};
use switchyard_tests::killable::Killable;
use switchyard_tests::*;

const INTERVAL_MS: u64 = 200;

fn rollout_config(stable: &Killable, canary: &Killable, policy: &str) -> String {
    config(&format!(
        r#"[[routes]]
name = "web"
  [routes.rollout]
  canary = "canary"
  baseline = "stable"
  steps = [20, 50, 100]
  interval = "{INTERVAL_MS}ms"
  min_requests = 15
  {policy}
  [[routes.versions]]
  name = "stable"
  weight = 100
  endpoints = ["{}"]
  [[routes.versions]]
  name = "canary"
  weight = 0
  endpoints = ["{}"]
"#,
        stable.endpoint(),
        canary.endpoint()
    ))
}

/// Sends requests from 4 clients until stopped (at most 30 s).
struct Traffic {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(proxy: &TestProxy) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + Duration::from_secs(30);
        let tasks = (0..4)
            .map(|_| {
                let (url, stop) = (proxy.url("/"), Arc::clone(&stop));
                tokio::spawn(async move {
                    let client = client();
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let _ = send(
                            &client,
                            http::Request::get(&url).body(empty()).expect("req"),
                        )
                        .await;
                    }
                })
            })
            .collect();
        Traffic { stop, tasks }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn rollout(admin: &AdminClient, action: Option<&str>) -> Value {
    let (method, path) = match action {
        Some(action) => (Method::POST, format!("/api/v1/routes/web/rollout/{action}")),
        None => (Method::GET, "/api/v1/routes/web/rollout".to_owned()),
    };
    let reply = admin.call(method, &path, None, None).await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    reply.json()
}

/// Polls the rollout until its state is one of `states` (15 s at most).
async fn wait_state(admin: &AdminClient, states: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = rollout(admin, None).await;
        if states.iter().any(|s| status["state"] == *s) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "rollout never reached {states:?}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts the rollout under traffic and waits until it rolls back or
/// completes: the admin client and the final status.
async fn run_to_end(proxy: &TestProxy) -> (AdminClient, Value) {
    let admin = AdminClient::new(proxy.running.admin_addr, None);
    let traffic = Traffic::start(proxy);
    rollout(&admin, Some("start")).await;
    let status = wait_state(&admin, &["rolled_back", "completed"]).await;
    traffic.stop().await;
    (admin, status)
}

async fn history(admin: &AdminClient) -> Vec<Value> {
    let body = admin
        .call(Method::GET, "/api/v1/history", None, None)
        .await
        .json();
    body["changes"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erroring_canary_is_rolled_back() {
    let stable = Killable::start("stable").await;
    let canary = Killable::start("canary").await;
    canary.fail_every(5); // 20 % answered with 500
    let proxy = start_proxy(&rollout_config(&stable, &canary, "max_error_rate = 0.05")).await;
    let admin = AdminClient::new(proxy.running.admin_addr, None);
    let traffic = Traffic::start(&proxy);
    let started = Instant::now();
    rollout(&admin, Some("start")).await;
    let status = wait_state(&admin, &["rolled_back", "completed"]).await;
    let took = started.elapsed();
    traffic.stop().await;
    assert_eq!(status["state"], "rolled_back", "{status}");
    assert_eq!(status["last_verdict"]["decision"], "rollback");
    assert_eq!(
        status["last_verdict"]["step"], 0,
        "advanced before rolling back: {status}"
    );
    let observed = status["last_verdict"]["canary"]["error_rate"]
        .as_f64()
        .unwrap_or_default();
    assert!(
        (0.1..=0.3).contains(&observed),
        "observed error rate {observed}"
    );
    // Within two intervals, plus slack for a loaded debug build.
    assert!(
        took < Duration::from_millis(2 * INTERVAL_MS) + Duration::from_secs(2),
        "took {took:?}"
    );

    let (_, routes) = admin.routes().await;
    assert_eq!(weight(&routes, "web", "canary"), 0);
    let counts = count_by(&load(&proxy, "/", 50, 2).await, "x-switchyard-version");
    assert_eq!(counts.get("stable"), Some(&50), "{counts:?}");
    let changes = history(&admin).await;
    let verdict = changes
        .iter()
        .rev()
        .find(|c| c["source"] == "auto")
        .cloned()
        .unwrap_or_default();
    let reason = verdict["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("error rate") && reason.contains('%'),
        "{verdict}"
    );
    assert_eq!(verdict["after"]["canary"], 0);
    let metrics = admin.call(Method::GET, "/metrics", None, None).await.text();
    assert!(
        metrics.contains("switchyard_rollout_state{route=\"web\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("switchyard_rollout_decisions_total{decision=\"rollback\",route=\"web\"} 1"),
        "{metrics}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_canary_is_rolled_back_on_p99_ratio() {
    let stable = Killable::start("stable").await;
    let canary = Killable::start("canary").await;
    // 4x slower; delays large against the proxy's own (debug-build,
    // shared-CPU) overhead, so the ratio stays clear of 1.5.
    stable.set_delay(Duration::from_millis(10));
    canary.set_delay(Duration::from_millis(40));
    let proxy = start_proxy(&rollout_config(&stable, &canary, "max_p99_ratio = 1.5")).await;
    let (admin, status) = run_to_end(&proxy).await;
    assert_eq!(status["state"], "rolled_back", "{status}");
    let reason = status["last_verdict"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("p99") && reason.contains("baseline"),
        "{reason}"
    );
    assert_eq!(weight(&admin.routes().await.1, "web", "canary"), 0);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_canary_walks_every_step_and_is_promoted() {
    let stable = Killable::start("stable").await;
    let canary = Killable::start("canary").await;
    let proxy = start_proxy(&rollout_config(&stable, &canary, "max_p99 = \"2s\"")).await;
    let (admin, status) = run_to_end(&proxy).await;
    assert_eq!(status["state"], "completed", "{status}");
    let (_, routes) = admin.routes().await;
    assert_eq!(
        (
            weight(&routes, "web", "canary"),
            weight(&routes, "web", "stable")
        ),
        (100, 0)
    );
    let steps: Vec<u64> = history(&admin)
        .await
        .iter()
        .filter(|c| c["who"] == "rollout" && c["action"] == "weights")
        .filter_map(|c| c["after"]["canary"].as_u64())
        .collect();
    // Step 3 already gives canary 100: promotion changes no weight after it.
    assert_eq!(steps, vec![20, 50, 100]);
    let verdict = rollout(&admin, None).await["last_verdict"].clone();
    assert_eq!(verdict["decision"], "complete", "{verdict}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_little_traffic_holds() {
    let stable = Killable::start("stable").await;
    let canary = Killable::start("canary").await;
    let proxy = start_proxy(&rollout_config(&stable, &canary, "")).await;
    let admin = AdminClient::new(proxy.running.admin_addr, None);
    rollout(&admin, Some("start")).await;
    // A trickle: far below min_requests per step.
    for _ in 0..5 {
        proxy.get("/").await;
        tokio::time::sleep(Duration::from_millis(INTERVAL_MS)).await;
    }
    // The controller holds on its own ticks, an interval after the step's
    // observation began: a busy machine may not have ticked that far yet.
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        let status = rollout(&admin, None).await;
        if status["last_verdict"]["decision"] == "hold" || status["state"] != "running" {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the rollout never held: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["step"], 1);
    assert_eq!(status["last_verdict"]["decision"], "hold", "{status}");
    assert_eq!(weight(&admin.routes().await.1, "web", "canary"), 20);
    assert!(history(&admin).await.iter().any(|c| c["action"] == "hold"));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_change_pauses_and_abort_rolls_back() {
    let stable = Killable::start("stable").await;
    let canary = Killable::start("canary").await;
    let proxy = start_proxy(&rollout_config(&stable, &canary, "")).await;
    let admin = AdminClient::new(proxy.running.admin_addr, None);
    rollout(&admin, Some("start")).await;
    let (revision, _) = admin.routes().await;
    let reply = admin
        .set_weights("web", revision, r#"{"canary": 40, "stable": 60}"#)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let status = rollout(&admin, None).await;
    assert_eq!(status["state"], "paused", "{status}");
    let reply = admin
        .call(Method::POST, "/api/v1/routes/web/rollout/pause", None, None)
        .await;
    assert_eq!(reply.status, 409, "{}", reply.text());
    rollout(&admin, Some("resume")).await;
    let status = rollout(&admin, Some("abort")).await;
    assert_eq!(status["state"], "aborted");
    assert_eq!(weight(&admin.routes().await.1, "web", "canary"), 0);
    let reply = admin
        .call(
            Method::POST,
            "/api/v1/routes/nope/rollout/start",
            None,
            None,
        )
        .await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statistical_judge_rolls_back_a_slower_canary_with_its_evidence() {
    let stable = Killable::start("stable").await;
    let canary = Killable::start("canary").await;
    stable.set_delay(Duration::from_millis(10));
    canary.set_delay(Duration::from_millis(25));
    let policy = "judge = \"statistical\"\n  alpha = 0.05\n  max_latency_shift = \"5ms\"";
    let proxy = start_proxy(&rollout_config(&stable, &canary, policy)).await;
    let (admin, status) = run_to_end(&proxy).await;
    assert_eq!(status["state"], "rolled_back", "{status}");
    let verdict = &status["last_verdict"];
    let reason = verdict["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("Mann–Whitney") && reason.contains("5.000 ms"),
        "{reason}"
    );
    let statistics = &verdict["statistics"];
    let shift = statistics["latency"]["shift_ms"]["estimate"]
        .as_f64()
        .unwrap_or(0.0);
    assert!((10.0..25.0).contains(&shift), "{statistics}");
    assert!(
        statistics["latency"]["p_value"].as_f64().unwrap_or(1.0)
            < statistics["level_this_look"].as_f64().unwrap_or(0.0)
    );
    assert!(statistics["canary_requests"].as_u64().unwrap_or(0) >= 15);
    // The history carries the same evidence, in words.
    let changes = history(&admin).await;
    let rollback = changes
        .iter()
        .rev()
        .find(|c| c["who"] == "rollout" && c["after"]["canary"] == 0)
        .cloned()
        .unwrap_or_default();
    assert!(
        rollback["reason"]
            .as_str()
            .is_some_and(|r| r.contains("p = ")),
        "{changes:?}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statistical_judge_promotes_an_equal_canary() {
    let stable = Killable::start("stable").await;
    let canary = Killable::start("canary").await;
    stable.set_delay(Duration::from_millis(5));
    canary.set_delay(Duration::from_millis(5));
    let policy = "judge = \"statistical\"\n  max_latency_shift = \"20%\"";
    let proxy = start_proxy(&rollout_config(&stable, &canary, policy)).await;
    let (admin, status) = run_to_end(&proxy).await;
    assert_eq!(status["state"], "completed", "{status}");
    // The steps with baseline traffic passed on the tests' evidence (the
    // last one, all canary, has no baseline to compare with).
    let changes = history(&admin).await;
    let judged = changes.iter().any(|c| {
        c["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no evidence the canary is worse"))
    });
    assert!(judged, "{changes:?}");
    proxy.shutdown().await;
}
