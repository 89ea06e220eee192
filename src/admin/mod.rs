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

pub mod client;

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::acme::Acme;
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
    ) -> Self {
        Self {
            snapshots,
            metrics,
            reloader,
            acme,
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
        let presented = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        if !presented.is_some_and(|token| constant_time_eq(token, &expected.0)) {
            return Some(json_answer(
                401,
                &json!({ "error": "missing or wrong admin token" }),
            ));
        }
        None
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
            (Method::GET, "/metrics") => {
                self.refresh_state_gauges();
                (
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.metrics.render(),
                )
            }
            (Method::GET, "/config") => self.config_status(),
            (Method::POST, "/reload") => self.reload(session).await,
            (Method::GET, "/certs") => json_answer(200, &self.acme.status()),
            (Method::POST, "/certs/renew") => self.renew(session),
            (_, "/healthz" | "/metrics" | "/config" | "/reload" | "/certs" | "/certs/renew") => {
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
        response
    }
}

fn json_answer(status: u16, value: &impl serde::Serialize) -> Answer {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    (status, JSON, body)
}

/// Compares without an early exit, so response timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
