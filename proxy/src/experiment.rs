//! An A/B experiment's counting on the request path. A route with an
//! experiment counts, per variant (the version that answered), the
//! distinct units (the route's sticky key: a user, a device) it exposed
//! and, per goal, the distinct units that reached the goal, each in a
//! HyperLogLog++ sketch (precision 14: 0.8 % standard error, at most 12 KiB
//! per sketch; sketches of the same precision and hasher merge exactly, so
//! replicas' counts can be added as sketches), plus requests and 5xx
//! answers. Routes without an experiment pay nothing.
//!
//! The counts belong to the experiment, not to one table: a table built
//! after this one takes them over while the experiment keeps its name.
//! The statistics are the control plane's (readout).

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::BuildHasherDefault;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, Method, StatusCode};
use hyperloglogplus::{HyperLogLog, HyperLogLogPlus};

/// 2^14 registers: 1.04 / sqrt(16384) = 0.81 % standard error.
const PRECISION: u8 = 14;

/// Fixed keys, so every replica's sketches hash alike and merge.
type Sketch = HyperLogLogPlus<u64, BuildHasherDefault<DefaultHasher>>;

fn sketch() -> Sketch {
    // Precision 14 is within the crate's 4..=18: cannot fail.
    HyperLogLogPlus::new(PRECISION, BuildHasherDefault::default())
        .expect("precision 14 is supported")
}

/// `[routes.experiment]` as the table gets it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExperimentSpec {
    pub name: String,
    /// The variant the others are compared with (a version of the route).
    pub control: String,
    pub goals: Vec<GoalSpec>,
    /// The smallest absolute change of a conversion rate worth detecting
    /// (0.01: one point); the readout says how many units that needs.
    pub minimum_effect: f64,
}

/// A request that counts as its unit reaching a goal.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GoalSpec {
    pub name: String,
    /// Any method when `None`.
    pub method: Option<String>,
    pub path_prefix: String,
    /// `"2xx"` … `"5xx"`; any status when `None`.
    pub status: Option<String>,
    /// The response must carry this header.
    pub response_header: Option<String>,
}

/// A goal, parsed.
#[derive(Debug)]
pub struct Goal {
    pub name: String,
    method: Option<Method>,
    path_prefix: String,
    status_class: Option<u16>,
    response_header: Option<HeaderName>,
}

impl Goal {
    /// Parses `spec`; `Err((key, reason))` names the key that is wrong.
    pub fn parse(spec: &GoalSpec) -> Result<Goal, (&'static str, String)> {
        if spec.name.is_empty() {
            return Err(("name", "a goal needs a name".into()));
        }
        let method = spec
            .method
            .as_deref()
            .map(|m| {
                Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                    .map_err(|_| ("method", format!("'{m}' is not an HTTP method")))
            })
            .transpose()?;
        if !spec.path_prefix.starts_with('/') {
            return Err((
                "path_prefix",
                format!("'{}' must start with '/'", spec.path_prefix),
            ));
        }
        let status_class = spec
            .status
            .as_deref()
            .map(|s| match s.as_bytes() {
                [c @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => Ok(u16::from(c - b'0')),
                _ => Err((
                    "status",
                    format!("'{s}' is not a status class: use 2xx, 3xx, 4xx or 5xx"),
                )),
            })
            .transpose()?;
        let response_header = spec
            .response_header
            .as_deref()
            .map(|h| {
                HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| ("response_header", format!("'{h}' is not a header name")))
            })
            .transpose()?;
        Ok(Goal {
            name: spec.name.clone(),
            method,
            path_prefix: spec.path_prefix.clone(),
            status_class,
            response_header,
        })
    }

    fn matches_request(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method) && path.starts_with(&self.path_prefix)
    }

    fn matches_response(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        self.status_class
            .is_none_or(|class| status.as_u16() / 100 == class)
            && self
                .response_header
                .as_ref()
                .is_none_or(|name| headers.contains_key(name))
    }
}

/// An experiment in a table: its goals and the counts it shares with the
/// tables before and after it.
#[derive(Debug)]
pub struct Experiment {
    pub name: String,
    pub control: String,
    pub goals: Vec<Goal>,
    pub minimum_effect: f64,
    counts: Arc<Counts>,
}

#[derive(Debug)]
struct Counts {
    /// When the experiment began counting (its first table).
    started: SystemTime,
    variants: Mutex<BTreeMap<Arc<str>, VariantCounts>>,
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            started: SystemTime::now(),
            variants: Mutex::default(),
        }
    }
}

struct VariantCounts {
    exposed: Sketch,
    /// By goal name: goals may change while the experiment runs.
    converted: BTreeMap<String, Sketch>,
    requests: u64,
    errors: u64,
}

impl std::fmt::Debug for VariantCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VariantCounts")
            .field("requests", &self.requests)
            .finish_non_exhaustive()
    }
}

/// What the request side of an exchange knew: the unit and which goals its
/// method and path matched (a bit per goal).
#[derive(Debug, Clone, Copy)]
pub struct Unit {
    hash: u64,
    goals: u64,
}

/// The most goals an experiment can have (one bit each in [`Unit`]).
pub const MAX_GOALS: usize = 64;

impl Experiment {
    /// `goals` parsed; the counts of `previous` when it is the same
    /// experiment.
    pub fn new(spec: &ExperimentSpec, goals: Vec<Goal>, previous: Option<&Experiment>) -> Self {
        let counts = previous
            .filter(|p| p.name == spec.name)
            .map_or_else(Arc::default, |p| Arc::clone(&p.counts));
        Experiment {
            name: spec.name.clone(),
            control: spec.control.clone(),
            goals,
            minimum_effect: spec.minimum_effect,
            counts,
        }
    }

    /// When counting began.
    pub fn started(&self) -> SystemTime {
        self.counts.started
    }

    /// The unit of a request with sticky key `key`.
    pub fn unit(&self, key: &[u8], method: &Method, path: &str) -> Unit {
        let goals = self
            .goals
            .iter()
            .enumerate()
            .filter(|(_, goal)| goal.matches_request(method, path))
            .fold(0u64, |bits, (i, _)| bits | (1 << i));
        Unit {
            hash: crate::sticky::key_hash(key, 0),
            goals,
        }
    }

    /// Counts `unit`'s exchange with `variant`, answered `status`.
    pub fn record(&self, variant: &Arc<str>, unit: Unit, status: StatusCode, headers: &HeaderMap) {
        let mut variants = self.lock();
        let counts = variants
            .entry(Arc::clone(variant))
            .or_insert_with(|| VariantCounts {
                exposed: sketch(),
                converted: BTreeMap::new(),
                requests: 0,
                errors: 0,
            });
        counts.requests += 1;
        counts.errors += u64::from(status.is_server_error());
        counts.exposed.insert(&unit.hash);
        for (i, goal) in self.goals.iter().enumerate() {
            if unit.goals & (1 << i) != 0 && goal.matches_response(status, headers) {
                // The goal's name is copied once, for its first conversion.
                match counts.converted.get_mut(&goal.name) {
                    Some(converted) => converted.insert(&unit.hash),
                    None => {
                        let mut converted = sketch();
                        converted.insert(&unit.hash);
                        counts.converted.insert(goal.name.clone(), converted);
                    }
                }
            }
        }
    }

    /// A 5xx the proxy itself answered (no upstream response): a request
    /// and an error of the variant, its unit exposed.
    pub fn record_failure(&self, variant: &Arc<str>, unit: Unit) {
        self.record(
            variant,
            Unit { goals: 0, ..unit },
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
        );
    }

    /// The counts so far, per variant.
    pub fn snapshot(&self) -> Vec<VariantSnapshot> {
        self.lock()
            .iter_mut()
            .map(|(name, counts)| VariantSnapshot {
                variant: name.to_string(),
                units: estimate(&mut counts.exposed),
                conversions: self
                    .goals
                    .iter()
                    .map(|goal| {
                        let converted = counts.converted.get_mut(&goal.name).map_or(0, estimate);
                        (goal.name.clone(), converted)
                    })
                    .collect(),
                requests: counts.requests,
                errors: counts.errors,
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Arc<str>, VariantCounts>> {
        self.counts
            .variants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn estimate(sketch: &mut Sketch) -> u64 {
    sketch.count().round() as u64
}

/// One variant's counts.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantSnapshot {
    pub variant: String,
    /// Distinct units exposed (estimated).
    pub units: u64,
    /// Distinct units that reached each goal (estimated), by goal name.
    pub conversions: Vec<(String, u64)>,
    pub requests: u64,
    pub errors: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn goal(status: Option<&str>, header: Option<&str>) -> GoalSpec {
        GoalSpec {
            name: "purchase".into(),
            method: Some("post".into()),
            path_prefix: "/checkout/complete".into(),
            status: status.map(str::to_owned),
            response_header: header.map(str::to_owned),
        }
    }

    fn experiment(goals: Vec<GoalSpec>) -> Experiment {
        let spec = ExperimentSpec {
            name: "checkout-v2".into(),
            control: "stable".into(),
            goals: goals.clone(),
            minimum_effect: 0.01,
        };
        let goals = goals
            .iter()
            .map(|g| Goal::parse(g).expect("goal"))
            .collect();
        Experiment::new(&spec, goals, None)
    }

    #[test]
    fn bad_goals_name_their_key() {
        let bad = |g: GoalSpec| Goal::parse(&g).expect_err("bad").0;
        assert_eq!(bad(goal(Some("2xy"), None)), "status");
        assert_eq!(bad(goal(Some("6xx"), None)), "status");
        assert_eq!(bad(goal(None, Some("bad header"))), "response_header");
        assert_eq!(
            bad(GoalSpec {
                path_prefix: "x".into(),
                ..goal(None, None)
            }),
            "path_prefix"
        );
        assert_eq!(
            bad(GoalSpec {
                method: Some("GE T".into()),
                ..goal(None, None)
            }),
            "method"
        );
        assert_eq!(
            bad(GoalSpec {
                name: String::new(),
                ..goal(None, None)
            }),
            "name"
        );
    }

    #[test]
    fn units_and_conversions_are_distinct_users() {
        let e = experiment(vec![goal(Some("2xx"), None)]);
        let stable: Arc<str> = "stable".into();
        let headers = HeaderMap::new();
        for user in 0..1000u32 {
            let key = format!("user-{user}");
            // Every user browses twice; every tenth buys, once with a 500
            // first (not a conversion).
            for _ in 0..2 {
                let unit = e.unit(key.as_bytes(), &Method::GET, "/shop");
                e.record(&stable, unit, StatusCode::OK, &headers);
            }
            if user % 10 == 0 {
                let unit = e.unit(key.as_bytes(), &Method::POST, "/checkout/complete/1");
                e.record(&stable, unit, StatusCode::INTERNAL_SERVER_ERROR, &headers);
                e.record(&stable, unit, StatusCode::OK, &headers);
            }
        }
        let snapshot = e.snapshot();
        assert_eq!(snapshot.len(), 1);
        let s = &snapshot[0];
        assert!((990..=1010).contains(&s.units), "{s:?}");
        assert_eq!(s.conversions[0].0, "purchase");
        assert!((99..=101).contains(&s.conversions[0].1), "{s:?}");
        assert_eq!(s.requests, 2200);
        assert_eq!(s.errors, 100);
    }

    #[test]
    fn a_goal_can_require_a_response_header() {
        let e = experiment(vec![goal(None, Some("x-goal"))]);
        let canary: Arc<str> = "canary".into();
        let unit = e.unit(b"u1", &Method::POST, "/checkout/complete");
        e.record(&canary, unit, StatusCode::OK, &HeaderMap::new());
        assert_eq!(e.snapshot()[0].conversions[0].1, 0);
        let mut headers = HeaderMap::new();
        headers.insert("x-goal", http::HeaderValue::from_static("1"));
        e.record(&canary, unit, StatusCode::OK, &headers);
        assert_eq!(e.snapshot()[0].conversions[0].1, 1);
        // A GET to the goal's path is not the goal (method POST).
        let get = e.unit(b"u2", &Method::GET, "/checkout/complete");
        e.record(&canary, get, StatusCode::OK, &headers);
        assert_eq!(e.snapshot()[0].conversions[0].1, 1);
        assert_eq!(e.snapshot()[0].units, 2);
    }

    #[test]
    fn a_later_table_keeps_the_counts_of_the_same_experiment_only() {
        let first = experiment(vec![goal(None, None)]);
        let unit = first.unit(b"u", &Method::GET, "/");
        first.record(&"stable".into(), unit, StatusCode::OK, &HeaderMap::new());
        let spec = ExperimentSpec {
            name: "checkout-v2".into(),
            control: "stable".into(),
            goals: vec![],
            minimum_effect: 0.01,
        };
        let same = Experiment::new(&spec, vec![], Some(&first));
        assert_eq!(same.snapshot()[0].units, 1);
        let other = ExperimentSpec {
            name: "other".into(),
            ..spec
        };
        assert!(Experiment::new(&other, vec![], Some(&first))
            .snapshot()
            .is_empty());
    }
}
