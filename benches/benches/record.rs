//! Micro-benchmarks of measurement: one record into the per-thread shard,
//! and the whole per-request bookkeeping as the handler does it (table load,
//! route, pick, start the measure, time the response headers, record when
//! the body ends), beside the same request path with measurement off. On
//! one thread, and on two threads recording into the same metrics at once.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http_body_util::Empty;
use switchyard_benches::two_threads;
use switchyard_proxy::metrics::{Instant, Metrics, MetricsSettings, Outcome, SeriesId};
use switchyard_proxy::TableHandle;

const CONFIG: &str = r#"
[[routes]]
name = "web"
  [[routes.versions]]
  name = "stable"
  weight = 90
  endpoints = ["127.0.0.1:9001"]
  [[routes.versions]]
  name = "canary"
  weight = 10
  endpoints = ["127.0.0.1:9002"]
"#;

fn setup(enabled: bool) -> (TableHandle, Metrics) {
    let spec = switchyard_control::Config::parse(CONFIG, "bench.toml")
        .unwrap_or_else(|e| panic!("bench config is invalid: {e}"))
        .table_spec();
    let handle = TableHandle::new(spec).expect("table");
    let metrics = Metrics::new(MetricsSettings {
        enabled,
        ..MetricsSettings::default()
    })
    .expect("metrics");
    metrics.watch_table(handle.clone());
    (handle, metrics)
}

/// What the handler does per request, minus the network: load, route,
/// pick, then (when measuring) start, headers, and the record at body end.
#[inline]
fn request(handle: &TableHandle, metrics: &Metrics) -> usize {
    let started = metrics.clock();
    let table = handle.load();
    let route = table.find("www.example.com", "/").expect("route");
    let version = route.pick().expect("version");
    let endpoint = version.next_endpoint();
    let measure = started.and_then(|at| metrics.start(&table, route, version, at));
    if let Some(measure) = measure {
        // An empty body ends at once: dropping it records the request.
        drop(black_box(
            measure.response(http::Response::new(Empty::<Bytes>::new())),
        ));
    }
    endpoint.authority.as_str().len()
}

/// Metrics, the series of `web`/`stable` (its table kept alive by the
/// handle) and one finished request to record into it.
fn one_series() -> (TableHandle, Metrics, SeriesId, Outcome) {
    let (handle, metrics) = setup(true);
    let table = handle.load();
    let route = table.route("web").expect("route");
    let series = metrics
        .series(&table, route, &route.versions[0])
        .expect("series");
    let outcome = Outcome {
        status: 200,
        upstream_error: None,
        headers: Duration::from_micros(5_123),
        last_byte: Duration::from_micros(5_321),
        aborted: false,
        finished: Instant::now(),
    };
    (handle, metrics, series, outcome)
}

fn record(c: &mut Criterion) {
    let (_table, metrics, series, outcome) = one_series();
    let mut group = c.benchmark_group("metrics");
    group.throughput(Throughput::Elements(1));
    group.bench_function("record", |b| {
        b.iter(|| metrics.record(black_box(series), black_box(&outcome)))
    });
    group.finish();
}

fn per_request(c: &mut Criterion) {
    let mut group = c.benchmark_group("per-request bookkeeping");
    group.throughput(Throughput::Elements(1));
    for (name, enabled) in [
        ("measured, 1 thread", true),
        ("unmeasured, 1 thread", false),
    ] {
        let (handle, metrics) = setup(enabled);
        group.bench_function(name, |b| b.iter(|| black_box(request(&handle, &metrics))));
    }
    for (name, enabled) in [
        ("measured, 2 threads", true),
        ("unmeasured, 2 threads", false),
    ] {
        let (handle, metrics) = setup(enabled);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| two_threads(iters, || request(&handle, &metrics)))
        });
    }
    group.finish();
}

fn record_two_threads(c: &mut Criterion) {
    let (_table, metrics, series, outcome) = one_series();
    let mut group = c.benchmark_group("metrics");
    group.throughput(Throughput::Elements(1));
    group.bench_function("record, 2 threads", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                metrics.record(black_box(series), black_box(&outcome))
            })
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = record, record_two_threads, per_request
}
criterion_main!(benches);
