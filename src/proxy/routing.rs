//! The steps a request takes before an upstream is chosen, in order: client-side limits,
//! client IP and request id, the node health answer, host, the ACME HTTP-01 answer, the
//! HTTPS redirect, path normalisation, the route, its rate limit, redirect routes, the body
//! limit, the path rewrite, the pool's availability (else the fallback), and body buffering.
//! Each step either lets the request go on or answers it (`Ok(true)`).

use std::borrow::Cow;
use std::sync::Arc;

use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use super::request_body::{BufferError, BufferedBody};
use super::route_table::{Route, RouteFallback, RouteTarget};
use super::{
    failure, fastcgi, forwarded, node_health, request_limits, responses, static_fallback,
    static_site, HeadlandProxy, RequestCtx,
};
use crate::acme::challenge::HTTP01_PREFIX;
use crate::host::normalize_authority;
use crate::path;
use crate::ratelimit::Decision;
use crate::upstream::Pool;

// === impl HeadlandProxy ===

impl HeadlandProxy {
    /// Resolves client, host and route; answers directly when no upstream is involved.
    /// Returns `Ok(true)` when a response was sent.
    pub(super) async fn route_request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let snapshot = Arc::clone(&ctx.snapshot);
        let request = session.req_header();
        ctx.peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.client_ip = ctx
            .peer
            .map(|peer| snapshot.client_ip.resolve(peer, &request.headers));
        ctx.request_id = forwarded::request_id(request.headers.get(forwarded::X_REQUEST_ID));
        if let Err(rejection) = request_limits::check(request, &snapshot.config.http) {
            return self.refuse(session, ctx, rejection).await;
        }
        if let Err(rejection) = request_limits::collapse_content_length(session.req_header_mut()) {
            return self.refuse(session, ctx, rejection).await;
        }
        let request = session.req_header();

        if request.uri.path() == node_health::PATH {
            let (status, body) = node_health::report(&snapshot, request.uri.query());
            responses::plain(
                session,
                status,
                body,
                &ctx.request_id,
                &[("cache-control", "no-store")],
            )
            .await?;
            return Ok(true);
        }

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
        ctx.https = session.digest().is_some_and(|d| d.ssl_digest.is_some());

        let tls = &snapshot.config.tls;
        let acme_challenge = request.uri.path().starts_with(HTTP01_PREFIX);
        if acme_challenge && !ctx.https {
            if let Some(answer) = self.acme_tokens.answer(request.uri.path()) {
                let request_id = ctx.request_id.clone();
                responses::plain(session, 200, answer, &request_id, &[]).await?;
                return Ok(true);
            }
        }
        if tls.redirect_http && !ctx.https && !acme_challenge {
            let https_port = snapshot
                .config
                .listen
                .https
                .first()
                .map_or(443, |a| a.port());
            let port = if https_port == 443 {
                String::new()
            } else {
                format!(":{https_port}")
            };
            let target = request.uri.path_and_query().map_or("/", |p| p.as_str());
            let location = format!("https://{}{port}{target}", ctx.host);
            let body = format!("Redirecting to {location}\n");
            let request_id = ctx.request_id.clone();
            responses::plain(session, 308, body, &request_id, &[("location", &location)]).await?;
            return Ok(true);
        }

        // Routing, route-scoped rules and the upstream all see the normalised path, so that
        // `/x/../internal/` cannot slip past the rules of `/internal/`.
        let normalized =
            match path::normalize(request.uri.path(), snapshot.config.http.merge_slashes) {
                Ok(Cow::Borrowed(_)) => None,
                Ok(Cow::Owned(path)) => Some(path),
                Err(error) => return self.reject(session, ctx, 400, &error.to_string()).await,
            };
        let route_path = normalized.as_deref().unwrap_or(request.uri.path());
        let Some(index) = snapshot.routes.lookup(&ctx.host, route_path) else {
            return self
                .reject(session, ctx, 404, "no route for this host and path")
                .await;
        };
        ctx.route = Some(index);
        let Some(route) = snapshot.routes.get(index) else {
            return self.reject(session, ctx, 500, "route vanished").await;
        };
        let gauge = self
            .metrics
            .http_in_flight
            .with_label_values(&[&route.name]);
        gauge.inc();
        ctx.route_in_flight = Some(gauge);

        if let (Some(limiter), Some(client)) = (&route.rate_limit, ctx.client_ip) {
            match limiter.check(client) {
                Decision::Exempt => {}
                Decision::Allowed(info) => ctx.rate_limit = Some(info),
                Decision::Rejected(info) => {
                    self.metrics
                        .ratelimit_rejected
                        .with_label_values(&[&route.name])
                        .inc();
                    let headers = info.headers();
                    let retry_after = info.retry_after_secs.to_string();
                    let mut extra: Vec<(&'static str, &str)> =
                        headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                    extra.push(("retry-after", &retry_after));
                    let body = responses::error_body(429, "rate limit exceeded, slow down");
                    responses::plain(session, 429, body, &ctx.request_id, &extra).await?;
                    return Ok(true);
                }
            }
        }

        let pool = match &route.target {
            RouteTarget::Redirect(redirect) => {
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
            RouteTarget::Static(site) => {
                let path = route_path.to_owned();
                static_site::serve(session, &ctx.request_id, route, site, &path).await?;
                return Ok(true);
            }
            RouteTarget::FastCgi(site) => {
                let path = route_path.to_owned();
                fastcgi::serve(session, ctx, route, site, &path).await?;
                return Ok(true);
            }
            RouteTarget::Proxy(pool) => pool,
        };

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

        if route.strip_prefix || normalized.is_some() {
            let current = session.req_header().uri.path();
            let path = normalized.as_deref().unwrap_or(current);
            let upstream_path = if route.strip_prefix {
                strip_prefix(path, &route.prefix)
            } else {
                path.to_owned()
            };
            ctx.original_path = Some(current.to_owned());
            set_path(session.req_header_mut(), &upstream_path)?;
        }

        if !pool.is_available() {
            return self.pool_down(session, ctx, route, pool).await;
        }
        if route.request_buffering && !session.is_body_empty() && !session.is_upgrade_req() {
            return self.buffer_body(session, ctx, route).await;
        }
        Ok(false)
    }

    /// Reads the request body before the upstream is chosen (see `request_body`).
    async fn buffer_body(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        route: &Route,
    ) -> Result<bool> {
        let limits = &ctx.snapshot.config.http;
        // The client may wait for "100 Continue" before it sends the body (RFC 9110 §10.1.1);
        // the upstream gets the body at once, so it must not be asked to say it again.
        if expects_continue(session.req_header()) {
            session.write_continue_response().await?;
            session
                .req_header_mut()
                .remove_header(&http::header::EXPECT);
        }
        let spill_dir = ctx.snapshot.config.node.state_dir.join("body-buffers");
        let read = BufferedBody::read(session, limits, route.max_body_size, &spill_dir).await;
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
                Ok(false)
            }
            Err(BufferError::TimedOut(_)) => {
                self.metrics
                    .limit_rejections
                    .with_label_values(&["body_timeout"])
                    .inc();
                self.reject(session, ctx, 408, "the request body was not sent in time")
                    .await
            }
            Err(BufferError::TooLarge) => {
                self.reject(session, ctx, 413, "request body too large")
                    .await
            }
            Err(BufferError::Client(mut error)) => {
                // The client's fault: a closed connection gets no answer, bad framing a 400.
                error.as_down();
                Err(error)
            }
            Err(BufferError::File(error)) => {
                tracing::error!(%error, "cannot buffer a request body");
                self.reject(session, ctx, 500, "the request body could not be kept")
                    .await
            }
        }
    }

    /// Every server of the route's pool is known down: the fallback answers, else 503.
    async fn pool_down(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        route: &Route,
        pool: &Pool,
    ) -> Result<bool> {
        match &route.fallback {
            Some(RouteFallback::Pool(fallback)) if fallback.is_available() => {
                ctx.on_fallback_pool = true;
                return Ok(false);
            }
            Some(RouteFallback::Regions) if self.choose_region_edge(ctx) => return Ok(false),
            Some(RouteFallback::StaticDir { dir, status }) => {
                let path = session.req_header().uri.path().to_owned();
                let retry_after = retry_after(pool);
                if static_fallback::serve(session, dir, *status, &retry_after, &path)
                    .await
                    .is_some()
                {
                    return Ok(true);
                }
            }
            _ => {}
        }
        let retry_after = retry_after(pool);
        let body = responses::error_body(503, failure::detail_for(503));
        responses::plain(
            session,
            503,
            body,
            &ctx.request_id,
            &[("retry-after", &retry_after)],
        )
        .await?;
        Ok(true)
    }

    /// Answers a request that broke a client-side limit, and counts it.
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        rejection: request_limits::Rejection,
    ) -> Result<bool> {
        self.metrics
            .limit_rejections
            .with_label_values(&[rejection.limit])
            .inc();
        // As nginx does: a client that broke a limit gets no further request on this
        // connection (part of an oversized request may still be unread).
        session.set_keepalive(None);
        self.reject(session, ctx, rejection.status, rejection.detail)
            .await
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
