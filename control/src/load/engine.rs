//! The sending loops. Each worker owns one connection per target and
//! records into its own [`Recorder`]:
//!
//! - open loop (`--rate`): request `j` of the run is due at `start + j /
//!   rate`, whoever sends it; its latency counts from that intended time,
//!   so a stall shows in every request that queued behind it (no
//!   coordinated omission). A send more than [`LATE`] after its time is
//!   counted: beyond 1 % the run says the generator could not hold the
//!   rate. Sends are released by a pacer thread ([`pace`]) sleeping on
//!   the OS clock: tokio's timer fires on millisecond ticks, so sleeping
//!   on it until each intended time made sends 0.5-1 ms late on average,
//!   and that lateness counted in every latency.
//! - closed loop: each worker sends its next request when the last one
//!   ended; latency counts from the send.
//!
//! With `--compare`, requests alternate between the two targets in blocks
//! of `block` requests (default 1), each pair of blocks in a random order,
//! so both see the same moments of the machine and neither is tied to a
//! phase of the clock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderName;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::record::Recorder;
use super::target::{Connection, Failure, Target};

/// A send this much behind its intended time is late.
pub const LATE: Duration = Duration::from_millis(2);

/// What every worker shares.
pub struct Run {
    pub targets: Vec<Target>,
    pub version_header: HeaderName,
    /// Open loop: requests per second over all workers.
    pub rate: Option<f64>,
    pub timeout: Duration,
    pub block: u64,
    /// When the run (warm-up included) began.
    pub start: Instant,
    /// Requests before this are sent but not recorded.
    pub warmup: Duration,
    /// Stop issuing at this time …
    pub deadline: Instant,
    /// … or after this many recorded requests.
    pub limit: Option<u64>,
    /// Next request index.
    next: AtomicU64,
    /// Requests sent after the warm-up (for `--requests`).
    counted: AtomicU64,
    pub late: AtomicU64,
    /// Open loop: one permit per request whose intended time has come,
    /// added by [`pace`]; closed when no more are due.
    due: Semaphore,
    /// The latest recorded send, µs after `start` (the measured window
    /// ends there: a generator that fell behind shows a lower rate).
    last_send: AtomicU64,
    pub stop: AtomicBool,
}

impl Run {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        targets: Vec<Target>,
        version_header: HeaderName,
        rate: Option<f64>,
        timeout: Duration,
        block: u64,
        warmup: Duration,
        duration: Duration,
        limit: Option<u64>,
    ) -> Run {
        let start = Instant::now();
        Run {
            targets,
            version_header,
            rate,
            timeout,
            block: block.max(1),
            start,
            warmup,
            deadline: start + warmup + duration,
            limit,
            next: AtomicU64::new(0),
            counted: AtomicU64::new(0),
            late: AtomicU64::new(0),
            due: Semaphore::new(0),
            last_send: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        }
    }

    pub fn sent(&self) -> u64 {
        self.counted.load(Ordering::Relaxed)
    }

    /// From the end of the warm-up to the last recorded send.
    pub fn measured(&self) -> Duration {
        Duration::from_micros(self.last_send.load(Ordering::Relaxed)).saturating_sub(self.warmup)
    }

    /// The next request to send: its index and intended time, or `None`
    /// when the run is over.
    fn claim(&self) -> Option<(u64, Instant)> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        let j = self.next.fetch_add(1, Ordering::Relaxed);
        let intended = match self.rate {
            Some(rate) => self.start + Duration::from_secs_f64(j as f64 / rate),
            None => Instant::now(),
        };
        if intended >= self.deadline {
            return None;
        }
        if intended >= self.start + self.warmup {
            let counted = self.counted.fetch_add(1, Ordering::Relaxed);
            if self.limit.is_some_and(|limit| counted >= limit) {
                self.stop.store(true, Ordering::Relaxed);
                return None;
            }
        }
        Some((j, intended))
    }

    /// Blocks go in rounds of one block per target; each round's order is
    /// drawn from the round's number. A fixed order would tie each target to
    /// a phase of the clock: at `--rate 400` with blocks of 1, the first
    /// target's sends would always fall on a millisecond tick and the
    /// second's half-way between, and the timer's rounding to ticks would
    /// show as a difference between two identical URLs.
    fn target_of(&self, j: u64) -> usize {
        let n = self.targets.len() as u64;
        if n < 2 {
            return 0;
        }
        let block = j / self.block;
        let (round, slot) = (block / n, block % n);
        let offset = StdRng::seed_from_u64(round).gen_range(0..n);
        ((slot + offset) % n) as usize
    }
}

/// One connection per target for each of `workers` workers, opened
/// together before the run starts, so that no target pays connection
/// set-up in its measured requests (with `--compare`, the target whose
/// blocks come later in the warm-up would otherwise pay more of it). A
/// connection that fails here is opened again, and counted, in the run.
pub async fn connect_all(targets: &[Target], workers: usize) -> Vec<Vec<Option<Connection>>> {
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let targets = targets.to_vec();
            tokio::spawn(async move {
                let mut connections = Vec::with_capacity(targets.len());
                for target in &targets {
                    connections.push(target.connect().await.ok());
                }
                connections
            })
        })
        .collect();
    let mut all = Vec::with_capacity(workers);
    for task in tasks {
        all.push(
            task.await
                .unwrap_or_else(|_| targets.iter().map(|_| None).collect()),
        );
    }
    all
}

/// One worker: until the run ends, claims requests and sends them over
/// `connections` (one per target; `None`: opened on first use).
pub async fn worker(
    run: Arc<Run>,
    recorder: Arc<Mutex<Recorder>>,
    mut connections: Vec<Option<Connection>>,
) {
    connections.resize_with(run.targets.len(), || None);
    loop {
        if run.rate.is_some() {
            // Closed: the run is over.
            let Ok(permit) = run.due.acquire().await else {
                break;
            };
            permit.forget();
        }
        let Some((j, intended)) = run.claim() else {
            break;
        };
        let sent = Instant::now();
        let target = run.target_of(j);
        let recorded = intended >= run.start + run.warmup;
        if recorded {
            if sent.saturating_duration_since(intended) > LATE {
                run.late.fetch_add(1, Ordering::Relaxed);
            }
            let at = u64::try_from((sent - run.start).as_micros()).unwrap_or(u64::MAX);
            run.last_send.fetch_max(at, Ordering::Relaxed);
        }
        let outcome = tokio::time::timeout(run.timeout, async {
            // A kept connection the server closed meanwhile (keep-alive
            // timeout, `Connection: close`) is replaced, not counted as a
            // failure of this request.
            let mut connection = match connections[target].take() {
                Some(mut connection) => {
                    if connection.usable().await {
                        connection
                    } else {
                        run.targets[target].connect().await?
                    }
                }
                None => run.targets[target].connect().await?,
            };
            let answer = run.targets[target]
                .send(&mut connection, &run.version_header)
                .await?;
            Ok::<_, Failure>((answer, connection))
        })
        .await
        .unwrap_or(Err(Failure::Timeout));
        let done = Instant::now();
        if !recorded {
            if let Ok((_, connection)) = outcome {
                connections[target] = Some(connection);
            }
            continue;
        }
        // Open loop: from the intended time; closed loop: from the send.
        let from = if run.rate.is_some() { intended } else { sent };
        let mut recorder = recorder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if run.rate.is_some() {
            recorder.send_lag(sent.saturating_duration_since(intended));
        }
        match outcome {
            Ok((answer, connection)) => {
                recorder.response(
                    target,
                    answer.version.as_deref(),
                    answer.status,
                    done - from,
                    done.saturating_duration_since(run.start + run.warmup),
                );
                connections[target] = Some(connection);
            }
            Err(failure) => recorder.failure(target, failure.as_str()),
        }
    }
}

/// Open loop: adds one permit to `run.due` as each request's intended time
/// comes (all that are due at each wake-up, so a rate beyond what one
/// sleep per request can follow still holds), until the run's deadline
/// or stop; then closes it, which ends the workers waiting there. Runs on
/// a thread of its own, where tokio's timer would round each wait up to
/// the next millisecond: it sleeps on the OS clock with a 1 ns timer slack,
/// as far ahead of each time as its wake-ups were late lately, and yields
/// until the time comes. How late the sends still leave is in the report
/// (`send_lag_us`).
pub fn pace(run: &Run) {
    let Some(rate) = run.rate.filter(|rate| *rate > 0.0) else {
        run.due.close();
        return;
    };
    // Linux lets a sleeping thread's timer fire up to its slack (50 µs by
    // default) late so that wake-ups coalesce; each release would be that
    // much late, and the lateness is in every open-loop latency.
    if let Err(error) = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1)) {
        tracing::debug!(%error, "the pacer keeps the default timer slack");
    }
    let start = run.start.into_std();
    let deadline = run.deadline.into_std();
    // Never sleep so long that a stop (`--requests` reached) goes unseen.
    const MAX_SLEEP: Duration = Duration::from_millis(10);
    // One preempted wake-up must not make the pacer yield-spin for long.
    const MAX_EARLY: Duration = Duration::from_micros(200);
    const MIN_SPIN_PERIOD: Duration = Duration::from_micros(100);
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut early = Duration::ZERO;
    let mut released: u64 = 0;
    while !run.stop.load(Ordering::Relaxed) {
        let next = start + Duration::from_secs_f64(released as f64 / rate);
        if next >= deadline {
            break;
        }
        let now = std::time::Instant::now();
        if next > now {
            let wait = next - now;
            if wait > early {
                // Wake `early` before `next`: how late waking up was lately
                // (a VM's idle CPU takes tens of µs to come back), then
                // yield until it is time.
                let asked = (wait - early).min(MAX_SLEEP);
                std::thread::sleep(asked);
                let overshoot = now.elapsed().saturating_sub(asked).min(MAX_EARLY);
                early = (early * 7 + overshoot) / 8;
            } else if period >= MIN_SPIN_PERIOD {
                std::thread::yield_now();
            } else {
                // Sends closer together than this: yielding until each
                // would keep a core busy, and a busy runtime wakes fast.
                std::thread::sleep(wait);
            }
            continue;
        }
        let elapsed = now.saturating_duration_since(start).as_secs_f64();
        let due = (elapsed * rate).floor() as u64 + 1;
        let add = usize::try_from(due - released)
            .unwrap_or(Semaphore::MAX_PERMITS)
            .min(Semaphore::MAX_PERMITS / 2);
        run.due.add_permits(add);
        released += add as u64;
    }
    run.due.close();
}
