//! Where requests are recorded and kept: one shard per worker thread (its
//! mutex is only ever contended by a reader), holding a tally per series for
//! the current window slice; and one store per series that shards flush
//! into — a ring of slices for windows, plus totals since it started.
//!
//! A reader first flushes every shard (swapping in fresh tallies, so a
//! recorder waits at most for a pointer swap), then reads stores only.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use quanta::Instant;

use super::tally::{micros, Outcome, Snapshot, Tally, VersionStats};

/// Index of a series in shards and stores; stable while the series lives.
pub(crate) type Slot = usize;

/// Locks, ignoring poison: a panic elsewhere must not stop measurement, and
/// every critical section here leaves the data consistent.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Keeps each shard on its own cache lines.
#[repr(align(128))]
struct Padded(Mutex<Shard>);

#[derive(Default)]
struct Shard {
    tallies: Vec<Option<Box<Tally>>>,
}

impl Shard {
    fn slot(&mut self, slot: Slot) -> &mut Option<Box<Tally>> {
        if slot >= self.tallies.len() {
            self.tallies.resize_with(slot + 1, || None);
        }
        &mut self.tallies[slot]
    }
}

thread_local! {
    static THREAD_SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}
static NEXT_THREAD_SLOT: AtomicUsize = AtomicUsize::new(0);

/// This thread's shard number (assigned round-robin on first use).
#[inline]
fn thread_slot() -> usize {
    THREAD_SLOT.with(|cell| {
        let slot = cell.get();
        if slot != usize::MAX {
            return slot;
        }
        let slot = NEXT_THREAD_SLOT.fetch_add(1, Ordering::Relaxed);
        cell.set(slot);
        slot
    })
}

/// One series' flushed data.
pub(crate) struct Store {
    pub(crate) route: Arc<str>,
    pub(crate) version: Arc<str>,
    pub(crate) created: Instant,
    state: Mutex<StoreState>,
}

struct StoreState {
    totals: Tally,
    /// Slot `epoch % ring.len()`; each tally knows its epoch.
    ring: Vec<Option<Box<Tally>>>,
}

impl Store {
    pub(crate) fn new(route: Arc<str>, version: Arc<str>, slices: usize) -> Store {
        Store {
            route,
            version,
            created: Instant::now(),
            state: Mutex::new(StoreState {
                totals: Tally::new(0),
                ring: (0..slices).map(|_| None).collect(),
            }),
        }
    }

    fn absorb(&self, tally: Box<Tally>, now_epoch: u64) {
        let mut state = lock(&self.state);
        state.totals.add(&tally);
        let slices = state.ring.len() as u64;
        if tally.epoch + slices <= now_epoch {
            return; // older than any window
        }
        let slot = &mut state.ring[(tally.epoch % slices) as usize];
        match slot {
            Some(kept) if kept.epoch == tally.epoch => kept.add(&tally),
            Some(kept) if kept.epoch > tally.epoch => {}
            _ => *slot = Some(tally),
        }
    }
}

pub(crate) struct Core {
    origin: Instant,
    slice_us: u64,
    slices: usize,
    /// A power of two long: a thread's shard is `slot & (len - 1)`.
    shards: Box<[Padded]>,
    stores: ArcSwap<Vec<Option<Arc<Store>>>>,
}

impl Core {
    pub(crate) fn new(slice: Duration, slices: usize, shards: usize) -> Core {
        Core {
            origin: Instant::now(),
            slice_us: (slice.as_micros() as u64).max(1),
            slices: slices.max(1),
            shards: (0..shards.max(1).next_power_of_two())
                .map(|_| Padded(Mutex::new(Shard::default())))
                .collect(),
            stores: ArcSwap::from_pointee(Vec::new()),
        }
    }

    pub(crate) fn slices(&self) -> usize {
        self.slices
    }

    pub(crate) fn slice(&self) -> Duration {
        Duration::from_micros(self.slice_us)
    }

    /// µs from the origin to `at`.
    #[inline]
    fn offset(&self, at: Instant) -> u64 {
        micros(at.saturating_duration_since(self.origin))
    }

    #[inline]
    fn epoch(&self, at: Instant) -> u64 {
        self.offset(at) / self.slice_us
    }

    /// Records one finished request into this thread's shard.
    #[inline]
    pub(crate) fn record(&self, slot: Slot, outcome: &Outcome) {
        let at = self.offset(outcome.finished);
        let shard = &self.shards[thread_slot() & (self.shards.len() - 1)].0;
        {
            let mut shard = lock(shard);
            if let Some(tally) = shard.slot(slot) {
                if (tally.from_us..tally.until_us).contains(&at) {
                    tally.record(outcome);
                    return;
                }
                if tally.is_empty() {
                    tally.set_epoch(at / self.slice_us, self.slice_us);
                    tally.record(outcome);
                    return;
                }
            }
        }
        self.record_in_new_slice(shard, slot, at / self.slice_us, outcome);
    }

    /// First request of a series on this shard, or of a new slice: the new
    /// tally is allocated and the full one flushed outside the lock.
    #[cold]
    fn record_in_new_slice(&self, shard: &Mutex<Shard>, slot: Slot, epoch: u64, o: &Outcome) {
        let mut fresh = Box::new(Tally::new(epoch));
        fresh.set_epoch(epoch, self.slice_us);
        fresh.record(o);
        let full = lock(shard).slot(slot).replace(fresh);
        if let Some(full) = full.filter(|t| !t.is_empty()) {
            if let Some(store) = self.store(slot) {
                store.absorb(full, epoch);
            }
        }
    }

    /// Moves every shard's data into the stores.
    pub(crate) fn flush(&self) {
        let now_epoch = self.epoch(Instant::now());
        for shard in self.shards.iter() {
            let shard = &shard.0;
            let used: Vec<Slot> = lock(shard)
                .tallies
                .iter()
                .enumerate()
                .filter(|(_, tally)| tally.as_ref().is_some_and(|t| !t.is_empty()))
                .map(|(slot, _)| slot)
                .collect();
            if used.is_empty() {
                continue;
            }
            let mut fresh: Vec<Box<Tally>> = used.iter().map(|_| Box::new(Tally::new(0))).collect();
            let mut full = Vec::with_capacity(used.len());
            {
                let mut shard = lock(shard);
                for &slot in &used {
                    let Some(tally) = shard.slot(slot) else {
                        continue;
                    };
                    if tally.is_empty() {
                        continue;
                    }
                    if let Some(mut replacement) = fresh.pop() {
                        replacement.set_epoch(tally.epoch, self.slice_us);
                        std::mem::swap(tally, &mut replacement);
                        full.push((slot, replacement));
                    }
                }
            }
            for (slot, tally) in full {
                if let Some(store) = self.store(slot) {
                    store.absorb(tally, now_epoch);
                }
            }
        }
    }

    pub(crate) fn store(&self, slot: Slot) -> Option<Arc<Store>> {
        self.stores.load().get(slot).and_then(Clone::clone)
    }

    /// Publishes the series table (the directory owns the master copy).
    pub(crate) fn publish(&self, stores: Vec<Option<Arc<Store>>>) {
        self.stores.store(Arc::new(stores));
    }

    /// Drops whatever shards still hold for a retired slot, before reuse.
    pub(crate) fn clear(&self, slot: Slot) {
        for shard in self.shards.iter() {
            if let Some(tally) = lock(&shard.0).tallies.get_mut(slot) {
                *tally = None;
            }
        }
    }

    /// The figures of `store` over the slices covering the last `window`
    /// (the current slice included). Call [`Core::flush`] first.
    pub(crate) fn window(&self, store: &Store, window: Duration, now: Instant) -> VersionStats {
        let (sum, covered) = self.window_tally(store, window, now);
        sum.stats(covered)
    }

    /// The requests of [`Core::window`] and the time they cover.
    pub(crate) fn window_tally(
        &self,
        store: &Store,
        window: Duration,
        now: Instant,
    ) -> (Tally, Duration) {
        let now_epoch = self.epoch(now);
        let wanted = (window.as_micros() as u64).div_ceil(self.slice_us);
        let count = wanted.clamp(1, self.slices as u64);
        let first = (now_epoch + 1).saturating_sub(count);
        let mut sum = Tally::new(now_epoch);
        {
            let state = lock(&store.state);
            for tally in state.ring.iter().flatten() {
                if (first..=now_epoch).contains(&tally.epoch) {
                    sum.add(tally);
                }
            }
        }
        let start = (self.origin + Duration::from_micros(first * self.slice_us)).max(store.created);
        (sum, now.saturating_duration_since(start))
    }

    /// Totals of `store` now. Call [`Core::flush`] first.
    pub(crate) fn snapshot(&self, store: &Store) -> Snapshot {
        let tally = lock(&store.state).totals.clone();
        Snapshot {
            at: std::time::Instant::now(),
            tally,
        }
    }

    /// Reads the totals under the store's lock (export: no copy).
    pub(crate) fn with_totals<R>(&self, store: &Store, read: impl FnOnce(&Tally) -> R) -> R {
        read(&lock(&store.state).totals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: u16, at: Instant) -> Outcome {
        Outcome {
            status,
            upstream_error: None,
            headers: Duration::from_millis(2),
            last_byte: Duration::from_millis(3),
            aborted: false,
            finished: at,
        }
    }

    fn core_with_store(slice: Duration, slices: usize) -> (Core, Arc<Store>) {
        let core = Core::new(slice, slices, 4);
        let store = Arc::new(Store::new("r".into(), "v".into(), slices));
        core.publish(vec![Some(Arc::clone(&store))]);
        (core, store)
    }

    #[test]
    fn windows_keep_only_recent_slices() {
        let (core, store) = core_with_store(Duration::from_secs(10), 6);
        let origin = core.origin;
        // 5 requests in slice 0, 3 in slice 3, 2 in slice 8.
        for _ in 0..5 {
            core.record(0, &outcome(200, origin + Duration::from_secs(1)));
        }
        for _ in 0..3 {
            core.record(0, &outcome(500, origin + Duration::from_secs(31)));
        }
        for _ in 0..2 {
            core.record(0, &outcome(200, origin + Duration::from_secs(81)));
        }
        core.flush();
        let now = origin + Duration::from_secs(85);
        let minute = core.window(&store, Duration::from_secs(60), now);
        assert_eq!(minute.requests, 5, "slices 3..=8");
        assert_eq!(minute.errors, 3);
        let ten = core.window(&store, Duration::from_secs(10), now);
        assert_eq!(ten.requests, 2);
        assert_eq!(core.snapshot(&store).tally.requests(), 10);
        let asked_too_much = core.window(&store, Duration::from_secs(600), now);
        assert_eq!(asked_too_much.requests, 5, "clamped to the ring");
    }

    #[test]
    fn threads_record_into_their_own_shards() {
        let (core, store) = core_with_store(Duration::from_secs(10), 6);
        let core = Arc::new(core);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let core = Arc::clone(&core);
                std::thread::spawn(move || {
                    for _ in 0..1_000 {
                        core.record(0, &outcome(200, Instant::now()));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("recorder");
        }
        core.flush();
        assert_eq!(core.snapshot(&store).tally.requests(), 4_000);
        core.flush();
        assert_eq!(
            core.snapshot(&store).tally.requests(),
            4_000,
            "flush is idempotent"
        );
    }

    #[test]
    fn cleared_slot_forgets_shard_data() {
        let (core, store) = core_with_store(Duration::from_secs(10), 6);
        core.record(0, &outcome(200, Instant::now()));
        core.clear(0);
        core.flush();
        assert_eq!(core.snapshot(&store).tally.requests(), 0);
    }
}
