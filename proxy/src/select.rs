//! Which version serves a request, by precedence: the override header (a
//! tester forcing a version), then the route's sticky assignment, then the
//! weighted pick. A table without override and a route without sticky pay
//! one branch each.
//!
//! The override header's value is the version name, or `NAME:SECRET` when
//! a secret is configured (version names cannot contain `:`). With a secret
//! configured, a value without it or with a wrong one is ignored — the
//! request is served as if the header were absent, so an outsider learns
//! nothing. The header is never forwarded upstream (it may carry the
//! secret). A forced version may have weight 0: that is how a dark version
//! is tried before it gets traffic.

use http::header::{HeaderMap, HeaderValue};
use subtle::ConstantTimeEq;

use crate::error::ProxyError;
use crate::sticky::Assignment;
use crate::table::{Route, Version, VersionOverride};

/// The version chosen for one request.
#[derive(Debug)]
pub struct Choice<'t> {
    pub version: &'t Version,
    /// A `Set-Cookie` value pinning the client (sticky `set_cookie`).
    pub set_cookie: Option<HeaderValue>,
}

impl<'t> Choice<'t> {
    fn plain(version: &'t Version) -> Choice<'t> {
        Choice {
            version,
            set_cookie: None,
        }
    }
}

/// Chooses the version for a request to `route`; removes the override
/// header from `headers`. An unknown forced version is a 400 naming the
/// route's versions.
pub fn choose<'t>(
    route: &'t Route,
    version_override: Option<&VersionOverride>,
    headers: &mut HeaderMap,
) -> Result<Choice<'t>, ProxyError> {
    if let Some(forced) = version_override.and_then(|o| forced_version(o, headers)) {
        return match route.version(&forced) {
            Some(version) => Ok(Choice::plain(version)),
            None => Err(unknown_version(route, &forced, version_override)),
        };
    }
    if let Some(sticky) = route.sticky() {
        match sticky.assign(headers) {
            Assignment::Version(index) => return Ok(Choice::plain(&route.versions[index])),
            Assignment::Pinned {
                version,
                set_cookie,
            } => {
                return Ok(Choice {
                    version: &route.versions[version],
                    set_cookie: Some(set_cookie),
                })
            }
            Assignment::NoKey => {}
        }
    }
    route
        .pick()
        .map(Choice::plain)
        .ok_or_else(|| ProxyError::NoVersion {
            route: route.name.to_string(),
        })
}

/// The version name the request forces, if the header is present (and
/// carries the secret when one is required). Removes the header.
fn forced_version(settings: &VersionOverride, headers: &mut HeaderMap) -> Option<String> {
    let value = headers.remove(&settings.header)?;
    let text = String::from_utf8_lossy(value.as_bytes());
    let text = text.trim();
    match &settings.secret {
        None => Some(text.to_owned()),
        Some(secret) => {
            let (name, given) = text.split_once(':')?;
            bool::from(given.as_bytes().ct_eq(secret.as_bytes())).then(|| name.trim().to_owned())
        }
    }
}

fn unknown_version(
    route: &Route,
    asked: &str,
    version_override: Option<&VersionOverride>,
) -> ProxyError {
    let names: Vec<&str> = route.versions.iter().map(|v| &*v.name).collect();
    let header = version_override.map_or("the override header", |o| o.header.as_str());
    ProxyError::BadRequest(format!(
        "route '{}' has no version '{asked}' (asked for in {header}): its versions are {}",
        route.name,
        names.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sticky::StickySpec;
    use crate::table::tests::{route, version};
    use crate::table::{RoutingTable, Settings, TableSpec};

    fn table(sticky: Option<StickySpec>) -> RoutingTable {
        let mut spec = route(
            "web",
            None,
            "/",
            vec![
                version("stable", 1, &["127.0.0.1:1"]),
                version("dark", 0, &["127.0.0.1:2"]),
            ],
        );
        spec.sticky = sticky;
        RoutingTable::build(
            TableSpec {
                routes: vec![spec],
                settings: Settings::default(),
                flags: Vec::new(),
            },
            1,
        )
        .expect("valid")
    }

    fn settings(secret: Option<&str>) -> VersionOverride {
        VersionOverride {
            header: http::header::HeaderName::from_static("x-switchyard-version"),
            secret: secret.map(Into::into),
        }
    }

    fn pick(table: &RoutingTable, o: Option<&VersionOverride>, value: Option<&str>) -> String {
        let mut headers = HeaderMap::new();
        if let Some(value) = value {
            headers.insert(
                "x-switchyard-version",
                HeaderValue::from_str(value).expect("value"),
            );
        }
        let choice = choose(&table.routes()[0], o, &mut headers).expect("a choice");
        assert!(!headers.contains_key("x-switchyard-version") || o.is_none());
        choice.version.name.to_string()
    }

    #[test]
    fn override_forces_even_weight_zero() {
        let table = table(None);
        let o = settings(None);
        assert_eq!(pick(&table, Some(&o), Some("dark")), "dark");
        assert_eq!(pick(&table, Some(&o), None), "stable");
        // Disabled: the header is ignored (and left alone).
        assert_eq!(pick(&table, None, Some("dark")), "stable");
    }

    #[test]
    fn unknown_version_is_a_400_listing_versions() {
        let table = table(None);
        let mut headers = HeaderMap::new();
        headers.insert("x-switchyard-version", HeaderValue::from_static("nope"));
        let error =
            choose(&table.routes()[0], Some(&settings(None)), &mut headers).expect_err("unknown");
        assert_eq!(error.status(), http::StatusCode::BAD_REQUEST);
        assert!(error.to_string().contains("stable, dark"), "{error}");
    }

    #[test]
    fn secret_must_match_or_the_header_is_ignored() {
        let table = table(None);
        let o = settings(Some("s3cret"));
        assert_eq!(pick(&table, Some(&o), Some("dark:s3cret")), "dark");
        assert_eq!(pick(&table, Some(&o), Some("dark:wrong")), "stable");
        assert_eq!(pick(&table, Some(&o), Some("dark")), "stable");
        assert!(!format!("{o:?}").contains("s3cret"));
    }

    #[test]
    fn sticky_applies_without_override() {
        let table = table(Some(StickySpec {
            set_cookie: true,
            ..StickySpec::default()
        }));
        let mut headers = HeaderMap::new();
        let choice = choose(&table.routes()[0], None, &mut headers).expect("choice");
        assert_eq!(&*choice.version.name, "stable");
        assert!(choice.set_cookie.is_some());
    }
}
