//! `[proxy]`: response headers, the upstream pool size and the override
//! header (whose checks and data-plane form are in [`super::routing`]).

use serde::Deserialize;
use toml::Spanned;

use super::routing;
use super::values::yes;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyOptions {
    /// `x-switchyard-version: NAME` on every proxied response.
    #[serde(default = "yes")]
    pub version_header: bool,
    /// `x-switchyard-revision: N` on every response (debugging, tests).
    #[serde(default)]
    pub revision_header: bool,
    /// Idle upstream connections kept per endpoint.
    #[serde(default = "default_pool_size")]
    pub max_idle_per_endpoint: usize,
    /// Honour the override header (see [`routing`]).
    #[serde(default = "yes")]
    pub version_override: bool,
    #[serde(default = "routing::default_override_header")]
    pub override_header: Spanned<String>,
    /// Required after `NAME:` in the override header's value.
    #[serde(default)]
    pub override_secret: Option<Spanned<String>>,
    /// The request header naming a unit's flags to the upstream.
    #[serde(default = "routing::default_flags_header")]
    pub flags_header: Spanned<String>,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            version_header: true,
            revision_header: false,
            max_idle_per_endpoint: default_pool_size(),
            version_override: true,
            override_header: routing::default_override_header(),
            override_secret: None,
            flags_header: routing::default_flags_header(),
        }
    }
}

fn default_pool_size() -> usize {
    256
}
