//! The protocol core: one DNS query in, one response out, independent of sockets.
//!
//! `respond` takes wire bytes and applies the pre-checks hickory-server applies before it
//! calls a `RequestHandler` (drop responses, drop what has no header, FORMERR what does not
//! parse), then `answer` and `finish`. The UDP and TCP loops and the tests all call it, so
//! they see the same rules.

use std::net::{IpAddr, SocketAddr};

use hickory_proto::op::{Edns, Header, HeaderCounts, Message, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_proto::ProtoError;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use hickory_server::zone_handler::{MessageRequest, MessageResponseBuilder, Queries};

use crate::dns::ecs;
use crate::dns::resolve::{self, Client};
use crate::dns::rrl::ResponseKey;
use crate::dns::view::DnsView;
use crate::dns::zone::lowercase_fqdn;

/// Without EDNS a UDP response is at most 512 bytes (RFC 1035 section 4.2.1).
const PLAIN_UDP_LIMIT: u16 = 512;
/// Largest UDP response we send and the size we advertise: avoids IP fragmentation
/// (DNS Flag Day 2020, RFC 9715).
pub const EDNS_UDP_LIMIT: u16 = 1232;
/// QR is the top bit of the header's third byte, after the ID (RFC 1035 section 4.1.1).
const QR_BYTE: usize = 2;
const QR_BIT: u8 = 0x80;
/// A DNS header is 12 bytes (RFC 1035 §4.1.1).
const HEADER_LEN: usize = 12;

/// How the query arrived; only UDP responses are size-limited and truncated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What happened to one query, for metrics and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryOutcome {
    /// Zone origin without the trailing dot (e.g. `"example.com"`), when the name is ours.
    pub zone: Option<String>,
    /// Query type: a common type's mnemonic (`"A"`, `"AAAA"`, …), `"other"` for the rest,
    /// `"none"` without a usable question; bounded, so usable as a metric label.
    pub qtype: String,
    /// Response code in lowercase (`"noerror"`, `"nxdomain"`, `"refused"`, `"formerr"`,
    /// `"servfail"`, `"notimp"`, `"badvers"`), or `"dropped"` when nothing was sent.
    pub rcode: String,
    /// (geo name without trailing dot, region) for geo answers; region is `"all"` when every
    /// region was down and the name failed open.
    pub geo: Option<(String, String)>,
}

/// What `respond` decided for one query.
#[derive(Debug)]
pub struct Response {
    /// The response on the wire, or `None` to send nothing.
    pub bytes: Option<Vec<u8>>,
    pub outcome: QueryOutcome,
    /// Which responses count as this one for response rate limiting (UDP only).
    pub rate_key: ResponseKey,
}

/// A response before encoding.
#[derive(Debug)]
struct Reply {
    metadata: Metadata,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
    edns: Option<Edns>,
    outcome: QueryOutcome,
    rate_key: ResponseKey,
}

/// Answers one query given as wire bytes.
///
/// Returns `None` (drop) when the packet has no complete header or is itself a response.
/// The QR bit is read from the raw header before anything is parsed: a response is never
/// answered, not even with FORMERR when its body is garbage, since two servers answering
/// each other's errors would loop, and a spoofed "response" would make us a reflector
/// (RFC 1035 section 4.1.1 defines QR; RFC 5452 section 9.1 drops unexpected responses).
pub fn respond(
    view: &DnsView,
    health: &dyn Fn(&str, &str) -> bool,
    query: &[u8],
    src: IpAddr,
    transport: Transport,
) -> Response {
    let dropped = || Response {
        bytes: None,
        outcome: QueryOutcome {
            qtype: "none".into(),
            rcode: "dropped".into(),
            ..QueryOutcome::default()
        },
        rate_key: ResponseKey::error(),
    };
    if is_response(query) {
        return dropped();
    }
    let Ok(header) = Header::read(&mut BinDecoder::new(query)) else {
        return dropped();
    };
    if question_is_compressed(query) {
        return Response {
            bytes: Some(unparseable_formerr(&header)),
            outcome: formerr_outcome(),
            rate_key: ResponseKey::error(),
        };
    }
    let protocol = match transport {
        Transport::Udp => Protocol::Udp,
        Transport::Tcp => Protocol::Tcp,
    };
    let request = match Request::from_bytes(query.to_vec(), SocketAddr::new(src, 0), protocol) {
        Ok(request) => request,
        Err(_) => {
            return Response {
                bytes: Some(unparseable_formerr(&header)),
                outcome: formerr_outcome(),
                rate_key: ResponseKey::error(),
            }
        }
    };
    let reply = answer(view, health, &request, request.as_slice(), src);
    let (reply, bytes) = finish(
        reply,
        &request.queries,
        payload_limit(request.edns.as_ref(), transport),
    );
    Response {
        bytes: Some(bytes),
        outcome: reply.outcome,
        rate_key: reply.rate_key,
    }
}

/// True when the first question's name uses a compression pointer (or a reserved label
/// type). Nothing but the header precedes the question, so no valid query does that; and
/// hickory echoes the question's bytes as received, so the pointer would point into our own
/// reply's header and the client would read back another name (fuzz finding F2). Such a
/// packet gets a header-only FORMERR.
fn question_is_compressed(packet: &[u8]) -> bool {
    let mut at = HEADER_LEN;
    while let Some(&len) = packet.get(at) {
        if len & 0xC0 != 0 {
            return true;
        }
        if len == 0 {
            return false;
        }
        at += 1 + usize::from(len);
    }
    false
}

/// True when `packet` has QR set: it is a response, whether or not the rest parses.
pub fn is_response(packet: &[u8]) -> bool {
    packet.get(QR_BYTE).is_some_and(|flags| flags & QR_BIT != 0)
}

/// Decides the response to a parsed query; `raw` is the same query on the wire.
fn answer(
    view: &DnsView,
    health: &dyn Fn(&str, &str) -> bool,
    request: &MessageRequest,
    raw: &[u8],
    src: IpAddr,
) -> Reply {
    let mut reply = Reply {
        metadata: Metadata::response_from_request(&request.metadata),
        answers: Vec::new(),
        authorities: Vec::new(),
        additionals: Vec::new(),
        edns: request.edns.as_ref().map(response_edns),
        outcome: QueryOutcome {
            qtype: qtype_label(request),
            ..QueryOutcome::default()
        },
        rate_key: ResponseKey::error(),
    };
    if let Err(rcode) = precheck(request) {
        return reply.with_rcode(rcode);
    }
    let subnet = match ecs::query_subnet(request.edns.as_ref(), raw) {
        Ok(subnet) => subnet,
        // RFC 7871 section 7.1.1: a malformed option earns FORMERR.
        Err(_) => return reply.with_rcode(ResponseCode::FormErr),
    };
    let Some(query) = request.queries.queries().first() else {
        return reply.with_rcode(ResponseCode::FormErr);
    };
    let qname = lowercase_fqdn(&Name::from(query.name().clone()));
    let client = Client {
        address: ecs::locating_address(subnet.as_ref(), src),
        healthy: health,
    };
    let resolution = resolve::resolve(view, &qname, query.query_type(), &client);
    reply.rate_key = ResponseKey::of(&qname, query.query_type(), &resolution);
    if let (Some(edns), Some(subnet)) = (reply.edns.as_mut(), subnet.as_ref()) {
        // Scope 0 unless the answer depends on the client's network (RFC 7871 section 7.2.1).
        edns.options_mut()
            .insert(ecs::response_option(subnet, resolution.scope.unwrap_or(0)));
    }
    reply.metadata.authoritative = resolution.authoritative;
    reply.answers = resolution.answers;
    reply.authorities = resolution.authorities;
    reply.additionals = resolution.additionals;
    reply.outcome.zone = resolution.zone;
    reply.outcome.geo = resolution.geo;
    reply.with_rcode(resolution.rcode)
}

/// Checks that refuse a query before any lookup, in the order RFC 6891 and RFC 1035 imply.
fn precheck(request: &MessageRequest) -> Result<(), ResponseCode> {
    if request.metadata.op_code != OpCode::Query {
        return Err(ResponseCode::NotImp);
    }
    // RFC 6891 section 6.1.3: a version we do not implement gets BADVERS (through OPT).
    if request.edns.as_ref().is_some_and(|edns| edns.version() > 0) {
        return Err(ResponseCode::BADVERS);
    }
    // One question per query (RFC 9619).
    let [query] = request.queries.queries() else {
        return Err(ResponseCode::FormErr);
    };
    // Our zones are class IN; other classes (CH "version.bind", ANY) are not ours to answer.
    if query.query_class() != DNSClass::IN {
        return Err(ResponseCode::Refused);
    }
    Ok(())
}

/// The response's OPT: our UDP size, version 0, DO copied (RFC 3225 section 3).
fn response_edns(query: &Edns) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_UDP_LIMIT);
    edns.set_version(0);
    edns.set_dnssec_ok(query.flags().dnssec_ok);
    edns
}

/// The largest response the client can take over `transport`.
fn payload_limit(query_edns: Option<&Edns>, transport: Transport) -> u16 {
    match (transport, query_edns) {
        (Transport::Tcp, _) => u16::MAX,
        (Transport::Udp, None) => PLAIN_UDP_LIMIT,
        (Transport::Udp, Some(edns)) => edns.max_payload().clamp(PLAIN_UDP_LIMIT, EDNS_UDP_LIMIT),
    }
}

/// Encodes `reply` within `limit`. If it does not fit, sends TC with the question and OPT
/// only: no partial RRsets (RFC 2181 section 9), and the client retries over TCP
/// (RFC 7766 section 5). Returns the reply as sent, so the server path sends the same.
fn finish(mut reply: Reply, queries: &Queries, limit: u16) -> (Reply, Vec<u8>) {
    if let Ok((bytes, false)) = emit(&reply, queries, limit) {
        return (reply, bytes);
    }
    reply.answers.clear();
    reply.authorities.clear();
    reply.additionals.clear();
    reply.metadata.truncation = true;
    if let Ok((bytes, _)) = emit(&reply, queries, limit) {
        return (reply, bytes);
    }
    // Cannot happen for a question that parsed, but never answer nothing.
    reply.edns = None;
    reply.metadata.truncation = false;
    reply = reply.with_rcode(ResponseCode::ServFail);
    reply.rate_key = ResponseKey::error();
    let bytes = header_only(&reply.metadata);
    (reply, bytes)
}

/// Encodes like hickory-server's own response path; true when records did not fit.
fn emit(reply: &Reply, queries: &Queries, limit: u16) -> Result<(Vec<u8>, bool), ProtoError> {
    let mut bytes = Vec::with_capacity(512);
    let truncated = {
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(limit);
        let info = MessageResponseBuilder::new(queries, reply.edns.as_ref())
            .build(
                reply.metadata,
                reply.answers.iter(),
                reply.authorities.iter(),
                std::iter::empty(),
                reply.additionals.iter(),
            )
            .destructive_emit(&mut encoder)?;
        info.truncation
    };
    Ok((bytes, truncated))
}

/// `response` cut down to its header, question and OPT, with TC set: what a client gets
/// when response rate limiting lets it "slip" (BIND: truncated, no records). A real
/// resolver retries over TCP (RFC 7766 section 5); a spoofed victim receives a packet no
/// larger than the query. The RCODE and the ECS option stay as they were. `None` if
/// `response` does not parse (it always does: we encoded it).
pub fn truncated(response: &[u8]) -> Option<Vec<u8>> {
    let mut message = Message::from_vec(response).ok()?;
    message.answers.clear();
    message.authorities.clear();
    message.additionals.clear();
    message.metadata.truncation = true;
    message.to_vec().ok()
}

/// FORMERR for a packet whose header parsed but whose body did not: header only, as
/// hickory-server sends in that case.
fn unparseable_formerr(header: &Header) -> Vec<u8> {
    let mut metadata = Metadata::response_from_request(&header.metadata);
    metadata.response_code = ResponseCode::FormErr;
    header_only(&metadata)
}

fn header_only(metadata: &Metadata) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(12);
    let header = Header {
        metadata: *metadata,
        counts: HeaderCounts::default(),
    };
    let _ = header.emit(&mut BinEncoder::new(&mut bytes));
    bytes
}

fn formerr_outcome() -> QueryOutcome {
    QueryOutcome {
        qtype: "none".into(),
        rcode: rcode_label(ResponseCode::FormErr),
        ..QueryOutcome::default()
    }
}

impl Reply {
    fn with_rcode(mut self, rcode: ResponseCode) -> Reply {
        self.metadata.response_code = rcode;
        self.outcome.rcode = rcode_label(rcode);
        self
    }
}

/// Lowercase RCODE mnemonic for metrics.
pub(crate) fn rcode_label(rcode: ResponseCode) -> String {
    match rcode {
        ResponseCode::NoError => "noerror",
        ResponseCode::FormErr => "formerr",
        ResponseCode::ServFail => "servfail",
        ResponseCode::NXDomain => "nxdomain",
        ResponseCode::NotImp => "notimp",
        ResponseCode::Refused => "refused",
        ResponseCode::BADVERS => "badvers",
        _ => "other",
    }
    .to_string()
}

/// Query type as a bounded metric label.
fn qtype_label(request: &MessageRequest) -> String {
    let [query] = request.queries.queries() else {
        return "none".into();
    };
    let rtype = query.query_type();
    match rtype {
        RecordType::A
        | RecordType::AAAA
        | RecordType::ANY
        | RecordType::AXFR
        | RecordType::CAA
        | RecordType::CNAME
        | RecordType::DNSKEY
        | RecordType::DS
        | RecordType::HTTPS
        | RecordType::IXFR
        | RecordType::MX
        | RecordType::NS
        | RecordType::PTR
        | RecordType::SOA
        | RecordType::SRV
        | RecordType::SVCB
        | RecordType::TXT => rtype.to_string(),
        _ => "other".into(),
    }
}
