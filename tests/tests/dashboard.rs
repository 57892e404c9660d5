//! The dashboard in a real browser: a proxy with a 5 ms stable and a 20 ms
//! canary under live traffic, `GET /dashboard` loaded in headless Chromium
//! until its charts hold data, a screenshot saved to
//! `target/dashboard.png`, and the per-version figures checked in the DOM.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use switchyard_tests::admin::AdminClient;
use switchyard_tests::*;

/// `target/` of this build (the test binary is `target/<profile>/deps/…`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Runs headless Chromium on `url` with a fresh profile; `mode` is
/// `--dump-dom` or `--screenshot=PATH`. Virtual time lets the page's 1 s
/// polls run without waiting for them in real time.
fn chromium(binary: &Path, url: &str, mode: &str) -> String {
    let profile = temp_dir("dashboard-chromium");
    // coreutils' timeout: a hung browser fails the test instead of hanging it.
    let output = Command::new("timeout")
        .arg("60")
        .arg(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1280,720",
            "--virtual-time-budget=6000",
            "--timeout=30000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(mode)
        .arg(url)
        .output()
        .expect("chromium starts");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The text of the cell `field` in the row of `version` (the page renders
/// `<tr data-version="…">` rows with `<td data-field="…">` cells).
fn cell(dom: &str, version: &str, field: &str) -> Option<String> {
    let row_start = dom.find(&format!("<tr data-version=\"{version}\""))?;
    let row = &dom[row_start..row_start + dom[row_start..].find("</tr>")?];
    let at = row.find(&format!("data-field=\"{field}\""))?;
    let text_start = at + row[at..].find('>')? + 1;
    let text_end = text_start + row[text_start..].find('<')?;
    Some(row[text_start..text_end].trim().to_owned())
}

fn number(dom: &str, version: &str, field: &str) -> f64 {
    let text =
        cell(dom, version, field).unwrap_or_else(|| panic!("no {field} for {version}:\n{dom}"));
    text.parse()
        .unwrap_or_else(|_| panic!("{version} {field} is '{text}', not a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    missing_chromium,
    ignore = "chromium is not installed (scripts/test.sh installs it)"
)]
async fn dashboard_shows_live_per_version_figures() {
    let chromium_bin = require_tool("chromium");
    let stable = backend("stable")
        .delay(Duration::from_millis(5))
        .start()
        .await;
    let canary = backend("canary")
        .delay(Duration::from_millis(20))
        .start()
        .await;
    let proxy = start_proxy(&config(&format!(
        "[metrics]\nwindow_slice = \"200ms\"\nwindow_slices = 10\n\n{}",
        route("web")
            .backend("stable", 80, &stable)
            .backend("canary", 20, &canary)
            .build()
    )))
    .await;

    // Traffic for as long as the browser needs it (bounded in count and time).
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = Arc::clone(&stop);
        let url = proxy.url("/");
        tokio::spawn(async move {
            let client = client();
            let deadline = Instant::now() + Duration::from_secs(90);
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) && sent < 20_000 && Instant::now() < deadline {
                get(&client, &url).await;
                sent += 1;
            }
            sent
        })
    };
    let admin = AdminClient::new(proxy.running.admin_addr, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while canary.hits() < 10 {
        assert!(Instant::now() < deadline, "no traffic reached the canary");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = admin.call(Method::GET, "/dashboard", None, None).await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html")));

    let url = format!("http://{}/dashboard?window=1s", proxy.running.admin_addr);
    let browser = chromium_bin.clone();
    let dom = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            // The page marks itself ready once a chart has two points.
            let mut dom = String::new();
            for _ in 0..3 {
                dom = chromium(&browser, &url, "--dump-dom");
                if dom.contains("data-ready=\"1\"") {
                    break;
                }
            }
            dom
        })
        .await
        .expect("chromium task")
    };
    let screenshot = target_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let shot_mode = format!("--screenshot={}", screenshot.display());
    let browser = chromium_bin.clone();
    tokio::task::spawn_blocking(move || chromium(&browser, &url, &shot_mode))
        .await
        .expect("chromium task");
    stop.store(true, Ordering::Relaxed);
    let sent = bounded(Duration::from_secs(40), "traffic", traffic)
        .await
        .expect("traffic task");
    eprintln!("sent {sent} requests; screenshot: {}", screenshot.display());

    assert!(
        dom.contains("data-ready=\"1\""),
        "charts never held data:\n{dom}"
    );
    for version in ["stable", "canary"] {
        assert!(number(&dom, version, "requests") > 0.0, "{version}");
        assert!(number(&dom, version, "rps") > 0.0, "{version}");
        for field in ["p50", "p90", "p99", "p999", "max"] {
            assert!(number(&dom, version, field) > 0.0, "{version} {field}");
        }
        assert_eq!(cell(&dom, version, "error_rate").as_deref(), Some("0.00%"));
    }
    assert_eq!(number(&dom, "stable", "weight"), 80.0);
    assert_eq!(number(&dom, "canary", "weight"), 20.0);
    let (stable_p50, canary_p50) = (number(&dom, "stable", "p50"), number(&dom, "canary", "p50"));
    assert!(
        stable_p50 >= 5.0 && canary_p50 >= 20.0 && canary_p50 > stable_p50,
        "p50 stable {stable_p50} ms, canary {canary_p50} ms"
    );
    assert!(dom.contains("data-weight=\"80\"") && dom.contains("data-weight=\"20\""));
    let points: Vec<usize> = dom
        .match_indices("<polyline")
        .filter_map(|(at, _)| {
            let tag = &dom[at..at + dom[at..].find('>')?];
            let start = tag.find("data-points=\"")? + "data-points=\"".len();
            tag[start..start + tag[start..].find('"')?].parse().ok()
        })
        .collect();
    assert!(
        points.len() >= 6 && points.iter().all(|n| *n >= 2),
        "p50 + p99 per version and error rates, each a line: {points:?}"
    );

    let png = std::fs::read(&screenshot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    assert!(png.len() > 10_000, "suspiciously small screenshot");
    proxy.shutdown().await;
}
