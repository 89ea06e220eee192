//! The request path before an upstream is chosen, as one list of named steps.
//!
//! Each step is a small method of `HeadlandProxy` (in `steps.rs`, or the module that owns its
//! job) with one signature: it reads and updates the request and its `RequestCtx`, and returns
//! an `Outcome`: go on, or the request is answered. Adding a step means writing its function
//! and adding its name to the list in `run`, in the place it belongs.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::{responses, HeadlandProxy, RequestCtx};

/// What a step decided.
pub(super) enum Outcome {
    /// The request goes on to the next step.
    Next,
    /// The step answered the client itself (it streamed a file, a FastCGI response, …).
    Sent,
    /// The request is answered with this response, and goes no further.
    Reply(Reply),
}

/// A short response Headland writes itself: errors, redirects, the ACME answer, a refusal.
pub(super) struct Reply {
    pub status: u16,
    pub body: Bytes,
    /// Sent after `Content-Type` (`text/plain` unless one is given here) and `Content-Length`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// No further request on this connection: part of the request may still be unread.
    pub close: bool,
}

// === impl HeadlandProxy ===

impl HeadlandProxy {
    /// Runs the steps in order until one answers. Returns `Ok(true)` when the request was
    /// answered, `Ok(false)` when it goes on to an upstream.
    pub(super) async fn run_pipeline(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        macro_rules! steps {
            ($($step:ident),* $(,)?) => {$(
                match self.$step(session, ctx).await? {
                    Outcome::Next => {}
                    Outcome::Sent => {
                        ctx.answered_by = Some(stringify!($step));
                        return Ok(true);
                    }
                    Outcome::Reply(reply) => {
                        ctx.answered_by = Some(stringify!($step));
                        self.send_reply(session, ctx, reply).await?;
                        return Ok(true);
                    }
                }
            )*};
        }
        steps!(
            client_ip,
            request_id,
            request_limits,
            node_health,
            host,
            acme_answer,
            https_redirect,
            normalize_path,
            route_lookup,
            address_rules,
            rate_limit,
            cors_preflight,
            basic_auth,
            forward_auth,
            redirect_route,
            body_limit,
            local_site,
            path_rewrite,
            pool_availability,
            body_buffering,
        );
        Ok(false)
    }

    async fn send_reply(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        reply: Reply,
    ) -> Result<()> {
        if reply.close {
            session.set_keepalive(None);
        }
        let mut header = ResponseHeader::build(reply.status, Some(4 + reply.headers.len()))?;
        // 204 and 304 have no content to describe (RFC 9110 §8.6, §15.3.5).
        let has_content = !matches!(reply.status, 204 | 304);
        let typed = reply
            .headers
            .iter()
            .any(|(name, _)| name == http::header::CONTENT_TYPE);
        if has_content && !typed {
            header.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
        }
        if has_content {
            header.insert_header(http::header::CONTENT_LENGTH, reply.body.len())?;
        }
        header.insert_header("x-request-id", ctx.request_id.clone())?;
        for (name, value) in reply.headers {
            header.append_header(name, value)?;
        }
        responses::send(session, header, reply.body).await
    }
}

// === impl Reply ===

impl Reply {
    /// `"<code> <reason>: <detail>"` in plain text.
    pub fn error(status: u16, detail: &str) -> Self {
        Self::text(status, responses::error_body(status, detail))
    }

    pub fn text(status: u16, body: String) -> Self {
        Self {
            status,
            body: Bytes::from(body),
            headers: Vec::new(),
            close: false,
        }
    }

    /// A redirect to `location`, with a one-line body for clients that show it.
    pub fn redirect(status: u16, location: &str) -> Self {
        Self::text(status, format!("Redirecting to {location}\n"))
            .with(http::header::LOCATION, location)
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Adds a header whose value Headland built from checked parts (digits, a normalised
    /// host and path), so it is never invalid; one that were would be left out.
    pub fn with(self, name: HeaderName, value: &str) -> Self {
        match HeaderValue::from_str(value) {
            Ok(value) => self.with_header(name, value),
            Err(_) => self,
        }
    }

    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }
}
