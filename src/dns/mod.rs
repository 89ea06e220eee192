//! Authoritative GeoDNS: static zones from RFC 1035 files plus names answered with the
//! nearest healthy region, served over UDP and TCP (hickory-proto and hickory-server types,
//! our own socket loops).
//!
//! Data flow: `ZoneSpec`/`RegionSpec` (from config) → `DnsView::build` (zones loaded and
//! checked, one immutable generation) → `handler` (one query → one response, no sockets)
//! → `server` (our UDP and TCP loops calling `handler`). `RrlSpec` (from config) →
//! `ResponseRateLimiter` (`rrl`), which the UDP loop asks before it sends each response.

pub mod ecs;
pub mod error;
pub mod geoip;
pub mod handler;
pub mod policy;
pub mod resolve;
pub mod rrl;
pub mod server;
pub mod service;
pub mod spec;
pub mod tcp;
pub mod udp;
pub mod view;
pub mod zone;

#[cfg(test)]
mod tests;

pub use error::{DnsError, ZoneError};
pub use geoip::{GeoDb, GeoHit};
pub use handler::{respond, QueryOutcome, Response, Transport};
pub use policy::Selection;
pub use rrl::{ResponseKey, ResponseRateLimiter, Verdict};
pub use server::{serve, DnsState};
pub use spec::{GeoNameSpec, GeoPolicy, RegionSpec, RrlSpec, ZoneSpec};
pub use view::DnsView;
pub use zone::Zone;
