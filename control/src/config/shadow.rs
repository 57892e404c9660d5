//! `[[routes.shadows]]`: the schema, the data plane's [`ShadowSpec`], and
//! where each key is in the file (the table build checks the spec).

use std::ops::Range;

use serde::Deserialize;
use switchyard_proxy::shadow::{self, ShadowSpec};
use toml::Spanned;

use super::values::{unset, Dur};

/// One `[[routes.shadows]]`; defaults and meaning in
/// `switchyard_proxy::shadow::ShadowSpec`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    pub name: Spanned<String>,
    pub endpoints: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "unspanned::<100>")]
    pub percent: Spanned<f64>,
    #[serde(default)]
    pub methods: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: Spanned<usize>,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: Spanned<usize>,
    #[serde(default)]
    pub timeout: Option<Spanned<Dur>>,
    #[serde(default)]
    pub strip_headers: Vec<Spanned<String>>,
    #[serde(default)]
    pub compare: bool,
    #[serde(default = "unset")]
    pub compare_ignore_body: Spanned<bool>,
}

fn unspanned<const N: u8>() -> Spanned<f64> {
    Spanned::new(0..0, f64::from(N))
}

fn default_max_in_flight() -> Spanned<usize> {
    Spanned::new(0..0, shadow::DEFAULT_MAX_IN_FLIGHT)
}

fn default_max_body_bytes() -> Spanned<usize> {
    Spanned::new(0..0, shadow::DEFAULT_MAX_BODY_BYTES)
}

impl ShadowConfig {
    pub fn spec(&self) -> ShadowSpec {
        let strings = |list: &[Spanned<String>]| -> Vec<String> {
            list.iter().map(|s| s.get_ref().clone()).collect()
        };
        let mut spec = ShadowSpec::new(
            self.name.get_ref().clone(),
            strings(self.endpoints.get_ref()),
        );
        spec.percent = *self.percent.get_ref();
        if let Some(methods) = &self.methods {
            spec.methods = strings(methods.get_ref());
        }
        spec.max_in_flight = *self.max_in_flight.get_ref();
        spec.max_body_bytes = *self.max_body_bytes.get_ref();
        if let Some(timeout) = &self.timeout {
            spec.timeout = timeout.get_ref().0;
        }
        spec.strip_headers = strings(&self.strip_headers);
        spec.compare = self.compare;
        spec.compare_ignore_body = *self.compare_ignore_body.get_ref();
        spec
    }

    /// Where in the file a key (or list entry) of this shadow is.
    pub fn span(&self, key: &str, index: Option<usize>) -> Range<usize> {
        let entry = |list: &[Spanned<String>], whole: Range<usize>| match index {
            Some(i) => list.get(i).map_or(whole, Spanned::span),
            None => whole,
        };
        match key {
            "name" => self.name.span(),
            "endpoints" => entry(self.endpoints.get_ref(), self.endpoints.span()),
            "percent" => self.percent.span(),
            "methods" => self
                .methods
                .as_ref()
                .map_or(0..0, |m| entry(m.get_ref(), m.span())),
            "max_in_flight" => self.max_in_flight.span(),
            "max_body_bytes" => self.max_body_bytes.span(),
            "timeout" => self.timeout.as_ref().map_or(0..0, Spanned::span),
            "strip_headers" => entry(&self.strip_headers, 0..0),
            "compare_ignore_body" => self.compare_ignore_body.span(),
            _ => 0..0,
        }
    }
}
