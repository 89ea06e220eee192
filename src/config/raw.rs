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
    pub upstreams: BTreeMap<String, Spanned<RawUpstream>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub name: Option<Spanned<String>>,
    pub region: Option<Spanned<String>>,
    pub state_dir: Option<Spanned<String>>,
    pub threads: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub http: Option<Spanned<Vec<Spanned<String>>>>,
    pub admin: Option<Spanned<String>>,
    pub h2c: Option<bool>,
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
    pub fallback: Option<RawFallback>,
    pub max_body_size: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    pub to: Spanned<String>,
    pub code: Option<Spanned<i64>>,
    pub keep_path: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFallback {
    pub static_dir: Spanned<String>,
}
