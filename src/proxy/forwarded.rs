//! The request headers upstream apps expect from the proxy in front of them, as nginx's
//! usual `proxy_set_header` block sets them: X-Real-IP, X-Forwarded-For/Proto/Host and
//! X-Request-Id. `Host` itself is passed through unchanged.

use std::net::IpAddr;

use pingora::http::RequestHeader;
use pingora::Result;

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
    pub request_id: &'a str,
}

/// Sets the forwarding headers on the request about to go upstream.
pub fn apply(request: &mut RequestHeader, downstream: &Downstream<'_>) -> Result<()> {
    if let Some(client) = downstream.client {
        request.insert_header(X_REAL_IP, client.to_string())?;
    }
    if let Some(peer) = downstream.peer {
        // Append the hop we saw to whatever chain arrived (nginx's $proxy_add_x_forwarded_for);
        // apps that trust it take the right-most entries.
        let chain = match request.headers.get(X_FORWARDED_FOR).map(|v| v.to_str()) {
            Some(Ok(existing)) if !existing.trim().is_empty() => format!("{existing}, {peer}"),
            _ => peer.to_string(),
        };
        request.insert_header(X_FORWARDED_FOR, chain)?;
    }
    // A trusted proxy (CDN) knows the original scheme and host better than we do.
    let keep = |request: &RequestHeader, name: &str| {
        downstream.peer_trusted && request.headers.contains_key(name)
    };
    if !keep(request, X_FORWARDED_PROTO) {
        request.insert_header(X_FORWARDED_PROTO, downstream.scheme)?;
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
                    .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
            });
        if let Some(host) = host {
            request.insert_header(X_FORWARDED_HOST, host)?;
        }
    }
    request.insert_header(X_REQUEST_ID, downstream.request_id)?;
    Ok(())
}

/// A client-supplied request id is kept when it is a short token, so traces can span
/// services; anything else is replaced by a fresh random id.
pub fn request_id(incoming: Option<&[u8]>) -> String {
    let valid = |id: &&[u8]| {
        (1..=128).contains(&id.len())
            && id
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    };
    match incoming
        .filter(valid)
        .and_then(|id| std::str::from_utf8(id).ok())
    {
        Some(id) => id.to_owned(),
        None => format!("{:032x}", rand::random::<u128>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_keeps_tokens_and_replaces_junk() {
        assert_eq!(request_id(Some(b"abc-123")), "abc-123");
        assert_eq!(request_id(Some(b"bad id\n")).len(), 32);
        assert_ne!(request_id(None), request_id(None));
    }
}
