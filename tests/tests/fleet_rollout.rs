//! The fleet's one rollout judge, end to end: a real etcd, three real
//! replicas in this process, real backends. The judge (the replica holding
//! `{prefix}/leader`) decides on every replica's published figures merged
//! exactly, changes the fleet's weights, and keeps the rollout's record in
//! etcd; when it stops, another replica takes over the same step.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use serde_json::Value;
use switchyard_tests::admin::{weight, AdminClient};
use switchyard_tests::etcd::Etcd;
use switchyard_tests::killable::Killable;
use switchyard_tests::*;

/// One replica of the fleet at `prefix`: route `web` (stable 100, canary 0
/// at `canary`) with a rollout `policy`.
fn replica(
    etcd: &Etcd,
    prefix: &str,
    name: &str,
    stable: &Backend,
    canary: &str,
    policy: &str,
) -> String {
    config(&format!(
        "[cluster]\netcd = [\"{}\"]\nprefix = \"{prefix}\"\nname = \"{name}\"\nlease_ttl = \"2s\"\npublish_interval = \"200ms\"\n\n{}",
        etcd.client_url,
        route("web")
            .section(&format!(
                "  [routes.rollout]\n  canary = \"canary\"\n  baseline = \"stable\"\n{policy}"
            ))
            .backend("stable", 100, stable)
            .version("canary", 0, &[canary.to_owned()])
            .build()
    ))
}

fn admin(proxy: &TestProxy) -> AdminClient {
    AdminClient::new(proxy.running.admin_addr, None)
}

async fn cluster(proxy: &TestProxy) -> Value {
    let reply = admin(proxy)
        .call(Method::GET, "/api/v1/status", None, None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["cluster"].clone()
}

/// Waits until `proxy` is connected and the fleet's leader is known to it.
async fn leader_seen_by(proxy: &TestProxy) -> String {
    eventually(Duration::from_secs(15), "a leader is elected", || async {
        let cluster = cluster(proxy).await;
        (cluster["state"] == "connected")
            .then(|| cluster["leader"].as_str().map(str::to_owned))
            .flatten()
    })
    .await
}

async fn rollout(proxy: &TestProxy, action: &str) -> Reply {
    admin(proxy)
        .call(
            Method::POST,
            &format!("/api/v1/routes/web/rollout/{action}"),
            None,
            None,
        )
        .await
}

/// Sends requests through `proxies` in the background until stopped (at
/// most `limit`), so that every replica has traffic to publish.
fn traffic(proxies: Vec<(std::net::SocketAddr, String)>, limit: Duration) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    tokio::spawn(async move {
        let client = client();
        let deadline = std::time::Instant::now() + limit;
        while !stopped.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
            for (addr, path) in &proxies {
                let _ = get(&client, &format!("http://{addr}{path}")).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    stop
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_behind_one_replica_is_rolled_back_by_the_judge_on_the_fleets_figures() {
    let etcd = Etcd::start_with("judge", false).await;
    let prefix = "/switchyard/judge";
    let stable = backend("stable").start().await;
    let good = backend("canary").start().await;
    let bad = Killable::start("canary").await;
    bad.fail_every(1);
    let policy =
        "  steps = [50, 100]\n  interval = \"3s\"\n  min_requests = 20\n  max_error_rate = 0.05\n";
    // A starts first and leads; C's canary fails, A's and B's do not.
    let a = start_proxy(&replica(
        &etcd,
        prefix,
        "a",
        &stable,
        &good.endpoint(),
        policy,
    ))
    .await;
    assert_eq!(leader_seen_by(&a).await, "a");
    let b = start_proxy(&replica(
        &etcd,
        prefix,
        "b",
        &stable,
        &good.endpoint(),
        policy,
    ))
    .await;
    let c = start_proxy(&replica(
        &etcd,
        prefix,
        "c",
        &stable,
        &bad.endpoint(),
        policy,
    ))
    .await;
    for proxy in [&b, &c] {
        assert_eq!(leader_seen_by(proxy).await, "a");
    }

    // Started through a replica that does not judge: the record is the
    // fleet's, so every replica shows it running.
    let started = rollout(&b, "start").await;
    assert_eq!(started.status, 200, "{}", started.text());
    for proxy in [&a, &b, &c] {
        eventually(
            Duration::from_secs(5),
            "the rollout runs everywhere",
            || async {
                (admin(proxy).rollout_status("web").await["state"] == "running").then_some(())
            },
        )
        .await;
        admin(proxy).wait_for_weight("web", "canary", 50).await;
    }
    // A second start through another replica is refused: it is running.
    assert_eq!(rollout(&c, "start").await.status, 409);

    let stop = traffic(
        vec![
            (a.running.data_addr, "/".into()),
            (c.running.data_addr, "/".into()),
        ],
        Duration::from_secs(40),
    );
    let status = eventually(Duration::from_secs(30), "the judge rolls back", || async {
        let status = admin(&b).rollout_status("web").await;
        (status["state"] == "rolled_back").then_some(status)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let verdict = &status["last_verdict"];
    assert_eq!(verdict["decision"], "rollback", "{status}");
    assert!(
        verdict["reason"]
            .as_str()
            .is_some_and(|r| r.contains("error rate")),
        "{status}"
    );
    assert_eq!(status["judge"]["leader"], "a", "{status}");
    // The judge's own replica saw no canary error: it decided on C's.
    let own = admin(&a)
        .call(Method::GET, "/api/v1/stats", None, None)
        .await
        .json();
    let canary_errors_at_a = own["routes"][0]["versions"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["version"] == "canary").cloned())
        .map_or(0, |v| v["errors"].as_u64().unwrap_or(0));
    assert_eq!(canary_errors_at_a, 0, "{own}");
    assert!(
        verdict["canary"]["error_rate"].as_f64().unwrap_or(0.0) > 0.05,
        "{status}"
    );
    // Rolled back fleet-wide: canary at 0 on every replica.
    for proxy in [&a, &b, &c] {
        admin(proxy).wait_for_weight("web", "canary", 0).await;
    }
    // Any replica answers the fleet's merged figures.
    let fleet = admin(&b)
        .call(Method::GET, "/api/v1/stats?scope=fleet", None, None)
        .await;
    assert_eq!(fleet.status, 200, "{}", fleet.text());
    let fleet = fleet.json();
    let replicas = fleet["fleet"]["replicas"].as_array().map_or(0, Vec::len);
    assert_eq!(replicas, 3, "{fleet}");
    let canary = fleet["routes"][0]["versions"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["version"] == "canary").cloned())
        .unwrap_or_default();
    assert!(canary["errors"].as_u64().unwrap_or(0) > 0, "{fleet}");
    // A window other than the published one is refused with the reason.
    let refused = admin(&b)
        .call(
            Method::GET,
            "/api/v1/stats?scope=fleet&window=5s",
            None,
            None,
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(refused.text().contains("publishes"), "{}", refused.text());
    for proxy in [a, b, c] {
        proxy.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_judge_stops_another_replica_continues_the_same_step() {
    let etcd = Etcd::start_with("takeover", false).await;
    let prefix = "/switchyard/takeover";
    let stable = backend("stable").start().await;
    let canary = backend("canary").start().await;
    let policy = "  steps = [10, 50, 100]\n  interval = \"2s\"\n  min_requests = 5\n  max_error_rate = 0.05\n";
    let config = |name| replica(&etcd, prefix, name, &stable, &canary.endpoint(), policy);
    let a = start_proxy(&config("a")).await;
    assert_eq!(leader_seen_by(&a).await, "a");
    let b = start_proxy(&config("b")).await;
    let c = start_proxy(&config("c")).await;
    for proxy in [&b, &c] {
        assert_eq!(leader_seen_by(proxy).await, "a");
    }
    let stop = traffic(
        vec![
            (b.running.data_addr, "/".into()),
            (c.running.data_addr, "/".into()),
        ],
        Duration::from_secs(60),
    );
    let started = rollout(&c, "start").await;
    assert_eq!(started.status, 200, "{}", started.text());
    eventually(
        Duration::from_secs(20),
        "the judge advances to step 2",
        || async { (admin(&b).rollout_status("web").await["step"] == 2).then_some(()) },
    )
    .await;

    // The judge stops mid-step; its lease expires and B or C takes over.
    a.shutdown().await;
    let successor = eventually(Duration::from_secs(15), "another replica leads", || async {
        let leader = cluster(&b).await["leader"].as_str().map(str::to_owned);
        leader.filter(|l| l != "a")
    })
    .await;
    assert!(["b", "c"].contains(&successor.as_str()), "{successor}");
    let status = admin(&c).rollout_status("web").await;
    assert_eq!(status["state"], "running", "{status}");
    assert!(
        status["step"].as_u64().unwrap_or(0) >= 2,
        "the successor went back: {status}"
    );

    // It continues: the rollout completes and the canary is promoted.
    let status = eventually(Duration::from_secs(30), "the rollout completes", || async {
        let status = admin(&b).rollout_status("web").await;
        (status["state"] == "completed").then_some(status)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    assert_eq!(status["judge"]["leader"], successor.as_str(), "{status}");
    for proxy in [&b, &c] {
        let (_, routes) = admin(proxy).routes().await;
        assert_eq!(weight(&routes, "web", "canary"), 100, "{routes}");
    }
    // The history every replica shows names the rollout's steps.
    let changes = admin(&c).changes().await;
    let automatic = changes.iter().filter(|c| c["who"] == "rollout").count();
    assert!(automatic >= 3, "{changes:?}");
    for proxy in [b, c] {
        proxy.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_etcd_the_rollout_waits_and_says_so_then_continues() {
    let mut etcd = Etcd::start_with("rollout-outage", false).await;
    let prefix = "/switchyard/outage";
    let stable = backend("stable").start().await;
    let canary = backend("canary").start().await;
    let policy = "  steps = [10, 50, 100]\n  interval = \"1s\"\n  min_requests = 5\n  max_error_rate = 0.05\n";
    let a = start_proxy(&replica(
        &etcd,
        prefix,
        "a",
        &stable,
        &canary.endpoint(),
        policy,
    ))
    .await;
    assert_eq!(leader_seen_by(&a).await, "a");
    let stop = traffic(
        vec![(a.running.data_addr, "/".into())],
        Duration::from_secs(60),
    );
    let started = rollout(&a, "start").await;
    assert_eq!(started.status, 200, "{}", started.text());

    etcd.kill();
    let waiting = eventually(
        Duration::from_secs(10),
        "the judge says it waits",
        || async {
            let status = admin(&a).rollout_status("web").await;
            status["judge"]["waiting"].is_string().then_some(status)
        },
    )
    .await;
    assert_eq!(waiting["state"], "running", "{waiting}");
    let step = waiting["step"].clone();
    // Three intervals without etcd: no decision, traffic still served.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = admin(&a).rollout_status("web").await;
    assert_eq!(still["step"], step, "decided without the fleet: {still}");
    assert_eq!(a.get("/").await.status, 200);

    etcd.spawn().await;
    eventually(
        Duration::from_secs(30),
        "the rollout completes after etcd returns",
        || async { (admin(&a).rollout_status("web").await["state"] == "completed").then_some(()) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    a.shutdown().await;
}
