//! `[upstreams.NAME]`: servers, balancing, timeouts, retries, active and passive health.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use http::HeaderName;
use toml::Spanned;

use super::error::ErrorSink;
use super::field::{Limits, Scope};
use super::raw::{RawPassive, RawUpstream};
use super::{Balance, PassiveHealth, UpstreamConfig, UpstreamTimeouts};

const DEFAULT_PASSIVE: PassiveHealth = PassiveHealth {
    failures: 5,
    eject: Duration::from_secs(30),
    on_5xx: false,
};
const DEFAULT_TIMEOUTS: UpstreamTimeouts = UpstreamTimeouts {
    connect: Duration::from_secs(3),
    read: Duration::from_secs(60),
    write: Duration::from_secs(60),
    keepalive: Duration::from_secs(60),
};
/// Connect, read and write timeouts: below 10ms no connection outside one machine could
/// finish a step, and a zero would fail every request at once.
pub(super) const TIMEOUT_LIMITS: Limits<Duration> = Limits::at_least(Duration::from_millis(10));
/// An ejection shorter than a second ends before the next requests could avoid the server:
/// a limit with no effect.
const EJECT_LIMITS: Limits<Duration> = Limits::at_least(Duration::from_secs(1));

#[derive(Clone, Copy)]
enum BalanceKind {
    RoundRobin,
    LeastConn,
    ConsistentHash,
    Random,
}

pub(super) fn upstream(
    name: &str,
    raw: &Spanned<RawUpstream>,
    sink: &mut ErrorSink<'_>,
) -> UpstreamConfig {
    let plain_name = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !plain_name {
        sink.at(
            raw.span(),
            format!("upstream name \"{name}\" must be 1 to 64 letters, digits, '_', '-' or '.'"),
        );
    }
    let raw = raw.get_ref();
    if raw.servers.get_ref().is_empty() {
        sink.at(
            raw.servers.span(),
            format!("upstream \"{name}\" has no servers"),
        );
    }
    let mut servers = Vec::with_capacity(raw.servers.get_ref().len());
    for server in raw.servers.get_ref() {
        match parse_server_addr(server.get_ref()) {
            Some(addr) if addr.port() == 0 => sink.at(
                server.span(),
                format!("server {addr} in upstream \"{name}\" has port 0"),
            ),
            Some(addr) if servers.contains(&addr) => sink.at(
                server.span(),
                format!("upstream \"{name}\" lists server {addr} twice"),
            ),
            Some(addr) => servers.push(addr),
            None => sink.at(
                server.span(),
                format!(
                    "invalid server address \"{}\" in upstream \"{name}\" (expected IP:PORT or localhost:PORT; host names are not resolved)",
                    server.get_ref()
                ),
            ),
        }
    }
    let hash_header = raw.hash_header.as_ref().and_then(|h| {
        HeaderName::from_bytes(h.get_ref().as_bytes())
            .map_err(|_| sink.at(h.span(), format!("invalid header name \"{}\"", h.get_ref())))
            .ok()
    });
    let scope = Scope::new(format!("upstream \"{name}\": "));
    let kind = scope.choice(
        "balance",
        raw.balance.as_ref(),
        BalanceKind::RoundRobin,
        &[
            ("round_robin", BalanceKind::RoundRobin),
            ("least_conn", BalanceKind::LeastConn),
            ("consistent_hash", BalanceKind::ConsistentHash),
            ("random", BalanceKind::Random),
        ],
        sink,
    );
    let balance = match kind {
        BalanceKind::RoundRobin => Balance::RoundRobin,
        BalanceKind::LeastConn => Balance::LeastConn,
        BalanceKind::ConsistentHash => Balance::ConsistentHash {
            header: hash_header,
        },
        BalanceKind::Random => Balance::Random,
    };
    if let (Some(header), false) = (
        &raw.hash_header,
        matches!(balance, Balance::ConsistentHash { .. }),
    ) {
        sink.at(
            header.span(),
            format!("hash_header in upstream \"{name}\" needs balance = \"consistent_hash\""),
        );
    }
    let mut timeout = |key: &str, field: &Option<Spanned<String>>, default, limits| {
        scope.duration(key, field.as_ref(), default, limits, sink)
    };
    let timeouts = UpstreamTimeouts {
        connect: timeout(
            "connect_timeout",
            &raw.connect_timeout,
            DEFAULT_TIMEOUTS.connect,
            TIMEOUT_LIMITS,
        ),
        read: timeout(
            "read_timeout",
            &raw.read_timeout,
            DEFAULT_TIMEOUTS.read,
            TIMEOUT_LIMITS,
        ),
        write: timeout(
            "write_timeout",
            &raw.write_timeout,
            DEFAULT_TIMEOUTS.write,
            TIMEOUT_LIMITS,
        ),
        // Zero is meaningful here: no reuse.
        keepalive: timeout(
            "keepalive_timeout",
            &raw.keepalive_timeout,
            DEFAULT_TIMEOUTS.keepalive,
            Limits::any(),
        ),
    };
    let health = raw
        .health
        .as_ref()
        .and_then(|h| super::health::health_check(name, h, sink));
    let passive = passive(&scope, raw.passive.as_ref(), sink);
    let retries = scope.integer("retries", raw.retries.as_ref(), 2, &[0..=10], sink);
    UpstreamConfig {
        name: name.to_owned(),
        servers,
        balance,
        timeouts,
        health,
        passive,
        retries,
    }
}

fn passive(
    scope: &Scope,
    raw: Option<&Spanned<RawPassive>>,
    sink: &mut ErrorSink<'_>,
) -> PassiveHealth {
    let Some(raw) = raw.map(Spanned::get_ref) else {
        return DEFAULT_PASSIVE;
    };
    PassiveHealth {
        failures: scope.count_or_off(
            "passive failures",
            raw.failures.as_ref(),
            DEFAULT_PASSIVE.failures,
            100,
            sink,
        ),
        eject: scope.duration(
            "passive eject",
            raw.eject.as_ref(),
            DEFAULT_PASSIVE.eject,
            EJECT_LIMITS,
            sink,
        ),
        on_5xx: raw.on_5xx.unwrap_or(DEFAULT_PASSIVE.on_5xx),
    }
}

/// `IP:PORT`, `[v6]:PORT`, or `localhost:PORT` (what nginx configs usually say).
pub(super) fn parse_server_addr(text: &str) -> Option<SocketAddr> {
    if let Some(port) = text.strip_prefix("localhost:") {
        return port
            .parse()
            .ok()
            .map(|port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    text.parse().ok()
}
