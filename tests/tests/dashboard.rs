//! The dashboard in a real browser.
//!
//! - Figures: a proxy with a 5 ms stable and a 20 ms canary under live
//!   traffic, `GET /dashboard` loaded in headless Chromium until its charts
//!   hold data, a screenshot saved to `target/dashboard.png`, and the
//!   per-version figures checked in the DOM.
//! - Console: the page driven over the Chrome DevTools Protocol — promote
//!   without a token shows the 401 message and changes nothing; with the
//!   typed token the bar and the API agree on 100 %, and the change gets a
//!   marker; weights edited while the table changed behind the page's back
//!   give "changed meanwhile" and the new table; rollout start and abort.
//! - `docs/console.png` (ignored test, run by hand): the console during the
//!   demo, after a rollout's steps and a rollback.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use http::Method;
use serde_json::{json, Value};
use switchyard_tests::admin::{weight, AdminClient};
use switchyard_tests::*;
use tokio_tungstenite::tungstenite::Message;

/// `target/` of this build (the test binary is `target/<profile>/deps/…`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Chromium without a window, a sandbox or anything that talks to the
/// network on its own.
const HEADLESS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
];

/// Runs headless Chromium on `url` with a fresh profile; `mode` is
/// `--dump-dom` or `--screenshot=PATH`. Virtual time lets the page's 1 s
/// polls run without waiting for them in real time.
fn chromium(binary: &Path, url: &str, mode: &str) -> String {
    let profile = temp_dir("dashboard-chromium");
    // coreutils' timeout: a hung browser fails the test instead of hanging it.
    let output = Command::new("timeout")
        .arg("60")
        .arg(binary)
        .args(HEADLESS)
        .args([
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

// ---------------------------------------------------------------------------
// Driving the page: Chrome DevTools Protocol over a websocket
// ---------------------------------------------------------------------------

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A headless Chromium showing one page, driven over CDP; killed on drop.
struct Browser {
    child: Child,
    page: Socket,
    next_id: u64,
    profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Browser {
    /// Starts Chromium on `url` and connects to the page's debugger.
    async fn open(binary: &Path, url: &str, width: u32, height: u32) -> Browser {
        // A profile per browser: two browsers on one profile make the
        // second hand its URL to the first and exit.
        static BROWSERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let profile = temp_dir(&format!(
            "console-chromium-{}",
            BROWSERS.fetch_add(1, Ordering::Relaxed)
        ));
        let mut child = Command::new(binary)
            .args(HEADLESS)
            .arg("--remote-debugging-port=0")
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        // The debugger's address is printed on stderr; the rest of stderr is
        // drained on the same thread so Chromium never blocks on it.
        let stderr = child.stderr.take().expect("chromium stderr");
        let (found, listening) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(at) = line.find("ws://") {
                    let _ = found.send(line[at..].trim().to_owned());
                }
            }
        });
        let browser_ws =
            tokio::task::spawn_blocking(move || listening.recv_timeout(Duration::from_secs(30)))
                .await
                .expect("stderr reader")
                .expect("Chromium printed no 'DevTools listening on ws://…' line within 30 s");
        // ws://127.0.0.1:PORT/devtools/browser/ID -> http://127.0.0.1:PORT/json/list
        let host = browser_ws
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .expect("host:port")
            .to_owned();
        let client = client();
        let page_ws = {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let list = get(&client, &format!("http://{host}/json/list"))
                    .await
                    .json();
                let page = list.as_array().and_then(|targets| {
                    targets
                        .iter()
                        .find(|t| t["type"] == "page")
                        .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
                });
                if let Some(page) = page {
                    break page;
                }
                assert!(Instant::now() < deadline, "no page target: {list}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let (page, _) = bounded(
            Duration::from_secs(10),
            "connect to the page's debugger",
            tokio_tungstenite::connect_async(page_ws.as_str()),
        )
        .await
        .expect("CDP websocket");
        Browser {
            child,
            page,
            next_id: 0,
            profile,
        }
    }

    /// One CDP command; its result.
    async fn command(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params }).to_string();
        self.page
            .send(Message::Text(request.into()))
            .await
            .expect("CDP send");
        bounded(Duration::from_secs(30), method, async {
            loop {
                let message = self
                    .page
                    .next()
                    .await
                    .expect("CDP socket open")
                    .expect("CDP message");
                let Message::Text(text) = message else {
                    continue;
                };
                let reply: Value = serde_json::from_str(text.as_str()).expect("CDP JSON");
                if reply["id"] == id {
                    assert!(reply["error"].is_null(), "{method}: {reply}");
                    return reply["result"].clone();
                }
            }
        })
        .await
    }

    /// Evaluates `expression` in the page (promises awaited); its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .command(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression}: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` until it is truthy; its value.
    async fn wait_for(&mut self, what: &str, expression: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let value = self.eval(expression).await;
            if !matches!(value, Value::Null | Value::Bool(false)) && value != json!("") {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "page never showed {what} ({expression})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the whole page as it is.
    async fn screenshot(&mut self) -> Vec<u8> {
        let height = self.eval("document.documentElement.scrollHeight").await;
        let width = self.eval("document.documentElement.scrollWidth").await;
        let clip = json!({ "x": 0, "y": 0, "width": width, "height": height, "scale": 1 });
        let shot = self
            .command(
                "Page.captureScreenshot",
                json!({ "format": "png", "clip": clip, "captureBeyondViewport": true }),
            )
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("screenshot data is base64")
    }
}

/// JS: the element `selector` inside the card of route `route`.
fn in_route(route: &str, selector: &str) -> String {
    format!("document.querySelector('section[data-route=\"{route}\"] {selector}')")
}

/// JS: clicks `selector` in `route`'s card; true when it was there.
fn click(route: &str, selector: &str) -> String {
    format!(
        "(() => {{ const b = {}; if (!b || b.disabled) return false; b.click(); return true; }})()",
        in_route(route, selector)
    )
}

/// JS: the weights bar of `route` as "version=weight …".
fn bar(route: &str) -> String {
    format!(
        "[...document.querySelectorAll('section[data-route=\"{route}\"] .weights div[data-version]')].map(d => d.dataset.version + '=' + d.dataset.weight).join(' ')"
    )
}

const MESSAGE: &str =
    "(() => { const m = document.getElementById('message'); return m.dataset.kind ? m.dataset.kind + ': ' + m.textContent : ''; })()";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    missing_chromium,
    ignore = "chromium is not installed (scripts/test.sh installs it)"
)]
async fn console_controls_need_the_token_and_the_revision_shown() {
    let chromium_bin = require_tool("chromium");
    let dir = temp_dir("console-token");
    let token_file = dir.join("deployer.token");
    std::fs::write(&token_file, "s3cret-console\n").expect("token file");
    let stable = backend("stable").start().await;
    let canary = backend("canary").start().await;
    let text = config(&format!(
        "[[admin.tokens]]\nname = \"deployer\"\nfile = {:?}\n\n{}  [routes.rollout]\n  interval = \"60s\"\n  min_requests = 1000000\n",
        token_file.display().to_string(),
        route("web")
            .backend("stable", 80, &stable)
            .backend("canary", 20, &canary)
            .build()
    ));
    let proxy = start_proxy(&text).await;
    let admin_addr = proxy.running.admin_addr;
    let api = AdminClient::new(admin_addr, Some("s3cret-console"));
    let (first_revision, _) = api.routes().await;

    let mut page = Browser::open(
        &chromium_bin,
        &format!("http://{admin_addr}/dashboard"),
        1280,
        900,
    )
    .await;
    page.wait_for(
        "the web card",
        &format!(
            "{} !== null",
            in_route(
                "web",
                "button[data-action=\"promote\"][data-version=\"canary\"]"
            )
        ),
    )
    .await;
    assert_eq!(page.eval(&bar("web")).await, "stable=80 canary=20");

    // No token typed: the API refuses, the page says why, nothing changes.
    assert_eq!(
        page.eval(&click(
            "web",
            "button[data-action=\"promote\"][data-version=\"canary\"]"
        ))
        .await,
        true
    );
    let refused = page
        .wait_for(
            "the 401 message",
            &format!("{MESSAGE}.startsWith('unauthorized') && {MESSAGE}"),
        )
        .await;
    let refused = refused.as_str().unwrap_or_default().to_owned();
    assert!(
        refused.contains("needs a bearer token") && refused.contains("Type the admin token"),
        "{refused}"
    );
    let (revision, routes) = api.routes().await;
    assert_eq!(
        revision, first_revision,
        "a refused change changed the table"
    );
    assert_eq!(
        (
            weight(&routes, "web", "stable"),
            weight(&routes, "web", "canary")
        ),
        (80, 20)
    );
    assert_eq!(page.eval(&bar("web")).await, "stable=80 canary=20");

    // The token typed (kept in the page only): promote goes through.
    page.eval("(() => { const t = document.getElementById('token'); t.value = 's3cret-console'; t.dispatchEvent(new Event('input')); })()").await;
    assert_eq!(
        page.eval(&click(
            "web",
            "button[data-action=\"promote\"][data-version=\"canary\"]"
        ))
        .await,
        true
    );
    page.wait_for(
        "canary at 100 %",
        &format!("{} === 'canary=100'", bar("web")),
    )
    .await;
    let done = page.eval(MESSAGE).await;
    assert!(
        done.as_str()
            .is_some_and(|m| m.starts_with("ok: promote canary on web")),
        "{done}"
    );
    let (promoted, routes) = api.routes().await;
    assert_eq!(promoted, first_revision + 1);
    assert_eq!(
        (
            weight(&routes, "web", "stable"),
            weight(&routes, "web", "canary")
        ),
        (0, 100)
    );
    let history = api
        .call(Method::GET, "/api/v1/history", None, None)
        .await
        .json();
    let last = history["changes"]
        .as_array()
        .and_then(|c| c.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (last["who"].as_str(), last["route"].as_str()),
        (Some("deployer"), Some("web")),
        "{last}"
    );
    // Both charts carry a marker for it, saying who.
    let markers = page
        .wait_for("a marker for the promotion", &format!(
            "document.querySelectorAll('section[data-route=\"web\"] .chart g.marker[data-who=\"deployer\"]').length >= 2 && {}.textContent",
            in_route("web", ".chart g.marker[data-who=\"deployer\"]")))
        .await;
    assert!(
        markers
            .as_str()
            .is_some_and(|t| t.contains("deployer") && t.contains("canary 100%")),
        "{markers}"
    );
    // Neither the URL nor the page's storage holds the token.
    let leaks = page.eval("location.href + JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie").await;
    assert!(
        !leaks.as_str().unwrap_or("s3cret").contains("s3cret"),
        "{leaks}"
    );

    // Weights edited on the page while the table changes behind its back:
    // "changed meanwhile", the new table shown, the edit not applied.
    page.eval(&format!(
        "(() => {{ const i = {}; i.value = '30'; i.dispatchEvent(new Event('input')); }})()",
        in_route("web", "input[data-weight-input=\"stable\"]")
    ))
    .await;
    let edited_from = page
        .eval(&format!("{}.textContent", in_route("web", ".dirty")))
        .await;
    assert_eq!(edited_from, format!("edited from revision {promoted}"));
    let behind = api
        .set_weights("web", promoted, r#"{"stable": 50, "canary": 50}"#)
        .await;
    assert_eq!(behind.status, 200, "{}", behind.text());
    assert_eq!(
        page.eval(&click("web", "button[data-action=\"apply-weights\"]"))
            .await,
        true
    );
    let conflict = page
        .wait_for(
            "the 412 message",
            &format!("{MESSAGE}.startsWith('conflict') && {MESSAGE}"),
        )
        .await;
    assert!(
        conflict
            .as_str()
            .is_some_and(|m| m.contains("Changed meanwhile")
                && m.contains(&format!("revision {promoted} to {}", promoted + 1))),
        "{conflict}"
    );
    page.wait_for(
        "the new table",
        &format!("{} === 'stable=50 canary=50'", bar("web")),
    )
    .await;
    page.wait_for(
        "inputs showing the new table",
        &format!(
            "{}.value === '50'",
            in_route("web", "input[data-weight-input=\"stable\"]")
        ),
    )
    .await;
    let (after, routes) = api.routes().await;
    assert_eq!(after, promoted + 1, "the page retried or applied its edit");
    assert_eq!(
        (
            weight(&routes, "web", "stable"),
            weight(&routes, "web", "canary")
        ),
        (50, 50)
    );

    // Rollout controls: start (canary to the first step), then abort.
    assert_eq!(
        page.eval(&click("web", "button[data-action=\"rollout-start\"]"))
            .await,
        true
    );
    page.wait_for(
        "the rollout running",
        &format!(
            "{}.textContent === 'running'",
            in_route("web", "[data-field=\"rollout-state\"]")
        ),
    )
    .await;
    page.wait_for(
        "the first step's weights",
        &format!("{} === 'stable=95 canary=5'", bar("web")),
    )
    .await;
    page.wait_for(
        "abort enabled",
        &click("web", "button[data-action=\"rollout-abort\"]"),
    )
    .await;
    page.wait_for(
        "the rollout aborted",
        &format!(
            "{}.textContent === 'aborted'",
            in_route("web", "[data-field=\"rollout-state\"]")
        ),
    )
    .await;
    let (_, routes) = api.routes().await;
    assert_eq!(
        (
            weight(&routes, "web", "stable"),
            weight(&routes, "web", "canary")
        ),
        (100, 0)
    );

    drop(page);
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The README's screenshot: the console during `switchyard demo`, after a
/// rollout advanced a step and was rolled back when the canary was made
/// slow. Run by hand (about 40 s):
/// `cargo test -p switchyard-tests --test dashboard -- --ignored console_screenshot`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/console.png for the README; run by hand"]
async fn console_screenshot_during_the_demo() {
    use switchyard_control::demo::{self, DemoOptions};
    let chromium_bin = require_tool("chromium");
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let demo = demo::start(DemoOptions {
        data: loopback,
        admin: loopback,
        traffic: Some(demo::traffic::DEFAULT_RATE),
    })
    .await
    .unwrap_or_else(|e| panic!("demo: {e}"));
    let admin_addr = demo.running.admin_addr;
    let api = AdminClient::new(admin_addr, None);
    let mut page = Browser::open(
        &chromium_bin,
        &format!("http://{admin_addr}/dashboard"),
        1280,
        900,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let started = api
        .call(Method::POST, "/api/v1/routes/web/rollout/start", None, None)
        .await;
    assert_eq!(started.status, 200, "{}", started.text());
    let rollout = |state: &'static str, step: u64| {
        let api = &api;
        move || async move {
            let status = api
                .call(Method::GET, "/api/v1/routes/web/rollout", None, None)
                .await
                .json();
            (status["state"] == state && status["step"].as_u64() >= Some(step)).then_some(status)
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while rollout("running", 2)().await.is_none() {
        assert!(
            Instant::now() < deadline,
            "the rollout never reached step 2"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let slow = api
        .call(
            Method::POST,
            "/api/v1/demo/backends/canary?latency=80ms",
            None,
            None,
        )
        .await;
    assert_eq!(slow.status, 200, "{}", slow.text());
    let deadline = Instant::now() + Duration::from_secs(20);
    while rollout("rolled_back", 1)().await.is_none() {
        assert!(
            Instant::now() < deadline,
            "the slow canary was not rolled back"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let healed = api
        .call(
            Method::POST,
            "/api/v1/demo/backends/canary?reset=true",
            None,
            None,
        )
        .await;
    assert_eq!(healed.status, 200);
    tokio::time::sleep(Duration::from_secs(6)).await;
    page.wait_for(
        "markers",
        "document.querySelectorAll('g.marker[data-who=\"rollout\"]').length >= 3",
    )
    .await;
    let png = page.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let path = workspace_root().join("docs").join("console.png");
    std::fs::create_dir_all(path.parent().expect("docs/")).expect("docs/");
    std::fs::write(&path, &png).expect("write docs/console.png");
    eprintln!("{} ({} KB)", path.display(), png.len() / 1024);
    drop(page);
    demo.shutdown().await;
}
