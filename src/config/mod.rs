//! Configuration: loading one TOML file into validated runtime types.
//!
//! `raw` mirrors the file; `validate` turns it into the types below, reporting every problem
//! with its location at once. Nothing here panics, so a bad file during a reload only ever
//! produces errors while the running configuration keeps serving.

mod access;
mod acme;
mod cert_coverage;
mod cluster;
mod dns;
mod dns_rrl;
mod error;
mod field;
mod headers;
mod health;
mod http_limits;
mod rate_limit;
mod raw;
mod resolver;
mod route;
mod site;
mod stream;
mod tls;
mod units;
mod upstream;
mod validate;
mod webhook;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;

pub use access::{AccessRules, BasicAuth, ForwardAuth};
pub use acme::{AcmeChallenge, AcmeConfig};
pub use cluster::{ClusterConfig, ClusterTls};
pub use dns::{DnsConfig, RegionConfig, RegionProbe};
pub use error::{did_you_mean, ConfigError, LocatedError, LocatedErrors};
pub use headers::{Cors, CorsOrigins, HeaderRules};
pub use health::{HealthCheck, HttpProbe, Probe, StatusSet};
pub use http_limits::HttpLimits;
pub use rate_limit::RateLimitConfig;
pub use resolver::ResolverConfig;
pub use stream::StreamConfig;
pub use tls::{StaticCertificate, TlsConfig};
pub use webhook::{WebhookConfig, EVENT_NAMES};

/// A validated configuration. Cross-references (route → upstream) are resolved to indexes.
#[derive(Debug, Clone)]
pub struct Config {
    pub node: NodeConfig,
    pub listen: ListenConfig,
    pub client_ip: ClientIpConfig,
    pub access_log: AccessLogOutput,
    /// `[http]`: limits on client requests and connections. Default: `HttpLimits::default()`.
    pub http: HttpLimits,
    /// Sorted by name; routes refer to them by index.
    pub upstreams: Vec<UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    pub webhooks: Vec<WebhookConfig>,
    /// Sorted by name; routes refer to them by index.
    pub rate_limits: Vec<RateLimitConfig>,
    /// Bearer token for the admin API's mutations (`POST /reload`). Default: none, which
    /// turns mutations off.
    pub admin_token: Option<Secret>,
    /// `[listen] admin_public`: the operator accepts an admin listener on a non-loopback
    /// address whose read endpoints (`/metrics`, `/config`, `/certs`) answer any peer
    /// without the token. Default: false (such a listener needs `admin_token_file`, and
    /// peers other than loopback must present the token for every endpoint but `/healthz`).
    pub admin_public: bool,
    pub tls: TlsConfig,
    /// `[acme]`: obtain and renew certificates. Default: none (certificates from files only).
    pub acme: Option<AcmeConfig>,
    /// `[geoip]`, `[regions]`, `[dns]`: the authoritative DNS server's data.
    pub dns: DnsConfig,
    /// `[cluster]`: the etcd shared with the other nodes. Default: none (a node alone).
    pub cluster: Option<ClusterConfig>,
    /// `[resolver]`: how upstream servers named by host name are resolved.
    pub resolver: ResolverConfig,
    /// `[[streams]]`: TCP and TLS-passthrough proxying, in file order. Default: none.
    pub streams: Vec<StreamConfig>,
    /// Located problems that do not stop the file from loading (a host no certificate
    /// covers), as `FILE:LINE:COL: warning: message`.
    pub warnings: Vec<LocatedError>,
}

/// Bytes that must never reach a log line or an error message.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Default: the machine's host name, else "headland".
    pub name: String,
    /// Default: none (single-region deployment).
    pub region: Option<String>,
    /// Default: `/var/lib/headland`.
    pub state_dir: PathBuf,
    /// Worker threads for the proxy. Default: the number of CPUs.
    pub threads: usize,
    /// Reload when the configuration file changes (polled, debounced). Default: false.
    pub watch_config: bool,
    /// How long SIGTERM or a binary upgrade lets in-flight requests finish before the old
    /// process closes their connections; 1s to 1h. Default: 60s.
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenConfig {
    /// Plain HTTP listeners. Default: `0.0.0.0:80`.
    pub http: Vec<SocketAddr>,
    /// HTTPS listeners (TLS 1.2/1.3, HTTP/2 and HTTP/1.1 by ALPN). Default: none.
    pub https: Vec<SocketAddr>,
    /// Admin API (status page, metrics, reload, drain). Default: `127.0.0.1:9180`; `None` = off.
    pub admin: Option<SocketAddr>,
    /// DNS listeners, UDP and TCP on each address. Default: none.
    pub dns: Vec<SocketAddr>,
    /// Accept HTTP/2 with prior knowledge on the plain listeners. Default: false.
    pub h2c: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIpConfig {
    /// Peers whose client-IP header is believed. Default: none.
    pub trusted_proxies: Vec<IpNet>,
    /// Which header carries the client address when the peer is trusted.
    pub header: ClientIpHeader,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIpHeader {
    /// `X-Forwarded-For`: the right-most address that is not itself a trusted proxy.
    XForwardedFor,
    /// A header holding exactly one address, such as `CF-Connecting-IP` or `X-Real-IP`.
    Single(HeaderName),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogOutput {
    Stdout,
    File(PathBuf),
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub name: String,
    /// In config order, each address once.
    pub servers: Vec<ServerAddress>,
    /// `tls = { ... }`: HTTPS to every server of the pool. Default: none (plain HTTP).
    pub tls: Option<UpstreamTls>,
    pub balance: Balance,
    pub timeouts: UpstreamTimeouts,
    /// Active health check of every server. Default: none (servers are always used).
    pub health: Option<HealthCheck>,
    pub passive: PassiveHealth,
    /// How many times a failed request may go to another server of the pool. Default: 2.
    pub retries: u32,
}

/// One entry of an upstream's `servers`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServerAddress {
    /// `IP:PORT`, `[IPv6]:PORT` or `localhost:PORT` (127.0.0.1).
    Ip(SocketAddr),
    /// `unix:/run/app.sock`: an absolute path to a Unix stream socket.
    Unix(PathBuf),
    /// `app:3000`: a host name, resolved while running; each of its addresses is a server.
    Name(HostPort),
}

/// A host name (lowercase, without a trailing dot) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

/// `tls = { sni, ca_file, verify }` of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Sent as SNI and verified against the certificate. Default: none, meaning the server's
    /// host name, or for an IP server its address (no SNI is sent for an address, RFC 6066
    /// §3; the certificate must name the IP). Never the client's Host.
    pub sni: Option<String>,
    /// The CAs (DER) the servers' certificates must chain to. Default: none, meaning the
    /// platform's trust store.
    pub ca: Option<Vec<Vec<u8>>>,
    /// Verify the certificate chain and name. Default: true.
    pub verify: bool,
}

/// Passive health: consecutive connect failures, resets or timeouts (and, with `on_5xx`, 5xx
/// answers) from one server take it out of rotation for `eject`, unless it is the pool's
/// last usable server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveHealth {
    /// Failures in a row that eject; 0 turns passive health off. Default: 5.
    pub failures: u32,
    /// How long an ejected server is left alone; at least 1s. Default: 30s.
    pub eject: Duration,
    /// Count 5xx answers as failures too. Off by default because any client can make an
    /// application answer 500 (a path that crashes it) and so eject healthy servers one
    /// after another. Default: false.
    pub on_5xx: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// TCP connect; at least 10ms. Default: 3s.
    pub connect: Duration,
    /// Between two reads from the upstream, including the wait for the response head; at
    /// least 10ms. Default: 60s.
    pub read: Duration,
    /// Between two writes to the upstream; at least 10ms. Default: 60s.
    pub write: Duration,
    /// How long an idle upstream connection is kept for reuse; zero disables reuse. Default: 60s.
    pub keepalive: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastConn,
    /// Same key, same server while it is up. Key: the header's value, else the client IP.
    ConsistentHash {
        header: Option<HeaderName>,
    },
    Random,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// Used in logs and metrics. Default: host followed by path, e.g. `api.example.com/`.
    pub name: String,
    pub host: HostPattern,
    /// Path prefix, always starting with `/`. Default: `/`.
    pub path: String,
    /// Remove `path` from the request before forwarding (`/swarm/x` → `/x`). Default: false.
    pub strip_prefix: bool,
    pub action: RouteAction,
    /// What answers when the route's pool is down or every server fails.
    pub fallback: Option<Fallback>,
    /// Largest request body accepted; `None` = unlimited. Default: 128 MiB.
    pub max_body_size: Option<u64>,
    /// Buffer up to `HttpLimits::body_buffer_max` of the request body before contacting the
    /// upstream, so a slow client does not hold an upstream connection while it uploads
    /// (nginx `proxy_request_buffering`). Default: true.
    pub request_buffering: bool,
    /// Index into `Config::rate_limits`. Default: none.
    pub rate_limit: Option<usize>,
    /// `path` matches only itself, not what is below it (nginx `location =`). Default: false.
    pub exact: bool,
    /// Address lists, basic auth and forward-auth. Default: none (open).
    pub access: AccessRules,
    /// Request and response header changes, CORS. Default: none.
    pub headers: HeaderRules,
    /// Compress responses (gzip, brotli, zstd) for clients that accept it. Default: false.
    pub compress: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// `example.com`, stored lowercase.
    Exact(String),
    /// `*.example.com` matches `a.example.com` and `a.b.example.com`, not `example.com`.
    /// Stored as the suffix with its leading dot: `.example.com`.
    Wildcard(String),
    /// `*`: any host; the last resort.
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAction {
    /// Forward to `upstreams[index]`.
    Proxy {
        upstream: usize,
    },
    Redirect(Redirect),
    /// Files under a directory (nginx `root`).
    Static(StaticSite),
    /// PHP scripts under a directory, run by a FastCGI server such as PHP-FPM (nginx
    /// `fastcgi_pass` with `try_files $uri $uri/ /index.php?$query_string`).
    FastCgi(FastCgiSite),
}

/// `static = { root, index }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticSite {
    /// The directory the request path is looked up in.
    pub root: PathBuf,
    /// The file served for a directory. Default: `index.html`.
    pub index: String,
}

/// `fastcgi = { server, root, index, front_controller, timeout }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastCgiSite {
    pub server: FastCgiServer,
    /// `DOCUMENT_ROOT`: scripts and static files are looked up here.
    pub root: PathBuf,
    /// The script run for a directory. Default: `index.php`.
    pub index: String,
    /// The script run for a path that names no file (nginx `try_files` fallback), such as
    /// `/index.php`; `None` answers 404 instead. Default: none.
    pub front_controller: Option<String>,
    /// How long connecting, and each wait for the server's next output, may take (nginx
    /// `fastcgi_connect_timeout` / `fastcgi_read_timeout`). Default: 60s.
    pub timeout: Duration,
}

/// Where the FastCGI server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FastCgiServer {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    /// Serve files from `dir` (the "static placeholder") with `status`: 200, or 500 to 599
    /// so that caches, crawlers and monitors see the outage. Default status: 503.
    StaticDir { dir: PathBuf, status: u16 },
    /// Forward to `upstreams[index]` instead.
    Upstream(usize),
    /// Forward over HTTPS to the edge of the nearest region that is up (`[regions.NAME]
    /// edge`), marked so that it is never forwarded again.
    Regions,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// Target URL prefix.
    pub to: String,
    /// 301, 302, 303, 307 or 308. Default: 301.
    pub code: u16,
    /// Append the request's path and query to `to`. Default: true.
    pub keep_path: bool,
}

/// Reads and validates the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with_text(path).map(|(config, _)| config)
}

/// Like `load`, also returning the text that was validated (to fingerprint it).
pub fn load_with_text(path: &Path) -> Result<(Config, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let config =
        parse(&text, &path.display().to_string(), base_dir).map_err(ConfigError::Invalid)?;
    Ok((config, text))
}

/// Validates configuration text. `file` names it in errors; relative paths in it are resolved
/// against `base_dir`.
pub fn parse(text: &str, file: &str, base_dir: &Path) -> Result<Config, LocatedErrors> {
    validate::validate(text, file, base_dir)
}

// === impl ServerAddress ===

impl std::fmt::Display for ServerAddress {
    /// As written in the file (`localhost:PORT` shows as its address): logs and metric labels.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerAddress::Ip(addr) => addr.fmt(f),
            ServerAddress::Unix(path) => write!(f, "unix:{}", path.display()),
            ServerAddress::Name(name) => name.fmt(f),
        }
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

// === impl HostPattern ===

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(host) => f.write_str(host),
            HostPattern::Wildcard(suffix) => write!(f, "*{suffix}"),
            HostPattern::Any => f.write_str("*"),
        }
    }
}
