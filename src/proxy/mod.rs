//! The HTTP reverse proxy: Pingora's `ProxyHttp` hooks wired to our snapshot.
//!
//! Per request: load the current snapshot once (the request finishes on it even if a reload
//! swaps in another), resolve the client IP and host, route, then pick a usable server of the
//! route's pool. A server that cannot be reached is passed over for another; a pool that is
//! down hands the request to the route's fallback, else answers 503.

mod access;
mod access_steps;
mod compression;
pub mod connections;
mod failure;
mod fastcgi;
mod forward_auth;
pub mod forwarded;
mod header_rules;
pub mod node_health;
mod pipeline;
pub mod region_fallback;
mod request_body;
mod request_limits;
mod responses;
pub mod route_table;
mod static_fallback;
mod static_site;
mod steps;

use std::any::Any;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::prelude::HttpPeer;
use pingora::protocols::http::compression::ResponseCompressionCtx;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};
use prometheus::IntGauge;
use tokio::sync::Semaphore;

use crate::access_log::{self, AccessLog, AccessRecord};
use crate::acme::challenge::Http01Tokens;
use crate::config::Balance;
use crate::metrics::{self, Metrics};
use crate::ratelimit::RateLimitInfo;
use crate::snapshot::{Snapshot, SnapshotCell};
use crate::upstream::registry::HealthRegistry;
use crate::upstream::{InFlight, Pool, Tried};
use forwarded::Downstream;
use region_fallback::RegionEdge;
use request_body::BufferedBody;
use route_table::{Route, RouteFallback, RouteTarget};

/// The proxy application; one instance serves every listener.
pub struct HeadlandProxy {
    snapshots: Arc<SnapshotCell>,
    access_log: Arc<AccessLog>,
    metrics: Arc<Metrics>,
    /// ACME HTTP-01 answers, served before routing so no route can shadow them.
    acme_tokens: Http01Tokens,
    /// Region health, for `fallback = { regions = true }`.
    registry: Arc<HealthRegistry>,
    /// Connections to forward-auth services, kept for reuse.
    auth_connector: Connector,
    /// bcrypt checks of basic-auth logins running at once: one per core.
    bcrypt_slots: Semaphore,
}

/// Everything one request accumulates on its way through the hooks.
pub struct RequestCtx {
    snapshot: Arc<Snapshot>,
    started: Instant,
    peer: Option<IpAddr>,
    client_ip: Option<IpAddr>,
    host: String,
    /// The request came over TLS.
    https: bool,
    /// The request's path after normalisation, when that changed it.
    normalized_path: Option<String>,
    /// The client's path when the upstream gets another one, for the access log.
    original_path: Option<String>,
    /// The pipeline step that answered the request itself, if one did.
    answered_by: Option<&'static str>,
    route: Option<usize>,
    /// The route's fallback pool took over from its own pool.
    on_fallback_pool: bool,
    /// Another region's edge took over (`fallback = { regions = true }`).
    region_edge: Option<RegionEdge>,
    /// The request came from another region's edge: never forwarded to a region again.
    hop: bool,
    request_id: HeaderValue,
    tried: Tried,
    retries: u32,
    in_flight: Option<InFlight>,
    route_in_flight: Option<IntGauge>,
    /// The rate limit's verdict, echoed in `RateLimit-*` response headers.
    rate_limit: Option<RateLimitInfo>,
    request_body_bytes: u64,
    /// The body (or its first part) read before the upstream was chosen.
    buffered_body: Option<BufferedBody>,
    /// `buffered_body` went into the current upstream attempt already.
    buffered_body_sent: bool,
    /// The response is being compressed (`compress = true` and the client accepts it).
    compression: Option<Box<ResponseCompressionCtx>>,
}

/// Marks an HTTP/1.x connection as kept alive for the next request on it (Pingora's
/// connection context; a zero-sized value, so carrying it allocates nothing).
struct KeptAlive;

// === impl HeadlandProxy ===

impl HeadlandProxy {
    pub fn new(
        snapshots: Arc<SnapshotCell>,
        access_log: Arc<AccessLog>,
        metrics: Arc<Metrics>,
        acme_tokens: Http01Tokens,
        registry: Arc<HealthRegistry>,
    ) -> Self {
        Self {
            snapshots,
            access_log,
            metrics,
            acme_tokens,
            registry,
            auth_connector: Connector::new(None),
            bcrypt_slots: Semaphore::new(
                std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            ),
        }
    }

    fn route<'a>(&self, ctx: &'a RequestCtx) -> Option<&'a Route> {
        ctx.snapshot.routes.matched(ctx.route)
    }

    /// The pool this request is using: the route's own, or its fallback pool.
    fn pool<'a>(&self, ctx: &'a RequestCtx) -> Option<&'a Arc<Pool>> {
        let route = self.route(ctx)?;
        match (&route.target, &route.fallback, ctx.on_fallback_pool) {
            (RouteTarget::Proxy(_), Some(RouteFallback::Pool(fallback)), true) => Some(fallback),
            (RouteTarget::Proxy(pool), _, _) => Some(pool),
            (RouteTarget::Redirect(_) | RouteTarget::Static(_) | RouteTarget::FastCgi(_), _, _) => {
                None
            }
        }
    }

    /// After a failure on the current server: another untried usable server of the pool,
    /// within the pool's retry budget? Else, if the route has a fallback pool not yet in use,
    /// switch to it. Returns whether the request should be tried again.
    fn next_attempt(&self, ctx: &mut RequestCtx) -> bool {
        let Some(pool) = self.pool(ctx).cloned() else {
            return false;
        };
        if ctx.retries < pool.retries && pool.has_untried_usable(&ctx.tried) {
            ctx.retries += 1;
            self.metrics.retries.with_label_values(&[&pool.name]).inc();
            return true;
        }
        match self.route(ctx).and_then(|r| r.fallback.as_ref()) {
            Some(RouteFallback::Pool(fallback))
                if fallback.is_available() && !ctx.on_fallback_pool =>
            {
                ctx.on_fallback_pool = true;
                ctx.tried = Tried::default();
                true
            }
            Some(RouteFallback::Regions) if ctx.region_edge.is_none() => {
                self.choose_region_edge(ctx)
            }
            _ => false,
        }
    }

    /// Sends the request to the nearest other region's edge that is up, unless it came
    /// from another edge already. Returns whether there is one.
    fn choose_region_edge(&self, ctx: &mut RequestCtx) -> bool {
        if ctx.hop {
            return false;
        }
        let Some(edge) = region_fallback::nearest(&ctx.snapshot, &self.registry.regions) else {
            return false;
        };
        let route = self.route(ctx).map_or(metrics::NONE, |r| r.name.as_str());
        self.metrics
            .region_fallbacks
            .with_label_values(&[route, edge.region.as_str()])
            .inc();
        ctx.region_edge = Some(edge);
        true
    }

    /// Feeds passive health with what the current server just did.
    fn record_outcome(&self, ctx: &RequestCtx, ok: bool) {
        let (Some(pool), Some(in_flight)) = (self.pool(ctx), &ctx.in_flight) else {
            return;
        };
        let server = in_flight.server();
        if pool.record_outcome(server, ok) {
            self.metrics
                .ejections
                .with_label_values(&[&pool.name, &server.label])
                .inc();
            tracing::warn!(upstream = %pool.name, server = %server.label, "server ejected after consecutive failures");
        }
    }
}

#[async_trait]
impl ProxyHttp for HeadlandProxy {
    type CTX = RequestCtx;

    /// Pingora's default adds a disabled response-compression module, built for every request
    /// (two allocations each); Headland does not compress responses, so it adds none.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            snapshot: self.snapshots.load(),
            started: Instant::now(),
            peer: None,
            client_ip: None,
            host: String::new(),
            https: false,
            normalized_path: None,
            original_path: None,
            answered_by: None,
            route: None,
            on_fallback_pool: false,
            region_edge: None,
            hop: false,
            request_id: HeaderValue::from_static(""),
            tried: Tried::default(),
            retries: 0,
            in_flight: None,
            route_in_flight: None,
            rate_limit: None,
            request_body_bytes: 0,
            buffered_body: None,
            buffered_body_sent: false,
            compression: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // RFC 9112 §9.3.2: requests a client pipelines are answered one after the other, in
        // order, as nginx does. Pingora's default closes the connection after the first answer
        // and drops the rest, which pipelining clients (apt, for one) then have to retry.
        session.set_pipelining_enabled(true);
        let limits = &ctx.snapshot.config.http;
        // Pingora keeps connections 60 s by default; `None` here means keep-alive is already
        // off (the client asked, or the server is shutting down) and must stay off.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(limits.keepalive_timeout.as_secs().max(1)));
        }
        // Between two reads of the request body, buffered or streamed (nginx's
        // client_body_timeout); past it the client gets 408.
        session.set_read_timeout(Some(limits.body_timeout));
        // A client that stops taking the response (nginx's send_timeout) would otherwise
        // hold its connection and the upstream's for as long as it likes.
        session.set_write_timeout(Some(limits.send_timeout));
        ctx.hop = session
            .req_header()
            .headers
            .contains_key(region_fallback::HOP_HEADER);
        self.run_pipeline(session, ctx).await
    }

    fn request_header_timeout(&self, reused: bool) -> Option<Duration> {
        let snapshot = self.snapshots.load();
        let limits = &snapshot.config.http;
        // On a kept-alive connection the wait starts with the idle time before the request,
        // which `keepalive_timeout` bounds by itself (a silent close).
        Some(if reused {
            limits.keepalive_timeout + limits.header_timeout
        } else {
            limits.header_timeout
        })
    }

    fn request_header_rejected(&self, _status: u16, reason: &'static str) {
        self.metrics
            .limit_rejections
            .with_label_values(&[reason])
            .inc();
    }

    fn persist_connection_context(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
    ) -> Option<Box<dyn Any + Send + Sync>> {
        Some(Box::new(KeptAlive))
    }

    /// A client that goes away or stalls is routine at an edge, not an error: one slowloris
    /// run wrote 4,001 ERROR lines before this. Such failures stay in the access log (status
    /// 0 or 408) and at debug level.
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, error: &Error) -> bool {
        let client_side = *error.esource() == ErrorSource::Downstream;
        if client_side {
            tracing::debug!(%error, "client connection ended");
        }
        client_side
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
        if let (Some(buffered), false) = (&ctx.buffered_body, ctx.buffered_body_sent) {
            ctx.buffered_body_sent = true;
            *body = Some(buffered.prepend_to(body.take()));
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
        if let Some(edge) = &ctx.region_edge {
            ctx.in_flight = None;
            ctx.buffered_body_sent = false;
            let peer = region_fallback::peer(edge, &ctx.host, &pool, ctx.snapshot.edge_ca.as_ref());
            return Ok(Box::new(peer));
        }
        let key = hash_key(&pool.balance, session.req_header(), ctx.client_ip);
        let Some((index, server)) = pool.select(key, &ctx.tried) else {
            return Error::e_explain(
                ErrorType::ConnectNoRoute,
                "no usable server left in the pool",
            );
        };
        ctx.tried.insert(index);
        // Each attempt sends the buffered body again (a connect failure, or a safe retry).
        ctx.buffered_body_sent = false;
        // Replacing the guard releases the slot held on a server that failed.
        ctx.in_flight = Some(server.begin_request());
        // TCP or a Unix socket, TLS as the pool says (never SNI from the client's Host).
        Ok(Box::new(pool.peer(&server)?))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(pool), Some(in_flight)) = (self.pool(ctx), &ctx.in_flight) {
            let labels = [pool.name.as_str(), in_flight.server().label.as_str()];
            self.metrics.connect_errors.with_label_values(&labels).inc();
        }
        self.record_outcome(ctx, false);
        // Nothing reached the upstream yet, so any request may go to another server.
        e.set_retry(self.next_attempt(ctx));
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        _client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        // Only the server's own failures count against it and may send the request elsewhere:
        // a client that gives up must not make every server of the pool see its request.
        let upstream_failed = *e.esource() == ErrorSource::Upstream;
        if upstream_failed {
            self.record_outcome(ctx, false);
        }
        let retry = upstream_failed && failure::may_replay(session) && self.next_attempt(ctx);
        e.set_retry(retry);
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if ctx.region_edge.is_some() {
            let node = HeaderValue::from_str(&ctx.snapshot.config.node.name)
                .unwrap_or(HeaderValue::from_static("headland"));
            upstream_request.insert_header(region_fallback::HOP_HEADER, node)?;
        }
        let peer_trusted = ctx
            .peer
            .is_some_and(|peer| ctx.snapshot.client_ip.is_trusted(peer));
        forwarded::apply(
            upstream_request,
            &Downstream {
                peer: ctx.peer,
                client: ctx.client_ip,
                peer_trusted,
                scheme: if ctx.https { "https" } else { "http" },
                request_id: &ctx.request_id,
            },
        )?;
        match self.route(ctx) {
            Some(route) => header_rules::apply_to_request(&route.headers.request, upstream_request),
            None => Ok(()),
        }
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // A 5xx may be the app's answer to this one request (any client can find a path that
        // errors), so it only counts against the server where the operator opted in.
        let counts_5xx = self.pool(ctx).is_some_and(|pool| pool.passive.on_5xx);
        self.record_outcome(
            ctx,
            !(counts_5xx && upstream_response.status.as_u16() >= 500),
        );
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(route) = self.route(ctx) {
            // Most routes have no rules: then not even the `Origin` lookup is paid.
            if !route.headers.response.is_empty() || route.headers.cors.is_some() {
                let origin = session.req_header().headers.get(http::header::ORIGIN);
                header_rules::apply_to_response(&route.headers, origin, upstream_response)?;
            }
            if route.compress {
                ctx.compression = compression::start(session.req_header(), upstream_response);
            }
        }
        upstream_response.insert_header(forwarded::X_REQUEST_ID, ctx.request_id.clone())?;
        if let Some(info) = &ctx.rate_limit {
            for (name, value) in info.headers() {
                upstream_response.insert_header(name, value)?;
            }
        }
        // RFC 6797 §7.2: HSTS only means something over a secure transport.
        if let (true, Some(hsts)) = (ctx.https, &ctx.snapshot.config.tls.hsts) {
            upstream_response.insert_header(http::header::STRICT_TRANSPORT_SECURITY, hsts)?;
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let Some(encoder) = ctx.compression.as_mut() {
            compression::encode(encoder, body, end_of_stream);
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let status = failure::status_for(e);
        if status == 408 {
            // A streamed body whose client stalled past `body_timeout` (buffered bodies are
            // counted where they are read).
            self.metrics
                .limit_rejections
                .with_label_values(&["body_timeout"])
                .inc();
        }
        let upstream_failed =
            *e.esource() == ErrorSource::Upstream || matches!(e.etype(), ErrorType::ConnectNoRoute);
        if upstream_failed && session.response_written().is_none() {
            let fallback = match self.route(ctx).and_then(|r| r.fallback.as_ref()) {
                Some(RouteFallback::StaticDir { dir, status }) => Some((dir.clone(), *status)),
                _ => None,
            };
            if let Some((dir, status)) = fallback {
                let path = session.req_header().uri.path().to_owned();
                let retry_after = self
                    .pool(ctx)
                    .map_or_else(|| "5".to_owned(), |p| steps::retry_after(p));
                if let Some(code) =
                    static_fallback::serve(session, &dir, status, &retry_after, &path).await
                {
                    return FailToProxy {
                        error_code: code,
                        can_reuse_downstream: false,
                    };
                }
            }
        }
        if status > 0 && session.response_written().is_none() {
            let body = responses::error_body(status, failure::detail_for(status));
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

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(gauge) = ctx.route_in_flight.take() {
            gauge.dec();
        }
        if e.is_some_and(|e| {
            e.etype() == &ErrorType::WriteTimedout && e.esource() == &ErrorSource::Downstream
        }) {
            self.metrics
                .limit_rejections
                .with_label_values(&["send_timeout"])
                .inc();
        }
        let route = self.route(ctx);
        let pool = self.pool(ctx);
        let route_name = route.map_or(metrics::NONE, |r| r.name.as_str());
        let pool_name = pool
            .map(|p| p.name.as_str())
            .or_else(|| route.and_then(|r| r.target.label()))
            .unwrap_or(metrics::NONE);
        let status = session.response_written().map(|r| r.status);
        let elapsed = ctx.started.elapsed();
        // Every request is counted, those answered before routing (400, 404) under an empty
        // route label, so an error-rate alert sees them.
        let code = status.as_ref().map_or("0", |s| s.as_str());
        self.metrics
            .http_requests
            .with_label_values(&[route_name, pool_name, code])
            .inc();
        self.metrics
            .http_duration
            .with_label_values(&[route_name, pool_name])
            .observe(elapsed.as_secs_f64());
        if !self.access_log.is_enabled() {
            return;
        }
        let request = session.req_header();
        self.access_log.write(&AccessRecord {
            time: access_log::timestamp(SystemTime::now()),
            client_ip: ctx.client_ip,
            host: &ctx.host,
            method: request.method.as_str(),
            path: ctx.original_path.as_deref().unwrap_or(request.uri.path()),
            status: status.map_or(0, |s| s.as_u16()),
            bytes: session.body_bytes_sent(),
            duration_ms: access_log::millis(elapsed),
            route: route.map(|r| r.name.as_str()),
            upstream: pool
                .map(|p| p.name.as_str())
                .or_else(|| route.and_then(|r| r.target.label())),
            server: ctx.in_flight.as_ref().map(|f| f.server().label.as_str()),
            request_id: forwarded::request_id_str(&ctx.request_id),
        });
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
