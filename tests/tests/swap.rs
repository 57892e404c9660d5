//! Swapping the routing table under load: 8 clients send 5,000 requests
//! while the table is swapped 200 times between two weightings; no request
//! fails and each is served by a version its own table revision contains.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use switchyard_proxy::{TableError, TableHandle};
use switchyard_tests::*;

const CLIENTS: usize = 8;
const REQUESTS: usize = 5_000;
const SWAPS: usize = 200;

/// Odd revisions send everything to `a`, even ones to `b`: the revision a
/// response carries says which version its table allowed.
fn allowed_version(revision: u64) -> &'static str {
    if revision % 2 == 1 {
        "a"
    } else {
        "b"
    }
}

/// Stores the next revision with the weighting its parity calls for.
fn swap(table: &TableHandle) -> u64 {
    table
        .update(|current| {
            let next = current.revision() + 1;
            let mut spec = current.spec().clone();
            for version in &mut spec.routes[0].versions {
                version.weight = u32::from(version.name == allowed_version(next));
            }
            Ok::<_, TableError>(spec)
        })
        .expect("the swapped table is valid")
        .revision()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_under_load_fail_nothing_and_respect_each_requests_table() {
    let a = backend("a").start().await;
    let b = backend("b").start().await;
    let proxy = start_proxy(&config(&format!(
        "[proxy]\nrevision_header = true\n\n{}",
        route("web").backend("a", 1, &a).backend("b", 0, &b).build()
    )))
    .await;
    assert_eq!(proxy.running.table.load().revision(), 1);

    let done = Arc::new(AtomicUsize::new(0));
    let url = Arc::new(proxy.url("/"));
    let next = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (url, next, done) = (Arc::clone(&url), Arc::clone(&next), Arc::clone(&done));
            tokio::spawn(async move {
                let client = client();
                let mut replies = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < REQUESTS {
                    let req = http::Request::get(url.as_str())
                        .body(empty())
                        .expect("request");
                    replies.push(send(&client, req).await);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                replies
            })
        })
        .collect();

    // Spread the swaps over the load: one every REQUESTS / SWAPS replies,
    // so every swap happens while clients are mid-flight.
    let table = proxy.running.table.clone();
    let swapper = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut last = 1;
            for k in 1..=SWAPS {
                while done.load(Ordering::Relaxed) < k * (REQUESTS / SWAPS) - REQUESTS / SWAPS / 2 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                last = swap(&table);
            }
            last
        })
    };

    let replies = bounded(Duration::from_secs(240), "swap load", async {
        let mut replies = Vec::with_capacity(REQUESTS);
        for client in clients {
            replies.extend(client.await.expect("client task"));
        }
        replies
    })
    .await;
    let last_revision = bounded(Duration::from_secs(10), "swapper", swapper)
        .await
        .expect("swapper task");
    assert_eq!(last_revision, 1 + SWAPS as u64);

    assert_eq!(replies.len(), REQUESTS);
    let mut revisions_seen = std::collections::BTreeSet::new();
    for reply in &replies {
        let reply = reply.as_ref().expect("no transport failures");
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let revision: u64 = reply
            .header("x-switchyard-revision")
            .expect("revision header")
            .parse()
            .expect("revision is a number");
        let version = reply
            .header("x-switchyard-version")
            .expect("version header");
        assert_eq!(
            version,
            allowed_version(revision),
            "revision {revision} was served by version {version}"
        );
        assert_eq!(reply.header(BACKEND_HEADER), Some(version));
        revisions_seen.insert(revision);
    }
    // The load really overlapped the swaps: many revisions served traffic.
    assert!(
        revisions_seen.len() > SWAPS / 2,
        "only {} revisions served requests",
        revisions_seen.len()
    );
    assert!(a.hits() > 0 && b.hits() > 0);
    assert_eq!(a.hits() + b.hits(), REQUESTS);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_on_the_table_it_started_with() {
    let a = backend("a").start().await;
    let b = backend("b").start().await;
    let proxy = start_proxy(&config(&format!(
        "[proxy]\nrevision_header = true\n\n{}",
        route("web").backend("a", 1, &a).backend("b", 0, &b).build()
    )))
    .await;
    // A slow request starts on revision 1 (all to `a`)...
    let slow = {
        let client = proxy.client.clone();
        let url = proxy.url("/?delay_ms=500");
        tokio::spawn(async move { get(&client, &url).await })
    };
    bounded(Duration::from_secs(10), "slow request to arrive", async {
        while a.hits() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // ...the table moves everything to `b` while it waits...
    assert_eq!(swap(&proxy.running.table), 2);
    let fresh = proxy.get("/").await;
    assert_eq!(fresh.header("x-switchyard-version"), Some("b"));
    // ...and the slow one still completes from `a`, stamped revision 1.
    let slow = slow.await.expect("slow request task");
    assert_eq!(slow.status, StatusCode::OK);
    assert_eq!(slow.header("x-switchyard-version"), Some("a"));
    assert_eq!(slow.header("x-switchyard-revision"), Some("1"));
    proxy.shutdown().await;
}
