//! Value types the sections share, and the defaults serde needs as
//! functions: a key left out gets its default at no position in the file
//! (`0..0`), which is how errors know not to print a line for it.

use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// A duration written as `"250ms"`, `"2s"`, `"1m 30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let duration = humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "'{text}' is not a duration ({e}): write e.g. \"250ms\", \"2s\" or \"1m\""
            ))
        })?;
        if duration.is_zero() {
            return Err(serde::de::Error::custom("a duration must be above 0"));
        }
        Ok(Dur(duration))
    }
}

pub fn secs<const N: u64>() -> Dur {
    Dur(Duration::from_secs(N))
}

pub fn yes() -> bool {
    true
}

/// A key left out: its default, at no position in the file.
pub fn unset<T: Default>() -> Spanned<T> {
    Spanned::new(0..0, T::default())
}
