//! Plain descriptions of zones, regions and geo names, filled in by the configuration layer
//! and turned into a `DnsView` by `DnsView::build`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

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
