//! `[dns.rate_limit]`: response rate limiting of the DNS server's UDP answers. Every key has
//! a default (`RrlSpec::default`), so the limit is on unless `responses_per_second = 0`.
//! The ranges are BIND's for the same settings (`rate-limit` in the BIND 9 ARM).

use std::ops::RangeInclusive;
use std::time::Duration;

use toml::Spanned;

use super::error::ErrorSink;
use super::field::{Limits, Scope};
use super::raw::RawDnsRateLimit;
use crate::dns::RrlSpec;

/// BIND accepts 0 to 1000 responses per second.
const RATES: RangeInclusive<i64> = 0..=1000;
/// BIND accepts a window of 1 to 3600 seconds.
const WINDOWS: Limits<Duration> =
    Limits::between(Duration::from_secs(1), Duration::from_secs(3600));
/// BIND accepts slip 0 to 10.
const SLIPS: RangeInclusive<i64> = 0..=10;
/// Accounts: from a handful to 16 Mi (about 512 MiB, far past any need).
const TABLE_SIZES: RangeInclusive<i64> = 64..=16_777_216;

/// The rate limit `raw` describes, defaults filled in; with errors recorded, the defaults
/// stand in for the wrong values.
pub fn rate_limit(raw: Option<&Spanned<RawDnsRateLimit>>, sink: &mut ErrorSink<'_>) -> RrlSpec {
    let default = RrlSpec::default();
    let Some(raw) = raw.map(Spanned::get_ref) else {
        return default;
    };
    let scope = Scope::new("dns.rate_limit: ");
    let exempt = match &raw.exempt {
        Some(exempt) => {
            let examples = "\"192.0.2.0/24\" or \"2001:db8::/32\"";
            exempt
                .iter()
                .filter_map(|cidr| scope.network("exempt", cidr, examples, sink))
                .collect()
        }
        None => default.exempt,
    };
    RrlSpec {
        responses_per_second: scope.integer(
            "responses_per_second",
            raw.responses_per_second.as_ref(),
            default.responses_per_second,
            &[RATES],
            sink,
        ),
        window: scope.duration("window", raw.window.as_ref(), default.window, WINDOWS, sink),
        slip: scope.integer("slip", raw.slip.as_ref(), default.slip, &[SLIPS], sink),
        ipv4_prefix: scope.integer(
            "ipv4_prefix",
            raw.ipv4_prefix.as_ref(),
            default.ipv4_prefix,
            &[1..=32],
            sink,
        ),
        ipv6_prefix: scope.integer(
            "ipv6_prefix",
            raw.ipv6_prefix.as_ref(),
            default.ipv6_prefix,
            &[1..=128],
            sink,
        ),
        exempt,
        table_size: scope.integer(
            "table_size",
            raw.table_size.as_ref(),
            default.table_size,
            &[TABLE_SIZES],
            sink,
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::parse;
    use crate::dns::RrlSpec;

    fn spec(text: &str) -> RrlSpec {
        parse(text, "test.toml", Path::new("/"))
            .unwrap()
            .dns
            .rate_limit
    }

    #[test]
    fn on_by_default_and_every_key_read() {
        assert_eq!(spec(""), RrlSpec::default());
        assert_eq!(spec("[dns.rate_limit]\n"), RrlSpec::default());
        let set = spec(
            "[dns.rate_limit]\nresponses_per_second = 0\nwindow = \"1m\"\nslip = 0\n\
             ipv4_prefix = 32\nipv6_prefix = 64\nexempt = [\"192.0.2.1\", \"2001:db8::/32\"]\n\
             table_size = 64\n",
        );
        assert_eq!(set.responses_per_second, 0);
        assert_eq!(set.window, std::time::Duration::from_secs(60));
        assert_eq!((set.slip, set.ipv4_prefix, set.ipv6_prefix), (0, 32, 64));
        assert_eq!(
            set.exempt,
            vec![
                "192.0.2.1/32".parse().unwrap(),
                "2001:db8::/32".parse().unwrap()
            ]
        );
        assert_eq!(set.table_size, 64);
        assert!(spec("[dns.rate_limit]\nexempt = []\n").exempt.is_empty());
    }
}
