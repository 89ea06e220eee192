//! `[upstreams.NAME]`: servers (addresses, Unix sockets, host names), TLS to them, balancing,
//! timeouts, retries, active and passive health.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use toml::Spanned;

use super::error::ErrorSink;
use super::field::{Limits, Scope};
use super::raw::{RawPassive, RawUpstream, RawUpstreamTls};
use super::{
    Balance, HostPort, PassiveHealth, ServerAddress, UpstreamConfig, UpstreamTimeouts, UpstreamTls,
};

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
    base_dir: &Path,
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
    let servers = servers(name, raw.servers.get_ref(), sink);
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
    let tls = raw
        .tls
        .as_ref()
        .and_then(|tls| upstream_tls(&scope, tls, &servers, base_dir, sink));
    UpstreamConfig {
        name: name.to_owned(),
        servers,
        tls,
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

/// Every entry of `servers`, each once; wrong ones reported and left out.
fn servers(name: &str, raw: &[Spanned<String>], sink: &mut ErrorSink<'_>) -> Vec<ServerAddress> {
    let mut servers = Vec::with_capacity(raw.len());
    for server in raw {
        match parse_server(server.get_ref()) {
            Ok(address) if servers.contains(&address) => sink.at(
                server.span(),
                format!("upstream \"{name}\" lists server {address} twice"),
            ),
            Ok(address) => servers.push(address),
            Err(problem) => sink.at(
                server.span(),
                format!(
                    "server \"{}\" in upstream \"{name}\" {problem}",
                    server.get_ref()
                ),
            ),
        }
    }
    servers
}

/// An address written `IP:PORT`, `[v6]:PORT` or `localhost:PORT`, as a FastCGI server's.
pub(super) fn parse_server_addr(text: &str) -> Option<SocketAddr> {
    match parse_server(text) {
        Ok(ServerAddress::Ip(addr)) => Some(addr),
        _ => None,
    }
}

/// `IP:PORT`, `[v6]:PORT`, `localhost:PORT` (what nginx configs usually say), `unix:/PATH`,
/// or `HOST:PORT`. Errors complete "server "..." in upstream "...": ".
fn parse_server(text: &str) -> Result<ServerAddress, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        return unix_path(path).map(ServerAddress::Unix);
    }
    let port_zero = || "has port 0".to_owned();
    if let Some(port) = text.strip_prefix("localhost:") {
        let port: u16 = port.parse().map_err(|_| invalid_server())?;
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        return Some(ServerAddress::Ip(addr))
            .filter(|_| port != 0)
            .ok_or_else(port_zero);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(ServerAddress::Ip(addr))
            .filter(|_| addr.port() != 0)
            .ok_or_else(port_zero);
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(invalid_server)?;
    let port: u16 = port.parse().map_err(|_| invalid_server())?;
    let host = host_name(host).ok_or_else(invalid_server)?;
    if port == 0 {
        return Err(port_zero());
    }
    Ok(ServerAddress::Name(HostPort { host, port }))
}

fn invalid_server() -> String {
    "is not IP:PORT, HOST:PORT or unix:/PATH".to_owned()
}

/// The longest socket path Linux takes: `sun_path` holds 108 bytes with the final NUL
/// (unix(7)).
const MAX_SOCKET_PATH: usize = 107;

fn unix_path(path: &str) -> Result<PathBuf, String> {
    if !path.starts_with('/') {
        return Err("needs an absolute socket path, e.g. unix:/run/app.sock".to_owned());
    }
    if path.len() > MAX_SOCKET_PATH {
        return Err(format!(
            "has a socket path longer than {MAX_SOCKET_PATH} bytes"
        ));
    }
    Ok(PathBuf::from(path))
}

/// A DNS host name (RFC 1123 labels; '_' allowed, as Docker and Kubernetes service names
/// carry it), lowercase, without the trailing dot. A name whose last label is all digits is
/// refused: it is a mistyped IP address, not a name.
fn host_name(text: &str) -> Option<String> {
    let name = text.strip_suffix('.').unwrap_or(text);
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    };
    let last_numeric = name
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()));
    (name.len() <= 253 && name.split('.').all(label_ok) && !last_numeric)
        .then(|| name.to_ascii_lowercase())
}

/// `tls = { ... }`: the name to verify, the CAs, and whether to verify at all.
fn upstream_tls(
    scope: &Scope,
    raw: &Spanned<RawUpstreamTls>,
    servers: &[ServerAddress],
    base_dir: &Path,
    sink: &mut ErrorSink<'_>,
) -> Option<UpstreamTls> {
    let errors_before = sink.len();
    let table = raw.get_ref();
    let verify = table.verify.as_ref().is_none_or(|v| *v.get_ref());
    let sni = table.sni.as_ref().and_then(|sni| {
        let text = sni.get_ref();
        let valid = text.parse::<IpAddr>().is_ok() || host_name(text).is_some();
        if !valid {
            let message = format!(
                "{} \"{text}\" must be a host name or an IP address",
                scope.name("tls sni")
            );
            sink.at(sni.span(), message);
        }
        valid.then(|| text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase())
    });
    let ca = table
        .ca_file
        .as_ref()
        .and_then(|file| ca_certificates(scope, file, base_dir, sink));
    if let (Some(file), false) = (&table.ca_file, verify) {
        let message = format!(
            "{} has no effect with verify = false",
            scope.name("tls ca_file")
        );
        sink.at(file.span(), message);
    }
    // A socket path names no host: with verification on, the name to verify must be given.
    let unix = servers.iter().find(|s| matches!(s, ServerAddress::Unix(_)));
    if let (Some(unix), true, None) = (unix, verify, &table.sni) {
        let message = format!(
            "{} needs sni to verify {unix} (a socket path names no host)",
            scope.name("tls")
        );
        sink.at(raw.span(), message);
    }
    (sink.len() == errors_before).then_some(UpstreamTls { sni, ca, verify })
}

/// `ca_file`: PEM certificates that parse as X.509 (Pingora's connector would panic on one
/// that does not), as DER.
fn ca_certificates(
    scope: &Scope,
    file: &Spanned<String>,
    base_dir: &Path,
    sink: &mut ErrorSink<'_>,
) -> Option<Vec<Vec<u8>>> {
    let pem = scope.file("tls ca_file", file, base_dir, sink)?;
    let certificates: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&pem)
        .map(|der| der.map(|der| der.to_vec()))
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    let parsed = certificates
        .iter()
        .all(|der| x509_parser::parse_x509_certificate(der).is_ok());
    if certificates.is_empty() || !parsed {
        let message = format!(
            "{} \"{}\" must hold PEM CA certificates",
            scope.name("tls ca_file"),
            file.get_ref()
        );
        sink.at(file.span(), message);
        return None;
    }
    Some(certificates)
}
