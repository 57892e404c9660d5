//! Benchmarks live in benches/benches; the harness adapter in compare-adapter.sh;
//! the training run of the profile-guided build in [`pgo_train`].

pub mod pgo_train;

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// For criterion's `iter_custom`: two threads run `work` `iters` times
/// each, started together; returns the wall time of the slower one, i.e.
/// the time per iteration of one thread while the other contends.
pub fn two_threads<R>(iters: u64, work: impl Fn() -> R + Sync) -> Duration {
    let barrier = Barrier::new(2);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(work());
                    }
                    start.elapsed()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("bench thread"))
            .max()
            .unwrap_or_default()
    })
}
