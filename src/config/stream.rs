//! `[[streams]]`: TCP connections carried to an upstream pool, chosen by listen address and,
//! for TLS passthrough, by the server name of the ClientHello.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::error::ErrorSink;
use super::field::{suggestion, Limits, Scope};
use super::raw::RawStream;
use super::{ListenConfig, UpstreamConfig};

/// nginx's `proxy_timeout` default: an SSH or database session quiet for longer is gone.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Under a second a client cannot even type; the timer would cut sessions mid-handshake.
const IDLE_TIMEOUT_LIMITS: Limits<Duration> = Limits::at_least(Duration::from_secs(1));

/// One `[[streams]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// Used in logs and metrics; unique. Default: `sni` when set, else the listen address.
    pub name: String,
    /// Where connections arrive. Fixed at start, like `[listen]`.
    pub listen: SocketAddr,
    /// TLS passthrough: only connections whose ClientHello names this server, stored
    /// lowercase. Default: none (every connection on `listen`).
    pub sni: Option<String>,
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    /// A connection with no byte in either direction for this long is closed; at least 1s.
    /// Default: 10m.
    pub idle_timeout: Duration,
}

/// A stream as validated so far, with the spans later cross-checks point at.
struct Parsed {
    config: StreamConfig,
    listen_span: Range<usize>,
    /// The name if written, else the listen address it defaults from.
    name_span: Range<usize>,
    sni_span: Option<Range<usize>>,
}

pub(super) fn streams(
    raw: &[Spanned<RawStream>],
    listen: &ListenConfig,
    upstreams: &[UpstreamConfig],
    sink: &mut ErrorSink<'_>,
) -> Vec<StreamConfig> {
    let parsed: Vec<Parsed> = raw
        .iter()
        .filter_map(|stream| stream_entry(stream.get_ref(), upstreams, sink))
        .collect();
    for (i, stream) in parsed.iter().enumerate() {
        check_listen(stream, listen, sink);
        let earlier = &parsed[..i];
        // The same sni on the same address is reported below, and names it already.
        let same_route = |other: &Parsed| {
            other.config.listen == stream.config.listen && other.config.sni == stream.config.sni
        };
        let named_twice = earlier
            .iter()
            .any(|other| other.config.name == stream.config.name && !same_route(other));
        if named_twice {
            sink.at(
                stream.name_span.clone(),
                format!(
                    "stream name \"{}\" is used twice (set name to tell the streams apart in logs and metrics)",
                    stream.config.name
                ),
            );
        }
        check_sharing(stream, earlier, sink);
    }
    parsed.into_iter().map(|p| p.config).collect()
}

fn stream_entry(
    raw: &RawStream,
    upstreams: &[UpstreamConfig],
    sink: &mut ErrorSink<'_>,
) -> Option<Parsed> {
    let listen = super::validate::listen_addr(&raw.listen, sink);
    let sni = raw.sni.as_ref().and_then(|sni| server_name(sni, sink));
    let name = match &raw.name {
        Some(name) if name.get_ref().trim().is_empty() => {
            sink.at(name.span(), "stream name must not be empty");
            None
        }
        Some(name) => Some(name.get_ref().clone()),
        None => sni.clone().or_else(|| listen.map(|addr| addr.to_string())),
    };
    let scope = Scope::new(format!(
        "stream \"{}\": ",
        name.as_deref().unwrap_or_default()
    ));
    let idle_timeout = scope.duration(
        "idle_timeout",
        raw.idle_timeout.as_ref(),
        DEFAULT_IDLE_TIMEOUT,
        IDLE_TIMEOUT_LIMITS,
        sink,
    );
    let upstream = upstream_index(&scope, &raw.upstream, upstreams, sink);
    Some(Parsed {
        config: StreamConfig {
            name: name?,
            listen: listen?,
            sni,
            upstream: upstream?,
            idle_timeout,
        },
        listen_span: raw.listen.span(),
        name_span: raw.name.as_ref().map_or(raw.listen.span(), Spanned::span),
        sni_span: raw.sni.as_ref().map(Spanned::span),
    })
}

fn upstream_index(
    scope: &Scope,
    name: &Spanned<String>,
    upstreams: &[UpstreamConfig],
    sink: &mut ErrorSink<'_>,
) -> Option<usize> {
    let wanted = name.get_ref();
    if let Some(index) = upstreams.iter().position(|u| u.name == *wanted) {
        return Some(index);
    }
    let hint = suggestion(wanted, upstreams.iter().map(|u| u.name.as_str()));
    let message = format!("{} \"{wanted}\" is unknown{hint}", scope.name("upstream"));
    sink.at(name.span(), message);
    None
}

/// A host name as a ClientHello carries it (RFC 6066 §3: a DNS host name, never an IP
/// address, no trailing dot), lowercased.
fn server_name(raw: &Spanned<String>, sink: &mut ErrorSink<'_>) -> Option<String> {
    let name = raw.get_ref().to_ascii_lowercase();
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let is_ip = name.parse::<std::net::IpAddr>().is_ok();
    if name.len() <= 253 && !is_ip && name.split('.').all(label_ok) {
        return Some(name);
    }
    sink.at(
        raw.span(),
        format!(
            "sni \"{}\" is not a host name (expected e.g. \"db.example.com\"; TLS clients never send an IP address or a wildcard)",
            raw.get_ref()
        ),
    );
    None
}

/// Two sockets on one port collide when their addresses are equal or either is a wildcard
/// of the same family: the second bind fails with EADDRINUSE.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// A stream's listener may not take a port a `[listen]` listener binds (DNS binds TCP too).
fn check_listen(stream: &Parsed, listen: &ListenConfig, sink: &mut ErrorSink<'_>) {
    let addr = stream.config.listen;
    let taken = [("http", &listen.http), ("https", &listen.https)]
        .into_iter()
        .flat_map(|(kind, addrs)| addrs.iter().map(move |a| (kind, *a)))
        .chain(listen.admin.map(|a| ("admin", a)))
        .chain(listen.dns.iter().map(|a| ("dns", *a)))
        .find(|(_, other)| overlaps(addr, *other));
    if let Some((kind, other)) = taken {
        sink.at(
            stream.listen_span.clone(),
            format!(
                "stream \"{}\": listen address {addr} collides with [listen] {kind} address {other}",
                stream.config.name
            ),
        );
    }
}

/// Streams on one address: exactly one without `sni`, or any number with distinct ones.
/// Different addresses that would bind the same port are refused as well.
fn check_sharing(stream: &Parsed, earlier: &[Parsed], sink: &mut ErrorSink<'_>) {
    let this = &stream.config;
    if let Some(other) = earlier
        .iter()
        .map(|p| &p.config)
        .find(|other| other.listen != this.listen && overlaps(this.listen, other.listen))
    {
        sink.at(
            stream.listen_span.clone(),
            format!(
                "stream \"{}\": listen address {} collides with stream \"{}\"'s {}",
                this.name, this.listen, other.name, other.listen
            ),
        );
        return;
    }
    let Some(other) = earlier.iter().map(|p| &p.config).find(|other| {
        other.listen == this.listen && (other.sni.is_none() || other.sni == this.sni)
    }) else {
        if this.sni.is_none() && earlier.iter().any(|p| p.config.listen == this.listen) {
            sink.at(
                stream.listen_span.clone(),
                format!(
                    "stream \"{}\" needs sni: {} is shared with other streams, which sni tells apart",
                    this.name, this.listen
                ),
            );
        }
        return;
    };
    let message = match (&this.sni, &other.sni) {
        (Some(sni), Some(_)) => format!(
            "stream \"{}\": sni \"{sni}\" on {} is stream \"{}\"'s already",
            this.name, this.listen, other.name
        ),
        _ => format!(
            "stream \"{}\": {} already carries stream \"{}\" without sni (an address has one stream without sni, or only streams with distinct sni)",
            this.name, this.listen, other.name
        ),
    };
    let span = stream
        .sni_span
        .clone()
        .filter(|_| this.sni.is_some() && other.sni.is_some())
        .unwrap_or_else(|| stream.listen_span.clone());
    sink.at(span, message);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::parse;

    fn errors(body: &str) -> String {
        let text = format!("[listen]\nhttp = [\"127.0.0.1:80\"]\n\n[upstreams.db]\nservers = [\"127.0.0.1:5432\"]\n\n{body}");
        parse(&text, "t.toml", Path::new("/"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn defaults_and_names() {
        let text = "[upstreams.db]\nservers = [\"127.0.0.1:5432\"]\n\n[[streams]]\nlisten = \"0.0.0.0:5433\"\nupstream = \"db\"\n\n[[streams]]\nlisten = \"0.0.0.0:5434\"\nsni = \"DB.Example.com\"\nupstream = \"db\"\n";
        let config = parse(text, "t.toml", Path::new("/")).unwrap();
        let [plain, tls] = &config.streams[..] else {
            panic!("two streams")
        };
        assert_eq!(plain.name, "0.0.0.0:5433");
        assert_eq!(plain.idle_timeout, std::time::Duration::from_secs(600));
        assert_eq!(tls.name, "db.example.com");
        assert_eq!(tls.sni.as_deref(), Some("db.example.com"));
    }

    #[test]
    fn one_address_takes_one_plain_stream_or_distinct_names() {
        let stream = |sni: &str| {
            format!("[[streams]]\nlisten = \"0.0.0.0:5433\"\nupstream = \"db\"\n{sni}\n")
        };
        let ok = format!(
            "{}{}",
            stream("sni = \"a.test\""),
            stream("sni = \"b.test\"")
        );
        assert_eq!(errors(&ok), "");
        let twice = format!(
            "{}{}",
            stream("sni = \"a.test\""),
            stream("sni = \"A.test\"")
        );
        assert!(
            errors(&twice).contains("is stream \"a.test\"'s already"),
            "{}",
            errors(&twice)
        );
        let mixed = format!("{}{}", stream("sni = \"a.test\""), stream("name = \"x\""));
        assert!(errors(&mixed).contains("needs sni"), "{}", errors(&mixed));
        let overlapping = "[[streams]]\nlisten = \"0.0.0.0:5433\"\nupstream = \"db\"\n[[streams]]\nlisten = \"127.0.0.1:5433\"\nupstream = \"db\"\n";
        assert!(errors(overlapping).contains("collides with stream"));
    }

    #[test]
    fn sni_must_be_a_host_name() {
        for bad in ["10.0.0.1", "*.example.com", "a..b", "-a.test", ""] {
            let body = format!(
                "[[streams]]\nlisten = \"0.0.0.0:5433\"\nupstream = \"db\"\nsni = \"{bad}\"\n"
            );
            assert!(errors(&body).contains("is not a host name"), "{bad}");
        }
    }

    #[test]
    fn listen_may_not_take_a_listen_section_port() {
        let body = "[[streams]]\nlisten = \"0.0.0.0:80\"\nupstream = \"db\"\n";
        assert!(errors(body).contains("collides with [listen] http address 127.0.0.1:80"));
    }
}
