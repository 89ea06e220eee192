//! Turns the raw file into a [`Config`], collecting every located problem instead of stopping
//! at the first one. This module holds the top level and the small sections; upstreams,
//! routes, rate limits, TLS and webhooks have modules of their own.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use toml::Spanned;

use super::error::{ErrorSink, LocatedErrors};
use super::field::{Limits, Scope};
use super::raw::{RawConfig, RawListen, RawNode};
use super::{
    AccessLogOutput, ClientIpConfig, ClientIpHeader, Config, ListenConfig, NodeConfig,
    UpstreamConfig,
};

const DEFAULT_HTTP_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 80);
const DEFAULT_ADMIN_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9180);
const DEFAULT_STATE_DIR: &str = "/var/lib/headland";
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

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
            _ => Scope::new("access_log ")
                .path("output", output, base_dir, &mut sink)
                .map_or(AccessLogOutput::Off, AccessLogOutput::File),
        },
    };
    let http = super::http_limits::http(&raw.http, &mut sink);
    let resolver = super::resolver::resolver(&raw.resolver, &mut sink);
    let upstreams: Vec<UpstreamConfig> = raw
        .upstreams
        .iter()
        .map(|(name, upstream)| super::upstream::upstream(name, upstream, base_dir, &mut sink))
        .collect();
    let rate_limits: Vec<_> = raw
        .rate_limits
        .iter()
        .filter_map(|(name, limit)| super::rate_limit::rate_limit(name, limit, &mut sink))
        .collect();
    let routes = super::route::routes(&raw.routes, &upstreams, &rate_limits, base_dir, &mut sink);
    let tls = super::tls::tls(
        &raw.tls,
        &raw.certificates,
        listen.https.len(),
        raw.acme.is_some(),
        // Only DNS-01 can prove control of a wildcard (RFC 8555 §7.1.3).
        raw.acme.as_ref().is_some_and(|acme| {
            acme.get_ref()
                .challenge
                .as_ref()
                .is_some_and(|c| c.get_ref() == "dns-01")
        }),
        base_dir,
        &mut sink,
    );
    let dns = super::dns::dns(&raw, node.region.as_deref(), base_dir, &mut sink);
    let acme = raw
        .acme
        .as_ref()
        .map(|acme| super::acme::acme(acme, &tls, &routes, (&listen, &dns), base_dir, &mut sink));
    check_region_fallbacks(&raw, &node, &dns, &mut sink);
    super::cert_coverage::check(&raw.routes, &listen, (&tls, acme.as_ref()), &mut sink);
    let cluster = raw
        .cluster
        .as_ref()
        .map(|cluster| super::cluster::cluster(cluster, raw.acme.is_some(), base_dir, &mut sink));
    let admin_token =
        raw.listen.admin_token_file.as_ref().and_then(|file| {
            Scope::default().secret("admin_token_file", file, base_dir, &mut sink)
        });
    let admin_public = raw.listen.admin_public.unwrap_or(false);
    check_admin_exposure(&raw.listen, listen.admin, admin_public, &mut sink);
    let streams = super::stream::streams(&raw.streams, &listen, &upstreams, &mut sink);
    let webhooks = raw
        .webhooks
        .iter()
        .filter_map(|hook| super::webhook::webhook(hook, base_dir, &mut sink))
        .collect();

    if !sink.is_empty() {
        return Err(sink.finish());
    }
    Ok(Config {
        warnings: sink.take_warnings(),
        node,
        listen,
        client_ip,
        access_log,
        http,
        upstreams,
        routes,
        webhooks,
        rate_limits,
        admin_token,
        admin_public,
        tls,
        acme,
        dns,
        cluster,
        resolver,
        streams,
    })
}

/// `fallback = { regions = true }` forwards to the nearest other region, measured from this
/// node's own: both must be known.
fn check_region_fallbacks(
    raw: &RawConfig,
    node: &NodeConfig,
    dns: &super::DnsConfig,
    sink: &mut ErrorSink<'_>,
) {
    let own_known = node
        .region
        .as_ref()
        .is_some_and(|own| dns.regions.iter().any(|r| r.spec.name == *own));
    for route in &raw.routes {
        let Some(regions) = route
            .get_ref()
            .fallback
            .as_ref()
            .and_then(|f| f.get_ref().regions.as_ref())
        else {
            continue;
        };
        if *regions.get_ref() && !own_known {
            sink.at(regions.span(), "fallback regions = true needs [node] region set to one of the [regions] (the nearest other region is measured from it)");
        }
    }
}

fn node(raw: &RawNode, base_dir: &Path, sink: &mut ErrorSink<'_>) -> NodeConfig {
    let scope = Scope::default();
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = scope.integer("threads", raw.threads.as_ref(), cpus, &[1..=1024], sink);
    let name = match &raw.name {
        Some(name) => {
            if name.get_ref().trim().is_empty() {
                sink.at(name.span(), "node name must not be empty");
            }
            name.get_ref().clone()
        }
        None => default_node_name(),
    };
    // Under a second no request that has started can finish; over an hour a stuck client
    // holds an upgrade hostage (the old process and its sockets live until it ends).
    let shutdown_timeout = scope.duration(
        "shutdown_timeout",
        raw.shutdown_timeout.as_ref(),
        DEFAULT_SHUTDOWN_TIMEOUT,
        Limits::between(Duration::from_secs(1), Duration::from_secs(3600)),
        sink,
    );
    NodeConfig {
        name,
        region: raw.region.as_ref().map(|region| {
            if region.get_ref().trim().is_empty() {
                sink.at(region.span(), "node region must not be empty");
            }
            region.get_ref().clone()
        }),
        state_dir: match &raw.state_dir {
            Some(dir) => scope
                .path("state_dir", dir, base_dir, sink)
                .unwrap_or_default(),
            None => PathBuf::from(DEFAULT_STATE_DIR),
        },
        threads,
        watch_config: raw.watch_config.unwrap_or(false),
        shutdown_timeout,
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
    // A DNS-only node needs no HTTP listener; anything else does (ACME, health endpoint).
    let other_listeners = raw.https.as_ref().is_some_and(|a| !a.is_empty())
        || raw.dns.as_ref().is_some_and(|a| !a.is_empty());
    if let Some(addrs) = raw
        .http
        .as_ref()
        .filter(|a| a.get_ref().is_empty() && !other_listeners)
    {
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
    let mut dns: Vec<SocketAddr> = Vec::new();
    for addr in raw.dns.iter().flatten() {
        if let Some(parsed) = listen_addr(addr, sink) {
            if parsed.ip().is_unspecified() {
                // Replies over UDP leave from whatever source address the kernel picks, and
                // resolvers drop answers that come from an address they did not ask.
                sink.at(addr.span(), format!("listen.dns address {parsed} is a wildcard: list each address this node answers DNS on (UDP answers must come from the address that was asked)"));
            }
            let tcp_taken = http.iter().any(|(h, _)| *h == parsed)
                || https.contains(&parsed)
                || admin == Some(parsed);
            if tcp_taken || dns.contains(&parsed) {
                sink.at(
                    addr.span(),
                    format!("listen address {parsed} is listed twice"),
                );
            }
            dns.push(parsed);
        }
    }
    ListenConfig {
        http: http.into_iter().map(|(addr, _)| addr).collect(),
        https,
        admin,
        dns,
        h2c: raw.h2c.unwrap_or(false),
    }
}

pub(super) fn listen_addr(addr: &Spanned<String>, sink: &mut ErrorSink<'_>) -> Option<SocketAddr> {
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
        .filter_map(|cidr| {
            Scope::new("client_ip.").network(
                "trusted_proxies",
                cidr,
                "\"173.245.48.0/20\" or \"2400:cb00::/32\"",
                sink,
            )
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

/// An admin listener that other hosts can reach must not serve `/metrics`, `/config` and
/// `/certs` to anyone: it needs the token (which remote peers must then present), or the
/// operator's explicit `admin_public = true` (a container whose port is published only to
/// the host, a management network behind a firewall).
fn check_admin_exposure(
    raw: &RawListen,
    admin: Option<SocketAddr>,
    admin_public: bool,
    sink: &mut ErrorSink<'_>,
) {
    let (Some(addr), Some(raw_addr)) = (admin, &raw.admin) else {
        return;
    };
    // `::ffff:127.0.0.1` is loopback too.
    let loopback = addr.ip().to_canonical().is_loopback();
    if loopback || admin_public || raw.admin_token_file.is_some() {
        return;
    }
    sink.at(
        raw_addr.span(),
        format!(
            "admin address {addr} is not loopback and there is no admin_token_file: /metrics, /config and /certs would be open to the network (set admin_token_file, or admin_public = true if the network is yours)"
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Fallback, HttpLimits};
    use super::*;

    fn errors(text: &str) -> String {
        parse(text, "t.toml", Path::new("/"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn new_keys_have_their_documented_defaults() {
        let text = "[upstreams.app]\nservers = [\"127.0.0.1:5000\"]\npassive = { failures = 2 }\n\n[[routes]]\nhost = \"a.test\"\nupstream = \"app\"\nfallback = { static_dir = \"x\" }\n";
        let config = parse(text, "t.toml", Path::new("/etc/headland")).unwrap();
        assert_eq!(config.http, HttpLimits::default());
        assert_eq!(config.http.keepalive_timeout, Duration::from_secs(75));
        assert_eq!(config.node.shutdown_timeout, Duration::from_secs(60));
        assert!(!config.admin_public);
        let passive = config.upstreams[0].passive;
        assert_eq!((passive.failures, passive.on_5xx), (2, false));
        let route = &config.routes[0];
        assert!(route.request_buffering);
        assert_eq!(
            route.fallback,
            Some(Fallback::StaticDir {
                dir: PathBuf::from("/etc/headland/x"),
                status: 503
            })
        );
    }

    #[test]
    fn an_admin_listener_others_can_reach_needs_a_token_or_an_opt_in() {
        let listen = |extra: &str| format!("[listen]\nhttp = [\"127.0.0.1:80\"]\n{extra}\n");
        for loopback in [
            "127.0.0.1:9180",
            "[::1]:9180",
            "[::ffff:127.0.0.1]:9180",
            "off",
        ] {
            let text = listen(&format!("admin = \"{loopback}\""));
            assert_eq!(errors(&text), "", "{loopback}");
        }
        for reachable in ["0.0.0.0:9180", "[::]:9180", "192.0.2.1:9180"] {
            let text = listen(&format!("admin = \"{reachable}\""));
            let message = errors(&text);
            assert!(
                message.starts_with("t.toml:3:9: admin address")
                    && message.contains("no admin_token_file"),
                "{reachable}: {message}"
            );
            let opted_in = listen(&format!("admin = \"{reachable}\"\nadmin_public = true"));
            let config = parse(&opted_in, "t.toml", Path::new("/")).unwrap();
            assert!(config.admin_public);
        }
        // A token file that cannot be read is reported once, as unreadable.
        let text = listen("admin = \"0.0.0.0:9180\"\nadmin_token_file = \"/nonexistent/token\"");
        let message = errors(&text);
        assert!(
            message.contains("cannot read admin_token_file"),
            "{message}"
        );
        assert!(!message.contains("not loopback"), "{message}");
    }
}
