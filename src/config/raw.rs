//! The configuration file exactly as written: serde types that reject unknown keys and keep
//! the source span of every value that later validation may need to point at.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The whole file. Every section is optional so that a minimal file stays minimal.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub node: RawNode,
    #[serde(default)]
    pub listen: RawListen,
    #[serde(default)]
    pub client_ip: RawClientIp,
    #[serde(default)]
    pub access_log: RawAccessLog,
    #[serde(default)]
    pub http: RawHttp,
    #[serde(default)]
    pub upstreams: BTreeMap<String, Spanned<RawUpstream>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    pub webhooks: Vec<Spanned<RawWebhook>>,
    #[serde(default)]
    pub rate_limits: BTreeMap<String, Spanned<RawRateLimit>>,
    #[serde(default)]
    pub tls: RawTls,
    #[serde(default)]
    pub certificates: Vec<Spanned<RawCertificate>>,
    pub acme: Option<Spanned<RawAcme>>,
    #[serde(default)]
    pub geoip: RawGeoip,
    #[serde(default)]
    pub regions: BTreeMap<String, Spanned<RawRegion>>,
    #[serde(default)]
    pub dns: RawDns,
    pub cluster: Option<Spanned<RawCluster>>,
    #[serde(default)]
    pub resolver: RawResolver,
    #[serde(default)]
    pub streams: Vec<Spanned<RawStream>>,
}

/// `[[streams]]`: TCP connections on `listen` (picked by TLS SNI when `sni` is set) carried
/// to a server of `upstream`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStream {
    pub name: Option<Spanned<String>>,
    pub listen: Spanned<String>,
    pub upstream: Spanned<String>,
    pub sni: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGeoip {
    pub database: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegion {
    pub addresses: Vec<Spanned<String>>,
    pub location: Option<Spanned<RawLocation>>,
    pub countries: Option<Vec<Spanned<String>>>,
    pub continents: Option<Vec<Spanned<String>>>,
    pub weight: Option<Spanned<i64>>,
    pub health: Option<Spanned<String>>,
    pub health_interval: Option<Spanned<String>>,
    pub health_timeout: Option<Spanned<String>>,
    pub rise: Option<Spanned<i64>>,
    pub fall: Option<Spanned<i64>>,
    pub edge: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocation {
    pub lat: f64,
    pub lon: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    #[serde(default)]
    pub zones: BTreeMap<String, Spanned<RawZone>>,
    pub rate_limit: Option<Spanned<RawDnsRateLimit>>,
}

/// `[dns.rate_limit]`: response rate limiting of UDP answers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDnsRateLimit {
    pub responses_per_second: Option<Spanned<i64>>,
    pub window: Option<Spanned<String>>,
    pub slip: Option<Spanned<i64>>,
    pub ipv4_prefix: Option<Spanned<i64>>,
    pub ipv6_prefix: Option<Spanned<i64>>,
    pub exempt: Option<Vec<Spanned<String>>>,
    pub table_size: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawZone {
    pub file: Spanned<String>,
    #[serde(default)]
    pub geo: BTreeMap<String, Spanned<RawGeoName>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGeoName {
    pub regions: Vec<Spanned<String>>,
    pub ttl: Option<Spanned<i64>>,
    pub policy: Option<Spanned<String>>,
    pub fail_open: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub redirect_http: Option<bool>,
    pub hsts: Option<Spanned<String>>,
    pub default_certificate: Option<Spanned<String>>,
    pub edge_ca_file: Option<Spanned<String>>,
}

/// `[[certificates]]`: a certificate from files for the listed names, or, without files,
/// names to obtain one certificate for over ACME.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub names: Vec<Spanned<String>>,
    pub cert_file: Option<Spanned<String>>,
    pub key_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    pub directory: Option<Spanned<String>>,
    pub contact: Option<Vec<Spanned<String>>>,
    pub challenge: Option<Spanned<String>>,
    pub ca_root: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub endpoints: Option<Vec<Spanned<String>>>,
    pub prefix: Option<Spanned<String>>,
    pub lease_ttl: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub seal_key_file: Option<Spanned<String>>,
    pub ca_file: Option<Spanned<String>>,
    pub cert_file: Option<Spanned<String>>,
    pub key_file: Option<Spanned<String>>,
    pub user: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub rate: Spanned<String>,
    pub burst: Option<Spanned<i64>>,
    pub ipv6_prefix: Option<Spanned<i64>>,
    pub allow: Option<Vec<Spanned<String>>>,
    pub max_keys: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub url: Spanned<String>,
    pub secret_file: Option<Spanned<String>>,
    pub events: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub name: Option<Spanned<String>>,
    pub region: Option<Spanned<String>>,
    pub state_dir: Option<Spanned<String>>,
    pub threads: Option<Spanned<i64>>,
    pub watch_config: Option<bool>,
    pub shutdown_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub http: Option<Spanned<Vec<Spanned<String>>>>,
    pub https: Option<Vec<Spanned<String>>>,
    pub admin: Option<Spanned<String>>,
    pub admin_token_file: Option<Spanned<String>>,
    pub admin_public: Option<bool>,
    pub h2c: Option<bool>,
    pub dns: Option<Vec<Spanned<String>>>,
}

/// `[http]`: limits on what clients send and how long they take. Sizes are strings
/// (`"8KiB"`), as everywhere else in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub header_timeout: Option<Spanned<String>>,
    pub keepalive_timeout: Option<Spanned<String>>,
    pub body_timeout: Option<Spanned<String>>,
    pub send_timeout: Option<Spanned<String>>,
    pub max_uri_length: Option<Spanned<String>>,
    pub max_header_field_size: Option<Spanned<String>>,
    pub max_header_size: Option<Spanned<String>>,
    pub max_header_count: Option<Spanned<i64>>,
    pub max_connections: Option<Spanned<i64>>,
    pub max_connections_per_ip: Option<Spanned<i64>>,
    pub body_buffer_memory: Option<Spanned<String>>,
    pub body_buffer_max: Option<Spanned<String>>,
    pub merge_slashes: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientIp {
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    pub header: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    pub output: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub servers: Spanned<Vec<Spanned<String>>>,
    pub balance: Option<Spanned<String>>,
    pub hash_header: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub read_timeout: Option<Spanned<String>>,
    pub write_timeout: Option<Spanned<String>>,
    pub keepalive_timeout: Option<Spanned<String>>,
    pub health: Option<Spanned<RawHealth>>,
    pub passive: Option<Spanned<RawPassive>>,
    pub retries: Option<Spanned<i64>>,
    pub tls: Option<Spanned<RawUpstreamTls>>,
}

/// `tls = { sni = "app.internal", ca_file = "ca.pem", verify = true }`: HTTPS to the servers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub sni: Option<Spanned<String>>,
    pub ca_file: Option<Spanned<String>>,
    pub verify: Option<Spanned<bool>>,
}

/// `[resolver]`: name servers and TTL bounds for upstream servers named by host name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResolver {
    pub nameservers: Option<Vec<Spanned<String>>>,
    pub min_ttl: Option<Spanned<String>>,
    pub max_ttl: Option<Spanned<String>>,
}

/// `passive = { failures = 5, eject = "30s", on_5xx = false }`: eject a server after
/// consecutive failures.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPassive {
    pub failures: Option<Spanned<i64>>,
    pub eject: Option<Spanned<String>>,
    pub on_5xx: Option<bool>,
}

/// `health = { ... }` on an upstream: the active check of each of its servers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub check: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub method: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub expect: Option<Spanned<String>>,
    pub body_contains: Option<Spanned<String>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub rise: Option<Spanned<i64>>,
    pub fall: Option<Spanned<i64>>,
    pub start: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<Spanned<String>>,
    pub host: Spanned<String>,
    pub path: Option<Spanned<String>>,
    pub strip_prefix: Option<Spanned<bool>>,
    pub upstream: Option<Spanned<String>>,
    pub redirect: Option<Spanned<RawRedirect>>,
    #[serde(rename = "static")]
    pub static_site: Option<Spanned<RawStaticSite>>,
    pub fastcgi: Option<Spanned<RawFastCgi>>,
    pub fallback: Option<Spanned<RawFallback>>,
    pub max_body_size: Option<Spanned<String>>,
    pub request_buffering: Option<Spanned<bool>>,
    pub rate_limit: Option<Spanned<String>>,
    pub exact: Option<Spanned<bool>>,
    pub allow: Option<Spanned<Vec<Spanned<String>>>>,
    pub deny: Option<Spanned<Vec<Spanned<String>>>>,
    pub basic_auth: Option<Spanned<RawBasicAuth>>,
    pub forward_auth: Option<Spanned<RawForwardAuth>>,
    pub request_headers: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    pub response_headers: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    pub cors: Option<Spanned<RawCors>>,
    pub compress: Option<Spanned<bool>>,
}

/// `basic_auth = { htpasswd = "FILE", realm = "admin" }` on a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBasicAuth {
    pub htpasswd: Spanned<String>,
    pub realm: Option<Spanned<String>>,
}

/// `forward_auth = { url = "...", copy_headers = [...], timeout = "5s", cache = "0s" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForwardAuth {
    pub url: Spanned<String>,
    pub copy_headers: Option<Vec<Spanned<String>>>,
    pub timeout: Option<Spanned<String>>,
    pub cache: Option<Spanned<String>>,
}

/// `cors = { origins = [...], methods = [...], headers = [...], expose = [...], ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    pub origins: Spanned<Vec<Spanned<String>>>,
    pub methods: Option<Vec<Spanned<String>>>,
    pub headers: Option<Vec<Spanned<String>>>,
    pub expose: Option<Vec<Spanned<String>>>,
    pub credentials: Option<Spanned<bool>>,
    pub max_age: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    pub to: Spanned<String>,
    pub code: Option<Spanned<i64>>,
    pub keep_path: Option<bool>,
}

/// `static = { root, index }` on a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStaticSite {
    pub root: Spanned<String>,
    pub index: Option<Spanned<String>>,
}

/// `fastcgi = { server, root, index, front_controller, timeout }` on a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFastCgi {
    pub server: Spanned<String>,
    pub root: Spanned<String>,
    pub index: Option<Spanned<String>>,
    pub front_controller: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFallback {
    pub static_dir: Option<Spanned<String>>,
    pub upstream: Option<Spanned<String>>,
    pub regions: Option<Spanned<bool>>,
    pub status: Option<Spanned<i64>>,
}
