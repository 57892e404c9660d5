//! Sticky assignment: the version a user gets is a pure function of the
//! user's key, the route's version names and weights, and a configured seed,
//! so every replica and every restart agrees without shared state, and a
//! weight change moves as few users as possible, in one direction only.
//!
//! # The scheme: weighted rendezvous hashing
//!
//! `h = XXH3-64(key, seed)`; for each version `i` with weight `w_i > 0`,
//! `u_i = unit(fmix64(h ^ s_i))` where `s_i = XXH3-64(name_i, seed ^ SALT)`
//! and `unit` maps 64 bits to a point of (0, 1); the user gets the version
//! with the smallest score `E_i / w_i`, `E_i = -ln(u_i)`.
//!
//! Distribution: the `E_i` are independent Exp(1) draws, so `E_i / w_i` is
//! Exp(w_i) and the minimum of independent exponentials is version `i` with
//! probability `w_i / Σw` — the configured shares.
//!
//! Monotonicity (proof sketch). A user's `E_i` depend only on the key, the
//! seed and version names, never on weights. Say a weight change moves a
//! user from `A` to `B`. Before: `E_A / w_A <= E_B / w_B`, i.e.
//! `E_A / E_B <= w_A / w_B`. After: `E_B / w'_B < E_A / w'_A`, i.e.
//! `w'_A / w'_B < E_A / E_B`. Together `w'_A / w'_B < w_A / w_B`: **a user
//! moves from A to B only if B's weight relative to A's strictly rose.**
//! Consequences:
//! - two versions (stable, canary): raising canary (or lowering stable)
//!   moves users from stable into canary only; lowering canary moves users
//!   out of canary only. Nobody moves the other way.
//! - any number of versions: raising one version's weight (others kept)
//!   moves users only *into* it; lowering one moves users only *out of* it;
//!   a version whose weight rose relative to every other loses nobody.
//! - a version at weight 0 gets nobody; restoring its weight brings back
//!   exactly the users it had (the `E_i` did not change).
//! - adding, removing or reordering *other* versions never moves a user
//!   between the versions that stay, except into an added one or out of a
//!   removed one (scores are per version name, not per position).
//!
//! The route only enters through its version names and weights: two routes
//! with the same versions, weights and seed put a user on the same version
//! (a user in the web canary is also in the API canary). Give routes
//! different seeds to assign them independently.
//!
//! `ln` comes from the platform's libm; replicas on different libms could
//! only disagree when two scores are within one ulp of each other (about
//! 1e-16 of users).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{HeaderMap, HeaderName, HeaderValue, COOKIE};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Separates version-name hashes from key hashes under the same seed.
const SALT: u64 = 0x5377_6974_6368_7964; // "Switchyd"

/// Where the key comes from, as configured (plain data, part of the table
/// spec).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StickySpec {
    /// Request header carrying the key, e.g. `x-user-id`.
    pub header: Option<String>,
    /// Cookie carrying the key, e.g. `uid`.
    pub cookie: Option<String>,
    /// For requests without a key: give the client a fresh key in a cookie
    /// (named `cookie`, or `switchyard-<route>`), so its later requests
    /// stick.
    pub set_cookie: bool,
    pub seed: u64,
}

/// A route's sticky assignment, precomputed when the table is built.
#[derive(Debug)]
pub struct Sticky {
    header: Option<HeaderName>,
    /// The cookie read for the key (and written when `set_cookie`).
    cookie: Option<String>,
    set_cookie: bool,
    seed: u64,
    /// Per version, in table order.
    salts: Box<[u64]>,
    weights: Box<[u32]>,
}

/// What the sticky stage decided for one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Assignment {
    /// The key picked this version index.
    Version(usize),
    /// A new key was minted and picked this version; the response must
    /// carry the cookie.
    Pinned {
        version: usize,
        set_cookie: HeaderValue,
    },
    /// No key and no cookie to set: use the weighted pick.
    NoKey,
}

impl Sticky {
    /// `versions` are (name, weight) in table order. Fails on a header or
    /// cookie name that cannot be used.
    pub fn build<'a>(
        route: &str,
        spec: &StickySpec,
        versions: impl Iterator<Item = (&'a str, u32)>,
    ) -> Result<Sticky, String> {
        let header = match &spec.header {
            Some(name) => Some(
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("sticky header '{name}' is not a valid header name"))?,
            ),
            None => None,
        };
        let cookie = match (&spec.cookie, spec.set_cookie) {
            (Some(name), _) => Some(name.clone()),
            (None, true) => Some(format!("switchyard-{route}")),
            (None, false) => None,
        };
        if let Some(name) = &cookie {
            if !valid_cookie_name(name) {
                return Err(format!(
                    "sticky cookie '{name}' is not a valid cookie name: use letters, digits, '-', '_' and '.'"
                ));
            }
        }
        if header.is_none() && cookie.is_none() {
            return Err("sticky needs a key: set header, cookie or set_cookie = true".into());
        }
        let (salts, weights): (Vec<u64>, Vec<u32>) = versions
            .map(|(name, weight)| (version_salt(name, spec.seed), weight))
            .unzip();
        Ok(Sticky {
            header,
            cookie,
            set_cookie: spec.set_cookie,
            seed: spec.seed,
            salts: salts.into_boxed_slice(),
            weights: weights.into_boxed_slice(),
        })
    }

    /// The version for a request with these headers.
    pub fn assign(&self, headers: &HeaderMap) -> Assignment {
        if let Some(key) = self.key(headers) {
            if let Some(version) = self.version_for(key) {
                return Assignment::Version(version);
            }
        }
        match (&self.cookie, self.set_cookie) {
            (Some(name), true) => {
                let key = fresh_key();
                let Some(version) = self.version_for(key.as_bytes()) else {
                    return Assignment::NoKey;
                };
                match HeaderValue::from_str(&format!(
                    "{name}={key}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax"
                )) {
                    Ok(set_cookie) => Assignment::Pinned {
                        version,
                        set_cookie,
                    },
                    Err(_) => Assignment::NoKey,
                }
            }
            _ => Assignment::NoKey,
        }
    }

    /// The request's key (header first, then cookie), if it carries one.
    pub fn key<'h>(&self, headers: &'h HeaderMap) -> Option<&'h [u8]> {
        unit_key(self.header.as_ref(), self.cookie.as_deref(), headers)
    }

    /// The version index for `key`, or `None` when every weight is zero.
    pub fn version_for(&self, key: &[u8]) -> Option<usize> {
        rendezvous(key_hash(key, self.seed), &self.salts, &self.weights)
    }
}

/// A unit's key from a request: the non-empty value of `header`, else the
/// value of the cookie named `cookie`. Shared by everything that follows a
/// user rather than a request (sticky assignment, experiments, flags).
pub fn unit_key<'h>(
    header: Option<&HeaderName>,
    cookie: Option<&str>,
    headers: &'h HeaderMap,
) -> Option<&'h [u8]> {
    header
        .and_then(|name| headers.get(name))
        .map(HeaderValue::as_bytes)
        .filter(|key| !key.is_empty())
        .or_else(|| {
            let name = cookie?;
            headers
                .get_all(COOKIE)
                .iter()
                .find_map(|value| cookie_value(value.as_bytes(), name.as_bytes()))
        })
}

/// The hash of a user's key under `seed`.
pub fn key_hash(key: &[u8], seed: u64) -> u64 {
    xxh3_64_with_seed(key, seed)
}

/// The per-version constant mixed into each key hash.
pub fn version_salt(name: &str, seed: u64) -> u64 {
    xxh3_64_with_seed(name.as_bytes(), seed ^ SALT)
}

/// Weighted rendezvous: the index with the smallest `-ln(u_i) / w_i`,
/// skipping weight 0; `None` if every weight is 0. See the module comment
/// for why this is monotone under weight changes.
pub fn rendezvous(key_hash: u64, salts: &[u64], weights: &[u32]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (index, (salt, weight)) in salts.iter().zip(weights).enumerate() {
        if *weight == 0 {
            continue;
        }
        let score = -unit(fmix64(key_hash ^ salt)).ln() / f64::from(*weight);
        match best {
            Some((_, lowest)) if lowest <= score => {}
            _ => best = Some((index, score)),
        }
    }
    best.map(|(index, _)| index)
}

/// MurmurHash3's 64-bit finaliser: a bijection with full avalanche, so the
/// per-version draws of one key behave as independent.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// The top 53 bits as a point strictly inside (0, 1), so `ln` is finite.
fn unit(bits: u64) -> f64 {
    ((bits >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
}

/// The value of cookie `name` in one `Cookie` header (`a=1; b=2`).
fn cookie_value<'v>(header: &'v [u8], name: &[u8]) -> Option<&'v [u8]> {
    header.split(|b| *b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|b| *b == b'=')?;
        let (key, value) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
        let value = value
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(value);
        (key == name && !value.is_empty()).then_some(value)
    })
}

/// Cookie names switchyard reads or writes: RFC 6265 tokens, conservatively.
pub fn valid_cookie_name(name: &str) -> bool {
    crate::names::is_name_text(name)
}

/// A new key for a client that has none: unique, not secret (it only
/// chooses a version). Randomness comes from std's per-process random hash
/// keys, mixed with the time and a counter.
fn fresh_key() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let random = std::collections::hash_map::RandomState::new().hash_one((count, nanos));
    format!(
        "{:016x}{:016x}",
        random,
        fmix64(nanos ^ count.rotate_left(32))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sticky(versions: &[(&str, u32)], spec: &StickySpec) -> Sticky {
        Sticky::build("web", spec, versions.iter().copied()).expect("valid")
    }

    fn by_header() -> StickySpec {
        StickySpec {
            header: Some("x-user-id".into()),
            ..StickySpec::default()
        }
    }

    fn assign_all(s: &Sticky, users: usize) -> Vec<usize> {
        (0..users)
            .map(|u| {
                s.version_for(format!("user-{u}").as_bytes())
                    .expect("a version")
            })
            .collect()
    }

    #[test]
    fn shares_follow_weights() {
        let users = 100_000;
        for weights in [[90u32, 10, 0], [50, 30, 20], [1, 1, 1]] {
            let s = sticky(
                &[
                    ("stable", weights[0]),
                    ("canary", weights[1]),
                    ("green", weights[2]),
                ],
                &by_header(),
            );
            let mut counts = [0usize; 3];
            for v in assign_all(&s, users) {
                counts[v] += 1;
            }
            let total: u32 = weights.iter().sum();
            for i in 0..3 {
                let want = f64::from(weights[i]) / f64::from(total);
                let got = counts[i] as f64 / users as f64;
                assert!((got - want).abs() < 0.01, "{weights:?}: {counts:?}");
            }
        }
    }

    #[test]
    fn raising_canary_only_moves_users_into_it() {
        let before = assign_all(
            &sticky(&[("stable", 90), ("canary", 10)], &by_header()),
            20_000,
        );
        let after = assign_all(
            &sticky(&[("stable", 70), ("canary", 30)], &by_header()),
            20_000,
        );
        let moved: Vec<_> = before.iter().zip(&after).filter(|(b, a)| b != a).collect();
        assert!(
            moved.len() > 3_000,
            "about 20% should move, {} did",
            moved.len()
        );
        assert!(moved.iter().all(|(b, a)| **b == 0 && **a == 1));
        // And back down: only out of canary.
        let lower = assign_all(
            &sticky(&[("stable", 95), ("canary", 5)], &by_header()),
            20_000,
        );
        assert!(after
            .iter()
            .zip(&lower)
            .all(|(a, l)| a == l || (*a == 1 && *l == 0)));
    }

    #[test]
    fn raising_one_of_three_only_moves_users_into_it() {
        let names = ["stable", "canary", "green"];
        let with = |w: [u32; 3]| {
            let versions: Vec<(&str, u32)> = names.iter().copied().zip(w).collect();
            assign_all(&sticky(&versions, &by_header()), 20_000)
        };
        let before = with([80, 15, 5]);
        let after = with([80, 15, 25]);
        assert!(before.iter().zip(&after).all(|(b, a)| b == a || *a == 2));
        // Weight 0 gets nobody; restoring it brings the same users back.
        let off = with([80, 15, 0]);
        assert!(!off.contains(&2));
        assert_eq!(with([80, 15, 5]), before);
    }

    #[test]
    fn order_of_versions_does_not_matter() {
        let a = sticky(&[("stable", 60), ("canary", 40)], &by_header());
        let b = sticky(&[("canary", 40), ("stable", 60)], &by_header());
        for u in 0..2_000 {
            let key = format!("user-{u}");
            let va = a.version_for(key.as_bytes()).expect("a");
            let vb = b.version_for(key.as_bytes()).expect("b");
            assert_eq!(va, 1 - vb, "{key}");
        }
    }

    #[test]
    fn fixed_across_builds_and_processes() {
        // Pinned values: a change here would move users on upgrade.
        assert_eq!(key_hash(b"user-1", 0), 0x7c76_15c1_1438_e5c9);
        let s = sticky(&[("stable", 50), ("canary", 50)], &by_header());
        let first: Vec<usize> = assign_all(&s, 16);
        assert_eq!(first, vec![0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0]);
        let seeded = sticky(
            &[("stable", 50), ("canary", 50)],
            &StickySpec {
                seed: 7,
                ..by_header()
            },
        );
        assert_ne!(assign_all(&seeded, 64), assign_all(&s, 64));
    }

    #[test]
    fn key_from_header_then_cookie_else_fresh_cookie() {
        let spec = StickySpec {
            header: Some("x-user-id".into()),
            cookie: Some("uid".into()),
            set_cookie: true,
            seed: 0,
        };
        let s = sticky(&[("stable", 50), ("canary", 50)], &spec);
        let mut headers = HeaderMap::new();
        headers.insert("x-user-id", HeaderValue::from_static("alice"));
        let alice = s.version_for(b"alice").expect("version");
        assert_eq!(s.assign(&headers), Assignment::Version(alice));
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_static("a=1; uid=\"alice\"; b=2"));
        assert_eq!(s.assign(&headers), Assignment::Version(alice));
        let Assignment::Pinned {
            version,
            set_cookie,
        } = s.assign(&HeaderMap::new())
        else {
            panic!("expected a fresh cookie");
        };
        let text = set_cookie.to_str().expect("ascii");
        let key = text
            .strip_prefix("uid=")
            .and_then(|rest| rest.split(';').next())
            .expect("uid=KEY");
        assert_eq!(s.version_for(key.as_bytes()), Some(version));
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_str(&format!("uid={key}")).expect("value"),
        );
        assert_eq!(s.assign(&headers), Assignment::Version(version));
    }

    #[test]
    fn without_key_and_cookie_falls_back() {
        let s = sticky(&[("stable", 50), ("canary", 50)], &by_header());
        assert_eq!(s.assign(&HeaderMap::new()), Assignment::NoKey);
        let mut headers = HeaderMap::new();
        headers.insert("x-user-id", HeaderValue::from_static(""));
        assert_eq!(s.assign(&headers), Assignment::NoKey);
        let pinned = sticky(
            &[("stable", 1)],
            &StickySpec {
                set_cookie: true,
                ..StickySpec::default()
            },
        );
        assert!(matches!(
            pinned.assign(&HeaderMap::new()),
            Assignment::Pinned { version: 0, set_cookie } if set_cookie.to_str().is_ok_and(|v| v.starts_with("switchyard-web="))
        ));
    }

    #[test]
    fn rejects_unusable_names() {
        let bad_header = StickySpec {
            header: Some("x user".into()),
            ..StickySpec::default()
        };
        assert!(Sticky::build("web", &bad_header, [("s", 1)].into_iter()).is_err());
        let bad_cookie = StickySpec {
            cookie: Some("a=b".into()),
            ..StickySpec::default()
        };
        assert!(Sticky::build("web", &bad_cookie, [("s", 1)].into_iter()).is_err());
        assert!(Sticky::build("web", &StickySpec::default(), [("s", 1)].into_iter()).is_err());
    }

    #[test]
    fn parses_cookie_headers() {
        assert_eq!(cookie_value(b"a=1; uid=42", b"uid"), Some(&b"42"[..]));
        assert_eq!(cookie_value(b"uidx=1;uid = 7 ", b"uid"), Some(&b"7"[..]));
        assert_eq!(cookie_value(b"a=1", b"uid"), None);
        assert_eq!(cookie_value(b"uid=", b"uid"), None);
    }
}
