//! `[geoip]`, `[regions.NAME]`, `[dns.zones."ZONE"]` and `[dns.rate_limit]` (in
//! `dns_rrl`): what the embedded authoritative DNS server answers, and how often. Zone
//! files and the GeoIP database are read here, so a broken zone file is a located config
//! error and a reload with one keeps the previous zones serving.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::error::ErrorSink;
use super::field::{suggestion, Limits, Scope};
use super::raw::{RawConfig, RawGeoName, RawRegion, RawZone};
use super::{HealthCheck, HttpProbe, Probe, StatusSet};
use crate::dns::{DnsView, GeoDb, GeoNameSpec, GeoPolicy, RegionSpec, RrlSpec, ZoneSpec};

const CONTINENTS: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];
const DEFAULT_GEO_TTL: u32 = 30;
/// Seconds a resolver may cache a geo answer: up to a day.
const GEO_TTLS: RangeInclusive<i64> = 0..=86_400;
const DEFAULT_WEIGHT: u32 = 1;
const WEIGHTS: RangeInclusive<i64> = 1..=1000;
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Shortest pause between two probes of a region's health URL: "0s" made the prober a hot
/// loop (one probe after another, no pause). 100 ms still lets a fast failover or a test
/// see a verdict within a second.
const MIN_HEALTH_INTERVAL: Duration = Duration::from_millis(100);
/// Shortest time one probe may take: "0s" fails every probe at once and takes the region
/// out of the answers, and a probe needs a TCP handshake and an HTTP exchange.
const MIN_HEALTH_TIMEOUT: Duration = Duration::from_millis(100);
/// Probes in a row that turn a region up (`rise`) or down (`fall`).
const PROBE_COUNTS: RangeInclusive<i64> = 1..=100;

#[derive(Debug, Clone, Default)]
pub struct DnsConfig {
    /// In name order.
    pub regions: Vec<RegionConfig>,
    pub zones: Vec<ZoneSpec>,
    /// `[geoip] database`. Default: none (every client's location is unknown).
    pub geoip: Option<PathBuf>,
    /// Zones loaded and checked, regions resolved: what queries are answered from.
    pub view: Arc<DnsView>,
    /// `[dns.rate_limit]`: response rate limiting of UDP answers. Default: on, see
    /// `RrlSpec::default`.
    pub rate_limit: RrlSpec,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RegionConfig {
    pub spec: RegionSpec,
    /// Default: none (the region always counts as up).
    pub health: Option<RegionProbe>,
    /// Where another region's edge forwards requests for this region over HTTPS (routes with
    /// `fallback = { regions = true }`). Default: the first address, port 443.
    pub edge: SocketAddr,
}

/// Where and how a region's health URL is probed.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionProbe {
    pub url: String,
    pub addr: SocketAddr,
    pub check: HealthCheck,
}

pub fn dns(
    raw: &RawConfig,
    node_region: Option<&str>,
    base_dir: &Path,
    sink: &mut ErrorSink<'_>,
) -> DnsConfig {
    let regions: Vec<RegionConfig> = raw
        .regions
        .iter()
        .filter_map(|(name, region)| self::region(name, region, sink))
        .collect();
    let names: Vec<&str> = raw.regions.keys().map(String::as_str).collect();
    if let (Some(node_region), false) = (node_region, names.is_empty()) {
        if !names.contains(&node_region) {
            let hint = suggestion(node_region, names.iter().copied());
            sink.at(
                raw.node.region.as_ref().map_or(0..0, Spanned::span),
                format!("node region \"{node_region}\" is not one of [regions]{hint}"),
            );
        }
    }
    let geoip = raw
        .geoip
        .database
        .as_ref()
        .and_then(|path| Scope::new("geoip ").path("database", path, base_dir, sink));
    let database = geoip.as_ref().and_then(|path| match GeoDb::open(path) {
        Ok(db) => Some(Arc::new(db)),
        Err(error) => {
            if let Some(raw_path) = &raw.geoip.database {
                sink.at(raw_path.span(), error.to_string());
            }
            None
        }
    });
    let mut zones = Vec::new();
    let mut spans = Vec::new();
    // A zone whose geo names have errors still loads its file (without them), so that
    // zone-file errors are reported in the same run.
    for (origin, zone) in &raw.dns.zones {
        let has_geoip = raw.geoip.database.is_some();
        let spec = self::zone(origin, zone, &names, has_geoip, base_dir, sink);
        let file = spec.file.display().to_string();
        spans.push(([spec.origin.clone(), file], zone.get_ref().file.span()));
        zones.push(spec);
    }
    let specs: Vec<RegionSpec> = regions.iter().map(|r| r.spec.clone()).collect();
    // A zone without a file name was reported above; reading "" would only add a second,
    // less clear error for the same key.
    let named: Vec<ZoneSpec> = zones
        .iter()
        .filter(|zone| !zone.file.as_os_str().is_empty())
        .cloned()
        .collect();
    let view = match DnsView::build(&named, &specs, database) {
        Ok(view) => Arc::new(view),
        Err(errors) => {
            for error in errors {
                let text = error.to_string();
                let span = spans
                    .iter()
                    .find(|(keys, _)| keys.iter().any(|key| text.contains(key.as_str())))
                    .map_or(0..0, |(_, span)| span.clone());
                sink.at(span, text);
            }
            Arc::default()
        }
    };
    let rate_limit = super::dns_rrl::rate_limit(raw.dns.rate_limit.as_ref(), sink);
    DnsConfig {
        regions,
        zones,
        geoip,
        view,
        rate_limit,
    }
}

fn region(name: &str, raw: &Spanned<RawRegion>, sink: &mut ErrorSink<'_>) -> Option<RegionConfig> {
    let errors_before = sink.len();
    let region = raw.get_ref();
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for address in &region.addresses {
        match address.get_ref().parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => v4.push(ip),
            Ok(IpAddr::V6(ip)) => v6.push(ip),
            Err(_) => sink.at(
                address.span(),
                format!(
                    "region {name}: \"{}\" is not an IP address",
                    address.get_ref()
                ),
            ),
        }
    }
    if region.addresses.is_empty() {
        sink.at(
            raw.span(),
            format!("region {name} needs at least one address"),
        );
    }
    let (lat, lon) = match &region.location {
        Some(location) => {
            let at = location.get_ref();
            if !(-90.0..=90.0).contains(&at.lat) || !(-180.0..=180.0).contains(&at.lon) {
                sink.at(
                    location.span(),
                    format!("region {name}: location needs lat in -90..90 and lon in -180..180"),
                );
            }
            (at.lat, at.lon)
        }
        None => {
            sink.at(raw.span(), format!("region {name} needs location = {{ lat = ..., lon = ... }} (used to pick the nearest region)"));
            (0.0, 0.0)
        }
    };
    let countries = codes(region.countries.as_deref(), name, "country", sink, |c| {
        c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase())
    });
    let continents = codes(region.continents.as_deref(), name, "continent", sink, |c| {
        CONTINENTS.contains(&c)
    });
    let scope = Scope::new(format!("region {name}: "));
    let weight = scope.integer(
        "weight",
        region.weight.as_ref(),
        DEFAULT_WEIGHT,
        &[WEIGHTS],
        sink,
    );
    let health = region
        .health
        .as_ref()
        .and_then(|url| region_probe(&scope, url, region, sink));
    let first = v4.first().copied().map(IpAddr::V4);
    let first = first.or_else(|| v6.first().copied().map(IpAddr::V6));
    let edge = match &region.edge {
        Some(edge) => edge.get_ref().parse::<SocketAddr>().ok().or_else(|| {
            sink.at(
                edge.span(),
                format!(
                    "{} \"{}\" must be an IP address and port, e.g. \"203.0.113.10:443\"",
                    scope.name("edge"),
                    edge.get_ref()
                ),
            );
            None
        }),
        None => first.map(|ip| SocketAddr::new(ip, 443)),
    };
    if sink.len() > errors_before {
        return None;
    }
    let edge = edge?;
    Some(RegionConfig {
        spec: RegionSpec {
            name: name.to_owned(),
            v4,
            v6,
            lat,
            lon,
            countries,
            continents,
            weight,
        },
        health,
        edge,
    })
}

/// Two-letter codes, uppercased, each checked by `valid`.
fn codes(
    raw: Option<&[Spanned<String>]>,
    region: &str,
    what: &str,
    sink: &mut ErrorSink<'_>,
    valid: impl Fn(&str) -> bool,
) -> Vec<String> {
    raw.unwrap_or_default()
        .iter()
        .filter_map(|code| {
            let upper = code.get_ref().to_ascii_uppercase();
            if valid(&upper) {
                Some(upper)
            } else {
                let expected = if what == "continent" {
                    CONTINENTS.join(", ")
                } else {
                    "an ISO 3166 alpha-2 code such as \"MY\"".to_owned()
                };
                sink.at(
                    code.span(),
                    format!(
                        "region {region}: {what} \"{}\" is not valid (expected {expected})",
                        code.get_ref()
                    ),
                );
                None
            }
        })
        .collect()
}

/// `http://IP[:PORT]/PATH`: probed directly, so the host must be an address.
fn region_probe(
    scope: &Scope,
    url: &Spanned<String>,
    region: &RawRegion,
    sink: &mut ErrorSink<'_>,
) -> Option<RegionProbe> {
    // Read before the URL, so that a wrong URL does not hide the other probe keys' errors.
    let interval = scope.duration(
        "health_interval",
        region.health_interval.as_ref(),
        DEFAULT_HEALTH_INTERVAL,
        Limits::at_least(MIN_HEALTH_INTERVAL),
        sink,
    );
    let timeout = scope.duration(
        "health_timeout",
        region.health_timeout.as_ref(),
        DEFAULT_HEALTH_TIMEOUT,
        Limits::at_least(MIN_HEALTH_TIMEOUT),
        sink,
    );
    let rise = scope.integer("rise", region.rise.as_ref(), 2, &[PROBE_COUNTS], sink);
    let fall = scope.integer("fall", region.fall.as_ref(), 3, &[PROBE_COUNTS], sink);
    let text = url.get_ref();
    let uri = text.parse::<http::Uri>().ok();
    let parsed = uri.as_ref().and_then(|uri| {
        if uri.scheme_str() != Some("http") {
            return None;
        }
        let authority = uri.authority()?;
        let ip: IpAddr = authority.host().trim_matches(['[', ']']).parse().ok()?;
        Some((
            SocketAddr::new(ip, authority.port_u16().unwrap_or(80)),
            authority.to_string(),
            uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        ))
    });
    let Some((addr, host, path)) = parsed else {
        sink.at(url.span(), format!("{} \"{text}\" must be an http:// URL with an IP address, e.g. \"http://203.0.113.10/.well-known/headland/health\" (probed directly, without DNS)", scope.name("health")));
        return None;
    };
    Some(RegionProbe {
        url: text.clone(),
        addr,
        check: HealthCheck {
            probe: Probe::Http(HttpProbe {
                method: "GET".to_owned(),
                path,
                host: Some(host),
                expect: StatusSet::success(),
                body_contains: None,
            }),
            interval,
            timeout,
            rise,
            fall,
            start_down: false,
        },
    })
}

fn zone(
    origin: &str,
    raw: &Spanned<RawZone>,
    regions: &[&str],
    has_geoip: bool,
    base_dir: &Path,
    sink: &mut ErrorSink<'_>,
) -> ZoneSpec {
    let zone = raw.get_ref();
    let file = Scope::new(format!("zone {origin}: "))
        .path("file", &zone.file, base_dir, sink)
        .unwrap_or_default();
    let geo = zone
        .geo
        .iter()
        .filter_map(|(label, geo)| geo_name(origin, label, geo, regions, has_geoip, sink))
        .collect();
    ZoneSpec {
        origin: origin.trim_end_matches('.').to_ascii_lowercase(),
        file,
        geo,
    }
}

fn geo_name(
    origin: &str,
    label: &str,
    raw: &Spanned<RawGeoName>,
    regions: &[&str],
    has_geoip: bool,
    sink: &mut ErrorSink<'_>,
) -> Option<GeoNameSpec> {
    let errors_before = sink.len();
    let geo = raw.get_ref();
    let name = if label == "@" {
        origin.to_owned()
    } else {
        format!("{label}.{origin}")
    };
    for region in &geo.regions {
        if !regions.contains(&region.get_ref().as_str()) {
            let hint = suggestion(region.get_ref(), regions.iter().copied());
            sink.at(
                region.span(),
                format!(
                    "geo name {name} names unknown region \"{}\"{hint}",
                    region.get_ref()
                ),
            );
        }
    }
    if geo.regions.is_empty() {
        sink.at(
            raw.span(),
            format!("geo name {name} needs at least one region"),
        );
    }
    let scope = Scope::new(format!("geo name {name}: "));
    let ttl = scope.integer("ttl", geo.ttl.as_ref(), DEFAULT_GEO_TTL, &[GEO_TTLS], sink);
    let before_policy = sink.len();
    let policy = scope.choice(
        "policy",
        geo.policy.as_ref(),
        GeoPolicy::Nearest,
        &[
            ("nearest", GeoPolicy::Nearest),
            ("weighted", GeoPolicy::Weighted),
        ],
        sink,
    );
    // A misspelt policy is reported as such, not also as "nearest" without a database.
    let policy_read = sink.len() == before_policy;
    if policy_read && policy == GeoPolicy::Nearest && !has_geoip {
        sink.at(
            raw.span(),
            format!("geo name {name} uses policy \"nearest\", which needs [geoip] database"),
        );
    }
    (sink.len() == errors_before).then(|| GeoNameSpec {
        label: label.to_owned(),
        regions: geo.regions.iter().map(|r| r.get_ref().clone()).collect(),
        ttl,
        policy,
        fail_open: geo.fail_open.unwrap_or(true),
    })
}
