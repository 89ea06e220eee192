//! Host names as they arrive in `Host` / `:authority` and as they are written in routes:
//! split off the port, lowercase, and reject anything that is not a plausible DNS name or
//! IP literal (RFC 1123 §2.1, RFC 3986 §3.2.2).

use std::borrow::Cow;

/// DNS limits a name to 253 characters in text form (RFC 1035 §2.3.4).
const MAX_HOST_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// Why a host value was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    #[error("host is empty")]
    Empty,
    #[error("host is longer than {MAX_HOST_LEN} characters")]
    TooLong,
    #[error("host has a label longer than {MAX_LABEL_LEN} characters or an empty label")]
    BadLabel,
    #[error("host contains a character that is not a letter, digit, '-', '_' or '.'")]
    BadCharacter,
    #[error("host has an invalid port")]
    BadPort,
}

/// Normalises an authority (`Example.COM:8080`, `[::1]:80`, `example.com.`) to the lowercase
/// host without port or trailing dot. Borrows when the input needs no change.
pub fn normalize_authority(authority: &[u8]) -> Result<Cow<'_, str>, HostError> {
    let host = strip_port(authority)?;
    normalize_host(host)
}

/// Validates and lowercases a bare host (no port).
pub fn normalize_host(host: &[u8]) -> Result<Cow<'_, str>, HostError> {
    let host = host.strip_suffix(b".").unwrap_or(host);
    if host.is_empty() {
        return Err(HostError::Empty);
    }
    if host.len() > MAX_HOST_LEN {
        return Err(HostError::TooLong);
    }
    if host.first() == Some(&b'[') {
        return normalize_ipv6_literal(host);
    }
    let mut has_upper = false;
    for label in host.split(|b| *b == b'.') {
        if label.is_empty() || label.len() > MAX_LABEL_LEN {
            return Err(HostError::BadLabel);
        }
        for byte in label {
            match byte {
                b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => {}
                b'A'..=b'Z' => has_upper = true,
                _ => return Err(HostError::BadCharacter),
            }
        }
    }
    // Every byte was checked to be ASCII above, so this conversion cannot fail.
    let text = std::str::from_utf8(host).map_err(|_| HostError::BadCharacter)?;
    Ok(if has_upper {
        Cow::Owned(text.to_ascii_lowercase())
    } else {
        Cow::Borrowed(text)
    })
}

/// `[v6addr]` keeps its brackets so it can never collide with a DNS name.
fn normalize_ipv6_literal(host: &[u8]) -> Result<Cow<'_, str>, HostError> {
    let inner = host
        .strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .ok_or(HostError::BadCharacter)?;
    let text = std::str::from_utf8(inner).map_err(|_| HostError::BadCharacter)?;
    let addr: std::net::Ipv6Addr = text.parse().map_err(|_| HostError::BadCharacter)?;
    Ok(Cow::Owned(format!("[{addr}]")))
}

fn strip_port(authority: &[u8]) -> Result<&[u8], HostError> {
    let port_start = if authority.first() == Some(&b'[') {
        match authority.iter().position(|b| *b == b']') {
            Some(end) if end + 1 == authority.len() => return Ok(authority),
            Some(end) if authority.get(end + 1) == Some(&b':') => end + 1,
            _ => return Err(HostError::BadCharacter),
        }
    } else {
        match authority.iter().rposition(|b| *b == b':') {
            Some(colon) => colon,
            None => return Ok(authority),
        }
    };
    let (host, port) = authority.split_at(port_start);
    let digits = port.get(1..).unwrap_or_default();
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HostError::BadPort);
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(input: &str) -> Result<String, HostError> {
        normalize_authority(input.as_bytes()).map(Cow::into_owned)
    }

    #[test]
    fn strips_port_case_and_trailing_dot() {
        assert_eq!(norm("Example.COM:8080").as_deref(), Ok("example.com"));
        assert_eq!(norm("example.com.").as_deref(), Ok("example.com"));
        assert_eq!(norm("127.0.0.1:80").as_deref(), Ok("127.0.0.1"));
        assert_eq!(norm("[::1]:8080").as_deref(), Ok("[::1]"));
        assert_eq!(norm("[0:0::1]").as_deref(), Ok("[::1]"));
    }

    #[test]
    fn rejects_what_cannot_be_a_host() {
        assert_eq!(norm(""), Err(HostError::Empty));
        assert_eq!(norm("exa mple.com"), Err(HostError::BadCharacter));
        assert_eq!(norm("exa\u{7}mple.com"), Err(HostError::BadCharacter));
        assert_eq!(norm("a..b"), Err(HostError::BadLabel));
        assert_eq!(norm("example.com:80x"), Err(HostError::BadPort));
        assert_eq!(norm(&"a".repeat(300)), Err(HostError::TooLong));
        assert_eq!(norm(&"a".repeat(64)), Err(HostError::BadLabel));
        assert_eq!(norm("[::1"), Err(HostError::BadCharacter));
    }
}
