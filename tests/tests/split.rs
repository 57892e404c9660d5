//! Split exactness through the real proxy: 90/10 over 10,000 requests,
//! 80/15/5 across three versions, and weight 0 receiving nothing, counted
//! both from the response headers and at the backends themselves.

use std::time::Duration;

use http::StatusCode;
use switchyard_tests::*;

/// Concurrent keep-alive clients: enough to exercise the shared picker from
/// several connections, few enough for a busy 2-core machine.
const CLIENTS: usize = 8;

/// Sends `total` requests and returns the replies, all of which must be 200.
async fn run_split(proxy: &TestProxy, total: usize) -> Vec<Reply> {
    let replies = bounded(
        Duration::from_secs(180),
        "split load",
        load(proxy, "/", total, CLIENTS),
    )
    .await;
    assert_eq!(replies.len(), total);
    let failed: Vec<_> = replies
        .iter()
        .filter(|r| r.status != StatusCode::OK)
        .collect();
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    for reply in &replies {
        // The version the proxy named is the backend that answered.
        assert_eq!(
            reply.header("x-switchyard-version"),
            reply.header(BACKEND_HEADER)
        );
    }
    replies
}

fn assert_share(
    counts: &std::collections::BTreeMap<String, usize>,
    version: &str,
    total: usize,
    percent: f64,
) {
    let got = counts.get(version).copied().unwrap_or(0) as f64 * 100.0 / total as f64;
    assert!(
        (got - percent).abs() <= 0.5,
        "{version}: {got:.2}% of {total}, expected {percent}% ± 0.5 pp (all: {counts:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ninety_ten_over_ten_thousand_requests() {
    let stable = backend("stable").start().await;
    let canary = backend("canary").start().await;
    let proxy = start_proxy(&config(
        &route("web")
            .backend("stable", 90, &stable)
            .backend("canary", 10, &canary)
            .build(),
    ))
    .await;
    let total = 10_000;
    let replies = run_split(&proxy, total).await;
    let counts = count_by(&replies, "x-switchyard-version");
    assert_share(&counts, "stable", total, 90.0);
    assert_share(&counts, "canary", total, 10.0);
    assert_eq!(stable.hits(), counts["stable"]);
    assert_eq!(canary.hits(), counts["canary"]);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eighty_fifteen_five_across_three_versions() {
    let stable = backend("stable").start().await;
    let canary = backend("canary").start().await;
    let green = backend("green").start().await;
    let proxy = start_proxy(&config(
        &route("web")
            .backend("stable", 80, &stable)
            .backend("canary", 15, &canary)
            .backend("green", 5, &green)
            .build(),
    ))
    .await;
    let total = 4_000;
    let replies = run_split(&proxy, total).await;
    let counts = count_by(&replies, "x-switchyard-version");
    assert_share(&counts, "stable", total, 80.0);
    assert_share(&counts, "canary", total, 15.0);
    assert_share(&counts, "green", total, 5.0);
    assert_eq!(stable.hits() + canary.hits() + green.hits(), total);
    assert_eq!(green.hits(), counts["green"]);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_zero_receives_nothing() {
    let stable = backend("stable").start().await;
    let canary = backend("canary").start().await;
    let green = backend("green").start().await;
    let proxy = start_proxy(&config(
        &route("web")
            .backend("stable", 90, &stable)
            .backend("canary", 10, &canary)
            .backend("green", 0, &green)
            .build(),
    ))
    .await;
    let total = 2_000;
    let replies = run_split(&proxy, total).await;
    let counts = count_by(&replies, "x-switchyard-version");
    assert_eq!(counts.get("green"), None, "{counts:?}");
    assert_eq!(green.hits(), 0);
    assert_eq!(stable.hits() + canary.hits(), total);
    assert_share(&counts, "canary", total, 10.0);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_of_a_version_are_used_round_robin() {
    let first = backend("first").start().await;
    let second = backend("second").start().await;
    let proxy = start_proxy(&config(
        &route("web")
            .version("stable", 1, &[first.endpoint(), second.endpoint()])
            .build(),
    ))
    .await;
    let total = 200;
    let replies = bounded(Duration::from_secs(60), "load", load(&proxy, "/", total, 4)).await;
    assert!(replies.iter().all(|r| r.status == StatusCode::OK));
    assert_eq!(first.hits(), total / 2);
    assert_eq!(second.hits(), total / 2);
    proxy.shutdown().await;
}
