//! A route's header rules: fields set on (or removed from) the request the upstream gets and
//! the response the client gets, and CORS.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use toml::Spanned;

use super::error::ErrorSink;
use super::field::{Limits, Scope};
use super::raw::{RawCors, RawRoute};

/// How long a browser may reuse a preflight answer (Firefox caps it at 24 h, Chromium at 2 h).
const DEFAULT_CORS_MAX_AGE: Duration = Duration::from_secs(600);
/// What a browser may send without asking, plus the usual writes.
const DEFAULT_CORS_METHODS: [Method; 5] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
];

/// Header changes of one route. Default: none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderRules {
    /// On the request to the upstream: `Some` sets the field, `None` removes it.
    pub request: Vec<(HeaderName, Option<HeaderValue>)>,
    /// On the upstream's response to the client, likewise.
    pub response: Vec<(HeaderName, Option<HeaderValue>)>,
    pub cors: Option<Cors>,
}

/// `cors = { origins = [...], ... }`: preflights answered by Headland, CORS headers on every
/// response to an allowed origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// Exact origins (`https://app.example.com`), or `["*"]` for any. Required.
    pub origins: CorsOrigins,
    /// Default: GET, HEAD, POST, PUT, DELETE.
    pub methods: Vec<Method>,
    /// Request fields a script may send beyond the CORS-safelisted ones. Default: none.
    pub headers: Vec<HeaderName>,
    /// Response fields a script may read beyond the safelisted ones. Default: none.
    pub expose: Vec<HeaderName>,
    /// Let cookies and `Authorization` go along; needs exact origins. Default: false.
    pub credentials: bool,
    /// `Access-Control-Max-Age`. Default: 10m.
    pub max_age: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    Any,
    /// Lowercase, without a trailing slash.
    List(Vec<String>),
}

pub(super) fn header_rules(scope: &Scope, raw: &RawRoute, sink: &mut ErrorSink<'_>) -> HeaderRules {
    HeaderRules {
        request: field_changes(scope, "request_headers", raw.request_headers.as_ref(), sink),
        response: field_changes(
            scope,
            "response_headers",
            raw.response_headers.as_ref(),
            sink,
        ),
        cors: raw.cors.as_ref().and_then(|c| cors(scope, c, sink)),
    }
}

/// `{ "X-Frame-Options" = "DENY", "Server" = "" }`: an empty value removes the field, as in
/// Traefik's headers middleware.
fn field_changes(
    scope: &Scope,
    key: &str,
    raw: Option<&Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    sink: &mut ErrorSink<'_>,
) -> Vec<(HeaderName, Option<HeaderValue>)> {
    let mut changes = Vec::new();
    for (name, value) in raw.iter().flat_map(|m| m.get_ref()) {
        let Ok(header) = HeaderName::from_bytes(name.get_ref().as_bytes()) else {
            sink.at(
                name.span(),
                format!(
                    "{}: invalid header name \"{}\"",
                    scope.name(key),
                    name.get_ref()
                ),
            );
            continue;
        };
        if is_framing(&header) {
            sink.at(
                name.span(),
                format!(
                    "{}: \"{}\" is set by the proxy itself and cannot be changed",
                    scope.name(key),
                    name.get_ref()
                ),
            );
            continue;
        }
        if value.get_ref().is_empty() {
            changes.push((header, None));
            continue;
        }
        match HeaderValue::from_str(value.get_ref()) {
            Ok(v) => changes.push((header, Some(v))),
            Err(_) => sink.at(
                value.span(),
                format!(
                    "{}: the value of \"{}\" must be visible ASCII without line breaks",
                    scope.name(key),
                    name.get_ref()
                ),
            ),
        }
    }
    changes
}

/// Fields that frame the message or the connection: changing them would corrupt it.
pub(super) fn is_framing(name: &HeaderName) -> bool {
    use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING, UPGRADE};
    [CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION, UPGRADE, HOST].contains(name)
}

fn cors(scope: &Scope, raw: &Spanned<RawCors>, sink: &mut ErrorSink<'_>) -> Option<Cors> {
    let errors_before = sink.len();
    let fields = raw.get_ref();
    let mut origins = Vec::new();
    let mut any = false;
    for origin in fields.origins.get_ref() {
        let text = origin.get_ref().trim_end_matches('/').to_ascii_lowercase();
        if text == "*" {
            any = true;
        } else if is_origin(&text) {
            origins.push(text);
        } else {
            sink.at(
                origin.span(),
                format!(
                    "{} \"{}\" is not an origin (expected \"https://app.example.com\" or \"*\")",
                    scope.name("cors origins"),
                    origin.get_ref()
                ),
            );
        }
    }
    if fields.origins.get_ref().is_empty() {
        sink.at(
            fields.origins.span(),
            format!(
                "{} must name at least one origin",
                scope.name("cors origins")
            ),
        );
    }
    let credentials = fields.credentials.as_ref().is_some_and(|c| *c.get_ref());
    if any && (credentials || !origins.is_empty()) {
        sink.at(
            fields.origins.span(),
            format!(
                "{} \"*\" must stand alone and cannot go with credentials = true (the Fetch standard refuses it)",
                scope.name("cors origins")
            ),
        );
    }
    let methods = match &fields.methods {
        None => DEFAULT_CORS_METHODS.to_vec(),
        Some(list) => list
            .iter()
            .filter_map(|m| {
                let valid = m.get_ref().bytes().all(|b| b.is_ascii_uppercase());
                match Method::from_bytes(m.get_ref().as_bytes()) {
                    Ok(method) if valid => Some(method),
                    _ => {
                        sink.at(
                            m.span(),
                            format!(
                                "{} \"{}\" is not an upper-case method name",
                                scope.name("cors methods"),
                                m.get_ref()
                            ),
                        );
                        None
                    }
                }
            })
            .collect(),
    };
    let names = |key: &str, list: &Option<Vec<Spanned<String>>>, sink: &mut ErrorSink<'_>| {
        list.iter()
            .flatten()
            .filter_map(|n| {
                HeaderName::from_bytes(n.get_ref().as_bytes())
                    .map_err(|_| {
                        sink.at(
                            n.span(),
                            format!(
                                "{}: invalid header name \"{}\"",
                                scope.name(key),
                                n.get_ref()
                            ),
                        )
                    })
                    .ok()
            })
            .collect::<Vec<_>>()
    };
    let headers = names("cors headers", &fields.headers, sink);
    let expose = names("cors expose", &fields.expose, sink);
    let max_age = scope.duration(
        "cors max_age",
        fields.max_age.as_ref(),
        DEFAULT_CORS_MAX_AGE,
        Limits::any(),
        sink,
    );
    (sink.len() == errors_before).then_some(Cors {
        origins: if any {
            CorsOrigins::Any
        } else {
            CorsOrigins::List(origins)
        },
        methods,
        headers,
        expose,
        credentials,
        max_age,
    })
}

/// `scheme://host[:port]`, nothing after (RFC 6454 §6.1 serialisation).
fn is_origin(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' '])
        && rest.parse::<http::uri::Authority>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        assert!(is_origin("https://app.example.com"));
        assert!(is_origin("http://localhost:3000"));
        assert!(!is_origin("app.example.com"));
        assert!(!is_origin("https://app.example.com/path"));
        assert!(!is_origin("ftp://x"));
    }
}
