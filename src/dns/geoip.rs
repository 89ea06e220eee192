//! Client location from a MaxMind DB (GeoLite2-City, DB-IP City Lite or the test database):
//! country, continent, coordinates and the prefix of the network that matched.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::{geoip2, Reader};

use crate::dns::error::DnsError;

/// What the database says about one client network.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoHit {
    /// ISO 3166-1 alpha-2 code, uppercase, as the database spells it.
    pub country: Option<String>,
    /// Two-letter continent code (AF AN AS EU NA OC SA).
    pub continent: Option<String>,
    /// (latitude, longitude) in degrees.
    pub location: Option<(f64, f64)>,
    /// Prefix length of the database network that matched, in the terms of the address
    /// family looked up (an IPv4 address reports an IPv4 prefix even in an IPv6 tree). This
    /// is the ECS scope of a geo answer (RFC 7871 section 7.2.1).
    pub prefix_len: u8,
}

impl GeoHit {
    /// Whether the hit carries nothing a policy can use.
    pub fn is_unknown(&self) -> bool {
        self.country.is_none() && self.continent.is_none() && self.location.is_none()
    }
}

/// An opened GeoIP database, held in memory so that a file replaced on disk (geoipupdate's
/// rename) cannot change under a running reader; a reload opens the new file.
pub struct GeoDb {
    reader: Reader<Vec<u8>>,
    path: PathBuf,
}

impl fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoDb")
            .field("path", &self.path)
            .field("database_type", &self.reader.metadata().database_type)
            .finish()
    }
}

// === impl GeoDb ===

impl GeoDb {
    /// Reads the whole file into memory and checks that it is a MaxMind DB.
    pub fn open(path: &Path) -> Result<GeoDb, DnsError> {
        let bytes = std::fs::read(path).map_err(|error| DnsError::GeoIp {
            path: path.to_path_buf(),
            message: format!("cannot read: {error}"),
        })?;
        Self::from_bytes(bytes, path)
    }

    /// Wraps database bytes; `path` is only used in errors and logs.
    pub fn from_bytes(bytes: Vec<u8>, path: &Path) -> Result<GeoDb, DnsError> {
        let reader = Reader::from_source(bytes).map_err(|error| DnsError::GeoIp {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
        Ok(GeoDb {
            reader,
            path: path.to_path_buf(),
        })
    }

    /// The file this database came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Looks up one address.
    ///
    /// `None` means the lookup itself failed (e.g. an IPv6 address in an IPv4-only database
    /// or a corrupt record). An address whose network has no data gives a hit with no
    /// country, continent or location but with that network's prefix, because the answer a
    /// client gets then is valid for exactly that network.
    pub fn lookup(&self, ip: IpAddr) -> Option<GeoHit> {
        // Dual-stack sockets report IPv4 clients as ::ffff:a.b.c.d; the database files them
        // under IPv4.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        let result = match self.reader.lookup(ip) {
            Ok(result) => result,
            Err(error) => {
                tracing::debug!(%ip, %error, "geoip lookup failed");
                return None;
            }
        };
        let prefix_len = network_prefix(ip, &result)?;
        let city = match result.decode::<geoip2::City>() {
            Ok(city) => city,
            Err(error) => {
                tracing::debug!(%ip, %error, "geoip record does not decode as a city record");
                return None;
            }
        };
        Some(hit_from_city(city.as_ref(), prefix_len))
    }
}

/// The matched network's prefix in the looked-up family's terms.
fn network_prefix(ip: IpAddr, result: &maxminddb::LookupResult<'_, Vec<u8>>) -> Option<u8> {
    let network = match result.network() {
        Ok(network) => network,
        Err(error) => {
            tracing::debug!(%ip, %error, "geoip network of a lookup is unusable");
            return None;
        }
    };
    let prefix = network.prefix();
    // maxminddb reports an IPv6 network for an IPv4 address when the match lies above the
    // IPv4 subtree (::/96) of an IPv6 tree: that network then covers all of IPv4.
    Some(match (ip, network.is_ipv6()) {
        (IpAddr::V4(_), true) => prefix.saturating_sub(96).min(32),
        _ => prefix,
    })
}

fn hit_from_city(city: Option<&geoip2::City<'_>>, prefix_len: u8) -> GeoHit {
    let Some(city) = city else {
        return GeoHit {
            country: None,
            continent: None,
            location: None,
            prefix_len,
        };
    };
    let location = match (city.location.latitude, city.location.longitude) {
        (Some(lat), Some(lon)) if lat.is_finite() && lon.is_finite() => Some((lat, lon)),
        _ => None,
    };
    GeoHit {
        country: city.country.iso_code.map(str::to_ascii_uppercase),
        continent: city.continent.code.map(str::to_ascii_uppercase),
        location,
        prefix_len,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn test_db() -> GeoDb {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("geoip/test-city.mmdb");
        GeoDb::open(&path).unwrap()
    }

    fn lookup(ip: &str) -> Option<GeoHit> {
        test_db().lookup(ip.parse().unwrap())
    }

    #[test]
    fn documentation_ranges_map_to_test_regions() {
        let my = lookup("192.0.2.77").unwrap();
        assert_eq!(my.country.as_deref(), Some("MY"));
        assert_eq!(my.continent.as_deref(), Some("AS"));
        // Kuala Lumpur as the test CSV has it (3.14 is a latitude here, not pi).
        #[allow(clippy::approx_constant)]
        let kuala_lumpur = (3.14, 101.69);
        assert_eq!(my.location, Some(kuala_lumpur));
        assert_eq!(my.prefix_len, 24, "IPv4 prefix reported in IPv4 terms");

        let us = lookup("198.51.100.1").unwrap();
        assert_eq!(us.country.as_deref(), Some("US"));
        let de = lookup("2001:db8:3:ff::1").unwrap();
        assert_eq!(de.country.as_deref(), Some("DE"));
        assert_eq!(de.continent.as_deref(), Some("EU"));
        assert_eq!(de.prefix_len, 48);
    }

    #[test]
    fn mapped_ipv4_is_looked_up_as_ipv4() {
        let hit = lookup("::ffff:203.0.113.5").unwrap();
        assert_eq!(hit.country.as_deref(), Some("DE"));
        assert_eq!(hit.prefix_len, 24);
    }

    #[test]
    fn private_test_ranges_report_their_slash_16() {
        let hit = lookup("10.2.200.1").unwrap();
        assert_eq!(hit.country.as_deref(), Some("US"));
        assert_eq!(hit.location, Some((39.0, -77.5)));
        assert_eq!(hit.prefix_len, 16);
    }

    #[test]
    fn unknown_network_has_prefix_but_no_data() {
        let hit = lookup("127.0.0.1").unwrap();
        assert!(hit.is_unknown());
        assert!(hit.prefix_len <= 32);
    }

    #[test]
    fn garbage_database_is_an_error() {
        let error = GeoDb::from_bytes(b"not a database".to_vec(), Path::new("x.mmdb")).unwrap_err();
        assert!(
            error.to_string().starts_with("geoip database x.mmdb: "),
            "{error}"
        );
    }
}
