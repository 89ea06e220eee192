//! Per-client-IP rate limits (`[rate_limits.NAME]`): GCRA through governor, keyed by the
//! client address (IPv6 by its /64, or the configured prefix, since one host owns a whole
//! prefix). The client address is the one `client_ip` resolved, so a CDN's header counts only
//! from trusted proxies.
//!
//! Memory stays bounded: idle keys are dropped by `housekeeping` (run every few seconds), and
//! once a limiter holds `max_keys` keys every further client shares one overflow bucket.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use ipnet::IpNet;

use crate::config::RateLimitConfig;

type KeyedLimiter<C> =
    RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, C, StateInformationMiddleware>;

/// The key every client shares once the table is full.
const OVERFLOW_KEY: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// One configured limit and its per-client state.
pub struct Limiter<C: Clock = DefaultClock> {
    pub config: RateLimitConfig,
    limiter: KeyedLimiter<C>,
    clock: C,
}

impl<C: Clock> std::fmt::Debug for Limiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What the limiter says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The client is on the allow list: no limit, no headers.
    Exempt,
    Allowed(RateLimitInfo),
    Rejected(RateLimitInfo),
}

/// The numbers behind the `RateLimit-*` and `Retry-After` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitInfo {
    /// The burst: how many requests fit in a full bucket.
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
    /// Seconds until the next request will be admitted (rejections only).
    pub retry_after_secs: u64,
}

// === impl RateLimitInfo ===

impl RateLimitInfo {
    /// `RateLimit-Limit`, `-Remaining` and `-Reset` (draft-ietf-httpapi-ratelimit-headers):
    /// the burst, what is left of it, and seconds until it is full again.
    pub fn headers(&self) -> [(&'static str, String); 3] {
        [
            ("ratelimit-limit", self.limit.to_string()),
            ("ratelimit-remaining", self.remaining.to_string()),
            ("ratelimit-reset", self.reset_secs.to_string()),
        ]
    }
}

// === impl Limiter ===

impl Limiter<DefaultClock> {
    pub fn new(config: RateLimitConfig) -> Self {
        Self::with_clock(config, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Limiter<C> {
    pub fn with_clock(config: RateLimitConfig, clock: C) -> Self {
        let limiter: KeyedLimiter<C> = RateLimiter::new(
            quota(&config),
            DefaultKeyedStateStore::default(),
            clock.clone(),
        );
        Self {
            config,
            limiter,
            clock,
        }
    }

    /// Counts one request from `client` and decides.
    pub fn check(&self, client: IpAddr) -> Decision {
        if self
            .config
            .allow
            .iter()
            .any(|net: &IpNet| net.contains(&client))
        {
            return Decision::Exempt;
        }
        let mut key = self.key(client);
        if self.limiter.len() >= self.config.max_keys {
            key = OVERFLOW_KEY;
        }
        let interval = self.config.interval;
        let limit = self.config.burst.get();
        match self.limiter.check_key(&key) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                Decision::Allowed(RateLimitInfo {
                    limit,
                    remaining,
                    reset_secs: ceil_secs(interval * (limit - remaining.min(limit))),
                    retry_after_secs: 0,
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Decision::Rejected(RateLimitInfo {
                    limit,
                    remaining: 0,
                    reset_secs: ceil_secs(interval * limit),
                    retry_after_secs: ceil_secs(wait).max(1),
                })
            }
        }
    }

    /// IPv4 addresses as they are; IPv6 cut to the configured prefix.
    fn key(&self, client: IpAddr) -> IpAddr {
        match client {
            IpAddr::V6(_) => {
                IpNet::new(client, self.config.ipv6_prefix).map_or(client, |net| net.trunc().addr())
            }
            v4 => v4,
        }
    }

    /// Drops keys whose bucket has refilled (they behave exactly like absent keys) and
    /// returns the memory.
    pub fn housekeeping(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

/// One request per `interval`, up to `burst` at once.
fn quota(config: &RateLimitConfig) -> Quota {
    Quota::with_period(config.interval)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(config.burst)
}

fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// Runs `housekeeping` on every limiter of the current snapshot, as a Pingora background
/// service, so that a flood of distinct addresses does not stay in memory.
pub struct LimiterHousekeeping {
    pub snapshots: std::sync::Arc<crate::snapshot::SnapshotCell>,
}

/// Often enough that idle keys do not pile up, rarely enough to cost nothing measurable.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(10);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for LimiterHousekeeping {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut ticks = tokio::time::interval(HOUSEKEEPING_EVERY);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.changed() => return,
            }
            let snapshot = self.snapshots.load();
            for limiter in &snapshot.limiters {
                limiter.housekeeping();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limiter(burst: u32, clock: &FakeRelativeClock) -> Limiter<FakeRelativeClock> {
        let config = RateLimitConfig {
            name: "api".into(),
            interval: Duration::from_millis(100), // 10/s
            burst: NonZeroU32::new(burst).unwrap(),
            ipv6_prefix: 64,
            allow: vec!["10.0.0.0/8".parse().unwrap()],
            max_keys: 1_000,
        };
        Limiter::with_clock(config, clock.clone())
    }

    fn admitted(limiter: &Limiter<FakeRelativeClock>, client: IpAddr, n: usize) -> usize {
        (0..n)
            .filter(|_| matches!(limiter.check(client), Decision::Allowed(_)))
            .count()
    }

    #[test]
    fn ten_per_second_with_burst_twenty_admits_the_burst_then_ten_per_second() {
        let clock = FakeRelativeClock::default();
        let limiter = limiter(20, &clock);
        let client: IpAddr = "203.0.113.1".parse().unwrap();
        assert_eq!(
            admitted(&limiter, client, 100),
            20,
            "the burst, then nothing"
        );
        for second in 0..5 {
            // 100 attempts spread over one second: one every 10 ms.
            let mut passed = 0;
            for _ in 0..100 {
                clock.advance(Duration::from_millis(10));
                passed += admitted(&limiter, client, 1);
            }
            assert_eq!(passed, 10, "second {second}");
        }
    }

    #[test]
    fn rejection_says_when_to_come_back() {
        let clock = FakeRelativeClock::default();
        let limiter = limiter(2, &clock);
        let client: IpAddr = "203.0.113.1".parse().unwrap();
        let Decision::Allowed(first) = limiter.check(client) else {
            panic!()
        };
        assert_eq!((first.limit, first.remaining, first.reset_secs), (2, 1, 1));
        limiter.check(client);
        let Decision::Rejected(info) = limiter.check(client) else {
            panic!("third request passed")
        };
        assert_eq!(
            (info.limit, info.remaining, info.retry_after_secs),
            (2, 0, 1)
        );
        clock.advance(Duration::from_millis(100));
        assert!(matches!(limiter.check(client), Decision::Allowed(_)));
    }

    #[test]
    fn clients_are_independent_ipv6_by_prefix_and_allow_list_is_exempt() {
        let clock = FakeRelativeClock::default();
        let limiter = limiter(3, &clock);
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let b: IpAddr = "203.0.113.2".parse().unwrap();
        assert_eq!(admitted(&limiter, a, 10), 3);
        assert_eq!(admitted(&limiter, b, 10), 3);
        let v6_one: IpAddr = "2001:db8:1:1::1".parse().unwrap();
        let v6_same_64: IpAddr = "2001:db8:1:1:ffff::9".parse().unwrap();
        assert_eq!(admitted(&limiter, v6_one, 2), 2);
        assert_eq!(
            admitted(&limiter, v6_same_64, 10),
            1,
            "same /64, same bucket"
        );
        let office: IpAddr = "10.1.2.3".parse().unwrap();
        assert!((0..100).all(|_| limiter.check(office) == Decision::Exempt));
    }

    #[test]
    fn memory_is_bounded_by_housekeeping_and_the_key_cap() {
        let clock = FakeRelativeClock::default();
        let limiter = limiter(5, &clock);
        for i in 0..5_000u32 {
            limiter.check(IpAddr::from(i.to_be_bytes()));
        }
        assert!(
            limiter.len() <= 1_001,
            "capped at max_keys plus the overflow bucket: {}",
            limiter.len()
        );
        clock.advance(Duration::from_secs(10));
        limiter.housekeeping();
        assert_eq!(limiter.len(), 0, "idle keys are dropped");
    }
}
