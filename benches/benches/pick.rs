//! Micro-benchmarks of the per-request table work: load the live table,
//! find the route, pick a version and an endpoint. Measured on one thread,
//! and on two threads at once sharing one table (the atomic pick counter
//! and the ArcSwap load are what contend). Also the cost of building a new
//! table, which every weight change pays once.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchyard_benches::two_threads;
use switchyard_proxy::{RoutingTable, TableHandle, TableSpec};

/// A small but realistic table: a host-specific API route, a wildcard
/// route and a catch-all split three ways, so `find` walks a few routes.
const CONFIG: &str = r#"
[[routes]]
name = "api"
host = "api.example.com"
path_prefix = "/v1/"
  [[routes.versions]]
  name = "stable"
  weight = 1
  endpoints = ["127.0.0.1:9101"]

[[routes]]
name = "tenants"
host = "*.tenants.example.com"
  [[routes.versions]]
  name = "stable"
  weight = 1
  endpoints = ["127.0.0.1:9201"]

[[routes]]
name = "web"
path_prefix = "/"
  [[routes.versions]]
  name = "stable"
  weight = 90
  endpoints = ["127.0.0.1:9001", "127.0.0.1:9011"]
  [[routes.versions]]
  name = "canary"
  weight = 9
  endpoints = ["127.0.0.1:9002"]
  [[routes.versions]]
  name = "green"
  weight = 1
  endpoints = ["127.0.0.1:9003"]
"#;

fn spec() -> TableSpec {
    switchyard_control::Config::parse(CONFIG, "bench.toml")
        .unwrap_or_else(|e| panic!("bench config is invalid: {e}"))
        .table_spec()
}

/// What the handler does per request before forwarding.
#[inline]
fn route_one(handle: &TableHandle) -> usize {
    let table = handle.load();
    let route = table
        .find("www.example.com", "/products/42")
        .expect("catch-all route");
    let version = route.pick().expect("a live version");
    let endpoint = version.next_endpoint();
    endpoint.authority.as_str().len() + version.name.len()
}

fn single_thread(c: &mut Criterion) {
    let handle = TableHandle::new(spec()).expect("table");
    let mut group = c.benchmark_group("load+find+pick");
    group.throughput(Throughput::Elements(1));
    group.bench_function("1 thread", |b| b.iter(|| black_box(route_one(&handle))));
    group.finish();
}

/// Two threads route at once for `iters` requests each; the figure is the
/// wall time per request of one thread while the other contends.
fn contended(c: &mut Criterion) {
    let handle = TableHandle::new(spec()).expect("table");
    let mut group = c.benchmark_group("load+find+pick");
    group.throughput(Throughput::Elements(1));
    group.bench_function("2 threads", |b| {
        b.iter_custom(|iters| two_threads(iters, || route_one(&handle)))
    });
    group.finish();
}

/// A weight change: build and validate a whole table from its spec.
fn table_build(c: &mut Criterion) {
    let spec = spec();
    c.bench_function("table build", |b| {
        b.iter(|| black_box(RoutingTable::build(spec.clone(), 2).expect("table")))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = single_thread, contended, table_build
}
criterion_main!(benches);
