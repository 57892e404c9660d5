//! Weighted version pick and endpoint round-robin: the pure arithmetic of a
//! traffic split, precomputed when a table is built so a request pays one
//! atomic increment and one array read.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Largest weight one version may carry. With at most [`MAX_VERSIONS`]
/// versions this bounds a route's slot table to a few hundred KiB.
pub const MAX_WEIGHT: u32 = 10_000;
/// Versions per route (indices are stored as `u8`).
pub const MAX_VERSIONS: usize = 64;

/// Picks a version index in exact proportion to the weights over every window
/// of `slots.len()` consecutive picks.
///
/// The slot table is the sequence smooth weighted round-robin (nginx's
/// algorithm) produces over one full period, so picks are interleaved
/// (90/10 gives one canary pick in every ten, not ten in a row) and exact:
/// after `k * period` picks each version has been chosen exactly
/// `k * weight / gcd` times. Any shorter window is off by at most one pick per
/// version.
#[derive(Debug)]
pub enum WeightedPicker {
    /// Every weight is zero: nothing can be picked.
    Empty,
    /// One version carries all the weight: no counter, no contention.
    Single(usize),
    /// Several versions: a shared counter walks the precomputed slots.
    Slots { slots: Box<[u8]>, next: AtomicUsize },
}

impl WeightedPicker {
    /// Builds the picker. Weights above [`MAX_WEIGHT`] and more than
    /// [`MAX_VERSIONS`] versions are clamped: validation rejects them earlier.
    pub fn new(weights: &[u32]) -> Self {
        let weights: Vec<u32> = weights
            .iter()
            .take(MAX_VERSIONS)
            .map(|w| (*w).min(MAX_WEIGHT))
            .collect();
        let live: Vec<usize> = (0..weights.len()).filter(|i| weights[*i] > 0).collect();
        match live.as_slice() {
            [] => return WeightedPicker::Empty,
            [only] => return WeightedPicker::Single(*only),
            _ => {}
        }
        let divisor = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd);
        let reduced: Vec<i64> = weights.iter().map(|w| i64::from(*w / divisor)).collect();
        let total: i64 = reduced.iter().sum();
        let mut current = vec![0i64; reduced.len()];
        let mut slots = Vec::with_capacity(total as usize);
        for _ in 0..total {
            let mut best = 0;
            for i in 0..reduced.len() {
                current[i] += reduced[i];
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            slots.push(best as u8);
        }
        WeightedPicker::Slots {
            slots: slots.into_boxed_slice(),
            next: AtomicUsize::new(0),
        }
    }

    /// The next version index, or `None` when every weight is zero.
    #[inline]
    pub fn pick(&self) -> Option<usize> {
        match self {
            WeightedPicker::Empty => None,
            WeightedPicker::Single(index) => Some(*index),
            WeightedPicker::Slots { slots, next } => {
                let n = next.fetch_add(1, Ordering::Relaxed);
                Some(usize::from(slots[n % slots.len()]))
            }
        }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Round-robin over the endpoints of one version.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// The next index below `len` (`len` must be non-zero).
    #[inline]
    pub fn next(&self, len: usize) -> usize {
        if len == 1 {
            return 0;
        }
        self.next.fetch_add(1, Ordering::Relaxed) % len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(picker: &WeightedPicker, versions: usize, picks: usize) -> Vec<usize> {
        let mut counts = vec![0; versions];
        for _ in 0..picks {
            counts[picker.pick().expect("a version")] += 1;
        }
        counts
    }

    #[test]
    fn exact_over_each_period() {
        let picker = WeightedPicker::new(&[90, 10]);
        assert_eq!(counts(&picker, 2, 10), vec![9, 1]);
        assert_eq!(counts(&picker, 2, 10_000), vec![9_000, 1_000]);
        let picker = WeightedPicker::new(&[80, 15, 5]);
        assert_eq!(counts(&picker, 3, 20), vec![16, 3, 1]);
    }

    #[test]
    fn picks_are_interleaved() {
        let picker = WeightedPicker::new(&[50, 50]);
        let first: Vec<usize> = (0..4).map(|_| picker.pick().expect("pick")).collect();
        assert_eq!(first, vec![0, 1, 0, 1]);
    }

    #[test]
    fn zero_weight_gets_nothing() {
        let picker = WeightedPicker::new(&[0, 7, 0]);
        assert!(matches!(picker, WeightedPicker::Single(1)));
        assert_eq!(counts(&picker, 3, 100), vec![0, 100, 0]);
        let picker = WeightedPicker::new(&[3, 0, 1]);
        assert_eq!(counts(&picker, 3, 400)[1], 0);
    }

    #[test]
    fn all_zero_is_empty() {
        assert!(WeightedPicker::new(&[0, 0]).pick().is_none());
        assert!(WeightedPicker::new(&[]).pick().is_none());
    }

    #[test]
    fn coprime_large_weights() {
        let picker = WeightedPicker::new(&[9_999, 1]);
        assert_eq!(counts(&picker, 2, 10_000), vec![9_999, 1]);
    }

    #[test]
    fn round_robin_cycles() {
        let rr = RoundRobin::default();
        let seen: Vec<usize> = (0..6).map(|_| rr.next(3)).collect();
        assert_eq!(seen, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(rr.next(1), 0);
    }
}
