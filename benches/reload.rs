//! What a reload costs for a big configuration: parsing and validating 10,000 routes, then
//! building the snapshot (routing index, pools, limits).

use std::fmt::Write;
use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use headland::config;
use headland::snapshot::Snapshot;

fn config_text(routes: usize) -> String {
    let mut text = String::from("[rate_limits.api]\nrate = \"10/s\"\n\n");
    for pool in 0..100 {
        let _ = writeln!(
            text,
            "[upstreams.pool{pool}]\nservers = [\"127.0.0.1:{}\", \"127.0.0.2:{}\"]\n",
            20000 + pool,
            20000 + pool
        );
    }
    for route in 0..routes {
        let _ = writeln!(
            text,
            "[[routes]]\nhost = \"tenant{}.example.com\"\npath = \"/{}/\"\nupstream = \"pool{}\"\nrate_limit = \"api\"\n",
            route / 4,
            route % 4,
            route % 100
        );
    }
    text
}

fn reload(c: &mut Criterion) {
    let text = config_text(10_000);
    let mut group = c.benchmark_group("reload_10000_routes");
    group.sample_size(10);
    group.bench_function("parse_and_validate", |b| {
        b.iter(|| black_box(config::parse(&text, "bench.toml", Path::new("/"))))
    });
    let Ok(parsed) = config::parse(&text, "bench.toml", Path::new("/")) else {
        return;
    };
    let previous = Snapshot::build(parsed.clone(), 1, None);
    group.bench_function("build_snapshot", |b| {
        b.iter(|| black_box(Snapshot::build(parsed.clone(), 2, Some(&previous))))
    });
    group.finish();
}

criterion_group!(benches, reload);
criterion_main!(benches);
