//! The published form of a [`Tally`]: what the replicas of a fleet send
//! each other so that one judge can add their requests up exactly. The
//! histograms travel in HdrHistogram's V2 encoding (the library's own, so
//! a merge after the trip is the same as a merge in one process: fleet
//! percentiles, not interpolated buckets); the counters as little-endian
//! integers before them.
//!
//! Layout: `SYT1`, then 13 × u64 (status classes, upstream error kinds,
//! aborted, errors, the two latency sums), then the headers histogram and
//! the last-byte histogram, each a V2 record (its own header says its
//! length). A record from another build must match this one's HDR bounds
//! and precision, or it is refused: adding histograms of different
//! precision would not be exact.

use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;

use super::tally::{Tally, HIGHEST_US, LOWEST_US, SIGNIFICANT_DIGITS};

const MAGIC: &[u8; 4] = b"SYT1";
const COUNTERS: usize = 13;
/// A V2 record's header: cookie, payload length, normalizing offset,
/// digits, lowest, highest, integer-to-double ratio.
const V2_HEADER: usize = 4 + 4 + 4 + 4 + 8 + 8 + 8;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("not a switchyard tally (no SYT1 mark): published by another program or version")]
    Magic,
    #[error("the tally is cut short: {0}")]
    Truncated(&'static str),
    #[error("the tally's {0} histogram has other bounds or precision than this build's (1 µs – 60 s, 3 digits): it cannot be merged exactly")]
    Bounds(&'static str),
    #[error("the tally's {which} histogram does not decode: {reason}")]
    Histogram { which: &'static str, reason: String },
    #[error("the tally has {0} trailing bytes")]
    Trailing(usize),
}

impl Tally {
    /// The bytes another replica decodes with [`Tally::decode`].
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + COUNTERS * 8 + 2 * 256);
        out.extend_from_slice(MAGIC);
        let counters = self.classes.iter().chain(&self.upstream).chain([
            &self.aborted,
            &self.errors,
            &self.headers_sum_us,
            &self.last_byte_sum_us,
        ]);
        for value in counters {
            out.extend_from_slice(&value.to_le_bytes());
        }
        let mut serializer = V2Serializer::new();
        for histogram in [&self.headers, &self.last_byte] {
            // Writing into a Vec cannot fail, and our histograms always
            // fit V2 (no normalizing offset, integer counts).
            let _ = serializer.serialize(histogram, &mut out);
        }
        out
    }

    /// A tally from [`Tally::encode`]'s bytes; anything else is refused with
    /// what was wrong (never a panic: the bytes come from the network).
    pub fn decode(bytes: &[u8]) -> Result<Tally, WireError> {
        let rest = bytes.strip_prefix(MAGIC).ok_or(WireError::Magic)?;
        if rest.len() < COUNTERS * 8 {
            return Err(WireError::Truncated("counters"));
        }
        let (counters, mut rest) = rest.split_at(COUNTERS * 8);
        let mut values = counters.chunks_exact(8).map(|chunk| {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            u64::from_le_bytes(word)
        });
        let mut next = || values.next().unwrap_or(0);
        let mut tally = Tally::new(0);
        for class in &mut tally.classes {
            *class = next();
        }
        for kind in &mut tally.upstream {
            *kind = next();
        }
        tally.aborted = next();
        tally.errors = next();
        tally.headers_sum_us = next();
        tally.last_byte_sum_us = next();
        tally.headers = histogram(&mut rest, "headers")?;
        tally.last_byte = histogram(&mut rest, "last byte")?;
        if !rest.is_empty() {
            return Err(WireError::Trailing(rest.len()));
        }
        Ok(tally)
    }
}

/// One V2 record from the front of `rest`, checked before the library
/// allocates anything for it.
fn histogram(rest: &mut &[u8], which: &'static str) -> Result<Histogram<u64>, WireError> {
    let header = rest.get(..V2_HEADER).ok_or(WireError::Truncated(which))?;
    let field = |at: usize, len: usize| {
        header[at..at + len]
            .iter()
            .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte))
    };
    let payload = usize::try_from(field(4, 4)).map_err(|_| WireError::Truncated(which))?;
    if rest.len() - V2_HEADER < payload {
        return Err(WireError::Truncated(which));
    }
    let (digits, lowest, highest) = (field(12, 4), field(16, 8), field(24, 8));
    // Ours grow to what they hold (auto-resize), never past the 60 s
    // clamp's bucket: a larger bound is not ours and would only allocate.
    if digits != u64::from(SIGNIFICANT_DIGITS)
        || lowest != LOWEST_US
        || !(2 * LOWEST_US..=HIGHEST_US.saturating_mul(4)).contains(&highest)
    {
        return Err(WireError::Bounds(which));
    }
    let mut record = &rest[..V2_HEADER + payload];
    let mut decoded: Histogram<u64> =
        Deserializer::new()
            .deserialize(&mut record)
            .map_err(|e| WireError::Histogram {
                which,
                reason: format!("{e:?}"),
            })?;
    decoded.auto(true);
    *rest = &rest[V2_HEADER + payload..];
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::error::UpstreamErrorKind;
    use crate::metrics::Outcome;

    fn tally(latencies_ms: &[u64], status: u16) -> Tally {
        let mut tally = Tally::new(0);
        for ms in latencies_ms {
            tally.record(&Outcome {
                status,
                upstream_error: (status == 502).then_some(UpstreamErrorKind::Reset),
                headers: Duration::from_millis(*ms),
                last_byte: Duration::from_millis(ms + 1),
                aborted: false,
                finished: quanta::Instant::now(),
            });
        }
        tally
    }

    #[test]
    fn a_round_trip_keeps_every_count_and_merges_exactly() {
        let a = tally(&(1..=500).collect::<Vec<_>>(), 200);
        let b = tally(&[2_000, 3_000, 4_000], 502);
        let a2 = Tally::decode(&a.encode()).expect("decodes");
        let b2 = Tally::decode(&b.encode()).expect("decodes");
        assert_eq!(a2.classes, a.classes);
        assert_eq!(b2.upstream, b.upstream);
        assert_eq!(a2.headers_sum_us, a.headers_sum_us);
        let mut here = a.clone();
        here.add(&b);
        let mut there = a2;
        there.add(&b2);
        let (here, there) = (
            here.stats(Duration::from_secs(1)),
            there.stats(Duration::from_secs(1)),
        );
        assert_eq!(here, there, "a merge after the trip is the same merge");
        assert_eq!(there.requests, 503);
        assert_eq!(there.errors, 3);
        // A sliver of the compressed size of the counts array.
        assert!(b.encode().len() < 300, "{}", b.encode().len());
    }

    #[test]
    fn bad_bytes_are_refused_with_the_reason() {
        let good = tally(&[5, 6, 7], 200).encode();
        assert_eq!(Tally::decode(b"nope").err(), Some(WireError::Magic));
        for cut in [10, 4 + 13 * 8 + 3, good.len() - 1] {
            assert!(
                matches!(
                    Tally::decode(&good[..cut]),
                    Err(WireError::Truncated(_) | WireError::Histogram { .. })
                ),
                "cut at {cut}"
            );
        }
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(Tally::decode(&longer).err(), Some(WireError::Trailing(1)));
        // Another precision: refused, not merged inexactly.
        let mut other = good.clone();
        other[4 + 13 * 8 + 15] = 2;
        assert_eq!(
            Tally::decode(&other).err(),
            Some(WireError::Bounds("headers"))
        );
        // A payload length past the end is caught before any allocation.
        let mut huge = good;
        huge[4 + 13 * 8 + 4..4 + 13 * 8 + 8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            Tally::decode(&huge).err(),
            Some(WireError::Truncated("headers"))
        );
    }
}
