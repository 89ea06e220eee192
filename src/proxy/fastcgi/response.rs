//! The CGI response head a FastCGI script writes before its body (RFC 3875 §6): header
//! lines up to an empty line, `Status:` for the status, `Location:` alone meaning 302 (as
//! nginx answers it).

use http::header::{HeaderName, HeaderValue};

/// The most a script may write before its body starts (nginx's `fastcgi_buffer_size` is
/// 4 or 8 KiB; Laravel's cookies can be longer).
pub(super) const MAX_HEAD: usize = 64 << 10;

/// The head of a script's response.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct CgiHead {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Why a script's head is unusable; the client gets 502.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum HeadError {
    #[error("bad response header line {0:?}")]
    Line(String),
    #[error("bad Status {0:?}")]
    Status(String),
}

/// Where the head in `buf` ends: (end of the header lines, start of the body), if the empty
/// line has arrived. CGI allows bare LF line ends as well as CRLF.
pub(super) fn head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut line_start = 0;
    for (at, byte) in buf.iter().enumerate() {
        if *byte != b'\n' {
            continue;
        }
        let line = &buf[line_start..at];
        if line.is_empty() || line == b"\r" {
            return Some((line_start, at + 1));
        }
        line_start = at + 1;
    }
    None
}

/// Parses the header lines (without the empty line).
pub(super) fn parse(block: &[u8]) -> Result<CgiHead, HeadError> {
    let mut status = None;
    let mut headers = Vec::new();
    for line in block.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let bad_line = || HeadError::Line(String::from_utf8_lossy(line).into_owned());
        let colon = line.iter().position(|b| *b == b':').ok_or_else(bad_line)?;
        let name = HeaderName::from_bytes(line[..colon].trim_ascii()).map_err(|_| bad_line())?;
        let value =
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).map_err(|_| bad_line())?;
        if name.as_str() == "status" {
            let text = value.to_str().unwrap_or("");
            let code = text
                .split_whitespace()
                .next()
                .and_then(|code| code.parse::<u16>().ok())
                .filter(|code| (100..=599).contains(code))
                .ok_or_else(|| HeadError::Status(text.to_owned()))?;
            status = Some(code);
        } else if !is_hop_by_hop(&name) {
            headers.push((name, value));
        }
    }
    let redirect = headers
        .iter()
        .any(|(name, _)| name == http::header::LOCATION);
    let status = status.unwrap_or(if redirect { 302 } else { 200 });
    Ok(CgiHead { status, headers })
}

/// Headers that describe one connection, not the response (RFC 9110 §7.6.1); Headland
/// frames the response to the client itself.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_ends_at_the_first_empty_line() {
        assert_eq!(head_end(b"A: 1\r\n\r\nbody"), Some((6, 8)));
        assert_eq!(head_end(b"A: 1\n\nbody"), Some((5, 6)));
        assert_eq!(head_end(b"A: 1\r\nB: 2\r\n"), None);
        assert_eq!(head_end(b"\r\nbody"), Some((0, 2)));
    }

    #[test]
    fn status_location_and_headers() {
        let head = parse(b"Status: 404 Not Found\r\nContent-type: text/html\r\nX-A: b").unwrap();
        assert_eq!(head.status, 404);
        assert_eq!(head.headers.len(), 2);
        assert_eq!(head.headers[0].0, http::header::CONTENT_TYPE);

        let redirect = parse(b"Location: /login\r\n").unwrap();
        assert_eq!(redirect.status, 302);
        let moved = parse(b"Status: 301\r\nLocation: /new\r\n").unwrap();
        assert_eq!(moved.status, 301);
        assert_eq!(parse(b"Content-Type: text/plain").unwrap().status, 200);
    }

    #[test]
    fn drops_connection_headers_and_refuses_garbage() {
        let head = parse(b"Transfer-Encoding: chunked\nConnection: close\nX-A: 1").unwrap();
        assert_eq!(head.headers.len(), 1);
        assert!(matches!(parse(b"no colon here"), Err(HeadError::Line(_))));
        assert!(matches!(parse(b"Status: abc"), Err(HeadError::Status(_))));
        assert!(matches!(parse(b"Status: 999"), Err(HeadError::Status(_))));
    }
}
