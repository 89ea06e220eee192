//! `[dns.rate_limit]`: response rate limiting of the DNS server's UDP answers. Every key has
//! a default (`RrlSpec::default`), so the limit is on unless `responses_per_second = 0`.
//! The ranges are BIND's for the same settings (`rate-limit` in the BIND 9 ARM).

use std::ops::RangeInclusive;
use std::time::Duration;

use toml::Spanned;

use super::error::ErrorSink;
use super::raw::RawDnsRateLimit;
use super::units::parse_duration;
use super::validate::network;
use crate::dns::RrlSpec;

const LABEL: &str = "dns.rate_limit";
/// BIND accepts 0 to 1000 responses per second.
const RATES: RangeInclusive<i64> = 0..=1000;
/// BIND accepts a window of 1 to 3600 seconds.
const WINDOWS: RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(3600);
/// BIND accepts slip 0 to 10.
const SLIPS: RangeInclusive<i64> = 0..=10;
/// Accounts: from a handful to 16 Mi (about 512 MiB, far past any need).
const TABLE_SIZES: RangeInclusive<i64> = 64..=16_777_216;

/// The rate limit `raw` describes, defaults filled in; with errors recorded, the defaults
/// stand in for the wrong values.
pub fn rate_limit(raw: Option<&Spanned<RawDnsRateLimit>>, sink: &mut ErrorSink<'_>) -> RrlSpec {
    let mut spec = RrlSpec::default();
    let Some(raw) = raw.map(Spanned::get_ref) else {
        return spec;
    };
    let mut number = |key: &str, value: &Option<Spanned<i64>>, range: RangeInclusive<i64>| {
        let value = value.as_ref()?;
        if range.contains(value.get_ref()) {
            return Some(*value.get_ref());
        }
        sink.at(
            value.span(),
            format!(
                "{LABEL}: {key} must be between {} and {}",
                range.start(),
                range.end()
            ),
        );
        None
    };
    if let Some(rate) = number("responses_per_second", &raw.responses_per_second, RATES) {
        spec.responses_per_second = u32::try_from(rate).unwrap_or(spec.responses_per_second);
    }
    if let Some(slip) = number("slip", &raw.slip, SLIPS) {
        spec.slip = u8::try_from(slip).unwrap_or(spec.slip);
    }
    if let Some(prefix) = number("ipv4_prefix", &raw.ipv4_prefix, 1..=32) {
        spec.ipv4_prefix = u8::try_from(prefix).unwrap_or(spec.ipv4_prefix);
    }
    if let Some(prefix) = number("ipv6_prefix", &raw.ipv6_prefix, 1..=128) {
        spec.ipv6_prefix = u8::try_from(prefix).unwrap_or(spec.ipv6_prefix);
    }
    if let Some(size) = number("table_size", &raw.table_size, TABLE_SIZES) {
        spec.table_size = usize::try_from(size).unwrap_or(spec.table_size);
    }
    if let Some(window) = &raw.window {
        match parse_duration(window.get_ref()) {
            Ok(d) if WINDOWS.contains(&d) => spec.window = d,
            Ok(_) => sink.at(
                window.span(),
                format!("{LABEL}: window must be between 1s and 1h"),
            ),
            Err(message) => sink.at(window.span(), format!("{LABEL}: window {message}")),
        }
    }
    if let Some(exempt) = &raw.exempt {
        let examples = "\"192.0.2.0/24\" or \"2001:db8::/32\"";
        spec.exempt = exempt
            .iter()
            .filter_map(|cidr| network(cidr, "dns.rate_limit exempt", examples, sink))
            .collect();
    }
    spec
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
