//! An A/B experiment's readout: from the counts the data plane keeps per
//! variant (distinct units exposed, distinct units per goal, requests,
//! errors) and the version's latency histograms, what an operator asks:
//! which variant converts better, by how much, and how sure that is.
//!
//! Per goal and variant: the conversion rate with its Wilson 95 %
//! interval; against the control, the difference with Newcombe's interval,
//! the two-proportion z-test p-value (valid for one look at a sample size
//! fixed in advance) and the mSPRT's anytime-valid p-value (valid however
//! often it is looked at: what "sure" means here), and the units each
//! variant needs to detect the experiment's `minimum_effect`. Per variant:
//! error rate and latency against the control, as the statistical canary
//! judge compares them (Newcombe interval and z-test; Hodges–Lehmann shift
//! and Mann–Whitney). A leaf: the admin API, ctl and the conclude
//! operation read it.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use switchyard_proxy::experiment::Experiment;
use switchyard_proxy::metrics::Metrics;
use switchyard_proxy::table::Route;
use switchyard_proxy::{RoutingTable, VariantSnapshot};

use crate::statistics::{self, Interval, Sample};

/// The significance level every verdict uses.
pub const ALPHA: f64 = 0.05;
/// The power the sample size is computed for.
pub const POWER: f64 = 0.8;

/// `GET /api/v1/experiments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentsReport {
    pub alpha: f64,
    pub experiments: Vec<ExperimentReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentReport {
    pub route: String,
    pub name: String,
    pub control: String,
    /// RFC 3339: when counting began (the experiment's first table).
    pub started: String,
    pub running_seconds: f64,
    pub minimum_effect: f64,
    pub variants: Vec<VariantReport>,
    pub goals: Vec<GoalReport>,
}

/// A variant's traffic, errors and latency, and how they compare with the
/// control's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantReport {
    pub variant: String,
    pub units: u64,
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    /// The version's latency since its series began (`None`: measurement
    /// off or no request yet).
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// Error rate minus the control's, with Newcombe's 95 % interval.
    pub error_rate_difference: Option<Interval>,
    pub error_p_value: Option<f64>,
    /// Hodges–Lehmann shift against the control (ms), with its interval.
    pub latency_shift_ms: Option<Interval>,
    pub latency_p_value: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoalReport {
    pub goal: String,
    /// The control first.
    pub variants: Vec<GoalVariant>,
    /// One sentence per variant compared with the control.
    pub verdicts: Vec<String>,
}

/// One variant's conversions to a goal. The comparison fields are `None`
/// for the control and while either side has no units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoalVariant {
    pub variant: String,
    pub units: u64,
    pub conversions: u64,
    pub conversion_rate: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    /// This variant's rate minus the control's (absolute).
    pub difference: Option<f64>,
    pub difference_low: Option<f64>,
    pub difference_high: Option<f64>,
    /// Two-sided two-proportion z-test: one look at a fixed sample size.
    pub p_value: Option<f64>,
    /// Anytime-valid (mSPRT): however often it is looked at.
    pub p_value_sequential: Option<f64>,
    /// `p_value_sequential < alpha`.
    pub significant: bool,
    /// Units each variant needs to detect `minimum_effect` at the
    /// control's rate (two-sided, `alpha`, 80 % power).
    pub units_needed: Option<u64>,
    /// How long until both sides have `units_needed`, at the rate units
    /// arrived so far.
    pub seconds_to_go: Option<f64>,
}

/// The readout of every experiment of `table`.
pub fn readout(table: &RoutingTable, metrics: Option<&Metrics>) -> ExperimentsReport {
    let now = SystemTime::now();
    ExperimentsReport {
        alpha: ALPHA,
        experiments: table
            .routes()
            .iter()
            .filter_map(|route| {
                let experiment = route.experiment.as_ref()?;
                Some(experiment_report(route, experiment, metrics, now))
            })
            .collect(),
    }
}

fn experiment_report(
    route: &Route,
    experiment: &Experiment,
    metrics: Option<&Metrics>,
    now: SystemTime,
) -> ExperimentReport {
    let mut snapshot = experiment.snapshot();
    // The route's versions that saw nothing yet are shown with zeros.
    for version in route.versions.iter() {
        if !snapshot.iter().any(|s| *s.variant == *version.name) {
            snapshot.push(VariantSnapshot {
                variant: version.name.to_string(),
                units: 0,
                conversions: experiment
                    .goals
                    .iter()
                    .map(|g| (g.name.clone(), 0))
                    .collect(),
                requests: 0,
                errors: 0,
            });
        }
    }
    // The control first, the others by name.
    snapshot.sort_by(|a, b| {
        (a.variant != experiment.control, &a.variant)
            .cmp(&(b.variant != experiment.control, &b.variant))
    });
    let running = now
        .duration_since(experiment.started())
        .unwrap_or_default()
        .as_secs_f64();
    let control = snapshot.iter().find(|s| s.variant == experiment.control);
    let latency = |variant: &str| {
        metrics
            .and_then(|m| m.snapshot(&route.name, variant))
            .map(|s| s.tally().latency().clone())
            .filter(|h| !h.is_empty())
    };
    let control_latency = latency(&experiment.control);
    let variants = snapshot
        .iter()
        .map(|s| {
            let own = latency(&s.variant);
            variant_report(
                s,
                control.filter(|c| c.variant != s.variant),
                own.as_ref(),
                control_latency.as_ref(),
            )
        })
        .collect();
    let goals = experiment
        .goals
        .iter()
        .enumerate()
        .map(|(g, goal)| {
            goal_report(
                &goal.name,
                g,
                &snapshot,
                &experiment.control,
                experiment.minimum_effect,
                running,
            )
        })
        .collect();
    ExperimentReport {
        route: route.name.to_string(),
        name: experiment.name.clone(),
        control: experiment.control.clone(),
        started: humantime::format_rfc3339_seconds(experiment.started()).to_string(),
        running_seconds: running,
        minimum_effect: experiment.minimum_effect,
        variants,
        goals,
    }
}

fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn variant_report(
    s: &VariantSnapshot,
    control: Option<&VariantSnapshot>,
    latency: Option<&hdrhistogram::Histogram<u64>>,
    control_latency: Option<&hdrhistogram::Histogram<u64>>,
) -> VariantReport {
    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e3;
    let samples = control
        .and(latency.zip(control_latency))
        .map(|(x, y)| (Sample::of(x), Sample::of(y)));
    VariantReport {
        variant: s.variant.clone(),
        units: s.units,
        requests: s.requests,
        errors: s.errors,
        error_rate: rate(s.errors, s.requests),
        latency_p50_ms: latency.map(|h| ms(h, 0.5)),
        latency_p99_ms: latency.map(|h| ms(h, 0.99)),
        error_rate_difference: control
            .and_then(|c| statistics::rate_difference(s.errors, s.requests, c.errors, c.requests)),
        error_p_value: control
            .and_then(|c| statistics::two_proportion_p(s.errors, s.requests, c.errors, c.requests)),
        latency_shift_ms: samples
            .as_ref()
            .and_then(|(x, y)| statistics::shift(x, y).map(|i| i.map(|us| us / 1e3))),
        latency_p_value: samples
            .as_ref()
            .and_then(|(x, y)| statistics::mann_whitney_p(x, y)),
    }
}

/// Conversions of goal `g` (its name `goal`): the sketch of a goal counts
/// distinct units, so a unit is never counted twice; a variant whose
/// estimate came out above its units (sketch error) is capped at them.
fn conversions(s: &VariantSnapshot, g: usize) -> u64 {
    s.conversions.get(g).map_or(0, |(_, n)| *n).min(s.units)
}

fn goal_report(
    goal: &str,
    g: usize,
    snapshot: &[VariantSnapshot],
    control_name: &str,
    minimum_effect: f64,
    running: f64,
) -> GoalReport {
    let control = snapshot.iter().find(|s| s.variant == control_name);
    let (cx, cn) = control.map_or((0, 0), |c| (conversions(c, g), c.units));
    let units_needed =
        statistics::sample_size(rate(cx, cn), minimum_effect, ALPHA, POWER).filter(|_| cn > 0);
    let mut variants = Vec::new();
    let mut verdicts = Vec::new();
    for s in snapshot {
        let (x, n) = (conversions(s, g), s.units);
        let wilson = statistics::wilson_interval(x, n);
        let compared = s.variant != control_name && n > 0 && cn > 0;
        let difference = compared
            .then(|| statistics::rate_difference(x, n, cx, cn))
            .flatten();
        let p_value = compared
            .then(|| statistics::two_proportion_p(x, n, cx, cn))
            .flatten();
        let p_value_sequential = compared
            .then(|| statistics::sequential_p(x, n, cx, cn, minimum_effect))
            .flatten();
        let slowest = n.min(cn);
        // Units arrive at each side's own pace: the slower one decides.
        let seconds_to_go = units_needed
            .filter(|_| compared && running > 0.0)
            .map(|needed| {
                let pace = slowest as f64 / running;
                if slowest >= needed {
                    0.0
                } else if pace > 0.0 {
                    (needed - slowest) as f64 / pace
                } else {
                    f64::INFINITY
                }
            })
            .filter(|s| s.is_finite());
        let row = GoalVariant {
            variant: s.variant.clone(),
            units: n,
            conversions: x,
            conversion_rate: wilson.map(|w| w.estimate),
            ci_low: wilson.map(|w| w.low),
            ci_high: wilson.map(|w| w.high),
            difference: difference.map(|d| d.estimate),
            difference_low: difference.map(|d| d.low),
            difference_high: difference.map(|d| d.high),
            p_value,
            p_value_sequential,
            significant: p_value_sequential.is_some_and(|p| p < ALPHA),
            units_needed: units_needed.filter(|_| s.variant != control_name),
            seconds_to_go,
        };
        if s.variant != control_name {
            verdicts.push(verdict(
                goal,
                control_name,
                rate(cx, cn),
                minimum_effect,
                &row,
            ));
        }
        variants.push(row);
    }
    GoalReport {
        goal: goal.to_owned(),
        variants,
        verdicts,
    }
}

fn points(fraction: f64) -> String {
    format!("{:+.1}", fraction * 100.0)
}

fn percent(fraction: f64) -> String {
    format!("{:.1} %", fraction * 100.0)
}

/// The comparison in an operator's words.
fn verdict(
    goal: &str,
    control: &str,
    control_rate: f64,
    minimum_effect: f64,
    row: &GoalVariant,
) -> String {
    let v = &row.variant;
    let (Some(d), Some(low), Some(high), Some(p), Some(sp), Some(r)) = (
        row.difference,
        row.difference_low,
        row.difference_high,
        row.p_value,
        row.p_value_sequential,
        row.conversion_rate,
    ) else {
        return format!("{goal}: {v} against {control}: no units on one side yet");
    };
    let figures = format!(
        "{} vs {}, {} points (95 % CI {} to {})",
        percent(r),
        percent(control_rate),
        points(d),
        points(low),
        points(high)
    );
    let direction = if d > 0.0 { "better" } else { "worse" };
    let more = match (row.units_needed, row.seconds_to_go) {
        (Some(needed), Some(secs)) if secs > 0.0 => format!(
            "; {needed} units per variant detect a {:.1}-point change (about {} more at the current traffic)",
            minimum_effect * 100.0,
            humantime::format_duration(std::time::Duration::from_secs(secs.ceil() as u64))
        ),
        _ => String::new(),
    };
    if sp < ALPHA {
        format!("{goal}: {v} converts {direction} than {control}: {figures}; sure (sequential p = {sp:.3}, p = {p:.4}): it can be concluded")
    } else if p < ALPHA {
        format!("{goal}: {v} looks {direction} than {control}: {figures}, p = {p:.4}; not yet sure enough to stop on (sequential p = {sp:.3}): keep it running{more}")
    } else {
        format!("{goal}: no significant difference between {v} and {control} so far: {figures}, p = {p:.3}{more}")
    }
}

/// Why an experiment cannot be concluded as asked; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ConcludeError {
    #[error("route '{0}' has no experiment: add [routes.experiment] to it")]
    NoExperiment(String),
    #[error("route '{route}' runs experiment '{running}', not '{asked}'")]
    OtherExperiment {
        route: String,
        running: String,
        asked: String,
    },
    #[error(
        "'{winner}' is not a variant of experiment '{experiment}': its variants are {variants}"
    )]
    UnknownVariant {
        experiment: String,
        winner: String,
        variants: String,
    },
}

/// The history's reason for concluding `name` on `route` with `winner`:
/// the figures the decision was made on.
pub fn conclusion(route: &Route, name: &str, winner: &str) -> Result<String, ConcludeError> {
    let experiment = route
        .experiment
        .as_ref()
        .ok_or_else(|| ConcludeError::NoExperiment(route.name.to_string()))?;
    if experiment.name != name {
        return Err(ConcludeError::OtherExperiment {
            route: route.name.to_string(),
            running: experiment.name.clone(),
            asked: name.to_owned(),
        });
    }
    if route.version(winner).is_none() {
        return Err(ConcludeError::UnknownVariant {
            experiment: name.to_owned(),
            winner: winner.to_owned(),
            variants: route
                .versions
                .iter()
                .map(|v| v.name.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let report = experiment_report(route, experiment, None, SystemTime::now());
    let figures: Vec<String> = report
        .goals
        .iter()
        .flat_map(|goal| goal.verdicts.iter().cloned())
        .collect();
    Ok(format!(
        "experiment '{name}' concluded: {winner} wins{}{}",
        if figures.is_empty() { "" } else { ". " },
        figures.join(". ")
    ))
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, Method, StatusCode};
    use switchyard_proxy::{
        ExperimentSpec, GoalSpec, RouteSpec, StickySpec, TableSpec, VersionSpec,
    };

    use super::*;

    fn table() -> RoutingTable {
        let version = |name: &str, port: u16| VersionSpec {
            name: name.into(),
            weight: 50,
            endpoints: vec![format!("127.0.0.1:{port}")],
            ..Default::default()
        };
        let spec = TableSpec {
            routes: vec![RouteSpec {
                name: "shop".into(),
                path_prefix: "/".into(),
                versions: vec![version("stable", 9001), version("canary", 9002)],
                baseline: "stable".into(),
                sticky: Some(StickySpec {
                    header: Some("x-user".into()),
                    ..Default::default()
                }),
                experiment: Some(ExperimentSpec {
                    name: "checkout-v2".into(),
                    control: "stable".into(),
                    goals: vec![GoalSpec {
                        name: "purchase".into(),
                        path_prefix: "/buy".into(),
                        ..Default::default()
                    }],
                    minimum_effect: 0.02,
                }),
                ..Default::default()
            }],
            settings: Default::default(),
            flags: Vec::new(),
        };
        RoutingTable::build(spec, 1).expect("table")
    }

    /// `users` units of `variant`, the first `converted` of them buying.
    fn visit(table: &RoutingTable, variant: &str, users: u32, converted: u32) {
        let Some(experiment) = table.route("shop").and_then(|r| r.experiment.as_ref()) else {
            panic!("no experiment");
        };
        let name: std::sync::Arc<str> = variant.into();
        for user in 0..users {
            let key = format!("{variant}-{user}");
            let path = if user < converted { "/buy" } else { "/" };
            let unit = experiment.unit(key.as_bytes(), &Method::POST, path);
            experiment.record(&name, unit, StatusCode::OK, &HeaderMap::new());
        }
    }

    fn purchase(report: &ExperimentsReport) -> &GoalReport {
        &report.experiments[0].goals[0]
    }

    #[test]
    fn a_clear_difference_is_sure_and_said_so() {
        let table = table();
        visit(&table, "stable", 5000, 500);
        visit(&table, "canary", 5000, 700);
        let report = readout(&table, None);
        let goal = purchase(&report);
        assert_eq!(goal.variants[0].variant, "stable");
        let canary = &goal.variants[1];
        // HyperLogLog++ estimates: within 1 % at 5,000 (0.8 % standard error).
        assert!(canary.units.abs_diff(5000) <= 50, "{canary:?}");
        assert!(canary.conversions.abs_diff(700) <= 7, "{canary:?}");
        assert!((canary.difference.expect("difference") - 0.04).abs() < 0.003);
        let (low, high) = (
            canary.difference_low.expect("low"),
            canary.difference_high.expect("high"),
        );
        assert!(low > 0.02 && high < 0.06, "{low} {high}");
        assert!(canary.p_value.expect("p") < 1e-4, "{canary:?}");
        assert!(canary.significant, "{canary:?}");
        assert!(
            goal.verdicts[0].contains("canary converts better than stable"),
            "{}",
            goal.verdicts[0]
        );
        assert!(
            goal.verdicts[0].contains("+4.0 points"),
            "{}",
            goal.verdicts[0]
        );
        // The control's row has its rate and interval but no comparison.
        let stable = &goal.variants[0];
        assert!((stable.conversion_rate.expect("rate") - 0.1).abs() < 0.002);
        assert!(stable.difference.is_none() && stable.p_value.is_none());
    }

    #[test]
    fn equal_rates_are_not_significant_and_say_what_is_needed() {
        let table = table();
        visit(&table, "stable", 1000, 100);
        visit(&table, "canary", 1000, 100);
        let report = readout(&table, None);
        let canary = &purchase(&report).variants[1];
        assert!(canary.p_value.expect("p") > 0.9, "{canary:?}");
        assert!(!canary.significant);
        // Two points from 10 %: ~3,800 per variant (two-sided 5 %, 80 %).
        let needed = canary.units_needed.expect("needed");
        assert!((3_500..4_200).contains(&needed), "{needed}");
        let verdict = &purchase(&report).verdicts[0];
        assert!(verdict.contains("no significant difference"), "{verdict}");
    }

    #[test]
    fn nothing_seen_yet_is_said_not_computed() {
        let table = table();
        let report = readout(&table, None);
        let experiment = &report.experiments[0];
        assert_eq!(experiment.variants.len(), 2);
        assert!(purchase(&report).verdicts[0].contains("no units on one side yet"));
        assert!(purchase(&report).variants[1].p_value.is_none());
    }

    #[test]
    fn concluding_checks_the_experiment_and_the_winner() {
        let table = table();
        let route = table.route("shop").expect("route");
        assert!(matches!(
            conclusion(route, "other", "canary"),
            Err(ConcludeError::OtherExperiment { .. })
        ));
        let error = conclusion(route, "checkout-v2", "blue").expect_err("unknown");
        assert!(error.to_string().contains("stable, canary"), "{error}");
        visit(&table, "stable", 100, 10);
        visit(&table, "canary", 100, 14);
        let reason = conclusion(route, "checkout-v2", "canary").expect("conclusion");
        assert!(
            reason.starts_with("experiment 'checkout-v2' concluded: canary wins. purchase:"),
            "{reason}"
        );
    }
}
