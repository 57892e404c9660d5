//! The `switchyard` command: run, check, demo.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchyard_control::ctl::{Ctl, CtlCommand};
use switchyard_control::{gateway_api, StartOptions};
use tracing::Level;

/// jemalloc, built with background purging (`.cargo/config.toml`): memory
/// freed after a burst of connections goes back to the OS within seconds,
/// where glibc's malloc kept it (benches/RESULTS.md, "memory per
/// connection").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "L7 traffic-splitting proxy: canary, blue-green, shadow"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve traffic from a config file.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Worker threads; 1 gives a single-threaded runtime. Default: one per core.
        #[arg(long)]
        workers: Option<usize>,
        /// Do not watch the config and certificate files; reload both only on
        /// SIGHUP or the admin API.
        #[arg(long)]
        no_watch: bool,
    },
    /// Validate a config file: prints `ok` or every error; exit 1 on error.
    Check { file: PathBuf },
    /// Start demo backends, the proxy in front of them and light traffic;
    /// prints a tour to follow.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// Send no background traffic (rollouts then wait for yours).
        #[arg(long)]
        no_traffic: bool,
        /// Background requests per second.
        #[arg(long, default_value_t = switchyard_control::demo::traffic::DEFAULT_RATE,
              value_parser = clap::value_parser!(u32).range(1..=5000))]
        rate: u32,
    },
    /// Load a URL and measure each version's latency and errors, and what
    /// a canary costs against the baseline.
    Load(Box<switchyard_control::load::LoadOptions>),
    /// Print a running switchyard's live routes, weights included, as
    /// Kubernetes Gateway API HTTPRoutes (docs/gateway-api.md).
    Export {
        /// The format; the only one, and required so others can follow.
        #[arg(long, required = true)]
        gateway_api: bool,
        /// Admin API address or URL.
        #[arg(long, env = "SWITCHYARD_ADMIN", default_value = "127.0.0.1:9901")]
        admin: String,
        /// Bearer token (or SWITCHYARD_ADMIN_TOKEN).
        #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Only this route.
        #[arg(long)]
        route: Option<String>,
    },
    /// Talk to a running switchyard's admin API.
    Ctl {
        /// Admin API address or URL.
        #[arg(long, env = "SWITCHYARD_ADMIN", default_value = "127.0.0.1:9901")]
        admin: String,
        /// Bearer token (or SWITCHYARD_ADMIN_TOKEN).
        #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Print the API's JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: CtlCommand,
    },
}

/// Logs to stderr at the level SWITCHYARD_LOG names (`warn`, or per target:
/// `info,switchyard_proxy=debug`); `info` when unset.
fn init_logging() {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let (targets, invalid) = match std::env::var("SWITCHYARD_LOG") {
        Ok(spec) => match spec.parse::<Targets>() {
            Ok(targets) => (targets, None),
            Err(error) => (
                Targets::new().with_default(Level::INFO),
                Some((spec, error)),
            ),
        },
        Err(_) => (Targets::new().with_default(Level::INFO), None),
    };
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(targets)
        .init();
    if let Some((spec, error)) = invalid {
        tracing::warn!(%spec, %error, "SWITCHYARD_LOG not understood (expected e.g. `warn` or `info,switchyard_proxy=debug`); logging at info");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Check { file } => match gateway_api::load(&file) {
            Ok(_) => {
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            config: path,
            workers,
            no_watch,
        } => {
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(error) => {
                    eprintln!("{}: cannot read the file: {error}", path.display());
                    return ExitCode::FAILURE;
                }
            };
            let config = match gateway_api::parse_checked(&text, &path) {
                Ok(config) => config,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::FAILURE;
                }
            };
            block_on(workers, async move {
                let options = StartOptions {
                    config_path: Some(path),
                    config_text: Some(text),
                    admin_token: std::env::var("SWITCHYARD_ADMIN_TOKEN").ok(),
                    watch: !no_watch,
                };
                let mut running = switchyard_control::start_with(&config, options).await?;
                #[cfg(unix)]
                running.keep(switchyard_control::reload::on_sighup(
                    std::sync::Arc::clone(&running.plane),
                )?);
                wait_for_stop_signal().await;
                tracing::info!("shutting down: draining in-flight requests");
                running.shutdown().await;
                Ok::<(), BoxError>(())
            })
        }
        Command::Demo {
            listen,
            admin,
            no_traffic,
            rate,
        } => {
            let options = switchyard_control::demo::DemoOptions {
                data: listen,
                admin,
                traffic: (!no_traffic).then_some(rate),
            };
            block_on(None, switchyard_control::demo::run(options))
        }
        Command::Load(options) => block_on(options.threads, async move {
            let report = switchyard_control::load::run(&options).await?;
            print!("{}", switchyard_control::load::summary(&report));
            Ok::<(), BoxError>(())
        }),
        Command::Export {
            gateway_api: _,
            admin,
            token,
            route,
        } => {
            let ctl = Ctl::new(&admin, token, false);
            block_on(Some(1), async move {
                print!("{}", ctl.export_gateway_api(route.as_deref()).await?);
                Ok::<(), BoxError>(())
            })
        }
        Command::Ctl {
            admin,
            token,
            json,
            command,
        } => {
            let ctl = Ctl::new(&admin, token, json);
            block_on(Some(1), async move {
                let text = ctl.run(command).await?;
                println!("{}", text.trim_end());
                Ok::<(), BoxError>(())
            })
        }
    }
}

use switchyard_control::BoxError;

fn block_on<E: Into<BoxError>>(
    workers: Option<usize>,
    work: impl std::future::Future<Output = Result<(), E>>,
) -> ExitCode {
    let runtime = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n.max(1))
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("switchyard: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("switchyard: {}", error.into());
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
