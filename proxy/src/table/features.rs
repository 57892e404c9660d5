//! The table's opt-in features, built with it: a route's A/B experiment
//! (its goals parsed, its counts taken over from the previous table) and
//! the table's feature flags (each attached to the routes it covers by the
//! caller). Routes without them carry nothing.

use std::sync::Arc;

use super::error::Problems;
use super::{Route, RouteSpec, RoutingTable, TableError, TableSpec};
use crate::experiment::{Experiment, Goal, MAX_GOALS};
use crate::flags::Flag;

/// The route's experiment (its goals parsed, the counts of the previous
/// table's same experiment), or `None` after adding its problems.
pub(super) fn build_experiment(
    spec: &RouteSpec,
    r: usize,
    previous: Option<&Route>,
    problems: &mut Problems,
) -> Option<Experiment> {
    let experiment = spec.experiment.as_ref()?;
    let found_before = problems.len();
    let mut problem = |key: String, reason: String| {
        problems.add(
            format!("routes[{r}].experiment{key}"),
            TableError::BadExperiment {
                route: spec.name.clone(),
                reason,
            },
        )
    };
    if experiment.name.is_empty() {
        problem(
            ".name".into(),
            "name is empty: give the experiment a name".into(),
        );
    }
    if spec.sticky.is_none() {
        problem(
            String::new(),
            "an experiment counts users by the route's sticky key: add [routes.sticky] with a header or cookie".into(),
        );
    }
    if !spec.versions.iter().any(|v| v.name == experiment.control) {
        problem(
            ".control".into(),
            format!(
                "control '{}' is not a version of the route",
                experiment.control
            ),
        );
    }
    if !(experiment.minimum_effect > 0.0 && experiment.minimum_effect < 1.0) {
        problem(
            ".minimum_effect".into(),
            format!(
                "minimum_effect {} is not a fraction between 0 and 1 (0.01: one point)",
                experiment.minimum_effect
            ),
        );
    }
    if experiment.goals.len() > MAX_GOALS {
        problem(".goals".into(), format!("at most {MAX_GOALS} goals"));
    }
    let mut goals = Vec::new();
    for (g, goal) in experiment.goals.iter().enumerate() {
        if experiment.goals[..g]
            .iter()
            .any(|other| other.name == goal.name)
        {
            problem(
                format!(".goals[{g}].name"),
                format!("goal '{}' is defined twice", goal.name),
            );
        }
        match Goal::parse(goal) {
            Ok(goal) => goals.push(goal),
            Err((key, reason)) => {
                problem(format!(".goals[{g}].{key}"), format!("goal {g}: {reason}"))
            }
        }
    }
    if problems.len() > found_before {
        return None;
    }
    let before = previous.and_then(|route| route.experiment.as_ref());
    Some(Experiment::new(experiment, goals, before))
}

/// The table's flags (each taking over its counts from `previous`), after
/// adding the problems of those that do not build.
pub(super) fn build_flags(
    spec: &TableSpec,
    previous: Option<&RoutingTable>,
    problems: &mut Problems,
) -> Box<[Arc<Flag>]> {
    let mut flags: Vec<Arc<Flag>> = Vec::with_capacity(spec.flags.len());
    for (f, flag) in spec.flags.iter().enumerate() {
        let mut problem = |key: &str, reason: String| {
            problems.add(
                format!("flags[{f}].{key}"),
                TableError::BadFlag {
                    flag: flag.name.clone(),
                    reason,
                },
            )
        };
        if spec.flags[..f].iter().any(|other| other.name == flag.name) {
            problem("name", "is defined twice".into());
        }
        for route in &flag.routes {
            if !spec.routes.iter().any(|r| r.name == *route) {
                problem("routes", format!("route '{route}' does not exist"));
            }
        }
        match Flag::build(
            flag,
            previous.and_then(|t| t.flag(&flag.name)).map(|f| &**f),
        ) {
            Ok(built) => flags.push(Arc::new(built)),
            Err((key, reason)) => problem(key, reason),
        }
    }
    flags.into_boxed_slice()
}
