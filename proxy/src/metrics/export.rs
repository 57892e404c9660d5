//! The Prometheus view: a collector that, when scraped, reads the per-series
//! totals (HDR histograms become cumulative buckets, as sozu exports them),
//! the live table (weights, revision, shadow results) and the connection
//! gauge. The `prometheus` crate encodes the text.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hdrhistogram::Histogram;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};

use crate::breaker::Overflow;
use crate::error::UpstreamErrorKind;
use crate::limits::Limit;

use super::tally::{Tally, CODE_CLASSES};
use super::Shared;

struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
}

const REQUESTS: Family = Family {
    name: "switchyard_requests_total",
    help: "Finished requests per route and version, by the status class the client was sent.",
    kind: MetricType::COUNTER,
    labels: &["route", "version", "code_class"],
};
const UPSTREAM_ERRORS: Family = Family {
    name: "switchyard_upstream_errors_total",
    help: "Requests whose upstream failed (before or after the response headers), by kind.",
    kind: MetricType::COUNTER,
    labels: &["route", "version", "kind"],
};
const ABORTED: Family = Family {
    name: "switchyard_requests_aborted_total",
    help: "Responses the client abandoned before the last body byte.",
    kind: MetricType::COUNTER,
    labels: &["route", "version"],
};
const DURATION: Family = Family {
    name: "switchyard_request_duration_seconds",
    help: "Time from the request's arrival to the last response body byte.",
    kind: MetricType::HISTOGRAM,
    labels: &["route", "version"],
};
const HEADERS: Family = Family {
    name: "switchyard_response_headers_duration_seconds",
    help: "Time from the request's arrival to the response headers.",
    kind: MetricType::HISTOGRAM,
    labels: &["route", "version"],
};
const WEIGHT: Family = Family {
    name: "switchyard_route_weight",
    help: "Current weight of each version of each route.",
    kind: MetricType::GAUGE,
    labels: &["route", "version"],
};
const REVISION: Family = Family {
    name: "switchyard_table_revision",
    help: "Revision of the live routing table (bumped by every change).",
    kind: MetricType::GAUGE,
    labels: &[],
};
const CONNECTIONS: Family = Family {
    name: "switchyard_connections_active",
    help: "Open client connections on the data listener.",
    kind: MetricType::GAUGE,
    labels: &[],
};
const CONNECTIONS_REJECTED: Family = Family {
    name: "switchyard_connections_rejected_total",
    help: "Client connections closed at once because [limits] max_connections were open.",
    kind: MetricType::COUNTER,
    labels: &[],
};
const REQUESTS_REJECTED: Family = Family {
    name: "switchyard_requests_rejected_total",
    help: "Requests refused by a size limit (431, 413), by the limit's config key.",
    kind: MetricType::COUNTER,
    labels: &["limit"],
};
const OVERFLOWS: Family = Family {
    name: "switchyard_circuit_breaker_overflows_total",
    help:
        "Requests a version's circuit breaker answered 503, by its key (max_requests, max_pending).",
    kind: MetricType::COUNTER,
    labels: &["route", "version", "limit"],
};
const SHADOW: Family = Family {
    name: "switchyard_shadow_requests_total",
    help: "Shadow copies per route and shadow, by result (answered, matched, mismatches, errors, dropped_*).",
    kind: MetricType::COUNTER,
    labels: &["route", "shadow", "result"],
};

const EXPERIMENT_UNITS: Family = Family {
    name: "switchyard_experiment_units",
    help: "Distinct units (sticky keys) an experiment exposed to each variant (HyperLogLog++ estimate).",
    kind: MetricType::GAUGE,
    labels: &["route", "experiment", "variant"],
};
const EXPERIMENT_CONVERSIONS: Family = Family {
    name: "switchyard_experiment_conversions_total",
    help: "Distinct units of each variant that reached each goal of an experiment (HyperLogLog++ estimate).",
    kind: MetricType::COUNTER,
    labels: &["route", "experiment", "variant", "goal"],
};

const FLAG_REQUESTS: Family = Family {
    name: "switchyard_flag_requests_total",
    help: "Requests on a flag's routes by the state the flag gave them (on, off or a variant) and the status class the client was sent.",
    kind: MetricType::COUNTER,
    labels: &["flag", "state", "code_class"],
};
const FLAG_DURATION: Family = Family {
    name: "switchyard_flag_response_headers_duration_seconds",
    help: "Time from a request's arrival to its response headers, by flag and state.",
    kind: MetricType::HISTOGRAM,
    labels: &["flag", "state"],
};
const FLAG_ENABLED: Family = Family {
    name: "switchyard_flag_enabled",
    help: "1 while a flag is enabled, 0 once turned off (by hand or by its guard).",
    kind: MetricType::GAUGE,
    labels: &["flag"],
};
const FLAG_PERCENT: Family = Family {
    name: "switchyard_flag_percent",
    help: "The share of units a boolean flag turns on, 0 to 100.",
    kind: MetricType::GAUGE,
    labels: &["flag"],
};
const FLAG_TRIPS: Family = Family {
    name: "switchyard_flag_guard_trips_total",
    help:
        "Times a flag's guard turned it off because flagged requests failed more than the others.",
    kind: MetricType::COUNTER,
    labels: &["flag"],
};

const FAMILIES: [&Family; 19] = [
    &REQUESTS,
    &UPSTREAM_ERRORS,
    &ABORTED,
    &DURATION,
    &HEADERS,
    &WEIGHT,
    &REVISION,
    &CONNECTIONS,
    &SHADOW,
    &CONNECTIONS_REJECTED,
    &REQUESTS_REJECTED,
    &OVERFLOWS,
    &EXPERIMENT_UNITS,
    &EXPERIMENT_CONVERSIONS,
    &FLAG_REQUESTS,
    &FLAG_DURATION,
    &FLAG_ENABLED,
    &FLAG_PERCENT,
    &FLAG_TRIPS,
];

pub(crate) struct Exporter {
    shared: Arc<Shared>,
    descs: Vec<Desc>,
    /// Bucket bounds: seconds as exported, and µs as compared.
    bounds: Vec<(f64, u64)>,
}

impl Exporter {
    pub(crate) fn new(shared: Arc<Shared>) -> Exporter {
        let descs = FAMILIES
            .iter()
            .filter_map(|family| {
                let labels = family.labels.iter().map(|l| l.to_string()).collect();
                Desc::new(
                    family.name.into(),
                    family.help.into(),
                    labels,
                    HashMap::new(),
                )
                .ok()
            })
            .collect();
        let bounds = shared
            .buckets
            .iter()
            .map(|secs| (*secs, (secs * 1e6).round() as u64))
            .collect();
        Exporter {
            shared,
            descs,
            bounds,
        }
    }

    fn histogram(&self, histogram: &Histogram<u64>, sum_us: u64) -> proto::Histogram {
        let mut buckets = Vec::with_capacity(self.bounds.len());
        let mut bound = self.bounds.iter().peekable();
        let mut below = 0u64;
        for recorded in histogram.iter_recorded() {
            // An HDR bucket straddling a bound counts below it: within 0.1 %.
            let value = histogram.lowest_equivalent(recorded.value_iterated_to());
            while let Some((secs, _)) = bound.next_if(|(_, us)| value > *us) {
                buckets.push(bucket(*secs, below));
            }
            below += recorded.count_at_value();
        }
        for (secs, _) in bound {
            buckets.push(bucket(*secs, below));
        }
        let mut out = proto::Histogram::default();
        out.set_sample_count(histogram.len());
        out.set_sample_sum(sum_us as f64 / 1e6);
        out.set_bucket(buckets);
        out
    }
}

fn bucket(upper_bound: f64, cumulative: u64) -> proto::Bucket {
    let mut bucket = proto::Bucket::default();
    bucket.set_upper_bound(upper_bound);
    bucket.set_cumulative_count(cumulative);
    bucket
}

fn family(spec: &Family, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(spec.name.into());
    family.set_help(spec.help.into());
    family.set_field_type(spec.kind);
    family.set_metric(metrics);
    family
}

fn metric(labels: &[(&str, &str)]) -> proto::Metric {
    let pairs: Vec<LabelPair> = labels
        .iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name((*name).into());
            pair.set_value((*value).into());
            pair
        })
        .collect();
    let mut metric = proto::Metric::default();
    metric.set_label(pairs);
    metric
}

fn counter(labels: &[(&str, &str)], value: u64) -> proto::Metric {
    let mut metric = metric(labels);
    let mut counter = proto::Counter::default();
    counter.set_value(value as f64);
    metric.set_counter(counter);
    metric
}

fn gauge(labels: &[(&str, &str)], value: f64) -> proto::Metric {
    let mut metric = metric(labels);
    let mut gauge = proto::Gauge::default();
    gauge.set_value(value);
    metric.set_gauge(gauge);
    metric
}

impl Collector for Exporter {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut requests = Vec::new();
        let mut upstream = Vec::new();
        let mut aborted = Vec::new();
        let mut duration = Vec::new();
        let mut headers = Vec::new();
        if self.shared.enabled {
            for live in self.shared.live() {
                let (route, version) = (&*live.store.route, &*live.store.version);
                let series = [("route", route), ("version", version)];
                self.shared.core.with_totals(&live.store, |totals: &Tally| {
                    for (class, count) in CODE_CLASSES.iter().zip(totals.classes) {
                        requests.push(counter(
                            &[series[0], series[1], ("code_class", class)],
                            count,
                        ));
                    }
                    for (kind, count) in UpstreamErrorKind::ALL.iter().zip(totals.upstream) {
                        upstream.push(counter(
                            &[series[0], series[1], ("kind", kind.as_str())],
                            count,
                        ));
                    }
                    aborted.push(counter(&series, totals.aborted));
                    let mut last = metric(&series);
                    last.set_histogram(self.histogram(&totals.last_byte, totals.last_byte_sum_us));
                    duration.push(last);
                    let mut first = metric(&series);
                    first.set_histogram(self.histogram(&totals.headers, totals.headers_sum_us));
                    headers.push(first);
                });
            }
        }
        let mut weights = Vec::new();
        let mut shadows = Vec::new();
        let mut revision = Vec::new();
        let mut overflows = Vec::new();
        let mut units = Vec::new();
        let mut conversions = Vec::new();
        let mut flags = FlagSeries::default();
        if let Some(table) = self.shared.current_table() {
            for route in table.routes() {
                for version in route.versions.iter() {
                    for overflow in Overflow::ALL {
                        overflows.push(counter(
                            &[
                                ("route", &route.name),
                                ("version", &version.name),
                                ("limit", overflow.key()),
                            ],
                            version.breaker.overflows(overflow),
                        ));
                    }
                }
            }
            revision.push(gauge(&[], table.revision() as f64));
            for flag in table.flags() {
                self.flag_series(flag, &mut flags);
            }
            for route in &table.spec().routes {
                for version in &route.versions {
                    weights.push(gauge(
                        &[("route", &route.name), ("version", &version.name)],
                        f64::from(version.weight),
                    ));
                }
            }
            for route in table.routes() {
                if let Some(experiment) = &route.experiment {
                    experiment_series(route, experiment, &mut units, &mut conversions);
                }
                for shadow in route.shadows.iter() {
                    for (result, count) in shadow.state().counts() {
                        shadows.push(counter(
                            &[
                                ("route", &route.name),
                                ("shadow", &shadow.name),
                                ("result", result.as_str()),
                            ],
                            count,
                        ));
                    }
                }
            }
        }
        let connections = vec![gauge(
            &[],
            self.shared.connections.load(Ordering::Relaxed) as f64,
        )];
        vec![
            family(&REQUESTS, requests),
            family(&UPSTREAM_ERRORS, upstream),
            family(&ABORTED, aborted),
            family(&DURATION, duration),
            family(&HEADERS, headers),
            family(&WEIGHT, weights),
            family(&REVISION, revision),
            family(&CONNECTIONS, connections),
            family(&SHADOW, shadows),
            family(
                &CONNECTIONS_REJECTED,
                vec![counter(
                    &[],
                    self.shared.connections_rejected.load(Ordering::Relaxed),
                )],
            ),
            family(
                &REQUESTS_REJECTED,
                Limit::ALL
                    .iter()
                    .zip(&self.shared.rejected)
                    .map(|(limit, count)| {
                        counter(&[("limit", limit.key())], count.load(Ordering::Relaxed))
                    })
                    .collect(),
            ),
            family(&OVERFLOWS, overflows),
            family(&EXPERIMENT_UNITS, units),
            family(&EXPERIMENT_CONVERSIONS, conversions),
            family(&FLAG_REQUESTS, flags.requests),
            family(&FLAG_DURATION, flags.duration),
            family(&FLAG_ENABLED, flags.enabled),
            family(&FLAG_PERCENT, flags.percent),
            family(&FLAG_TRIPS, flags.trips),
        ]
    }
}

#[derive(Default)]
struct FlagSeries {
    requests: Vec<proto::Metric>,
    duration: Vec<proto::Metric>,
    enabled: Vec<proto::Metric>,
    percent: Vec<proto::Metric>,
    trips: Vec<proto::Metric>,
}

impl Exporter {
    fn flag_series(&self, flag: &crate::flags::Flag, out: &mut FlagSeries) {
        let name = &*flag.name;
        out.enabled
            .push(gauge(&[("flag", name)], f64::from(u8::from(flag.enabled))));
        if flag.is_boolean() {
            out.percent.push(gauge(&[("flag", name)], flag.percent));
        }
        out.trips
            .push(counter(&[("flag", name)], flag.counts().trips()));
        flag.counts().each(|state, classes, latency, sum_us| {
            for (class, count) in CODE_CLASSES.iter().zip(classes) {
                out.requests.push(counter(
                    &[("flag", name), ("state", state), ("code_class", class)],
                    count,
                ));
            }
            let mut metric = metric(&[("flag", name), ("state", state)]);
            metric.set_histogram(self.histogram(latency, sum_us));
            out.duration.push(metric);
        });
    }
}

/// An experiment's units per variant and conversions per variant and goal.
fn experiment_series(
    route: &crate::table::Route,
    experiment: &crate::experiment::Experiment,
    units: &mut Vec<proto::Metric>,
    conversions: &mut Vec<proto::Metric>,
) {
    for variant in experiment.snapshot() {
        let labels = [
            ("route", &*route.name),
            ("experiment", experiment.name.as_str()),
            ("variant", variant.variant.as_str()),
        ];
        units.push(gauge(&labels, variant.units as f64));
        for (goal, converted) in &variant.conversions {
            conversions.push(counter(
                &[labels[0], labels[1], labels[2], ("goal", goal)],
                *converted,
            ));
        }
    }
}
