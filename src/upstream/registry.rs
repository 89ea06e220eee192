//! The `HealthRegistry`: one active-check task per (pool, server), kept in step with the
//! current snapshot and with the addresses host names resolve to. A reload or a new answer
//! that leaves a server's check unchanged leaves its task and its state alone; new servers
//! get a task, removed ones lose theirs; no server ever has two.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::upstreams::peer::HttpPeer;
use tokio::task::JoinHandle;

use super::drain::Drains;
use super::health::{CheckRecord, Transition};
use super::probe::Prober;
use super::regions::RegionHealth;
use super::resolve::NameRegistry;
use super::{Endpoint, UpstreamServer};
use crate::config::{HealthCheck, UpstreamTls};
use crate::metrics::Metrics;
use crate::snapshot::{Snapshot, SnapshotCell};
use crate::webhook::{Event, EventKind, Webhooks};

type Key = (String, Endpoint);

pub struct HealthRegistry {
    tasks: Mutex<HashMap<Key, CheckTask>>,
    /// The regions' health, for DNS answers.
    pub regions: RegionHealth,
    /// The tasks that resolve upstream host names into pool servers.
    pub names: NameRegistry,
    metrics: Arc<Metrics>,
    webhooks: Arc<Webhooks>,
    prober: Arc<Prober>,
}

/// What one server's checks are run with: a change restarts its task.
#[derive(Clone, PartialEq)]
struct CheckSpec {
    check: HealthCheck,
    tls: Option<UpstreamTls>,
}

struct CheckTask {
    server: Arc<UpstreamServer>,
    spec: CheckSpec,
    handle: JoinHandle<()>,
}

/// Runs the registry as a Pingora background service, re-applying it on every reload.
pub struct HealthService {
    pub registry: Arc<HealthRegistry>,
    pub snapshots: Arc<SnapshotCell>,
    /// A host name's new address that an operator drained (by `NAME:PORT`) is drained too.
    pub drains: Arc<Drains>,
}

// === impl HealthRegistry ===

impl HealthRegistry {
    pub fn new(metrics: Arc<Metrics>, webhooks: Arc<Webhooks>) -> Self {
        let prober = Arc::new(Prober::new());
        Self {
            tasks: Mutex::new(HashMap::new()),
            regions: RegionHealth::new(
                Arc::clone(&metrics),
                Arc::clone(&webhooks),
                Arc::clone(&prober),
            ),
            names: NameRegistry::new(Arc::clone(&metrics)),
            metrics,
            webhooks,
            prober,
        }
    }

    /// Makes the running tasks match `snapshot`'s pools. Must run inside a tokio runtime.
    pub fn apply(&self, snapshot: &Snapshot) {
        self.regions.apply(&snapshot.config.dns.regions);
        let Ok(mut tasks) = self.tasks.lock() else {
            return;
        };
        let mut wanted: HashMap<Key, (Arc<UpstreamServer>, CheckSpec, HttpPeer)> = HashMap::new();
        for pool in &snapshot.pools {
            let Some(check) = &pool.health_check else {
                continue;
            };
            let spec = CheckSpec {
                check: check.clone(),
                tls: pool.tls.as_ref().map(|tls| tls.config.clone()),
            };
            for server in &pool.servers {
                match pool.peer(&server) {
                    Ok(peer) => {
                        let key = (pool.name.clone(), server.endpoint.clone());
                        wanted.insert(key, (server, spec.clone(), peer));
                    }
                    Err(error) => {
                        tracing::warn!(upstream = %pool.name, server = %server.label, %error, "server cannot be health-checked");
                    }
                }
            }
        }
        tasks.retain(|key, task| {
            let keep = wanted.get(key).is_some_and(|(server, spec, _)| {
                Arc::ptr_eq(server, &task.server) && *spec == task.spec
            });
            if !keep {
                task.handle.abort();
            }
            keep
        });
        for (key, (server, spec, peer)) in wanted {
            if tasks.contains_key(&key) {
                continue;
            }
            let handle = tokio::spawn(run_checks(
                key.0.clone(),
                (Arc::clone(&server), peer),
                spec.check.clone(),
                (Arc::clone(&self.metrics), Arc::clone(&self.webhooks)),
                Arc::clone(&self.prober),
            ));
            tasks.insert(
                key,
                CheckTask {
                    server,
                    spec,
                    handle,
                },
            );
        }
    }

    /// How many check tasks run (for tests of `apply`).
    pub fn task_count(&self) -> usize {
        self.tasks.lock().map_or(0, |t| t.len())
    }

    fn stop_all(&self) {
        self.regions.stop_all();
        self.names.stop_all();
        if let Ok(mut tasks) = self.tasks.lock() {
            for (_, task) in tasks.drain() {
                task.handle.abort();
            }
        }
    }
}

async fn run_checks(
    pool: String,
    (server, peer): (Arc<UpstreamServer>, HttpPeer),
    check: HealthCheck,
    (metrics, webhooks): (Arc<Metrics>, Arc<Webhooks>),
    prober: Arc<Prober>,
) {
    let host = server.authority();
    // Spread the first checks over one interval so a hundred servers do not fire at once.
    tokio::time::sleep(jittered(check.interval, 0.0, 1.0)).await;
    let ok_counter = metrics
        .health_checks
        .with_label_values(&[&pool, &server.label, "ok"]);
    let fail_counter = metrics
        .health_checks
        .with_label_values(&[&pool, &server.label, "fail"]);
    let latency = metrics
        .health_check_duration
        .with_label_values(&[&pool, &server.label]);
    loop {
        let started = Instant::now();
        let result = prober.probe(&peer, &host, &check).await;
        let took = started.elapsed();
        match &result {
            Ok(()) => {
                ok_counter.inc();
                latency.observe(took.as_secs_f64());
            }
            Err(reason) => {
                fail_counter.inc();
                tracing::debug!(upstream = %pool, server = %server.label, %reason, "health check failed");
            }
        }
        server.health.remember(CheckRecord {
            at: SystemTime::now(),
            latency: took,
            error: result.as_ref().err().map(ToString::to_string),
        });
        if let Some(transition) = server.health.record(result.is_ok(), check.rise, check.fall) {
            let (kind, detail) = match transition {
                Transition::WentDown => {
                    (EventKind::UpstreamDown, result.err().map(|e| e.to_string()))
                }
                Transition::WentUp => (EventKind::UpstreamUp, None),
            };
            tracing::warn!(upstream = %pool, server = %server.label, event = kind.as_str(), "upstream health changed");
            webhooks.notify(Event::upstream(kind, &pool, &server.label, detail));
        }
        tokio::time::sleep(jittered(check.interval, 0.9, 1.1)).await;
    }
}

/// `base` scaled by a random factor in `low..high`.
pub(super) fn jittered(base: Duration, low: f64, high: f64) -> Duration {
    base.mul_f64(low + rand::random::<f64>() * (high - low))
}

// === impl HealthService ===

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut generations = self.snapshots.subscribe();
        let resolved = self.registry.names.changed();
        self.registry.names.apply(&self.snapshots);
        self.registry.apply(&self.snapshots.load());
        loop {
            tokio::select! {
                changed = generations.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.registry.names.apply(&self.snapshots);
                    self.registry.apply(&self.snapshots.load());
                }
                // A host name's addresses changed a pool's servers.
                () = resolved.notified() => {
                    let snapshot = self.snapshots.load();
                    self.drains.apply(&snapshot.pools);
                    self.registry.apply(&snapshot);
                }
                _ = shutdown.changed() => break,
            }
        }
        self.registry.stop_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use std::path::Path;

    fn snapshot(text: &str, generation: u64, previous: Option<&Snapshot>) -> Snapshot {
        let config = config::parse(text, "test.toml", Path::new("/")).unwrap();
        Snapshot::build(config, generation, previous)
    }

    const TWO_POOLS: &str = r#"
[upstreams.a]
servers = ["127.0.0.1:1", "127.0.0.1:2"]
health = { check = "tcp", interval = "1h" }
[upstreams.b]
servers = ["127.0.0.1:3"]
health = { check = "tcp", interval = "1h" }
"#;

    #[tokio::test]
    async fn apply_keeps_unchanged_tasks_and_state_and_stops_removed_ones() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let registry =
            HealthRegistry::new(Arc::clone(&metrics), Arc::new(Webhooks::disabled(metrics)));
        let first = snapshot(TWO_POOLS, 1, None);
        registry.apply(&first);
        assert_eq!(registry.task_count(), 3);
        // Take a server down, as three failed checks would.
        let a1 = Arc::clone(&first.pools[0].servers.load()[0]);
        for _ in 0..3 {
            a1.health.record(false, 2, 3);
        }

        // Same config again: nothing restarts, nothing duplicates, state survives.
        let second = snapshot(TWO_POOLS, 2, Some(&first));
        registry.apply(&second);
        assert_eq!(registry.task_count(), 3);
        assert!(Arc::ptr_eq(&second.pools[0].servers.load()[0], &a1));
        assert_eq!(a1.health.get(), super::super::health::Health::Down);

        // Drop a server and pool b's check: their tasks stop.
        let third_text = TWO_POOLS.replace(r#", "127.0.0.1:2""#, "").replace(
            "servers = [\"127.0.0.1:3\"]\nhealth = { check = \"tcp\", interval = \"1h\" }",
            "servers = [\"127.0.0.1:3\"]",
        );
        let third = snapshot(&third_text, 3, Some(&second));
        registry.apply(&third);
        assert_eq!(registry.task_count(), 1);
        assert_eq!(
            third.pools[0].servers.load()[0].health.get(),
            super::super::health::Health::Down
        );
    }

    #[tokio::test]
    async fn a_host_name_has_one_resolver_task_whatever_the_pools_and_reloads() {
        let text = r#"
[resolver]
nameservers = ["127.0.0.1:9"]
[upstreams.a]
servers = ["app.internal:80"]
[upstreams.b]
servers = ["app.internal:80", "other.internal:80"]
"#;
        let metrics = Arc::new(Metrics::new().unwrap());
        let registry =
            HealthRegistry::new(Arc::clone(&metrics), Arc::new(Webhooks::disabled(metrics)));
        let cell = Arc::new(SnapshotCell::new(snapshot(text, 1, None)));
        registry.names.apply(&cell);
        assert_eq!(registry.names.task_count(), 2, "one task per name");
        cell.publish(snapshot(text, 2, Some(&cell.load())));
        registry.names.apply(&cell);
        assert_eq!(registry.names.task_count(), 2, "a reload starts none");
        let fewer = text.replace(", \"other.internal:80\"", "");
        cell.publish(snapshot(&fewer, 3, Some(&cell.load())));
        registry.names.apply(&cell);
        assert_eq!(registry.names.task_count(), 1, "a name no pool lists stops");
        registry.stop_all();
        assert_eq!(registry.names.task_count(), 0);
    }
}
