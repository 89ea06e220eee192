//! `respond` behaviour: the protocol rules a client can observe.

use std::net::IpAddr;

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, RecordType};

use super::{addresses, ecs_of, q, view, Health, Q};
use crate::dns::handler::truncated;
use crate::dns::{respond, DnsView, QueryOutcome, Response, ResponseKey, Transport};

const SRC: &str = "100.100.100.100";

struct Fixture {
    view: DnsView,
    health: Health,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            view: view(),
            health: Health::default(),
        }
    }

    fn raw(
        &self,
        bytes: &[u8],
        src: &str,
        transport: Transport,
    ) -> (Option<Vec<u8>>, QueryOutcome) {
        let response = self.response(bytes, src, transport);
        (response.bytes, response.outcome)
    }

    fn response(&self, bytes: &[u8], src: &str, transport: Transport) -> Response {
        let up = |_: &str, r: &str| self.health.up(r);
        respond(
            &self.view,
            &up,
            bytes,
            src.parse::<IpAddr>().unwrap(),
            transport,
        )
    }

    /// The rate-limit key of the response to `query`.
    fn rate_key(&self, query: &Q) -> ResponseKey {
        self.response(&query.bytes(), SRC, Transport::Udp).rate_key
    }

    fn ask_from(
        &self,
        query: &Q,
        src: &str,
        transport: Transport,
    ) -> (Message, QueryOutcome, usize) {
        let (bytes, outcome) = self.raw(&query.bytes(), src, transport);
        let bytes = bytes.expect("a response");
        (Message::from_vec(&bytes).unwrap(), outcome, bytes.len())
    }

    fn ask(&self, query: &Q) -> (Message, QueryOutcome) {
        let (message, outcome, _) = self.ask_from(query, SRC, Transport::Udp);
        (message, outcome)
    }
}

fn soa_ttl(message: &Message) -> Option<u32> {
    message
        .authorities
        .iter()
        .find(|r| r.record_type() == RecordType::SOA)
        .map(|r| r.ttl)
}

#[test]
fn static_answer_is_authoritative_and_echoes_question_case() {
    let f = Fixture::new();
    let mut query = q("StAtIc.ExAmPlE.cOm.", RecordType::A);
    query.message.metadata.recursion_desired = true;
    let (bytes, outcome) = f.raw(&query.bytes(), SRC, Transport::Udp);
    let bytes = bytes.unwrap();
    let m = Message::from_vec(&bytes).unwrap();
    assert!(m.metadata.authoritative);
    assert!(m.metadata.recursion_desired, "RD copied");
    assert!(!m.metadata.recursion_available, "RA never set");
    assert_eq!(m.metadata.id, 0x4242);
    assert!(
        bytes.windows(6).any(|w| w == b"StAtIc"),
        "question bytes echoed as sent: {bytes:?}"
    );
    assert_eq!(m.queries[0].name().to_string(), "StAtIc.ExAmPlE.cOm.");
    assert_eq!(addresses(&m), vec!["203.0.113.10"]);
    assert!(m.edns.is_none(), "no EDNS in, none out");
    assert_eq!(
        outcome,
        QueryOutcome {
            zone: Some("example.com".into()),
            qtype: "A".into(),
            rcode: "noerror".into(),
            geo: None
        }
    );
}

#[test]
fn nxdomain_and_nodata_carry_soa_with_negative_ttl() {
    let f = Fixture::new();
    let (m, outcome) = f.ask(&q("missing.example.com.", RecordType::A));
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.metadata.authoritative);
    assert!(m.answers.is_empty());
    assert_eq!(soa_ttl(&m), Some(120), "min(SOA TTL 3600, MINIMUM 120)");
    assert_eq!(outcome.rcode, "nxdomain");

    for (name, rtype) in [
        ("mail.example.com.", RecordType::TXT),
        ("deep.example.com.", RecordType::A),
        ("b.deep.example.com.", RecordType::A),
        ("svc.example.com.", RecordType::A),
        ("eu.svc.example.com.", RecordType::AAAA),
        ("api.example.com.", RecordType::MX),
        ("example.com.", RecordType::Unknown(65280)),
    ] {
        let (m, outcome) = f.ask(&q(name, rtype));
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NoError,
            "{name} {rtype}"
        );
        assert!(m.answers.is_empty(), "{name} {rtype}");
        assert_eq!(soa_ttl(&m), Some(120), "{name} {rtype}");
        assert!(m.metadata.authoritative);
        assert_eq!(outcome.rcode, "noerror");
    }
    let (_, outcome) = f.ask(&q("example.com.", RecordType::Unknown(65280)));
    assert_eq!(outcome.qtype, "other");

    let (m, _) = f.ask(&q("a.sub.example.com.", RecordType::TXT));
    assert_eq!(soa_ttl(&m), Some(30), "child zone's own SOA");
}

#[test]
fn outside_our_zones_is_refused() {
    let f = Fixture::new();
    for name in ["example.org.", "com.", "."] {
        let (m, outcome) = f.ask(&q(name, RecordType::A));
        assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{name}");
        assert!(!m.metadata.authoritative);
        assert_eq!(outcome.zone, None);
        assert_eq!(outcome.rcode, "refused");
    }
    let (m, _) = f.ask(&q("static.example.com.", RecordType::A).class(DNSClass::CH));
    assert_eq!(m.metadata.response_code, ResponseCode::Refused, "class CH");
    let (m, _) = f.ask(&q("example.com.", RecordType::AXFR));
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::Refused,
        "no zone transfers"
    );
}

#[test]
fn cname_chains_are_followed_inside_our_zones() {
    let f = Fixture::new();
    let (m, _) = f.ask(&q("chain.example.com.", RecordType::A));
    let types: Vec<RecordType> = m.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(
        types,
        vec![RecordType::CNAME, RecordType::CNAME, RecordType::A]
    );

    let (m, _) = f.ask(&q("loop1.example.com.", RecordType::A));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 2, "loop stops after each name once");

    let (m, _) = f.ask(&q("ext.example.com.", RecordType::A));
    assert_eq!(
        m.answers.len(),
        1,
        "out-of-zone target left to the resolver"
    );

    let (m, _) = f.ask(&q("gone.example.com.", RecordType::A));
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NXDomain,
        "RFC 6604: last name decides"
    );
    assert_eq!(m.answers.len(), 1);

    let (m, _) = f.ask(&q("alias.example.com.", RecordType::CNAME));
    assert_eq!(m.answers.len(), 1, "CNAME asked for directly is not chased");

    let (m, outcome) = f.ask(&q("geoalias.example.com.", RecordType::A).ecs("203.0.113.0/24"));
    assert_eq!(outcome.geo, Some(("api.example.com".into(), "eu".into())));
    assert_eq!(m.answers.len(), 3, "CNAME plus eu's two A records");
    assert_eq!(
        ecs_of(&m).map(|e| e.1),
        Some(24),
        "chain to a geo name is client-dependent"
    );
}

#[test]
fn geo_answers_follow_ecs_with_scope() {
    let f = Fixture::new();
    for (net, region, a, scope) in [
        ("192.0.2.0/24", "apac", "10.1.0.1", 24),
        ("198.51.100.0/24", "na", "10.2.0.1", 24),
        ("203.0.113.128/25", "eu", "10.3.0.1", 24),
        ("2001:db8:2::/56", "na", "10.2.0.1", 48),
    ] {
        let (m, outcome) = f.ask(&q("API.example.com.", RecordType::A).ecs(net));
        assert_eq!(
            outcome.geo,
            Some(("api.example.com".into(), region.into())),
            "{net}"
        );
        assert_eq!(addresses(&m)[0], a, "{net}");
        assert!(m.answers.iter().all(|r| r.ttl == 30));
        let subnet: ipnet_like::Net = net.into();
        assert_eq!(
            ecs_of(&m),
            Some((subnet.prefix, scope, subnet.addr)),
            "{net}"
        );
    }
    let (m, _) = f.ask(&q("api.example.com.", RecordType::AAAA).ecs("2001:db8:1::/48"));
    assert_eq!(addresses(&m), vec!["fd00:1::1"]);
}

/// Minimal "a.b.c.d/n" splitting for expectations, so tests need no IP-net crate.
mod ipnet_like {
    use std::net::IpAddr;
    pub struct Net {
        pub addr: IpAddr,
        pub prefix: u8,
    }
    impl From<&str> for Net {
        fn from(text: &str) -> Net {
            let (addr, prefix) = text.split_once('/').unwrap();
            Net {
                addr: addr.parse().unwrap(),
                prefix: prefix.parse().unwrap(),
            }
        }
    }
}

#[test]
fn client_location_without_ecs_and_with_source_prefix_zero() {
    let f = Fixture::new();
    let (m, _, _) = f.ask_from(
        &q("api.example.com.", RecordType::A),
        "203.0.113.9",
        Transport::Udp,
    );
    assert_eq!(addresses(&m)[0], "10.3.0.1", "located by source address");
    assert!(m.edns.is_none());

    let (m, outcome, _) = f.ask_from(
        &q("api.example.com.", RecordType::A).ecs("0.0.0.0/0"),
        "203.0.113.9",
        Transport::Udp,
    );
    assert_eq!(
        outcome.geo.unwrap().1,
        "apac",
        "prefix 0: no address, default order"
    );
    assert_eq!(ecs_of(&m), Some((0, 0, "0.0.0.0".parse().unwrap())));

    let (m, outcome) = f.ask(&q("api.example.com.", RecordType::A).edns(1232));
    assert_eq!(
        outcome.geo.unwrap().1,
        "apac",
        "unknown source location: default order"
    );
    assert_eq!(ecs_of(&m), None, "no ECS in, none out");
}

#[test]
fn static_and_weighted_answers_have_scope_zero() {
    let f = Fixture::new();
    let (m, _) = f.ask(&q("static.example.com.", RecordType::A).ecs("192.0.2.0/24"));
    assert_eq!(ecs_of(&m), Some((24, 0, "192.0.2.0".parse().unwrap())));
    let (m, _) = f.ask(&q("nothing.example.com.", RecordType::A).ecs("192.0.2.0/24"));
    assert_eq!(ecs_of(&m).map(|e| e.1), Some(0), "NXDOMAIN scope 0");
    let (m, outcome) = f.ask(&q("lottery.example.com.", RecordType::A).ecs("192.0.2.0/24"));
    assert!(outcome.geo.is_some());
    assert_eq!(
        ecs_of(&m).map(|e| e.1),
        Some(0),
        "weighted ignores the client"
    );
}

#[test]
fn health_moves_answers_and_fails_open_or_closed() {
    let f = Fixture::new();
    let ask = |name: &str| f.ask(&q(name, RecordType::A).ecs("203.0.113.0/24"));
    f.health.set_up("eu", false);
    let (m, outcome) = ask("api.example.com.");
    assert_eq!(
        outcome.geo.unwrap().1,
        "na",
        "eu down: next nearest (Frankfurt to Ashburn)"
    );
    assert!(!addresses(&m).iter().any(|a| a.starts_with("10.3.")));

    for region in ["apac", "na"] {
        f.health.set_up(region, false);
    }
    let (m, outcome) = ask("api.example.com.");
    assert_eq!(outcome.geo.unwrap().1, "all");
    assert_eq!(
        addresses(&m).len(),
        6,
        "fail open: every region's addresses"
    );
    assert_eq!(ecs_of(&m).map(|e| e.1), Some(0));

    let (m, _) = ask("closed.example.com.");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(soa_ttl(&m), Some(120), "fail closed: NODATA");
}

#[test]
fn apex_geo_name_and_family_without_addresses() {
    let f = Fixture::new();
    let (m, outcome) = f.ask(&q("example.com.", RecordType::A).ecs("192.0.2.0/24"));
    assert!(outcome.geo.is_some(), "apex A is geo");
    assert_eq!(addresses(&m).len(), 2);
    let (m, _) = f.ask(&q("example.com.", RecordType::MX));
    assert_eq!(
        m.answers[0].record_type(),
        RecordType::MX,
        "apex keeps its static data"
    );
    let (m, _) = f.ask(&q("example.com.", RecordType::SOA));
    assert_eq!(m.answers[0].record_type(), RecordType::SOA);

    let (m, outcome) = f.ask(&q("legacy.example.com.", RecordType::AAAA));
    assert_eq!(outcome.geo.unwrap().1, "v4only");
    assert!(m.answers.is_empty());
    assert_eq!(soa_ttl(&m), Some(120), "region without IPv6: NODATA");
}

#[test]
fn large_answers_truncate_over_udp_and_fit_over_tcp() {
    let f = Fixture::new();
    let big = q("big.example.com.", RecordType::TXT);
    for query in [big.clone().edns(4096), big.clone().edns(1232), big.clone()] {
        let (m, _, len) = f.ask_from(&query, SRC, Transport::Udp);
        assert!(m.metadata.truncation);
        assert!(
            m.answers.is_empty() && m.authorities.is_empty(),
            "no partial RRsets"
        );
        assert_eq!(m.queries.len(), 1);
        assert_eq!(m.edns.is_some(), query.message.edns.is_some());
        assert!(len <= 512);
    }
    let (m, _, len) = f.ask_from(&big.clone().edns(4096), SRC, Transport::Tcp);
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 8);
    assert!(len > 1232);

    // The client's size is honoured between 512 and 1232: eu's A answer with the 1232-byte
    // limit fits, and a tiny advertised size is raised to 512.
    let (m, _, _) = f.ask_from(
        &q("api.example.com.", RecordType::A).edns(100),
        SRC,
        Transport::Udp,
    );
    assert!(!m.metadata.truncation);
    assert_eq!(
        m.edns.as_ref().map(|e| e.max_payload()),
        Some(1232),
        "we advertise 1232"
    );
}

#[test]
fn edns_version_above_zero_gets_badvers() {
    let f = Fixture::new();
    let mut query = q("static.example.com.", RecordType::A).edns(1232);
    if let Some(edns) = query.message.edns.as_mut() {
        edns.set_version(1);
    }
    let (m, outcome) = f.ask(&query);
    // hickory decodes RCODE 16 as BADSIG (same number); on the wire it is BADVERS.
    assert_eq!(u16::from(m.metadata.response_code), 16);
    assert_eq!(m.edns.as_ref().map(|e| e.version()), Some(0));
    assert!(m.answers.is_empty());
    assert_eq!(outcome.rcode, "badvers");
}

#[test]
fn opcode_question_count_and_ecs_errors() {
    let f = Fixture::new();
    let mut notify = q("example.com.", RecordType::SOA);
    notify.message.metadata.op_code = OpCode::Notify;
    let (m, outcome) = f.ask(&notify);
    assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
    assert_eq!(outcome.rcode, "notimp");

    let mut two = q("example.com.", RecordType::A);
    two.message.add_query(hickory_proto::op::Query::query(
        "static.example.com.".parse().unwrap(),
        RecordType::A,
    ));
    assert_eq!(f.ask(&two).0.metadata.response_code, ResponseCode::FormErr);
    let mut none = q("example.com.", RecordType::A);
    none.message.queries.clear();
    let (m, outcome) = f.ask(&none);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(outcome.qtype, "none");

    // 192.0.3.0/23 has a bit set beyond the source prefix.
    let mut bits = q("api.example.com.", RecordType::A)
        .ecs("192.0.2.0/23")
        .bytes();
    let last = bits.len() - 1;
    bits[last] = 3;
    let (bytes, outcome) = f.raw(&bits, SRC, Transport::Udp);
    let m = Message::from_vec(&bytes.unwrap()).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(outcome.rcode, "formerr");
}

#[test]
fn garbage_is_dropped_or_formerr() {
    let f = Fixture::new();
    assert_eq!(
        f.raw(&[1, 2, 3], SRC, Transport::Udp).0,
        None,
        "no header: drop"
    );
    let mut response = q("example.com.", RecordType::A);
    response.message.metadata.message_type = hickory_proto::op::MessageType::Response;
    assert_eq!(
        f.raw(&response.bytes(), SRC, Transport::Udp).0,
        None,
        "QR set: drop"
    );
    // Header claims one question, body is cut short.
    let bytes = [0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'w'];
    let (reply, outcome) = f.raw(&bytes, SRC, Transport::Udp);
    let m = Message::from_vec(&reply.unwrap()).unwrap();
    assert_eq!(
        (m.metadata.id, m.metadata.response_code),
        (0x1234, ResponseCode::FormErr)
    );
    assert_eq!(outcome.rcode, "formerr");
    // The same cut-short body with QR set: a response, not answered even with FORMERR,
    // over either transport.
    let mut garbage_response = bytes;
    garbage_response[2] |= 0x80;
    for transport in [Transport::Udp, Transport::Tcp] {
        let (reply, outcome) = f.raw(&garbage_response, SRC, transport);
        assert_eq!(reply, None, "malformed response over {transport:?}: drop");
        assert_eq!(outcome.rcode, "dropped");
    }
}

#[test]
fn any_is_answered_minimally_and_delegations_refer() {
    let f = Fixture::new();
    let (m, outcome) = f.ask(&q("example.com.", RecordType::ANY));
    assert_eq!(m.answers.len(), 1);
    assert!(matches!(&m.answers[0].data, RData::HINFO(h) if &*h.cpu == b"RFC8482"));
    assert_eq!(outcome.qtype, "ANY");
    let (m, _) = f.ask(&q("nope.example.com.", RecordType::ANY));
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);

    let (m, _) = f.ask(&q("www.delegated.example.com.", RecordType::A));
    assert!(!m.metadata.authoritative, "referral is not authoritative");
    assert_eq!(m.authorities[0].record_type(), RecordType::NS);
    let mut glue = m.clone();
    glue.answers = m.additionals.clone();
    assert_eq!(addresses(&glue), vec!["192.0.2.99"]);
}

#[test]
fn wildcards_answer_names_that_do_not_exist() {
    let f = Fixture::new();
    let (m, _) = f.ask(&q("Foo.wild.example.com.", RecordType::A));
    assert_eq!(addresses(&m), vec!["192.0.2.200"]);
    assert_eq!(
        m.answers[0].name.to_string(),
        "foo.wild.example.com.",
        "owner is the query name"
    );
    assert!(m.metadata.authoritative);
    let (m, _) = f.ask(&q("a.b.wild.example.com.", RecordType::MX));
    assert_eq!(m.answers.len(), 1, "closest encloser wild.example.com.");
    let (m, _) = f.ask(&q("x.wild.example.com.", RecordType::TXT));
    assert_eq!(
        (m.metadata.response_code, m.answers.len()),
        (ResponseCode::NoError, 0),
        "wildcard NODATA"
    );
    let (m, _) = f.ask(&q("real.wild.example.com.", RecordType::A));
    assert_eq!(
        (m.metadata.response_code, m.answers.len()),
        (ResponseCode::NoError, 0),
        "existing names never match"
    );
    let (m, _) = f.ask(&q("x.real.wild.example.com.", RecordType::A));
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NXDomain,
        "encloser real.wild has no wildcard"
    );
}

#[test]
fn rate_limit_keys_group_responses_as_bind_does() {
    let f = Fixture::new();
    let key = |name: &str, rtype: RecordType| f.rate_key(&q(name, rtype));
    // Answers: by name and type, in any letter case.
    assert_eq!(
        key("static.example.com.", RecordType::A),
        key("StAtIc.example.COM.", RecordType::A)
    );
    assert_ne!(
        key("static.example.com.", RecordType::A),
        key("static.example.com.", RecordType::AAAA)
    );
    assert_ne!(
        key("static.example.com.", RecordType::A),
        key("mail.example.com.", RecordType::A)
    );
    // Wildcard answers count as the wildcard's parent: random names are one response.
    assert_eq!(
        key("a1.wild.example.com.", RecordType::A),
        key("b2.c3.wild.example.com.", RecordType::A)
    );
    let parent = hickory_proto::rr::Name::from_ascii("wild.example.com.").unwrap();
    assert_eq!(
        key("a1.wild.example.com.", RecordType::A),
        ResponseKey::answer(&parent, RecordType::A)
    );
    // NODATA: by name, whatever the type.
    assert_eq!(
        key("mail.example.com.", RecordType::TXT),
        key("mail.example.com.", RecordType::MX)
    );
    assert_ne!(
        key("mail.example.com.", RecordType::TXT),
        key("mail.example.com.", RecordType::A)
    );
    // NXDOMAIN: by zone, so a random-name flood is one response.
    assert_eq!(
        key("nope1.example.com.", RecordType::A),
        key("x.nope2.example.com.", RecordType::AAAA)
    );
    assert_ne!(
        key("nope1.example.com.", RecordType::A),
        key("nope1.sub.example.com.", RecordType::A)
    );
    // Referrals: by delegation point.
    assert_eq!(
        key("www.delegated.example.com.", RecordType::A),
        key("mx.delegated.example.com.", RecordType::MX)
    );
    // Errors: all one, REFUSED and NOTIMP alike, and FORMERR from garbage too.
    let refused = key("example.org.", RecordType::A);
    assert_eq!(refused, ResponseKey::error());
    let mut notify = q("example.com.", RecordType::SOA);
    notify.message.metadata.op_code = OpCode::Notify;
    assert_eq!(f.rate_key(&notify), refused);
    let garbage = [0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'w'];
    assert_eq!(f.response(&garbage, SRC, Transport::Udp).rate_key, refused);
}

#[test]
fn a_slip_is_the_response_truncated_to_its_question() {
    let f = Fixture::new();
    let query = q("NoPe.example.com.", RecordType::A).ecs("192.0.2.0/24");
    let (full, _) = f.raw(&query.bytes(), SRC, Transport::Udp);
    let full = full.unwrap();
    let slip = truncated(&full).unwrap();
    assert!(slip.len() < full.len());
    let m = Message::from_vec(&slip).unwrap();
    assert_eq!(m.metadata.id, 0x4242);
    assert!(m.metadata.truncation, "TC set: retry over TCP");
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NXDomain,
        "RCODE kept"
    );
    assert!(m.metadata.authoritative);
    assert!(m.answers.is_empty() && m.authorities.is_empty() && m.additionals.is_empty());
    assert_eq!(
        m.queries[0].name().to_string(),
        "NoPe.example.com.",
        "question as asked"
    );
    assert_eq!(
        ecs_of(&m).map(|e| (e.0, e.1)),
        Some((24, 0)),
        "OPT and ECS kept (RFC 6891 section 7, RFC 7871)"
    );
}
