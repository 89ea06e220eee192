//! The pipeline steps of a route's access rules, in nginx's order: the address lists, then
//! CORS preflights (a browser sends them without credentials), then basic auth, then
//! forward-auth. Each refusal is counted in `headland_access_denied_total`.

use http::HeaderName;
use pingora::proxy::Session;
use pingora::Result;

use super::access::Login;
use super::forward_auth::{Original, Verdict};
use super::pipeline::{Outcome, Reply};
use super::{header_rules, HeadlandProxy, RequestCtx};

// === impl HeadlandProxy ===

impl HeadlandProxy {
    /// `allow` / `deny`: 403 for an address the route does not admit.
    pub(super) async fn address_rules(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Outcome> {
        let route = ctx.snapshot.routes.matched(ctx.route);
        let Some((route, rules)) = route.and_then(|r| Some((r, r.addresses.as_ref()?))) else {
            return Ok(Outcome::Next);
        };
        if rules.admits(ctx.client_ip) {
            return Ok(Outcome::Next);
        }
        self.count_denied(&route.name, "address");
        Ok(Outcome::Reply(Reply::error(
            403,
            "this address may not use this site",
        )))
    }

    /// `cors`: preflights are answered here, before any credentials are asked for.
    pub(super) async fn cors_preflight(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Outcome> {
        let route = ctx.snapshot.routes.matched(ctx.route);
        let Some(cors) = route.and_then(|r| r.headers.cors.as_ref()) else {
            return Ok(Outcome::Next);
        };
        Ok(match header_rules::preflight(cors, session.req_header()) {
            Some(reply) => Outcome::Reply(reply),
            None => Outcome::Next,
        })
    }

    /// `basic_auth`: 401 with the realm's challenge until a login in the htpasswd file
    /// comes along.
    pub(super) async fn basic_auth(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Outcome> {
        let route = ctx.snapshot.routes.matched(ctx.route);
        let Some((route, check)) = route.and_then(|r| Some((r, r.basic_auth.as_ref()?))) else {
            return Ok(Outcome::Next);
        };
        let headers = &session.req_header().headers;
        // Only one set of credentials is checked; a second one could reach the app unchecked.
        let authorization = match headers.get_all(http::header::AUTHORIZATION).iter().count() {
            1 => headers.get(http::header::AUTHORIZATION),
            _ => None,
        };
        match Box::pin(check.check(authorization, &self.bcrypt_slots)).await {
            Login::Valid => Ok(Outcome::Next),
            Login::Busy => Ok(Outcome::Reply(
                Reply::error(503, "too many logins at once, try again")
                    .with(http::header::RETRY_AFTER, "1"),
            )),
            Login::Refused => {
                self.count_denied(&route.name, "basic_auth");
                Ok(Outcome::Reply(
                    Reply::error(401, "this site needs a user name and password")
                        .with_header(http::header::WWW_AUTHENTICATE, check.challenge.clone()),
                ))
            }
        }
    }

    /// `forward_auth`: the auth service's 2xx lets the request on with the copied fields;
    /// its refusal goes back to the client; no answer refuses the request (fail closed).
    pub(super) async fn forward_auth(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Outcome> {
        let route = ctx.snapshot.routes.matched(ctx.route);
        let Some((route, check)) = route.and_then(|r| Some((r, r.forward_auth.as_ref()?))) else {
            return Ok(Outcome::Next);
        };
        let request = session.req_header();
        let original = Original {
            request,
            path: ctx.normalized_path.as_deref().unwrap_or(request.uri.path()),
            client: ctx.client_ip,
            https: ctx.https,
            host: &ctx.host,
        };
        // Boxed: the exchange's future (a Pingora connect among it) is large, and inline it
        // would grow every request's pipeline future, which is moved and allocated per request.
        let verdict = Box::pin(check.ask(&self.auth_connector, &original)).await;
        let (status, detail, reason) = match verdict {
            Verdict::Allowed(copied) => {
                // Only the auth service may say who the user is: the client's fields of these
                // names go, and their underscore spellings too, which CGI-style apps
                // (`HTTP_X_AUTH_REQUEST_USER`) cannot tell apart.
                let request = session.req_header_mut();
                let claimed: Vec<HeaderName> = request
                    .headers
                    .keys()
                    .filter(|name| {
                        let dashed = name.as_str().replace('_', "-");
                        check
                            .config
                            .copy_headers
                            .iter()
                            .any(|c| c.as_str() == dashed)
                    })
                    .cloned()
                    .collect();
                for name in &claimed {
                    request.remove_header(name);
                }
                for (name, value) in copied {
                    request.append_header(name, value)?;
                }
                return Ok(Outcome::Next);
            }
            Verdict::Refused {
                status,
                headers,
                body,
            } => {
                self.count_denied(&route.name, "forward_auth");
                return Ok(Outcome::Reply(Reply {
                    status,
                    body,
                    headers,
                    close: false,
                }));
            }
            Verdict::Unreachable(reason) => {
                tracing::warn!(route = %route.name, %reason, "forward-auth service cannot be reached");
                (
                    502,
                    "the authentication service cannot be reached",
                    "unreachable",
                )
            }
            Verdict::TimedOut => (
                504,
                "the authentication service did not answer in time",
                "timeout",
            ),
        };
        self.metrics
            .forward_auth_errors
            .with_label_values(&[&route.name, reason])
            .inc();
        Ok(Outcome::Reply(Reply::error(status, detail)))
    }

    fn count_denied(&self, route: &str, rule: &str) {
        self.metrics
            .access_denied
            .with_label_values(&[route, rule])
            .inc();
    }
}
