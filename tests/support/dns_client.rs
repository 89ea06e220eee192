//! A DNS client for tests: queries built with hickory-proto (EDNS, ECS, any letter case),
//! sent over real UDP or TCP, answers parsed back.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

/// A query under construction.
#[derive(Clone)]
pub struct Ask {
    pub message: Message,
}

pub fn ask(name: &str, rtype: RecordType) -> Ask {
    let mut message = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    message.metadata.recursion_desired = true;
    Ask { message }
}

impl Ask {
    /// EDNS with this UDP payload size.
    pub fn edns(mut self, payload: u16) -> Ask {
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        self.message.set_edns(edns);
        self
    }

    /// EDNS Client Subnet, e.g. "10.1.0.0/16".
    pub fn ecs(mut self, subnet: &str) -> Ask {
        let subnet = ClientSubnet::from_str(subnet).unwrap();
        let mut edns = self.message.edns.take().unwrap_or_default();
        edns.set_max_payload(1232);
        edns.options_mut().insert(EdnsOption::Subnet(subnet));
        self.message.set_edns(edns);
        self
    }

    pub async fn udp(&self, server: SocketAddr) -> Message {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket
            .send_to(&self.message.to_vec().unwrap(), server)
            .await
            .unwrap();
        let mut buf = vec![0u8; 65535];
        let (len, _) = timeout(WAIT, socket.recv_from(&mut buf))
            .await
            .expect("UDP answer within 5 s")
            .unwrap();
        Message::from_vec(&buf[..len]).unwrap()
    }

    pub async fn tcp(&self, server: SocketAddr) -> Message {
        let mut stream = TcpStream::connect(server).await.unwrap();
        let bytes = self.message.to_vec().unwrap();
        stream
            .write_all(&(bytes.len() as u16).to_be_bytes())
            .await
            .unwrap();
        stream.write_all(&bytes).await.unwrap();
        let mut len = [0u8; 2];
        timeout(WAIT, stream.read_exact(&mut len))
            .await
            .expect("TCP answer within 5 s")
            .unwrap();
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut buf).await.unwrap();
        Message::from_vec(&buf).unwrap()
    }
}

/// A and AAAA addresses of the answer section, sorted.
pub fn addresses(message: &Message) -> Vec<String> {
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

/// The response's ECS option as (source prefix, scope prefix, address).
pub fn ecs(message: &Message) -> Option<(u8, u8, IpAddr)> {
    match message.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(s) => Some((s.source_prefix(), s.scope_prefix(), s.addr())),
        _ => None,
    }
}

/// Polls `server` until `name` (type A) for a client in `subnet` (ECS) answers exactly
/// `expected`; returns that answer. Bounded by `limit`: the bound only matters when the answer
/// never comes.
pub async fn wait_for_answer(
    server: SocketAddr,
    name: &str,
    subnet: &str,
    expected: &[&str],
    limit: Duration,
) -> Message {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let message = ask(name, RecordType::A).ecs(subnet).udp(server).await;
        let got = addresses(&message);
        if got == expected {
            return message;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{server} for {subnet}: expected {expected:?}, still {got:?}"
        );
        // Polling the name server, bounded by the deadline.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
