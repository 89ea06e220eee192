//! One server's health verdict, from active checks: `rise` successes in a row bring it up,
//! `fall` failures in a row take it down, so a flapping server does not flap the pool.
//!
//! Written by the server's single check task, read by every request: plain atomics suffice.
//! The record of recent checks (for the status page) sits behind a lock that only the check
//! task and the admin API take, never a request.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Checks remembered per server for the status page's latency line.
pub const RECENT_CHECKS: usize = 30;

/// What the proxy knows about a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No verdict yet (or no health check configured): used.
    Unknown,
    Up,
    Down,
}

/// A state change worth telling someone about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    WentUp,
    WentDown,
}

#[derive(Debug)]
pub struct ServerHealth {
    state: AtomicU8,
    successes: AtomicU32,
    failures: AtomicU32,
    checks: Mutex<CheckHistory>,
}

/// One active check's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRecord {
    pub at: SystemTime,
    pub latency: Duration,
    /// Why it failed; `None` when it passed.
    pub error: Option<String>,
}

/// The last check and the latencies of the recent ones (`None` for a failed check), oldest
/// first.
#[derive(Debug, Clone, Default)]
pub struct CheckHistory {
    pub last: Option<CheckRecord>,
    pub recent: VecDeque<Option<Duration>>,
}

// === impl Health ===

impl Health {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Health::Up,
            2 => Health::Down,
            _ => Health::Unknown,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Health::Unknown => 0,
            Health::Up => 1,
            Health::Down => 2,
        }
    }

    /// Whether requests may go to a server in this state.
    pub fn is_usable(self) -> bool {
        self != Health::Down
    }
}

// === impl ServerHealth ===

impl Default for ServerHealth {
    fn default() -> Self {
        Self::new(Health::Unknown)
    }
}

impl ServerHealth {
    pub fn new(initial: Health) -> Self {
        Self {
            state: AtomicU8::new(initial.as_u8()),
            successes: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            checks: Mutex::default(),
        }
    }

    /// Remembers one check for the status page.
    pub fn remember(&self, record: CheckRecord) {
        let Ok(mut checks) = self.checks.lock() else {
            return;
        };
        if checks.recent.len() == RECENT_CHECKS {
            checks.recent.pop_front();
        }
        let latency = record.error.is_none().then_some(record.latency);
        checks.recent.push_back(latency);
        checks.last = Some(record);
    }

    /// The checks remembered so far.
    pub fn history(&self) -> CheckHistory {
        self.checks.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn get(&self) -> Health {
        Health::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Records one check result and returns the transition it caused, if any. An unknown
    /// server takes its first verdict after `rise` successes or `fall` failures.
    pub fn record(&self, healthy: bool, rise: u32, fall: u32) -> Option<Transition> {
        let (streak, other) = if healthy {
            (&self.successes, &self.failures)
        } else {
            (&self.failures, &self.successes)
        };
        other.store(0, Ordering::Relaxed);
        let count = streak.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let current = self.get();
        let next = match (healthy, current) {
            (true, Health::Up) | (false, Health::Down) => return None,
            (true, _) if count >= rise => Health::Up,
            (false, _) if count >= fall => Health::Down,
            _ => return None,
        };
        self.state.store(next.as_u8(), Ordering::Relaxed);
        match next {
            Health::Up if current == Health::Down => Some(Transition::WentUp),
            Health::Down => Some(Transition::WentDown),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passive_ejects_after_threshold_only_when_allowed() {
        let passive = PassiveState::default();
        let eject = Duration::from_secs(60);
        for _ in 0..4 {
            assert!(!passive.record_failure(5, eject, true));
        }
        passive.record_success();
        for _ in 0..4 {
            assert!(!passive.record_failure(5, eject, true));
        }
        assert!(
            !passive.is_ejected(),
            "a success in between resets the count"
        );
        assert!(passive.record_failure(5, eject, true));
        assert!(passive.is_ejected());
        let last = PassiveState::default();
        for _ in 0..10 {
            assert!(
                !last.record_failure(5, eject, false),
                "the last usable server stays in"
            );
        }
        assert!(!last.is_ejected());
    }

    #[test]
    fn fall_failures_take_it_down_and_rise_successes_bring_it_back() {
        let health = ServerHealth::default();
        assert_eq!(health.record(false, 2, 3), None);
        assert_eq!(health.record(false, 2, 3), None);
        assert_eq!(
            health.get(),
            Health::Unknown,
            "still used after two failures"
        );
        assert_eq!(health.record(false, 2, 3), Some(Transition::WentDown));
        assert_eq!(health.record(true, 2, 3), None);
        assert_eq!(health.get(), Health::Down);
        assert_eq!(health.record(true, 2, 3), Some(Transition::WentUp));
        assert_eq!(health.get(), Health::Up);
    }

    #[test]
    fn the_history_keeps_the_last_check_and_a_bounded_line_of_latencies() {
        let health = ServerHealth::default();
        let check = |ms: u64, error: Option<&str>| CheckRecord {
            at: SystemTime::now(),
            latency: Duration::from_millis(ms),
            error: error.map(str::to_owned),
        };
        for ms in 0..RECENT_CHECKS as u64 + 5 {
            health.remember(check(ms, None));
        }
        health.remember(check(7, Some("connect failed")));
        let history = health.history();
        assert_eq!(history.recent.len(), RECENT_CHECKS);
        assert_eq!(
            history.recent.front(),
            Some(&Some(Duration::from_millis(6)))
        );
        assert_eq!(
            history.recent.back(),
            Some(&None),
            "a failed check has no latency"
        );
        assert_eq!(
            history.last.and_then(|l| l.error).as_deref(),
            Some("connect failed")
        );
    }

    #[test]
    fn a_flapping_server_does_not_flap() {
        let health = ServerHealth::new(Health::Up);
        for _ in 0..50 {
            assert_eq!(health.record(false, 2, 3), None);
            assert_eq!(health.record(true, 2, 3), None);
        }
        assert_eq!(health.get(), Health::Up);
    }
}

/// Passive health of one server: failures seen by real requests. Enough of them in a row
/// take the server out of rotation for a while (ejection), without waiting for active checks.
#[derive(Debug)]
pub struct PassiveState {
    failures: AtomicU32,
    /// Milliseconds after `origin` until which the server is ejected.
    ejected_until_ms: AtomicU64,
    origin: Instant,
}

impl Default for PassiveState {
    fn default() -> Self {
        Self {
            failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }
}

impl PassiveState {
    pub fn is_ejected(&self) -> bool {
        self.now_ms() < self.ejected_until_ms.load(Ordering::Relaxed)
    }

    pub fn record_success(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    /// Counts a failure; returns true when it reaches `threshold` and `may_eject` allows
    /// ejecting, in which case the server is out of rotation for `eject`.
    pub fn record_failure(&self, threshold: u32, eject: Duration, may_eject: bool) -> bool {
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if threshold == 0 || failures < threshold || !may_eject {
            return false;
        }
        self.failures.store(0, Ordering::Relaxed);
        let until = self.now_ms().saturating_add(eject.as_millis() as u64);
        self.ejected_until_ms.store(until, Ordering::Relaxed);
        true
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }
}
