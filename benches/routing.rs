//! Route lookup cost as the table grows: 10, 1,000 and 100,000 routes. The index is hash
//! based, so the time per lookup should stay flat.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use headland::config::{HostPattern, Redirect, RouteAction, RouteConfig};
use headland::proxy::route_table::RouteTable;

/// `n` routes in a realistic mix: per-tenant exact hosts with a few path prefixes each, and
/// one wildcard per 10 tenants.
fn routes(n: usize) -> Vec<RouteConfig> {
    let action = RouteAction::Redirect(Redirect {
        to: "https://example.com".into(),
        code: 301,
        keep_path: true,
    });
    let route = |host: HostPattern, path: &str| RouteConfig {
        name: format!("{host}{path}"),
        host,
        path: path.to_owned(),
        strip_prefix: false,
        action: action.clone(),
        fallback: None,
        max_body_size: None,
        request_buffering: true,
        rate_limit: None,
        exact: false,
        access: Default::default(),
        headers: Default::default(),
        compress: false,
    };
    let mut routes = Vec::with_capacity(n);
    let mut i = 0;
    while routes.len() < n {
        let tenant = format!("tenant{i}.example.com");
        routes.push(route(HostPattern::Exact(tenant.clone()), "/"));
        routes.push(route(HostPattern::Exact(tenant.clone()), "/api/"));
        routes.push(route(HostPattern::Exact(tenant), "/api/v2/admin/"));
        if i % 10 == 0 {
            routes.push(route(
                HostPattern::Wildcard(format!(".zone{i}.example.net")),
                "/",
            ));
        }
        i += 1;
    }
    routes.truncate(n);
    routes
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    for n in [10, 1_000, 100_000] {
        let table = RouteTable::new(&routes(n), &[], &[]);
        let requests = [
            ("tenant3.example.com", "/api/v2/admin/users"),
            ("tenant1.example.com", "/static/app.js"),
            ("a.b.zone0.example.net", "/x"),
            ("unknown.example.org", "/"),
        ];
        group.bench_with_input(BenchmarkId::from_parameter(n), &table, |b, table| {
            b.iter(|| {
                for (host, path) in requests {
                    black_box(table.lookup(black_box(host), black_box(path)));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
