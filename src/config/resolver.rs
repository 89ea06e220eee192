//! `[resolver]`: which name servers resolve upstream servers named by host name, and how
//! often their answers are asked again.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::error::ErrorSink;
use super::field::{Limits, Quantity, Scope};
use super::raw::RawResolver;

/// Below a second a name with TTL 0 would be asked for in a busy loop.
const MIN_TTL_LIMITS: Limits<Duration> = Limits::at_least(Duration::from_secs(1));
const DEFAULT_MIN_TTL: Duration = Duration::from_secs(1);
/// Docker's embedded DNS answers with TTL 600: half a minute bounds how long a replaced
/// container's address keeps getting requests.
const DEFAULT_MAX_TTL: Duration = Duration::from_secs(30);
const DNS_PORT: u16 = 53;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverConfig {
    /// Name servers asked in turn (UDP, TCP when an answer is truncated). Default: empty,
    /// meaning the system's (`/etc/resolv.conf`, with its search domains).
    pub nameservers: Vec<SocketAddr>,
    /// A name is asked again after its record's TTL, but never sooner than this (also the
    /// first wait after a failed resolution, doubled per failure up to `max_ttl`); at least
    /// 1s. Default: 1s.
    pub min_ttl: Duration,
    /// ... and never later than this. Default: 30s.
    pub max_ttl: Duration,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            min_ttl: DEFAULT_MIN_TTL,
            max_ttl: DEFAULT_MAX_TTL,
        }
    }
}

pub(super) fn resolver(raw: &RawResolver, sink: &mut ErrorSink<'_>) -> ResolverConfig {
    let scope = Scope::new("resolver ");
    let mut nameservers = Vec::new();
    for server in raw.nameservers.iter().flatten() {
        let text = server.get_ref();
        let parsed = text
            .parse::<SocketAddr>()
            .ok()
            .or_else(|| text.parse::<IpAddr>().ok().map(|ip| (ip, DNS_PORT).into()))
            .filter(|addr| addr.port() != 0);
        match parsed {
            Some(addr) if nameservers.contains(&addr) => sink.at(
                server.span(),
                format!("resolver nameservers lists {addr} twice"),
            ),
            Some(addr) => nameservers.push(addr),
            None => sink.at(
                server.span(),
                format!(
                    "resolver nameservers \"{text}\" must be IP or IP:PORT (e.g. \"10.0.0.2\", \"127.0.0.1:5353\")"
                ),
            ),
        }
    }
    let min_ttl = scope.duration(
        "min_ttl",
        raw.min_ttl.as_ref(),
        DEFAULT_MIN_TTL,
        MIN_TTL_LIMITS,
        sink,
    );
    let max_ttl = scope.duration(
        "max_ttl",
        raw.max_ttl.as_ref(),
        DEFAULT_MAX_TTL.max(min_ttl),
        MIN_TTL_LIMITS,
        sink,
    );
    if let (Some(raw_max), true) = (&raw.max_ttl, max_ttl < min_ttl) {
        sink.at(
            raw_max.span(),
            format!(
                "resolver max_ttl must not be below min_ttl ({})",
                min_ttl.show()
            ),
        );
    }
    ResolverConfig {
        nameservers,
        min_ttl,
        max_ttl: max_ttl.max(min_ttl),
    }
}
