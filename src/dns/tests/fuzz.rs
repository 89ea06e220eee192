//! Property tests: `respond` never panics, and whatever it sends parses and matches the
//! query's ID, on random bytes and on random mutations of valid queries.

use std::net::IpAddr;
use std::sync::OnceLock;

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use proptest::prelude::*;

use super::{q, view};
use crate::dns::handler::truncated;
use crate::dns::{respond, DnsView, Transport};

fn shared_view() -> &'static DnsView {
    static VIEW: OnceLock<DnsView> = OnceLock::new();
    VIEW.get_or_init(view)
}

/// Valid queries the mutations start from: geo, static, big, ECS of both families.
fn seeds() -> Vec<Vec<u8>> {
    vec![
        q("api.example.com.", RecordType::A)
            .ecs("192.0.2.0/24")
            .bytes(),
        q("api.example.com.", RecordType::AAAA)
            .ecs("2001:db8:3::/48")
            .bytes(),
        q("chain.example.com.", RecordType::A).edns(1232).bytes(),
        q("big.example.com.", RecordType::TXT).bytes(),
        q("www.delegated.example.com.", RecordType::A).bytes(),
        q("example.com.", RecordType::ANY).edns(4096).bytes(),
    ]
}

fn check(bytes: &[u8], src: IpAddr, tcp: bool) -> Result<(), TestCaseError> {
    let transport = if tcp { Transport::Tcp } else { Transport::Udp };
    let up = |_: &str, region: &str| region != "na";
    let response = respond(shared_view(), &up, bytes, src, transport);
    prop_assert!(!response.outcome.rcode.is_empty());
    if let Some(reply) = response.bytes {
        // What a rate-limited UDP client would get instead: parses, same ID, TC, no larger.
        let slip = truncated(&reply);
        prop_assert!(slip.is_some(), "no truncated form of {:?}", reply);
        let slip = slip.unwrap_or_default();
        prop_assert_eq!(&slip[..2], &bytes[..2]);
        prop_assert!(slip.len() <= reply.len());
        prop_assert!(Message::from_vec(&slip).is_ok_and(|m| m.metadata.truncation));
        prop_assert!(reply.len() >= 12);
        prop_assert_eq!(&reply[..2], &bytes[..2], "response keeps the query ID");
        if !tcp {
            prop_assert!(reply.len() <= 1232, "UDP response of {} bytes", reply.len());
        }
        prop_assert!(
            Message::from_vec(&reply).is_ok(),
            "response does not parse: {:?}",
            reply
        );
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        let len = bytes.len().max(1);
        match *mutation {
            Mutation::Flip(at, mask) => {
                if let Some(b) = bytes.get_mut(at % len) {
                    *b ^= mask;
                }
            }
            Mutation::Insert(at, value) => bytes.insert((at % len).min(bytes.len()), value),
            Mutation::Remove(at) => {
                if !bytes.is_empty() {
                    bytes.remove(at % bytes.len());
                }
            }
            Mutation::Truncate(at) => bytes.truncate(at % len),
        }
    }
    bytes
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..).prop_map(|(a, m)| Mutation::Flip(a, m)),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(a, v)| Mutation::Insert(a, v)),
        1 => any::<usize>().prop_map(Mutation::Remove),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn arb_src() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2500))]

    #[test]
    fn random_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..700),
        src in arb_src(),
        tcp in any::<bool>(),
    ) {
        check(&bytes, src, tcp)?;
    }

    #[test]
    fn mutated_queries_never_panic(
        seed in 0usize..6,
        mutations in proptest::collection::vec(arb_mutation(), 1..6),
        src in arb_src(),
        tcp in any::<bool>(),
    ) {
        let bytes = mutate(seeds()[seed].clone(), &mutations);
        check(&bytes, src, tcp)?;
    }
}
