//! Upstream and client faults against the real proxy: for each, the
//! client's status, how many requests the upstream saw, the proxy still
//! serving, and the routing table unchanged (same revision).

use std::time::Duration;

use http::StatusCode;
use switchyard_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_answer_the_client_and_change_nothing() {
    let stable = backend("stable").start().await;
    let refusing = refusing_port();
    let text = route("web").backend("stable", 1, &stable).build()
        + &route("dead")
            .key("path_prefix", "/dead")
            .version("stable", 1, &[refusing.to_string()])
            .build()
        + &route("slow")
            .key("path_prefix", "/slow")
            .key("timeout", "200ms")
            .backend("stable", 1, &stable)
            .build();
    let proxy = start_proxy(&config(&text)).await;
    let revision = proxy.running.table.load().revision();

    // Refused: 502 naming the version, nothing reached an upstream.
    let reply = proxy.get("/dead").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(reply.text().contains("'stable'"), "{}", reply.text());
    assert_eq!(stable.hits(), 0);
    // Never answers in time: 504, one upstream request.
    let reply = bounded(
        Duration::from_secs(5),
        "504",
        proxy.get("/slow?delay_ms=2000"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(stable.hits(), 1);
    // Answers 5xx: passed through as the upstream sent it, once.
    let reply = proxy.get("/x?status=503").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(stable.hits(), 2);

    assert_eq!(proxy.get("/").await.status, StatusCode::OK);
    assert_eq!(proxy.running.table.load().revision(), revision);
    proxy.shutdown().await;
}
