//! `[admin]`: who may use the admin API (the tokens are read at start by
//! `crate::admin::auth`).

use std::path::PathBuf;

use serde::Deserialize;

/// Who may use the admin API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// A file holding the bearer token (its name in the history: `admin`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Further named tokens, so the history says which tool made a change.
    #[serde(default)]
    pub tokens: Vec<NamedToken>,
    /// Whether GET endpoints answer without a token. Default: yes when the
    /// admin listener is on loopback, no otherwise.
    #[serde(default)]
    pub public_reads: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedToken {
    pub name: String,
    pub file: PathBuf,
}
