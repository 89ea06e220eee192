//! Who the client is: the TCP peer, unless the peer is a trusted proxy (a CDN, a load
//! balancer), in which case the address it reports in the configured header.
//!
//! A header from an untrusted peer is never believed: anyone can send `X-Forwarded-For`.

use std::net::IpAddr;

use http::header::HeaderMap;
use ipnet::IpNet;

use crate::config::{ClientIpConfig, ClientIpHeader};

#[derive(Debug, Clone)]
pub struct ClientIpPolicy {
    trusted: Vec<IpNet>,
    header: ClientIpHeader,
}

// === impl ClientIpPolicy ===

impl ClientIpPolicy {
    pub fn new(config: &ClientIpConfig) -> Self {
        Self {
            trusted: config.trusted_proxies.clone(),
            header: config.header.clone(),
        }
    }

    pub fn is_trusted(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        self.trusted.iter().any(|net| net.contains(&addr))
    }

    /// The client address for a request that arrived from `peer` with `headers`.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if self.trusted.is_empty() || !self.is_trusted(peer) {
            return peer;
        }
        match &self.header {
            ClientIpHeader::Single(name) => headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<IpAddr>().ok())
                .map_or(peer, canonical),
            ClientIpHeader::XForwardedFor => self.rightmost_untrusted(peer, headers),
        }
    }

    /// Walks `X-Forwarded-For` from the right (the hop nearest to us) past trusted proxies;
    /// the first untrusted address is the client. An unparsable entry ends the walk, since
    /// anything left of it was written by someone we cannot vouch for.
    fn rightmost_untrusted(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer;
        let values = headers.get_all("x-forwarded-for").iter().rev();
        for value in values {
            let Ok(text) = value.to_str() else {
                return client;
            };
            for entry in text.rsplit(',') {
                let Ok(addr) = entry.trim().parse::<IpAddr>() else {
                    return client;
                };
                client = canonical(addr);
                if !self.is_trusted(client) {
                    return client;
                }
            }
        }
        client
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`, from dual-stack sockets) as plain IPv4, so
/// that IPv4 CIDRs match them.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn policy(header: ClientIpHeader) -> ClientIpPolicy {
        ClientIpPolicy::new(&ClientIpConfig {
            trusted_proxies: vec![
                "10.0.0.0/8".parse().unwrap(),
                "173.245.48.0/20".parse().unwrap(),
            ],
            header,
        })
    }

    fn headers(name: &'static str, value: &'static str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(name, HeaderValue::from_static(value));
        map
    }

    #[test]
    fn untrusted_peer_cannot_spoof() {
        let p = policy(ClientIpHeader::XForwardedFor);
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(
            p.resolve(peer, &headers("x-forwarded-for", "1.2.3.4")),
            peer
        );
    }

    #[test]
    fn trusted_peer_gives_rightmost_untrusted_forwarded_address() {
        let p = policy(ClientIpHeader::XForwardedFor);
        let peer: IpAddr = "10.1.1.1".parse().unwrap();
        let h = headers("x-forwarded-for", "6.6.6.6, 198.51.100.7, 173.245.48.5");
        assert_eq!(
            p.resolve(peer, &h),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn single_address_header_from_cdn() {
        let p = policy(ClientIpHeader::Single(http::HeaderName::from_static(
            "cf-connecting-ip",
        )));
        let peer: IpAddr = "::ffff:173.245.48.1".parse().unwrap();
        let h = headers("cf-connecting-ip", "2001:db8::5");
        assert_eq!(
            p.resolve(peer, &h),
            "2001:db8::5".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            p.resolve(peer, &HeaderMap::new()),
            "173.245.48.1".parse::<IpAddr>().unwrap()
        );
    }
}
