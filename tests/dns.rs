//! The embedded authoritative GeoDNS server through the real binary, with real UDP and TCP
//! queries: nearest region by ECS with the GeoIP scope, region health from real loopback
//! health endpoints (down after `fall`, back after `rise`, all down answers all), the local
//! region dropped when this node's own pool is down, RFC 2308 negative answers, REFUSED,
//! TC then TCP, case echo, AA, and a reload that moves a geo name with no lost query.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use support::dns_client::{addresses, ask, ecs};
use support::servers::SwitchableUpstream;
use support::{free_port, Headland};

const APAC: &str = "192.0.2.10";
const NA: &str = "198.51.100.10";
const EU: &str = "203.0.113.10";

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}

/// The regions, each with `extra` keys (health URLs), and `example.com` with geo name `api`.
fn dns_config(regions_extra: [&str; 3], api_regions: &str, routes: &str) -> String {
    format!(
        r#"
[geoip]
database = "{db}"

[regions.apac]
addresses = ["{APAC}"]
location = {{ lat = 3.14, lon = 101.69 }}
{apac}

[regions.na]
addresses = ["{NA}", "2001:db8:2::10"]
location = {{ lat = 39.0, lon = -77.5 }}
{na}

[regions.eu]
addresses = ["{EU}"]
location = {{ lat = 50.1, lon = 8.7 }}
{eu}

[dns.zones."example.com"]
file = "{zone}"

[dns.zones."example.com".geo.api]
regions = [{api_regions}]
ttl = 30
{routes}
"#,
        db = repo("geoip/test-city.mmdb"),
        zone = repo("config/zones/tests/example.com.zone"),
        apac = regions_extra[0],
        na = regions_extra[1],
        eu = regions_extra[2],
    )
}

struct Dns {
    proxy: Headland,
    addr: SocketAddr,
}

fn start(body: &str, node_region: &str) -> Dns {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let proxy = Headland::start_with(
        body,
        &format!("dns = [\"{addr}\"]"),
        &format!("region = \"{node_region}\""),
    );
    Dns { proxy, addr }
}

async fn geo(dns: SocketAddr, subnet: &str) -> Message {
    ask("api.example.com.", RecordType::A)
        .ecs(subnet)
        .udp(dns)
        .await
}

/// Polls until `api.example.com` for ECS `subnet` answers `expected`; returns that answer.
/// (UDP answers are cached for up to a second per server socket, so a change shows within
/// a second of the health verdict, not at once.)
async fn wait_answer(dns: SocketAddr, subnet: &str, expected: &[&str], limit: Duration) -> Message {
    let deadline = Instant::now() + limit;
    loop {
        let message = geo(dns, subnet).await;
        let got = addresses(&message);
        if got == expected {
            return message;
        }
        assert!(
            Instant::now() < deadline,
            "for {subnet} expected {expected:?}, still {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_region_answers_its_own_clients_with_the_geoip_scope() {
    let dns = start(&dns_config(["", "", ""], r#""apac", "na", "eu""#, ""), "eu");
    for (subnet, expected, scope) in [
        ("10.1.0.0/16", APAC, 16),
        ("10.2.0.0/16", NA, 16),
        ("10.3.4.0/24", EU, 16),
        ("192.0.2.0/24", APAC, 24),
        ("2001:db8:2::/48", NA, 48),
    ] {
        for message in [
            geo(dns.addr, subnet).await,
            ask("api.example.com.", RecordType::A)
                .ecs(subnet)
                .tcp(dns.addr)
                .await,
        ] {
            assert_eq!(addresses(&message), vec![expected], "{subnet}");
            assert!(message.metadata.authoritative);
            let (source, response_scope, _) = ecs(&message).expect("ECS echoed");
            assert_eq!(
                source,
                subnet.split('/').nth(1).unwrap().parse::<u8>().unwrap()
            );
            assert_eq!(response_scope, scope, "scope for {subnet}");
            assert_eq!(message.answers[0].ttl, 30);
        }
    }
    // AAAA gives the region's IPv6 addresses, and NODATA where it has none.
    let v6 = ask("api.example.com.", RecordType::AAAA)
        .ecs("10.2.0.0/16")
        .udp(dns.addr)
        .await;
    assert_eq!(addresses(&v6), vec!["2001:db8:2::10"]);
    let none = ask("api.example.com.", RecordType::AAAA)
        .ecs("10.3.0.0/16")
        .udp(dns.addr)
        .await;
    assert_eq!(
        (none.metadata.response_code, none.answers.len()),
        (ResponseCode::NoError, 0)
    );

    // A static record does not depend on the client: scope 0.
    let static_answer = ask("static.example.com.", RecordType::A)
        .ecs("10.1.0.0/16")
        .udp(dns.addr)
        .await;
    assert_eq!(ecs(&static_answer).unwrap().1, 0);

    let metrics = dns.proxy.metrics().await;
    assert!(
        metrics.count(
            "headland_dns_geo_answers_total",
            &[("name", "api.example.com"), ("region", "apac")]
        ) >= 4.0
    );
    assert!(
        metrics.count(
            "headland_dns_queries_total",
            &[
                ("zone", "example.com"),
                ("qtype", "A"),
                ("rcode", "noerror")
            ]
        ) >= 10.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn negative_answers_refusal_truncation_case_and_authority() {
    let dns = start(&dns_config(["", "", ""], r#""apac", "na", "eu""#, ""), "eu");

    let missing = ask("missing.example.com.", RecordType::A)
        .udp(dns.addr)
        .await;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    assert!(missing.metadata.authoritative);
    assert_eq!(missing.authorities.len(), 1);
    assert_eq!(missing.authorities[0].record_type(), RecordType::SOA);
    // SOA TTL 3600, MINIMUM 120: negative TTL min(3600, 120) (RFC 2308 §5).
    assert_eq!(missing.authorities[0].ttl, 120);

    let nodata = ask("static.example.com.", RecordType::MX)
        .udp(dns.addr)
        .await;
    assert_eq!(
        (nodata.metadata.response_code, nodata.answers.len()),
        (ResponseCode::NoError, 0)
    );
    assert_eq!(nodata.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(nodata.authorities[0].ttl, 120);
    // An empty non-terminal (b.deep exists only as part of a.b.deep) is NODATA, not NXDOMAIN.
    let empty = ask("b.deep.example.com.", RecordType::A)
        .udp(dns.addr)
        .await;
    assert_eq!(empty.metadata.response_code, ResponseCode::NoError);

    let outside = ask("example.org.", RecordType::A).udp(dns.addr).await;
    assert_eq!(outside.metadata.response_code, ResponseCode::Refused);
    assert!(!outside.metadata.authoritative);

    let udp = ask("big.example.com.", RecordType::TXT)
        .edns(1232)
        .udp(dns.addr)
        .await;
    assert!(udp.metadata.truncation, "too big for UDP: TC");
    assert!(udp.answers.is_empty(), "no partial RRset");
    let tcp = ask("big.example.com.", RecordType::TXT)
        .edns(1232)
        .tcp(dns.addr)
        .await;
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 8, "the full RRset over TCP");

    let mixed = ask("StAtIc.ExAmPlE.cOm.", RecordType::A)
        .udp(dns.addr)
        .await;
    assert_eq!(mixed.queries[0].name().to_string(), "StAtIc.ExAmPlE.cOm.");
    assert_eq!(addresses(&mixed), vec!["203.0.113.10"]);
    assert!(mixed.metadata.authoritative);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_region_leaves_the_answers_and_comes_back() {
    let (apac, na, eu) = (
        SwitchableUpstream::start().await,
        SwitchableUpstream::start().await,
        SwitchableUpstream::start().await,
    );
    let health = |server: &SwitchableUpstream| {
        format!(
            "health = \"http://{}/health\"\nhealth_interval = \"100ms\"\nrise = 2\nfall = 3",
            server.addr
        )
    };
    let body = dns_config(
        [&health(&apac), &health(&na), &health(&eu)],
        r#""apac", "na", "eu""#,
        "",
    );
    let dns = start(&body, "eu");
    wait_answer(dns.addr, "10.1.0.0/16", &[APAC], Duration::from_secs(5)).await;

    // apac fails: its clients go to the next nearest healthy region.
    apac.set_status(503);
    wait_answer(dns.addr, "10.1.0.0/16", &[EU], Duration::from_secs(10)).await;
    let metrics = dns.proxy.metrics().await;
    assert_eq!(
        metrics.count("headland_region_up", &[("region", "apac")]),
        0.0
    );
    assert_eq!(
        metrics.count("headland_region_up", &[("region", "eu")]),
        1.0
    );

    // Every region down: answer with all of them rather than nothing.
    na.set_status(503);
    eu.set_status(503);
    let all = wait_answer(
        dns.addr,
        "10.2.0.0/16",
        &[APAC, NA, EU],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        ecs(&all).unwrap().1,
        0,
        "an all-regions answer does not depend on the client"
    );

    // Back after `rise` good checks.
    apac.set_status(200);
    wait_answer(dns.addr, "10.2.0.0/16", &[APAC], Duration::from_secs(10)).await;
    wait_answer(dns.addr, "10.1.0.0/16", &[APAC], Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_local_region_is_dropped_when_this_nodes_own_pool_is_down() {
    let app = SwitchableUpstream::start().await;
    let routes = format!(
        r#"
[upstreams.api]
servers = ["{}"]
health = {{ path = "/health", interval = "100ms", rise = 1, fall = 2 }}

[[routes]]
host = "api.example.com"
upstream = "api"
"#,
        app.addr
    );
    let dns = start(
        &dns_config(["", "", ""], r#""apac", "na", "eu""#, &routes),
        "eu",
    );
    wait_answer(dns.addr, "10.3.0.0/16", &[EU], Duration::from_secs(5)).await;
    app.set_status(500);
    // eu is this node's region and its only api server is down: the next nearest, na.
    wait_answer(dns.addr, "10.3.0.0/16", &[NA], Duration::from_secs(10)).await;
    app.set_status(200);
    wait_answer(dns.addr, "10.3.0.0/16", &[EU], Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_moves_a_geo_name_with_no_lost_query() {
    let dns = start(&dns_config(["", "", ""], r#""apac", "na", "eu""#, ""), "eu");
    wait_answer(dns.addr, "10.1.0.0/16", &[APAC], Duration::from_secs(5)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (answered, wrong) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, answered, wrong, addr) =
            (stop.clone(), answered.clone(), wrong.clone(), dns.addr);
        clients.push(tokio::spawn(async move {
            for _ in 0..100_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let got = addresses(&geo(addr, "10.1.0.0/16").await);
                answered.fetch_add(1, Ordering::SeqCst);
                if got != [APAC] && got != [EU] {
                    wrong.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    // Counted progress instead of fixed sleeps: queries run before the reload and after it.
    wait_answered(&answered, 25).await;
    // apac leaves the geo name: its clients now get the nearest remaining region.
    dns.proxy
        .write_config(&dns_config(["", "", ""], r#""na", "eu""#, ""));
    let (status, body) = dns.proxy.reload().await;
    assert_eq!(status, 200, "{body}");
    let after = addresses(&geo(dns.addr, "10.1.0.0/16").await);
    wait_answered(&answered, answered.load(Ordering::SeqCst) + 26).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap(); // a lost UDP answer would have failed the client (5 s timeout)
    }
    assert_eq!(
        after,
        vec![EU],
        "Kuala Lumpur is nearer Frankfurt than Ashburn"
    );
    assert_eq!(wrong.load(Ordering::SeqCst), 0);
    assert!(answered.load(Ordering::SeqCst) > 50);
}

/// Waits (bounded) until the query loops have had `n` answers.
async fn wait_answered(answered: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered.load(Ordering::SeqCst) < n {
        assert!(
            Instant::now() < deadline,
            "the query loops stalled at {} answers",
            answered.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_geoip_database_is_reloaded_and_a_broken_one_is_refused() {
    let dir = support::scratch_dir();
    let database = dir.join("city.mmdb");
    std::fs::copy(repo("geoip/test-city.mmdb"), &database).unwrap();
    let body = dns_config(["", "", ""], r#""apac", "na", "eu""#, "").replace(
        &repo("geoip/test-city.mmdb"),
        &database.display().to_string(),
    );
    let dns = start(&body, "eu");
    let generation = |proxy: &Headland| {
        let response = support::http1::get_blocking(proxy.admin, "admin", "/config").unwrap();
        response.json()["generation"].as_u64().unwrap()
    };
    assert_eq!(generation(&dns.proxy), 1);

    // geoipupdate-style replacement: a new file renamed over the old one.
    let staged = dir.join("city.mmdb.new");
    std::fs::copy(repo("geoip/test-city.mmdb"), &staged).unwrap();
    std::fs::rename(&staged, &database).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while generation(&dns.proxy) < 2 {
        assert!(Instant::now() < deadline, "the new database was not loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A broken database is refused; the loaded one keeps answering.
    std::fs::write(&staged, b"not a database").unwrap();
    std::fs::rename(&staged, &database).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = support::http1::get_blocking(dns.proxy.admin, "admin", "/config").unwrap();
        if !response.json()["last_error"].is_null() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the broken database was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(generation(&dns.proxy), 2);
    wait_answer(dns.addr, "10.2.0.0/16", &[NA], Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(&dir);
}
