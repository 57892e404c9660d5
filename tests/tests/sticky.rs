//! Sticky assignment through the real proxy: 1,000 users each sent five
//! times see one version each, in shares within ±2 pp of the weights;
//! raising canary 10 → 30 % by a table swap moves nobody from canary back
//! to stable; a second, independent proxy with the same config puts every
//! user on the same version; clients without a key get a pinning cookie.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use switchyard_proxy::TableError;
use switchyard_tests::*;

const USERS: usize = 1_000;
const CLIENTS: usize = 8;
/// Any seed gives the configured shares over many users (the unit tests
/// check 100,000 keys within 1 pp), but 1,000 users sample them with a
/// binomial spread of ±1.45 pp (1σ) at 30 %. The seed is fixed, so the
/// assignment of `user-0` … `user-999` — and this test — is deterministic.
const SEED: u64 = 1;

fn sticky_config(
    stable: &Backend,
    canary: &Backend,
    stable_weight: u32,
    canary_weight: u32,
) -> String {
    config(&format!(
        "{}  [routes.sticky]\n  header = \"x-user-id\"\n  seed = {SEED}\n",
        route("web")
            .backend("stable", stable_weight, stable)
            .backend("canary", canary_weight, canary)
            .build()
    ))
}

/// Sends `rounds` requests for each of the users (interleaved, from
/// concurrent clients) and returns every version each user saw.
async fn versions_seen(proxy: &TestProxy, rounds: usize) -> BTreeMap<usize, Vec<String>> {
    let url = Arc::new(proxy.url("/"));
    let jobs: Arc<Vec<usize>> = Arc::new((0..rounds).flat_map(|_| 0..USERS).collect());
    let workers: Vec<_> = (0..CLIENTS)
        .map(|w| {
            let (url, jobs) = (Arc::clone(&url), Arc::clone(&jobs));
            tokio::spawn(async move {
                let client = client();
                let mut seen = Vec::new();
                for user in jobs.iter().skip(w).step_by(CLIENTS) {
                    let req = Request::get(url.as_str())
                        .header("x-user-id", format!("user-{user}"))
                        .body(empty())
                        .expect("request");
                    let reply = send(&client, req).await.expect("proxied request");
                    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
                    let version = reply
                        .header("x-switchyard-version")
                        .expect("version header");
                    assert_eq!(Some(version), reply.header(BACKEND_HEADER));
                    seen.push((*user, version.to_owned()));
                }
                seen
            })
        })
        .collect();
    let mut by_user: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for worker in workers {
        for (user, version) in worker.await.expect("client task") {
            by_user.entry(user).or_default().push(version);
        }
    }
    by_user
}

/// The one version each user saw, failing if any user saw two.
fn one_version_each(seen: &BTreeMap<usize, Vec<String>>) -> BTreeMap<usize, String> {
    assert_eq!(seen.len(), USERS);
    seen.iter()
        .map(|(user, versions)| {
            assert!(
                versions.iter().all(|v| *v == versions[0]),
                "user-{user} flipped between versions: {versions:?}"
            );
            (*user, versions[0].clone())
        })
        .collect()
}

fn assert_canary_share(assigned: &BTreeMap<usize, String>, percent: f64) {
    let canary = assigned.values().filter(|v| *v == "canary").count();
    let share = canary as f64 * 100.0 / USERS as f64;
    assert!(
        (share - percent).abs() <= 2.0,
        "canary has {share:.1}% of users, expected {percent}% ± 2 pp"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_stick_and_raising_canary_only_moves_users_into_it() {
    let stable = backend("stable").start().await;
    let canary = backend("canary").start().await;
    let proxy = start_proxy(&sticky_config(&stable, &canary, 90, 10)).await;

    let seen = bounded(
        Duration::from_secs(180),
        "5 rounds",
        versions_seen(&proxy, 5),
    )
    .await;
    let before = one_version_each(&seen);
    assert_canary_share(&before, 10.0);

    proxy
        .running
        .table
        .update(|current| {
            let mut spec = current.spec().clone();
            for version in &mut spec.routes[0].versions {
                version.weight = if version.name == "canary" { 30 } else { 70 };
            }
            Ok::<_, TableError>(spec)
        })
        .expect("the raised weights are valid");
    let seen = bounded(
        Duration::from_secs(120),
        "2 rounds",
        versions_seen(&proxy, 2),
    )
    .await;
    let after = one_version_each(&seen);
    assert_canary_share(&after, 30.0);
    let back_to_stable: Vec<_> = before
        .iter()
        .filter(|(user, version)| *version == "canary" && after[user] == "stable")
        .collect();
    assert!(
        back_to_stable.is_empty(),
        "users moved canary → stable: {back_to_stable:?}"
    );
    let moved = before.iter().filter(|(user, v)| after[user] != **v).count();
    assert!(
        moved > 100,
        "raising canary by 20 pp moved only {moved} users"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_independent_proxies_agree_on_every_user() {
    let stable = backend("stable").start().await;
    let canary = backend("canary").start().await;
    let text = sticky_config(&stable, &canary, 70, 30);
    let first = start_proxy(&text).await;
    let second = start_proxy(&text).await;
    assert_ne!(first.running.data_addr, second.running.data_addr);
    let on_first = one_version_each(
        &bounded(
            Duration::from_secs(120),
            "first proxy",
            versions_seen(&first, 1),
        )
        .await,
    );
    let on_second = one_version_each(
        &bounded(
            Duration::from_secs(120),
            "second proxy",
            versions_seen(&second, 1),
        )
        .await,
    );
    assert_eq!(on_first, on_second);
    assert_canary_share(&on_first, 30.0);
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_key_get_a_pinning_cookie() {
    let stable = backend("stable").start().await;
    let canary = backend("canary").start().await;
    let proxy = start_proxy(&config(&format!(
        "{}  [routes.sticky]\n  header = \"x-user-id\"\n  set_cookie = true\n",
        route("web")
            .backend("stable", 50, &stable)
            .backend("canary", 50, &canary)
            .build()
    )))
    .await;
    for _ in 0..10 {
        let first = proxy.get("/").await;
        assert_eq!(first.status, StatusCode::OK);
        let cookie = first
            .header("set-cookie")
            .expect("a pinning cookie")
            .to_owned();
        assert!(cookie.starts_with("switchyard-web="), "{cookie}");
        let pair = cookie.split(';').next().expect("name=value").to_owned();
        let version = first
            .header("x-switchyard-version")
            .expect("version")
            .to_owned();
        for _ in 0..5 {
            let req = Request::get(proxy.url("/"))
                .header("cookie", format!("other=1; {pair}"))
                .body(empty())
                .expect("request");
            let again = send(&proxy.client, req).await.expect("request with cookie");
            assert_eq!(again.header("x-switchyard-version"), Some(version.as_str()));
            assert_eq!(
                again.header("set-cookie"),
                None,
                "a pinned client is not re-pinned"
            );
        }
    }
    // A request carrying the key needs no cookie.
    let req = Request::get(proxy.url("/"))
        .header("x-user-id", "alice")
        .body(empty())
        .expect("request");
    let keyed = send(&proxy.client, req).await.expect("keyed request");
    assert_eq!(keyed.header("set-cookie"), None);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_key_fall_back_to_the_weighted_pick() {
    let stable = backend("stable").start().await;
    let canary = backend("canary").start().await;
    let proxy = start_proxy(&sticky_config(&stable, &canary, 50, 50)).await;
    let replies = bounded(Duration::from_secs(60), "load", load(&proxy, "/", 200, 4)).await;
    let counts = count_by(&replies, "x-switchyard-version");
    assert_eq!(counts.get("stable"), Some(&100), "{counts:?}");
    assert_eq!(counts.get("canary"), Some(&100), "{counts:?}");
    proxy.shutdown().await;
}
