//! Config keys that decide who gets which version: a route's
//! `[routes.sticky]` and `match_headers`, and the `[proxy]` override-header
//! settings; the override's checks and their data-plane form (the table
//! build checks match headers and sticky settings).
//!
//! ```toml
//! [proxy]
//! version_override = true                 # default; false ignores the header
//! override_header = "x-switchyard-version"
//! override_secret = "s3cret"              # then: "x-switchyard-version: canary:s3cret"
//!
//! [[routes]]
//! name = "beta"
//! match_headers = { "x-beta" = "1" }      # only requests with x-beta: 1
//!   [routes.sticky]
//!   header = "x-user-id"                  # and/or: cookie = "uid"
//!   set_cookie = false                    # mint a key cookie for clients without one
//!   seed = 0                              # same seed ⇒ same assignment everywhere
//! ```

use std::ops::Range;

use http::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use switchyard_proxy::{StickySpec, VersionOverride};
use toml::Spanned;

use super::ProxyOptions;

/// `[routes.sticky]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickyConfig {
    /// Request header carrying the user's key.
    #[serde(default)]
    pub header: Option<String>,
    /// Cookie carrying the user's key (read after the header).
    #[serde(default)]
    pub cookie: Option<String>,
    /// Give clients without a key one, in the cookie (named `cookie`, or
    /// `switchyard-<route>`), so they stick too.
    #[serde(default)]
    pub set_cookie: bool,
    /// Hash seed; replicas must share it (the default 0 is fine).
    #[serde(default)]
    pub seed: u64,
}

impl StickyConfig {
    pub fn spec(&self) -> StickySpec {
        StickySpec {
            header: self.header.clone(),
            cookie: self.cookie.clone(),
            set_cookie: self.set_cookie,
            seed: self.seed,
        }
    }
}

pub fn default_override_header() -> Spanned<String> {
    Spanned::new(0..0, "x-switchyard-version".into())
}

/// The data plane's (name, value) list.
pub fn headers_spec(
    headers: Option<&Spanned<std::collections::BTreeMap<String, String>>>,
) -> Vec<(String, String)> {
    headers.map_or_else(Vec::new, |headers| {
        headers
            .get_ref()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    })
}

/// The override settings, `None` when disabled.
pub fn version_override(proxy: &ProxyOptions) -> Option<VersionOverride> {
    if !proxy.version_override {
        return None;
    }
    Some(VersionOverride {
        header: HeaderName::from_bytes(proxy.override_header.get_ref().as_bytes()).ok()?,
        secret: proxy.override_secret.as_ref().map(|s| s.get_ref().clone()),
    })
}

pub fn validate_proxy(proxy: &ProxyOptions, error: &mut impl FnMut(String, Range<usize>, String)) {
    for (key, header) in [
        ("proxy.override_header", &proxy.override_header),
        ("proxy.flags_header", &proxy.flags_header),
    ] {
        if HeaderName::from_bytes(header.get_ref().as_bytes()).is_err() {
            error(
                key.into(),
                header.span(),
                format!("'{}' is not a valid header name", header.get_ref()),
            );
        }
    }
    if let Some(secret) = &proxy.override_secret {
        let value = secret.get_ref();
        if value.is_empty() || HeaderValue::from_str(value).is_err() {
            error(
                "proxy.override_secret".into(),
                secret.span(),
                "must be non-empty visible ASCII (it is sent in a header)".into(),
            );
        }
    }
}

pub fn default_flags_header() -> Spanned<String> {
    Spanned::new(0..0, switchyard_proxy::flags::DEFAULT_HEADER.to_owned())
}

/// The flags header as the data plane uses it (the default when the
/// configured one is invalid: validation has reported it).
pub fn flags_header(proxy: &ProxyOptions) -> HeaderName {
    HeaderName::from_bytes(proxy.flags_header.get_ref().as_bytes())
        .unwrap_or_else(|_| HeaderName::from_static(switchyard_proxy::flags::DEFAULT_HEADER))
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::config::tests::errors;
    use crate::config::Config;

    /// One route, stable 90 / canary 10 (shared with the TLS key tests).
    pub(crate) const ROUTE: &str = r#"
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

    #[test]
    fn sticky_and_override_reach_the_table() {
        let text = format!(
            "[proxy]\noverride_header = \"x-force\"\noverride_secret = \"s\"\n{ROUTE}  [routes.sticky]\n  cookie = \"uid\"\n  set_cookie = true\n  seed = 9\n"
        );
        let spec = Config::parse(&text, "t.toml").expect("valid").table_spec();
        let sticky = spec.routes[0].sticky.as_ref().expect("sticky");
        assert_eq!(
            (sticky.cookie.as_deref(), sticky.set_cookie, sticky.seed),
            (Some("uid"), true, 9)
        );
        let o = spec.settings.version_override.as_ref().expect("override");
        assert_eq!(
            (o.header.as_str(), o.secret.as_deref()),
            ("x-force", Some("s"))
        );
        switchyard_proxy::RoutingTable::build(spec, 1).expect("table");

        let off = format!("[proxy]\nversion_override = false\n{ROUTE}");
        let spec = Config::parse(&off, "t.toml").expect("valid").table_spec();
        assert!(spec.settings.version_override.is_none());
        let inline = ROUTE.replace(
            "name = \"web\"\n",
            "name = \"web\"\nsticky = { header = \"x-user-id\" }\n",
        );
        assert!(Config::parse(&inline, "t.toml").is_ok());
    }

    #[test]
    fn bad_keys_are_reported_with_path_and_line() {
        let text = format!("{ROUTE}  [routes.sticky]\n  header = \"x user\"\n");
        let found = errors(&text);
        assert_eq!(found[0].path, "routes[0].sticky");
        assert_eq!(found[0].position.map(|p| p.0), Some(12), "{found:?}");
        assert!(found[0].message.contains("x user"), "{}", found[0].message);

        let text = format!("{ROUTE}  [routes.sticky]\n  set_cookie = false\n");
        assert!(errors(&text)[0].message.contains("needs a key"));

        let text = ROUTE.replace(
            "name = \"web\"\n",
            "name = \"web\"\nmatch_headers = { \"bad name\" = \"1\" }\n",
        );
        let found = errors(&text);
        assert_eq!(found[0].path, "routes[0].match_headers");
        assert_eq!(found[0].position.map(|p| p.0), Some(4));

        let found = errors(&format!("[proxy]\noverride_header = \"x y\"\n{ROUTE}"));
        assert_eq!(found[0].path, "proxy.override_header");
        assert_eq!(found[0].position.map(|p| p.0), Some(2));
    }

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../../../config/ab-test.toml");
        let spec = Config::parse(text, "ab-test.toml")
            .expect("valid example")
            .table_spec();
        switchyard_proxy::RoutingTable::build(spec, 1).expect("table");
    }

    #[test]
    fn same_match_needs_different_headers() {
        let beta = ROUTE.replace(
            "name = \"web\"\n",
            "name = \"beta\"\nmatch_headers = { \"x-beta\" = \"1\" }\n",
        );
        assert!(Config::parse(&format!("{ROUTE}{beta}"), "t.toml").is_ok());
        let again = beta.replace("name = \"beta\"", "name = \"beta2\"");
        let found = errors(&format!("{ROUTE}{beta}{again}"));
        assert!(
            found
                .iter()
                .any(|e| e.path == "routes[2].path_prefix" && e.message.contains("x-beta: 1")),
            "{found:?}"
        );
    }
}
