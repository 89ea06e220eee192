//! `dns::respond` on arbitrary wire bytes, over UDP and TCP, from IPv4 and IPv6 sources, with
//! any set of regions down. The view is the one the unit tests use (config/zones/tests, the
//! test GeoIP database, four regions, geo names of both policies).
//!
//! Input: byte 0 = flags (bit 0 TCP, bit 1 IPv6 source, bits 2..6 regions down), then 4 or 16
//! bytes of source address, then the query.
//!
//! Properties checked: nothing panics; a reply is sent exactly when the outcome is not
//! "dropped"; a reply is at least a header, keeps the query ID, has QR set, parses as a DNS
//! message, fits 1232 bytes over UDP and 65535 over TCP, and echoes the question's name with
//! its case (0x20) when it has one and the query had exactly one (see finding F2 in
//! README.md for questions that use a compression pointer).
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use headland::dns::{
    respond, DnsView, GeoDb, GeoNameSpec, GeoPolicy, RegionSpec, Transport, ZoneSpec,
};
use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;

const REGIONS: [&str; 4] = ["apac", "na", "eu", "v4only"];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let tcp = flags & 1 != 0;
    let (src, query) = if flags & 2 != 0 {
        let Some((addr, query)) = rest.split_first_chunk::<16>() else {
            return;
        };
        (IpAddr::V6(Ipv6Addr::from(*addr)), query)
    } else {
        let Some((addr, query)) = rest.split_first_chunk::<4>() else {
            return;
        };
        (IpAddr::V4(Ipv4Addr::from(*addr)), query)
    };
    let down = flags >> 2;
    let up = |_: &str, region: &str| {
        REGIONS
            .iter()
            .position(|r| *r == region)
            .is_none_or(|i| down & (1 << i) == 0)
    };
    let transport = if tcp { Transport::Tcp } else { Transport::Udp };

    let response = respond(view(), &up, query, src, transport);
    let (reply, outcome) = (response.bytes, response.outcome);

    assert!(!outcome.rcode.is_empty());
    assert_eq!(reply.is_none(), outcome.rcode == "dropped", "{outcome:?}");
    let Some(reply) = reply else {
        return;
    };
    assert!(reply.len() >= 12, "reply of {} bytes", reply.len());
    assert_eq!(&reply[..2], &query[..2], "reply does not keep the query ID");
    assert!(reply[2] & 0x80 != 0, "reply without QR");
    if tcp {
        assert!(reply.len() <= 65535, "TCP reply of {} bytes", reply.len());
    } else {
        assert!(reply.len() <= 1232, "UDP reply of {} bytes", reply.len());
    }
    let message = match Message::from_vec(&reply) {
        Ok(message) => message,
        Err(error) => panic!("reply does not parse ({error}): {reply:?}"),
    };
    // Finding F2 (fuzz/README.md): a question ending in a compression pointer was once echoed
    // byte for byte, so in the reply the pointer named other bytes.
    if let (Some(answered), Ok(asked)) = (
        message.queries.first(),
        Message::from_vec(query),
    ) {
        if let [asked] = asked.queries.as_slice() {
            assert_eq!(
                answered.name().to_string(),
                asked.name().to_string(),
                "question not echoed with its case"
            );
        }
    }
});

fn view() -> &'static DnsView {
    static VIEW: OnceLock<DnsView> = OnceLock::new();
    VIEW.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let zones = root.join("config/zones/tests");
        let geodb = GeoDb::open(&root.join("geoip/test-city.mmdb")).expect("test GeoIP database");
        DnsView::build(&zone_specs(&zones), &regions(), Some(Arc::new(geodb)))
            .expect("test view builds")
    })
}

/// The same data as `src/dns/tests/mod.rs` (which is `cfg(test)`, so not reachable here).
fn region(name: &str, octet: u8, lat: f64, lon: f64, country: &str, continent: &str) -> RegionSpec {
    RegionSpec {
        name: name.into(),
        v4: vec![[10, octet, 0, 1].into(), [10, octet, 0, 2].into()],
        v6: vec![format!("fd00:{octet}::1").parse().unwrap()],
        lat,
        lon,
        countries: vec![country.into()],
        continents: vec![continent.into()],
        weight: 1,
    }
}

fn regions() -> Vec<RegionSpec> {
    let mut v4only = region("v4only", 4, 0.0, 0.0, "ZZ", "AN");
    v4only.v6.clear();
    vec![
        region("apac", 1, 3.139, 101.69, "MY", "AS"),
        region("na", 2, 39.0, -77.5, "US", "NA"),
        region("eu", 3, 50.1, 8.7, "DE", "EU"),
        v4only,
    ]
}

fn geo(label: &str, regions: &[&str], policy: GeoPolicy, fail_open: bool) -> GeoNameSpec {
    GeoNameSpec {
        label: label.into(),
        regions: regions.iter().map(|r| r.to_string()).collect(),
        ttl: 30,
        policy,
        fail_open,
    }
}

fn zone_specs(dir: &std::path::Path) -> Vec<ZoneSpec> {
    let three = ["apac", "na", "eu"];
    vec![
        ZoneSpec {
            origin: "example.com".into(),
            file: dir.join("example.com.zone"),
            geo: vec![
                geo("api", &three, GeoPolicy::Nearest, true),
                geo("@", &["na", "eu"], GeoPolicy::Nearest, true),
                geo("closed", &three, GeoPolicy::Nearest, false),
                geo("lottery", &three, GeoPolicy::Weighted, true),
                geo("legacy", &["v4only"], GeoPolicy::Nearest, true),
                geo("api.eu.svc", &["eu"], GeoPolicy::Nearest, true),
            ],
        },
        ZoneSpec {
            origin: "sub.example.com.".into(),
            file: dir.join("sub.example.com.zone"),
            geo: vec![],
        },
    ]
}
