//! The admin listener (loopback by default): `/healthz` (the process is alive) and
//! `/metrics` (Prometheus text format). Reload and config status join it later.

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::metrics::Metrics;
use crate::snapshot::SnapshotCell;

/// Answers the admin API's requests.
pub struct AdminApp {
    snapshots: Arc<SnapshotCell>,
    metrics: Arc<Metrics>,
}

// === impl AdminApp ===

impl AdminApp {
    pub fn new(snapshots: Arc<SnapshotCell>, metrics: Arc<Metrics>) -> Self {
        Self { snapshots, metrics }
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
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let (status, content_type, body) = match session.req_header().uri.path() {
            "/healthz" => (200, "text/plain; charset=utf-8", b"ok\n".to_vec()),
            "/metrics" => {
                self.refresh_state_gauges();
                (
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.metrics.render(),
                )
            }
            _ => (
                404,
                "text/plain; charset=utf-8",
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
