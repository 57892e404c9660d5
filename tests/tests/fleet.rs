//! The fleet end to end: real `etcd` (Debian's etcd-server) on free
//! loopback ports with a temp data dir, and several real proxies in this
//! process sharing one prefix. Without the etcd binary these tests are
//! reported as skipped, unless `SWITCHYARD_REQUIRE_TOOLS` is set: then they
//! fail.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;
use switchyard_tests::admin::{weight, AdminClient};
use switchyard_tests::etcd::Etcd;
use switchyard_tests::*;

/// One test's etcd, prefix and the two backends its replicas route to.
struct Setup {
    etcd: Etcd,
    prefix: String,
    stable: Backend,
    canary: Backend,
}

impl Setup {
    async fn start(name: &str, tls: bool) -> Setup {
        Setup {
            etcd: Etcd::start_with(name, tls).await,
            prefix: format!("/switchyard/{name}"),
            stable: backend("stable").start().await,
            canary: backend("canary").start().await,
        }
    }

    /// The config of replica `name`: web = stable 90, canary 10.
    fn config(&self, name: &str) -> String {
        replica_config(&self.etcd, &self.prefix, name, &self.stable, &self.canary)
    }
}

/// The config of one replica of the fleet at `prefix`.
fn replica_config(
    etcd: &Etcd,
    prefix: &str,
    name: &str,
    stable: &Backend,
    canary: &Backend,
) -> String {
    config(&format!(
        "[cluster]\netcd = [\"{}\"]\nprefix = \"{prefix}\"\nname = \"{name}\"\nlease_ttl = \"3s\"\n\n{}",
        etcd.client_url,
        route("web")
            .backend("stable", 90, stable)
            .backend("canary", 10, canary)
            .build()
    ))
}

fn admin(proxy: &TestProxy) -> AdminClient {
    AdminClient::new(proxy.running.admin_addr, None)
}

async fn status(proxy: &TestProxy) -> Value {
    let reply = admin(proxy)
        .call(Method::GET, "/api/v1/status", None, None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// Polls until `check` holds, failing with `what` after `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn connected(proxy: &TestProxy) -> bool {
    status(proxy).await["cluster"]["state"] == "connected"
}

async fn canary_weight(proxy: &TestProxy) -> (u64, u64) {
    let (revision, routes) = admin(proxy).routes().await;
    (revision, weight(&routes, "web", "canary"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    missing_etcd,
    ignore = "etcd is not installed (scripts/test.sh installs etcd-server)"
)]
async fn three_replicas_share_changes_and_exactly_one_racing_write_wins() {
    let fleet = Setup::start("three", false).await;
    let mut replicas = Vec::new();
    for name in ["a", "b", "c"] {
        let proxy = start_proxy(&fleet.config(name)).await;
        replicas.push(proxy);
    }
    for proxy in &replicas {
        eventually(Duration::from_secs(10), "replica connects to etcd", || {
            connected(proxy)
        })
        .await;
    }
    // All three serve the seeded table at the same fleet revision.
    let (seeded, weight_a) = canary_weight(&replicas[0]).await;
    assert_eq!(weight_a, 10);
    for proxy in &replicas[1..] {
        eventually(Duration::from_secs(5), "same seeded revision", || async {
            canary_weight(proxy).await == (seeded, 10)
        })
        .await;
    }

    // A weight change through A is served by B and C within a second.
    let reply = admin(&replicas[0])
        .set_weights("web", seeded, r#"{"stable": 0, "canary": 100}"#)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let changed: u64 = reply
        .header("etag")
        .expect("etag")
        .trim_matches('"')
        .parse()
        .expect("revision");
    assert!(changed > seeded);
    let started = Instant::now();
    for proxy in &replicas[1..] {
        eventually(
            Duration::from_secs(1),
            "B and C apply A's change",
            || async { canary_weight(proxy).await == (changed, 100) },
        )
        .await;
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    // C's traffic follows, and its responses carry the fleet's revision.
    for _ in 0..20 {
        let reply = replicas[2].get("/").await;
        assert_eq!(reply.header(BACKEND_HEADER), Some("canary"));
    }
    // B's history names the change A made, at the fleet's revision.
    let history = admin(&replicas[1])
        .call(Method::GET, "/api/v1/history", None, None)
        .await
        .json();
    let last = history["changes"]
        .as_array()
        .and_then(|c| c.last().cloned())
        .expect("a change in B's history");
    assert_eq!(last["revision"], changed);
    assert_eq!(last["after"]["canary"], 100);

    // Two deploy tools racing through A and B with the revision they saw.
    let (a, b) = (admin(&replicas[0]), admin(&replicas[1]));
    let (ra, rb) = tokio::join!(
        a.set_weights("web", changed, r#"{"stable": 30, "canary": 70}"#),
        b.set_weights("web", changed, r#"{"stable": 60, "canary": 40}"#),
    );
    let mut statuses = [ra.status.as_u16(), rb.status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 412], "A: {} B: {}", ra.text(), rb.text());
    let winner = if ra.status == 200 { 70 } else { 40 };
    for proxy in &replicas {
        eventually(
            Duration::from_secs(2),
            "every replica serves the winner",
            || async { canary_weight(proxy).await.1 == winner },
        )
        .await;
    }

    // A forced write through C right after one through A: C may not have
    // applied A's yet; it catches up and its change lands on top.
    let (seen, _) = canary_weight(&replicas[0]).await;
    let first = admin(&replicas[0])
        .set_weights("web", seen, r#"{"stable": 90, "canary": 10}"#)
        .await;
    assert_eq!(first.status, 200, "{}", first.text());
    let forced = admin(&replicas[2])
        .call(
            Method::PUT,
            "/api/v1/routes/web/weights?force=true",
            None,
            Some(r#"{"stable": 80, "canary": 20}"#),
        )
        .await;
    assert_eq!(forced.status, 200, "{}", forced.text());
    for proxy in &replicas {
        eventually(
            Duration::from_secs(2),
            "every replica serves the forced write",
            || async { canary_weight(proxy).await.1 == 20 },
        )
        .await;
    }

    // The fleet lists the three replicas and the revision each serves.
    let (current, _) = canary_weight(&replicas[2]).await;
    eventually(
        Duration::from_secs(3),
        "fleet lists three at the current revision",
        || async {
            let fleet = admin(&replicas[2])
                .call(Method::GET, "/api/v1/fleet", None, None)
                .await
                .json();
            let replicas = fleet["replicas"].as_array().cloned().unwrap_or_default();
            replicas.len() == 3 && replicas.iter().all(|r| r["revision"] == current)
        },
    )
    .await;

    for proxy in replicas {
        proxy.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    missing_etcd,
    ignore = "etcd is not installed (scripts/test.sh installs etcd-server)"
)]
async fn etcd_outage_keeps_traffic_flowing_and_refuses_admin_writes() {
    let mut fleet = Setup::start("outage", false).await;
    let prefix = fleet.prefix.as_str();
    let proxy = start_proxy(&fleet.config("a")).await;
    eventually(Duration::from_secs(10), "replica connects", || {
        connected(&proxy)
    })
    .await;
    let (revision, _) = canary_weight(&proxy).await;

    // Load runs while etcd is killed: not one request may fail.
    let failures = Arc::new(AtomicUsize::new(0));
    let load = {
        let url = proxy.url("/");
        let failures = Arc::clone(&failures);
        tokio::spawn(async move {
            let client = client();
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut sent = 0;
            while Instant::now() < deadline && sent < 5_000 {
                let req = http::Request::get(&url).body(empty()).expect("request");
                match send(&client, req).await {
                    Ok(reply) if reply.status == 200 => {}
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                sent += 1;
            }
            sent
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    fleet.etcd.kill();
    eventually(
        Duration::from_secs(10),
        "replica notices etcd is gone",
        || async { !connected(&proxy).await },
    )
    .await;
    // Dashboards see it too.
    let metrics = admin(&proxy)
        .call(Method::GET, "/metrics", None, None)
        .await
        .text();
    assert!(
        metrics.contains("\nswitchyard_cluster_connected 0\n"),
        "{metrics}"
    );
    let reply = admin(&proxy)
        .set_weights("web", revision, r#"{"stable": 50, "canary": 50}"#)
        .await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(
        reply.text().contains(&fleet.etcd.client_url),
        "{}",
        reply.text()
    );
    let sent = load.await.expect("load task");
    assert!(sent > 0);
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed while etcd was down"
    );
    let readyz = admin(&proxy).call(Method::GET, "/readyz", None, None).await;
    assert_eq!(readyz.status, 200);
    assert!(
        readyz.text().contains("cluster: disconnected"),
        "{}",
        readyz.text()
    );
    // The refused write changed nothing.
    assert_eq!(canary_weight(&proxy).await, (revision, 10));

    // A replica starting while etcd is down serves its file's table.
    let late = start_proxy(&fleet.config("late")).await;
    assert_eq!(status(&late).await["cluster"]["state"], "disconnected");
    assert_eq!(late.get("/").await.status, 200);

    // etcd comes back; a change made meanwhile directly in etcd applies.
    fleet.etcd.spawn().await;
    let mut direct = fleet.etcd.client().await;
    let key = format!("{prefix}/table");
    let value = r#"{"routes":{"web":{"stable":0,"canary":100}},"source":"api","who":"etcdctl"}"#;
    direct.put(key, value, None).await.expect("direct put");
    for replica in [&proxy, &late] {
        eventually(
            Duration::from_secs(10),
            "the direct change applies after reconnect",
            || async { connected(replica).await && canary_weight(replica).await.1 == 100 },
        )
        .await;
    }
    late.shutdown().await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    missing_etcd,
    ignore = "etcd is not installed (scripts/test.sh installs etcd-server)"
)]
async fn a_restarted_replica_serves_the_fleets_table_not_its_files() {
    let fleet = Setup::start("restart", false).await;
    let prefix = fleet.prefix.as_str();
    let text = fleet.config("a");
    let proxy = start_proxy(&text).await;
    eventually(Duration::from_secs(10), "replica connects", || {
        connected(&proxy)
    })
    .await;
    let (revision, _) = canary_weight(&proxy).await;
    let reply = admin(&proxy)
        .set_weights("web", revision, r#"{"stable": 25, "canary": 75}"#)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let (changed, _) = canary_weight(&proxy).await;
    proxy.shutdown().await;

    // Same file (canary 10) — but the fleet says 75, at its revision.
    let proxy = start_proxy(&text).await;
    eventually(
        Duration::from_secs(10),
        "restarted replica converges",
        || async { canary_weight(&proxy).await == (changed, 75) },
    )
    .await;
    // A stale If-Match is refused with the fleet's revision.
    let reply = admin(&proxy)
        .set_weights("web", revision, r#"{"stable": 100, "canary": 0}"#)
        .await;
    assert_eq!(reply.status, 412, "{}", reply.text());

    // Its history is the fleet's: it shows the change made before the
    // restart, at the fleet's revision.
    let history = admin(&proxy)
        .call(Method::GET, "/api/v1/history", None, None)
        .await
        .json();
    assert_eq!(history["scope"], "fleet");
    let before_restart: Vec<&Value> = history["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["revision"] == changed)
        .collect();
    assert_eq!(before_restart.len(), 1, "{history}");
    assert_eq!(before_restart[0]["after"]["canary"], 75);
    assert_eq!(before_restart[0]["before"]["canary"], 10);

    // The shared history is bounded: with 1,000 older entries in etcd, the
    // next change drops the oldest to keep 1,000.
    let mut direct = fleet.etcd.client().await;
    for n in 0..1_000 {
        let key = format!("{prefix}/history/0000000000000000{n:04}-old");
        direct.put(key, "[]", None).await.expect("put an old entry");
    }
    let reply = admin(&proxy)
        .call(
            Method::PUT,
            "/api/v1/routes/web/weights?force=true",
            None,
            Some(r#"{"stable": 30, "canary": 70}"#),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let history_keys = etcd_client::GetOptions::new()
        .with_prefix()
        .with_keys_only();
    let kept = direct
        .get(format!("{prefix}/history/"), Some(history_keys))
        .await
        .expect("history keys");
    assert_eq!(kept.kvs().len(), 1_000);
    let names: Vec<String> = kept
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect();
    // Oldest by revision: the real change from before, then old entry 0.
    assert!(!names.iter().any(|k| k.ends_with("00000000-old")));
    assert!(names.iter().any(|k| k.ends_with("00000001-old")));
    let history = admin(&proxy)
        .call(Method::GET, "/api/v1/history", None, None)
        .await
        .json();
    let revisions: Vec<&Value> = history["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| &c["revision"])
        .collect();
    assert!(!revisions.iter().any(|r| **r == changed), "{revisions:?}");

    // `ctl apply FILE` pushes a file's weights to the fleet; `ctl fleet`
    // lists the replica at the revision it serves.
    let dir = temp_dir("fleet-apply");
    let file = dir.join("switchyard.toml");
    std::fs::write(
        &file,
        text.replace("weight = 10", "weight = 40")
            .replace("weight = 90", "weight = 60"),
    )
    .expect("file");
    let ctl = switchyard_control::ctl::Ctl::new(&proxy.running.admin_addr.to_string(), None, false);
    let applied = ctl
        .run(switchyard_control::ctl::CtlCommand::Apply { file })
        .await
        .unwrap_or_else(|e| panic!("ctl apply: {e}"));
    assert!(applied.contains("canary=40"), "{applied}");
    let (pushed, canary) = canary_weight(&proxy).await;
    assert_eq!(canary, 40);
    assert!(pushed > changed);
    let stored = direct
        .get(format!("{prefix}/table"), None)
        .await
        .expect("get");
    let kv = stored.kvs().first().expect("the table key");
    assert_eq!(u64::try_from(kv.mod_revision()).ok(), Some(pushed));
    eventually(
        Duration::from_secs(3),
        "ctl fleet lists the replica",
        || async {
            let listed = ctl
                .run(switchyard_control::ctl::CtlCommand::Fleet)
                .await
                .unwrap_or_default();
            listed.contains(&format!("revision={pushed}")) && listed.contains("a ")
        },
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    missing_etcd,
    ignore = "etcd is not installed (scripts/test.sh installs etcd-server)"
)]
async fn a_replica_logs_in_with_user_and_password_and_a_wrong_user_is_reported() {
    let fleet = Setup::start("auth", false).await;
    let prefix = fleet.prefix.as_str();
    // A user that may read and write the fleet's prefix only, then auth on.
    let mut root = fleet.etcd.client().await;
    let _ = root.role_add("root").await;
    root.user_add("root", "root-secret", None)
        .await
        .expect("root user");
    root.user_grant_role("root", "root")
        .await
        .expect("root role");
    root.role_add("fleet").await.expect("fleet role");
    let permission = etcd_client::Permission::read_write(prefix).with_prefix();
    root.role_grant_permission("fleet", permission)
        .await
        .expect("fleet permission");
    root.user_add("switchyard", "fleet-secret", None)
        .await
        .expect("fleet user");
    root.user_grant_role("switchyard", "fleet")
        .await
        .expect("fleet user's role");
    root.auth_enable().await.expect("auth on");
    // The password never sits in the file (no other test of this binary
    // reads the variable).
    std::env::set_var("SWITCHYARD_ETCD_PASSWORD", "fleet-secret");
    let with_user = |name: &str, user: &str| {
        fleet.config(name).replace(
            &format!("name = \"{name}\"\n"),
            &format!("name = \"{name}\"\nusername = \"{user}\"\n"),
        )
    };
    let proxy = start_proxy(&with_user("a", "switchyard")).await;
    eventually(Duration::from_secs(10), "the user logs in", || {
        connected(&proxy)
    })
    .await;
    let (revision, _) = canary_weight(&proxy).await;
    let reply = admin(&proxy)
        .set_weights("web", revision, r#"{"stable": 50, "canary": 50}"#)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // An unknown user: the replica serves its file and says why it is not
    // in the fleet.
    let stranger = start_proxy(&with_user("b", "nobody")).await;
    eventually(
        Duration::from_secs(10),
        "etcd refuses the stranger",
        || async {
            let status = status(&stranger).await;
            let error = status["cluster"]["error"].as_str().unwrap_or("");
            !error.is_empty() && error != "not connected yet"
        },
    )
    .await;
    let status = status(&stranger).await;
    assert_eq!(status["cluster"]["state"], "disconnected", "{status}");
    let error = status["cluster"]["error"].as_str().unwrap_or("");
    assert!(error.contains("authentication failed"), "{error}");
    assert_eq!(canary_weight(&stranger).await.1, 10);
    assert_eq!(stranger.get("/").await.status, 200);
    stranger.shutdown().await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    missing_etcd,
    ignore = "etcd is not installed (scripts/test.sh installs etcd-server)"
)]
async fn replicas_reach_etcd_over_tls_with_client_certificates() {
    let fleet = Setup::start("tls", true).await;
    let Some(pki) = &fleet.etcd.tls else {
        panic!("a TLS etcd has its certificates");
    };
    let tls = |client: bool| {
        let mut text = format!("\n[cluster.tls]\nca = \"{}\"\n", pki.ca.display());
        if client {
            text.push_str(&format!(
                "cert = \"{}\"\nkey = \"{}\"\n",
                pki.client.0.display(),
                pki.client.1.display()
            ));
        }
        text
    };
    let config = |name: &str, client: bool| {
        let text = fleet.config(name);
        // [cluster.tls] right after [cluster]'s keys, before the routes.
        text.replacen("\n[[routes]]", &format!("{}\n[[routes]]", tls(client)), 1)
    };
    let a = start_proxy(&config("a", true)).await;
    let b = start_proxy(&config("b", true)).await;
    for proxy in [&a, &b] {
        eventually(Duration::from_secs(15), "replica connects over TLS", || {
            connected(proxy)
        })
        .await;
    }
    let (revision, _) = canary_weight(&a).await;
    let reply = admin(&a)
        .set_weights("web", revision, r#"{"stable": 40, "canary": 60}"#)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    eventually(
        Duration::from_secs(1),
        "B applies A's change over TLS",
        || async { canary_weight(&b).await.1 == 60 },
    )
    .await;

    // Without a client certificate etcd refuses the replica.
    let anonymous = start_proxy(&config("c", false)).await;
    eventually(Duration::from_secs(10), "etcd refuses it", || async {
        let status = status(&anonymous).await;
        let error = status["cluster"]["error"].as_str().unwrap_or("");
        !error.is_empty() && error != "not connected yet"
    })
    .await;
    assert_eq!(status(&anonymous).await["cluster"]["state"], "disconnected");
    assert_eq!(canary_weight(&anonymous).await.1, 10);
    for proxy in [anonymous, b, a] {
        proxy.shutdown().await;
    }
}

async fn flag_percent(proxy: &TestProxy) -> (bool, f64) {
    let body = admin(proxy)
        .call(Method::GET, "/api/v1/flags", None, None)
        .await
        .json();
    let flag = &body["flags"][0];
    (
        flag["enabled"] == true,
        flag["percent"].as_f64().unwrap_or(-1.0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    missing_etcd,
    ignore = "etcd is not installed (scripts/test.sh installs etcd-server)"
)]
async fn a_flag_changed_on_one_replica_changes_on_every_replica() {
    let fleet = Setup::start("flags", false).await;
    let flag =
        "\n[[flags]]\nname = \"new-checkout\"\npercent = 10\nkey = { header = \"x-user-id\" }\n";
    let a = start_proxy(&format!("{}{flag}", fleet.config("a"))).await;
    let b = start_proxy(&format!("{}{flag}", fleet.config("b"))).await;
    for proxy in [&a, &b] {
        eventually(Duration::from_secs(10), "replica connects to etcd", || {
            connected(proxy)
        })
        .await;
    }
    let (seeded, _) = canary_weight(&a).await;
    eventually(
        Duration::from_secs(5),
        "b at the seeded revision",
        || async { canary_weight(&b).await.0 == seeded },
    )
    .await;
    let reply = admin(&a)
        .call(
            Method::PUT,
            "/api/v1/flags/new-checkout",
            Some(&format!("\"{seeded}\"")),
            Some(r#"{"percent": 25}"#),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    eventually(Duration::from_secs(2), "b serves 25 %", || async {
        flag_percent(&b).await == (true, 25.0)
    })
    .await;
    // The fleet's compare-and-set: B's stale revision loses.
    let stale = admin(&b)
        .call(
            Method::PUT,
            "/api/v1/flags/new-checkout",
            Some(&format!("\"{seeded}\"")),
            Some(r#"{"enabled": false}"#),
        )
        .await;
    assert_eq!(stale.status, 412, "{}", stale.text());
    assert_eq!(flag_percent(&a).await, (true, 25.0));
    let change = admin(&b).last_change().await;
    assert_eq!(change["flag"], "new-checkout", "{change}");
    assert!(
        change["reason"]
            .as_str()
            .is_some_and(|r| r.contains("on for 10% → on for 25%")),
        "{change}"
    );
    a.shutdown().await;
    b.shutdown().await;
}
