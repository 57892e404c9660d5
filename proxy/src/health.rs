//! Endpoint health as the data plane uses it: whether an endpoint may be
//! picked, fed by active checks (the control plane marks endpoints up or
//! down) and by passive outlier detection (consecutive connect errors or 5xx
//! answers eject an endpoint for a growing backoff, as Envoy's outlier
//! detection does).
//!
//! Health belongs to an endpoint address, not to a table: the registry hands
//! every table built for the same address the same [`EndpointHealth`], so a
//! table swap neither forgets an ejection nor resets a check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Passive ejection settings of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierPolicy {
    /// Consecutive failures (connect errors or 5xx) that eject an endpoint.
    pub consecutive_failures: u32,
    /// First ejection length; each further ejection of the same endpoint
    /// lasts this times the number of ejections so far.
    pub base_ejection: Duration,
    /// Longest ejection.
    pub max_ejection: Duration,
    /// Most of a version's endpoints that may be ejected at once, in percent
    /// (at least one endpoint may always be ejected).
    pub max_ejection_percent: u8,
}

impl Default for OutlierPolicy {
    fn default() -> Self {
        OutlierPolicy {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

/// Active health checks of a route's endpoints (run by the control plane;
/// the data plane only carries them with the table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckSpec {
    /// Path of the HTTP GET; any 2xx is healthy.
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive passes that bring a down endpoint back.
    pub healthy_threshold: u32,
    /// Consecutive failures that take an endpoint down.
    pub unhealthy_threshold: u32,
}

/// The health of one endpoint address.
#[derive(Debug)]
pub struct EndpointHealth {
    address: String,
    epoch: Instant,
    /// Set by active checks.
    active_down: AtomicBool,
    /// Milliseconds since `epoch` until which the endpoint is ejected; 0: not.
    ejected_until: AtomicU64,
    consecutive_failures: AtomicU32,
    ejections: AtomicU32,
}

impl EndpointHealth {
    fn new(address: &str, epoch: Instant) -> EndpointHealth {
        EndpointHealth {
            address: address.to_owned(),
            epoch,
            active_down: AtomicBool::new(false),
            ejected_until: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether requests may go here. Costs two relaxed loads when healthy.
    #[inline]
    pub fn is_available(&self) -> bool {
        if self.active_down.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        until == 0 || self.now_ms() >= until
    }

    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && self.now_ms() < until
    }

    pub fn is_active_down(&self) -> bool {
        self.active_down.load(Ordering::Relaxed)
    }

    /// Active checks: mark the endpoint up or down. Returns whether it changed.
    pub fn set_active_down(&self, down: bool) -> bool {
        self.active_down.swap(down, Ordering::Relaxed) != down
    }

    /// Passive outlier detection of one upstream exchange: no answer, or a
    /// 5xx, counts towards ejecting the endpoint; any other answer resets
    /// the count. `pool` gives the endpoint's version's (ejected endpoints,
    /// endpoints), asked only on a failure.
    #[inline]
    pub fn record_exchange<B, E>(
        &self,
        policy: &OutlierPolicy,
        result: &Result<http::Response<B>, E>,
        pool: impl FnOnce() -> (usize, usize),
    ) {
        let failed = match result {
            Ok(response) => response.status().is_server_error(),
            Err(_) => true,
        };
        if failed {
            let (ejected, endpoints) = pool();
            self.record_failure(policy, ejected, endpoints);
        } else {
            self.record_success();
        }
    }

    /// A request here succeeded.
    #[inline]
    pub fn record_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        // An ejection that has run out: clear it so the fast path in
        // `is_available` skips the clock again.
        if self.ejected_until.load(Ordering::Relaxed) != 0 && !self.is_ejected() {
            self.ejected_until.store(0, Ordering::Relaxed);
        }
    }

    /// A request here failed (connect error or 5xx). Returns whether the
    /// endpoint is now ejected. `ejected_in_pool` counts the pool's endpoints
    /// currently ejected, `pool` its size.
    pub fn record_failure(
        &self,
        policy: &OutlierPolicy,
        ejected_in_pool: usize,
        pool: usize,
    ) -> bool {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < policy.consecutive_failures || self.is_ejected() {
            return false;
        }
        let allowed = (pool * usize::from(policy.max_ejection_percent) / 100).max(1);
        if ejected_in_pool >= allowed {
            return false;
        }
        let ejections = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let length = policy
            .base_ejection
            .saturating_mul(ejections)
            .min(policy.max_ejection);
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(length.as_millis()).unwrap_or(u64::MAX))
            .max(1);
        self.ejected_until.store(until, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        tracing::warn!(endpoint = %self.address, ?length, "endpoint ejected after {failures} consecutive failures");
        true
    }
}

/// Hands out one [`EndpointHealth`] per address for as long as some table
/// uses it.
#[derive(Debug)]
pub struct HealthRegistry {
    epoch: Instant,
    endpoints: Mutex<HashMap<String, Weak<EndpointHealth>>>,
}

impl Default for HealthRegistry {
    fn default() -> Self {
        HealthRegistry {
            epoch: Instant::now(),
            endpoints: Mutex::new(HashMap::new()),
        }
    }
}

impl HealthRegistry {
    /// The health of `address`, shared with every other table that has it.
    pub fn get(&self, address: &str) -> Arc<EndpointHealth> {
        let mut endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(existing) = endpoints.get(address).and_then(Weak::upgrade) {
            return existing;
        }
        endpoints.retain(|_, health| health.strong_count() > 0);
        let health = Arc::new(EndpointHealth::new(address, self.epoch));
        endpoints.insert(address.to_owned(), Arc::downgrade(&health));
        health
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OutlierPolicy {
        OutlierPolicy {
            consecutive_failures: 3,
            base_ejection: Duration::from_millis(100),
            max_ejection: Duration::from_millis(250),
            max_ejection_percent: 50,
        }
    }

    #[test]
    fn consecutive_failures_eject_and_success_resets() {
        let registry = HealthRegistry::default();
        let health = registry.get("127.0.0.1:1");
        assert!(!health.record_failure(&policy(), 0, 2));
        health.record_success();
        assert!(!health.record_failure(&policy(), 0, 2));
        assert!(!health.record_failure(&policy(), 0, 2));
        assert!(health.is_available());
        assert!(health.record_failure(&policy(), 0, 2));
        assert!(!health.is_available());
    }

    #[test]
    fn ejection_grows_and_expires() {
        let registry = HealthRegistry::default();
        let health = registry.get("127.0.0.1:1");
        for _ in 0..3 {
            health.record_failure(&policy(), 0, 1);
        }
        assert!(health.is_ejected());
        std::thread::sleep(Duration::from_millis(120));
        assert!(health.is_available());
        for _ in 0..3 {
            health.record_failure(&policy(), 0, 1);
        }
        // Second ejection: 200 ms.
        std::thread::sleep(Duration::from_millis(120));
        assert!(!health.is_available());
        std::thread::sleep(Duration::from_millis(100));
        assert!(health.is_available());
    }

    #[test]
    fn share_cap_limits_ejections() {
        let registry = HealthRegistry::default();
        let health = registry.get("127.0.0.1:1");
        for _ in 0..3 {
            // 1 of 2 already ejected, 50 % cap: no more.
            assert!(!health.record_failure(&policy(), 1, 2));
        }
        assert!(health.is_available());
    }

    #[test]
    fn exchanges_count_5xx_and_errors_as_failures() {
        let registry = HealthRegistry::default();
        let health = registry.get("127.0.0.1:1");
        let answer = |status: u16| -> Result<http::Response<()>, ()> {
            let mut response = http::Response::new(());
            *response.status_mut() = http::StatusCode::from_u16(status).expect("status");
            Ok(response)
        };
        let pool = || (0, 2);
        health.record_exchange(&policy(), &answer(503), pool);
        health.record_exchange(&policy(), &Err::<http::Response<()>, ()>(()), pool);
        // A 4xx is the client's problem: it resets the count.
        health.record_exchange(&policy(), &answer(404), pool);
        health.record_exchange(&policy(), &answer(500), pool);
        health.record_exchange(&policy(), &answer(502), pool);
        assert!(health.is_available());
        health.record_exchange(&policy(), &answer(500), pool);
        assert!(health.is_ejected());
    }

    #[test]
    fn registry_shares_by_address() {
        let registry = HealthRegistry::default();
        let a = registry.get("127.0.0.1:1");
        let b = registry.get("127.0.0.1:1");
        assert!(Arc::ptr_eq(&a, &b));
        a.set_active_down(true);
        assert!(!b.is_available());
    }
}
