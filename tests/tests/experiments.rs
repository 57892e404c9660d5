//! A/B experiments through the real proxy: 2,000 users (a sticky header
//! each) split 50/50 between two backends; a set share of each variant's
//! users completes a purchase (POST /checkout/complete). The readout in
//! `GET /api/v1/experiments`, Prometheus and `switchyard ctl experiment`
//! must report a real difference (10 % against 14 %: p < 0.05) and no
//! significant one when the shares are equal; concluding promotes the
//! winner and records the figures in the history. The console's panel
//! says the same in words, in headless Chromium, and concludes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::{Method, Request, StatusCode};
use serde_json::Value;
use switchyard_control::ctl::{Ctl, CtlCommand};
use switchyard_tests::admin::{self, AdminClient};
use switchyard_tests::browser::{click_js, Browser};
use switchyard_tests::tools::promtool_check;
use switchyard_tests::*;

const CLIENTS: usize = 8;

const EXPERIMENT: &str = r#"
  [routes.sticky]
  header = "x-user"

  [routes.experiment]
  name = "checkout-v2"
  control = "stable"
  minimum_effect = 0.02

  [[routes.experiment.goals]]
  name = "purchase"
  method = "POST"
  path_prefix = "/checkout/complete"
  status = "2xx"
"#;

struct Shop {
    proxy: TestProxy,
    admin: AdminClient,
    _backends: (Backend, Backend),
}

async fn shop() -> Shop {
    let stable = backend("stable").start().await;
    let canary = backend("canary").start().await;
    let proxy = start_proxy(&config(
        &route("shop")
            .section(EXPERIMENT)
            .backend("stable", 50, &stable)
            .backend("canary", 50, &canary)
            .build(),
    ))
    .await;
    let admin = AdminClient::new(proxy.running.admin_addr, None);
    Shop {
        proxy,
        admin,
        _backends: (stable, canary),
    }
}

/// Whether the `k`-th user (0-based) of a variant converting `percent` %
/// of its users buys: exactly `⌊n × percent / 100⌋` of any first n do.
fn buys(k: u64, percent: u64) -> bool {
    (k + 1) * percent / 100 > k * percent / 100
}

async fn request(client: &TestClient, url: String, method: Method, user: &str) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("x-user", user)
        .body(empty())
        .expect("request");
    let reply = send(client, req).await.expect("proxied request");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply
}

/// `users` users browse (two pages each); of each variant's, the share
/// `percent[variant]` then buys. Returns each variant's users and buyers.
async fn visit(
    shop: &Shop,
    users: usize,
    stable_percent: u64,
    canary_percent: u64,
) -> [(u64, u64); 2] {
    let seen: Arc<[(AtomicU64, AtomicU64); 2]> = Arc::default();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|w| {
            let seen = Arc::clone(&seen);
            let base = shop.proxy.url("");
            tokio::spawn(async move {
                let client = client();
                for user in (w..users).step_by(CLIENTS) {
                    let user = format!("user-{user}");
                    let page = format!("{base}/products");
                    let reply = request(&client, page.clone(), Method::GET, &user).await;
                    request(&client, page, Method::GET, &user).await;
                    let variant = reply.header(BACKEND_HEADER).expect("backend header");
                    let (i, percent) = match variant {
                        "stable" => (0, stable_percent),
                        _ => (1, canary_percent),
                    };
                    let k = seen[i].0.fetch_add(1, Ordering::Relaxed);
                    if buys(k, percent) {
                        seen[i].1.fetch_add(1, Ordering::Relaxed);
                        let checkout = format!("{base}/checkout/complete");
                        let bought = request(&client, checkout, Method::POST, &user).await;
                        assert_eq!(bought.header(BACKEND_HEADER), Some(variant), "{user} moved");
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("client task");
    }
    let load = |i: usize| {
        (
            seen[i].0.load(Ordering::Relaxed),
            seen[i].1.load(Ordering::Relaxed),
        )
    };
    [load(0), load(1)]
}

async fn experiments(admin: &AdminClient) -> Value {
    let reply = admin
        .call(Method::GET, "/api/v1/experiments", None, None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// The purchase goal's row of `variant`.
fn purchase<'a>(report: &'a Value, variant: &str) -> &'a Value {
    report["experiments"][0]["goals"][0]["variants"]
        .as_array()
        .and_then(|rows| rows.iter().find(|row| row["variant"] == variant))
        .unwrap_or_else(|| panic!("no purchase row for {variant}: {report}"))
}

fn f(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

/// Units within 1 % of the users (HyperLogLog++ at 0.8 % standard error;
/// nearly exact in its sparse mode at these counts).
fn near(estimate: &Value, exact: u64) {
    let estimate = f(estimate);
    assert!(
        (estimate - exact as f64).abs() <= (exact as f64 * 0.01).max(1.0),
        "estimated {estimate}, exactly {exact}"
    );
}

fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            _ => f64::NAN,
        })
        .unwrap_or_else(|| panic!("no {name} {labels:?}"))
}

async fn metrics_text(admin: &AdminClient) -> String {
    let reply = admin.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(reply.status, 200);
    reply.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_against_fourteen_percent_is_a_real_difference_and_the_winner_is_promoted() {
    let shop = shop().await;
    let [(stable_users, stable_buyers), (canary_users, canary_buyers)] =
        visit(&shop, 2_000, 10, 14).await;
    assert_eq!(stable_users + canary_users, 2_000);
    let report = experiments(&shop.admin).await;
    let experiment = &report["experiments"][0];
    assert_eq!(experiment["route"], "shop");
    assert_eq!(experiment["name"], "checkout-v2");
    assert_eq!(experiment["control"], "stable");

    let stable = purchase(&report, "stable");
    let canary = purchase(&report, "canary");
    near(&stable["units"], stable_users);
    near(&canary["units"], canary_users);
    near(&stable["conversions"], stable_buyers);
    near(&canary["conversions"], canary_buyers);
    let (rate_s, rate_c) = (f(&stable["conversion_rate"]), f(&canary["conversion_rate"]));
    assert!((rate_s - 0.10).abs() < 0.005, "{stable}");
    assert!((rate_c - 0.14).abs() < 0.005, "{canary}");
    assert!(
        f(&canary["ci_low"]) < rate_c && rate_c < f(&canary["ci_high"]),
        "{canary}"
    );
    let difference = f(&canary["difference"]);
    assert!((difference - 0.04).abs() < 0.006, "{canary}");
    assert!(f(&canary["difference_low"]) > 0.0, "{canary}");
    let p = f(&canary["p_value"]);
    assert!(p < 0.05, "p = {p}: {canary}");
    // The anytime-valid p-value pays for being looked at at any time.
    assert!(f(&canary["p_value_sequential"]) >= p, "{canary}");
    assert!(stable["difference"].is_null() && stable["p_value"].is_null());
    let verdict = experiment["goals"][0]["verdicts"][0]
        .as_str()
        .expect("verdict");
    assert!(
        verdict.contains("canary") && verdict.contains("better"),
        "{verdict}"
    );
    // Every request of the users (2 pages, and the purchases) counted.
    let requests: u64 = experiment["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .map(|v| v["requests"].as_u64().expect("requests"))
        .sum();
    assert_eq!(requests, 4_000 + stable_buyers + canary_buyers);

    let text = metrics_text(&shop.admin).await;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("metrics parse");
    let labels = [
        ("route", "shop"),
        ("experiment", "checkout-v2"),
        ("variant", "canary"),
    ];
    assert_eq!(
        sample(&scrape, "switchyard_experiment_units", &labels),
        f(&canary["units"])
    );
    let goal = [labels[0], labels[1], labels[2], ("goal", "purchase")];
    assert_eq!(
        sample(&scrape, "switchyard_experiment_conversions_total", &goal),
        f(&canary["conversions"])
    );

    let ctl = Ctl::new(&shop.proxy.running.admin_addr.to_string(), None, false);
    let shown = ctl
        .run(CtlCommand::Experiment {
            route: Some("shop".into()),
            conclude: None,
        })
        .await
        .expect("ctl experiment");
    eprintln!("{shown}");
    assert!(
        shown.contains("experiment checkout-v2 (control stable)"),
        "{shown}"
    );
    // The verdict's figures (its end says how long to go: it moves).
    let figures = verdict.split("; ").next().expect("figures");
    assert!(
        shown.contains("goal purchase:") && shown.contains(figures),
        "{shown}"
    );
    let missing = ctl
        .run(CtlCommand::Experiment {
            route: Some("nope".into()),
            conclude: None,
        })
        .await
        .expect_err("no such experiment");
    assert!(missing.to_string().contains("no experiment"), "{missing}");

    // Concluding: bad requests change nothing.
    let (revision, _) = shop.admin.routes().await;
    let conclude =
        |route: &str, name: &str| format!("/api/v1/routes/{route}/experiments/{name}/conclude");
    for (path, body, status) in [
        (
            conclude("shop", "checkout-v2"),
            r#"{"winner": "blue"}"#,
            400,
        ),
        (conclude("shop", "other"), r#"{"winner": "canary"}"#, 404),
        (
            conclude("nope", "checkout-v2"),
            r#"{"winner": "canary"}"#,
            404,
        ),
        (
            conclude("shop", "checkout-v2"),
            r#"{"winer": "canary"}"#,
            400,
        ),
        (conclude("shop", "checkout-v2"), "not json", 400),
    ] {
        let reply = shop.admin.call(Method::POST, &path, None, Some(body)).await;
        assert_eq!(reply.status, status, "{path} {body}: {}", reply.text());
        assert!(reply.json()["error"].is_string(), "{}", reply.text());
    }
    assert_eq!(
        shop.admin.routes().await.0,
        revision,
        "a refused conclusion changed the table"
    );

    let concluded = ctl
        .run(CtlCommand::Experiment {
            route: Some("shop".into()),
            conclude: Some("canary".into()),
        })
        .await
        .expect("conclude");
    assert!(concluded.contains("canary"), "{concluded}");
    let (_, routes) = shop.admin.routes().await;
    assert_eq!(admin::weight(&routes, "shop", "canary"), 100);
    assert_eq!(admin::weight(&routes, "shop", "stable"), 0);
    let change = shop.admin.last_change().await;
    let reason = change["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("experiment 'checkout-v2' concluded: canary wins. purchase: canary"),
        "{change}"
    );
    assert!(reason.contains("points"), "{reason}");
    // The counts outlive the table change (same experiment).
    let after = experiments(&shop.admin).await;
    assert_eq!(purchase(&after, "canary")["units"], canary["units"]);
    shop.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_rates_show_no_significant_difference() {
    let shop = shop().await;
    visit(&shop, 2_000, 10, 10).await;
    let report = experiments(&shop.admin).await;
    let canary = purchase(&report, "canary");
    assert!(f(&canary["p_value"]) > 0.5, "{canary}");
    assert!(f(&canary["p_value_sequential"]) > 0.5, "{canary}");
    assert_eq!(canary["significant"], false);
    assert!(f(&canary["difference_low"]) < 0.0 && f(&canary["difference_high"]) > 0.0);
    // Two points from 10 % need ~3,800 units per variant: more than seen.
    assert!(
        canary["units_needed"].as_u64().expect("units needed") > 3_000,
        "{canary}"
    );
    let verdict = report["experiments"][0]["goals"][0]["verdicts"][0]
        .as_str()
        .expect("verdict");
    assert!(verdict.contains("no significant difference"), "{verdict}");
    shop.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    missing_promtool,
    ignore = "promtool is not installed (scripts/test.sh installs it)"
)]
async fn experiment_metrics_pass_promtool() {
    let shop = shop().await;
    visit(&shop, 50, 10, 20).await;
    promtool_check(&metrics_text(&shop.admin).await);
    shop.proxy.shutdown().await;
}

/// JS: `selector` inside the experiment panel of route `shop`.
fn in_panel(selector: &str) -> String {
    format!("document.querySelector('section[data-route=\"shop\"] [data-panel=\"experiment\"] {selector}')")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    missing_chromium,
    ignore = "chromium is not installed (scripts/test.sh installs it)"
)]
async fn the_console_says_who_wins_and_concludes() {
    let chromium_bin = require_tool("chromium");
    let shop = shop().await;
    visit(&shop, 2_000, 10, 14).await;
    let url = format!("http://{}/dashboard", shop.proxy.running.admin_addr);
    let mut page = Browser::open(&chromium_bin, &url, 1280, 900).await;
    let verdict = page
        .wait_for(
            "the experiment's verdict",
            &format!(
                "{0} && {0}.textContent",
                in_panel("[data-field=\"verdict\"]")
            ),
        )
        .await;
    let verdict = verdict.as_str().unwrap_or_default().to_owned();
    assert!(
        verdict.starts_with("purchase: canary looks better than stable"),
        "{verdict}"
    );
    let rate = page
        .eval(&format!(
            "{}.textContent",
            in_panel("tr[data-variant=\"canary\"] [data-field=\"rate\"]")
        ))
        .await;
    assert!(
        rate.as_str()
            .is_some_and(|r| r.starts_with("13.") || r.starts_with("14.")),
        "{rate}"
    );

    let conclude = in_panel("button[data-action=\"conclude\"][data-variant=\"canary\"]");
    assert_eq!(page.eval(&click_js(&conclude)).await, true);
    page.wait_for(
        "canary at 100 %",
        "document.querySelector('section[data-route=\"shop\"] .weights div[data-version]').dataset.version === 'canary'",
    )
    .await;
    let (_, routes) = shop.admin.routes().await;
    assert_eq!(admin::weight(&routes, "shop", "canary"), 100);
    let change = shop.admin.last_change().await;
    assert!(
        change["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("experiment 'checkout-v2' concluded: canary wins")),
        "{change}"
    );
    shop.proxy.shutdown().await;
}
