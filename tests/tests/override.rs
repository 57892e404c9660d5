//! Choosing the version by request: the override header forces a version
//! (even one at weight 0) and never reaches the backend; an unknown version
//! is a 400 naming the route's versions; a disabled override, or one without
//! the configured secret, is ignored; a header-matched route takes exactly
//! the requests carrying its header values.

use std::time::Duration;

use http::{Request, StatusCode};
use switchyard_tests::*;

async fn get_with(proxy: &TestProxy, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(proxy.url(path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(&proxy.client, req.body(empty()).expect("request"))
        .await
        .expect("proxied request")
}

/// stable takes everything by weight; dark has weight 0.
async fn start(stable: &Backend, dark: &Backend, proxy_section: &str) -> TestProxy {
    start_proxy(&config(&format!(
        "[proxy]\n{proxy_section}\n\n{}",
        route("web")
            .backend("stable", 1, stable)
            .backend("dark", 0, dark)
            .build()
    )))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn override_header_forces_a_version_and_is_not_forwarded() {
    let stable = backend("stable").start().await;
    let dark = backend("dark").start().await;
    let proxy = start(&stable, &dark, "").await;
    for _ in 0..5 {
        let reply = get_with(&proxy, "/headers", &[("x-switchyard-version", "dark")]).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.header(BACKEND_HEADER), Some("dark"));
        assert!(reply.json()["headers"]["x-switchyard-version"].is_null());
    }
    assert_eq!(proxy.get("/").await.header(BACKEND_HEADER), Some("stable"));
    assert_eq!(dark.hits(), 5);

    let unknown = get_with(&proxy, "/", &[("x-switchyard-version", "nope")]).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    let text = unknown.text();
    assert!(
        text.contains("'nope'") && text.contains("stable, dark"),
        "{text}"
    );
    assert_eq!(stable.hits() + dark.hits(), 6, "a 400 reaches no backend");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_override_is_ignored() {
    let stable = backend("stable").start().await;
    let dark = backend("dark").start().await;
    let proxy = start(&stable, &dark, "version_override = false").await;
    for value in ["dark", "nope"] {
        let reply = get_with(&proxy, "/headers", &[("x-switchyard-version", value)]).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header(BACKEND_HEADER), Some("stable"));
        // Not ours to consume: it travels on like any other header.
        assert_eq!(reply.json()["headers"]["x-switchyard-version"][0], value);
    }
    assert_eq!(dark.hits(), 0);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_and_header_name_are_configurable() {
    let stable = backend("stable").start().await;
    let dark = backend("dark").start().await;
    let proxy = start(
        &stable,
        &dark,
        "override_header = \"x-force\"\noverride_secret = \"s3cret\"",
    )
    .await;
    let forced = get_with(&proxy, "/headers", &[("x-force", "dark:s3cret")]).await;
    assert_eq!(forced.header(BACKEND_HEADER), Some("dark"));
    assert!(
        forced.json()["headers"]["x-force"].is_null(),
        "the secret must not leak upstream"
    );
    for value in ["dark", "dark:wrong", "dark:s3cre", "dark:s3cret2"] {
        let reply = get_with(&proxy, "/", &[("x-force", value)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{value}: {}", reply.text());
        assert_eq!(reply.header(BACKEND_HEADER), Some("stable"), "{value}");
    }
    // With the secret, an unknown version is an error again.
    let unknown = get_with(&proxy, "/", &[("x-force", "nope:s3cret")]).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    // The default name means nothing now.
    let reply = get_with(&proxy, "/", &[("x-switchyard-version", "dark")]).await;
    assert_eq!(reply.header(BACKEND_HEADER), Some("stable"));
    assert_eq!(dark.hits(), 1);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_matched_route_takes_only_matching_requests() {
    let stable = backend("stable").start().await;
    let canary = backend("canary").start().await;
    let beta = backend("beta").start().await;
    let routes = format!(
        "{}{}",
        route("web")
            .backend("stable", 90, &stable)
            .backend("canary", 10, &canary)
            .build(),
        route("beta").backend("beta", 1, &beta).build().replacen(
            "name = \"beta\"\n",
            "name = \"beta\"\nmatch_headers = { \"x-beta\" = \"1\" }\n",
            1
        )
    );
    let proxy = start_proxy(&config(&routes)).await;
    bounded(Duration::from_secs(60), "mixed requests", async {
        for i in 0..200 {
            let headers: &[(&str, &str)] = match i % 3 {
                0 => &[("x-beta", "1")],
                1 => &[("x-beta", "2")],
                _ => &[],
            };
            let reply = get_with(&proxy, "/", headers).await;
            assert_eq!(reply.status, StatusCode::OK);
            let backend = reply.header(BACKEND_HEADER).expect("backend");
            if i % 3 == 0 {
                assert_eq!(backend, "beta");
            } else {
                assert_ne!(
                    backend, "beta",
                    "request {i} without x-beta: 1 reached beta"
                );
            }
        }
    })
    .await;
    assert_eq!(beta.hits(), 67);
    assert_eq!(stable.hits() + canary.hits(), 133);
    assert!(
        canary.hits() > 0,
        "the weighted split still applies to the other route"
    );
    proxy.shutdown().await;
}
