//! The admin API end to end: compare-and-set weight changes under load,
//! refused changes that leave the table alone, promote/rollback/flip, tokens.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::Method;
use switchyard_tests::admin::{weight, AdminClient};
use switchyard_tests::*;

const TOKEN: &str = "test-token-123";

/// A proxy with stable/canary backends and a token file.
async fn proxy_with_token(stable: &Backend, canary: &Backend, dir: &std::path::Path) -> TestProxy {
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    let toml = config(&format!(
        "[admin]\ntoken_file = \"{}\"\n\n{}",
        token_file.display(),
        route("web")
            .backend("stable", 90, stable)
            .backend("canary", 10, canary)
            .build()
    ));
    start_proxy(&toml).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_changes_under_load_drop_nothing() {
    let stable = backend("stable").start().await;
    let canary = backend("canary").start().await;
    let dir = temp_dir("admin-load");
    let proxy = proxy_with_token(&stable, &canary, &dir).await;
    let admin = AdminClient::new(proxy.running.admin_addr, Some(TOKEN));

    let done = Arc::new(AtomicBool::new(false));
    let load_task = {
        let url = proxy.url("/");
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut workers = Vec::new();
            for _ in 0..8 {
                let url = url.clone();
                let done = Arc::clone(&done);
                workers.push(tokio::spawn(async move {
                    let client = client();
                    let (mut ok, mut failed) = (0usize, 0usize);
                    // Bounded: at most 2,000 requests per client.
                    for _ in 0..2_000 {
                        if done.load(Ordering::Relaxed) {
                            break;
                        }
                        match send(
                            &client,
                            http::Request::get(&url).body(empty()).expect("req"),
                        )
                        .await
                        {
                            Ok(reply) if reply.status == 200 => ok += 1,
                            _ => failed += 1,
                        }
                    }
                    (ok, failed)
                }));
            }
            let mut totals = (0, 0);
            for worker in workers {
                let (ok, failed) = worker.await.expect("client task");
                totals.0 += ok;
                totals.1 += failed;
            }
            totals
        })
    };

    let (mut revision, _) = admin.routes().await;
    for i in 0..1_000u64 {
        let canary_weight = i % 101;
        let body = format!(
            "{{\"stable\": {}, \"canary\": {canary_weight}}}",
            100 - canary_weight
        );
        let reply = admin.set_weights("web", revision, &body).await;
        assert_eq!(reply.status, 200, "change {i}: {}", reply.text());
        revision = reply.json()["revision"].as_u64().expect("revision");
    }
    done.store(true, Ordering::Relaxed);
    let (ok, failed) = bounded(
        std::time::Duration::from_secs(120),
        "load clients",
        load_task,
    )
    .await
    .expect("load task");
    assert_eq!(
        failed, 0,
        "{failed} requests failed during weight changes ({ok} ok)"
    );
    assert!(ok > 0);

    // The last change (i = 999: canary 90) is what traffic now sees.
    let (_, routes) = admin.routes().await;
    assert_eq!(weight(&routes, "web", "canary"), 90);
    let replies = load(&proxy, "/", 1_000, 4).await;
    let counts = count_by(&replies, "x-switchyard-version");
    assert_eq!(counts.get("canary"), Some(&900), "{counts:?}");
    assert_eq!(counts.get("stable"), Some(&100), "{counts:?}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_with_one_revision_one_wins() {
    let stable = backend("stable").start().await;
    let canary = backend("canary").start().await;
    let dir = temp_dir("admin-cas");
    let proxy = proxy_with_token(&stable, &canary, &dir).await;
    let admin = AdminClient::new(proxy.running.admin_addr, Some(TOKEN));
    let (revision, _) = admin.routes().await;

    let first = admin
        .set_weights("web", revision, r#"{"canary": 30}"#)
        .await;
    let second = admin
        .set_weights("web", revision, r#"{"canary": 60}"#)
        .await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(second.status, 412, "{}", second.text());
    assert_eq!(second.json()["detail"]["revision"], revision + 1);

    let (now, routes) = admin.routes().await;
    assert_eq!(now, revision + 1);
    assert_eq!(weight(&routes, "web", "canary"), 30);
    assert_eq!(
        weight(&routes, "web", "stable"),
        90,
        "unnamed versions keep their weight"
    );
    let history = admin
        .call(Method::GET, "/api/v1/history", None, None)
        .await
        .json();
    let changes = history["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["who"], "admin");
    assert_eq!(changes[0]["source"], "api");
    assert_eq!(changes[0]["before"]["canary"], 10);
    assert_eq!(changes[0]["after"]["canary"], 30);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_changes_leave_the_table_alone() {
    let stable = backend("stable").start().await;
    let canary = backend("canary").start().await;
    let dir = temp_dir("admin-refused");
    let proxy = proxy_with_token(&stable, &canary, &dir).await;
    let admin = AdminClient::new(proxy.running.admin_addr, Some(TOKEN));
    let anonymous = AdminClient::new(proxy.running.admin_addr, None);
    let wrong = AdminClient::new(proxy.running.admin_addr, Some("wrong-token"));
    let (revision, before) = admin.routes().await;
    let tag = format!("\"{revision}\"");
    let put = "/api/v1/routes/web/weights";

    // (client, method, path, If-Match, body, expected status)
    type Case<'a> = (
        &'a AdminClient,
        Method,
        String,
        Option<&'a str>,
        Option<&'a str>,
        u16,
    );
    let cases: Vec<Case> = vec![
        (
            &admin,
            Method::PUT,
            put.into(),
            Some(&tag),
            Some("{not json"),
            400,
        ),
        (
            &admin,
            Method::PUT,
            put.into(),
            Some(&tag),
            Some(r#"{"blue": 10}"#),
            400,
        ),
        (
            &admin,
            Method::PUT,
            put.into(),
            Some(&tag),
            Some(r#"{"canary": -5}"#),
            400,
        ),
        (
            &admin,
            Method::PUT,
            put.into(),
            Some(&tag),
            Some(r#"{"stable": 0, "canary": 0}"#),
            400,
        ),
        (
            &admin,
            Method::PUT,
            put.into(),
            None,
            Some(r#"{"canary": 20}"#),
            428,
        ),
        (
            &admin,
            Method::PUT,
            "/api/v1/routes/nope/weights".into(),
            Some(&tag),
            Some(r#"{"canary": 20}"#),
            404,
        ),
        (
            &anonymous,
            Method::PUT,
            put.into(),
            Some(&tag),
            Some(r#"{"canary": 20}"#),
            401,
        ),
        (
            &wrong,
            Method::PUT,
            put.into(),
            Some(&tag),
            Some(r#"{"canary": 20}"#),
            401,
        ),
        (
            &anonymous,
            Method::POST,
            "/api/v1/routes/web/rollback".into(),
            None,
            None,
            401,
        ),
        (
            &admin,
            Method::POST,
            "/api/v1/routes/web/promote".into(),
            None,
            Some(r#"{"version": "blue"}"#),
            400,
        ),
        (
            &admin,
            Method::POST,
            "/api/v1/routes/web/flip".into(),
            None,
            Some(r#"{"from": "stable"}"#),
            400,
        ),
    ];
    for (client, method, path, if_match, body, status) in cases {
        let reply = client.call(method.clone(), &path, if_match, body).await;
        assert_eq!(
            reply.status,
            status,
            "{method} {path} {body:?}: {}",
            reply.text()
        );
        let json = reply.json();
        assert!(
            json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "error body: {json}"
        );
        let (now, routes) = admin.routes().await;
        assert_eq!(
            now, revision,
            "{method} {path} {body:?} changed the revision"
        );
        assert_eq!(routes, before);
    }
    // Reads are open on loopback; a wrong token is still refused.
    assert_eq!(
        anonymous
            .call(Method::GET, "/api/v1/routes", None, None)
            .await
            .status,
        200
    );
    assert_eq!(
        wrong
            .call(Method::GET, "/api/v1/routes", None, None)
            .await
            .status,
        401
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_rollback_flip_and_exact() {
    let stable = backend("stable").start().await;
    let canary = backend("canary").start().await;
    let green = backend("green").start().await;
    let dir = temp_dir("admin-actions");
    let token_file = dir.join("token");
    std::fs::write(&token_file, TOKEN).expect("token");
    let toml = config(&format!(
        "[admin]\ntoken_file = \"{}\"\n\n{}",
        token_file.display(),
        route("web")
            .backend("stable", 90, &stable)
            .backend("canary", 10, &canary)
            .backend("green", 0, &green)
            .build()
    ));
    let proxy = start_proxy(&toml).await;
    let admin = AdminClient::new(proxy.running.admin_addr, Some(TOKEN));
    let weights = |routes: &serde_json::Value| {
        ["stable", "canary", "green"].map(|v| weight(routes, "web", v))
    };

    let reply = admin
        .call(
            Method::POST,
            "/api/v1/routes/web/promote",
            None,
            Some(r#"{"version": "canary"}"#),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(weights(&admin.routes().await.1), [0, 100, 0]);
    let counts = count_by(&load(&proxy, "/", 50, 2).await, "x-switchyard-version");
    assert_eq!(counts.get("canary"), Some(&50));

    let reply = admin
        .call(Method::POST, "/api/v1/routes/web/rollback", None, None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(weights(&admin.routes().await.1), [100, 0, 0]);

    let reply = admin
        .call(
            Method::POST,
            "/api/v1/routes/web/flip",
            None,
            Some(r#"{"from": "stable", "to": "green"}"#),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(weights(&admin.routes().await.1), [0, 0, 100]);
    let counts = count_by(&load(&proxy, "/", 50, 2).await, "x-switchyard-version");
    assert_eq!(counts.get("green"), Some(&50));

    let (revision, _) = admin.routes().await;
    let reply = admin
        .call(
            Method::PUT,
            "/api/v1/routes/web/weights?exact=true",
            Some(&format!("\"{revision}\"")),
            Some(r#"{"stable": 3}"#),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(weights(&admin.routes().await.1), [3, 0, 0]);
    let reply = admin
        .call(
            Method::PUT,
            "/api/v1/routes/web/weights?force=true",
            None,
            Some(r#"{"canary": 1}"#),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(weights(&admin.routes().await.1), [3, 1, 0]);

    let status = admin
        .call(Method::GET, "/api/v1/status", None, None)
        .await
        .json();
    assert_eq!(status["overridden_routes"], serde_json::json!(["web"]));
    assert_eq!(
        admin.call(Method::GET, "/healthz", None, None).await.status,
        200
    );
    assert_eq!(
        admin.call(Method::GET, "/readyz", None, None).await.status,
        200
    );
    // The admin API is not served on the data port.
    assert_eq!(
        proxy.get("/api/v1/routes").await.header("x-backend"),
        Some("stable")
    );
    proxy.shutdown().await;
}
