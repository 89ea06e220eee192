//! `[cluster]`: the etcd that nodes in several regions share (DESIGN.md decision 9). Without
//! the section a node is alone and needs nothing but its file.

use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::error::ErrorSink;
use super::field::{Limits, Scope};
use super::raw::RawCluster;
use super::Secret;

/// Bytes of the AES-256-GCM key that seals private keys stored in etcd.
pub const SEAL_KEY_BYTES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// etcd client URLs, `http://` or `https://`. Required.
    pub endpoints: Vec<String>,
    /// Every key Headland writes starts with this. Default: `/headland/`.
    pub prefix: String,
    /// Life of the node's lease: a node silent this long is gone for the others (its region
    /// leaves DNS answers; the certificate orders it held may be taken over). Default: 6s.
    pub lease_ttl: Duration,
    /// Longest wait for one etcd request (and for a connection) before the node carries on
    /// with what it has. Default: 5s.
    pub timeout: Duration,
    /// The key that seals certificate private keys and the ACME account key before they go
    /// to etcd: 32 bytes written as 64 hex digits. Required with `[acme]`.
    pub seal_key: Option<Secret>,
    /// TLS to etcd: the CA that signed etcd's certificate, and a client certificate.
    pub tls: Option<ClusterTls>,
    /// etcd user name and password (`user`, `password_file`). Default: none.
    pub auth: Option<(String, Secret)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTls {
    /// PEM of the CA etcd's certificate chains to.
    pub ca: Vec<u8>,
    /// PEM certificate and key this node presents to etcd, when etcd asks for one.
    pub identity: Option<(Vec<u8>, Secret)>,
}

pub(super) fn cluster(
    raw: &Spanned<RawCluster>,
    acme_configured: bool,
    base_dir: &Path,
    sink: &mut ErrorSink<'_>,
) -> ClusterConfig {
    let cluster = raw.get_ref();
    let scope = Scope::new("cluster ");
    let endpoints: Vec<String> = cluster
        .endpoints
        .iter()
        .flatten()
        .filter_map(|endpoint| {
            let text = endpoint.get_ref();
            let valid = (text.starts_with("http://") || text.starts_with("https://"))
                && text.parse::<http::Uri>().is_ok_and(|uri| uri.host().is_some());
            if !valid {
                sink.at(endpoint.span(), format!("cluster endpoint \"{text}\" must be an etcd client URL such as \"http://10.0.0.5:2379\" or \"https://etcd-1.example.com:2379\""));
            }
            valid.then(|| text.clone())
        })
        .collect();
    if cluster.endpoints.as_ref().is_none_or(Vec::is_empty) {
        sink.at(
            raw.span(),
            "cluster endpoints must list at least one etcd client URL",
        );
    }
    let prefix = match &cluster.prefix {
        None => "/headland/".to_owned(),
        Some(prefix) if prefix.get_ref().trim().is_empty() => {
            sink.at(prefix.span(), "cluster prefix must not be empty");
            String::new()
        }
        Some(prefix) if prefix.get_ref().ends_with('/') => prefix.get_ref().clone(),
        Some(prefix) => format!("{}/", prefix.get_ref()),
    };
    // Under two seconds a lease dies at the first slow round trip over a WAN; over five
    // minutes a dead node keeps its region in DNS answers and its orders locked far too long.
    let lease_ttl = scope.duration(
        "lease_ttl",
        cluster.lease_ttl.as_ref(),
        Duration::from_secs(6),
        Limits::between(Duration::from_secs(2), Duration::from_secs(300)),
        sink,
    );
    let timeout = scope.duration(
        "timeout",
        cluster.timeout.as_ref(),
        Duration::from_secs(5),
        Limits::between(Duration::from_millis(100), Duration::from_secs(60)),
        sink,
    );
    let seal_key = cluster
        .seal_key_file
        .as_ref()
        .and_then(|file| seal_key(&scope, file, base_dir, sink));
    if acme_configured && cluster.seal_key_file.is_none() {
        sink.at(raw.span(), "with [acme] and [cluster], set cluster seal_key_file: private keys are stored in etcd sealed with it (make one with `openssl rand -hex 32 > cluster.key`, the same file on every node)");
    }
    let tls = tls(cluster, &scope, &endpoints, base_dir, sink);
    let auth = match (&cluster.user, &cluster.password_file) {
        (Some(user), Some(file)) => scope
            .secret("password_file", file, base_dir, sink)
            .map(|password| (user.get_ref().clone(), password)),
        (None, None) => None,
        (Some(user), None) => {
            sink.at(user.span(), "cluster user needs password_file");
            None
        }
        (None, Some(file)) => {
            sink.at(file.span(), "cluster password_file needs user");
            None
        }
    };
    ClusterConfig {
        endpoints,
        prefix,
        lease_ttl,
        timeout,
        seal_key,
        tls,
        auth,
    }
}

/// 64 hex digits (whitespace around them ignored), as `openssl rand -hex 32` writes them.
fn seal_key(
    scope: &Scope,
    file: &Spanned<String>,
    base_dir: &Path,
    sink: &mut ErrorSink<'_>,
) -> Option<Secret> {
    let text = scope.secret("seal_key_file", file, base_dir, sink)?;
    let key = crate::cluster::seal::decode_hex(&text.0).filter(|key| key.len() == SEAL_KEY_BYTES);
    if key.is_none() {
        sink.at(file.span(), format!("cluster seal_key_file \"{}\" must hold {SEAL_KEY_BYTES} bytes as {} hex digits (make one with `openssl rand -hex 32`)", file.get_ref(), SEAL_KEY_BYTES * 2));
    }
    key.map(Secret)
}

fn tls(
    cluster: &RawCluster,
    scope: &Scope,
    endpoints: &[String],
    base_dir: &Path,
    sink: &mut ErrorSink<'_>,
) -> Option<ClusterTls> {
    let ca = cluster
        .ca_file
        .as_ref()
        .and_then(|file| scope.file("ca_file", file, base_dir, sink));
    let identity = match (&cluster.cert_file, &cluster.key_file) {
        (Some(cert), Some(key)) => {
            let cert = scope.file("cert_file", cert, base_dir, sink);
            let key = scope.secret("key_file", key, base_dir, sink);
            cert.zip(key)
        }
        (None, None) => None,
        (Some(file), None) | (None, Some(file)) => {
            sink.at(
                file.span(),
                "cluster cert_file and key_file go together (a client certificate and its key)",
            );
            None
        }
    };
    let uses_https = endpoints.iter().any(|e| e.starts_with("https://"));
    match (ca, uses_https) {
        (Some(ca), true) => Some(ClusterTls { ca, identity }),
        (None, true) => {
            let mut endpoints = cluster.endpoints.iter().flatten();
            if let Some(endpoint) = endpoints.find(|e| e.get_ref().starts_with("https://")) {
                sink.at(endpoint.span(), "cluster endpoints use https://: set cluster ca_file to the CA that signed etcd's certificate");
            }
            None
        }
        (_, false) => {
            if let Some(file) = &cluster.ca_file {
                sink.at(
                    file.span(),
                    "cluster ca_file is set but no endpoint uses https://",
                );
            }
            None
        }
    }
}
