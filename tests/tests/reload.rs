//! Reloading the config file: on edit (watched directory), on a Kubernetes
//! ConfigMap-style `..data` symlink swap, on SIGHUP and through the API; an
//! invalid file keeps the table and is reported. (SIGHUP to the real
//! binary and `switchyard ctl`: control/tests/cli.rs.)

use std::path::Path;
use std::time::{Duration, Instant};

use http::Method;
use switchyard_control::{Config, StartOptions};
use switchyard_tests::admin::{weight, AdminClient};
use switchyard_tests::*;

fn web_config(listen: &str, stable: &Backend, canary: &Backend, canary_weight: u32) -> String {
    format!("{listen}\n{}", web_split(stable, canary, canary_weight))
}

const EPHEMERAL: &str = "[listen]\ndata = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n";

/// Polls the admin API until `canary` has `expected` weight (10 s at most).
async fn wait_for_canary(admin: &AdminClient, expected: u64) -> serde_json::Value {
    admin.wait_for_weight("web", "canary", expected).await
}

async fn start_watching(path: &Path) -> switchyard_control::Running {
    let text = std::fs::read_to_string(path).expect("config");
    let config = Config::parse(&text, "test").expect("valid config");
    let options = StartOptions {
        config_path: Some(path.to_path_buf()),
        config_text: Some(text),
        admin_token: None,
        watch: true,
    };
    bounded(
        Duration::from_secs(10),
        "start",
        switchyard_control::start_with(&config, options),
    )
    .await
    .expect("proxy starts")
}

/// Writes `text` to `path` the way editors do: a temp file renamed over it.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_edit_reloads_and_invalid_file_is_reported() {
    let stable = backend("stable").start().await;
    let canary = backend("canary").start().await;
    let dir = temp_dir("reload-edit");
    let path = dir.join("switchyard.toml");
    std::fs::write(&path, web_config(EPHEMERAL, &stable, &canary, 10)).expect("write");
    let running = start_watching(&path).await;
    let admin = AdminClient::new(running.admin_addr, None);

    // An in-place edit.
    std::fs::write(&path, web_config(EPHEMERAL, &stable, &canary, 40)).expect("edit");
    wait_for_canary(&admin, 40).await;
    // An editor's rename-over.
    replace_file(&path, &web_config(EPHEMERAL, &stable, &canary, 20));
    wait_for_canary(&admin, 20).await;
    let (revision, routes) = admin.routes().await;

    // A broken file: the table stays, the error is reported.
    std::fs::write(&path, "[[routes]]\nname = \"web\"\nversions = 5\n").expect("break");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = admin
            .call(Method::GET, "/api/v1/status", None, None)
            .await
            .json();
        if status["last_reload_error"].is_string() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "reload error never reported: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let error = status["last_reload_error"].as_str().unwrap_or_default();
    assert!(error.contains("routes[0].versions"), "{error}");
    assert_eq!(admin.routes().await, (revision, routes));
    let history = admin
        .call(Method::GET, "/api/v1/history", None, None)
        .await
        .json();
    let changes = history["changes"].as_array().expect("changes").clone();
    assert_eq!(changes.len(), 2);
    assert!(changes
        .iter()
        .all(|c| c["source"] == "file" && c["who"] == "file"));

    // The API reports an invalid file too, and the table still stands.
    let reply = admin.call(Method::POST, "/api/v1/reload", None, None).await;
    assert_eq!(reply.status, 422, "{}", reply.text());
    assert_eq!(admin.routes().await.0, revision);

    // Fixed again: applied, error cleared.
    std::fs::write(&path, web_config(EPHEMERAL, &stable, &canary, 30)).expect("fix");
    wait_for_canary(&admin, 30).await;
    let status = admin
        .call(Method::GET, "/api/v1/status", None, None)
        .await
        .json();
    assert!(status["last_reload_error"].is_null(), "{status}");
    bounded(Duration::from_secs(20), "shutdown", running.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_data_symlink_swap_reloads() {
    let stable = backend("stable").start().await;
    let canary = backend("canary").start().await;
    let dir = temp_dir("reload-configmap");
    // The layout kubelet writes: config.toml -> ..data/config.toml,
    // ..data -> ..<timestamp>/.
    let first = dir.join("..2026_11_23_01_00_00.1");
    std::fs::create_dir(&first).expect("dir");
    std::fs::write(
        first.join("config.toml"),
        web_config(EPHEMERAL, &stable, &canary, 10),
    )
    .expect("write");
    std::os::unix::fs::symlink("..2026_11_23_01_00_00.1", dir.join("..data")).expect("..data");
    std::os::unix::fs::symlink("..data/config.toml", dir.join("config.toml")).expect("config link");
    let running = start_watching(&dir.join("config.toml")).await;
    let admin = AdminClient::new(running.admin_addr, None);
    wait_for_canary(&admin, 10).await;

    // The atomic update: new timestamped dir, ..data_tmp -> it, rename over
    // ..data, remove the old dir.
    let second = dir.join("..2026_11_23_01_05_00.2");
    std::fs::create_dir(&second).expect("dir");
    std::fs::write(
        second.join("config.toml"),
        web_config(EPHEMERAL, &stable, &canary, 50),
    )
    .expect("write");
    std::os::unix::fs::symlink("..2026_11_23_01_05_00.2", dir.join("..data_tmp"))
        .expect("tmp link");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap");
    std::fs::remove_dir_all(&first).expect("remove old");
    let routes = wait_for_canary(&admin, 50).await;
    assert_eq!(weight(&routes, "web", "stable"), 50);
    let counts = count_by(
        &load_url(&format!("http://{}/", running.data_addr), 100).await,
        "x-switchyard-version",
    );
    assert_eq!(counts.get("canary"), Some(&50), "{counts:?}");
    bounded(Duration::from_secs(20), "shutdown", running.shutdown()).await;
}

async fn load_url(url: &str, total: usize) -> Vec<Reply> {
    let client = client();
    let mut replies = Vec::new();
    for _ in 0..total {
        replies.push(get(&client, url).await);
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_override_survives_reloads_until_the_file_changes_the_route() {
    let stable = backend("stable").start().await;
    let canary = backend("canary").start().await;
    let dir = temp_dir("reload-override");
    let path = dir.join("switchyard.toml");
    let other = "\n[[routes]]\nname = \"other\"\npath_prefix = \"/other\"\n  [[routes.versions]]\n  name = \"stable\"\n  weight = 1\n";
    let with_other = |canary_weight: u32, other_weight: &str| {
        format!(
            "{}{}  endpoints = [\"{}\"]\n",
            web_config(EPHEMERAL, &stable, &canary, canary_weight),
            other.replace("weight = 1", other_weight),
            stable.endpoint()
        )
    };
    std::fs::write(&path, with_other(10, "weight = 1")).expect("write");
    let running = start_watching(&path).await;
    let admin = AdminClient::new(running.admin_addr, None);

    let (revision, _) = admin.routes().await;
    let reply = admin
        .set_weights("web", revision, r#"{"canary": 70, "stable": 30}"#)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // The file changes another route: web keeps its runtime weights.
    std::fs::write(&path, with_other(10, "weight = 2")).expect("edit other");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, routes) = admin.routes().await;
        if weight(&routes, "other", "stable") == 2 {
            assert_eq!(
                weight(&routes, "web", "canary"),
                70,
                "override lost: {routes}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "other route never reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = admin
        .call(Method::GET, "/api/v1/status", None, None)
        .await
        .json();
    assert_eq!(status["overridden_routes"], serde_json::json!(["web"]));

    // The file changes web: the file wins and the override ends.
    std::fs::write(&path, with_other(25, "weight = 2")).expect("edit web");
    wait_for_canary(&admin, 25).await;
    let status = admin
        .call(Method::GET, "/api/v1/status", None, None)
        .await
        .json();
    assert_eq!(status["overridden_routes"], serde_json::json!([]));
    bounded(Duration::from_secs(20), "shutdown", running.shutdown()).await;
}
