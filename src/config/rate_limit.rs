//! `[rate_limits.NAME]`: how many requests per client IP, how bursty, and who is exempt.

use std::num::NonZeroU32;
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::error::ErrorSink;
use super::field::{self, Scope};
use super::raw::RawRateLimit;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub name: String,
    /// One request is earned back per interval (`10/s` → 100 ms).
    pub interval: Duration,
    /// Requests a client may make at once. Default: the rate's count (`10/s` → 10).
    pub burst: NonZeroU32,
    /// IPv6 clients are limited per prefix of this length. Default: 64.
    pub ipv6_prefix: u8,
    /// Clients never limited. Default: none.
    pub allow: Vec<IpNet>,
    /// Tracked clients at most; beyond, new clients share one bucket. Default: 1,000,000.
    pub max_keys: usize,
}

pub fn rate_limit(
    name: &str,
    raw: &Spanned<RawRateLimit>,
    sink: &mut ErrorSink<'_>,
) -> Option<RateLimitConfig> {
    let errors_before = sink.len();
    let raw = raw.get_ref();
    let label = format!("rate limit \"{name}\"");
    let rate = parse_rate(raw.rate.get_ref());
    if rate.is_none() {
        sink.at(
            raw.rate.span(),
            format!("{label}: rate \"{}\" must be COUNT/UNIT with unit s, min or h, e.g. \"10/s\" or \"600/min\"", raw.rate.get_ref()),
        );
    }
    let scope = Scope::new(format!("{label}: "));
    let burst = match &raw.burst {
        None => rate.map(|(count, _)| count),
        // A wrong burst falls back to 0, which is no burst: the limit is dropped (reported).
        Some(burst) => NonZeroU32::new(scope.integer(
            "burst",
            Some(burst),
            0,
            &[1..=i64::from(u32::MAX)],
            sink,
        )),
    };
    let ipv6_prefix = scope.integer(
        "ipv6_prefix",
        raw.ipv6_prefix.as_ref(),
        64,
        &[1..=128],
        sink,
    );
    let allow = raw
        .allow
        .iter()
        .flatten()
        .filter_map(|cidr| match field::cidr(cidr.get_ref()) {
            Some(net) => Some(net),
            None => {
                sink.at(
                    cidr.span(),
                    format!("{label}: invalid CIDR \"{}\" in allow", cidr.get_ref()),
                );
                None
            }
        })
        .collect();
    let max_keys = scope.integer(
        "max_keys",
        raw.max_keys.as_ref(),
        1_000_000,
        &[1..=i64::MAX],
        sink,
    );
    if sink.len() > errors_before {
        return None;
    }
    let (count, period) = rate?;
    Some(RateLimitConfig {
        name: name.to_owned(),
        interval: period / count.get(),
        burst: burst?,
        ipv6_prefix,
        allow,
        max_keys,
    })
}

/// `10/s`, `600/min`, `5000/h` → (count, period).
fn parse_rate(text: &str) -> Option<(NonZeroU32, Duration)> {
    let (count, unit) = text.split_once('/')?;
    let count = NonZeroU32::new(count.trim().parse().ok()?)?;
    let period = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        _ => return None,
    };
    // Rates finer than 1 request per microsecond are not rate limits.
    (period / count.get() >= Duration::from_micros(1)).then_some((count, period))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        let ten = NonZeroU32::new(10).unwrap();
        assert_eq!(parse_rate("10/s"), Some((ten, Duration::from_secs(1))));
        assert_eq!(
            parse_rate("600/min").map(|(_, p)| p),
            Some(Duration::from_secs(60))
        );
        for bad in ["10", "0/s", "10/d", "x/s", "10/ s/"] {
            assert_eq!(parse_rate(bad), None, "{bad}");
        }
    }
}
