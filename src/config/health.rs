//! The `health = { ... }` table of an upstream: what an active check sends, what counts as
//! healthy, how often, and how many results in a row change a server's state.

use std::ops::RangeInclusive;
use std::time::Duration;

use toml::Spanned;

use super::error::ErrorSink;
use super::field::{Limits, Scope};
use super::raw::RawHealth;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub probe: Probe,
    /// Between two checks of one server (each check is jittered by up to 10 %); at least
    /// 10ms. Default: 5s.
    pub interval: Duration,
    /// For one check, connect included; at least 10ms. Default: 2s.
    pub timeout: Duration,
    /// Consecutive successes that bring a down server back. Default: 2.
    pub rise: u32,
    /// Consecutive failures that take a server down. Default: 3.
    pub fall: u32,
    /// Before its first verdict a server is used (`Unknown`), unless `start = "down"`.
    pub start_down: bool,
}

#[derive(Debug, Clone, Copy)]
enum CheckKind {
    Http,
    Tcp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A TCP connect is enough.
    Tcp,
    Http(HttpProbe),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProbe {
    /// Default: GET.
    pub method: String,
    /// Default: `/`.
    pub path: String,
    /// `Host` header. Default: the server's address.
    pub host: Option<String>,
    /// Statuses that count as healthy. Default: `2xx`.
    pub expect: StatusSet,
    /// The body must contain this text. Default: not checked.
    pub body_contains: Option<String>,
}

/// `2xx`, `200,204`, `200-399`: a set of HTTP statuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(Vec<RangeInclusive<u16>>);

// === impl StatusSet ===

impl StatusSet {
    /// `2xx`.
    pub fn success() -> Self {
        Self(vec![200..=299])
    }

    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|range| range.contains(&status))
    }

    pub fn parse(text: &str) -> Option<Self> {
        let mut ranges = Vec::new();
        for part in text.split(',').map(str::trim) {
            let range = if let Some(class) = part.strip_suffix("xx") {
                let digit: u16 = class.parse().ok().filter(|d| (1..=5).contains(d))?;
                digit * 100..=digit * 100 + 99
            } else if let Some((low, high)) = part.split_once('-') {
                let (low, high): (u16, u16) = (low.trim().parse().ok()?, high.trim().parse().ok()?);
                low..=high
            } else {
                let status: u16 = part.parse().ok()?;
                status..=status
            };
            if range.is_empty() || *range.start() < 100 || *range.end() > 599 {
                return None;
            }
            ranges.push(range);
        }
        Some(Self(ranges))
    }
}

/// Validates one upstream's health table; `None` (with errors recorded) if it is wrong.
pub fn health_check(
    name: &str,
    raw: &Spanned<RawHealth>,
    sink: &mut ErrorSink<'_>,
) -> Option<HealthCheck> {
    let errors_before = sink.len();
    let raw = raw.get_ref();
    let label = format!("upstream \"{name}\": health");
    let scope = Scope::new(format!("{label} "));
    // Checks closer than 10ms apart are a busy loop against the server, not a health check;
    // a shorter timeout fails every check that leaves the machine.
    let limits = Limits::at_least(Duration::from_millis(10));
    let interval = scope.duration(
        "interval",
        raw.interval.as_ref(),
        Duration::from_secs(5),
        limits,
        sink,
    );
    let timeout = scope.duration(
        "timeout",
        raw.timeout.as_ref(),
        Duration::from_secs(2),
        limits,
        sink,
    );
    let rise = scope.integer("rise", raw.rise.as_ref(), 2, &[1..=100], sink);
    let fall = scope.integer("fall", raw.fall.as_ref(), 3, &[1..=100], sink);
    let start_down = scope.choice(
        "start",
        raw.start.as_ref(),
        false,
        &[("unknown", false), ("down", true)],
        sink,
    );
    // A wrong `check` falls back to "http", whose keys are then checked too.
    let check = scope.choice(
        "check",
        raw.check.as_ref(),
        CheckKind::Http,
        &[("http", CheckKind::Http), ("tcp", CheckKind::Tcp)],
        sink,
    );
    let probe = match check {
        CheckKind::Http => http_probe(&label, raw, sink),
        CheckKind::Tcp => {
            let http_only = [
                ("path", &raw.path),
                ("method", &raw.method),
                ("host", &raw.host),
                ("expect", &raw.expect),
                ("body_contains", &raw.body_contains),
            ];
            for (key, field) in http_only {
                if let Some(field) = field {
                    sink.at(
                        field.span(),
                        format!("{label} {key} needs check = \"http\""),
                    );
                }
            }
            Some(Probe::Tcp)
        }
    };
    if sink.len() > errors_before {
        return None;
    }
    Some(HealthCheck {
        probe: probe?,
        interval,
        timeout,
        rise,
        fall,
        start_down,
    })
}

fn http_probe(label: &str, raw: &RawHealth, sink: &mut ErrorSink<'_>) -> Option<Probe> {
    let token = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic());
    let mut field = |key: &str,
                     value: &Option<Spanned<String>>,
                     valid: &dyn Fn(&str) -> bool,
                     expected: &str| {
        let value = value.as_ref()?;
        if valid(value.get_ref()) {
            Some(value.get_ref().clone())
        } else {
            sink.at(
                value.span(),
                format!("{label} {key} \"{}\" must be {expected}", value.get_ref()),
            );
            None
        }
    };
    let method = field(
        "method",
        &raw.method,
        &|m| token(m) && m.bytes().all(|b| b.is_ascii_uppercase()),
        "an uppercase method such as GET or HEAD",
    );
    let path = field(
        "path",
        &raw.path,
        &|p| p.starts_with('/') && token(p),
        "a path starting with '/', without spaces",
    );
    let host = field("host", &raw.host, &token, "a host name without spaces");
    let body_contains = field(
        "body_contains",
        &raw.body_contains,
        &|b| !b.is_empty(),
        "non-empty",
    );
    let expect = match &raw.expect {
        None => StatusSet::parse("2xx"),
        Some(text) => {
            let parsed = StatusSet::parse(text.get_ref());
            if parsed.is_none() {
                sink.at(
                    text.span(),
                    format!("{label} expect \"{}\" is not a status set (e.g. \"2xx\", \"200,204\", \"200-399\")", text.get_ref()),
                );
            }
            parsed
        }
    };
    Some(Probe::Http(HttpProbe {
        method: method.unwrap_or_else(|| "GET".to_owned()),
        path: path.unwrap_or_else(|| "/".to_owned()),
        host,
        expect: expect?,
        body_contains,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_sets() {
        let set = StatusSet::parse("2xx, 301").unwrap();
        assert!(set.contains(204) && set.contains(301) && !set.contains(302) && !set.contains(500));
        assert!(StatusSet::parse("200-399").unwrap().contains(302));
        for bad in ["", "2x", "9xx", "abc", "300-200", "700"] {
            assert!(StatusSet::parse(bad).is_none(), "{bad}");
        }
    }
}
