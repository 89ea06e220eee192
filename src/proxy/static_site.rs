//! A directory as a site root (`static = { root, index }`, nginx `root`): GET and HEAD of the
//! files under it, the index file for directories, validators (ETag, Last-Modified) and
//! single byte ranges, and precompressed `.br` / `.gz` siblings (nginx `gzip_static`).
//!
//! Nothing outside the root is served: URL segments that could climb (`..`, an encoded '/')
//! are refused before the file system is asked, and every file found is canonicalized and
//! must still lie under the (canonical) root, so a symlink out of it is a 404. Files are
//! streamed in chunks, never read whole.

use std::borrow::Cow;
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use http::header;
use http::HeaderValue;
use percent_encoding::percent_decode_str;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::Result;
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::responses;
use super::route_table::Route;
use super::static_fallback::content_type;
use crate::config::StaticSite;

/// Bytes read from a file per body chunk written.
const CHUNK: usize = 64 << 10;

/// What a URL path names under a root.
#[derive(Debug)]
pub(super) enum Found {
    File(PathBuf),
    Directory(PathBuf),
    Missing,
}

/// The part of a file one response carries.
#[derive(Debug, PartialEq, Eq)]
enum Span {
    Whole,
    /// First and last byte, inclusive (RFC 9110 §14.1.2).
    Part(u64, u64),
    Unsatisfiable,
}

/// Answers a request on a `static` route. `path` is the normalised request path.
pub(super) async fn serve(
    session: &mut Session,
    request_id: &HeaderValue,
    route: &Route,
    site: &StaticSite,
    path: &str,
) -> Result<()> {
    if let Some(refused) = refuse_method(session, request_id).await {
        return refused;
    }
    let relative = if route.strip_prefix {
        under_prefix(path, &route.prefix)
    } else {
        Cow::Borrowed(path)
    };
    let relative = relative.as_ref();
    match find(&site.root, relative).await {
        Found::File(file) => send_file(session, request_id, &site.root, &file).await,
        Found::Directory(_) if !relative.ends_with('/') => {
            redirect_to_directory(session, request_id).await
        }
        Found::Directory(dir) => match find_in(&site.root, &dir.join(&site.index)).await {
            Some(file) => send_file(session, request_id, &site.root, &file).await,
            // nginx without `autoindex`: a directory is not listed.
            None => error(session, request_id, 403, "directory listing is not allowed").await,
        },
        Found::Missing => error(session, request_id, 404, "no such file").await,
    }
}

/// 405 with `Allow` for anything but GET and HEAD; `None` lets the request on.
pub(super) async fn refuse_method(
    session: &mut Session,
    request_id: &HeaderValue,
) -> Option<Result<()>> {
    let method = &session.req_header().method;
    if method == http::Method::GET || method == http::Method::HEAD {
        return None;
    }
    let body = responses::error_body(405, "static files answer GET and HEAD only");
    Some(responses::plain(session, 405, body, request_id, &[("allow", "GET, HEAD")]).await)
}

/// `/docs/a.html` under the prefix `/docs/` is `/a.html`, as `strip_prefix` does for
/// upstreams: the file path is the rest of the URL after the route's prefix.
fn under_prefix<'a>(path: &'a str, prefix: &str) -> Cow<'a, str> {
    let rest = path
        .strip_prefix(prefix.trim_end_matches('/'))
        .unwrap_or(path);
    if rest.starts_with('/') {
        Cow::Borrowed(rest)
    } else {
        Cow::Owned(format!("/{rest}"))
    }
}

/// The percent-decoded segments of a URL path; `None` when one could step outside a root
/// (`..`, `.`, an encoded '/' or '\\', NUL) or is not UTF-8.
pub(super) fn url_segments(url_path: &str) -> Option<Vec<Cow<'_, str>>> {
    url_path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|segment| {
            let decoded = percent_decode_str(segment).decode_utf8().ok()?;
            let unsafe_segment =
                decoded == ".." || decoded == "." || decoded.contains(['/', '\\', '\0']);
            (!unsafe_segment).then_some(decoded)
        })
        .collect()
}

/// The file system path of a URL path under `root` (see `url_segments`).
fn local_path(root: &Path, url_path: &str) -> Option<PathBuf> {
    let mut path = root.to_path_buf();
    path.extend(url_segments(url_path)?.iter().map(|s| s.as_ref()));
    Some(path)
}

/// Looks `url_path` up under `root` (which is canonical).
pub(super) async fn find(root: &Path, url_path: &str) -> Found {
    let Some(path) = local_path(root, url_path) else {
        return Found::Missing;
    };
    let Ok(canonical) = tokio::fs::canonicalize(&path).await else {
        return Found::Missing;
    };
    if !canonical.starts_with(root) {
        return Found::Missing;
    }
    match tokio::fs::metadata(&canonical).await {
        // `/file.txt/` names a directory that does not exist (nginx: ENOTDIR, 404).
        Ok(meta) if meta.is_file() && !url_path.ends_with('/') => Found::File(canonical),
        Ok(meta) if meta.is_dir() => Found::Directory(canonical),
        _ => Found::Missing,
    }
}

/// `path` when it is a regular file that, symlinks resolved, lies under `root`.
pub(super) async fn find_in(root: &Path, path: &Path) -> Option<PathBuf> {
    let canonical = tokio::fs::canonicalize(path).await.ok()?;
    let meta = tokio::fs::metadata(&canonical).await.ok()?;
    (canonical.starts_with(root) && meta.is_file()).then_some(canonical)
}

/// nginx's answer to a directory named without its trailing slash: 301 to the same path
/// with one, the query kept.
pub(super) async fn redirect_to_directory(
    session: &mut Session,
    request_id: &HeaderValue,
) -> Result<()> {
    let uri = &session.req_header().uri;
    let location = match uri.query() {
        Some(query) => format!("{}/?{query}", uri.path()),
        None => format!("{}/", uri.path()),
    };
    let body = format!("Redirecting to {location}\n");
    responses::plain(session, 301, body, request_id, &[("location", &location)]).await
}

/// A plain error answer, as the rest of the proxy writes them.
pub(super) async fn error(
    session: &mut Session,
    request_id: &HeaderValue,
    status: u16,
    detail: &str,
) -> Result<()> {
    let body = responses::error_body(status, detail);
    responses::plain(session, status, body, request_id, &[]).await
}

/// Sends `file` (canonical, under `root`), or the precompressed sibling the client accepts,
/// honouring conditional and range requests.
pub(super) async fn send_file(
    session: &mut Session,
    request_id: &HeaderValue,
    root: &Path,
    file: &Path,
) -> Result<()> {
    if let Some(refused) = refuse_method(session, request_id).await {
        return refused;
    }
    let accepted = session
        .req_header()
        .headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut chosen = None;
    for (coding, suffix) in [("br", "br"), ("gzip", "gz")] {
        if !accepts_coding(accepted, coding) {
            continue;
        }
        let mut sibling = file.as_os_str().to_owned();
        sibling.push(".");
        sibling.push(suffix);
        if let Some(sibling) = find_in(root, Path::new(&sibling)).await {
            chosen = Some((sibling, coding));
            break;
        }
    }
    let (path, coding) = match chosen {
        Some((sibling, coding)) => (sibling, Some(coding)),
        None => (file.to_path_buf(), None),
    };
    let opened = match File::open(&path).await {
        Ok(opened) => opened,
        Err(_) => return error(session, request_id, 404, "no such file").await,
    };
    let meta = match opened.metadata().await {
        Ok(meta) => meta,
        Err(_) => return error(session, request_id, 404, "no such file").await,
    };
    let validators = Validators::of(&meta);
    let request = session.req_header();
    let mut header = ResponseHeader::build(200, Some(10))?;
    header.insert_header(header::CONTENT_TYPE, content_type(file))?;
    header.insert_header(header::ETAG, &validators.etag)?;
    header.insert_header(header::LAST_MODIFIED, &validators.last_modified)?;
    header.insert_header(header::ACCEPT_RANGES, "bytes")?;
    // Whichever representation went out, another client may get the other one.
    header.insert_header(header::VARY, "Accept-Encoding")?;
    header.insert_header("x-request-id", request_id.clone())?;
    if let Some(coding) = coding {
        header.insert_header(header::CONTENT_ENCODING, coding)?;
    }
    if validators.not_modified(request) {
        header.set_status(304)?;
        header.remove_header(&header::CONTENT_TYPE);
        session
            .write_response_header(Box::new(header), true)
            .await?;
        return Ok(());
    }
    let len = meta.len();
    let span = match request.headers.get(header::RANGE) {
        Some(range) if validators.if_range_holds(request) => {
            byte_range(range.to_str().unwrap_or(""), len)
        }
        _ => Span::Whole,
    };
    let (first, count) = match span {
        Span::Whole => (0, len),
        Span::Part(first, last) => {
            header.set_status(206)?;
            header.insert_header(header::CONTENT_RANGE, format!("bytes {first}-{last}/{len}"))?;
            (first, last - first + 1)
        }
        Span::Unsatisfiable => {
            let range = format!("bytes */{len}");
            let body = responses::error_body(416, "the range is outside the file");
            let extra = [("content-range", range.as_str())];
            return responses::plain(session, 416, body, request_id, &extra).await;
        }
    };
    header.insert_header(header::CONTENT_LENGTH, count)?;
    let head_only = request.method == http::Method::HEAD;
    session
        .write_response_header(Box::new(header), head_only || count == 0)
        .await?;
    if head_only || count == 0 {
        return Ok(());
    }
    stream(session, opened, first, count).await
}

/// Writes `count` bytes of `file` from `first`, one chunk at a time.
async fn stream(session: &mut Session, mut file: File, first: u64, count: u64) -> Result<()> {
    let io_error = |e: std::io::Error| {
        pingora::Error::because(
            pingora::ErrorType::FileReadError,
            "reading a static file",
            e,
        )
    };
    file.seek(std::io::SeekFrom::Start(first))
        .await
        .map_err(io_error)?;
    let mut left = count;
    while left > 0 {
        let want = usize::try_from(left).map_or(CHUNK, |left| left.min(CHUNK));
        let mut chunk = BytesMut::zeroed(want);
        let read = file.read(&mut chunk).await.map_err(io_error)?;
        if read == 0 {
            // The file shrank under us: the length already sent cannot be kept.
            return Err(pingora::Error::explain(
                pingora::ErrorType::FileReadError,
                "a static file shrank while it was sent",
            ));
        }
        chunk.truncate(read);
        left -= read as u64;
        session
            .write_response_body(Some(chunk.freeze()), left == 0)
            .await?;
    }
    Ok(())
}

/// Whether an `Accept-Encoding` value admits `coding` (RFC 9110 §12.5.3): named or `*`
/// with a non-zero weight.
fn accepts_coding(accepted: &str, coding: &str) -> bool {
    let mut any = false;
    for item in accepted.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let weight = parts
            .find_map(|p| {
                let p = p.trim();
                p.strip_prefix("q=").or_else(|| p.strip_prefix("Q="))
            })
            .map_or(1.0, |q| q.trim().parse::<f32>().unwrap_or(0.0));
        if name.eq_ignore_ascii_case(coding) {
            return weight > 0.0;
        }
        if name == "*" {
            any = weight > 0.0;
        }
    }
    any
}

/// A single `bytes=` range of a `len`-byte file (RFC 9110 §14.1.2). Several ranges, or
/// anything unparsable, get the whole file, as the RFC allows a server to ignore `Range`.
fn byte_range(value: &str, len: u64) -> Span {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Span::Whole;
    };
    if spec.contains(',') {
        return Span::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Span::Whole;
    };
    let parse = |s: &str| s.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), parse(first), parse(last)) {
        // `bytes=-N`: the last N bytes.
        (true, _, Some(suffix)) if suffix > 0 && len > 0 => {
            Span::Part(len.saturating_sub(suffix), len - 1)
        }
        (true, _, Some(_)) => Span::Unsatisfiable,
        (false, Some(first), _) if first >= len => Span::Unsatisfiable,
        (false, Some(first), Some(last)) if last >= first => Span::Part(first, last.min(len - 1)),
        (false, Some(first), None) if last.trim().is_empty() => Span::Part(first, len - 1),
        _ => Span::Whole,
    }
}

/// ETag and Last-Modified of one file, as nginx makes them (mtime and size in hex).
struct Validators {
    etag: String,
    last_modified: String,
    modified_secs: u64,
}

// === impl Validators ===

impl Validators {
    fn of(meta: &Metadata) -> Self {
        let modified = meta.modified().unwrap_or(UNIX_EPOCH);
        let modified_secs = modified
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            etag: format!("\"{modified_secs:x}-{:x}\"", meta.len()),
            last_modified: httpdate::fmt_http_date(modified),
            modified_secs,
        }
    }

    /// `If-None-Match` decides when present (RFC 9110 §13.2.2), else `If-Modified-Since`.
    fn not_modified(&self, request: &RequestHeader) -> bool {
        let headers = &request.headers;
        if let Some(tags) = headers.get(header::IF_NONE_MATCH) {
            let tags = tags.to_str().unwrap_or("");
            // Weak comparison (§8.8.3.2): a `W/` prefix does not matter here.
            return tags
                .split(',')
                .map(|t| t.trim())
                .any(|t| t == "*" || t.trim_start_matches("W/") == self.etag);
        }
        headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .and_then(|since| since.duration_since(UNIX_EPOCH).ok())
            .is_some_and(|since| self.modified_secs <= since.as_secs())
    }

    /// No `If-Range`, or one that still names this file (§13.1.5): the range applies.
    fn if_range_holds(&self, request: &RequestHeader) -> bool {
        let Some(value) = request.headers.get(header::IF_RANGE) else {
            return true;
        };
        let value = value.to_str().unwrap_or("");
        if value.starts_with('"') {
            return value == self.etag;
        }
        httpdate::parse_http_date(value)
            .ok()
            .and_then(|date| date.duration_since(SystemTime::UNIX_EPOCH).ok())
            .is_some_and(|date| date.as_secs() == self.modified_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_as_rfc_9110_defines_them() {
        assert_eq!(byte_range("bytes=0-9", 100), Span::Part(0, 9));
        assert_eq!(byte_range("bytes=90-", 100), Span::Part(90, 99));
        assert_eq!(byte_range("bytes=90-500", 100), Span::Part(90, 99));
        assert_eq!(byte_range("bytes=-10", 100), Span::Part(90, 99));
        assert_eq!(byte_range("bytes=-500", 100), Span::Part(0, 99));
        assert_eq!(byte_range("bytes=100-", 100), Span::Unsatisfiable);
        assert_eq!(byte_range("bytes=-0", 100), Span::Unsatisfiable);
        assert_eq!(byte_range("bytes=0-0", 0), Span::Unsatisfiable);
        assert_eq!(byte_range("bytes=5-2", 100), Span::Whole);
        assert_eq!(byte_range("bytes=0-1,5-6", 100), Span::Whole);
        assert_eq!(byte_range("items=0-1", 100), Span::Whole);
    }

    #[test]
    fn accept_encoding_weights() {
        assert!(accepts_coding("gzip, deflate, br", "br"));
        assert!(accepts_coding("gzip;q=0.5", "gzip"));
        assert!(!accepts_coding("gzip;q=0", "gzip"));
        assert!(!accepts_coding("deflate", "gzip"));
        assert!(accepts_coding("*", "gzip"));
        assert!(!accepts_coding("*, gzip;q=0", "gzip"));
        assert!(!accepts_coding("", "gzip"));
    }

    #[test]
    fn local_paths_never_climb() {
        let root = Path::new("/srv/site");
        assert_eq!(
            local_path(root, "/css/a%20b.css"),
            Some(root.join("css/a b.css"))
        );
        assert_eq!(local_path(root, "/"), Some(root.to_path_buf()));
        assert_eq!(local_path(root, "/../etc/passwd"), None);
        assert_eq!(local_path(root, "/%2e%2e/etc/passwd"), None);
        assert_eq!(local_path(root, "/a%2f..%2f..%2fetc"), None);
        assert_eq!(local_path(root, "/a%5c..%5cb"), None);
        assert_eq!(local_path(root, "/a%00b"), None);
    }

    #[test]
    fn prefix_is_removed_up_to_its_slash() {
        assert_eq!(under_prefix("/docs/a.html", "/docs/"), "/a.html");
        assert_eq!(under_prefix("/docs/", "/docs/"), "/");
        assert_eq!(under_prefix("/docsx", "/docs"), "/x");
    }
}
