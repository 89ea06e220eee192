//! Upstream servers named by host name: one task per name asks the resolver again when the
//! answer's TTL runs out (within `[resolver]`'s `min_ttl` and `max_ttl`) and hands the
//! addresses to every current pool that lists the name. A failed resolution keeps the last
//! good addresses.
//!
//! Tasks are kept in step with the snapshot like health checks: a reload that keeps a name
//! keeps its task; one task per name, however many pools list it.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, ResolverConfig as HickoryConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::{HostPort, ResolverConfig, ServerAddress};
use crate::metrics::Metrics;
use crate::snapshot::SnapshotCell;

/// The resolver tasks, one per host name of the current configuration.
pub struct NameRegistry {
    state: Mutex<State>,
    metrics: Arc<Metrics>,
    /// Told whenever a pool's servers changed, so that health checks follow.
    changed: Arc<Notify>,
}

#[derive(Default)]
struct State {
    /// The settings the tasks run with; a change restarts them all.
    settings: Option<ResolverConfig>,
    tasks: HashMap<HostPort, NameTask>,
}

struct NameTask {
    /// The last good addresses, handed again to the pools of each new snapshot.
    last: Arc<Mutex<Option<Vec<SocketAddr>>>>,
    handle: JoinHandle<()>,
}

/// What one task needs besides its name.
struct Context {
    /// Built at the first resolution that needs it, and again after a failed build (say,
    /// /etc/resolv.conf was missing at start): shared by the tasks of one settings.
    resolver: Mutex<Option<TokioResolver>>,
    settings: ResolverConfig,
    snapshots: Arc<SnapshotCell>,
    metrics: Arc<Metrics>,
    changed: Arc<Notify>,
}

// === impl NameRegistry ===

impl NameRegistry {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            state: Mutex::new(State::default()),
            metrics,
            changed: Arc::new(Notify::new()),
        }
    }

    /// Notified when a name's addresses changed some pool's servers.
    pub fn changed(&self) -> Arc<Notify> {
        Arc::clone(&self.changed)
    }

    /// Makes the tasks match the current snapshot's host names, and gives its pools the
    /// addresses already known (a pool built during a resolution may have missed them).
    /// Must run inside a tokio runtime.
    pub fn apply(&self, snapshots: &Arc<SnapshotCell>) {
        let snapshot = snapshots.load();
        let settings = &snapshot.config.resolver;
        let wanted: BTreeSet<&HostPort> = snapshot
            .config
            .upstreams
            .iter()
            .flat_map(|upstream| &upstream.servers)
            .filter_map(|server| match server {
                ServerAddress::Name(name) => Some(name),
                _ => None,
            })
            .collect();
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if state.settings.as_ref() != Some(settings) {
            for (_, task) in state.tasks.drain() {
                task.handle.abort();
            }
            state.settings = Some(settings.clone());
        }
        state.tasks.retain(|name, task| {
            let keep = wanted.contains(name);
            if !keep {
                task.handle.abort();
                let label = name.to_string();
                for result in ["ok", "fail"] {
                    let _ = self
                        .metrics
                        .upstream_resolutions
                        .remove_label_values(&[&label, result]);
                }
            }
            keep
        });
        let mut changed = false;
        for (name, task) in &state.tasks {
            if let Some(addresses) = task.last.lock().ok().and_then(|last| last.clone()) {
                changed |= hand_over(snapshots, name, &addresses);
            }
        }
        if changed {
            self.changed.notify_one();
        }
        let missing: Vec<HostPort> = wanted
            .into_iter()
            .filter(|name| !state.tasks.contains_key(*name))
            .cloned()
            .collect();
        if missing.is_empty() {
            return;
        }
        let context = Arc::new(Context {
            resolver: Mutex::new(None),
            settings: settings.clone(),
            snapshots: Arc::clone(snapshots),
            metrics: Arc::clone(&self.metrics),
            changed: Arc::clone(&self.changed),
        });
        for name in missing {
            let last = Arc::new(Mutex::new(None));
            let handle = tokio::spawn(follow(
                name.clone(),
                Arc::clone(&context),
                Arc::clone(&last),
            ));
            state.tasks.insert(name, NameTask { last, handle });
        }
    }

    /// How many names are followed (for tests of `apply`).
    pub fn task_count(&self) -> usize {
        self.state.lock().map_or(0, |s| s.tasks.len())
    }

    pub fn stop_all(&self) {
        if let Ok(mut state) = self.state.lock() {
            for (_, task) in state.tasks.drain() {
                task.handle.abort();
            }
        }
    }
}

/// The configured name servers, else the system's (`/etc/resolv.conf`). Its cache never
/// holds an answer past `max_ttl`, so asking again at `max_ttl` reaches the name server.
fn build_resolver(settings: &ResolverConfig) -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = if settings.nameservers.is_empty() {
        TokioResolver::builder(provider).map_err(|e| format!("system resolver: {e}"))?
    } else {
        let servers = settings
            .nameservers
            .iter()
            .map(|addr| {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut server.connections {
                    connection.port = addr.port();
                }
                server
            })
            .collect();
        TokioResolver::builder_with_config(HickoryConfig::from_name_servers(servers), provider)
    };
    let options = builder.options_mut();
    options.positive_max_ttl = Some(settings.max_ttl);
    options.negative_max_ttl = Some(settings.min_ttl);
    builder.build().map_err(|e| e.to_string())
}

/// Follows one name for as long as the configuration lists it.
async fn follow(name: HostPort, context: Arc<Context>, last: Arc<Mutex<Option<Vec<SocketAddr>>>>) {
    let label = name.to_string();
    let metrics = &context.metrics.upstream_resolutions;
    let (ok, fail) = (
        metrics.with_label_values(&[&label, "ok"]),
        metrics.with_label_values(&[&label, "fail"]),
    );
    let settings = &context.settings;
    let mut failures: u32 = 0;
    loop {
        let wait = match resolve(&context, &name).await {
            Ok((addresses, ttl)) => {
                ok.inc();
                failures = 0;
                if let Ok(mut last) = last.lock() {
                    *last = Some(addresses.clone());
                }
                if hand_over(&context.snapshots, &name, &addresses) {
                    tracing::info!(server = %label, ?addresses, "upstream host name resolved to new addresses");
                    context.changed.notify_one();
                }
                ttl.clamp(settings.min_ttl, settings.max_ttl)
            }
            Err(reason) => {
                fail.inc();
                failures = failures.saturating_add(1);
                tracing::warn!(server = %label, %reason, "resolving an upstream host name failed; its last addresses stay in use");
                // Back off from min_ttl, doubling, up to max_ttl.
                let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
                settings
                    .min_ttl
                    .saturating_mul(factor)
                    .min(settings.max_ttl)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Every address of `name` (A and AAAA), sorted, and how long the answer is valid. An
/// answer without addresses counts as a failure: keeping the last servers (which health
/// checks still judge) beats a pool with none.
async fn resolve(
    context: &Context,
    name: &HostPort,
) -> Result<(Vec<SocketAddr>, Duration), String> {
    let resolver = {
        let mut shared = context
            .resolver
            .lock()
            .map_err(|_| "resolver lock poisoned".to_owned())?;
        match shared.as_ref() {
            Some(resolver) => resolver.clone(),
            None => shared.insert(build_resolver(&context.settings)?).clone(),
        }
    };
    let lookup = resolver
        .lookup_ip(name.host.as_str())
        .await
        .map_err(|e| e.to_string())?;
    let ttl = lookup
        .valid_until()
        .saturating_duration_since(Instant::now());
    let mut addresses: Vec<SocketAddr> = lookup
        .iter()
        .map(|ip| SocketAddr::new(ip, name.port))
        .collect();
    addresses.sort();
    addresses.dedup();
    if addresses.is_empty() {
        return Err("no addresses in the answer".to_owned());
    }
    Ok((addresses, ttl))
}

/// Gives `addresses` to every pool of the current snapshot that lists `name`; returns
/// whether any pool's servers changed.
fn hand_over(snapshots: &SnapshotCell, name: &HostPort, addresses: &[SocketAddr]) -> bool {
    let snapshot = snapshots.load();
    let mut changed = false;
    for pool in &snapshot.pools {
        changed |= pool.set_resolved(name, addresses);
    }
    changed
}
