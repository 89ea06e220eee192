//! `client_ip::ClientIpPolicy::resolve` with arbitrary trusted-proxy lists, peers and
//! client-IP headers (`X-Forwarded-For`, `CF-Connecting-IP`, `X-Real-IP`, ...), repeated or
//! not, with values that are either raw bytes or lists of addresses (IPv4, IPv6, IPv4-mapped,
//! addresses inside a trusted network, padded, garbage).
//!
//! Properties checked: nothing panics; the result is the peer (IPv4-mapped addresses shown
//! as IPv4) or an address written in one of the request's headers; an untrusted peer, or any
//! peer when nothing is trusted, always gets its own address back.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use headland::client_ip::ClientIpPolicy;
use headland::config::{ClientIpConfig, ClientIpHeader};
use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 6] = [
    "x-forwarded-for",
    "cf-connecting-ip",
    "x-real-ip",
    "true-client-ip",
    "forwarded",
    "fly-client-ip",
];

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    peer: Peer,
    trusted: Vec<(IpAddr, u8)>,
    /// 0 = X-Forwarded-For, otherwise `NAMES[n % len]` as a single-address header.
    header: u8,
    headers: Vec<(u8, HeaderText<'a>)>,
}

#[derive(Debug, Arbitrary)]
enum Peer {
    Plain(IpAddr),
    Mapped(Ipv4Addr),
    /// The network address of `trusted[n]`.
    Trusted(u8),
}

#[derive(Debug, Arbitrary)]
enum HeaderText<'a> {
    Raw(&'a [u8]),
    List(Vec<Entry<'a>>, u8),
}

#[derive(Debug, Arbitrary)]
enum Entry<'a> {
    Addr(IpAddr),
    Mapped(Ipv4Addr),
    Trusted(u8),
    Padded(IpAddr, u8),
    Raw(&'a str),
}

fuzz_target!(|input: Input<'_>| {
    let trusted: Vec<IpNet> = input
        .trusted
        .iter()
        .take(16)
        .filter_map(|(addr, len)| {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            IpNet::new(*addr, len % (max + 1)).ok().map(|n| n.trunc())
        })
        .collect();
    let in_trusted = |n: u8| -> Option<IpAddr> {
        let net = trusted.get(usize::from(n) % trusted.len().max(1))?;
        Some(net.network())
    };
    let peer = match input.peer {
        Peer::Plain(addr) => addr,
        Peer::Mapped(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
        Peer::Trusted(n) => in_trusted(n).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    };
    let header = match input.header {
        0 => ClientIpHeader::XForwardedFor,
        n => ClientIpHeader::Single(HeaderName::from_static(NAMES[usize::from(n) % NAMES.len()])),
    };

    let mut headers = HeaderMap::new();
    for (name, text) in input.headers.iter().take(8) {
        let bytes = match text {
            HeaderText::Raw(bytes) => bytes.to_vec(),
            HeaderText::List(entries, separator) => {
                let separator = [",", ", ", " , ", ",,", "\t,"][usize::from(*separator) % 5];
                entries
                    .iter()
                    .take(12)
                    .map(|entry| match entry {
                        Entry::Addr(addr) => addr.to_string(),
                        Entry::Mapped(v4) => v4.to_ipv6_mapped().to_string(),
                        Entry::Trusted(n) => {
                            in_trusted(*n).map_or_else(String::new, |a| a.to_string())
                        }
                        Entry::Padded(addr, pad) => {
                            format!("{}{addr}{}", " ".repeat(usize::from(pad % 3)), "\t")
                        }
                        Entry::Raw(text) => text.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(separator)
                    .into_bytes()
            }
        };
        if let Ok(value) = HeaderValue::from_bytes(&bytes) {
            let name = HeaderName::from_static(NAMES[usize::from(*name) % NAMES.len()]);
            headers.append(name, value);
        }
    }

    let policy = ClientIpPolicy::new(&ClientIpConfig {
        trusted_proxies: trusted.clone(),
        header,
    });
    let result = policy.resolve(peer, &headers);

    let peer = canonical(peer);
    if trusted.is_empty() || !policy.is_trusted(peer) {
        assert_eq!(result, peer, "an untrusted peer's header was believed");
    }
    if result != peer {
        let written = headers
            .values()
            .filter_map(|v| v.to_str().ok())
            .any(|text| {
                std::iter::once(text)
                    .chain(text.split(','))
                    .filter_map(|entry| entry.trim().parse::<IpAddr>().ok())
                    .any(|addr| canonical(addr) == result)
            });
        assert!(
            written,
            "{result} is neither the peer {peer} nor in the headers {headers:?}"
        );
    }
});

fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}
