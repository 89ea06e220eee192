//! Forward-auth: before a request reaches its upstream, ask an auth service (oauth2-proxy,
//! Authelia, an in-house SSO) whether it may, as nginx `auth_request` and Traefik
//! `forwardAuth` do.
//!
//! The service gets a GET with the client's headers (cookies, `Authorization`) and the
//! original request in `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri` and `-For`, as
//! Traefik sends it. A 2xx lets the request through, carrying the `copy_headers` of the
//! answer; any other answer (401, 302 to a login page, 403) goes back to the client as it is.
//! When the service cannot answer, the request is refused (fail closed): 502 if it cannot be
//! reached, 504 if it is too slow.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;

use super::access::fingerprint;
use crate::config::ForwardAuth;

/// An auth service's refusal page is small; more is cut off rather than held in memory.
const MAX_REFUSAL_BODY: usize = 64 << 10;
/// Remembered verdicts per route when `cache` is on; past this the memory starts over.
const CACHE_CAPACITY: usize = 10_000;

/// Fields of the client's request never sent to the auth service: those that describe the
/// connection (RFC 9110 §7.6.1) or a body it will not get, and those auth services read as
/// the original request or client, which only Headland may say (a client's
/// `X-Original-URL: /public` would have Authelia judge another path, its `X-Real-IP` would
/// be a trusted address to oauth2-proxy). `X-Forwarded-*` are dropped by prefix.
const NOT_FORWARDED: [&str; 14] = [
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "content-length",
    "transfer-encoding",
    "expect",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "x-real-ip",
    "forwarded",
    "x-request-id",
];

/// Whether a client's field goes to the auth service.
fn forwarded_to_auth(name: &HeaderName, request: &RequestHeader) -> bool {
    let name = name.as_str();
    !NOT_FORWARDED.contains(&name)
        && !name.starts_with("x-forwarded-")
        && !name.starts_with("x-original-")
        && !listed_in_connection(name, &request.headers)
}

/// Fields the sender named in `Connection` are hop-by-hop too (RFC 9110 §7.6.1).
fn listed_in_connection(name: &str, headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|listed| listed.trim().eq_ignore_ascii_case(name))
}

/// Fields of an allowed verdict that go on to the upstream.
type Copied = Vec<(HeaderName, HeaderValue)>;

/// One route's forward-auth: its settings and the verdicts it may reuse.
#[derive(Debug)]
pub struct ForwardAuthCheck {
    pub config: ForwardAuth,
    /// Allowed verdicts by credentials, with the headers to copy; only used with `cache`.
    cache: Mutex<HashMap<[u8; 32], (Instant, Copied)>>,
}

/// The auth service's verdict on one request.
pub enum Verdict {
    /// 2xx: go on, with these fields set on the upstream request.
    Allowed(Copied),
    /// Anything else: this answer goes back to the client.
    Refused {
        status: u16,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
    },
    /// The service could not be reached or answered nonsense: 502.
    Unreachable(String),
    /// No answer within `timeout`: 504.
    TimedOut,
}

/// What the auth service is told about the request it judges.
pub struct Original<'a> {
    pub request: &'a RequestHeader,
    /// The path as routing saw it (normalised), so that the service judges the request the
    /// upstream will get: never `/public/../admin/` for `/admin/`.
    pub path: &'a str,
    pub client: Option<IpAddr>,
    pub https: bool,
    pub host: &'a str,
}

impl Original<'_> {
    /// The normalised path with the request's query.
    fn uri(&self) -> String {
        match self.request.uri.query() {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.to_owned(),
        }
    }
}

// === impl ForwardAuthCheck ===

impl ForwardAuthCheck {
    pub fn new(config: ForwardAuth) -> Self {
        Self {
            config,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub async fn ask(&self, connector: &Connector, original: &Original<'_>) -> Verdict {
        let key = if self.config.cache.is_zero() {
            None
        } else {
            credentials_key(original)
        };
        if let Some(copied) = key.as_ref().and_then(|k| self.cached(k)) {
            return Verdict::Allowed(copied);
        }
        let verdict = match tokio::time::timeout(
            self.config.timeout,
            self.query(connector, original),
        )
        .await
        {
            Ok(verdict) => verdict,
            Err(_) => Verdict::TimedOut,
        };
        if let (Some(key), Verdict::Allowed(copied)) = (key, &verdict) {
            self.remember(key, copied.clone());
        }
        verdict
    }

    async fn query(&self, connector: &Connector, original: &Original<'_>) -> Verdict {
        let config = &self.config;
        let addr = match resolve(&config.host, config.port).await {
            Ok(addr) => addr,
            Err(reason) => return Verdict::Unreachable(reason),
        };
        let mut peer = HttpPeer::new(addr, config.https, config.host.clone());
        peer.options.connection_timeout = Some(config.timeout);
        peer.options.read_timeout = Some(config.timeout);
        peer.options.write_timeout = Some(config.timeout);
        let request = match self.request(original) {
            Ok(request) => request,
            Err(reason) => return Verdict::Unreachable(reason),
        };
        let mut session = match connector.get_http_session(&peer).await {
            Ok((session, _)) => session,
            Err(error) => return Verdict::Unreachable(error.to_string()),
        };
        let exchanged = async {
            session.write_request_header(Box::new(request)).await?;
            session.finish_request_body().await?;
            session.read_response_header().await
        }
        .await;
        if let Err(error) = exchanged {
            return Verdict::Unreachable(error.to_string());
        }
        let Some(answer) = session.response_header() else {
            return Verdict::Unreachable("no response header".into());
        };
        let status = answer.status.as_u16();
        let headers = answer.headers.clone();
        let body = read_body(&mut session).await;
        if (200..300).contains(&status) {
            if body.is_some() {
                connector
                    .release_http_session(session, &peer, Some(Duration::from_secs(60)))
                    .await;
            }
            return Verdict::Allowed(copied(&headers, &config.copy_headers));
        }
        Verdict::Refused {
            status,
            headers: passed_back(&headers),
            body: body.unwrap_or_default(),
        }
    }

    fn request(&self, original: &Original<'_>) -> Result<RequestHeader, String> {
        let config = &self.config;
        let mut request =
            RequestHeader::build("GET", config.path.as_bytes(), None).map_err(|e| e.to_string())?;
        for (name, value) in &original.request.headers {
            if forwarded_to_auth(name, original.request) {
                request
                    .append_header(name.clone(), value.clone())
                    .map_err(|e| e.to_string())?;
            }
        }
        let default_port = if config.https { 443 } else { 80 };
        let host = if config.port == default_port {
            config.host.clone()
        } else {
            format!("{}:{}", config.host, config.port)
        };
        let uri = original.uri();
        let fields = [
            ("host", host),
            ("x-forwarded-method", original.request.method.to_string()),
            (
                "x-forwarded-proto",
                (if original.https { "https" } else { "http" }).to_owned(),
            ),
            ("x-forwarded-host", original.host.to_owned()),
            ("x-forwarded-uri", uri),
        ];
        for (name, value) in fields {
            request
                .insert_header(name, value)
                .map_err(|e| e.to_string())?;
        }
        if let Some(client) = original.client {
            request
                .insert_header("x-forwarded-for", client.to_string())
                .map_err(|e| e.to_string())?;
        }
        Ok(request)
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Copied> {
        let cache = self.cache.lock().ok()?;
        let (since, copied) = cache.get(key)?;
        (since.elapsed() < self.config.cache).then(|| copied.clone())
    }

    fn remember(&self, key: [u8; 32], copied: Copied) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(key, (Instant::now(), copied));
        }
    }
}

/// An IP address as written, else the name resolved now (the auth service may be a
/// container whose address changes).
async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))
}

/// The body of the answer, up to `MAX_REFUSAL_BODY`; `None` if it did not end cleanly
/// (the connection is then not reused).
async fn read_body(session: &mut pingora::protocols::http::client::HttpSession) -> Option<Bytes> {
    let mut body = BytesMut::new();
    loop {
        match session.read_response_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_REFUSAL_BODY {
                    return None;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Some(body.freeze()),
            Err(_) => return None,
        }
    }
}

/// What a cached verdict is reused for: the same credentials (cookies, `Authorization`) on
/// the same method, host and normalised URI, since a service may allow one path and not
/// another. A request without credentials is never cached: an anonymous visit to a public
/// path must not open the rest of the route to every anonymous client.
fn credentials_key(original: &Original<'_>) -> Option<[u8; 32]> {
    let request = original.request;
    let credentials = [http::header::COOKIE, http::header::AUTHORIZATION];
    if !credentials
        .iter()
        .any(|name| request.headers.contains_key(name))
    {
        return None;
    }
    let mut material = Vec::new();
    for part in [
        request.method.as_str(),
        original.host,
        original.uri().as_str(),
    ] {
        material.extend_from_slice(part.as_bytes());
        material.push(0);
    }
    for name in credentials {
        for value in request.headers.get_all(&name) {
            material.extend_from_slice(value.as_bytes());
            material.push(0);
        }
        material.push(1);
    }
    Some(fingerprint(&material))
}

fn copied(headers: &HeaderMap, names: &[HeaderName]) -> Copied {
    names
        .iter()
        .flat_map(|name| {
            headers
                .get_all(name)
                .iter()
                .map(move |value| (name.clone(), value.clone()))
        })
        .collect()
}

/// The refusal's fields for the client: all but those that frame the auth service's own
/// message (the reply is framed anew).
fn passed_back(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    // Hop-by-hop fields (HTTP/2 refuses them outright), and the request id Headland sets.
    const DROPPED: [&str; 9] = [
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "te",
        "trailer",
        "x-request-id",
    ];
    headers
        .iter()
        .filter(|(name, _)| {
            !DROPPED.contains(&name.as_str()) && !listed_in_connection(name.as_str(), headers)
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}
