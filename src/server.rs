//! Assembles the Pingora server from a validated configuration: the proxy on every HTTP
//! listener, the admin API, and the shared snapshot they read.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pingora::apps::HttpServerOptions;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::proxy::http_proxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::access_log::AccessLog;
use crate::acme::{Acme, AcmeService};
use crate::admin::{AdminApp, AdminParts};
use crate::cluster::health::SharedHealth;
use crate::cluster::shared_config::SharedConfig;
use crate::cluster::{Cluster, ClusterService};
use crate::config::Config;
use crate::dns::service::{DnsService, DnsSockets};
use crate::metrics::Metrics;
use crate::pid_file;
use crate::proxy::connections::{ConnectionGate, OpenConnections};
use crate::proxy::HeadlandProxy;
use crate::ratelimit::LimiterHousekeeping;
use crate::reload::{ReloadOnChange, ReloadOnSignal, Reloader};
use crate::shutdown::ExitWhenDrained;
use crate::snapshot::{Snapshot, SnapshotCell};
use crate::stream::{self, OpenStreams, StreamProxy};
use crate::tls::{self, SniResolver};
use crate::upstream::drain::Drains;
use crate::upstream::registry::{HealthRegistry, HealthService};
use crate::webhook::Webhooks;

/// How the process was started.
#[derive(Debug, Default, Clone)]
pub struct StartOptions {
    /// Take the listening sockets over from a running instance (Pingora's graceful upgrade).
    pub upgrade: bool,
    /// The file the configuration came from and its text; reloads read the file again.
    /// `None` (the demo): no reload.
    pub source: Option<(PathBuf, String)>,
    /// In a cluster, the shared routing configuration the configuration was built with.
    pub shared: Option<String>,
    /// A directory removed when the process exits normally (the demo's files, private key
    /// included). Default: none.
    pub remove_on_exit: Option<PathBuf>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("cannot open access log: {0}")]
    AccessLog(#[source] std::io::Error),
    #[error("cannot set up metrics: {0}")]
    Metrics(#[source] prometheus::Error),
    #[error("cannot set up an HTTPS listener: {0}")]
    Tls(#[source] Box<pingora::Error>),
    #[error("cannot listen for DNS on {addrs}: {error}")]
    Dns {
        addrs: String,
        #[source]
        error: std::io::Error,
    },
    #[error("cannot set up the cluster: {0}")]
    Cluster(#[source] crate::cluster::ClusterError),
}

/// Builds every service and runs until a shutdown signal; does not return on success.
pub fn run(config: Config, options: StartOptions) -> Result<std::convert::Infallible, StartError> {
    let metrics = Arc::new(Metrics::new().map_err(StartError::Metrics)?);
    let access_log = AccessLog::start(&config.access_log, metrics.access_log_dropped.clone())
        .map_err(StartError::AccessLog)?;
    let access_log = Arc::new(access_log);
    let listen = config.listen.clone();
    let stream_listen = stream::listen_addresses(&config);
    // Listener-level settings are fixed at start: Pingora builds its listeners once.
    let h2_idle_timeout = config.http.keepalive_timeout;
    let watch_config = config.node.watch_config;
    let threads = config.node.threads;
    // `[cluster]` is read at start only, as the listeners are: a reload keeps the cluster.
    let cluster = match &config.cluster {
        Some(cluster) => Some(Arc::new(
            Cluster::new(cluster.clone(), &config.node.name).map_err(StartError::Cluster)?,
        )),
        None => None,
    };
    let server_conf = server_conf(&config);
    if let Err(error) = pid_file::write(&config.node.state_dir) {
        tracing::warn!(%error, dir = %config.node.state_dir.display(), "cannot write the pid file; `headland reload` will need the admin API");
    }
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let drains = Arc::new(Drains::load(&config.node.state_dir));
    let first = Snapshot::build(config, 1, None);
    drains.apply(&first.pools);
    let snapshots = Arc::new(SnapshotCell::new(first));

    let opt = Opt {
        upgrade: options.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf);
    server.bootstrap();

    let (webhooks, webhook_worker) = Webhooks::new(Arc::clone(&snapshots), Arc::clone(&metrics));
    server.add_service(background_service("webhooks", webhook_worker));
    let webhooks = Arc::new(webhooks);
    let registry = Arc::new(HealthRegistry::new(
        Arc::clone(&metrics),
        Arc::clone(&webhooks),
    ));
    let acme = Arc::new(Acme::default());
    let proxy_app = HeadlandProxy::new(
        Arc::clone(&snapshots),
        Arc::clone(&access_log),
        Arc::clone(&metrics),
        acme.tokens.clone(),
        Arc::clone(&registry),
    );
    let mut http_app = http_proxy(&server.configuration, proxy_app);
    http_app.server_options = Some(server_options(listen.h2c, h2_idle_timeout));
    let connections = Arc::new(OpenConnections::new());
    let gate = ConnectionGate::new(
        http_app,
        Arc::clone(&connections),
        Arc::clone(&snapshots),
        Arc::clone(&metrics),
    );
    let mut proxy = Service::new("headland http".to_owned(), gate);
    for addr in &listen.http {
        proxy.add_listener(ListenerConfig::tcp(addr.to_string()).l4_buffer(plain_http_buffers()));
    }
    if !listen.https.is_empty() {
        let resolver = Arc::new(SniResolver::new(Arc::clone(&snapshots), Arc::clone(&acme)));
        for addr in &listen.https {
            let settings =
                tls::listener_settings(Arc::clone(&resolver)).map_err(StartError::Tls)?;
            proxy.add_tls_with_settings(&addr.to_string(), None, settings);
        }
    }
    server.add_service(proxy);
    let open_streams = Arc::new(OpenStreams::new());
    let stream_app = StreamProxy::new(
        Arc::clone(&snapshots),
        Arc::clone(&metrics),
        Arc::clone(&access_log),
        Arc::clone(&open_streams),
    );
    if let Some(streams) = stream::service(&stream_listen, stream_app) {
        server.add_service(streams);
    }
    server.add_service(background_service(
        "exit when drained",
        ExitWhenDrained {
            connections,
            streams: open_streams,
            access_log,
            remove_on_exit: options.remove_on_exit.clone(),
        },
    ));

    let shared_config = cluster
        .as_ref()
        .map(|_| Arc::new(SharedConfig::new(options.shared)));
    let shared_health = Arc::new(SharedHealth::default());
    let reloader = options.source.map(|(path, text)| {
        Arc::new(Reloader::new(
            path,
            &text,
            (
                Arc::clone(&snapshots),
                Arc::clone(&metrics),
                Arc::clone(&drains),
            ),
            shared_config.clone(),
        ))
    });
    if let Some(reloader) = &reloader {
        server.add_service(background_service(
            "reload on SIGHUP",
            ReloadOnSignal(Arc::clone(reloader)),
        ));
        if watch_config {
            server.add_service(background_service(
                "reload on file change",
                ReloadOnChange::config_file(Arc::clone(reloader)),
            ));
        }
        server.add_service(background_service(
            "reload on GeoIP database change",
            ReloadOnChange::geoip_database(Arc::clone(reloader)),
        ));
    }

    if let Some(admin_addr) = listen.admin {
        let app = AdminApp::new(AdminParts {
            snapshots: Arc::clone(&snapshots),
            metrics: Arc::clone(&metrics),
            reloader: reloader.clone(),
            acme: Arc::clone(&acme),
            registry: Arc::clone(&registry),
            drains: Arc::clone(&drains),
            webhooks: Arc::clone(&webhooks),
            cluster: cluster
                .as_ref()
                .map(|c| (Arc::clone(c), Arc::clone(&shared_health))),
        });
        let mut admin = Service::new("headland admin".to_owned(), app);
        admin.add_tcp(&admin_addr.to_string());
        server.add_service(admin);
    }

    if !listen.dns.is_empty() {
        let sockets = DnsSockets::bind(&listen.dns, threads).map_err(|error| StartError::Dns {
            addrs: format!("{:?}", listen.dns),
            error,
        })?;
        let dns = DnsService::new(
            sockets,
            Arc::clone(&snapshots),
            Arc::clone(&registry),
            Arc::clone(&metrics),
            acme.dns01.clone(),
        );
        let mut service = background_service("dns", dns);
        service.threads = Some(threads);
        server.add_service(service);
    }
    if let Some(cluster) = &cluster {
        let service = ClusterService::new(
            Arc::clone(cluster),
            Arc::clone(&acme),
            Arc::clone(&snapshots),
            (Arc::clone(&registry), Arc::clone(&metrics)),
            (
                Arc::clone(&shared_health),
                shared_config.clone(),
                reloader.clone(),
            ),
        );
        server.add_service(background_service("cluster", service));
    }
    let health = HealthService {
        registry,
        snapshots: Arc::clone(&snapshots),
        drains,
    };
    server.add_service(background_service("health checks", health));
    let certificates = AcmeService::new(
        acme,
        Arc::clone(&snapshots),
        Arc::clone(&metrics),
        webhooks,
        cluster,
    );
    server.add_service(background_service("certificates", certificates));

    let housekeeping = LimiterHousekeeping {
        snapshots: Arc::clone(&snapshots),
    };
    server.add_service(background_service("rate-limit housekeeping", housekeeping));

    for addr in &listen.http {
        tracing::info!(%addr, "http listener");
    }
    for addr in &listen.https {
        tracing::info!(%addr, "https listener");
    }
    for addr in &listen.dns {
        tracing::info!(%addr, "dns listener (udp and tcp)");
    }
    for addr in &stream_listen {
        tracing::info!(%addr, "stream listener");
    }
    // Pingora returns here after SIGINT, or when a graceful shutdown outlived its grace
    // period; `ExitWhenDrained` exits earlier when the last connection closes.
    server.run(RunArgs::default());
    crate::shutdown::exit(options.remove_on_exit.as_deref())
}

/// Plain HTTP connections read straight into Pingora's HTTP parser buffer. Pingora's default
/// puts a 64 KiB read buffer in front of every connection, made for TLS records; for plain
/// HTTP it only adds a copy of every byte read, and it cost each idle keep-alive connection
/// 8 KiB of RSS with glibc's allocator, 64 KiB with mimalloc (benches/README.md). TLS
/// listeners keep the default: with or without it, HTTP/2 over TLS measured the same.
fn plain_http_buffers() -> L4BufferSettings {
    L4BufferSettings::default().read(0)
}

fn server_options(h2c: bool, h2_idle_timeout: Duration) -> HttpServerOptions {
    let mut options = HttpServerOptions::default();
    options.h2c = h2c;
    // HTTP/1.1's keep-alive timeout is set per request (`ProxyHttp::request_filter`); an
    // idle HTTP/2 connection is closed by Pingora after the same time.
    options.h2_idle_timeout = Some(h2_idle_timeout);
    options
}

fn server_conf(config: &Config) -> ServerConf {
    let state_dir = &config.node.state_dir;
    ServerConf {
        threads: config.node.threads,
        pid_file: state_dir.join("headland.pid").display().to_string(),
        upgrade_sock: state_dir.join("upgrade.sock").display().to_string(),
        // Pingora sleeps the whole grace period after SIGTERM (or an upgrade's hand-over)
        // before it drops what still runs; `shutdown::ExitWhenDrained` ends the process as
        // soon as the last client connection has closed, so the grace period is only the
        // upper bound for slow requests, and a stop with nothing in flight is immediate.
        grace_period_seconds: Some(config.node.shutdown_timeout.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    }
}
