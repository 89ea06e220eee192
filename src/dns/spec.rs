//! Plain descriptions of zones, regions, geo names and the response rate limit, filled in
//! by the configuration layer and turned into a `DnsView` by `DnsView::build` (and a
//! `ResponseRateLimiter` by the server).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// One region: where it is, which clients prefer it, and the addresses it answers with.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionSpec {
    /// Config name (`[regions.NAME]`), also the key of its health state.
    pub name: String,
    /// Addresses given in A answers.
    pub v4: Vec<Ipv4Addr>,
    /// Addresses given in AAAA answers.
    pub v6: Vec<Ipv6Addr>,
    /// Latitude in degrees, for the distance fallback of `GeoPolicy::Nearest`.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// ISO 3166-1 alpha-2 codes, uppercase, whose clients this region serves first.
    pub countries: Vec<String>,
    /// Continent codes (AF AN AS EU NA OC SA) whose clients this region serves first.
    pub continents: Vec<String>,
    /// Relative share of answers under `GeoPolicy::Weighted`.
    pub weight: u32,
}

/// How a geo name picks its region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeoPolicy {
    /// Country match, then continent match, then shortest great-circle distance.
    Nearest,
    /// Random, proportional to `RegionSpec::weight`; does not depend on the client.
    Weighted,
}

/// A name answered by geolocation instead of by the zone file.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoNameSpec {
    /// Relative to the zone origin; `"@"` is the apex.
    pub label: String,
    /// Region names, in the order used when the client's location is unknown.
    pub regions: Vec<String>,
    /// TTL of the A/AAAA answers.
    pub ttl: u32,
    /// Selection policy.
    pub policy: GeoPolicy,
    /// When every region is down, answer with every region instead of with nothing.
    pub fail_open: bool,
}

/// One authoritative zone.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneSpec {
    /// Zone origin such as `"example.com"` (a trailing dot is accepted).
    pub origin: String,
    /// RFC 1035 master file with the zone's static records.
    pub file: PathBuf,
    /// Names answered by geolocation.
    pub geo: Vec<GeoNameSpec>,
}

/// Response Rate Limiting of UDP answers (`[dns.rate_limit]`), as BIND's `rate-limit` and
/// Knot's `rrl`: see `dns::rrl` for what counts as one response and how accounts work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrlSpec {
    /// Identical responses per second to one client network before limiting starts; also
    /// the burst (an idle account holds this many). 0 turns rate limiting off. Default: 10,
    /// the middle of the 5 to 20 recommended for BIND's RRL on authoritative servers. A
    /// resolver asks for one name once per TTL, so even a farm of resolvers sharing one /24
    /// stays far below 10 a second for any one name and type (names with TTL 0, such as
    /// DNS-01 challenges, are asked a handful of times per validation); a reflection flood
    /// aimed at that network is cut to 10 full answers a second plus the truncated slips.
    pub responses_per_second: u32,
    /// How long a flood stays limited after it stops: an account can fall to
    /// `-window × responses_per_second` (BIND's `window`). Default: 15s, as BIND.
    pub window: Duration,
    /// Every `slip`-th limited response goes out truncated (TC=1, no records) so a real
    /// resolver retries over TCP; the others are dropped. 0 drops all, 1 truncates all.
    /// Default: 2, as BIND.
    pub slip: u8,
    /// IPv4 clients are counted per network of this prefix length. Default: 24.
    pub ipv4_prefix: u8,
    /// IPv6 clients are counted per network of this prefix length. Default: 56.
    pub ipv6_prefix: u8,
    /// Clients never limited. Default: loopback (127.0.0.0/8 and ::1), which no remote host
    /// can spoof: Linux drops packets from a loopback source that arrive on any other
    /// interface (a "martian source"; for IPv4 unless `route_localnet` is set), so limiting
    /// them protects no one, while local tools and benchmarks ask from there.
    pub exempt: Vec<IpNet>,
    /// Accounts kept at most, about 32 bytes each; past this, new (network, response)
    /// pairs take the place of idle ones. Default: 65,536 (about 2 MiB).
    pub table_size: usize,
}

/// 127.0.0.0/8 and ::1/128 (RFC 6890); evaluated at compile time.
const LOOPBACK_V4: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8);
const LOOPBACK_V6: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128);

// === impl RrlSpec ===

impl Default for RrlSpec {
    fn default() -> Self {
        Self {
            responses_per_second: 10,
            window: Duration::from_secs(15),
            slip: 2,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            exempt: vec![IpNet::V4(LOOPBACK_V4), IpNet::V6(LOOPBACK_V6)],
            table_size: 65_536,
        }
    }
}
