//! The HTTP reverse proxy: Pingora's `ProxyHttp` hooks wired to our snapshot.
//!
//! Per request: load the current snapshot once (the request finishes on it even if a reload
//! swaps in another), resolve the client IP and host, route, then pick a server of the
//! route's pool, trying the pool's other servers when a connection cannot be made.

pub mod forwarded;
mod responses;
pub mod route_table;
mod static_fallback;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::access_log::{self, AccessLog, AccessRecord};
use crate::config::Balance;
use crate::host::normalize_authority;
use crate::snapshot::{Snapshot, SnapshotCell};
use crate::upstream::{InFlight, Pool, Tried};
use forwarded::Downstream;
use route_table::{Route, RouteTarget};

/// The proxy application; one instance serves every listener.
pub struct HeadlandProxy {
    snapshots: Arc<SnapshotCell>,
    access_log: Arc<AccessLog>,
}

/// Everything one request accumulates on its way through the hooks.
pub struct RequestCtx {
    snapshot: Arc<Snapshot>,
    started: Instant,
    peer: Option<IpAddr>,
    client_ip: Option<IpAddr>,
    host: String,
    /// The client's path when `strip_prefix` rewrote it, for the access log.
    original_path: Option<String>,
    route: Option<usize>,
    request_id: String,
    tried: Tried,
    in_flight: Option<InFlight>,
    request_body_bytes: u64,
}

// === impl HeadlandProxy ===

impl HeadlandProxy {
    pub fn new(snapshots: Arc<SnapshotCell>, access_log: Arc<AccessLog>) -> Self {
        Self {
            snapshots,
            access_log,
        }
    }

    /// Resolves client, host and route; answers directly when no upstream is involved.
    /// Returns `Ok(true)` when a response was sent.
    async fn route_request(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let snapshot = Arc::clone(&ctx.snapshot);
        let request = session.req_header();
        ctx.peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.client_ip = ctx
            .peer
            .map(|peer| snapshot.client_ip.resolve(peer, &request.headers));
        ctx.request_id = forwarded::request_id(
            request
                .headers
                .get(forwarded::X_REQUEST_ID)
                .map(|v| v.as_bytes()),
        );

        // HTTP/2 (and absolute-form HTTP/1.1) carry the host in the URI; HTTP/1.1 in `Host`.
        let authority = match request.uri.authority() {
            Some(authority) => Some(authority.as_str().as_bytes()),
            None => request
                .headers
                .get(http::header::HOST)
                .map(|v| v.as_bytes()),
        };
        let host = match authority.map(normalize_authority) {
            Some(Ok(host)) => host.into_owned(),
            Some(Err(error)) => {
                return self
                    .reject(session, ctx, 400, &format!("invalid Host header: {error}"))
                    .await;
            }
            None => return self.reject(session, ctx, 400, "missing Host header").await,
        };
        ctx.host = host;

        let path = request.uri.path();
        let Some(index) = snapshot.routes.lookup(&ctx.host, path) else {
            return self
                .reject(session, ctx, 404, "no route for this host and path")
                .await;
        };
        ctx.route = Some(index);
        let Some(route) = snapshot.routes.get(index) else {
            return self.reject(session, ctx, 500, "route vanished").await;
        };

        if let RouteTarget::Redirect(redirect) = &route.target {
            let location = if redirect.keep_path {
                let target = request.uri.path_and_query().map_or("/", |p| p.as_str());
                format!("{}{}", redirect.to, target)
            } else {
                redirect.to.clone()
            };
            let body = format!("Redirecting to {location}\n");
            let request_id = ctx.request_id.clone();
            responses::plain(
                session,
                redirect.code,
                body,
                &request_id,
                &[("location", &location)],
            )
            .await?;
            return Ok(true);
        }

        if let Some(max) = route.max_body_size {
            let declared = request
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|len| len > max) {
                return self
                    .reject(session, ctx, 413, "request body too large")
                    .await;
            }
        }

        if route.strip_prefix {
            strip_prefix(
                session.req_header_mut(),
                &route.prefix,
                &mut ctx.original_path,
            )?;
        }
        Ok(false)
    }

    async fn reject(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        status: u16,
        detail: &str,
    ) -> Result<bool> {
        let body = responses::error_body(status, detail);
        responses::plain(session, status, body, &ctx.request_id, &[]).await?;
        Ok(true)
    }

    fn route<'a>(&self, ctx: &'a RequestCtx) -> Option<&'a Route> {
        ctx.route.and_then(|i| ctx.snapshot.routes.get(i))
    }

    fn pool<'a>(&self, ctx: &'a RequestCtx) -> Option<&'a Arc<Pool>> {
        match &self.route(ctx)?.target {
            RouteTarget::Proxy(pool) => Some(pool),
            RouteTarget::Redirect(_) => None,
        }
    }
}

#[async_trait]
impl ProxyHttp for HeadlandProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            snapshot: self.snapshots.load_full(),
            started: Instant::now(),
            peer: None,
            client_ip: None,
            host: String::new(),
            original_path: None,
            route: None,
            request_id: String::new(),
            tried: Tried::default(),
            in_flight: None,
            request_body_bytes: 0,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        self.route_request(session, ctx).await
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Pingora also passes WebSocket frames through here once upgraded: those are a
        // conversation, not a request body, and must not hit the body limit.
        if session.was_upgraded() {
            return Ok(());
        }
        // Content-Length was checked up front; this catches chunked bodies as they stream.
        ctx.request_body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
        let max = self.route(ctx).and_then(|r| r.max_body_size);
        if max.is_some_and(|max| ctx.request_body_bytes > max) {
            return Err(Error::explain(
                ErrorType::HTTPStatus(413),
                "request body too large",
            ));
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(pool) = self.pool(ctx).cloned() else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "route has no upstream pool",
            ));
        };
        let key = hash_key(&pool.balance, session.req_header(), ctx.client_ip);
        let Some((index, server)) = pool.select(key, &ctx.tried) else {
            return Error::e_explain(ErrorType::ConnectNoRoute, "every server of the pool failed");
        };
        ctx.tried.insert(index);
        // Replacing the guard releases the slot held on a server that failed to connect.
        ctx.in_flight = Some(server.begin_request());
        let mut peer = HttpPeer::new(server.addr, false, String::new());
        peer.options.connection_timeout = Some(pool.timeouts.connect);
        peer.options.read_timeout = Some(pool.timeouts.read);
        peer.options.write_timeout = Some(pool.timeouts.write);
        peer.options.idle_timeout = Some(pool.timeouts.keepalive);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing reached the upstream yet, so any request may go to another server.
        let untried_left = self
            .pool(ctx)
            .is_some_and(|pool| ctx.tried.count() < pool.servers.len());
        e.set_retry(untried_left);
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let peer_trusted = ctx
            .peer
            .is_some_and(|peer| ctx.snapshot.client_ip.is_trusted(peer));
        forwarded::apply(
            upstream_request,
            &Downstream {
                peer: ctx.peer,
                client: ctx.client_ip,
                peer_trusted,
                scheme: "http",
                request_id: &ctx.request_id,
            },
        )
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut pingora::http::ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        upstream_response.insert_header(forwarded::X_REQUEST_ID, &ctx.request_id)?;
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let status = status_for(e);
        let upstream_failed =
            *e.esource() == ErrorSource::Upstream || matches!(e.etype(), ErrorType::ConnectNoRoute);
        if upstream_failed && session.response_written().is_none() {
            let fallback = self.route(ctx).and_then(|r| r.fallback_static_dir.clone());
            if let Some(dir) = fallback {
                let path = session.req_header().uri.path().to_owned();
                if let Some(code) = static_fallback::serve(session, &dir, &path).await {
                    return FailToProxy {
                        error_code: code,
                        can_reuse_downstream: false,
                    };
                }
            }
        }
        if status > 0 && session.response_written().is_none() {
            let detail = match status {
                504 => "the upstream server did not answer in time",
                502 => "the upstream server could not be reached or closed the connection",
                413 => "request body too large",
                _ => "the request could not be completed",
            };
            let body = responses::error_body(status, detail);
            if let Err(error) = responses::plain(session, status, body, &ctx.request_id, &[]).await
            {
                tracing::debug!(%error, "could not send error response");
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        if !self.access_log.is_enabled() {
            return;
        }
        let request = session.req_header();
        let route = self.route(ctx);
        let pool = self.pool(ctx);
        let server = ctx.in_flight.as_ref().map(|f| f.server().label.as_str());
        self.access_log.write(&AccessRecord {
            time: access_log::timestamp(SystemTime::now()),
            client_ip: ctx.client_ip,
            host: &ctx.host,
            method: request.method.as_str(),
            path: ctx.original_path.as_deref().unwrap_or(request.uri.path()),
            status: session.response_written().map_or(0, |r| r.status.as_u16()),
            bytes: session.body_bytes_sent(),
            duration_ms: access_log::millis(ctx.started.elapsed()),
            route: route.map(|r| r.name.as_str()),
            upstream: pool.map(|p| p.name.as_str()),
            server,
            request_id: &ctx.request_id,
        });
    }
}

/// What the client is told for a failure: 504 when the upstream was too slow, 502 when it
/// refused, reset or spoke nonsense; errors we raised carry their own status.
fn status_for(e: &Error) -> u16 {
    use ErrorType::*;
    match (e.etype(), e.esource()) {
        (HTTPStatus(code), _) => *code,
        (ConnectNoRoute, _) => 502,
        (ConnectTimedout | ReadTimedout | WriteTimedout, ErrorSource::Upstream) => 504,
        (_, ErrorSource::Upstream) => 502,
        (ReadError | WriteError | ConnectionClosed, ErrorSource::Downstream) => 0,
        (ReadTimedout, ErrorSource::Downstream) => 408,
        (_, ErrorSource::Downstream) => 400,
        _ => 500,
    }
}

/// Hash of what `consistent_hash` keys on: the configured header, else the client IP.
fn hash_key(balance: &Balance, request: &RequestHeader, client: Option<IpAddr>) -> u64 {
    let mut hasher = DefaultHasher::new();
    match balance {
        Balance::ConsistentHash { header: Some(name) } => match request.headers.get(name) {
            Some(value) => value.as_bytes().hash(&mut hasher),
            None => client.hash(&mut hasher),
        },
        Balance::ConsistentHash { header: None } => client.hash(&mut hasher),
        _ => return 0,
    }
    hasher.finish()
}

/// `/swarm/chat?x=1` with prefix `/swarm/` becomes `/chat?x=1`; the path keeps a leading '/'.
fn strip_prefix(
    request: &mut RequestHeader,
    prefix: &str,
    original: &mut Option<String>,
) -> Result<()> {
    let path_and_query = request.uri.path_and_query().map_or("/", |p| p.as_str());
    let Some(rest) = path_and_query.strip_prefix(prefix.trim_end_matches('/')) else {
        return Ok(());
    };
    let rest = rest.trim_start_matches('/');
    let new_target = format!("/{rest}");
    *original = Some(request.uri.path().to_owned());
    let uri = http::Uri::try_from(new_target)
        .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "rewriting path", e))?;
    request.set_uri(uri);
    Ok(())
}
