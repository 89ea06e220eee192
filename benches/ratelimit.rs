//! The rate limiter on the request path: one check for a known client and for a new one,
//! and the memory 1,000,000 distinct clients take (printed, measured from the process RSS).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use headland::config::RateLimitConfig;
use headland::ratelimit::Limiter;

fn config() -> RateLimitConfig {
    RateLimitConfig {
        name: "api".into(),
        interval: Duration::from_millis(100),
        burst: NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN),
        ipv6_prefix: 64,
        allow: Vec::new(),
        max_keys: 2_000_000,
    }
}

fn client(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn check(c: &mut Criterion) {
    let limiter = Limiter::new(config());
    let known = client(1);
    c.bench_function("ratelimit_check_known_client", |b| {
        b.iter(|| black_box(limiter.check(black_box(known))))
    });
    let mut next = 0u32;
    c.bench_function("ratelimit_check_new_client", |b| {
        b.iter(|| {
            next = next.wrapping_add(1);
            black_box(limiter.check(client(next)))
        })
    });
}

fn memory(_: &mut Criterion) {
    let before = resident_bytes();
    let limiter = Limiter::new(config());
    for i in 0..1_000_000 {
        limiter.check(client(i));
    }
    let after = resident_bytes();
    println!(
        "ratelimit memory: {} keys take {:.1} MiB ({} bytes per key)",
        limiter.len(),
        (after.saturating_sub(before)) as f64 / (1 << 20) as f64,
        after.saturating_sub(before) / limiter.len().max(1) as u64
    );
}

criterion_group!(benches, check, memory);
criterion_main!(benches);
