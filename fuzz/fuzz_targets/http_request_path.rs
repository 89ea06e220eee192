//! The request path before routing: `host::normalize_authority` on the raw `Host` /
//! `:authority` bytes, `path::normalize` on the request path, and `RouteTable::lookup` with
//! whatever comes out (and with the raw values too).
//!
//! Properties checked (a violation panics, which libFuzzer reports as a crash):
//! - nothing panics;
//! - a normalised host is non-empty, lowercase, at most 253 characters (or a bracketed IPv6
//!   literal) and normalising it again gives it back;
//! - a normalised path starts with '/', has no `.` or `..` segment, has no `//` when slashes
//!   are merged, no escape of an unreserved character and no lowercase escape; normalising it
//!   again gives it back; `%2F` is never decoded (the result is the same as for the path with
//!   every `%2F` replaced by an opaque character); and it equals a straightforward reference:
//!   decode unreserved escapes, merge slashes, then RFC 3986 §5.2.4 `remove_dot_segments`;
//! - route lookup never panics, on the shipped configurations and on random tables, and on
//!   random tables it agrees with the obvious definition (most specific host, then longest
//!   prefix), the same reference the unit tests of `route_table` use.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use headland::config::{HostPattern, Redirect, RouteAction, RouteConfig};
use headland::proxy::route_table::RouteTable;
use headland::snapshot::Snapshot;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    authority: &'a [u8],
    path: &'a str,
    merge_slashes: bool,
    routes: Vec<(u8, &'a str, &'a str)>,
}

fuzz_target!(|input: Input<'_>| {
    let host = check_authority(input.authority);
    check_path(input.path, input.merge_slashes);

    // What the proxy sees: Pingora hands over `uri.path()` of a parsed request target.
    let uri_path = http::uri::PathAndQuery::try_from(input.path)
        .ok()
        .map(|pq| pq.path().to_owned());
    if let Some(path) = &uri_path {
        check_path(path, input.merge_slashes);
    }

    let raw_host = String::from_utf8_lossy(input.authority);
    let normalised_path = headland::path::normalize(input.path, input.merge_slashes).ok();
    let mut requests: Vec<(&str, &str)> = vec![(&raw_host, input.path)];
    if let Some(host) = &host {
        requests.push((host, input.path));
        if let Some(path) = &normalised_path {
            requests.push((host, path));
        }
        if let Some(path) = &uri_path {
            requests.push((host, path));
        }
    }

    for snapshot in shipped_snapshots() {
        for (host, path) in &requests {
            if let Some(index) = snapshot.routes.lookup(host, path) {
                assert!(
                    snapshot.routes.get(index).is_some(),
                    "lookup gave a bad index"
                );
            }
        }
    }

    let configs: Vec<RouteConfig> = input.routes.iter().take(24).map(route).collect();
    let table = RouteTable::new(&configs, &[], &[]);
    for (host, path) in &requests {
        let found = table
            .lookup(host, path)
            .and_then(|i| table.get(i))
            .map(|r| r.name.as_str());
        assert_eq!(
            found,
            reference(&configs, host, path),
            "host {host:?} path {path:?} routes {configs:#?}"
        );
    }
});

fn check_authority(authority: &[u8]) -> Option<String> {
    let host = headland::host::normalize_authority(authority)
        .ok()?
        .into_owned();
    assert!(!host.is_empty());
    assert!(!host.bytes().any(|b| b.is_ascii_uppercase()), "{host:?}");
    assert!(host.len() <= 253 || host.starts_with('['), "{host:?}");
    assert!(!host.ends_with('.'), "{host:?}");
    let again = headland::host::normalize_authority(host.as_bytes());
    assert_eq!(again.as_deref(), Ok(host.as_str()), "not idempotent");
    let again = headland::host::normalize_host(host.as_bytes());
    assert_eq!(again.as_deref(), Ok(host.as_str()), "not idempotent");
    Some(host)
}

fn check_path(path: &str, merge: bool) {
    let result = headland::path::normalize(path, merge).map(|p| p.into_owned());
    if let Ok(out) = &result {
        assert!(out.starts_with('/'), "{out:?}");
        assert!(
            !out.split('/').any(|s| s == "." || s == ".."),
            "dot segment left in {out:?}"
        );
        assert!(!merge || !out.contains("//"), "repeated slash in {out:?}");
        check_escapes(out);
        assert_eq!(
            headland::path::normalize(out, merge).as_deref(),
            Ok(out.as_str()),
            "not idempotent"
        );
        // A NUL may only come from a literal one (a `..` can remove it); `%00` stays encoded.
        assert!(
            !out.contains('\0') || path.contains('\0'),
            "%00 was decoded: {out:?}"
        );
    }
    assert_eq!(
        result.clone().map_err(|_| ()),
        reference_normalize(path, merge),
        "differs from the reference for {path:?} (merge {merge})"
    );

    // `%2F` must stay an opaque part of its segment: the path with every `%2F` replaced by a
    // character that means nothing to the normaliser must give the same answer.
    const OPAQUE: char = '\u{E000}';
    if !path.contains(OPAQUE) {
        let opaque_input = replace_encoded_slash(path, &OPAQUE.to_string());
        let opaque = headland::path::normalize(&opaque_input, merge).map(|p| p.into_owned());
        assert_eq!(
            result.map(|out| out.replace("%2F", &OPAQUE.to_string())),
            opaque,
            "%2F was treated as a separator in {path:?}"
        );
    }
}

/// No escape of an unreserved character, no lowercase hex digit in an escape, no broken escape.
fn check_escapes(out: &str) {
    let bytes = out.as_bytes();
    for (i, _) in out.match_indices('%') {
        let hex = bytes.get(i + 1..i + 3).expect("broken escape in output");
        assert!(
            hex.iter()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)),
            "escape not uppercase in {out:?}"
        );
        let value = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
        assert!(
            !is_unreserved(value),
            "escaped unreserved character left in {out:?}"
        );
    }
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn replace_encoded_slash(path: &str, with: &str) -> String {
    path.replace("%2F", with).replace("%2f", with)
}

/// The normaliser written the slow, obvious way: decode, merge, RFC 3986 §5.2.4 on a string
/// buffer; `Err` for a broken escape or for `..` above the root.
fn reference_normalize(path: &str, merge: bool) -> Result<String, ()> {
    if !path.starts_with('/') {
        return Err(());
    }
    let mut decoded = Vec::new();
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(())?;
            let text = std::str::from_utf8(hex).map_err(|_| ())?;
            if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(());
            }
            let value = u8::from_str_radix(text, 16).map_err(|_| ())?;
            if is_unreserved(value) {
                decoded.push(value);
            } else {
                decoded.extend_from_slice(format!("%{value:02X}").as_bytes());
            }
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let mut text = String::from_utf8(decoded).map_err(|_| ())?;
    if merge {
        while text.contains("//") {
            text = text.replace("//", "/");
        }
    }
    remove_dot_segments(&text)
}

/// RFC 3986 §5.2.4, steps A–E, except that `..` with nothing to remove is an error.
fn remove_dot_segments(path: &str) -> Result<String, ()> {
    let mut input = path.to_owned();
    let mut output = String::new();
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("../") {
            input = rest.to_owned();
        } else if let Some(rest) = input.strip_prefix("./") {
            input = rest.to_owned();
        } else if input.starts_with("/./") {
            input.replace_range(..3, "/");
        } else if input == "/." {
            input = "/".into();
        } else if input.starts_with("/../") || input == "/.." {
            let len = if input == "/.." { 3 } else { 4 };
            input.replace_range(..len, "/");
            // Remove the last segment and its preceding '/' from the output.
            match output.rfind('/') {
                Some(at) => output.truncate(at),
                None => return Err(()),
            }
        } else if input == "." || input == ".." {
            input.clear();
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |i| i + start);
            output.push_str(&input[..end]);
            input.replace_range(..end, "");
        }
    }
    if output.is_empty() {
        output.push('/');
    }
    Ok(output)
}

fn route(&(kind, host, path): &(u8, &str, &str)) -> RouteConfig {
    let host = match kind % 4 {
        0 => HostPattern::Any,
        1 => HostPattern::Wildcard(format!(".{host}")),
        2 => HostPattern::Wildcard(host.to_owned()),
        _ => HostPattern::Exact(host.to_owned()),
    };
    RouteConfig {
        name: format!("{host}{path}"),
        host,
        path: path.to_owned(),
        strip_prefix: kind & 0x10 != 0,
        action: RouteAction::Redirect(Redirect {
            to: "/".into(),
            code: 301,
            keep_path: true,
        }),
        fallback: None,
        max_body_size: None,
        rate_limit: None,
        exact: false,
        access: Default::default(),
        headers: Default::default(),
        compress: false,
        request_buffering: true,
    }
}

/// Among routes whose host pattern matches and whose prefix starts the path: the most
/// specific host (exact, then longest wildcard suffix, then `*`), then the longest prefix;
/// the later of two routes for the same host and prefix.
fn reference<'a>(routes: &'a [RouteConfig], host: &str, path: &str) -> Option<&'a str> {
    let host_rank = |pattern: &HostPattern| match pattern {
        HostPattern::Exact(h) if h == host => Some(usize::MAX),
        HostPattern::Wildcard(suffix)
            if suffix.starts_with('.') && host.ends_with(suffix.as_str()) =>
        {
            Some(suffix.len())
        }
        HostPattern::Any => Some(0),
        _ => None,
    };
    routes
        .iter()
        .filter(|r| path.starts_with(&r.path))
        .filter_map(|r| host_rank(&r.host).map(|rank| (rank, r.path.len(), r)))
        .max_by_key(|(rank, len, _)| (*rank, *len))
        .map(|(_, _, r)| r.name.as_str())
}

/// The shipped configurations, loaded as `headland run` would load them.
fn shipped_snapshots() -> &'static [Snapshot] {
    static SNAPSHOTS: OnceLock<Vec<Snapshot>> = OnceLock::new();
    SNAPSHOTS.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let files = [
            "config/headland.toml",
            "config/examples/single-server.toml",
            "config/examples/three-region.toml",
            "config/examples/websocket-app.toml",
        ];
        files
            .iter()
            .map(|file| {
                let path = root.join(file);
                let config = headland::config::load(&path)
                    .unwrap_or_else(|e| panic!("{file} does not load: {e}"));
                Snapshot::build(config, 1, None)
            })
            .collect()
    })
}
