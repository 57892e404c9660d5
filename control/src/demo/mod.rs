//! `switchyard demo`: everything in one process — three demo backends
//! (stable, canary, green), the proxy in front of them, its own background
//! traffic, demo-only admin endpoints that make a backend bad or good, and
//! a printed tour. [`start`] returns the running demo (tests drive it);
//! [`run`] is the command.
//!
//! Route `web` (`/`) splits 90/10/0 and has a rollout policy with 10 s
//! steps; route `api` (`/api/`) sends everything to stable and shadows it
//! to the canary build with `compare = true`; route `shop` (`/shop/`)
//! runs an A/B experiment (stable against canary, goal: a checkout) and
//! the flag `new-checkout` for 10 % of its shoppers, guarded.

pub mod backends;
pub mod endpoint;
pub mod tour;
pub mod traffic;

use std::net::SocketAddr;

use crate::config::Config;
use crate::run::{Running, StartError, StartOptions};
use backends::Backend;
use traffic::Traffic;

/// How to start the demo.
#[derive(Debug, Clone, Copy)]
pub struct DemoOptions {
    pub data: SocketAddr,
    pub admin: SocketAddr,
    /// Background requests per second; `None` for none (`--no-traffic`).
    pub traffic: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start a demo backend on 127.0.0.1: {0}")]
    Backend(#[from] std::io::Error),
    #[error("the demo's config is invalid (a bug): {0}")]
    Config(String),
    #[error(transparent)]
    Start(#[from] StartError),
}

/// The running demo.
pub struct Demo {
    pub running: Running,
    /// stable, canary, green.
    pub backends: Vec<Backend>,
    pub traffic: Option<Traffic>,
}

impl Demo {
    /// The backend called `name`.
    pub fn backend(&self, name: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.name == name)
    }

    pub async fn shutdown(self) {
        drop(self.traffic);
        self.running.shutdown().await;
    }
}

/// The demo's config over the backends `[stable, canary, green]`.
pub fn config(data: SocketAddr, admin: SocketAddr, backends: [SocketAddr; 3]) -> String {
    let [stable, canary, green] = backends;
    format!(
        r#"[listen]
data = "{data}"
admin = "{admin}"

# 2 s slices: the console's figures follow a change within seconds.
[metrics]
window_slice = "2s"
window_slices = 30

[[routes]]
name = "web"
path_prefix = "/"

  [[routes.versions]]
  name = "stable"
  weight = 90
  endpoints = ["{stable}"]

  [[routes.versions]]
  name = "canary"
  weight = 10
  endpoints = ["{canary}"]

  [[routes.versions]]
  name = "green"
  weight = 0
  endpoints = ["{green}"]

  # Short steps so a rollout takes about 40 s. The background traffic
  # brings the canary ~50 requests per step at 5 %; a healthy canary
  # (1-5 ms; tens of ms in a debug build on a busy machine) passes with
  # room to spare, one made bad (20 % errors or 80 ms more) fails as soon
  # as 20 requests are in.
  [routes.rollout]
  canary = "canary"
  baseline = "stable"
  steps = [5, 25, 50, 100]
  interval = "10s"
  min_requests = 20
  max_error_rate = 0.05
  max_p99 = "75ms"
  on_success = "promote"

[[routes]]
name = "api"
path_prefix = "/api/"

  [[routes.versions]]
  name = "stable"
  weight = 100
  endpoints = ["{stable}"]

  # The canary build sees a copy of every API request; its answers are
  # compared with stable's (they differ on /api/prices).
  [[routes.shadows]]
  name = "canary"
  endpoints = ["{canary}"]
  compare = true

# Shoppers (x-user-id) stay on one version; the background traffic's
# shoppers check out a little more often on the canary.
[[routes]]
name = "shop"
path_prefix = "/shop/"

  [routes.sticky]
  header = "x-user-id"

  [routes.experiment]
  name = "checkout-v2"
  control = "stable"
  minimum_effect = 0.02

  [[routes.experiment.goals]]
  name = "checkout"
  method = "POST"
  path_prefix = "/shop/checkout"
  status = "2xx"

  [[routes.versions]]
  name = "stable"
  weight = 50
  endpoints = ["{stable}"]

  [[routes.versions]]
  name = "canary"
  weight = 50
  endpoints = ["{canary}"]

[[flags]]
name = "new-checkout"
percent = 10
key = {{ header = "x-user-id" }}
routes = ["shop"]
  [flags.guard]
  max_error_rate_increase = 0.02
  min_requests = 50
  window = "30s"
  interval = "2s"
"#
    )
}

/// Starts the backends, the proxy (with the demo endpoints) and the
/// background traffic.
pub async fn start(options: DemoOptions) -> Result<Demo, DemoError> {
    let backends = vec![
        Backend::start("stable").await?,
        Backend::start("canary").await?,
        Backend::start("green").await?,
    ];
    let text = config(
        options.data,
        options.admin,
        [backends[0].addr, backends[1].addr, backends[2].addr],
    );
    let config = Config::parse(&text, "demo").map_err(|e| DemoError::Config(e.to_string()))?;
    let running = crate::run::start_with_extensions(
        &config,
        StartOptions::default(),
        vec![endpoint::extension(backends.clone())],
    )
    .await?;
    let traffic = options
        .traffic
        .map(|rate| Traffic::start(running.data_addr, rate));
    Ok(Demo {
        running,
        backends,
        traffic,
    })
}

/// `switchyard demo`: starts, prints the tour, runs until Ctrl-C.
pub async fn run(options: DemoOptions) -> Result<(), crate::BoxError> {
    let demo = start(options).await?;
    // Under `cargo run` the binary is not on PATH: print the one running.
    let exe = std::env::current_exe()
        .map_or_else(|_| "switchyard".to_owned(), |p| p.display().to_string());
    let tour = tour::Tour {
        exe: &exe,
        data: demo.running.data_addr,
        admin: demo.running.admin_addr,
        backends: &demo.backends,
        traffic: options.traffic,
    };
    println!("{}", tour.text());
    let _ = tokio::signal::ctrl_c().await;
    demo.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn config_is_valid_with_a_rollout_and_a_comparing_shadow() {
        let text = config(addr(8080), addr(9901), [addr(1), addr(2), addr(3)]);
        let config = Config::parse(&text, "demo").unwrap_or_else(|e| panic!("{e}"));
        let policies = config.rollout_policies();
        let web = policies.get("web").expect("web has a rollout policy");
        assert_eq!(web.steps, vec![5, 25, 50, 100]);
        assert_eq!(web.interval, std::time::Duration::from_secs(10));
        assert!(text.contains("compare = true"));
        let spec = config.table_spec();
        let shop = spec.routes.iter().find(|r| r.name == "shop").expect("shop");
        assert!(shop.experiment.is_some());
        assert_eq!(spec.flags[0].name, "new-checkout");
        assert!(config.flag_guards().contains_key("new-checkout"));
    }

    #[test]
    fn tour_is_numbered_commands() {
        let text = tour::Tour {
            exe: "switchyard",
            data: addr(8080),
            admin: addr(9901),
            backends: &[],
            traffic: Some(200),
        }
        .text();
        for (step, command) in [
            (" 1.", "uniq -c"),
            (" 3.", "ctl --admin 127.0.0.1:9901 rollout web start"),
            (" 4.", "demo canary --error-rate 0.2 --latency 80ms"),
            (" 7.", "flip web stable green"),
            (" 8.", "shadows"),
            (" 9.", "ctl --admin 127.0.0.1:9901 experiment shop"),
            ("10.", "ofrep/v1/evaluate/flags/new-checkout"),
        ] {
            let at = text.find(step).unwrap_or_else(|| panic!("{step}:\n{text}"));
            assert!(text[at..].contains(command), "{step} {command}:\n{text}");
        }
        assert!(text.contains("http://127.0.0.1:9901/dashboard"));
        assert!(text.ends_with("Press Ctrl-C to stop."));
    }
}
