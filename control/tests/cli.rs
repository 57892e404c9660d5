//! The real `switchyard` binary: `check` accepts config/example.toml and
//! reports a broken config's key path and line with exit code 1; `run`
//! serves from a file with one worker and stops on SIGTERM, reloads on
//! SIGHUP; `demo` serves its split; `ctl` round-trips against it.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use switchyard_tests::admin::{weight, AdminClient};
use switchyard_tests::child::KillOnDrop;
use switchyard_tests::*;

/// Built by cargo for this package's integration tests.
const SWITCHYARD: &str = env!("CARGO_BIN_EXE_switchyard");

fn check(file: &std::path::Path) -> Output {
    Command::new(SWITCHYARD)
        .arg("check")
        .arg(file)
        .env("SWITCHYARD_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run switchyard check")
}

/// Writes `text` to a file of its own under cargo's scratch dir for tests.
fn scratch_file(name: &str, text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("switchyard-cli");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let path = dir.join(format!("{}-{name}", std::process::id()));
    std::fs::write(&path, text).expect("write scratch file");
    path
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_accepts_the_example_configs() {
    let mut checked = 0;
    for entry in std::fs::read_dir(workspace_root().join("config")).expect("config/") {
        let path = entry.expect("config entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let output = check(&path);
            assert!(
                output.status.success(),
                "check {} failed: {}",
                path.display(),
                text(&output.stderr)
            );
            assert_eq!(text(&output.stdout), "ok\n");
            checked += 1;
        }
    }
    // example.toml, ab-test.toml, canary-rollout.toml at least.
    assert!(checked >= 3, "only {checked} configs found");
}

const BROKEN: &str = r#"[listen]
data = "127.0.0.1:8080"

[[routes]]
name = "web"

  [[routes.versions]]
  name = "stable"
  weight = 90
  endpoints = ["127.0.0.1:9001"]
  wieght = 3
"#;

#[test]
fn check_reports_an_unknown_key_with_its_path_and_line() {
    let path = scratch_file("unknown-key.toml", BROKEN);
    let output = check(&path);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(text(&output.stdout), "");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("routes[0].versions[0].wieght"), "{stderr}");
    assert!(stderr.contains("line 11"), "{stderr}");
    assert!(stderr.contains("unknown-key.toml"), "{stderr}");
}

#[test]
fn check_reports_every_semantic_error_with_lines() {
    let broken = r#"[[routes]]
name = "web"

  [[routes.versions]]
  name = "stable"
  weight = 0
  endpoints = ["not an address"]

  [[routes.versions]]
  name = "stable"
  weight = 0
  endpoints = []
"#;
    let path = scratch_file("semantic.toml", broken);
    let output = check(&path);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    for expected in [
        "line 7, column 16: routes[0].versions[0].endpoints[0]",
        "line 10, column 10: routes[0].versions[1].name",
        "routes[0].versions[1].endpoints",
        "every weight is 0",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn check_of_a_missing_file_says_so_and_exits_1() {
    let output = check(std::path::Path::new("/nonexistent/switchyard.toml"));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("cannot read"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_from_a_file_with_one_worker_and_stops_on_sigterm() {
    let stable = backend("stable").start().await;
    let data = free_port().await;
    let toml = format!(
        "[listen]\ndata = \"{data}\"\nadmin = \"127.0.0.1:0\"\n\n{}",
        route("web").backend("stable", 1, &stable).build()
    );
    let path = scratch_file("run.toml", &toml);
    let child = Command::new(SWITCHYARD)
        .args(["run", "--workers", "1", "--config"])
        .arg(&path)
        .env("SWITCHYARD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn switchyard run");
    let mut child = KillOnDrop(child);

    let client = client();
    let url = format!("http://{data}/");
    let deadline = Instant::now() + Duration::from_secs(15);
    let reply = loop {
        let req = http::Request::get(&url).body(empty()).expect("request");
        if let Ok(reply) = send(&client, req).await {
            break reply;
        }
        assert!(
            Instant::now() < deadline,
            "switchyard run never answered on {data}"
        );
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("switchyard run exited early: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "stable");
    assert_eq!(reply.header("x-switchyard-version"), Some("stable"));

    let killed = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "switchyard run ignored SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit after SIGTERM: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_a_90_10_split_and_prints_how_to_use_it() {
    use std::io::BufRead;
    let child = Command::new(SWITCHYARD)
        // No background traffic: it would share the split's counters.
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--no-traffic",
        ])
        .env("SWITCHYARD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn switchyard demo");
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().expect("demo stdout");
    // The first line names the proxy address; the rest is read to the end
    // of the banner (blocking reads, on a thread of their own).
    let banner = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take_while(|line| !line.starts_with("Press Ctrl-C"))
            .collect::<Vec<_>>()
    });
    let banner = bounded(Duration::from_secs(30), "demo banner", banner)
        .await
        .expect("banner reader");
    let first = banner.first().cloned().unwrap_or_default();
    let proxy = first
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .map(|url| url.trim_end_matches(','))
        .unwrap_or_else(|| panic!("no proxy URL in the banner: {banner:?}"))
        .to_owned();
    let text = banner.join("\n");
    assert!(
        text.contains("set-weights web") && text.contains("/dashboard"),
        "{text}"
    );
    let client = client();
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..20 {
        let reply = get(&client, &format!("{proxy}/")).await;
        assert_eq!(reply.status, StatusCode::OK);
        let version = reply
            .header("x-switchyard-version")
            .unwrap_or("?")
            .to_owned();
        *counts.entry(version).or_insert(0) += 1;
    }
    assert_eq!(counts.get("stable"), Some(&18), "{counts:?}");
    assert_eq!(counts.get("canary"), Some(&2), "{counts:?}");
}

async fn wait_ready(admin: &AdminClient) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = client();
    loop {
        let req = http::Request::get(format!("{}/readyz", admin.base))
            .body(empty())
            .expect("req");
        if let Ok(reply) = send(&client, req).await {
            if reply.status == 200 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "switchyard binary never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_binary_and_ctl_round_trips() {
    let stable = backend("stable").start().await;
    let canary = backend("canary").start().await;
    let dir = temp_dir("reload-sighup");
    let path = dir.join("switchyard.toml");
    let admin_port = free_port().await.port();
    let listen = format!(
        "[listen]\ndata = \"127.0.0.1:{}\"\nadmin = \"127.0.0.1:{admin_port}\"\n",
        free_port().await.port()
    );
    std::fs::write(
        &path,
        format!("{listen}\n{}", web_split(&stable, &canary, 10)),
    )
    .expect("write");
    let child = Command::new(SWITCHYARD)
        .args(["run", "--no-watch", "--workers", "1", "--config"])
        .arg(&path)
        .env("SWITCHYARD_LOG", "warn")
        .env("SWITCHYARD_ADMIN_TOKEN", "sekret")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start switchyard");
    let process = KillOnDrop(child);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{admin_port}").parse().expect("addr");
    let admin = AdminClient::new(addr, Some("sekret"));
    wait_ready(&admin).await;

    // Not watched: the edit alone changes nothing; SIGHUP applies it.
    std::fs::write(
        &path,
        format!("{listen}\n{}", web_split(&stable, &canary, 35)),
    )
    .expect("edit");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(weight(&admin.routes().await.1, "web", "canary"), 10);
    let status = Command::new("kill")
        .args(["-HUP", &process.0.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
    admin.wait_for_weight("web", "canary", 35).await;
    let history = admin
        .call(Method::GET, "/api/v1/history", None, None)
        .await
        .json();
    assert_eq!(history["changes"][0]["source"], "signal");

    // A listener change needs a restart, and says so.
    let moved_port = free_port().await.port();
    let moved = listen.replace(&format!("{admin_port}\""), &format!("{moved_port}\""));
    std::fs::write(
        &path,
        format!("{moved}\n{}", web_split(&stable, &canary, 35)),
    )
    .expect("edit listen");
    let reply = admin.call(Method::POST, "/api/v1/reload", None, None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let status = admin
        .call(Method::GET, "/api/v1/status", None, None)
        .await
        .json();
    assert_eq!(
        status["restart_required"],
        serde_json::json!(["listen.admin"])
    );

    // ctl round trip.
    let ctl = |args: &[&str]| {
        let output = Command::new(SWITCHYARD)
            .args(["ctl", "--admin", &addr.to_string(), "--token", "sekret"])
            .args(args)
            .env("SWITCHYARD_LOG", "error")
            .output()
            .expect("run ctl");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, out, err) = ctl(&["routes"]);
    assert!(
        ok && out.contains("canary") && out.contains("35"),
        "{out}{err}"
    );
    let (ok, out, err) = ctl(&["set-weights", "web", "stable=75", "canary=25"]);
    assert!(ok && out.contains("stable=75 canary=25"), "{out}{err}");
    assert_eq!(weight(&admin.routes().await.1, "web", "canary"), 25);
    let (ok, out, err) = ctl(&["promote", "web", "canary"]);
    assert!(ok && out.contains("canary=100"), "{out}{err}");
    let (ok, out, err) = ctl(&["rollback", "web"]);
    assert!(ok && out.contains("stable=100"), "{out}{err}");
    let (ok, out, err) = ctl(&["flip", "web", "stable", "canary"]);
    assert!(ok && out.contains("canary=100"), "{out}{err}");
    let (ok, out, err) = ctl(&["history"]);
    assert!(
        ok && out.contains("flip") && out.contains("signal"),
        "{out}{err}"
    );
    let (ok, out, err) = ctl(&["--json", "status"]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
    assert!(
        status["revision"].as_u64().is_some_and(|r| r >= 6),
        "{status}"
    );
    let (ok, _, err) = ctl(&["rollout", "web"]);
    assert!(!ok && err.contains("no [routes.rollout]"), "{err}");
    let (ok, _, err) = ctl(&["set-weights", "nope", "stable=1"]);
    assert!(!ok && err.contains("404") && err.contains("nope"), "{err}");
    let output = Command::new(SWITCHYARD)
        .args(["ctl", "--admin", &addr.to_string(), "rollback", "web"])
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .output()
        .expect("ctl without token");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("401"));
    drop(process);
}
