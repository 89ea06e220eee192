//! Turns the raw file into a [`Config`], collecting every located problem instead of stopping
//! at the first one.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;
use toml::Spanned;

use super::error::{did_you_mean, ErrorSink, LocatedErrors};
use super::raw::{RawConfig, RawListen, RawNode, RawRoute, RawUpstream};
use super::units::{parse_duration, parse_size};
use super::{
    AccessLogOutput, Balance, ClientIpConfig, ClientIpHeader, Config, Fallback, HostPattern,
    ListenConfig, NodeConfig, PassiveHealth, RateLimitConfig, Redirect, RouteAction, RouteConfig,
    Secret, UpstreamConfig, UpstreamTimeouts,
};
use crate::host::normalize_host;

const DEFAULT_HTTP_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 80);
const DEFAULT_ADMIN_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9180);
const DEFAULT_STATE_DIR: &str = "/var/lib/headland";
/// Plesk's nginx default, so that uploads that worked behind it keep working.
const DEFAULT_MAX_BODY_SIZE: u64 = 128 << 20;
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

pub fn validate(text: &str, file: &str, base_dir: &Path) -> Result<Config, LocatedErrors> {
    let mut sink = ErrorSink::new(file, text);
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(error) => {
            // Serde stops at the first structural problem; report it alone.
            let message = error.message().trim().replace('\n', "; ");
            sink.at(error.span().unwrap_or(0..0), message);
            return Err(sink.finish());
        }
    };

    let node = node(&raw.node, base_dir, &mut sink);
    let listen = listen(&raw.listen, &mut sink);
    let client_ip = client_ip(&raw, &mut sink);
    let access_log = match &raw.access_log.output {
        None => AccessLogOutput::Stdout,
        Some(output) => match output.get_ref().as_str() {
            "stdout" => AccessLogOutput::Stdout,
            "off" => AccessLogOutput::Off,
            _ => non_empty_path(output, "access_log output", base_dir, &mut sink)
                .map_or(AccessLogOutput::Off, AccessLogOutput::File),
        },
    };
    let upstreams: Vec<UpstreamConfig> = raw
        .upstreams
        .iter()
        .map(|(name, upstream)| self::upstream(name, upstream, &mut sink))
        .collect();
    let rate_limits: Vec<_> = raw
        .rate_limits
        .iter()
        .filter_map(|(name, limit)| super::rate_limit::rate_limit(name, limit, &mut sink))
        .collect();
    let routes = routes(&raw.routes, &upstreams, &rate_limits, base_dir, &mut sink);
    let tls = super::tls::tls(
        &raw.tls,
        &raw.certificates,
        listen.https.len(),
        base_dir,
        &mut sink,
    );
    let admin_token = raw
        .listen
        .admin_token_file
        .as_ref()
        .and_then(|file| read_secret(file, "admin_token_file", base_dir, &mut sink));
    let webhooks = raw
        .webhooks
        .iter()
        .filter_map(|hook| super::webhook::webhook(hook, base_dir, &mut sink))
        .collect();

    if !sink.is_empty() {
        return Err(sink.finish());
    }
    Ok(Config {
        node,
        listen,
        client_ip,
        access_log,
        upstreams,
        routes,
        webhooks,
        rate_limits,
        admin_token,
        tls,
    })
}

fn node(raw: &RawNode, base_dir: &Path, sink: &mut ErrorSink<'_>) -> NodeConfig {
    let threads = match &raw.threads {
        Some(threads) => match usize::try_from(*threads.get_ref()) {
            Ok(n) if (1..=1024).contains(&n) => n,
            _ => {
                sink.at(threads.span(), "threads must be between 1 and 1024");
                1
            }
        },
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let name = match &raw.name {
        Some(name) => {
            if name.get_ref().trim().is_empty() {
                sink.at(name.span(), "node name must not be empty");
            }
            name.get_ref().clone()
        }
        None => default_node_name(),
    };
    NodeConfig {
        name,
        region: raw.region.as_ref().map(|region| {
            if region.get_ref().trim().is_empty() {
                sink.at(region.span(), "node region must not be empty");
            }
            region.get_ref().clone()
        }),
        state_dir: match &raw.state_dir {
            Some(dir) => non_empty_path(dir, "state_dir", base_dir, sink).unwrap_or_default(),
            None => PathBuf::from(DEFAULT_STATE_DIR),
        },
        threads,
        watch_config: raw.watch_config.unwrap_or(false),
    }
}

fn default_node_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "headland".to_owned())
}

fn listen(raw: &RawListen, sink: &mut ErrorSink<'_>) -> ListenConfig {
    let http: Vec<(SocketAddr, Range<usize>)> = match &raw.http {
        Some(addrs) => addrs
            .get_ref()
            .iter()
            .filter_map(|a| listen_addr(a, sink).map(|addr| (addr, a.span())))
            .collect(),
        None => vec![(DEFAULT_HTTP_LISTEN, 0..0)],
    };
    if let Some(addrs) = raw.http.as_ref().filter(|a| a.get_ref().is_empty()) {
        sink.at(addrs.span(), "listen.http needs at least one address");
    }
    for (i, (addr, span)) in http.iter().enumerate() {
        if http.iter().take(i).any(|(earlier, _)| earlier == addr) {
            sink.at(
                span.clone(),
                format!("listen address {addr} is listed twice"),
            );
        }
    }
    let mut https: Vec<SocketAddr> = Vec::new();
    for addr in raw.https.iter().flatten() {
        if let Some(parsed) = listen_addr(addr, sink) {
            if http.iter().any(|(h, _)| *h == parsed) || https.contains(&parsed) {
                sink.at(
                    addr.span(),
                    format!("listen address {parsed} is listed twice"),
                );
            }
            https.push(parsed);
        }
    }
    let admin = match &raw.admin {
        Some(addr) if addr.get_ref() == "off" => None,
        Some(addr) => {
            let parsed = listen_addr(addr, sink);
            let taken = |a: &SocketAddr| http.iter().any(|(h, _)| h == a) || https.contains(a);
            if let Some(clash) = parsed.filter(taken) {
                sink.at(
                    addr.span(),
                    format!("admin address {clash} is also a proxy listener"),
                );
            }
            parsed
        }
        None => Some(DEFAULT_ADMIN_LISTEN),
    };
    ListenConfig {
        http: http.into_iter().map(|(addr, _)| addr).collect(),
        https,
        admin,
        h2c: raw.h2c.unwrap_or(false),
    }
}

fn listen_addr(addr: &Spanned<String>, sink: &mut ErrorSink<'_>) -> Option<SocketAddr> {
    match addr.get_ref().parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            sink.at(
                addr.span(),
                format!(
                    "invalid listen address \"{}\" (expected IP:PORT, e.g. \"0.0.0.0:80\" or \"[::]:80\")",
                    addr.get_ref()
                ),
            );
            None
        }
    }
}

fn client_ip(raw: &RawConfig, sink: &mut ErrorSink<'_>) -> ClientIpConfig {
    let trusted_proxies = raw
        .client_ip
        .trusted_proxies
        .iter()
        .filter_map(|cidr| match parse_cidr(cidr.get_ref()) {
            Some(net) if net.trunc() != net => {
                sink.at(
                    cidr.span(),
                    format!(
                        "CIDR \"{}\" has host bits set (did you mean \"{}\"?)",
                        cidr.get_ref(),
                        net.trunc()
                    ),
                );
                None
            }
            Some(net) => Some(net),
            None => {
                sink.at(
                    cidr.span(),
                    format!(
                        "invalid CIDR \"{}\" in trusted_proxies (expected e.g. \"173.245.48.0/20\" or \"2400:cb00::/32\")",
                        cidr.get_ref()
                    ),
                );
                None
            }
        })
        .collect();
    let header = match &raw.client_ip.header {
        None => ClientIpHeader::XForwardedFor,
        Some(name) if name.get_ref().eq_ignore_ascii_case("x-forwarded-for") => {
            ClientIpHeader::XForwardedFor
        }
        Some(name) => match HeaderName::from_bytes(name.get_ref().as_bytes()) {
            Ok(header) => ClientIpHeader::Single(header),
            Err(_) => {
                sink.at(
                    name.span(),
                    format!("invalid header name \"{}\"", name.get_ref()),
                );
                ClientIpHeader::XForwardedFor
            }
        },
    };
    ClientIpConfig {
        trusted_proxies,
        header,
    }
}

/// A CIDR, or a bare address meaning a single host.
fn parse_cidr(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

fn upstream(name: &str, raw: &Spanned<RawUpstream>, sink: &mut ErrorSink<'_>) -> UpstreamConfig {
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
    raw: Option<&Spanned<super::raw::RawPassive>>,
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

/// Reads a secret from a file, trimmed. Errors name the file and the reason, never the
/// contents.
pub(super) fn read_secret(
    file: &Spanned<String>,
    key: &str,
    base_dir: &Path,
    sink: &mut ErrorSink<'_>,
) -> Option<Secret> {
    let path = base_dir.join(file.get_ref());
    match std::fs::read(&path) {
        Ok(bytes) if bytes.trim_ascii().is_empty() => {
            sink.at(
                file.span(),
                format!("{key} \"{}\" is empty", file.get_ref()),
            );
            None
        }
        Ok(bytes) => Some(Secret(bytes.trim_ascii().to_vec())),
        Err(error) => {
            sink.at(
                file.span(),
                format!("cannot read {key} \"{}\": {error}", file.get_ref()),
            );
            None
        }
    }
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

fn routes(
    raw: &[Spanned<RawRoute>],
    upstreams: &[UpstreamConfig],
    rate_limits: &[RateLimitConfig],
    base_dir: &Path,
    sink: &mut ErrorSink<'_>,
) -> Vec<RouteConfig> {
    let mut seen_places: HashMap<(HostPattern, String), usize> = HashMap::new();
    let mut seen_names: HashMap<String, usize> = HashMap::new();
    let mut routes = Vec::with_capacity(raw.len());
    for spanned in raw {
        let Some(route) = self::route(spanned, upstreams, rate_limits, base_dir, sink) else {
            continue;
        };
        let line = sink.line_of(spanned.span());
        let place = (route.host.clone(), route.path.clone());
        if let Some(first) = seen_places.insert(place, line) {
            sink.at(
                spanned.get_ref().host.span(),
                format!(
                    "route for host \"{}\" path \"{}\" duplicates the route at line {first}",
                    route.host, route.path
                ),
            );
        } else if let Some(name) = &spanned.get_ref().name {
            // Default names derive from host and path, so only explicit names can clash
            // without the places clashing too.
            if let Some(first) = seen_names.insert(route.name.clone(), line) {
                sink.at(
                    name.span(),
                    format!(
                        "route name \"{}\" is already used by the route at line {first}",
                        route.name
                    ),
                );
            }
        } else {
            seen_names.insert(route.name.clone(), line);
        }
        routes.push(route);
    }
    routes
}

/// Validates one route, reporting every problem in it; `None` if there was any.
fn route(
    spanned: &Spanned<RawRoute>,
    upstreams: &[UpstreamConfig],
    rate_limits: &[RateLimitConfig],
    base_dir: &Path,
    sink: &mut ErrorSink<'_>,
) -> Option<RouteConfig> {
    let raw = spanned.get_ref();
    let errors_before = sink.len();
    let host = host_pattern(&raw.host, sink);
    let path = match &raw.path {
        None => Some("/".to_owned()),
        Some(path) => route_path(path, sink),
    };
    let label = format!(
        "route \"{}\"",
        raw.name.as_ref().map_or_else(
            || format!("{}{}", raw.host.get_ref(), path.as_deref().unwrap_or("")),
            |n| n.get_ref().clone()
        )
    );
    if let Some(name) = &raw.name {
        check_name(name, "route", sink);
    }
    let strip_prefix = raw.strip_prefix.as_ref().is_some_and(|s| *s.get_ref());
    let strip_root = raw.redirect.is_none() && path.as_deref() == Some("/");
    if let (Some(flag), true) = (&raw.strip_prefix, strip_root) {
        if *flag.get_ref() {
            sink.at(
                flag.span(),
                format!("{label}: strip_prefix needs a path other than \"/\""),
            );
        }
    }
    let action = match (&raw.upstream, &raw.redirect) {
        (Some(name), None) => {
            upstream_index(name, upstreams, sink).map(|upstream| RouteAction::Proxy { upstream })
        }
        (None, Some(redirect)) => {
            let proxy_only = [
                raw.strip_prefix
                    .as_ref()
                    .map(|s| (s.span(), "strip_prefix")),
                raw.max_body_size
                    .as_ref()
                    .map(|s| (s.span(), "max_body_size")),
                raw.fallback
                    .as_ref()
                    .and_then(|f| f.static_dir.as_ref().or(f.upstream.as_ref()))
                    .map(|s| (s.span(), "fallback")),
            ];
            for (span, key) in proxy_only.into_iter().flatten() {
                sink.at(
                    span,
                    format!(
                        "{label}: {key} only applies to routes with an upstream, not redirects"
                    ),
                );
            }
            self::redirect(redirect, sink).map(RouteAction::Redirect)
        }
        (Some(_), Some(redirect)) => {
            sink.at(
                redirect.span(),
                format!("{label} has both upstream and redirect; keep one"),
            );
            None
        }
        (None, None) => {
            sink.at(
                spanned.span(),
                format!("{label} needs an upstream or a redirect"),
            );
            None
        }
    };
    let fallback = raw
        .fallback
        .as_ref()
        .and_then(|f| match (&f.static_dir, &f.upstream) {
            (Some(dir), None) => {
                non_empty_path(dir, "static_dir", base_dir, sink).map(Fallback::StaticDir)
            }
            (None, Some(name)) => upstream_index(name, upstreams, sink).map(Fallback::Upstream),
            (Some(dir), Some(_)) => {
                sink.at(
                    dir.span(),
                    format!("{label}: fallback has either static_dir or upstream, not both"),
                );
                None
            }
            (None, None) => {
                sink.at(
                    raw.host.span(),
                    format!("{label}: fallback needs static_dir or upstream"),
                );
                None
            }
        });
    let max_body_size = match &raw.max_body_size {
        None => Some(DEFAULT_MAX_BODY_SIZE),
        Some(size) => match parse_size(size.get_ref()) {
            Ok(0) => None,
            Ok(n) => Some(n),
            Err(message) => {
                sink.at(size.span(), format!("{label}: max_body_size {message}"));
                None
            }
        },
    };
    let rate_limit = raw.rate_limit.as_ref().and_then(|name| {
        let wanted = name.get_ref();
        let found = rate_limits.iter().position(|l| &l.name == wanted);
        if found.is_none() {
            let hint = did_you_mean(wanted, rate_limits.iter().map(|l| l.name.as_str()))
                .map(|s| format!(" (did you mean \"{s}\"?)"))
                .unwrap_or_default();
            sink.at(
                name.span(),
                format!("unknown rate limit \"{wanted}\"{hint}"),
            );
        }
        found
    });
    if sink.len() > errors_before {
        return None;
    }
    let (host, path, action) = (host?, path?, action?);
    let name = match &raw.name {
        Some(name) => name.get_ref().clone(),
        None => format!("{host}{path}"),
    };
    Some(RouteConfig {
        name,
        host,
        path,
        strip_prefix,
        action,
        fallback,
        max_body_size,
        rate_limit,
    })
}

fn route_path(path: &Spanned<String>, sink: &mut ErrorSink<'_>) -> Option<String> {
    let text = path.get_ref();
    let problem = if !text.starts_with('/') {
        Some("must start with '/'")
    } else if text.contains(|c: char| c.is_whitespace() || c.is_control()) {
        Some("must not contain spaces or control characters")
    } else if text.contains(['?', '#']) {
        Some("must not contain '?' or '#' (routes match the path without its query)")
    } else {
        None
    };
    match problem {
        Some(problem) => {
            sink.at(path.span(), format!("route path \"{text}\" {problem}"));
            None
        }
        None => Some(text.clone()),
    }
}

/// Upstream and route names appear in logs and metric labels: keep them plain.
fn check_name(name: &Spanned<String>, what: &str, sink: &mut ErrorSink<'_>) -> bool {
    let text = name.get_ref();
    let plain = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/' | b'*'));
    if !plain {
        sink.at(
            name.span(),
            format!(
                "{what} name \"{text}\" must be 1 to 64 letters, digits, '_', '-', '.', '/' or '*'"
            ),
        );
    }
    plain
}

fn non_empty_path(
    path: &Spanned<String>,
    key: &str,
    base_dir: &Path,
    sink: &mut ErrorSink<'_>,
) -> Option<PathBuf> {
    if path.get_ref().trim().is_empty() {
        sink.at(path.span(), format!("{key} must not be empty"));
        return None;
    }
    Some(base_dir.join(path.get_ref()))
}

fn host_pattern(host: &Spanned<String>, sink: &mut ErrorSink<'_>) -> Option<HostPattern> {
    let text = host.get_ref();
    if text == "*" {
        return Some(HostPattern::Any);
    }
    let (wildcard, name) = match text.strip_prefix("*.") {
        Some(suffix) => (true, suffix),
        None => (false, text.as_str()),
    };
    match normalize_host(name.as_bytes()) {
        Ok(name) if wildcard => Some(HostPattern::Wildcard(format!(".{name}"))),
        Ok(name) => Some(HostPattern::Exact(name.into_owned())),
        Err(error) => {
            sink.at(
                host.span(),
                format!("invalid route host \"{text}\": {error} (expected \"example.com\", \"*.example.com\" or \"*\")"),
            );
            None
        }
    }
}

fn upstream_index(
    name: &Spanned<String>,
    upstreams: &[UpstreamConfig],
    sink: &mut ErrorSink<'_>,
) -> Option<usize> {
    let wanted = name.get_ref();
    if let Some(index) = upstreams.iter().position(|u| &u.name == wanted) {
        return Some(index);
    }
    let hint = did_you_mean(wanted, upstreams.iter().map(|u| u.name.as_str()))
        .map(|s| format!(" (did you mean \"{s}\"?)"))
        .unwrap_or_default();
    sink.at(name.span(), format!("unknown upstream \"{wanted}\"{hint}"));
    None
}

fn redirect(raw: &Spanned<super::raw::RawRedirect>, sink: &mut ErrorSink<'_>) -> Option<Redirect> {
    let raw = raw.get_ref();
    let to = raw.to.get_ref();
    let after_scheme = to
        .strip_prefix("https://")
        .or_else(|| to.strip_prefix("http://"));
    let has_host = after_scheme.is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
    let scheme_ok = has_host || to.starts_with('/');
    if !scheme_ok || to.contains(|c: char| c.is_whitespace() || c.is_control()) {
        sink.at(
            raw.to.span(),
            format!(
                "redirect target \"{to}\" must be an http(s):// URL with a host, or a path starting with '/'"
            ),
        );
        return None;
    }
    let code = match &raw.code {
        None => 301,
        Some(code) => match u16::try_from(*code.get_ref()) {
            Ok(c @ (301 | 302 | 303 | 307 | 308)) => c,
            _ => {
                sink.at(
                    code.span(),
                    format!(
                        "redirect code {} is not one of 301, 302, 303, 307, 308",
                        code.get_ref()
                    ),
                );
                return None;
            }
        },
    };
    let keep_path = raw.keep_path.unwrap_or(true);
    // The request path brings its own leading '/'.
    let to = if keep_path {
        to.trim_end_matches('/')
    } else {
        to
    };
    Some(Redirect {
        to: to.to_owned(),
        code,
        keep_path,
    })
}
