//! Test support for the DNS module (test zones, regions, health, query builders) and the
//! tests that cross modules: `respond` behaviour, fuzzing, and the real server.

mod fuzz;
mod respond;
mod serve;

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

use crate::dns::geoip::GeoDb;
use crate::dns::{DnsView, GeoNameSpec, GeoPolicy, RegionSpec, ZoneSpec};

/// Where the test zone files live, relative to the crate root.
const TESTDATA: &str = "config/zones/tests";

pub(crate) fn testdata(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(TESTDATA)
        .join(file)
}

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

/// apac (Kuala Lumpur, 10.1.0.x), na (Ashburn, 10.2.0.x), eu (Frankfurt, 10.3.0.x), and
/// v4only (10.4.0.x, no IPv6).
pub(crate) fn regions() -> Vec<RegionSpec> {
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

pub(crate) fn zone_specs() -> Vec<ZoneSpec> {
    let three = ["apac", "na", "eu"];
    vec![
        ZoneSpec {
            origin: "example.com".into(),
            file: testdata("example.com.zone"),
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
            file: testdata("sub.example.com.zone"),
            geo: vec![],
        },
    ]
}

pub(crate) fn test_geodb() -> Arc<GeoDb> {
    let database = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("geoip/test-city.mmdb");
    Arc::new(GeoDb::open(&database).unwrap())
}

pub(crate) fn view() -> DnsView {
    DnsView::build(&zone_specs(), &regions(), Some(test_geodb())).unwrap()
}

/// Region health that tests flip.
#[derive(Default)]
pub(crate) struct Health {
    down: Mutex<HashSet<String>>,
}

impl Health {
    pub(crate) fn set_up(&self, region: &str, up: bool) {
        let mut down = self.down.lock().unwrap();
        if up {
            down.remove(region);
        } else {
            down.insert(region.to_string());
        }
    }

    pub(crate) fn up(&self, region: &str) -> bool {
        !self.down.lock().unwrap().contains(region)
    }
}

/// A query under construction.
#[derive(Clone)]
pub(crate) struct Q {
    pub message: Message,
}

pub(crate) fn q(name: &str, rtype: RecordType) -> Q {
    let mut message = Message::new(0x4242, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    Q { message }
}

impl Q {
    pub(crate) fn edns(mut self, payload: u16) -> Q {
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        self.message.set_edns(edns);
        self
    }

    pub(crate) fn ecs(mut self, net: &str) -> Q {
        let subnet = ClientSubnet::from_str(net).unwrap();
        let mut edns = self.message.edns.take().unwrap_or_default();
        if edns.max_payload() == 512 {
            edns.set_max_payload(1232);
        }
        edns.options_mut().insert(EdnsOption::Subnet(subnet));
        self.message.set_edns(edns);
        self
    }

    pub(crate) fn class(mut self, class: DNSClass) -> Q {
        self.message.queries[0].set_query_class(class);
        self
    }

    pub(crate) fn bytes(&self) -> Vec<u8> {
        self.message.to_vec().unwrap()
    }
}

/// The ECS option of a response, as (source prefix, scope prefix, address).
pub(crate) fn ecs_of(message: &Message) -> Option<(u8, u8, IpAddr)> {
    match message
        .edns
        .as_ref()?
        .option(hickory_proto::rr::rdata::opt::EdnsCode::Subnet)?
    {
        EdnsOption::Subnet(s) => Some((s.source_prefix(), s.scope_prefix(), s.addr())),
        _ => None,
    }
}

/// Answer addresses of a response, sorted, as text.
pub(crate) fn addresses(message: &Message) -> Vec<String> {
    let mut out: Vec<String> = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    out.sort();
    out
}
