//! Backend health: passive ejection of failing endpoints, active checks
//! that take a dead version out (its share goes to the baseline) and bring
//! it back, and the connect-failure retry (GET yes, POST never).

use std::time::{Duration, Instant};

use http::Method;
use switchyard_tests::admin::AdminClient;
use switchyard_tests::killable::Killable;
use switchyard_tests::*;

fn endpoints(list: &[&str]) -> String {
    list.iter()
        .map(|e| format!("\"{e}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A route whose one version, `stable`, balances over `list`; `section` is
/// more of the route's table (TOML lines, or nothing).
fn pooled_route(section: &str, list: &[&str]) -> String {
    config(&format!(
        r#"[[routes]]
name = "web"
{section}  [[routes.versions]]
  name = "stable"
  weight = 1
  endpoints = [{}]
"#,
        endpoints(list)
    ))
}

/// A route of two single-endpoint versions whose endpoints are actively
/// checked every 100 ms; `threshold` failures (or passes) flip an endpoint.
fn checked_route(
    first: (&str, u32, &Killable),
    second: (&str, u32, &Killable),
    threshold: u32,
) -> String {
    let version = |(name, weight, backend): (&str, u32, &Killable)| {
        format!(
            "  [[routes.versions]]\n  name = \"{name}\"\n  weight = {weight}\n  endpoints = [{}]\n",
            endpoints(&[&backend.endpoint()])
        )
    };
    config(&format!(
        r#"[[routes]]
name = "web"
  [routes.health_check]
  path = "/healthz"
  interval = "100ms"
  timeout = "200ms"
  healthy_threshold = {threshold}
  unhealthy_threshold = {threshold}
{}{}"#,
        version(first),
        version(second)
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_endpoint_is_ejected_and_comes_back() {
    let sick = Killable::start("sick").await;
    let well = Killable::start("well").await;
    let toml = pooled_route(
        r#"  [routes.outlier_detection]
  consecutive_failures = 3
  base_ejection = "400ms"
  max_ejection = "2s"
"#,
        &[&sick.endpoint(), &well.endpoint()],
    );
    let proxy = start_proxy(&toml).await;
    sick.set_failing(true);
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(proxy.get("/").await.status.as_u16());
    }
    // Round-robin: the sick endpoint answers every other request until its
    // third failure ejects it; then nothing reaches it.
    assert_eq!(sick.hits(), 3, "statuses: {statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 500).count(), 3);
    assert_eq!(well.hits(), 37);

    // Healed, and the ejection over: it serves again.
    sick.set_failing(false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..20 {
        assert_eq!(proxy.get("/").await.status, 200);
    }
    assert!(
        sick.hits() >= 3 + 9,
        "sick endpoint got {} requests after recovery",
        sick.hits() - 3
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejection_never_takes_more_than_the_allowed_share() {
    let a = Killable::start("a").await;
    let b = Killable::start("b").await;
    let toml = pooled_route(
        r#"  [routes.outlier_detection]
  consecutive_failures = 2
  base_ejection = "10s"
  max_ejection_percent = 50
"#,
        &[&a.endpoint(), &b.endpoint()],
    );
    let proxy = start_proxy(&toml).await;
    a.set_failing(true);
    b.set_failing(true);
    for _ in 0..20 {
        proxy.get("/").await;
    }
    // One of two may be ejected (50 %); the other keeps getting traffic.
    let (ha, hb) = (a.hits(), b.hits());
    assert!(ha.min(hb) == 2 && ha.max(hb) == 18, "a={ha} b={hb}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_version_hands_its_share_to_stable_until_it_recovers() {
    let stable = Killable::start("stable").await;
    let mut canary = Killable::start("canary").await;
    let toml = checked_route(("stable", 50, &stable), ("canary", 50, &canary), 2);
    let proxy = start_proxy(&toml).await;
    let admin = AdminClient::new(proxy.running.admin_addr, None);
    let counts = count_by(&load(&proxy, "/", 100, 2).await, "x-switchyard-version");
    assert_eq!(counts.get("canary"), Some(&50), "{counts:?}");

    canary.kill().await;
    let routes = admin
        .wait_for_routes("the canary marked down", |routes| {
            routes["routes"][0]["versions"][1]["down"] == true
        })
        .await;
    assert_eq!(
        routes["routes"][0]["versions"][0]["effective_weight"], 100,
        "{routes}"
    );
    assert_eq!(
        routes["routes"][0]["versions"][1]["effective_weight"], 0,
        "{routes}"
    );
    let metrics = admin.call(Method::GET, "/metrics", None, None).await.text();
    assert!(
        metrics.contains("switchyard_route_effective_weight{route=\"web\",version=\"stable\"} 100"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "switchyard_endpoint_available{{endpoint=\"{}\",route=\"web\",version=\"canary\"}} 0",
            canary.endpoint()
        )),
        "{metrics}"
    );
    let before = canary.hits();
    let replies = load(&proxy, "/", 100, 2).await;
    assert!(replies.iter().all(|r| r.status == 200));
    let counts = count_by(&replies, "x-switchyard-version");
    assert_eq!(counts.get("stable"), Some(&100), "{counts:?}");
    assert_eq!(canary.hits(), before);
    // The check marks the endpoint down, then records the effect in the
    // history: the mark alone does not say the entry is there yet.
    let last = eventually(
        Duration::from_secs(10),
        "the health check's change in the history",
        || async {
            let changes = admin.changes().await;
            changes
                .last()
                .filter(|last| last["who"] == "health")
                .cloned()
        },
    )
    .await;
    assert_eq!(last["source"], "auto", "{last}");
    assert!(
        last["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&canary.endpoint())),
        "{last}"
    );

    canary.revive().await;
    admin
        .wait_for_routes("the canary back up", |routes| {
            routes["routes"][0]["versions"][1]["down"] == false
        })
        .await;
    let counts = count_by(&load(&proxy, "/", 100, 2).await, "x-switchyard-version");
    assert_eq!(counts.get("canary"), Some(&50), "{counts:?}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_retry_get_never_post() {
    let live = backend("live").start().await;
    let dead = refusing_port();
    let toml = pooled_route("", &[&dead.to_string(), &live.endpoint()]);
    let proxy = start_proxy(&toml).await;
    for _ in 0..10 {
        let reply = proxy.get("/").await;
        assert_eq!(reply.status, 200, "GET was not retried: {}", reply.text());
    }
    assert_eq!(live.hits(), 10);
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let req = http::Request::post(proxy.url("/"))
            .body(full("order"))
            .expect("req");
        let reply = send(&proxy.client, req).await.expect("reply");
        statuses.push(reply.status.as_u16());
    }
    // Round-robin sends every other POST to the dead endpoint: 502, never retried.
    assert_eq!(
        statuses.iter().filter(|s| **s == 502).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(live.hits(), 15);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flip_is_refused_while_the_target_fails_checks() {
    let blue = Killable::start("blue").await;
    let mut green = Killable::start("green").await;
    let toml = checked_route(("blue", 100, &blue), ("green", 0, &green), 1);
    let proxy = start_proxy(&toml).await;
    let admin = AdminClient::new(proxy.running.admin_addr, None);
    green.kill().await;
    let flip = r#"{"from": "blue", "to": "green"}"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = admin
            .call(Method::POST, "/api/v1/routes/web/flip", None, Some(flip))
            .await;
        if reply.status == 409 {
            assert!(
                reply.text().contains("fail health checks"),
                "{}",
                reply.text()
            );
            break;
        }
        // Not yet seen as down: undo and try again.
        assert!(
            Instant::now() < deadline,
            "flip to a dead version was never refused"
        );
        admin
            .call(Method::POST, "/api/v1/routes/web/rollback", None, None)
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    green.revive().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = admin
            .call(Method::POST, "/api/v1/routes/web/flip", None, Some(flip))
            .await;
        if reply.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "flip never allowed after recovery: {}",
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counts = count_by(&load(&proxy, "/", 20, 2).await, "x-switchyard-version");
    assert_eq!(counts.get("green"), Some(&20), "{counts:?}");
    // Rollback is instant and needs no check.
    let reply = admin
        .call(Method::POST, "/api/v1/routes/web/rollback", None, None)
        .await;
    assert_eq!(reply.status, 200);
    let counts = count_by(&load(&proxy, "/", 20, 2).await, "x-switchyard-version");
    assert_eq!(counts.get("blue"), Some(&20), "{counts:?}");
    proxy.shutdown().await;
}
