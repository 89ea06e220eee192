//! When to renew and how long to wait after a failure. Pure functions of time, so the
//! rules are tested without a CA.

use std::time::{Duration, SystemTime};

use rand::Rng;

use super::certificate::CertificateFacts;

/// Waits after the 1st, 2nd, 3rd and every later consecutive failure for a name. Three
/// failures fit in the first hour, below Let's Encrypt's 5 failed authorizations per
/// identifier per hour.
pub const BACKOFF: [Duration; 4] = [
    Duration::from_secs(60),
    Duration::from_secs(600),
    Duration::from_secs(6_000),
    Duration::from_secs(86_400),
];

/// The longest wait a failure can cause, whatever the CA's `Retry-After` says. Let's
/// Encrypt's longest rate-limit window is a week; a longer value is more likely broken than
/// advice, and a failures file that asks for more was not written by us (see `Failures`).
pub const MAX_WAIT: Duration = Duration::from_secs(7 * 86_400);

/// How often renewal information is asked for: RFC 9773 §4.3.2 wants at least daily; the
/// issue asks for twice a day.
pub const ARI_CHECK_INTERVAL: Duration = Duration::from_secs(12 * 3600);

/// The wait after `failures` consecutive failures (1 or more), never shorter than the CA's
/// `Retry-After` up to `MAX_WAIT`.
pub fn backoff(failures: u32, retry_after: Option<Duration>) -> Duration {
    let step = usize::try_from(failures.saturating_sub(1))
        .unwrap_or(usize::MAX)
        .min(BACKOFF.len() - 1);
    let wait = BACKOFF[step];
    retry_after.map_or(wait, |after| after.min(MAX_WAIT).max(wait))
}

/// Without renewal information: renew when a third of the lifetime is left (Let's Encrypt's
/// advice; lifetimes are shrinking, so this is never a fixed number of days).
pub fn renew_at_third_left(facts: &CertificateFacts) -> SystemTime {
    // Never below not_before, so never out of range; checked all the same.
    facts
        .not_after
        .checked_sub(facts.lifetime() / 3)
        .unwrap_or(facts.not_before)
}

/// A uniformly random moment in the CA's suggested window (RFC 9773 §4.2), spreading
/// renewals of many servers; a window already past means now.
pub fn renew_in_window(start: SystemTime, end: SystemTime, now: SystemTime) -> SystemTime {
    let start = start.max(now);
    let Ok(width) = end.duration_since(start) else {
        return start;
    };
    let offset = rand::rng().random_range(0..=width.as_millis().min(u128::from(u64::MAX)) as u64);
    // At most `end`, which is a valid time.
    start
        .checked_add(Duration::from_millis(offset))
        .unwrap_or(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn backoff_steps_then_stays_daily_and_respects_retry_after() {
        let minutes = |n: u64| Duration::from_secs(60 * n);
        assert_eq!(backoff(1, None), minutes(1));
        assert_eq!(backoff(2, None), minutes(10));
        assert_eq!(backoff(3, None), minutes(100));
        assert_eq!(backoff(4, None), minutes(1440));
        assert_eq!(backoff(40, None), minutes(1440));
        assert_eq!(backoff(1, Some(minutes(30))), minutes(30));
        assert_eq!(backoff(3, Some(minutes(30))), minutes(100));
        assert_eq!(backoff(1, Some(Duration::MAX)), MAX_WAIT);
    }

    #[test]
    fn failures_within_an_hour_stay_below_lets_encrypts_limit() {
        let mut elapsed = Duration::ZERO;
        let mut attempts_in_first_hour = 0;
        for failures in 1..10 {
            if elapsed < Duration::from_secs(3600) {
                attempts_in_first_hour += 1;
            }
            elapsed += backoff(failures, None);
        }
        assert!(attempts_in_first_hour < 5, "{attempts_in_first_hour}");
    }

    #[test]
    fn renewal_without_ari_at_a_third_of_the_lifetime() {
        let start = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let facts = CertificateFacts {
            names: vec![],
            not_before: start,
            not_after: start + Duration::from_secs(90 * 86_400),
            issuer: String::new(),
            serial: String::new(),
            ari_id: None,
        };
        assert_eq!(
            renew_at_third_left(&facts),
            start + Duration::from_secs(60 * 86_400)
        );
    }

    #[test]
    fn window_picks_inside_and_past_windows_mean_now() {
        let now = UNIX_EPOCH + Duration::from_secs(5_000);
        let (start, end) = (
            now + Duration::from_secs(100),
            now + Duration::from_secs(200),
        );
        for _ in 0..100 {
            let at = renew_in_window(start, end, now);
            assert!(at >= start && at <= end);
        }
        let past = renew_in_window(
            now - Duration::from_secs(50),
            now - Duration::from_secs(10),
            now,
        );
        assert_eq!(past, now);
    }
}
