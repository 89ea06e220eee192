//! The one parser for configuration fields: durations and sizes within limits, integers in
//! ranges, choices from a fixed set (with "did you mean"), networks (CIDRs), paths relative
//! to the config file's directory, and secrets read from files.
//!
//! Every section validates its keys through here, so a kind of value is accepted, bounded
//! and reported the same way wherever it appears. Per-section closures drifted apart: one
//! accepted `"0s"` where another refused it, and that became a hot loop.
//!
//! Each function records a located error and hands back a fallback value, so the caller
//! carries on and every problem in the file is reported in one run. Messages read
//! `<key> <problem>`, the key qualified by its table (`upstream "kong": read_timeout`).

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::error::{did_you_mean, ErrorSink};
use super::units::{parse_duration, parse_size};
use super::Secret;

/// Names the keys of one table in messages: a prefix such as `upstream "kong": ` (or
/// `http.`, or nothing for top-level keys) put before the key.
#[derive(Debug, Clone, Default)]
pub(super) struct Scope {
    prefix: String,
}

/// The smallest and, optionally, the largest accepted duration or size.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits<T> {
    min: T,
    max: Option<T>,
}

/// What duration and size limits need to phrase their messages.
pub(super) trait Quantity: Copy + PartialOrd {
    const ZERO: Self;
    /// The smallest value above zero that the file can express.
    const SMALLEST: Self;
    /// As an operator would write it in the file.
    fn show(self) -> String;
}

// === impl Scope ===

impl Scope {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The key as messages name it.
    pub fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// A duration such as `"5s"` within `limits`; `default` when absent or wrong.
    pub fn duration(
        &self,
        key: &str,
        raw: Option<&Spanned<String>>,
        default: Duration,
        limits: Limits<Duration>,
        sink: &mut ErrorSink<'_>,
    ) -> Duration {
        let Some(raw) = raw else { return default };
        let checked = parse_duration(raw.get_ref()).and_then(|value| limits.check(value));
        self.or_report(key, raw, checked, default, sink)
    }

    /// A size in bytes such as `"8KiB"` within `limits`; `default` when absent or wrong.
    pub fn size(
        &self,
        key: &str,
        raw: Option<&Spanned<String>>,
        default: u64,
        limits: Limits<u64>,
        sink: &mut ErrorSink<'_>,
    ) -> u64 {
        let Some(raw) = raw else { return default };
        let checked = parse_size(raw.get_ref()).and_then(|value| limits.check(value));
        self.or_report(key, raw, checked, default, sink)
    }

    /// A whole number inside one of the `allowed` ranges; `default` when absent or wrong.
    pub fn integer<T: TryFrom<i64>>(
        &self,
        key: &str,
        raw: Option<&Spanned<i64>>,
        default: T,
        allowed: &[RangeInclusive<i64>],
        sink: &mut ErrorSink<'_>,
    ) -> T {
        let Some(raw) = raw else { return default };
        let value = *raw.get_ref();
        let checked = allowed
            .iter()
            .any(|range| range.contains(&value))
            .then(|| T::try_from(value).ok())
            .flatten()
            .ok_or_else(|| format!("must be {}", describe_ranges(allowed)));
        self.or_report(key, raw, checked, default, sink)
    }

    /// A count from 0 to `max` where 0 switches the feature off, and the message says so.
    pub fn count_or_off<T: TryFrom<i64>>(
        &self,
        key: &str,
        raw: Option<&Spanned<i64>>,
        default: T,
        max: i64,
        sink: &mut ErrorSink<'_>,
    ) -> T {
        let Some(raw) = raw else { return default };
        let checked = Some(*raw.get_ref())
            .filter(|value| (0..=max).contains(value))
            .and_then(|value| T::try_from(value).ok())
            .ok_or_else(|| format!("must be between 0 (off) and {max}"));
        self.or_report(key, raw, checked, default, sink)
    }

    /// One of the named `choices`, suggesting the closest name for a typo; `default` when
    /// absent or wrong.
    pub fn choice<T: Clone>(
        &self,
        key: &str,
        raw: Option<&Spanned<String>>,
        default: T,
        choices: &[(&str, T)],
        sink: &mut ErrorSink<'_>,
    ) -> T {
        let Some(raw) = raw else { return default };
        let wanted = raw.get_ref();
        if let Some((_, value)) = choices.iter().find(|(name, _)| name == wanted) {
            return value.clone();
        }
        let names = choices.iter().map(|(name, _)| *name);
        let problem = match did_you_mean(wanted, names.clone()) {
            Some(close) => format!("is unknown (did you mean \"{close}\"?)"),
            None => {
                let quoted: Vec<String> = names.map(|name| format!("\"{name}\"")).collect();
                format!("must be {}", join_or(&quoted))
            }
        };
        let message = format!("{} \"{wanted}\" {problem}", self.name(key));
        sink.at(raw.span(), message);
        default
    }

    /// A path, resolved against the directory of the config file; `None` (reported) when
    /// it is empty. Whether it exists is the caller's business.
    pub fn path(
        &self,
        key: &str,
        raw: &Spanned<String>,
        base_dir: &Path,
        sink: &mut ErrorSink<'_>,
    ) -> Option<PathBuf> {
        if raw.get_ref().trim().is_empty() {
            sink.at(raw.span(), format!("{} must not be empty", self.name(key)));
            return None;
        }
        Some(base_dir.join(raw.get_ref()))
    }

    /// A network written as a CIDR, or a bare address meaning that one host; refused with
    /// host bits set (`10.0.0.1/8`), which is most likely a typo for the network. Messages
    /// show `examples` of what is expected.
    pub fn network(
        &self,
        key: &str,
        raw: &Spanned<String>,
        examples: &str,
        sink: &mut ErrorSink<'_>,
    ) -> Option<IpNet> {
        let text = raw.get_ref();
        let problem = match cidr(text) {
            Some(net) if net.trunc() == net => return Some(net),
            Some(net) => format!("has host bits set (did you mean \"{}\"?)", net.trunc()),
            None => format!("is not a CIDR (expected e.g. {examples})"),
        };
        sink.at(
            raw.span(),
            format!("{} \"{text}\" {problem}", self.name(key)),
        );
        None
    }

    /// The bytes of the file a path names. Messages name the file as written.
    pub fn file(
        &self,
        key: &str,
        raw: &Spanned<String>,
        base_dir: &Path,
        sink: &mut ErrorSink<'_>,
    ) -> Option<Vec<u8>> {
        let path = self.path(key, raw, base_dir, sink)?;
        match std::fs::read(path) {
            Ok(bytes) => Some(bytes),
            Err(error) => {
                let message = format!(
                    "cannot read {} \"{}\": {error}",
                    self.name(key),
                    raw.get_ref()
                );
                sink.at(raw.span(), message);
                None
            }
        }
    }

    /// A secret held in a file, surrounding whitespace trimmed. Messages name the file and
    /// the reason, never the contents.
    pub fn secret(
        &self,
        key: &str,
        raw: &Spanned<String>,
        base_dir: &Path,
        sink: &mut ErrorSink<'_>,
    ) -> Option<Secret> {
        let bytes = self.file(key, raw, base_dir, sink)?;
        let secret = bytes.trim_ascii();
        if secret.is_empty() {
            let message = format!("{} \"{}\" is empty", self.name(key), raw.get_ref());
            sink.at(raw.span(), message);
            return None;
        }
        Some(Secret(secret.to_vec()))
    }

    fn or_report<T>(
        &self,
        key: &str,
        raw: &Spanned<impl Sized>,
        checked: Result<T, String>,
        default: T,
        sink: &mut ErrorSink<'_>,
    ) -> T {
        checked.unwrap_or_else(|problem| {
            sink.at(raw.span(), format!("{} {problem}", self.name(key)));
            default
        })
    }
}

// === impl Limits ===

impl<T: Quantity> Limits<T> {
    pub const fn at_least(min: T) -> Self {
        Self { min, max: None }
    }

    pub const fn between(min: T, max: T) -> Self {
        Self {
            min,
            max: Some(max),
        }
    }

    /// Anything the file can express, zero included.
    pub const fn any() -> Self {
        Self::at_least(T::ZERO)
    }

    fn check(&self, value: T) -> Result<T, String> {
        let above = self.max.is_some_and(|max| value > max);
        if value >= self.min && !above {
            return Ok(value);
        }
        Err(match self.max {
            Some(max) if self.min == T::ZERO => format!("must be at most {}", max.show()),
            Some(max) => format!("must be between {} and {}", self.min.show(), max.show()),
            None if self.min == T::SMALLEST => "must be greater than zero".to_owned(),
            None => format!("must be at least {}", self.min.show()),
        })
    }
}

// === impl Quantity ===

impl Quantity for Duration {
    const ZERO: Self = Duration::ZERO;
    const SMALLEST: Self = Duration::from_millis(1);

    /// In the largest unit that states it exactly: `90s` stays `90s`, `3600s` is `1h`.
    fn show(self) -> String {
        let millis = self.as_millis();
        [(3_600_000, "h"), (60_000, "m"), (1_000, "s")]
            .into_iter()
            .find(|(unit, _)| millis != 0 && millis.is_multiple_of(*unit))
            .map_or_else(
                || format!("{millis}ms"),
                |(unit, name)| format!("{}{name}", millis / unit),
            )
    }
}

impl Quantity for u64 {
    const ZERO: Self = 0;
    const SMALLEST: Self = 1;

    fn show(self) -> String {
        [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")]
            .into_iter()
            .find(|(unit, _)| self != 0 && self.is_multiple_of(*unit))
            .map_or_else(
                || format!("{self} bytes"),
                |(unit, name)| format!("{}{name}", self / unit),
            )
    }
}

/// A CIDR such as `"173.245.48.0/20"`, or a bare address meaning that one host.
pub(super) fn cidr(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// ` (did you mean "kong"?)` when a known name is close to `wanted`, else nothing.
pub(super) fn suggestion<'a>(wanted: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(wanted, known)
        .map(|close| format!(" (did you mean \"{close}\"?)"))
        .unwrap_or_default()
}

/// `between 0 and 10`, `at least 1`, `301, 302 or 308`, `200 or between 500 and 599`.
fn describe_ranges(allowed: &[RangeInclusive<i64>]) -> String {
    if let [range] = allowed {
        return if *range.end() == i64::MAX {
            format!("at least {}", range.start())
        } else {
            format!("between {} and {}", range.start(), range.end())
        };
    }
    let parts: Vec<String> = allowed
        .iter()
        .map(|range| match range.start() == range.end() {
            true => range.start().to_string(),
            false => format!("between {} and {}", range.start(), range.end()),
        })
        .collect();
    join_or(&parts)
}

/// `a`, `a or b`, `a, b or c`.
fn join_or(parts: &[String]) -> String {
    match parts {
        [] => String::new(),
        [only] => only.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "a = \"0s\"\nb = \"1TB\"\nc = 11\nd = \"leastconn\"\ne = \"\"\n";

    fn spanned<T>(value: T, line: usize) -> Spanned<T> {
        // Spans are byte ranges; each test value sits at the start of its line.
        let start: usize = TEXT.lines().take(line - 1).map(|l| l.len() + 1).sum();
        Spanned::new(start..start + 1, value)
    }

    fn messages(sink: ErrorSink<'_>) -> Vec<String> {
        sink.finish().0.into_iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn durations_respect_their_limits_and_fall_back_to_the_default() {
        let mut sink = ErrorSink::new("f.toml", TEXT);
        let scope = Scope::new("upstream \"app\": ");
        let default = Duration::from_secs(5);
        let zero = spanned("0s".to_owned(), 1);
        let positive = Limits::at_least(Duration::from_millis(1));
        assert_eq!(
            scope.duration("a", Some(&zero), default, positive, &mut sink),
            default
        );
        let min_1s = Limits::at_least(Duration::from_secs(1));
        scope.duration("a", Some(&zero), default, min_1s, &mut sink);
        let one_hour = Limits::between(Duration::from_secs(1), Duration::from_secs(3600));
        let long = spanned("2h".to_owned(), 1);
        scope.duration("a", Some(&long), default, one_hour, &mut sink);
        let ok = spanned("90s".to_owned(), 1);
        let value = scope.duration("a", Some(&ok), default, one_hour, &mut sink);
        assert_eq!(value, Duration::from_secs(90));
        assert_eq!(
            scope.duration("a", None, default, one_hour, &mut sink),
            default
        );
        assert_eq!(
            messages(sink),
            [
                "f.toml:1:1: upstream \"app\": a must be greater than zero",
                "f.toml:1:1: upstream \"app\": a must be at least 1s",
                "f.toml:1:1: upstream \"app\": a must be between 1s and 1h",
            ]
        );
    }

    #[test]
    fn sizes_name_the_key_and_the_unit() {
        let mut sink = ErrorSink::new("f.toml", TEXT);
        let scope = Scope::new("http.");
        let bad = spanned("1TB".to_owned(), 2);
        assert_eq!(scope.size("b", Some(&bad), 7, Limits::any(), &mut sink), 7);
        let small = spanned("100".to_owned(), 2);
        scope.size("b", Some(&small), 7, Limits::at_least(256), &mut sink);
        scope.size("b", Some(&small), 7, Limits::at_least(1024), &mut sink);
        assert_eq!(
            messages(sink),
            [
                "f.toml:2:1: http.b \"1TB\" is not a size (write a whole number followed by B, KiB, MiB or GiB, e.g. \"10MiB\")",
                "f.toml:2:1: http.b must be at least 256 bytes",
                "f.toml:2:1: http.b must be at least 1KiB",
            ]
        );
    }

    #[test]
    fn integers_and_choices() {
        let mut sink = ErrorSink::new("f.toml", TEXT);
        let scope = Scope::default();
        let eleven = spanned(11_i64, 3);
        assert_eq!(
            scope.integer::<u32>("c", Some(&eleven), 2, &[0..=10], &mut sink),
            2
        );
        assert_eq!(
            scope.integer::<u32>("c", Some(&eleven), 2, &[1..=20], &mut sink),
            11
        );
        scope.integer::<u16>("c", Some(&eleven), 0, &[200..=200, 500..=599], &mut sink);
        scope.integer::<usize>("c", Some(&eleven), 0, &[12..=i64::MAX], &mut sink);
        scope.count_or_off::<u32>("c", Some(&eleven), 5, 10, &mut sink);
        let typo = spanned("leastconn".to_owned(), 4);
        let choices = [("round_robin", 1), ("least_conn", 2)];
        assert_eq!(scope.choice("d", Some(&typo), 0, &choices, &mut sink), 0);
        let other = spanned("zzz".to_owned(), 4);
        scope.choice("d", Some(&other), 0, &choices, &mut sink);
        assert_eq!(
            messages(sink),
            [
                "f.toml:3:1: c must be between 0 and 10",
                "f.toml:3:1: c must be 200 or between 500 and 599",
                "f.toml:3:1: c must be at least 12",
                "f.toml:3:1: c must be between 0 (off) and 10",
                "f.toml:4:1: d \"leastconn\" is unknown (did you mean \"least_conn\"?)",
                "f.toml:4:1: d \"zzz\" must be \"round_robin\" or \"least_conn\"",
            ]
        );
    }

    #[test]
    fn networks_name_the_key_and_refuse_host_bits() {
        let mut sink = ErrorSink::new("f.toml", TEXT);
        let scope = Scope::new("dns.rate_limit: ");
        let examples = "\"192.0.2.0/24\"";
        let mut read = |text: &str| {
            let raw = spanned(text.to_owned(), 5);
            scope.network("exempt", &raw, examples, &mut sink)
        };
        assert_eq!(read("192.0.2.0/24"), Some("192.0.2.0/24".parse().unwrap()));
        assert_eq!(
            read("2001:db8::1"),
            Some("2001:db8::1/128".parse().unwrap())
        );
        assert_eq!(read("10.0.0.1/8"), None);
        assert_eq!(read("10.0.0.0/33"), None);
        assert_eq!(
            messages(sink),
            [
                "f.toml:5:1: dns.rate_limit: exempt \"10.0.0.1/8\" has host bits set (did you mean \"10.0.0.0/8\"?)",
                "f.toml:5:1: dns.rate_limit: exempt \"10.0.0.0/33\" is not a CIDR (expected e.g. \"192.0.2.0/24\")",
            ]
        );
    }

    #[test]
    fn secrets_are_trimmed_and_never_echoed() {
        let dir = std::env::temp_dir().join(format!("headland-field-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "  s3cret-value\n").unwrap();
        std::fs::write(dir.join("blank"), " \n").unwrap();
        let mut sink = ErrorSink::new("f.toml", TEXT);
        let scope = Scope::default();
        let token = spanned("token".to_owned(), 5);
        let secret = scope.secret("k", &token, &dir, &mut sink).unwrap();
        assert_eq!(secret.0, b"s3cret-value");
        assert!(!format!("{secret:?}").contains("s3cret"));
        for name in ["blank", "missing", ""] {
            let file = spanned(name.to_owned(), 5);
            assert!(scope.secret("k", &file, &dir, &mut sink).is_none());
        }
        let text = messages(sink).join("\n");
        assert!(text.contains("k \"blank\" is empty"), "{text}");
        assert!(text.contains("cannot read k \"missing\""), "{text}");
        assert!(text.contains("k must not be empty"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn quantities_print_as_written() {
        assert_eq!(Duration::from_millis(1500).show(), "1500ms");
        assert_eq!(Duration::from_secs(90).show(), "90s");
        assert_eq!(Duration::from_secs(3600).show(), "1h");
        assert_eq!(Duration::ZERO.show(), "0ms");
        assert_eq!(256_u64.show(), "256 bytes");
        assert_eq!((32_u64 << 10).show(), "32KiB");
        assert_eq!((1_u64 << 20).show(), "1MiB");
    }
}
