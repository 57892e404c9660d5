//! `switchyard load URL`: a load generator that knows which version
//! answered. Open loop at a constant rate (latency from each request's
//! intended start) or closed loop over N connections; every response is
//! sorted by its `x-switchyard-version` into that version's HDR histogram;
//! the report gives each version's cost against the baseline with
//! confidence intervals, and with `--compare` what the URL adds over
//! another one (e.g. the backend directly), both measured in alternating
//! blocks of one run so that the machine's drift cancels.
//!
//! Here: the options and the run (warm-up, progress line, outputs);
//! `target`: connections and requests; `engine`: the sending loops;
//! `record`: per-version histograms; `report`: JSON, terminal summary,
//! plain words; `hgrm` and `html`: the other outputs. The statistics are
//! `crate::statistics`.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderName;

pub mod engine;
pub mod hgrm;
pub mod html;
pub mod record;
pub mod report;
pub mod target;

use engine::Run;
use record::Recorder;
use report::{Achieved, Generator, Parameters, Report};
use target::{Protocol, RequestShape, Target, TargetError};

/// `switchyard load`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadOptions {
    /// The URL to load (http:// or https://).
    pub url: String,
    /// Open loop: this many requests per second, whatever the responses do.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Connections (closed loop: each sends its next request when the last
    /// one ended; open loop: how many requests can be in flight).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// How long to measure (after the warm-up).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Stop after this many measured requests (before `--duration` ends).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Sent first and not measured: connections open, caches warm.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Send this file as each request's body.
    #[arg(long)]
    pub body_file: Option<PathBuf>,
    /// A request without its whole response by then counts as a timeout.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// HTTP/2: prior knowledge on http:// (h2c), ALPN h2 on https://.
    #[arg(long)]
    pub http2: bool,
    /// PEM CA to trust for https:// (default: the Mozilla roots).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// The version the others are compared with.
    #[arg(long, default_value = "stable")]
    pub baseline: String,
    /// The response header naming the version.
    #[arg(long, default_value = "x-switchyard-version")]
    pub version_header: String,
    /// A second URL, loaded in alternating blocks with the first: the
    /// report says what the first adds (proxy or shadow overhead).
    #[arg(long)]
    pub compare: Option<String>,
    /// Requests per block when comparing (each round of one block per URL
    /// in a random order). 1: drift on any timescale longer than a request
    /// reaches both sides alike; with long blocks the requests of one block
    /// share their moment, and the intervals, which take requests as
    /// independent, come out too narrow.
    #[arg(long, default_value_t = 1)]
    pub block: u64,
    /// Write the JSON report here (schema `switchyard-load/1`, docs/load.md).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write each series' HdrHistogram percentile distribution into this
    /// directory (`url-stable.hgrm`, …; HdrHistogram's plotter reads them).
    #[arg(long)]
    pub hgrm: Option<PathBuf>,
    /// Write a self-contained HTML report here (charts, tables, parameters).
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

impl LoadOptions {
    /// The options from command-line words (after `switchyard load`), with
    /// the same defaults as the command.
    pub fn from_args<I, T>(args: I) -> Result<LoadOptions, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Words {
            #[command(flatten)]
            options: LoadOptions,
        }
        let words = std::iter::once(std::ffi::OsString::from("load"))
            .chain(args.into_iter().map(Into::into));
        <Words as clap::Parser>::try_parse_from(words).map(|w| w.options)
    }
}

/// Why a run could not start or its outputs not be written.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("--rate must be above 0 (requests per second), not {0}")]
    Rate(f64),
    #[error("--connections must be at least 1")]
    Connections,
    #[error("--duration must be above 0")]
    Duration,
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn file_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> LoadError + '_ {
    move |source| LoadError::File {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs the load and writes the outputs asked for; returns the report.
pub async fn run(options: &LoadOptions) -> Result<Report, LoadError> {
    if let Some(rate) = options.rate.filter(|r| !(r.is_finite() && *r > 0.0)) {
        return Err(LoadError::Rate(rate));
    }
    if options.connections == 0 {
        return Err(LoadError::Connections);
    }
    if options.duration.is_zero() {
        return Err(LoadError::Duration);
    }
    let body = match &options.body_file {
        Some(path) => Bytes::from(std::fs::read(path).map_err(file_error(path))?),
        None => Bytes::new(),
    };
    let version_header = HeaderName::from_bytes(options.version_header.as_bytes())
        .map_err(|_| TargetError::Header(options.version_header.clone()))?;
    let shape = RequestShape {
        method: &options.method,
        headers: &options.headers,
        body,
        protocol: if options.http2 {
            Protocol::Http2
        } else {
            Protocol::Http1
        },
        ca: options.ca.as_deref(),
        connect_timeout: options.timeout,
    };
    let mut targets = vec![Target::new(&options.url, &shape)?];
    if let Some(compare) = &options.compare {
        targets.push(Target::new(compare, &shape)?);
    }
    let connected = tokio::time::timeout(
        options.timeout,
        engine::connect_all(&targets, options.connections),
    )
    .await
    .unwrap_or_default();
    let started = crate::history::now_rfc3339();
    let cpu_before = cpu_seconds();
    let run = Arc::new(Run::new(
        targets,
        version_header,
        options.rate,
        options.timeout,
        options.block,
        options.warmup,
        options.duration,
        options.requests,
    ));
    let recorders: Vec<Arc<Mutex<Recorder>>> =
        (0..options.connections).map(|_| Arc::default()).collect();
    let mut connected = connected.into_iter();
    let workers: Vec<_> = recorders
        .iter()
        .map(|recorder| {
            tokio::spawn(engine::worker(
                Arc::clone(&run),
                Arc::clone(recorder),
                connected.next().unwrap_or_default(),
            ))
        })
        .collect();
    let pacer = options.rate.is_some().then(|| {
        let run = Arc::clone(&run);
        std::thread::spawn(move || engine::pace(&run))
    });
    let progress = (!options.quiet).then(|| {
        tokio::spawn(progress(
            Arc::clone(&run),
            recorders.clone(),
            options.baseline.clone(),
        ))
    });
    for worker in workers {
        let _ = worker.await;
    }
    if let Some(pacer) = pacer {
        // Over as soon as the workers are (it closed their semaphore).
        let _ = pacer.join();
    }
    if let Some(progress) = progress {
        progress.abort();
        eprintln!();
    }
    // Closed loop: the last send is at the deadline (or the last of
    // `--requests`); open loop: at the last intended time, or later when
    // the generator fell behind.
    let measured = run.measured();
    let merged = merge(&recorders, Recorder::add);
    let requests = merged.requests();
    let cpu = (cpu_seconds() - cpu_before).max(0.0);
    let late = run.late.load(std::sync::atomic::Ordering::Relaxed);
    let late_fraction = late as f64 / requests.max(1) as f64;
    let report = Report {
        schema: report::SCHEMA,
        started,
        parameters: Parameters {
            url: options.url.clone(),
            compare: options.compare.clone(),
            mode: if options.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            rate: options.rate,
            connections: options.connections,
            threads: options
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)),
            duration_s: options.duration.as_secs_f64(),
            warmup_s: options.warmup.as_secs_f64(),
            requests: options.requests,
            timeout_ms: u64::try_from(options.timeout.as_millis()).unwrap_or(u64::MAX),
            method: options.method.clone(),
            protocol: if options.http2 { "h2" } else { "http/1.1" },
            baseline: options.baseline.clone(),
            block: options.block,
        },
        achieved: Achieved {
            requests,
            seconds: measured.as_secs_f64(),
            rate: requests as f64 / measured.as_secs_f64().max(1e-9),
            late_sends: late,
            late_fraction,
            rate_held: options.rate.is_none() || late_fraction <= 0.01,
            send_lag_us: merged.send_lag.as_ref().map(report::SendLag::of),
        },
        generator: Generator {
            cpu_seconds: cpu,
            cpu_per_request_us: cpu * 1e6 / requests.max(1) as f64,
        },
        series: report::series_reports(&merged),
        cost: report::costs(&merged, &options.baseline),
        overhead: report::comparison(&merged),
    };
    if let Some(path) = &options.json {
        let text = serde_json::to_vec_pretty(&report).unwrap_or_default();
        std::fs::write(path, text).map_err(file_error(path))?;
    }
    if let Some(dir) = &options.hgrm {
        hgrm::write(dir, &merged).map_err(file_error(dir))?;
    }
    if let Some(path) = &options.html {
        std::fs::write(path, html::render(&report, &merged)).map_err(file_error(path))?;
    }
    Ok(report)
}

/// The terminal summary of `report` (colour when stdout is a terminal).
pub fn summary(report: &Report) -> String {
    report::render(report, std::io::stdout().is_terminal())
}

fn merge(recorders: &[Arc<Mutex<Recorder>>], add: fn(&mut Recorder, &Recorder)) -> Recorder {
    let mut merged = Recorder::default();
    for recorder in recorders {
        let recorder = recorder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        add(&mut merged, &recorder);
    }
    merged
}

/// Once a second on stderr: rate achieved, errors, and p99 so far per
/// version.
async fn progress(run: Arc<Run>, recorders: Vec<Arc<Mutex<Recorder>>>, baseline: String) {
    let terminal = std::io::stderr().is_terminal();
    let mut last = (0, std::time::Instant::now());
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let merged = merge(&recorders, Recorder::add_totals);
        let requests = merged.requests();
        let rate = (requests - last.0.min(requests)) as f64 / last.1.elapsed().as_secs_f64();
        last = (requests, std::time::Instant::now());
        let mut line = format!(
            "{:>4.0}s  {:>8.0} req/s  {} errors",
            run.start.elapsed().as_secs_f64(),
            rate,
            merged.errors()
        );
        let mut versions: Vec<_> = merged.series.iter().collect();
        // The baseline first.
        versions.sort_by_key(|((target, version), _)| (*target, *version != baseline));
        for ((target, version), series) in versions {
            if series.latency.is_empty() {
                continue;
            }
            line.push_str(&format!(
                "  | {}{version} p99 {:.1}ms ({})",
                if *target == 1 { "compare:" } else { "" },
                series.latency.value_at_quantile(0.99) as f64 / 1e3,
                series.requests()
            ));
        }
        if terminal {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }
}

/// User + system CPU seconds of this process so far (Linux `/proc`; 0
/// elsewhere). The clock tick is `USER_HZ`, 100 on Linux by ABI.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) in parens.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line: 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}
