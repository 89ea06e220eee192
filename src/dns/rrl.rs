//! Response Rate Limiting (RRL) of UDP answers, after BIND 9's `rate-limit` and Knot's `rrl`.
//!
//! Why: over UDP the source address can be forged. Queries sent "from" a victim make us
//! send the victim our answers, larger than the queries: a reflection and amplification
//! attack. RRL notices the same response going to the same network far more often than
//! any resolver needs it and stops sending most of them. Every `slip`-th limited response
//! goes out truncated instead (TC=1, no records): a real resolver behind that network
//! retries over TCP, which cannot be forged, while a victim receives no more bytes than
//! the attacker sent. TCP answers are never limited.
//!
//! What counts as the same response (BIND 9 ARM, "Response Rate Limiting"): the client's
//! network (`ipv4_prefix`, `ipv6_prefix`) together with
//! - an answer with records: the question's name and type; an answer synthesized from a
//!   wildcard counts as the wildcard's parent, so random names under it are one response;
//! - NODATA: the name, whatever the type; a referral: the delegation point;
//! - NXDOMAIN: the zone, so random names in one zone are one response;
//! - every error (REFUSED, FORMERR, SERVFAIL, NOTIMP, BADVERS): one response.
//!
//! Accounts follow BIND's credit scheme: each (network, response) earns
//! `responses_per_second` credits a second and holds at most that many; each response costs
//! one. A response that finds the balance below one is limited and still debited, down to
//! `-window × responses_per_second`, so a flood stays limited until up to `window` after it
//! ends. The first limited response in a row slips, then every `slip`-th.
//!
//! Memory is fixed when the limiter is built: `table_size` accounts in buckets of `WAYS`,
//! each bucket behind its own lock. A new (network, response) pair takes a free slot of its
//! bucket, else one not in debt (forgetting it loses at most a second of history), else the
//! least recently used. Many pairs can make accounts be forgotten early, but a new account
//! starts with `responses_per_second` credits, never more.

use std::hash::{BuildHasher, DefaultHasher, Hash, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RecordType};

use crate::dns::resolve::Resolution;
use crate::dns::spec::RrlSpec;

/// Accounts per bucket. A lookup compares at most this many slots under one lock.
const WAYS: usize = 8;
/// Balances are kept in thousandths of a response, so that the credit for one millisecond
/// is exactly `responses_per_second`.
const ONE_RESPONSE: i64 = 1000;

/// What to do with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Under the rate, or exempt: send it.
    Send,
    /// Over the rate: send it truncated (TC=1, no records).
    Slip,
    /// Over the rate: send nothing.
    Drop,
}

/// Which responses count as one for rate limiting, without the client. Two keys are equal
/// when the responses would be "identical" in BIND's sense (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResponseKey(u64);

/// The limiter shared by every UDP thread; built from one `RrlSpec`, replaced when a reload
/// changes it.
pub struct ResponseRateLimiter {
    spec: RrlSpec,
    limits: Limits,
    ipv4_mask: u32,
    ipv6_mask: u128,
    /// Random keys per limiter: nobody outside can aim many pairs at one bucket.
    hasher: RandomState,
    /// Account times are milliseconds since this instant.
    epoch: Instant,
    buckets: Box<[Mutex<Bucket>]>,
}

/// The spec's numbers in account units.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Credit per millisecond, in thousandths of a response: `responses_per_second`.
    per_milli: i64,
    /// Full credit: `responses_per_second` responses.
    full: i64,
    /// Deepest debt: `window × responses_per_second` responses.
    debt: i64,
    slip: u8,
}

#[derive(Debug, Default)]
struct Bucket([Account; WAYS]);

/// One (client network, response) pair.
#[derive(Debug, Clone, Copy, Default)]
struct Account {
    /// Hash of the pair; 0 marks a free slot.
    id: u64,
    /// Credit in thousandths of a response, as of `last`.
    balance: i64,
    /// Milliseconds since the epoch of the last response counted.
    last: u64,
    /// Limited responses since the last slip, modulo `slip`.
    since_slip: u8,
}

// === impl ResponseKey ===

/// What the response says, for `ResponseKey`.
#[derive(Hash)]
enum Kind {
    Answer,
    NoData,
    Referral,
    NxDomain,
    Error,
}

impl ResponseKey {
    /// A response with records for `name` and `qtype`.
    pub fn answer(name: &Name, qtype: RecordType) -> Self {
        Self::digest(Kind::Answer, Some(name), Some(qtype))
    }

    /// NODATA for `name`, whatever type was asked: an empty answer has no type.
    pub fn nodata(name: &Name) -> Self {
        Self::digest(Kind::NoData, Some(name), None)
    }

    /// A referral to the child zone at `cut`.
    pub fn referral(cut: &Name) -> Self {
        Self::digest(Kind::Referral, Some(cut), None)
    }

    /// NXDOMAIN in the zone `zone`, whatever name was asked.
    pub fn nxdomain(zone: &Name) -> Self {
        Self::digest(Kind::NxDomain, Some(zone), None)
    }

    /// Any error response.
    pub fn error() -> Self {
        Self::digest(Kind::Error, None, None)
    }

    /// The key of the response `resolution` describes, for the question `qname` and
    /// `qtype`.
    pub(crate) fn of(qname: &Name, qtype: RecordType, resolution: &Resolution) -> Self {
        let owner = |rtype: RecordType| {
            resolution
                .authorities
                .iter()
                .find(|record| record.record_type() == rtype)
                .map(|record| &record.name)
        };
        // BIND counts wildcard answers "as if they were for the parent domain".
        let parent = resolution.wildcard.as_ref().map(Name::base_name);
        let name = parent.as_ref().unwrap_or(qname);
        match resolution.rcode {
            ResponseCode::NoError if !resolution.answers.is_empty() => Self::answer(name, qtype),
            ResponseCode::NoError if !resolution.authoritative => {
                Self::referral(owner(RecordType::NS).unwrap_or(qname))
            }
            ResponseCode::NoError => Self::nodata(name),
            ResponseCode::NXDomain => Self::nxdomain(owner(RecordType::SOA).unwrap_or(qname)),
            _ => Self::error(),
        }
    }

    fn digest(kind: Kind, name: Option<&Name>, qtype: Option<RecordType>) -> Self {
        // Fixed keys, so one response has one key on every thread and across reloads; the
        // table hashes it again with the limiter's random keys. The names are ours (zone
        // names, names that exist), so nobody can pick colliding ones, and a collision would
        // only make two responses share an account, as BIND's name hashes may.
        let mut hasher = DefaultHasher::new();
        kind.hash(&mut hasher);
        // Case-insensitive (RFC 4343), like `Name`'s equality.
        name.hash(&mut hasher);
        qtype.map(u16::from).hash(&mut hasher);
        Self(hasher.finish())
    }
}

// === impl ResponseRateLimiter ===

impl ResponseRateLimiter {
    /// The limiter for `spec`, or `None` when `spec` turns rate limiting off.
    pub fn new(spec: RrlSpec) -> Option<Self> {
        Self::starting_at(spec, Instant::now())
    }

    /// Like `new`, with the clock's origin given (tests move time from there).
    pub fn starting_at(spec: RrlSpec, epoch: Instant) -> Option<Self> {
        if spec.responses_per_second == 0 {
            return None;
        }
        let rate = i64::from(spec.responses_per_second);
        let window_millis = i64::try_from(spec.window.as_millis()).unwrap_or(i64::MAX);
        let limits = Limits {
            per_milli: rate,
            full: rate.saturating_mul(ONE_RESPONSE),
            debt: window_millis.saturating_mul(rate),
            slip: spec.slip,
        };
        let buckets = spec.table_size.div_ceil(WAYS).max(1);
        Some(Self {
            limits,
            ipv4_mask: prefix_mask_v4(spec.ipv4_prefix),
            ipv6_mask: prefix_mask_v6(spec.ipv6_prefix),
            hasher: RandomState::new(),
            epoch,
            buckets: (0..buckets).map(|_| Mutex::default()).collect(),
            spec,
        })
    }

    /// The spec this limiter was built from.
    pub fn spec(&self) -> &RrlSpec {
        &self.spec
    }

    /// Counts one response of kind `response` to `client` at `now` and says what to do
    /// with it.
    pub fn check(&self, client: IpAddr, response: ResponseKey, now: Instant) -> Verdict {
        if self.spec.exempt.iter().any(|net| net.contains(&client)) {
            return Verdict::Send;
        }
        let id = self.account_id(client, response);
        let now = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let Some(bucket) = usize::try_from(id % self.buckets.len() as u64)
            .ok()
            .and_then(|index| self.buckets.get(index))
        else {
            return Verdict::Send; // cannot happen: the index is below the length
        };
        // Nothing under this lock can panic, so a poisoned lock still holds sound accounts.
        let mut bucket = bucket.lock().unwrap_or_else(PoisonError::into_inner);
        match bucket.account(id, now, &self.limits) {
            Some(account) => account.debit(now, &self.limits),
            None => Verdict::Send, // cannot happen: a bucket has WAYS > 0 slots
        }
    }

    /// Accounts in use (tests check the table stays within its size).
    #[cfg(test)]
    fn accounts(&self) -> usize {
        self.buckets
            .iter()
            .map(|bucket| {
                let bucket = bucket.lock().unwrap_or_else(PoisonError::into_inner);
                bucket.0.iter().filter(|account| account.id != 0).count()
            })
            .sum()
    }

    /// Hash of the client's network and the response; never 0 (a free slot).
    fn account_id(&self, client: IpAddr, response: ResponseKey) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        match client {
            IpAddr::V4(ip) => {
                hasher.write_u8(4);
                hasher.write_u32(u32::from(ip) & self.ipv4_mask);
            }
            IpAddr::V6(ip) => {
                hasher.write_u8(6);
                hasher.write_u128(u128::from(ip) & self.ipv6_mask);
            }
        }
        hasher.write_u64(response.0);
        hasher.finish().max(1)
    }
}

impl std::fmt::Debug for ResponseRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseRateLimiter")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

fn prefix_mask_v4(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32u32.saturating_sub(u32::from(prefix)))
        .unwrap_or(0)
}

fn prefix_mask_v6(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128u32.saturating_sub(u32::from(prefix)))
        .unwrap_or(0)
}

// === impl Bucket ===

impl Bucket {
    /// The account `id`, made from a free or reclaimed slot if it has none.
    fn account(&mut self, id: u64, now: u64, limits: &Limits) -> Option<&mut Account> {
        if let Some(index) = self.0.iter().position(|account| account.id == id) {
            return self.0.get_mut(index);
        }
        // Free slots first, then accounts not in debt (as good as new within a second),
        // then the least recently used: BIND likewise keeps limited accounts longest.
        let slot = self.0.iter_mut().min_by_key(|account| {
            let class = if account.id == 0 {
                0
            } else if account.balance_at(now, limits) >= 0 {
                1
            } else {
                2
            };
            (class, account.last)
        })?;
        *slot = Account {
            id,
            balance: limits.full,
            last: now,
            since_slip: 0,
        };
        Some(slot)
    }
}

// === impl Account ===

impl Account {
    /// The balance with the credit earned since the last response, capped at full.
    fn balance_at(&self, now: u64, limits: &Limits) -> i64 {
        let elapsed = i64::try_from(now.saturating_sub(self.last)).unwrap_or(i64::MAX);
        self.balance
            .saturating_add(elapsed.saturating_mul(limits.per_milli))
            .min(limits.full)
    }

    fn debit(&mut self, now: u64, limits: &Limits) -> Verdict {
        let balance = self.balance_at(now, limits);
        if balance >= limits.full {
            self.since_slip = 0; // back to full credit: a new run of limiting starts over
        }
        self.last = self.last.max(now);
        self.balance = balance.saturating_sub(ONE_RESPONSE);
        if self.balance >= 0 {
            return Verdict::Send;
        }
        self.balance = self.balance.max(-limits.debt);
        // BIND's order: the first limited response slips, then every `slip`-th.
        if limits.slip == 0 {
            return Verdict::Drop;
        }
        let slips = self.since_slip == 0;
        self.since_slip = self.since_slip.saturating_add(1);
        if self.since_slip >= limits.slip {
            self.since_slip = 0;
        }
        if slips {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn spec(rate: u32, slip: u8) -> RrlSpec {
        RrlSpec {
            responses_per_second: rate,
            slip,
            exempt: Vec::new(),
            ..RrlSpec::default()
        }
    }

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    fn www() -> ResponseKey {
        ResponseKey::answer(&name("www.example.com."), RecordType::A)
    }

    fn client(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// `n` responses of `key` to `from`, all at `at`.
    fn burst(
        limiter: &ResponseRateLimiter,
        from: &str,
        key: ResponseKey,
        n: usize,
        at: Instant,
    ) -> Vec<Verdict> {
        (0..n)
            .map(|_| limiter.check(client(from), key, at))
            .collect()
    }

    fn count(verdicts: &[Verdict], which: Verdict) -> usize {
        verdicts.iter().filter(|v| **v == which).count()
    }

    #[test]
    fn a_burst_gets_the_rate_then_every_second_response_slips() {
        let t0 = Instant::now();
        let limiter = ResponseRateLimiter::starting_at(spec(5, 2), t0).unwrap();
        let verdicts = burst(&limiter, "192.0.2.1", www(), 11, t0);
        use Verdict::*;
        assert_eq!(
            verdicts,
            [Send, Send, Send, Send, Send, Slip, Drop, Slip, Drop, Slip, Drop]
        );
    }

    #[test]
    fn slip_zero_drops_all_and_slip_one_truncates_all() {
        let t0 = Instant::now();
        let drop_all = ResponseRateLimiter::starting_at(spec(5, 0), t0).unwrap();
        let verdicts = burst(&drop_all, "192.0.2.1", www(), 20, t0);
        assert_eq!(
            (
                count(&verdicts, Verdict::Send),
                count(&verdicts, Verdict::Drop)
            ),
            (5, 15)
        );
        let slip_all = ResponseRateLimiter::starting_at(spec(5, 1), t0).unwrap();
        let verdicts = burst(&slip_all, "192.0.2.1", www(), 20, t0);
        assert_eq!(
            (
                count(&verdicts, Verdict::Send),
                count(&verdicts, Verdict::Slip)
            ),
            (5, 15)
        );
        let slip_3 = ResponseRateLimiter::starting_at(spec(5, 3), t0).unwrap();
        let verdicts = burst(&slip_3, "192.0.2.1", www(), 11, t0);
        use Verdict::*;
        assert_eq!(verdicts[5..], [Slip, Drop, Drop, Slip, Drop, Drop]);
    }

    #[test]
    fn zero_responses_per_second_turns_the_limiter_off() {
        assert!(ResponseRateLimiter::new(spec(0, 2)).is_none());
    }

    #[test]
    fn credit_comes_back_at_the_rate() {
        let t0 = Instant::now();
        let limiter = ResponseRateLimiter::starting_at(spec(10, 2), t0).unwrap();
        assert_eq!(
            count(&burst(&limiter, "192.0.2.1", www(), 10, t0), Verdict::Send),
            10
        );
        // At 10 a second one response's credit takes 100 ms: asking at that pace is fine.
        for k in 1..=10 {
            let at = t0 + Duration::from_millis(100 * k);
            assert_eq!(
                limiter.check(client("192.0.2.1"), www(), at),
                Verdict::Send,
                "{k}"
            );
        }
        let at = t0 + Duration::from_secs(1);
        assert_ne!(limiter.check(client("192.0.2.1"), www(), at), Verdict::Send);
    }

    #[test]
    fn a_flood_stays_limited_for_the_window_after_it_stops() {
        let t0 = Instant::now();
        let limiter = ResponseRateLimiter::starting_at(spec(5, 0), t0).unwrap();
        burst(&limiter, "192.0.2.1", www(), 1000, t0);
        // The debt is capped at window (15 s) × 5: 75 responses, earned back in 15 s.
        let still_limited = t0 + Duration::from_secs(14);
        assert_eq!(
            limiter.check(client("192.0.2.1"), www(), still_limited),
            Verdict::Drop
        );
        // That one was debited as well; one more response's credit is 200 ms.
        let recovered = t0 + Duration::from_millis(15_000 + 200 + 200);
        assert_eq!(
            limiter.check(client("192.0.2.1"), www(), recovered),
            Verdict::Send
        );
    }

    #[test]
    fn each_network_and_each_response_has_its_own_account() {
        let t0 = Instant::now();
        let limiter = ResponseRateLimiter::starting_at(spec(5, 0), t0).unwrap();
        let mx = ResponseKey::answer(&name("www.example.com."), RecordType::MX);
        assert_eq!(
            count(&burst(&limiter, "192.0.2.1", www(), 3, t0), Verdict::Send),
            3
        );
        // Same /24: the same account, two credits left.
        assert_eq!(
            count(&burst(&limiter, "192.0.2.200", www(), 3, t0), Verdict::Send),
            2
        );
        // Another /24, or another response: fresh accounts.
        assert_eq!(
            count(&burst(&limiter, "192.0.3.1", www(), 5, t0), Verdict::Send),
            5
        );
        assert_eq!(
            count(&burst(&limiter, "192.0.2.1", mx, 5, t0), Verdict::Send),
            5
        );
        // IPv6 by /56: 2001:db8:0:ff::/64 and 2001:db8:0:1::/64 share 2001:db8::/56.
        assert_eq!(
            count(
                &burst(&limiter, "2001:db8:0:ff::1", www(), 3, t0),
                Verdict::Send
            ),
            3
        );
        assert_eq!(
            count(
                &burst(&limiter, "2001:db8:0:1::9", www(), 3, t0),
                Verdict::Send
            ),
            2
        );
        assert_eq!(
            count(
                &burst(&limiter, "2001:db8:0:100::1", www(), 5, t0),
                Verdict::Send
            ),
            5
        );
    }

    #[test]
    fn exempt_networks_are_never_limited() {
        let t0 = Instant::now();
        let default_exempt = RrlSpec {
            responses_per_second: 1,
            ..RrlSpec::default()
        };
        let limiter = ResponseRateLimiter::starting_at(default_exempt, t0).unwrap();
        for from in ["127.0.0.1", "127.9.9.9", "::1"] {
            assert_eq!(
                count(&burst(&limiter, from, www(), 100, t0), Verdict::Send),
                100
            );
        }
        assert_eq!(
            count(&burst(&limiter, "192.0.2.1", www(), 100, t0), Verdict::Send),
            1
        );
    }

    #[test]
    fn the_table_stays_within_its_size_and_keeps_limited_accounts() {
        let t0 = Instant::now();
        let limiter = ResponseRateLimiter::starting_at(
            RrlSpec {
                table_size: WAYS,
                ..spec(5, 0)
            },
            t0,
        )
        .unwrap();
        burst(&limiter, "192.0.2.1", www(), 100, t0);
        let later = t0 + Duration::from_secs(2);
        for n in 0..10_000u32 {
            let key = ResponseKey::answer(&name(&format!("n{n}.example.com.")), RecordType::A);
            limiter.check(client("198.51.100.1"), key, later);
        }
        assert_eq!(limiter.accounts(), WAYS);
        // Thousands of new pairs took the slots of each other, not of the one in debt.
        assert_eq!(
            limiter.check(client("192.0.2.1"), www(), later),
            Verdict::Drop
        );
    }

    proptest! {
        /// However queries arrive, one account sends at most the burst plus the rate for
        /// the time they span: `rate × (1 + seconds)`.
        #[test]
        fn never_more_than_the_rate_allows(
            rate in 1u32..50,
            gaps in proptest::collection::vec(0u64..400, 1..400),
        ) {
            let t0 = Instant::now();
            let limiter = ResponseRateLimiter::starting_at(spec(rate, 2), t0).unwrap();
            let mut at = 0u64;
            let mut sent = 0u64;
            for gap in gaps {
                at += gap;
                let now = t0 + Duration::from_millis(at);
                if limiter.check(client("192.0.2.1"), www(), now) == Verdict::Send {
                    sent += 1;
                }
            }
            let allowed = u64::from(rate) + u64::from(rate) * at / 1000;
            prop_assert!(sent <= allowed, "{sent} sent, {allowed} allowed over {at} ms");
        }
    }
}
