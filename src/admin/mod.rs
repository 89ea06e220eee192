//! The admin listener (loopback by default):
//!
//! | request | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /config` | generation, file, SHA-256, load time, last reload error (JSON) |
//! | `POST /reload` | reload now; needs `Authorization: Bearer <token>` |
//! | `GET /certs` | every certificate: names, source, state, issuer, expiry, next renewal, last error (JSON) |
//! | `POST /certs/renew?name=NAME` | renew that ACME certificate now (back-off permitting); needs the token |
//!
//! Peers other than loopback must present the token for every endpoint but `/healthz`,
//! unless the operator set `[listen] admin_public = true`: metrics, configuration status and
//! certificate state are not for the whole network. The token goes in
//! `Authorization: Bearer <token>`, the scheme name in any letter case (RFC 7235 §2.1).

pub mod client;

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::acme::Acme;
use crate::cluster::health::SharedHealth;
use crate::cluster::{status, Cluster};
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::snapshot::SnapshotCell;

/// Answers the admin API's requests.
pub struct AdminApp {
    snapshots: Arc<SnapshotCell>,
    metrics: Arc<Metrics>,
    /// `None` when there is no file to reload from (the demo).
    reloader: Option<Arc<Reloader>>,
    acme: Arc<Acme>,
    /// The cluster and this node's shared view of region health, with `[cluster]`.
    cluster: Option<(Arc<Cluster>, Arc<SharedHealth>)>,
}

type Answer = (u16, &'static str, Vec<u8>);

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

// === impl AdminApp ===

impl AdminApp {
    pub fn new(
        snapshots: Arc<SnapshotCell>,
        metrics: Arc<Metrics>,
        reloader: Option<Arc<Reloader>>,
        acme: Arc<Acme>,
        cluster: Option<(Arc<Cluster>, Arc<SharedHealth>)>,
    ) -> Self {
        Self {
            snapshots,
            metrics,
            reloader,
            acme,
            cluster,
        }
    }

    /// `GET /cluster`: every live node as etcd holds it, and whether this node follows etcd
    /// (`following`: false while its own probes decide region health).
    async fn cluster_status(&self) -> Answer {
        let Some((cluster, shared_health)) = &self.cluster else {
            return json_answer(404, &json!({ "error": "this node has no [cluster]" }));
        };
        let following = shared_health.reports().is_some();
        match status::read(cluster).await {
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
        let snapshot = self.snapshots.load();
        self.metrics
            .config_generation
            .set(snapshot.generation as i64);
        self.metrics.upstream_up.reset();
        for pool in &snapshot.pools {
            for server in &pool.servers {
                self.metrics
                    .upstream_up
                    .with_label_values(&[&pool.name, &server.label])
                    .set(i64::from(server.is_usable()));
            }
        }
    }

    fn config_status(&self) -> Answer {
        match self.reloader.as_ref().and_then(|r| r.status()) {
            Some(status) => json_answer(200, &status),
            None => {
                let generation = self.snapshots.load().generation;
                json_answer(200, &json!({ "generation": generation, "file": null }))
            }
        }
    }

    /// `None` when the request carries the admin token, else the refusal to send.
    fn refuse_unauthorized(&self, session: &ServerSession) -> Option<Answer> {
        let snapshot = self.snapshots.load();
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
        let snapshot = self.snapshots.load();
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
        match self.acme.request_renewal(&name.to_ascii_lowercase()) {
            Ok(()) => json_answer(202, &json!({ "renewing": name })),
            Err(error) => json_answer(404, &json!({ "error": error })),
        }
    }

    async fn reload(&self, session: &ServerSession) -> Answer {
        if let Some(refusal) = self.refuse_unauthorized(session) {
            return refusal;
        }
        let Some(reloader) = &self.reloader else {
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
            (Method::GET, "/healthz") => (200, TEXT, b"ok\n".to_vec()),
            (Method::GET, "/metrics") => self.refuse_remote_read(session).unwrap_or_else(|| {
                self.refresh_state_gauges();
                (
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.metrics.render(),
                )
            }),
            (Method::GET, "/config") => self
                .refuse_remote_read(session)
                .unwrap_or_else(|| self.config_status()),
            (Method::POST, "/reload") => self.reload(session).await,
            (Method::GET, "/certs") => self
                .refuse_remote_read(session)
                .unwrap_or_else(|| json_answer(200, &self.acme.status())),
            (Method::POST, "/certs/renew") => self.renew(session),
            (Method::GET, "/cluster") => match self.refuse_remote_read(session) {
                Some(refused) => refused,
                None => self.cluster_status().await,
            },
            (
                _,
                "/healthz" | "/metrics" | "/config" | "/reload" | "/certs" | "/certs/renew"
                | "/cluster",
            ) => (405, TEXT, b"405 Method Not Allowed\n".to_vec()),
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
    fn tokens_match_only_when_equal() {
        assert!(tokens_match(b"secret", b"secret"));
        assert!(!tokens_match(b"secret", b"secreT"));
        assert!(!tokens_match(b"secret", b"secret2"));
        assert!(!tokens_match(b"", b"secret"));
    }
}
