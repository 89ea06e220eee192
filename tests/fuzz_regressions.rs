//! Inputs found by the fuzz campaign (fuzz/README.md), kept so they stay fixed. Each test names
//! its finding.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use headland::dns::{
    respond, DnsView, GeoDb, GeoNameSpec, GeoPolicy, RegionSpec, Transport, ZoneSpec,
};
use hickory_proto::op::{Message, ResponseCode};

/// F1: `headland check` promises one `FILE:LINE:COL: message` line per error, but messages
/// quote the user's strings unescaped, so a value with a newline prints a second line that
/// looks like another (or a forged) error. Fuzz input: a `[client_ip] header` of
/// `"]\n&CF-Connecting-IP"` (config_loader, structure-aware mode).
#[test]
fn config_error_messages_stay_on_one_line() {
    let texts = [
        "[client_ip]\nheader = \"]\\nfuzz.toml:1:1: ok\"\n",
        "[[routes]]\nhost = \"a.com\"\nupstream = \"x\\ny\"\n",
    ];
    for text in texts {
        let errors = headland::config::parse(text, "fuzz.toml", Path::new("."))
            .expect_err("the value is invalid");
        for error in &errors.0 {
            let shown = error.to_string();
            assert!(!shown.contains('\n'), "error spans lines: {shown:?}");
        }
    }
}

/// F2: a question whose name ends in a compression pointer (legal wire format, RFC 1035
/// §4.1.4) is echoed byte for byte (hickory-server's `Queries` keeps the original bytes), so
/// in the reply the pointer names other bytes: the reply's question is not the one asked, and
/// answer names compressed against it can decode wrongly too. Fuzz input (dns_handler, UDP
/// from 198.51.100.7), minimised: `lottery` `example` then a pointer to offset 3 (a zero byte
/// in the query's header, i.e. the root), type A, class IN. No valid query compresses its
/// question (only the header precedes it), so the answer is a header-only FORMERR: never a
/// question other than the one asked.
#[test]
fn dns_reply_never_echoes_a_compressed_question_as_another_name() {
    let view = view();
    // The fuzz input (REFUSED: not our zone), and a name in our zone (NXDOMAIN).
    let names: [(&[u8], &str); 2] = [
        (b"\x07lottery\x07example\xc0\x03", "lottery.example."),
        (
            b"\x07nothere\x07example\x03com\xc0\x03",
            "nothere.example.com.",
        ),
    ];
    for (name, expected) in names {
        let mut query = vec![0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        query.extend_from_slice(name);
        query.extend_from_slice(&[0, 1, 0, 1]);
        let asked = Message::from_vec(&query).unwrap();
        assert_eq!(asked.queries[0].name().to_string(), expected);

        for transport in [Transport::Udp, Transport::Tcp] {
            let src = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
            let response = respond(&view, &|_: &str, _: &str| true, &query, src, transport);
            let reply = Message::from_vec(&response.bytes.expect("a reply")).unwrap();
            assert_eq!(
                reply.metadata.response_code,
                ResponseCode::FormErr,
                "{transport:?} {:?}",
                response.outcome
            );
            assert!(
                reply.queries.is_empty(),
                "{transport:?}: {:?}",
                reply.queries
            );
            assert_eq!(reply.metadata.id, 0x4242);
        }
    }
}

/// The DNS view of `src/dns/tests` (zones from config/zones/tests, test GeoIP database).
fn view() -> DnsView {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let region = |name: &str, octet: u8, lat: f64, lon: f64| RegionSpec {
        name: name.into(),
        v4: vec![[10, octet, 0, 1].into()],
        v6: vec![format!("fd00:{octet}::1").parse().unwrap()],
        lat,
        lon,
        countries: vec![],
        continents: vec![],
        weight: 1,
    };
    let regions = vec![
        region("apac", 1, 3.139, 101.69),
        region("na", 2, 39.0, -77.5),
        region("eu", 3, 50.1, 8.7),
    ];
    let zones = vec![ZoneSpec {
        origin: "example.com".into(),
        file: root.join("config/zones/tests/example.com.zone"),
        geo: vec![GeoNameSpec {
            label: "lottery".into(),
            regions: vec!["apac".into(), "na".into(), "eu".into()],
            ttl: 30,
            policy: GeoPolicy::Weighted,
            fail_open: true,
        }],
    }];
    let geodb = GeoDb::open(&root.join("geoip/test-city.mmdb")).unwrap();
    DnsView::build(&zones, &regions, Some(Arc::new(geodb))).unwrap()
}
