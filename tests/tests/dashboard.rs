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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;
use switchyard_tests::admin::{weight, AdminClient};
use switchyard_tests::browser::{self, click_js, type_js, Browser};
use switchyard_tests::*;

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
    eventually(
        Duration::from_secs(20),
        "traffic reaching the canary",
        || async { (canary.hits() >= 10).then_some(()) },
    )
    .await;
    let page = admin.call(Method::GET, "/dashboard", None, None).await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html")));

    let url = format!("http://{}/dashboard?window=1s", proxy.running.admin_addr);
    let dom = {
        let (chromium_bin, url) = (chromium_bin.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            // The page marks itself ready once a chart has two points.
            let mut dom = String::new();
            for _ in 0..3 {
                dom = browser::dump_dom(&chromium_bin, &url);
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
    {
        let screenshot = screenshot.clone();
        tokio::task::spawn_blocking(move || {
            browser::screenshot_to(&chromium_bin, &url, &screenshot)
        })
        .await
        .expect("chromium task");
    }
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
// Driving the console: what its markup means
// ---------------------------------------------------------------------------

/// JS: the element `selector` inside the card of route `route`.
fn in_route(route: &str, selector: &str) -> String {
    format!("document.querySelector('section[data-route=\"{route}\"] {selector}')")
}

/// JS: clicks `selector` in `route`'s card; true when it was there.
fn click(route: &str, selector: &str) -> String {
    click_js(&in_route(route, selector))
}

const PROMOTE_CANARY: &str = "button[data-action=\"promote\"][data-version=\"canary\"]";
const STABLE_INPUT: &str = "input[data-weight-input=\"stable\"]";

/// JS: true once the rollout state of `route`'s card reads `state`.
fn rollout_state_is(route: &str, state: &str) -> String {
    format!(
        "{}.textContent === '{state}'",
        in_route(route, "[data-field=\"rollout-state\"]")
    )
}

/// The weights of stable and canary on route `web`.
fn web_weights(routes: &Value) -> (u64, u64) {
    (
        weight(routes, "web", "stable"),
        weight(routes, "web", "canary"),
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
        &format!("{} !== null", in_route("web", PROMOTE_CANARY)),
    )
    .await;
    assert_eq!(page.eval(&bar("web")).await, "stable=80 canary=20");

    // No token typed: the API refuses, the page says why, nothing changes.
    assert_eq!(page.eval(&click("web", PROMOTE_CANARY)).await, true);
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
    assert_eq!(web_weights(&routes), (80, 20));
    assert_eq!(page.eval(&bar("web")).await, "stable=80 canary=20");

    // The token typed (kept in the page only): promote goes through.
    page.eval(&type_js(
        "document.getElementById('token')",
        "s3cret-console",
    ))
    .await;
    assert_eq!(page.eval(&click("web", PROMOTE_CANARY)).await, true);
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
    assert_eq!(web_weights(&routes), (0, 100));
    let last = api.last_change().await;
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
    page.eval(&type_js(&in_route("web", STABLE_INPUT), "30"))
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
        &format!("{}.value === '50'", in_route("web", STABLE_INPUT)),
    )
    .await;
    let (after, routes) = api.routes().await;
    assert_eq!(after, promoted + 1, "the page retried or applied its edit");
    assert_eq!(web_weights(&routes), (50, 50));

    // Rollout controls: start (canary to the first step), then abort.
    assert_eq!(
        page.eval(&click("web", "button[data-action=\"rollout-start\"]"))
            .await,
        true
    );
    page.wait_for("the rollout running", &rollout_state_is("web", "running"))
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
    page.wait_for("the rollout aborted", &rollout_state_is("web", "aborted"))
        .await;
    let (_, routes) = api.routes().await;
    assert_eq!(web_weights(&routes), (100, 0));

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
            let status = api.rollout_status("web").await;
            (status["state"] == state && status["step"].as_u64() >= Some(step)).then_some(status)
        }
    };
    eventually(
        Duration::from_secs(30),
        "the rollout reaching step 2",
        rollout("running", 2),
    )
    .await;
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
    eventually(
        Duration::from_secs(20),
        "the slow canary rolled back",
        rollout("rolled_back", 1),
    )
    .await;
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
