//! `GET /status`: what this node is doing, in one JSON document: routes, pools and each
//! server's health, drain and recent checks, regions and where DNS sends clients,
//! certificates, and the configuration in use. The status page, `headland status` and
//! scripts read it; the field names are a contract (see `tests/fixtures/status/status.json`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use serde::{Deserialize, Serialize};

use crate::acme::CertStatus;
use crate::config::{Balance, Fallback, FastCgiServer, RouteAction, RouteConfig};
use crate::dns::service::region_serves;
use crate::dns::GeoPolicy;
use crate::metrics::Metrics;
use crate::reload::ReloadStatus;
use crate::snapshot::Snapshot;
use crate::upstream::health::Health;
use crate::upstream::registry::HealthRegistry;
use crate::upstream::{Pool, UpstreamServer};

#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    /// Unix milliseconds.
    pub generated_at: u64,
    pub node: NodeStatus,
    pub config: ConfigStatus,
    pub routes: Vec<RouteStatus>,
    pub upstreams: Vec<PoolStatus>,
    pub regions: Vec<RegionStatus>,
    pub geo_names: Vec<GeoNameStatus>,
    pub certificates: Vec<CertificateStatus>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub region: Option<String>,
    pub version: String,
    /// Unix seconds.
    pub started_at: u64,
    pub uptime_seconds: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ConfigStatus {
    pub generation: u64,
    pub file: Option<String>,
    pub last_reload_error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RouteStatus {
    pub host: String,
    pub path: String,
    /// `upstream`, `redirect`, `static` or `fastcgi`.
    pub kind: String,
    /// The pool, the redirect's target, the directory, or the FastCGI server.
    pub target: String,
    /// The rules that apply before the target: `rate_limit`, `allow`, `basic_auth`, ...
    pub rules: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PoolStatus {
    pub name: String,
    pub balance: String,
    /// Whether the pool has active health checks.
    pub checked: bool,
    /// Whether any server may take requests.
    pub available: bool,
    pub servers: Vec<ServerStatus>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ServerStatus {
    pub server: String,
    /// `up`, `down` or `unknown` (not checked, or no verdict yet).
    pub health: String,
    pub ejected: bool,
    pub drained: bool,
    pub in_flight: usize,
    pub last_check: Option<CheckStatus>,
    /// Oldest first; `None` for a failed check.
    pub recent_latency_ms: Vec<Option<f64>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CheckStatus {
    /// Unix milliseconds.
    pub at: u64,
    pub ok: bool,
    pub latency_ms: f64,
    pub error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RegionStatus {
    pub name: String,
    /// Whether DNS may give it out (its health URL passes, or it has none).
    pub up: bool,
    /// Whether it has a health URL.
    pub checked: bool,
    pub addresses: Vec<String>,
    pub this_node: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct GeoNameStatus {
    pub name: String,
    pub policy: String,
    pub ttl: u32,
    pub regions: Vec<String>,
    /// The regions DNS gives out for this name now.
    pub answering: Vec<String>,
    /// Answers given since start, by region (`all` when every region was down).
    pub answers: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CertificateStatus {
    #[serde(flatten)]
    pub certificate: CertStatus,
    /// Whole days until `not_after`; negative once expired.
    pub days_left: Option<i64>,
}

/// Everything `status` reads besides the snapshot.
pub struct Sources<'a> {
    pub registry: &'a HealthRegistry,
    pub metrics: &'a Metrics,
    pub reload: Option<ReloadStatus>,
    pub certificates: Vec<CertStatus>,
    pub started: SystemTime,
}

/// The status of this node now.
pub fn status(snapshot: &Snapshot, sources: Sources<'_>) -> Status {
    let now = SystemTime::now();
    let config = &snapshot.config;
    let geo_answers = geo_answer_counts(sources.metrics);
    Status {
        generated_at: unix_millis(now),
        node: NodeStatus {
            name: config.node.name.clone(),
            region: config.node.region.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: unix_millis(sources.started) / 1000,
            uptime_seconds: now
                .duration_since(sources.started)
                .unwrap_or_default()
                .as_secs(),
        },
        config: ConfigStatus {
            generation: snapshot.generation,
            file: sources.reload.as_ref().map(|r| r.file.clone()),
            last_reload_error: sources
                .reload
                .and_then(|r| r.last_error)
                .map(|e| format!("{}: {}", e.at, e.errors)),
        },
        routes: config
            .routes
            .iter()
            .map(|route| route_status(snapshot, route))
            .collect(),
        upstreams: snapshot.pools.iter().map(|p| pool_status(p)).collect(),
        regions: config
            .dns
            .regions
            .iter()
            .map(|region| {
                let spec = &region.spec;
                RegionStatus {
                    name: spec.name.clone(),
                    up: sources.registry.regions.is_up(&spec.name),
                    checked: region.health.is_some(),
                    addresses: spec
                        .v4
                        .iter()
                        .map(ToString::to_string)
                        .chain(spec.v6.iter().map(ToString::to_string))
                        .collect(),
                    this_node: config.node.region.as_deref() == Some(spec.name.as_str()),
                }
            })
            .collect(),
        geo_names: geo_names(snapshot, sources.registry, &geo_answers),
        certificates: sources
            .certificates
            .into_iter()
            .map(|cert| certificate_status(cert, now))
            .collect(),
    }
}

fn route_status(snapshot: &Snapshot, route: &RouteConfig) -> RouteStatus {
    let pool_name = |index: usize| {
        snapshot
            .config
            .upstreams
            .get(index)
            .map_or_else(String::new, |u| u.name.clone())
    };
    let (kind, target) = match &route.action {
        RouteAction::Proxy { upstream } => ("upstream", pool_name(*upstream)),
        RouteAction::Redirect(redirect) => ("redirect", redirect.to.clone()),
        RouteAction::Static(site) => ("static", site.root.display().to_string()),
        RouteAction::FastCgi(site) => (
            "fastcgi",
            match &site.server {
                FastCgiServer::Tcp(addr) => addr.to_string(),
                FastCgiServer::Unix(path) => format!("unix:{}", path.display()),
            },
        ),
    };
    let access = &route.access;
    let headers = &route.headers;
    let rules = [
        ("exact", route.exact),
        ("strip_prefix", route.strip_prefix),
        ("allow", !access.allow.is_empty()),
        ("deny", !access.deny.is_empty()),
        ("rate_limit", route.rate_limit.is_some()),
        ("cors", headers.cors.is_some()),
        ("basic_auth", access.basic_auth.is_some()),
        ("forward_auth", access.forward_auth.is_some()),
        ("request_headers", !headers.request.is_empty()),
        ("response_headers", !headers.response.is_empty()),
        ("compress", route.compress),
    ];
    let mut rules: Vec<String> = rules
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(name, _)| name.to_owned())
        .collect();
    match &route.fallback {
        Some(Fallback::Upstream(index)) => rules.push(format!("fallback: {}", pool_name(*index))),
        Some(Fallback::StaticDir { .. }) => rules.push("fallback: static".to_owned()),
        Some(Fallback::Regions) => rules.push("fallback: regions".to_owned()),
        None => {}
    }
    RouteStatus {
        host: route.host.to_string(),
        path: route.path.clone(),
        kind: kind.to_owned(),
        target,
        rules,
    }
}

fn pool_status(pool: &Pool) -> PoolStatus {
    PoolStatus {
        name: pool.name.clone(),
        balance: match pool.balance {
            Balance::RoundRobin => "round_robin",
            Balance::LeastConn => "least_conn",
            Balance::ConsistentHash { .. } => "consistent_hash",
            Balance::Random => "random",
        }
        .to_owned(),
        checked: pool.health_check.is_some(),
        available: pool.is_available(),
        servers: pool
            .servers
            .load()
            .iter()
            .map(|s| server_status(s))
            .collect(),
    }
}

fn server_status(server: &UpstreamServer) -> ServerStatus {
    let history = server.health.history();
    let millis = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    ServerStatus {
        server: server.label.clone(),
        health: match server.health.get() {
            Health::Up => "up",
            Health::Down => "down",
            Health::Unknown => "unknown",
        }
        .to_owned(),
        ejected: server.passive.is_ejected(),
        drained: server.is_drained(),
        in_flight: server.in_flight(),
        last_check: history.last.map(|check| CheckStatus {
            at: unix_millis(check.at),
            ok: check.error.is_none(),
            latency_ms: millis(check.latency),
            error: check.error,
        }),
        recent_latency_ms: history.recent.iter().map(|l| l.map(millis)).collect(),
    }
}

fn geo_names(
    snapshot: &Snapshot,
    registry: &HealthRegistry,
    answers: &BTreeMap<(String, String), u64>,
) -> Vec<GeoNameStatus> {
    let mut names: Vec<GeoNameStatus> = snapshot
        .config
        .dns
        .view
        .zones()
        .iter()
        .flat_map(|zone| zone.geo.values())
        .map(|geo| {
            let regions: Vec<String> = geo.regions.iter().map(|r| r.name.clone()).collect();
            let mut answering: Vec<String> = regions
                .iter()
                .filter(|region| region_serves(registry, snapshot, &geo.label, region))
                .cloned()
                .collect();
            if answering.is_empty() && geo.fail_open {
                answering.clone_from(&regions);
            }
            GeoNameStatus {
                name: geo.label.clone(),
                policy: match geo.policy {
                    GeoPolicy::Nearest => "nearest",
                    GeoPolicy::Weighted => "weighted",
                }
                .to_owned(),
                ttl: geo.ttl,
                answers: answers
                    .iter()
                    .filter(|((name, _), _)| *name == geo.label)
                    .map(|((_, region), count)| (region.clone(), *count))
                    .collect(),
                regions,
                answering,
            }
        })
        .collect();
    names.sort_by(|a, b| a.name.cmp(&b.name));
    names
}

/// `headland_dns_geo_answers_total` by (name, region), read without creating series.
fn geo_answer_counts(metrics: &Metrics) -> BTreeMap<(String, String), u64> {
    let mut counts = BTreeMap::new();
    for family in metrics.dns_geo_answers.collect() {
        for metric in family.get_metric() {
            let label = |wanted: &str| {
                metric
                    .get_label()
                    .iter()
                    .find(|l| l.name() == wanted)
                    .map(|l| l.value().to_owned())
                    .unwrap_or_default()
            };
            counts.insert(
                (label("name"), label("region")),
                metric.get_counter().get_value() as u64,
            );
        }
    }
    counts
}

fn certificate_status(certificate: CertStatus, now: SystemTime) -> CertificateStatus {
    let now_secs = i64::try_from(unix_millis(now) / 1000).unwrap_or(i64::MAX);
    CertificateStatus {
        days_left: certificate
            .not_after
            .map(|at| (i64::try_from(at).unwrap_or(i64::MAX) - now_secs).div_euclid(86_400)),
        certificate,
    }
}

/// `headland status`: the same document as aligned tables for a terminal.
pub fn summary(status: &Status) -> String {
    let node = &status.node;
    let mut out = format!(
        "node {} (region {}), headland {}, up {}, configuration generation {}{}\n",
        node.name,
        node.region.as_deref().unwrap_or("none"),
        node.version,
        duration_text(node.uptime_seconds),
        status.config.generation,
        status
            .config
            .file
            .as_deref()
            .map(|f| format!(" from {f}"))
            .unwrap_or_default(),
    );
    if let Some(error) = &status.config.last_reload_error {
        out.push_str(&format!("last reload failed: {error}\n"));
    }
    let mut servers = vec![row([
        "UPSTREAM",
        "SERVER",
        "HEALTH",
        "DRAINED",
        "IN FLIGHT",
        "LAST CHECK",
    ])];
    for pool in &status.upstreams {
        for server in &pool.servers {
            let health = if server.ejected {
                format!("{} (ejected)", server.health)
            } else {
                server.health.clone()
            };
            let check = match &server.last_check {
                None => "-".to_owned(),
                Some(check) => match &check.error {
                    None => format!("ok in {:.1} ms", check.latency_ms),
                    Some(error) => format!("failed: {error}"),
                },
            };
            servers.push(vec![
                pool.name.clone(),
                server.server.clone(),
                health,
                if server.drained { "drained" } else { "-" }.to_owned(),
                server.in_flight.to_string(),
                check,
            ]);
        }
    }
    out.push('\n');
    out.push_str(&table(&servers));
    if !status.regions.is_empty() {
        let mut regions = vec![row(["REGION", "STATE", "ADDRESSES", ""])];
        for region in &status.regions {
            regions.push(vec![
                region.name.clone(),
                if region.up { "up" } else { "down" }.to_owned(),
                region.addresses.join(","),
                if region.this_node { "this node" } else { "" }.to_owned(),
            ]);
        }
        out.push('\n');
        out.push_str(&table(&regions));
    }
    if !status.geo_names.is_empty() {
        let mut names = vec![row(["DNS NAME", "ANSWERING WITH", "ANSWERS SINCE START"])];
        for name in &status.geo_names {
            let answers: Vec<String> = name
                .answers
                .iter()
                .map(|(region, count)| format!("{region}={count}"))
                .collect();
            names.push(vec![
                name.name.clone(),
                name.answering.join(","),
                answers.join(" "),
            ]);
        }
        out.push('\n');
        out.push_str(&table(&names));
    }
    if !status.certificates.is_empty() {
        let mut certs = vec![row([
            "CERTIFICATE",
            "SOURCE",
            "STATE",
            "DAYS LEFT",
            "LAST ERROR",
        ])];
        for CertificateStatus {
            certificate: cert,
            days_left,
        } in &status.certificates
        {
            certs.push(vec![
                cert.names.join(","),
                cert.source.clone(),
                cert.state.clone(),
                days_left.map_or_else(|| "-".to_owned(), |d| d.to_string()),
                cert.last_error.clone().unwrap_or_else(|| "-".to_owned()),
            ]);
        }
        out.push('\n');
        out.push_str(&table(&certs));
    }
    out
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

/// Columns padded to their widest cell, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `3d 4h`, `2h 5m`, `12m`.
fn duration_text(seconds: u64) -> String {
    let (days, hours, minutes) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60);
    match (days, hours) {
        (0, 0) => format!("{minutes}m"),
        (0, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}

fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status page is written against this fixture: it must stay what the server sends.
    #[test]
    fn the_page_fixture_has_the_shape_the_server_sends() {
        let text = include_str!("../../tests/fixtures/status/status.json");
        let status: Status = serde_json::from_str(text).unwrap();
        let again = serde_json::to_value(&status).unwrap();
        let original: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(again, original, "fields the server would not send, or miss");
    }

    #[test]
    fn the_summary_shows_a_down_and_a_drained_server_and_days_left() {
        let text = include_str!("../../tests/fixtures/status/status.json");
        let summary = summary(&serde_json::from_str(text).unwrap());
        let line = |needle: &str| {
            summary
                .lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no line with {needle} in\n{summary}"))
                .to_owned()
        };
        assert!(line("UPSTREAM").starts_with("UPSTREAM  SERVER"));
        assert!(
            summary
                .lines()
                .any(|l| l.contains(" down ") && l.contains("failed: ")),
            "{summary}"
        );
        assert!(summary.lines().any(|l| l.contains("drained")), "{summary}");
        assert!(line("CERTIFICATE").contains("DAYS LEFT"));
    }
}
