//! `[upstreams.NAME]`: servers, balancing, timeouts, retries, active and passive health.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use http::HeaderName;
use toml::Spanned;

use super::error::{did_you_mean, ErrorSink};
use super::raw::{RawPassive, RawUpstream};
use super::units::parse_duration;
use super::{Balance, PassiveHealth, UpstreamConfig, UpstreamTimeouts};

const DEFAULT_PASSIVE: PassiveHealth = PassiveHealth {
    failures: 5,
    eject: Duration::from_secs(30),
};
const DEFAULT_TIMEOUTS: UpstreamTimeouts = UpstreamTimeouts {
    connect: Duration::from_secs(3),
    read: Duration::from_secs(60),
    write: Duration::from_secs(60),
    keepalive: Duration::from_secs(60),
};

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
    let balance = match raw
        .balance
        .as_ref()
        .map(|b| (b.get_ref().as_str(), b.span()))
    {
        None | Some(("round_robin", _)) => Balance::RoundRobin,
        Some(("least_conn", _)) => Balance::LeastConn,
        Some(("random", _)) => Balance::Random,
        Some(("consistent_hash", _)) => Balance::ConsistentHash {
            header: hash_header.clone(),
        },
        Some((other, span)) => {
            let known = ["round_robin", "least_conn", "consistent_hash", "random"];
            let hint = did_you_mean(other, known)
                .map(|s| format!(" (did you mean \"{s}\"?)"))
                .unwrap_or_else(|| format!(" (expected one of {})", known.join(", ")));
            sink.at(
                span,
                format!("upstream \"{name}\" has unknown balance \"{other}\"{hint}"),
            );
            Balance::RoundRobin
        }
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
    let mut duration =
        |key: &str, field: &Option<Spanned<String>>, default: Duration, zero_ok: bool| {
            let Some(text) = field else { return default };
            match parse_duration(text.get_ref()) {
                Ok(d) if d.is_zero() && !zero_ok => {
                    sink.at(
                        text.span(),
                        format!("upstream \"{name}\": {key} must be greater than zero"),
                    );
                    default
                }
                Ok(d) => d,
                Err(message) => {
                    sink.at(text.span(), format!("upstream \"{name}\": {key} {message}"));
                    default
                }
            }
        };
    let timeouts = UpstreamTimeouts {
        connect: duration(
            "connect_timeout",
            &raw.connect_timeout,
            DEFAULT_TIMEOUTS.connect,
            false,
        ),
        read: duration(
            "read_timeout",
            &raw.read_timeout,
            DEFAULT_TIMEOUTS.read,
            false,
        ),
        write: duration(
            "write_timeout",
            &raw.write_timeout,
            DEFAULT_TIMEOUTS.write,
            false,
        ),
        keepalive: duration(
            "keepalive_timeout",
            &raw.keepalive_timeout,
            DEFAULT_TIMEOUTS.keepalive,
            true,
        ),
    };
    let health = raw
        .health
        .as_ref()
        .and_then(|h| super::health::health_check(name, h, sink));
    let passive = passive(name, raw.passive.as_ref(), sink);
    let retries = match &raw.retries {
        None => 2,
        Some(n) => u32::try_from(*n.get_ref())
            .ok()
            .filter(|n| *n <= 10)
            .unwrap_or_else(|| {
                sink.at(
                    n.span(),
                    format!("upstream \"{name}\": retries must be between 0 and 10"),
                );
                2
            }),
    };
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
    name: &str,
    raw: Option<&Spanned<RawPassive>>,
    sink: &mut ErrorSink<'_>,
) -> PassiveHealth {
    let mut passive = DEFAULT_PASSIVE;
    let Some(raw) = raw.map(Spanned::get_ref) else {
        return passive;
    };
    if let Some(failures) = &raw.failures {
        match u32::try_from(*failures.get_ref()) {
            Ok(n) if n <= 100 => passive.failures = n,
            _ => sink.at(
                failures.span(),
                format!("upstream \"{name}\": passive failures must be between 0 (off) and 100"),
            ),
        }
    }
    if let Some(eject) = &raw.eject {
        match parse_duration(eject.get_ref()) {
            Ok(d) if !d.is_zero() => passive.eject = d,
            Ok(_) => sink.at(
                eject.span(),
                format!("upstream \"{name}\": passive eject must be greater than zero"),
            ),
            Err(message) => sink.at(
                eject.span(),
                format!("upstream \"{name}\": passive eject {message}"),
            ),
        }
    }
    passive
}

/// `IP:PORT`, `[v6]:PORT`, or `localhost:PORT` (what nginx configs usually say).
fn parse_server_addr(text: &str) -> Option<SocketAddr> {
    if let Some(port) = text.strip_prefix("localhost:") {
        return port
            .parse()
            .ok()
            .map(|port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    text.parse().ok()
}
