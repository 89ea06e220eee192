//! A small authoritative DNS server for tests, over UDP on 127.0.0.1:0: it answers A queries
//! for one name with the addresses and TTL currently set, so a test can change the answer (or
//! make it fail) while Headland follows it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

/// What the server answers for its name.
#[derive(Clone)]
enum Answer {
    Addresses(Vec<Ipv4Addr>),
    ServerFailure,
}

pub struct TestDns {
    pub addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    queries: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TestDns {
    /// Answers `name` (A records, TTL `ttl` seconds) with `addresses`; any other name or
    /// type gets an empty NOERROR answer.
    pub async fn start(name: &str, addresses: &[Ipv4Addr], ttl: u32) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(Answer::Addresses(addresses.to_vec())));
        let queries = Arc::new(AtomicUsize::new(0));
        let mut name = Name::from_ascii(name).unwrap();
        // Queries name the absolute name, and names compare only with the same fqdn flag.
        name.set_fqdn(true);
        let (shared, counter) = (Arc::clone(&answer), Arc::clone(&queries));
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..len]) else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let current = shared.lock().unwrap().clone();
                let response = respond(&query, &name, &current, ttl);
                let _ = socket.send_to(&response.to_vec().unwrap(), from).await;
            }
        });
        Self {
            addr,
            answer,
            queries,
            task,
        }
    }

    /// From now on the name resolves to `addresses`.
    pub fn set(&self, addresses: &[Ipv4Addr]) {
        *self.answer.lock().unwrap() = Answer::Addresses(addresses.to_vec());
    }

    /// From now on every query for the name gets SERVFAIL.
    pub fn fail(&self) {
        *self.answer.lock().unwrap() = Answer::ServerFailure;
    }

    /// Queries received so far.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn respond(query: &Message, name: &Name, answer: &Answer, ttl: u32) -> Message {
    let mut response = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
    response.metadata.authoritative = true;
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    for question in &query.queries {
        response.add_query(question.clone());
        // Names compare case-insensitively (RFC 4343).
        if question.name() != name {
            continue;
        }
        match answer {
            Answer::ServerFailure => response.metadata.response_code = ResponseCode::ServFail,
            Answer::Addresses(addresses) if question.query_type() == RecordType::A => {
                for ip in addresses {
                    let record = Record::from_rdata(question.name().clone(), ttl, RData::A(A(*ip)));
                    response.add_answer(record);
                }
            }
            Answer::Addresses(_) => {}
        }
    }
    response
}
