//! The admin listener (loopback by default):
//!
//! | request | answer |
//! |---|---|
//! | `GET /` | the status page (`status.html`: one self-contained file reading `/status`) |
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /status` | routes, pools and servers, regions, DNS, certificates (JSON, see `status`) |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /config` | generation, file, SHA-256, load time, last reload error (JSON) |
//! | `POST /reload` | reload now; needs `Authorization: Bearer <token>` |
//! | `GET /certs` | every certificate: names, source, state, issuer, expiry, next renewal, last error (JSON) |
//! | `POST /certs/renew?name=NAME` | renew that ACME certificate now (back-off permitting); needs the token |
//! | `POST /upstreams/POOL/SERVER/drain` | no new requests to SERVER (in-flight ones finish), kept in `state_dir`; needs the token |
//! | `POST /upstreams/POOL/SERVER/undrain` | undo it; needs the token |
//! | `POST /webhooks/test` | send a `webhook.test` event to every webhook now, report each outcome; needs the token |
//!
//! Peers other than loopback must present the token for every endpoint but `/healthz` and
//! the page itself (which holds no data), unless the operator set `[listen] admin_public =
//! true`: metrics, configuration status and certificate state are not for the whole
//! network. The token goes in `Authorization: Bearer <token>`, the scheme name in any letter
//! case (RFC 7235 §2.1).

pub mod client;
pub mod status;

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use http::{Method, Response};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::acme::Acme;
use crate::cluster::health::SharedHealth;
use crate::cluster::{self, Cluster};
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::snapshot::SnapshotCell;
use crate::upstream::drain::{DrainChange, Drains};
use crate::upstream::registry::HealthRegistry;
use crate::webhook::Webhooks;

/// What the admin API reads and acts on.
pub struct AdminParts {
    pub snapshots: Arc<SnapshotCell>,
    pub metrics: Arc<Metrics>,
    /// `None` when there is no file to reload from (the demo).
    pub reloader: Option<Arc<Reloader>>,
    pub acme: Arc<Acme>,
    pub registry: Arc<HealthRegistry>,
    pub drains: Arc<Drains>,
    pub webhooks: Arc<Webhooks>,
    /// The cluster and this node's shared view of region health, with `[cluster]`.
    pub cluster: Option<(Arc<Cluster>, Arc<SharedHealth>)>,
}

/// Answers the admin API's requests.
pub struct AdminApp {
    parts: AdminParts,
    started: SystemTime,
}

type Answer = (u16, &'static str, Vec<u8>);

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
const HTML: &str = "text/html; charset=utf-8";
const STATUS_PAGE: &str = include_str!("status.html");
/// The page runs its own inline script and reads `/status`; nothing else may load.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

// === impl AdminApp ===

impl AdminApp {
    pub fn new(parts: AdminParts) -> Self {
        Self {
            parts,
            started: SystemTime::now(),
        }
    }

    fn status(&self) -> Answer {
        let parts = &self.parts;
        let sources = status::Sources {
            registry: &parts.registry,
            metrics: &parts.metrics,
            reload: parts.reloader.as_ref().and_then(|r| r.status()),
            certificates: parts.acme.status(),
            started: self.started,
        };
        json_answer(200, &status::status(&parts.snapshots.load(), sources))
    }

    /// `POST /upstreams/POOL/SERVER/drain` or `/undrain`. SERVER is an address as `/status`
    /// lists it, a `unix:` path (its slashes may stay as they are), or the `NAME:PORT` a
    /// pool lists, which covers every address of that name.
    fn drain(&self, session: &ServerSession, path: &str) -> Answer {
        if let Some(refusal) = self.refuse_unauthorized(session) {
            return refusal;
        }
        let Some((pool, server, drain)) = drain_target(path) else {
            return json_answer(
                404,
                &json!({ "error": "expected /upstreams/POOL/SERVER/drain or /undrain" }),
            );
        };
        let snapshot = self.parts.snapshots.load();
        let found = snapshot.pool(&pool);
        match self
            .parts
            .drains
            .set(found.map(AsRef::as_ref), &pool, &server, drain)
        {
            Ok(DrainChange::Applied(servers)) => {
                let in_flight: usize = found
                    .map(|p| {
                        p.servers
                            .load()
                            .iter()
                            .filter(|s| servers.contains(&s.label))
                            .map(|s| s.in_flight())
                            .sum()
                    })
                    .unwrap_or(0);
                tracing::warn!(upstream = %pool, %server, drained = drain, "server drain changed by the admin API");
                json_answer(
                    200,
                    &json!({ "upstream": pool, "server": server, "drained": drain, "servers": servers, "in_flight": in_flight }),
                )
            }
            Ok(DrainChange::Unknown) => json_answer(
                404,
                &json!({ "error": format!("no server {server} in upstream {pool}") }),
            ),
            Err(error) => json_answer(
                500,
                &json!({ "error": format!("the drain could not be kept in state_dir, so it was not made: {error}") }),
            ),
        }
    }

    async fn test_webhooks(&self, session: &ServerSession) -> Answer {
        if let Some(refusal) = self.refuse_unauthorized(session) {
            return refusal;
        }
        let snapshot = self.parts.snapshots.load();
        if snapshot.config.webhooks.is_empty() {
            return json_answer(404, &json!({ "error": "no [[webhooks]] configured" }));
        }
        let (sequence, results) = self.parts.webhooks.test(&snapshot).await;
        let status = if results.iter().all(|r| r.delivered) {
            200
        } else {
            502
        };
        json_answer(status, &json!({ "sequence": sequence, "results": results }))
    }

    /// `GET /cluster`: every live node as etcd holds it, and whether this node follows etcd
    /// (`following`: false while its own probes decide region health).
    async fn cluster_status(&self) -> Answer {
        let Some((cluster, shared_health)) = &self.parts.cluster else {
            return json_answer(404, &json!({ "error": "this node has no [cluster]" }));
        };
        let following = shared_health.reports().is_some();
        match cluster::status::read(cluster).await {
            Ok(nodes) => json_answer(
                200,
                &json!({ "node": cluster.node(), "following": following, "nodes": nodes }),
            ),
            Err(error) => json_answer(
                503,
                &json!({ "node": cluster.node(), "following": following, "error": error.to_string() }),
            ),
        }
    }

    /// Gauges that mirror current state are set at scrape time, so they are never stale and
    /// servers removed by a reload disappear from the output.
    fn refresh_state_gauges(&self) {
        let snapshot = self.parts.snapshots.load();
        let metrics = &self.parts.metrics;
        metrics.config_generation.set(snapshot.generation as i64);
        metrics.upstream_up.reset();
        metrics.upstream_drained.reset();
        for pool in &snapshot.pools {
            for server in &pool.servers {
                let labels = [pool.name.as_str(), server.label.as_str()];
                metrics
                    .upstream_up
                    .with_label_values(&labels)
                    .set(i64::from(server.is_healthy()));
                metrics
                    .upstream_drained
                    .with_label_values(&labels)
                    .set(i64::from(server.is_drained()));
            }
        }
    }

    fn config_status(&self) -> Answer {
        match self.parts.reloader.as_ref().and_then(|r| r.status()) {
            Some(status) => json_answer(200, &status),
            None => {
                let generation = self.parts.snapshots.load().generation;
                json_answer(200, &json!({ "generation": generation, "file": null }))
            }
        }
    }

    /// `None` when the request carries the admin token, else the refusal to send.
    fn refuse_unauthorized(&self, session: &ServerSession) -> Option<Answer> {
        let snapshot = self.parts.snapshots.load();
        let Some(expected) = &snapshot.config.admin_token else {
            return Some(json_answer(
                403,
                &json!({ "error": "mutations over the admin API are off: set [listen] admin_token_file" }),
            ));
        };
        if !presents_token(session, &expected.0) {
            return Some(json_answer(
                401,
                &json!({ "error": "missing or wrong admin token" }),
            ));
        }
        None
    }

    /// `None` when the peer may read metrics, configuration status and certificates: a
    /// loopback peer, any peer with `admin_public`, else a peer presenting the token.
    fn refuse_remote_read(&self, session: &ServerSession) -> Option<Answer> {
        let loopback = session
            .client_addr()
            .and_then(|addr| addr.as_inet())
            .is_some_and(|addr| addr.ip().to_canonical().is_loopback());
        let snapshot = self.parts.snapshots.load();
        let config = &snapshot.config;
        let allowed = loopback
            || config.admin_public
            || config
                .admin_token
                .as_ref()
                .is_some_and(|token| presents_token(session, &token.0));
        (!allowed).then(|| {
            json_answer(
                401,
                &json!({ "error": "the admin API answers other hosts only with the admin token (Authorization: Bearer), or with [listen] admin_public = true" }),
            )
        })
    }

    fn renew(&self, session: &ServerSession) -> Answer {
        if let Some(refusal) = self.refuse_unauthorized(session) {
            return refusal;
        }
        let query = session.req_header().uri.query().unwrap_or_default();
        let name = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("name="))
            .unwrap_or_default();
        match self.parts.acme.request_renewal(&name.to_ascii_lowercase()) {
            Ok(()) => json_answer(202, &json!({ "renewing": name })),
            Err(error) => json_answer(404, &json!({ "error": error })),
        }
    }

    async fn reload(&self, session: &ServerSession) -> Answer {
        if let Some(refusal) = self.refuse_unauthorized(session) {
            return refusal;
        }
        let Some(reloader) = &self.parts.reloader else {
            return json_answer(
                409,
                &json!({ "error": "this instance was not started from a configuration file" }),
            );
        };
        match reloader.reload().await {
            Ok(done) => {
                let warning = done
                    .listen_changed
                    .then_some("listen addresses changed: they apply after a restart or a binary upgrade (--upgrade)");
                json_answer(
                    200,
                    &json!({ "generation": done.generation, "listen_changed": done.listen_changed, "warning": warning }),
                )
            }
            Err(error) => json_answer(
                422,
                &json!({ "error": "configuration rejected; still serving the previous one", "errors": error.to_string() }),
            ),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_owned();
        let (status, content_type, body) = match (method, path.as_str()) {
            (Method::GET, "/") => (200, HTML, STATUS_PAGE.as_bytes().to_vec()),
            (Method::GET, "/healthz") => (200, TEXT, b"ok\n".to_vec()),
            (Method::GET, "/status") => self
                .refuse_remote_read(session)
                .unwrap_or_else(|| self.status()),
            (Method::POST, "/webhooks/test") => self.test_webhooks(session).await,
            (Method::POST, upstream) if upstream.starts_with("/upstreams/") => {
                self.drain(session, upstream)
            }
            (Method::GET, "/metrics") => self.refuse_remote_read(session).unwrap_or_else(|| {
                self.refresh_state_gauges();
                (
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.parts.metrics.render(),
                )
            }),
            (Method::GET, "/config") => self
                .refuse_remote_read(session)
                .unwrap_or_else(|| self.config_status()),
            (Method::POST, "/reload") => self.reload(session).await,
            (Method::GET, "/certs") => self
                .refuse_remote_read(session)
                .unwrap_or_else(|| json_answer(200, &self.parts.acme.status())),
            (Method::POST, "/certs/renew") => self.renew(session),
            (Method::GET, "/cluster") => match self.refuse_remote_read(session) {
                Some(refused) => refused,
                None => self.cluster_status().await,
            },
            (
                _,
                "/" | "/healthz" | "/status" | "/metrics" | "/config" | "/reload" | "/certs"
                | "/certs/renew" | "/cluster" | "/webhooks/test",
            ) => (405, TEXT, b"405 Method Not Allowed\n".to_vec()),
            (_, upstream) if upstream.starts_with("/upstreams/") => {
                (405, TEXT, b"405 Method Not Allowed\n".to_vec())
            }
            _ => (
                404,
                TEXT,
                b"404 Not Found: unknown admin endpoint\n".to_vec(),
            ),
        };
        let mut response = Response::new(body);
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        if content_type == HTML {
            response.headers_mut().insert(
                http::header::CONTENT_SECURITY_POLICY,
                http::HeaderValue::from_static(PAGE_POLICY),
            );
        }
        // Status and certificates change by the second; nothing here is for caches.
        response.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        if status == 401 {
            // RFC 7235 §3.1: a 401 names the scheme that would be accepted.
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer realm=\"headland admin\""),
            );
        }
        response
    }
}

/// (pool, server, drain?) of `/upstreams/POOL/SERVER/drain` or `.../undrain`, each part
/// percent-decoded.
fn drain_target(path: &str) -> Option<(String, String, bool)> {
    let rest = path.strip_prefix("/upstreams/")?;
    let (pool, rest) = rest.split_once('/')?;
    let (server, action) = rest.rsplit_once('/')?;
    let drain = match action {
        "drain" => true,
        "undrain" => false,
        _ => return None,
    };
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .ok()
            .map(|text| text.into_owned())
    };
    let (pool, server) = (decode(pool)?, decode(server)?);
    (!pool.is_empty() && !server.is_empty()).then_some((pool, server, drain))
}

fn json_answer(status: u16, value: &impl serde::Serialize) -> Answer {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    (status, JSON, body)
}

/// Whether the request's `Authorization` header carries `expected` as a bearer token.
fn presents_token(session: &ServerSession, expected: &[u8]) -> bool {
    session
        .req_header()
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| bearer_token(value.as_bytes()))
        .is_some_and(|token| tokens_match(token, expected))
}

/// The token of `Bearer <token>`. The scheme name is case-insensitive (RFC 7235 §2.1), so
/// `bearer` and `BEARER` count too; one or more spaces separate it from the token.
fn bearer_token(header: &[u8]) -> Option<&[u8]> {
    let space = header.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = header.split_at(space);
    let token = rest.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer") && !token.is_empty()).then_some(token)
}

/// Compares SHA-256 digests without an early exit, so response timing reveals neither the
/// token nor its length.
fn tokens_match(presented: &[u8], expected: &[u8]) -> bool {
    let digest = |bytes: &[u8]| ring::digest::digest(&ring::digest::SHA256, bytes);
    let (presented, expected) = (digest(presented), digest(expected));
    presented
        .as_ref()
        .iter()
        .zip(expected.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_name_is_case_insensitive() {
        for header in ["Bearer t0k", "bearer t0k", "BEARER t0k", "bEaReR  t0k "] {
            assert_eq!(
                bearer_token(header.as_bytes()),
                Some(&b"t0k"[..]),
                "{header}"
            );
        }
        for header in ["Basic t0k", "Bearert0k", "Bearer", "Bearer  ", "t0k", ""] {
            assert_eq!(bearer_token(header.as_bytes()), None, "{header}");
        }
    }

    #[test]
    fn drain_paths_name_the_pool_the_server_and_the_action() {
        let target = |path: &str| drain_target(path);
        assert_eq!(
            target("/upstreams/app/127.0.0.1:5001/drain"),
            Some(("app".into(), "127.0.0.1:5001".into(), true))
        );
        assert_eq!(
            target("/upstreams/php/unix:/run/php/fpm.sock/undrain"),
            Some(("php".into(), "unix:/run/php/fpm.sock".into(), false))
        );
        assert_eq!(
            target("/upstreams/app/%5B%3A%3A1%5D%3A80/drain"),
            Some(("app".into(), "[::1]:80".into(), true))
        );
        for path in [
            "/upstreams/app/drain",
            "/upstreams//x/drain",
            "/upstreams/app/x/stop",
        ] {
            assert_eq!(target(path), None, "{path}");
        }
    }

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(tokens_match(b"secret", b"secret"));
        assert!(!tokens_match(b"secret", b"secreT"));
        assert!(!tokens_match(b"secret", b"secret2"));
        assert!(!tokens_match(b"", b"secret"));
    }
}
