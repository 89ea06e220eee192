//! Errors of the DNS subsystem: zone files, view building, GeoIP and the server.

use std::fmt;
use std::path::PathBuf;

/// A problem in one zone file, located as precisely as the zone parser allows.
///
/// Displayed as `path:line: message` when the line is known, else `path: message` (the
/// message then names the record or owner name at fault).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneError {
    /// The zone file.
    pub path: PathBuf,
    /// 1-based line of the record at fault, when it could be found.
    pub line: Option<usize>,
    /// What is wrong, lowercase, naming the record or owner when there is no line.
    pub message: String,
}

impl fmt::Display for ZoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.path.display(), line, self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for ZoneError {}

/// Every error the DNS subsystem reports.
///
/// `DnsView::build` returns all of them at once so that `headland check` can print every
/// problem of a configuration in one run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// A zone file could not be read, parsed or accepted.
    #[error(transparent)]
    Zone(#[from] ZoneError),

    /// A configured zone origin is not a valid domain name.
    #[error("zone {origin:?}: invalid origin: {message}")]
    InvalidOrigin { origin: String, message: String },

    /// Two zones share one origin.
    #[error("zone {origin:?} is configured twice")]
    DuplicateZone { origin: String },

    /// Two regions share one name.
    #[error("region {name:?} is defined twice")]
    DuplicateRegion { name: String },

    /// A geo name's label does not form a valid name inside its zone.
    #[error("zone {zone:?}: geo name {label:?} is not a valid label: {message}")]
    InvalidGeoLabel {
        zone: String,
        label: String,
        message: String,
    },

    /// A geo name is configured twice in one zone.
    #[error("geo name {name} is configured twice")]
    DuplicateGeoName { name: String },

    /// A geo name lists a region that no `RegionSpec` defines.
    #[error("geo name {name} names unknown region {region:?}{hint}")]
    UnknownRegion {
        name: String,
        region: String,
        hint: String,
    },

    /// A geo name lists no region at all.
    #[error("geo name {name} lists no regions")]
    NoRegions { name: String },

    /// A geo name sits where the zone file already has data it would contradict.
    #[error("geo name {name} collides with {what} in zone file {path}")]
    GeoCollision {
        name: String,
        what: String,
        path: PathBuf,
    },

    /// The GeoIP database could not be opened or is not usable.
    #[error("geoip database {path}: {message}")]
    GeoIp { path: PathBuf, message: String },

    /// The DNS server failed (sockets, tasks).
    #[error("dns server: {message}")]
    Server { message: String },
}
