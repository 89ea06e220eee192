//! The steps of the request pipeline (`pipeline.rs` runs them in order), each with one job.
//! Steps whose job is a subject of its own (access rules, body buffering) call into the
//! module that owns it.

use std::borrow::Cow;

use http::header::{CACHE_CONTROL, CONTENT_LENGTH, RETRY_AFTER};
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use super::pipeline::{Outcome, Reply};
use super::request_body::{BufferError, BufferedBody};
use super::route_table::{Found, RouteFallback, RouteTarget};
use super::{
    failure, fastcgi, forwarded, node_health, request_limits, static_fallback, static_site,
    HeadlandProxy, RequestCtx,
};
use crate::acme::challenge::HTTP01_PREFIX;
use crate::host::normalize_authority;
use crate::path;
use crate::ratelimit::Decision;
use crate::upstream::Pool;

// === impl HeadlandProxy ===

impl HeadlandProxy {
    /// The peer's address, and the client's: a trusted proxy's header may name it.
    pub(super) async fn client_ip(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Outcome> {
        ctx.peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.client_ip = ctx.peer.map(|peer| {
            ctx.snapshot
                .client_ip
                .resolve(peer, &session.req_header().headers)
        });
        Ok(Outcome::Next)
    }

    /// The client's `X-Request-Id` when it is usable, else a new one.
    pub(super) async fn request_id(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Outcome> {
        let given = session.req_header().headers.get(forwarded::X_REQUEST_ID);
        ctx.request_id = forwarded::request_id(given);
        Ok(Outcome::Next)
    }

    /// URI and header size limits (414, 431) and `Content-Length` framing (400).
    pub(super) async fn request_limits(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Outcome> {
        let checked = request_limits::check(session.req_header(), &ctx.snapshot.config.http)
            .and_then(|()| request_limits::collapse_content_length(session.req_header_mut()));
        match checked {
            Ok(()) => Ok(Outcome::Next),
            Err(rejection) => {
                self.metrics
                    .limit_rejections
                    .with_label_values(&[rejection.limit])
                    .inc();
                // As nginx does: a client that broke a limit gets no further request on this
                // connection (part of an oversized request may still be unread).
                Ok(Outcome::Reply(
                    Reply::error(rejection.status, rejection.detail).closing(),
                ))
            }
        }
    }

    /// `/.well-known/headland/health`, which other regions probe: answered before routing.
    pub(super) async fn node_health(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Outcome> {
        let uri = &session.req_header().uri;
        if uri.path() != node_health::PATH {
            return Ok(Outcome::Next);
        }
        let (status, body) = node_health::report(&ctx.snapshot, uri.query());
        Ok(Outcome::Reply(
            Reply::text(status, body).with(CACHE_CONTROL, "no-store"),
        ))
    }

    /// The host, from the URI (HTTP/2, absolute-form HTTP/1.1) or `Host`, normalised.
    pub(super) async fn host(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Outcome> {
        let request = session.req_header();
        let authority = match request.uri.authority() {
            Some(authority) => Some(authority.as_str().as_bytes()),
            None => request
                .headers
                .get(http::header::HOST)
                .map(|v| v.as_bytes()),
        };
        match authority.map(normalize_authority) {
            Some(Ok(host)) => ctx.host = host.into_owned(),
            Some(Err(error)) => {
                return Ok(Outcome::Reply(Reply::error(
                    400,
                    &format!("invalid Host header: {error}"),
                )))
            }
            None => return Ok(Outcome::Reply(Reply::error(400, "missing Host header"))),
        }
        ctx.https = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        Ok(Outcome::Next)
    }

    /// ACME HTTP-01 tokens, answered before routing so that no route can shadow them.
    pub(super) async fn acme_answer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Outcome> {
        let path = session.req_header().uri.path();
        if ctx.https || !path.starts_with(HTTP01_PREFIX) {
            return Ok(Outcome::Next);
        }
        match self.acme_tokens.answer(path) {
            Some(answer) => Ok(Outcome::Reply(Reply::text(200, answer))),
            None => Ok(Outcome::Next),
        }
    }

    /// `[tls] redirect_http`: plain HTTP goes to HTTPS with a 308, except ACME challenges.
    pub(super) async fn https_redirect(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Outcome> {
        let request = session.req_header();
        let config = &ctx.snapshot.config;
        if !config.tls.redirect_http || ctx.https || request.uri.path().starts_with(HTTP01_PREFIX) {
            return Ok(Outcome::Next);
        }
        let port = match config.listen.https.first().map_or(443, |a| a.port()) {
            443 => String::new(),
            port => format!(":{port}"),
        };
        let target = request.uri.path_and_query().map_or("/", |p| p.as_str());
        let location = format!("https://{}{port}{target}", ctx.host);
        Ok(Outcome::Reply(Reply::redirect(308, &location)))
    }

    /// Routing, route-scoped rules and the upstream all see the normalised path, so that
    /// `/x/../internal/` cannot slip past the rules of `/internal/`.
    pub(super) async fn normalize_path(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Outcome> {
        let merge_slashes = ctx.snapshot.config.http.merge_slashes;
        match path::normalize(session.req_header().uri.path(), merge_slashes) {
            Ok(Cow::Borrowed(_)) => Ok(Outcome::Next),
            Ok(Cow::Owned(path)) => {
                ctx.normalized_path = Some(path);
                Ok(Outcome::Next)
            }
            Err(error) => Ok(Outcome::Reply(Reply::error(400, &error.to_string()))),
        }
    }

    /// The route for host and path (404 when none), counted as in flight from here.
    pub(super) async fn route_lookup(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Outcome> {
        let path = ctx
            .normalized_path
            .as_deref()
            .unwrap_or(session.req_header().uri.path());
        let index = match ctx.snapshot.routes.find(&ctx.host, path) {
            Some(Found::Route(index)) => index,
            Some(Found::AddSlash(_)) => {
                // nginx's answer for a proxied `location /swarm/` asked as `/swarm`.
                let query = session.req_header().uri.query();
                let location = match query {
                    Some(query) => format!("{path}/?{query}"),
                    None => format!("{path}/"),
                };
                return Ok(Outcome::Reply(Reply::redirect(301, &location)));
            }
            None => {
                return Ok(Outcome::Reply(Reply::error(
                    404,
                    "no route for this host and path",
                )))
            }
        };
        let Some(route) = ctx.snapshot.routes.get(index) else {
            return Ok(Outcome::Reply(Reply::error(500, "route vanished")));
        };
        ctx.route = Some(index);
        let gauge = self
            .metrics
            .http_in_flight
            .with_label_values(&[&route.name]);
        gauge.inc();
        ctx.route_in_flight = Some(gauge);
        Ok(Outcome::Next)
    }

    /// The route's per-client-IP rate limit: 429 with `Retry-After` and `RateLimit-*`.
    pub(super) async fn rate_limit(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Outcome> {
        let route = ctx.snapshot.routes.matched(ctx.route);
        let (Some(route), Some(client)) = (route, ctx.client_ip) else {
            return Ok(Outcome::Next);
        };
        let Some(limiter) = &route.rate_limit else {
            return Ok(Outcome::Next);
        };
        match limiter.check(client) {
            Decision::Exempt => Ok(Outcome::Next),
            Decision::Allowed(info) => {
                ctx.rate_limit = Some(info);
                Ok(Outcome::Next)
            }
            Decision::Rejected(info) => {
                self.metrics
                    .ratelimit_rejected
                    .with_label_values(&[&route.name])
                    .inc();
                let mut reply = Reply::error(429, "rate limit exceeded, slow down")
                    .with(RETRY_AFTER, &info.retry_after_secs.to_string());
                for (name, value) in info.headers() {
                    if let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) {
                        reply = reply.with(name, &value);
                    }
                }
                Ok(Outcome::Reply(reply))
            }
        }
    }

    /// A route whose target is a redirect answers here.
    pub(super) async fn redirect_route(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Outcome> {
        let route = ctx.snapshot.routes.matched(ctx.route);
        let Some(RouteTarget::Redirect(redirect)) = route.map(|r| &r.target) else {
            return Ok(Outcome::Next);
        };
        let location = if redirect.keep_path {
            let target = session
                .req_header()
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str());
            format!("{}{}", redirect.to, target)
        } else {
            redirect.to.clone()
        };
        Ok(Outcome::Reply(Reply::redirect(redirect.code, &location)))
    }

    /// A declared body over the route's `max_body_size` gets 413 before anything is read
    /// (chunked bodies are counted as they stream, in `request_body_filter`).
    pub(super) async fn body_limit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Outcome> {
        let max = ctx
            .snapshot
            .routes
            .matched(ctx.route)
            .and_then(|r| r.max_body_size);
        let declared = session
            .req_header()
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match (max, declared) {
            (Some(max), Some(len)) if len > max => {
                Ok(Outcome::Reply(Reply::error(413, "request body too large")))
            }
            _ => Ok(Outcome::Next),
        }
    }

    /// A `static` or `fastcgi` route answers here, from its files or PHP-FPM.
    pub(super) async fn local_site(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Outcome> {
        let Some(route) = ctx.snapshot.routes.matched(ctx.route) else {
            return Ok(Outcome::Next);
        };
        if matches!(
            route.target,
            RouteTarget::Proxy(_) | RouteTarget::Redirect(_)
        ) {
            return Ok(Outcome::Next);
        }
        let path = ctx
            .normalized_path
            .clone()
            .unwrap_or_else(|| session.req_header().uri.path().to_owned());
        // Boxed, as forward-auth's exchange: these futures are large and rare, and inline they
        // would grow the pipeline future every proxied request allocates and moves.
        match &route.target {
            RouteTarget::Static(site) => {
                Box::pin(static_site::serve(
                    session,
                    &ctx.request_id,
                    route,
                    site,
                    &path,
                ))
                .await?;
            }
            RouteTarget::FastCgi(site) => {
                Box::pin(fastcgi::serve(session, ctx, route, site, &path)).await?;
            }
            RouteTarget::Proxy(_) | RouteTarget::Redirect(_) => return Ok(Outcome::Next),
        }
        Ok(Outcome::Sent)
    }

    /// The upstream gets the normalised path, without the route's prefix under
    /// `strip_prefix`.
    pub(super) async fn path_rewrite(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Outcome> {
        let strip = ctx
            .snapshot
            .routes
            .matched(ctx.route)
            .filter(|r| r.strip_prefix)
            .map(|r| r.prefix.as_str());
        if strip.is_none() && ctx.normalized_path.is_none() {
            return Ok(Outcome::Next);
        }
        let current = session.req_header().uri.path();
        let path = ctx.normalized_path.as_deref().unwrap_or(current);
        let upstream_path = match strip {
            Some(prefix) => strip_prefix(path, prefix),
            None => path.to_owned(),
        };
        ctx.original_path = Some(current.to_owned());
        set_path(session.req_header_mut(), &upstream_path)?;
        Ok(Outcome::Next)
    }

    /// A pool with no usable server hands the request to the route's fallback, else 503.
    pub(super) async fn pool_availability(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Outcome> {
        let Some(route) = ctx.snapshot.routes.matched(ctx.route) else {
            return Ok(Outcome::Next);
        };
        let RouteTarget::Proxy(pool) = &route.target else {
            return Ok(Outcome::Next);
        };
        if pool.is_available() {
            return Ok(Outcome::Next);
        }
        let retry_after = retry_after(pool);
        // Not a match guard: choosing a region edge takes `ctx` mutably, which a guard would
        // do while `route` (borrowed from `ctx`) is still held.
        #[allow(clippy::collapsible_match)]
        match &route.fallback {
            Some(RouteFallback::Pool(fallback)) if fallback.is_available() => {
                ctx.on_fallback_pool = true;
                return Ok(Outcome::Next);
            }
            Some(RouteFallback::Regions) => {
                if self.choose_region_edge(ctx) {
                    return Ok(Outcome::Next);
                }
            }
            Some(RouteFallback::StaticDir { dir, status }) => {
                let (dir, status) = (dir.clone(), *status);
                let path = session.req_header().uri.path().to_owned();
                // Boxed, as the other rare answers (see `local_site`).
                let served = static_fallback::serve(session, &dir, status, &retry_after, &path);
                if Box::pin(served).await.is_some() {
                    return Ok(Outcome::Sent);
                }
            }
            _ => {}
        }
        Ok(Outcome::Reply(
            Reply::error(503, failure::detail_for(503)).with(RETRY_AFTER, &retry_after),
        ))
    }

    /// `request_buffering`: the body is read before the upstream is chosen (see
    /// `request_body`), so a slow client holds no upstream connection.
    pub(super) async fn body_buffering(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Outcome> {
        let Some(route) = ctx.snapshot.routes.matched(ctx.route) else {
            return Ok(Outcome::Next);
        };
        if !route.request_buffering || session.is_body_empty() || session.is_upgrade_req() {
            return Ok(Outcome::Next);
        }
        let max_body_size = route.max_body_size;
        // The client may wait for "100 Continue" before it sends the body (RFC 9110 §10.1.1);
        // the upstream gets the body at once, so it must not be asked to say it again.
        if expects_continue(session.req_header()) {
            session.write_continue_response().await?;
            session
                .req_header_mut()
                .remove_header(&http::header::EXPECT);
        }
        let limits = &ctx.snapshot.config.http;
        let spill_dir = ctx.snapshot.config.node.state_dir.join("body-buffers");
        // Boxed: reading (and maybe spilling) a body is a large future that requests without
        // a body would otherwise carry in every pipeline future.
        let read = Box::pin(BufferedBody::read(
            session,
            limits,
            max_body_size,
            &spill_dir,
        ))
        .await;
        if read.is_err() {
            // The rest of the body is still on the wire: this connection cannot carry another
            // request.
            session.set_keepalive(None);
        }
        match read {
            Ok(body) => {
                let storage = if body.spilled { "file" } else { "memory" };
                self.metrics
                    .bodies_buffered
                    .with_label_values(&[storage])
                    .inc();
                ctx.request_body_bytes = body.size() as u64;
                ctx.buffered_body = Some(body);
                Ok(Outcome::Next)
            }
            Err(BufferError::TimedOut(_)) => {
                self.metrics
                    .limit_rejections
                    .with_label_values(&["body_timeout"])
                    .inc();
                Ok(Outcome::Reply(Reply::error(
                    408,
                    "the request body was not sent in time",
                )))
            }
            Err(BufferError::TooLarge) => {
                Ok(Outcome::Reply(Reply::error(413, "request body too large")))
            }
            Err(BufferError::Client(mut error)) => {
                // The client's fault: a closed connection gets no answer, bad framing a 400.
                error.as_down();
                Err(error)
            }
            Err(BufferError::File(error)) => {
                tracing::error!(%error, "cannot buffer a request body");
                Ok(Outcome::Reply(Reply::error(
                    500,
                    "the request body could not be kept",
                )))
            }
        }
    }
}

/// `/swarm/chat` with prefix `/swarm/` becomes `/chat`; the path keeps its leading '/'.
/// Exactly the prefix goes: `/swarm//etc` (with `merge_slashes` off) becomes `//etc`.
fn strip_prefix(path: &str, prefix: &str) -> String {
    match path.strip_prefix(prefix.trim_end_matches('/')) {
        Some(rest) if rest.starts_with('/') => rest.to_owned(),
        Some(rest) => format!("/{rest}"),
        None => path.to_owned(),
    }
}

/// Replaces the request's path, keeping its query, and its scheme and authority: HTTP/2
/// carries the host in the URI, and without it the upstream got an empty `Host`.
fn set_path(request: &mut RequestHeader, path: &str) -> Result<()> {
    let target = match request.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = request.uri.clone().into_parts();
    parts.path_and_query = Some(
        http::uri::PathAndQuery::try_from(target)
            .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "rewriting path", e))?,
    );
    let uri = http::Uri::from_parts(parts)
        .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "rewriting path", e))?;
    request.set_uri(uri);
    Ok(())
}

/// Clients and CDNs may come back after one health-check interval.
pub(super) fn retry_after(pool: &Pool) -> String {
    pool.health_check
        .as_ref()
        .map_or(5, |check| check.interval.as_secs().max(1))
        .to_string()
}

/// `Expect: 100-continue` (RFC 9110 §10.1.1: the token compares case-insensitively).
fn expects_continue(request: &RequestHeader) -> bool {
    request
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}
