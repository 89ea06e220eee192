//! Request paths as routing sees them: RFC 3986 §6.2.2 normalisation before a path is
//! matched against route prefixes, so that `/x/../internal/`, `/%69nternal/` and
//! `//internal/` all reach the route for `/internal/`, as they do in nginx.
//!
//! What is normalised, in this order:
//! 1. percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`, RFC 3986 §2.3) are
//!    decoded, and the hex digits of every other escape are uppercased (§6.2.2.1–2);
//!    `%2F` is never decoded into a separator and `%00` stays encoded;
//! 2. repeated slashes are merged when `merge_slashes` is on (nginx's default; not an RFC
//!    rule, since `//` is a legal empty segment);
//! 3. dot segments are removed (§5.2.4 `remove_dot_segments`, §6.2.2.3).
//!
//! A path that climbs above the root (`/../etc`) or carries a broken escape is refused,
//! which the proxy answers with 400 as nginx does.

use std::borrow::Cow;

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    #[error("path does not start with '/'")]
    NotAbsolute,
    #[error("path climbs above the root with '..'")]
    AboveRoot,
    #[error("path has a '%' not followed by two hex digits")]
    BadEscape,
}

/// Normalises `path` (no query). Borrows when nothing needs to change, which is the case
/// for almost every real request, so the common path costs one scan and no allocation.
pub fn normalize(path: &str, merge_slashes: bool) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(path.as_bytes(), merge_slashes) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path.as_bytes())?;
    let merged = if merge_slashes {
        merge_repeated_slashes(&decoded)
    } else {
        decoded
    };
    let resolved = remove_dot_segments(&merged)?;
    // Only ASCII bytes are ever produced from ASCII escapes, and other bytes are copied
    // unchanged, so the result is valid UTF-8 whenever the input was.
    String::from_utf8(resolved)
        .map(Cow::Owned)
        .map_err(|_| PathError::BadEscape)
}

/// True when `normalize` would return `path` unchanged: no escapes, no `.` or `..`
/// segments, and no repeated slashes when they are merged.
fn is_normal(path: &[u8], merge_slashes: bool) -> bool {
    if path.contains(&b'%') {
        return false;
    }
    if merge_slashes && path.windows(2).any(|pair| pair == b"//") {
        return false;
    }
    !path
        .split(|b| *b == b'/')
        .any(|segment| segment == b"." || segment == b"..")
}

fn decode_unreserved(path: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while let Some(&byte) = path.get(i) {
        if byte != b'%' {
            out.push(byte);
            i += 1;
            continue;
        }
        let (Some(high), Some(low)) = (
            path.get(i + 1).copied().and_then(hex_value),
            path.get(i + 2).copied().and_then(hex_value),
        ) else {
            return Err(PathError::BadEscape);
        };
        let decoded = high * 16 + low;
        if is_unreserved(decoded) {
            out.push(decoded);
        } else {
            out.extend_from_slice(&[
                b'%',
                HEX_UPPER[usize::from(high)],
                HEX_UPPER[usize::from(low)],
            ]);
        }
        i += 3;
    }
    Ok(out)
}

const HEX_UPPER: [u8; 16] = *b"0123456789ABCDEF";

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §2.3.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn merge_repeated_slashes(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for &byte in path {
        if byte == b'/' && out.last() == Some(&b'/') {
            continue;
        }
        out.push(byte);
    }
    out
}

/// RFC 3986 §5.2.4 for an absolute path, except that `..` at the root is an error instead
/// of being dropped: a client that asks for `/../etc/passwd` is probing, and nginx answers
/// it with 400 too. A final `.` or `..` leaves a trailing slash (`/a/b/..` → `/a/`).
fn remove_dot_segments(path: &[u8]) -> Result<Vec<u8>, PathError> {
    // Segments after the leading '/', so "/a//b/" is ["a", "", "b", ""].
    let mut kept: Vec<&[u8]> = Vec::new();
    let segments: Vec<&[u8]> = path
        .get(1..)
        .unwrap_or_default()
        .split(|b| *b == b'/')
        .collect();
    let last = segments.len().saturating_sub(1);
    for (index, segment) in segments.into_iter().enumerate() {
        match segment {
            b"." => {
                if index == last {
                    kept.push(b"");
                }
            }
            b".." => {
                if kept.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                if index == last {
                    kept.push(b"");
                }
            }
            _ => kept.push(segment),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for segment in kept {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str) -> Result<String, PathError> {
        normalize(path, true).map(Cow::into_owned)
    }

    #[test]
    fn ordinary_paths_are_borrowed_unchanged() {
        for path in [
            "/",
            "/api/v1/users",
            "/a/b/",
            "/.well-known/acme-challenge/x",
            "/a.b/c..d/...",
            "/a/b..",
        ] {
            assert!(
                matches!(normalize(path, true), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
    }

    #[test]
    fn the_bypasses_from_the_issue_route_like_nginx() {
        assert_eq!(norm("/x/../internal/secret"), Ok("/internal/secret".into()));
        assert_eq!(norm("/%69nternal/secret"), Ok("/internal/secret".into()));
        assert_eq!(norm("//internal/secret"), Ok("/internal/secret".into()));
        assert_eq!(norm("/swarm//etc"), Ok("/swarm/etc".into()));
        assert_eq!(norm("/swarm/../../etc/passwd"), Err(PathError::AboveRoot));
    }

    #[test]
    fn dot_segments_follow_rfc_3986() {
        assert_eq!(norm("/a/b/c/./../../g"), Ok("/a/g".into()));
        assert_eq!(norm("/a/./b"), Ok("/a/b".into()));
        assert_eq!(norm("/a/b/."), Ok("/a/b/".into()));
        assert_eq!(norm("/a/b/.."), Ok("/a/".into()));
        assert_eq!(norm("/a/.."), Ok("/".into()));
        assert_eq!(norm("/."), Ok("/".into()));
        assert_eq!(norm("/.."), Err(PathError::AboveRoot));
        assert_eq!(norm("/%2e%2E/etc"), Err(PathError::AboveRoot));
        assert_eq!(norm("/a/%2e/b"), Ok("/a/b".into()));
    }

    #[test]
    fn escapes_are_normalised_but_separators_stay_encoded() {
        assert_eq!(norm("/a%2fb"), Ok("/a%2Fb".into()));
        assert_eq!(norm("/a%2F..%2Fb"), Ok("/a%2F..%2Fb".into()));
        assert_eq!(norm("/%7euser"), Ok("/~user".into()));
        assert_eq!(norm("/a%20b"), Ok("/a%20b".into()));
        assert_eq!(norm("/a%3ab"), Ok("/a%3Ab".into()));
        assert_eq!(norm("/nul%00"), Ok("/nul%00".into()));
        assert_eq!(norm("/caf%c3%a9"), Ok("/caf%C3%A9".into()));
        assert_eq!(norm("/bad%"), Err(PathError::BadEscape));
        assert_eq!(norm("/bad%4"), Err(PathError::BadEscape));
        assert_eq!(norm("/bad%zz"), Err(PathError::BadEscape));
    }

    #[test]
    fn repeated_slashes_are_kept_when_merging_is_off() {
        assert!(matches!(
            normalize("//a//b", false),
            Ok(Cow::Borrowed("//a//b"))
        ));
        assert_eq!(
            normalize("//a/../b", false).map(Cow::into_owned),
            Ok("//b".into())
        );
    }

    #[test]
    fn relative_targets_are_refused() {
        assert_eq!(norm("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(norm(""), Err(PathError::NotAbsolute));
    }
}
