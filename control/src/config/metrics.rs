//! `[metrics]`: the schema, its checks, and the data plane's
//! [`MetricsSettings`].

use std::ops::Range;

use serde::Deserialize;
use switchyard_proxy::metrics::{self, MetricsError, MetricsSettings};
use toml::Spanned;

use super::values::{yes, Dur};

/// `[metrics]`: how requests are measured. Fixed at start (a reload that
/// changes it is applied at the next restart).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Measure every request per route and version (default). Off: no
    /// per-version metrics, stats or dashboard figures, and no cost.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Upper bounds in seconds of the exported latency histogram buckets.
    #[serde(default = "default_buckets")]
    pub buckets: Spanned<Vec<f64>>,
    /// Stats windows are made of whole slices of this length …
    #[serde(default = "default_window_slice")]
    pub window_slice: Spanned<Dur>,
    /// … and reach back at most this many slices.
    #[serde(default = "default_window_slices")]
    pub window_slices: Spanned<usize>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            buckets: default_buckets(),
            window_slice: default_window_slice(),
            window_slices: default_window_slices(),
        }
    }
}

fn default_buckets() -> Spanned<Vec<f64>> {
    Spanned::new(0..0, metrics::DEFAULT_BUCKETS.to_vec())
}

fn default_window_slice() -> Spanned<Dur> {
    Spanned::new(0..0, Dur(metrics::DEFAULT_SLICE))
}

fn default_window_slices() -> Spanned<usize> {
    Spanned::new(0..0, metrics::DEFAULT_SLICES)
}

impl MetricsConfig {
    pub fn settings(&self) -> MetricsSettings {
        MetricsSettings {
            enabled: self.enabled,
            slice: self.window_slice.get_ref().0,
            slices: *self.window_slices.get_ref(),
            buckets: self.buckets.get_ref().clone(),
        }
    }

    /// The data plane's own check of the settings, keyed to the file.
    pub fn validate(&self, error: &mut impl FnMut(String, Range<usize>, String)) {
        if let Err(problem) = self.settings().validate() {
            let (key, span) = match problem {
                MetricsError::SliceTooShort(_) => {
                    ("metrics.window_slice", self.window_slice.span())
                }
                MetricsError::BadSliceCount(_) => {
                    ("metrics.window_slices", self.window_slices.span())
                }
                _ => ("metrics.buckets", self.buckets.span()),
            };
            error(key.into(), span, problem.to_string());
        }
    }
}
