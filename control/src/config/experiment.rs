//! `[routes.experiment]` and its `[[routes.experiment.goals]]`: the
//! schema, the data plane's [`ExperimentSpec`], and where each key is in
//! the file (the table build checks the spec: a sticky key, a control that
//! is a version, goals that parse).

use std::ops::Range;

use serde::Deserialize;
use switchyard_proxy::{ExperimentSpec, GoalSpec};
use toml::Spanned;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    pub name: Spanned<String>,
    /// Default: the route's baseline.
    #[serde(default)]
    pub control: Option<Spanned<String>>,
    #[serde(default)]
    pub goals: Vec<GoalConfig>,
    /// The smallest absolute change of a conversion rate worth detecting,
    /// as a fraction (0.01: one point); default one point.
    #[serde(default)]
    pub minimum_effect: Option<Spanned<f64>>,
}

/// One point: what the readout sizes the sample for by default.
pub const DEFAULT_MINIMUM_EFFECT: f64 = 0.01;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoalConfig {
    pub name: Spanned<String>,
    #[serde(default)]
    pub method: Option<Spanned<String>>,
    pub path_prefix: Spanned<String>,
    /// `"2xx"` … `"5xx"`.
    #[serde(default)]
    pub status: Option<Spanned<String>>,
    #[serde(default)]
    pub response_header: Option<Spanned<String>>,
}

fn value(v: &Option<Spanned<String>>) -> Option<String> {
    v.as_ref().map(|v| v.get_ref().clone())
}

fn span(v: &Option<Spanned<String>>) -> Range<usize> {
    v.as_ref().map_or(0..0, Spanned::span)
}

impl ExperimentConfig {
    pub fn spec(&self, baseline: &str) -> ExperimentSpec {
        ExperimentSpec {
            name: self.name.get_ref().clone(),
            control: value(&self.control).unwrap_or_else(|| baseline.to_owned()),
            goals: self
                .goals
                .iter()
                .map(|goal| GoalSpec {
                    name: goal.name.get_ref().clone(),
                    method: value(&goal.method),
                    path_prefix: goal.path_prefix.get_ref().clone(),
                    status: value(&goal.status),
                    response_header: value(&goal.response_header),
                })
                .collect(),
            minimum_effect: self
                .minimum_effect
                .as_ref()
                .map_or(DEFAULT_MINIMUM_EFFECT, |m| *m.get_ref()),
        }
    }

    /// Where `key` (`name`, `control`, `goals[1]`, then a goal's key) is.
    pub fn span<'a>(
        &self,
        key: Option<(&'a str, Option<usize>)>,
        field: Option<(&'a str, Option<usize>)>,
    ) -> Range<usize> {
        match key {
            Some(("name", _)) => self.name.span(),
            Some(("control", _)) => span(&self.control),
            Some(("minimum_effect", _)) => self.minimum_effect.as_ref().map_or(0..0, Spanned::span),
            Some(("goals", Some(g))) => match (self.goals.get(g), field) {
                (Some(goal), Some((key, _))) => goal.span(key),
                (Some(goal), None) => goal.name.span(),
                _ => 0..0,
            },
            _ => 0..0,
        }
    }
}

impl GoalConfig {
    fn span(&self, key: &str) -> Range<usize> {
        match key {
            "name" => self.name.span(),
            "method" => span(&self.method),
            "path_prefix" => self.path_prefix.span(),
            "status" => span(&self.status),
            "response_header" => span(&self.response_header),
            _ => 0..0,
        }
    }
}
