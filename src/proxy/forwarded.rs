//! The request headers upstream apps expect from the proxy in front of them, as nginx's
//! usual `proxy_set_header` block sets them: X-Real-IP, X-Forwarded-For/Proto/Host and
//! X-Request-Id. `Host` itself is passed through unchanged.

use std::io::Write;
use std::net::IpAddr;

use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora::{Error, ErrorType, Result};

pub const X_REQUEST_ID: &str = "x-request-id";
const X_REAL_IP: &str = "x-real-ip";
const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_HOST: &str = "x-forwarded-host";

/// What the proxy knows about the downstream side of one request.
pub struct Downstream<'a> {
    /// The TCP peer.
    pub peer: Option<IpAddr>,
    /// The client, after trusted-proxy resolution.
    pub client: Option<IpAddr>,
    /// Whether `peer` is a trusted proxy, whose forwarding headers are kept.
    pub peer_trusted: bool,
    /// `http` or `https`, as this listener speaks.
    pub scheme: &'static str,
    pub request_id: &'a HeaderValue,
}

/// Sets the forwarding headers on the request about to go upstream.
///
/// This runs on every proxied request, so values are built without `format!` and shared
/// rather than copied where they repeat (a `HeaderValue` clone is a reference count): the
/// profile of the small-response benchmark had this function at 30 of the 118 allocations a
/// request cost (benches/README.md).
pub fn apply(request: &mut RequestHeader, downstream: &Downstream<'_>) -> Result<()> {
    let peer = downstream.peer.map(|ip| (ip, ip_value(ip)));
    if let Some(client) = downstream.client {
        let value = match &peer {
            Some((ip, value)) if *ip == client => value.clone(),
            _ => ip_value(client),
        };
        request.insert_header(X_REAL_IP, value)?;
    }
    if let Some((ip, value)) = peer {
        // Append the hop we saw to whatever chain arrived (nginx's $proxy_add_x_forwarded_for);
        // apps that trust it take the right-most entries.
        let chain = match request.headers.get(X_FORWARDED_FOR).map(|v| v.to_str()) {
            Some(Ok(existing)) if !existing.trim().is_empty() => {
                HeaderValue::try_from(format!("{existing}, {ip}")).map_err(|e| {
                    Error::because(ErrorType::InvalidHTTPHeader, "x-forwarded-for", e)
                })?
            }
            _ => value,
        };
        request.insert_header(X_FORWARDED_FOR, chain)?;
    }
    // A trusted proxy (CDN) knows the original scheme and host better than we do.
    let keep = |request: &RequestHeader, name: &str| {
        downstream.peer_trusted && request.headers.contains_key(name)
    };
    if !keep(request, X_FORWARDED_PROTO) {
        request.insert_header(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(downstream.scheme),
        )?;
    }
    if !keep(request, X_FORWARDED_HOST) {
        let host = request
            .headers
            .get(http::header::HOST)
            .cloned()
            .or_else(|| {
                request
                    .uri
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            });
        if let Some(host) = host {
            request.insert_header(X_FORWARDED_HOST, host)?;
        }
    }
    request.insert_header(X_REQUEST_ID, downstream.request_id.clone())?;
    Ok(())
}

/// An address as a header value, written into a stack buffer (one allocation, no `String`).
fn ip_value(ip: IpAddr) -> HeaderValue {
    let mut buf = [0u8; 64];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    // 64 bytes hold the longest IPv6 text form (45), so the write cannot fail.
    let written = match write!(cursor, "{ip}") {
        Ok(()) => cursor.position() as usize,
        Err(_) => 0,
    };
    HeaderValue::from_bytes(&buf[..written]).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A client-supplied request id is kept when it is a short token, so traces can span
/// services; anything else is replaced by a fresh random id (32 hex digits).
pub fn request_id(incoming: Option<&HeaderValue>) -> HeaderValue {
    let valid = |id: &&HeaderValue| {
        (1..=128).contains(&id.len())
            && id
                .as_bytes()
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    };
    if let Some(id) = incoming.filter(valid) {
        // Shares the request's buffer: no copy.
        return id.clone();
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let random = rand::random::<u128>();
    let mut text = [0u8; 32];
    for (i, digit) in text.iter_mut().enumerate() {
        *digit = HEX[((random >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// The request id as text, for logs and error bodies (ids are ASCII tokens by construction).
pub fn request_id_str(id: &HeaderValue) -> &str {
    id.to_str().unwrap_or("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_keeps_tokens_and_replaces_junk() {
        let token = HeaderValue::from_static("abc-123");
        assert_eq!(request_id(Some(&token)), "abc-123");
        let junk = HeaderValue::from_static("bad id");
        let fresh = request_id(Some(&junk));
        assert_eq!(fresh.len(), 32);
        assert!(fresh.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(request_id(None), request_id(None));
    }

    #[test]
    fn addresses_become_their_usual_text() {
        assert_eq!(ip_value("203.0.113.7".parse().unwrap()), "203.0.113.7");
        let long = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
        assert_eq!(
            ip_value(long.parse().unwrap()),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
    }

    #[test]
    fn forwarding_headers_extend_the_chain_and_share_the_peer() {
        let mut request = RequestHeader::build("GET", b"/", None).unwrap();
        request.insert_header("host", "app.example.com").unwrap();
        request
            .insert_header("x-forwarded-for", "198.51.100.1")
            .unwrap();
        let id = HeaderValue::from_static("req-1");
        let downstream = Downstream {
            peer: Some("203.0.113.7".parse().unwrap()),
            client: Some("203.0.113.7".parse().unwrap()),
            peer_trusted: false,
            scheme: "https",
            request_id: &id,
        };
        apply(&mut request, &downstream).unwrap();
        let header = |name: &str| {
            request
                .headers
                .get(name)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(header("x-real-ip"), "203.0.113.7");
        assert_eq!(header("x-forwarded-for"), "198.51.100.1, 203.0.113.7");
        assert_eq!(header("x-forwarded-proto"), "https");
        assert_eq!(header("x-forwarded-host"), "app.example.com");
        assert_eq!(header("x-request-id"), "req-1");
    }
}
