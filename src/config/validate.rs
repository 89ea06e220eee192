//! Turns the raw file into a [`Config`], collecting every located problem instead of stopping
//! at the first one.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;
use toml::Spanned;

use super::error::{did_you_mean, ErrorSink, LocatedErrors};
use super::raw::{RawConfig, RawNode, RawRoute, RawUpstream};
use super::units::{parse_duration, parse_size};
use super::{
    AccessLogOutput, Balance, ClientIpConfig, ClientIpHeader, Config, HostPattern, ListenConfig,
    NodeConfig, Redirect, RouteAction, RouteConfig, UpstreamConfig, UpstreamTimeouts,
};
use crate::host::normalize_host;

const DEFAULT_HTTP_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 80);
const DEFAULT_ADMIN_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9180);
const DEFAULT_STATE_DIR: &str = "/var/lib/headland";
/// Plesk's nginx default, so that uploads that worked behind it keep working.
const DEFAULT_MAX_BODY_SIZE: u64 = 128 << 20;
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
    let listen = ListenConfig {
        http: match &raw.listen.http {
            Some(addrs) => addrs
                .iter()
                .filter_map(|a| listen_addr(a, &mut sink))
                .collect(),
            None => vec![DEFAULT_HTTP_LISTEN],
        },
        admin: match &raw.listen.admin {
            Some(addr) if addr.get_ref() == "off" => None,
            Some(addr) => listen_addr(addr, &mut sink),
            None => Some(DEFAULT_ADMIN_LISTEN),
        },
        h2c: raw.listen.h2c.unwrap_or(false),
    };
    let client_ip = client_ip(&raw, &mut sink);
    let access_log = match raw.access_log.output.as_ref().map(|o| o.get_ref().as_str()) {
        None | Some("stdout") => AccessLogOutput::Stdout,
        Some("off") => AccessLogOutput::Off,
        Some(path) => AccessLogOutput::File(base_dir.join(path)),
    };
    let upstreams: Vec<UpstreamConfig> = raw
        .upstreams
        .iter()
        .map(|(name, upstream)| self::upstream(name, upstream, &mut sink))
        .collect();
    let routes = routes(&raw.routes, &upstreams, base_dir, &mut sink);

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
        region: raw.region.as_ref().map(|r| r.get_ref().clone()),
        state_dir: raw
            .state_dir
            .as_ref()
            .map_or(PathBuf::from(DEFAULT_STATE_DIR), |dir| {
                base_dir.join(dir.get_ref())
            }),
        threads,
    }
}

fn default_node_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "headland".to_owned())
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
    let mut duration = |field: &Option<Spanned<String>>, default: Duration, zero_ok: bool| {
        let Some(text) = field else { return default };
        match parse_duration(text.get_ref()) {
            Ok(d) if d.is_zero() && !zero_ok => {
                sink.at(text.span(), "timeout must be greater than zero");
                default
            }
            Ok(d) => d,
            Err(message) => {
                sink.at(text.span(), message);
                default
            }
        }
    };
    let timeouts = UpstreamTimeouts {
        connect: duration(&raw.connect_timeout, DEFAULT_TIMEOUTS.connect, false),
        read: duration(&raw.read_timeout, DEFAULT_TIMEOUTS.read, false),
        write: duration(&raw.write_timeout, DEFAULT_TIMEOUTS.write, false),
        keepalive: duration(&raw.keepalive_timeout, DEFAULT_TIMEOUTS.keepalive, true),
    };
    UpstreamConfig {
        name: name.to_owned(),
        servers,
        balance,
        timeouts,
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
    base_dir: &Path,
    sink: &mut ErrorSink<'_>,
) -> Vec<RouteConfig> {
    let mut seen_places: HashMap<(HostPattern, String), usize> = HashMap::new();
    let mut seen_names: HashMap<String, usize> = HashMap::new();
    let mut routes = Vec::with_capacity(raw.len());
    for (index, spanned) in raw.iter().enumerate() {
        let Some(route) = self::route(spanned, upstreams, base_dir, sink) else {
            continue;
        };
        let place = (route.host.clone(), route.path.clone());
        if let Some(first) = seen_places.insert(place, index) {
            sink.at(
                spanned.get_ref().host.span(),
                format!(
                    "route for host \"{}\" path \"{}\" duplicates route #{} (routes are numbered from 1)",
                    route.host,
                    route.path,
                    first + 1
                ),
            );
        }
        if let Some(first) = seen_names.insert(route.name.clone(), index) {
            sink.at(
                spanned.span(),
                format!(
                    "route name \"{}\" is already used by route #{}",
                    route.name,
                    first + 1
                ),
            );
        }
        routes.push(route);
    }
    routes
}

fn route(
    spanned: &Spanned<RawRoute>,
    upstreams: &[UpstreamConfig],
    base_dir: &Path,
    sink: &mut ErrorSink<'_>,
) -> Option<RouteConfig> {
    let raw = spanned.get_ref();
    let host = host_pattern(&raw.host, sink)?;
    let path = match &raw.path {
        None => "/".to_owned(),
        Some(path)
            if path.get_ref().starts_with('/') && !path.get_ref().contains(char::is_whitespace) =>
        {
            path.get_ref().clone()
        }
        Some(path) => {
            sink.at(
                path.span(),
                format!(
                    "route path \"{}\" must start with '/' and contain no spaces",
                    path.get_ref()
                ),
            );
            return None;
        }
    };
    if raw.strip_prefix && path == "/" {
        sink.at(
            raw.host.span(),
            "strip_prefix needs a path other than \"/\"",
        );
    }
    let action = match (&raw.upstream, &raw.redirect) {
        (Some(name), None) => RouteAction::Proxy {
            upstream: upstream_index(name, upstreams, sink)?,
        },
        (None, Some(redirect)) => RouteAction::Redirect(self::redirect(redirect, sink)?),
        (Some(_), Some(redirect)) => {
            sink.at(
                redirect.span(),
                "a route has either upstream or redirect, not both",
            );
            return None;
        }
        (None, None) => {
            sink.at(
                spanned.span(),
                format!("route for host \"{host}\" needs an upstream or a redirect"),
            );
            return None;
        }
    };
    let fallback_static_dir = raw
        .fallback
        .as_ref()
        .map(|f| base_dir.join(f.static_dir.get_ref()));
    if let (Some(fallback), RouteAction::Redirect(_)) = (&raw.fallback, &action) {
        sink.at(
            fallback.static_dir.span(),
            "fallback only applies to routes with an upstream",
        );
    }
    let max_body_size = match &raw.max_body_size {
        None => Some(DEFAULT_MAX_BODY_SIZE),
        Some(size) => match parse_size(size.get_ref()) {
            Ok(0) => None,
            Ok(n) => Some(n),
            Err(message) => {
                sink.at(size.span(), message);
                None
            }
        },
    };
    let name = match &raw.name {
        Some(name) => name.get_ref().clone(),
        None => format!("{host}{path}"),
    };
    Some(RouteConfig {
        name,
        host,
        path,
        strip_prefix: raw.strip_prefix,
        action,
        fallback_static_dir,
        max_body_size,
    })
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
    let scheme_ok = to.starts_with("https://") || to.starts_with("http://") || to.starts_with('/');
    if !scheme_ok || to.contains(|c: char| c.is_whitespace() || c.is_control()) {
        sink.at(
            raw.to.span(),
            format!(
                "redirect target \"{to}\" must be an http(s):// URL or a path starting with '/'"
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
