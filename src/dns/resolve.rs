//! Answering one question from a `DnsView`: zone match, delegations, CNAME chains, geo
//! names, NXDOMAIN versus NODATA. Knows nothing of wire formats, EDNS or sockets.

use std::collections::HashSet;
use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, HINFO};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::dns::policy::{self, Selection};
use crate::dns::view::{DnsView, GeoName, ZoneView};

/// Longest CNAME chain followed inside our zones; resolvers follow longer ones themselves.
const MAX_CNAME_HOPS: usize = 8;
/// TTL of the synthesized RFC 8482 HINFO answer to ANY (section 4.2 suggests a long TTL so
/// that resolvers stop asking).
const ANY_HINFO_TTL: u32 = 3600;
/// `QueryOutcome::geo` region label for a fail-open answer that lists every region.
pub const ALL_REGIONS: &str = "all";

/// The client as far as geo answers care: the address that locates it, looked up lazily.
pub struct Client<'a> {
    /// ECS address or packet source; `None` when ECS source prefix 0 forbids using one.
    pub address: Option<IpAddr>,
    /// Region health for a geo name: `(geo name, region)`. The name matters because the
    /// local region also counts as down when this node's own pools for the name are down.
    pub healthy: &'a dyn Fn(&str, &str) -> bool,
}

/// The sections and facts of an answer.
#[derive(Debug, Default)]
pub struct Resolution {
    pub rcode: ResponseCode,
    /// False for referrals and REFUSED.
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
    /// Zone label (origin without trailing dot) the question fell in.
    pub zone: Option<String>,
    /// (geo name, region) when a geo name was answered.
    pub geo: Option<(String, String)>,
    /// ECS scope: the GeoIP prefix when the answer depends on the client's network.
    pub scope: Option<u8>,
    /// The wildcard owner (`*.parent`) that answered the question's own name (RFC 4592),
    /// if one did; rate limiting counts such answers as the parent's.
    pub wildcard: Option<Name>,
}

/// Answers `qname`/`qtype` (`qname` lowercase, class IN) from `view`.
pub fn resolve(view: &DnsView, qname: &Name, qtype: RecordType, client: &Client<'_>) -> Resolution {
    let Some(first_zone) = view.find_zone(qname) else {
        return Resolution {
            rcode: ResponseCode::Refused,
            ..Resolution::default()
        };
    };
    let mut out = Resolution {
        authoritative: true,
        zone: Some(first_zone.label.clone()),
        ..Resolution::default()
    };
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        // Zone transfers are not offered (RFC 5936 section 2.2.1: REFUSED).
        out.rcode = ResponseCode::Refused;
        return out;
    }
    let mut name = qname.clone();
    let mut zone = first_zone;
    let mut seen = HashSet::new();
    for hop in 0..=MAX_CNAME_HOPS {
        if !seen.insert(name.clone()) {
            break; // CNAME loop: stop with what we have, the resolver will notice.
        }
        let Some(target) = step(view, zone, &name, qtype, client, hop, &mut out) else {
            break;
        };
        // Follow only into our own zones (RFC 1034 section 4.3.2 step 3a); elsewhere the
        // resolver continues from the CNAME we give it.
        let Some(next_zone) = view.find_zone(&target) else {
            break;
        };
        zone = next_zone;
        name = target;
    }
    out
}

/// One name of a chain: answers into `out` and returns the CNAME target to follow, if any.
fn step(
    view: &DnsView,
    zone: &ZoneView,
    name: &Name,
    qtype: RecordType,
    client: &Client<'_>,
    hop: usize,
    out: &mut Resolution,
) -> Option<Name> {
    if let Some(cut) = zone.zone.delegation_for(name) {
        if hop == 0 {
            referral(zone, cut, out);
        }
        return None;
    }
    // RFC 4592: a name that does not exist is answered from "*.<closest encloser>" if the
    // zone has one, with the records renamed to the query name.
    let wildcard = zone.zone.wildcard_for(name);
    if hop == 0 {
        out.wildcard.clone_from(&wildcard);
    }
    let source = wildcard.as_ref().unwrap_or(name);
    if qtype == RecordType::ANY {
        any_answer(zone, name, source, out);
        return None;
    }
    if let Some(geo) = zone.geo.get(name) {
        if matches!(qtype, RecordType::A | RecordType::AAAA) {
            geo_answer(view, zone, geo, qtype, client, out);
            return None;
        }
    }
    if let Some(records) = zone.zone.rrset(source, qtype) {
        out.answers.extend(owned_by(records, name));
        return None;
    }
    if let Some(cname) = zone.zone.rrset(source, RecordType::CNAME) {
        out.answers.extend(owned_by(cname, name));
        return cname.first().and_then(|record| match &record.data {
            RData::CNAME(target) => Some(crate::dns::zone::lowercase_fqdn(&target.0)),
            _ => None,
        });
    }
    negative(zone, source, out);
    None
}

/// Copies of `records` with `owner` as their name (a no-op rename unless synthesized from a
/// wildcard).
fn owned_by<'a>(records: &'a [Record], owner: &'a Name) -> impl Iterator<Item = Record> + 'a {
    records.iter().map(move |record| {
        let mut record = record.clone();
        record.name = owner.clone();
        record
    })
}

/// NODATA when the name exists (also as an empty non-terminal or geo name), else NXDOMAIN;
/// both with the zone SOA at the negative TTL (RFC 2308 sections 2.1, 2.2, 3; RFC 8020).
/// In a CNAME chain the RCODE describes the last name (RFC 6604 section 2).
fn negative(zone: &ZoneView, name: &Name, out: &mut Resolution) {
    out.rcode = if zone.zone.name_exists(name) {
        ResponseCode::NoError
    } else {
        ResponseCode::NXDomain
    };
    out.authorities.push(zone.zone.negative_soa());
}

/// A non-authoritative referral to a child zone: its NS RRset, plus glue we hold
/// (RFC 1034 section 4.3.2 step 3b).
fn referral(zone: &ZoneView, cut: &Name, out: &mut Resolution) {
    out.authoritative = false;
    let Some(ns) = zone.zone.rrset(cut, RecordType::NS) else {
        return;
    };
    out.authorities.extend(ns.iter().cloned());
    for record in ns {
        let RData::NS(target) = &record.data else {
            continue;
        };
        let target = crate::dns::zone::lowercase_fqdn(&target.0);
        for rtype in [RecordType::A, RecordType::AAAA] {
            if let Some(glue) = zone.zone.rrset(&target, rtype) {
                out.additionals.extend(glue.iter().cloned());
            }
        }
    }
}

/// RFC 8482 section 4.2: answer ANY with one synthesized HINFO record instead of every RRset.
fn any_answer(zone: &ZoneView, name: &Name, source: &Name, out: &mut Resolution) {
    if !zone.zone.name_exists(source) {
        negative(zone, source, out);
        return;
    }
    let hinfo = HINFO::new("RFC8482".to_string(), String::new());
    out.answers.push(Record::from_rdata(
        name.clone(),
        ANY_HINFO_TTL,
        RData::HINFO(hinfo),
    ));
}

/// A or AAAA of a geo name from the region the policy picks for this client.
fn geo_answer(
    view: &DnsView,
    zone: &ZoneView,
    geo: &GeoName,
    qtype: RecordType,
    client: &Client<'_>,
    out: &mut Resolution,
) {
    // Weighted picks ignore the client, so only Nearest needs (and is scoped by) GeoIP.
    let hit = match geo.policy {
        crate::dns::spec::GeoPolicy::Nearest => client
            .address
            .and_then(|address| view.geoip().and_then(|db| db.lookup(address))),
        crate::dns::spec::GeoPolicy::Weighted => None,
    };
    let healthy = |region: &str| (client.healthy)(&geo.label, region);
    let selection = policy::choose(
        &geo.regions,
        geo.policy,
        geo.fail_open,
        hit.as_ref(),
        &healthy,
    );
    let regions: &[_] = match selection {
        Selection::Region(region) => {
            out.scope = hit.as_ref().map(|hit| hit.prefix_len);
            out.geo = Some((geo.label.clone(), region.name.clone()));
            std::slice::from_ref(region)
        }
        Selection::AllDown(all) => {
            out.geo = Some((geo.label.clone(), ALL_REGIONS.to_string()));
            all
        }
        Selection::Nothing => &[],
    };
    let before = out.answers.len();
    for region in regions {
        let rdata = match qtype {
            RecordType::A => region
                .v4
                .iter()
                .map(|ip| RData::A(A(*ip)))
                .collect::<Vec<_>>(),
            _ => region.v6.iter().map(|ip| RData::AAAA(AAAA(*ip))).collect(),
        };
        for data in rdata {
            if !out.answers.iter().any(|r| r.data == data) {
                out.answers
                    .push(Record::from_rdata(geo.name.clone(), geo.ttl, data));
            }
        }
    }
    if out.answers.len() == before {
        // The region has no address of this family, or every region is down and the name
        // fails closed: NODATA, cached only for the negative TTL.
        out.authorities.push(zone.zone.negative_soa());
    }
}
