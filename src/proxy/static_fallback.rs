//! The "static placeholder" rollback: when a route's whole pool fails, files from its
//! `fallback.static_dir` answer GET and HEAD instead of an error page. Unknown paths get the
//! directory's `index.html`, so every URL of the app shows the placeholder.
//!
//! The page (`index.html`, for whatever path it stands in) is sent with the route's
//! `fallback.status`, 503 with `Retry-After` by default, as a maintenance page should be: a
//! 200 would tell API clients, health probes and caches that all is well, and metrics would
//! count an outage as success. The page's own assets (stylesheets, images) keep 200, since
//! browsers do not use a stylesheet or script that came with an error status.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

/// Placeholders are small pages; refuse to load anything large into memory.
const MAX_FILE_BYTES: u64 = 8 << 20;

/// Serves `request_path` from `dir`: the page with `status` (and `retry_after` seconds on a
/// 5xx), its assets with 200.
/// Returns the status sent, or `None` when the method is not GET or HEAD or the directory has
/// nothing to serve (the caller then sends its error response).
pub async fn serve(
    session: &mut Session,
    dir: &Path,
    status: u16,
    retry_after: &str,
    request_path: &str,
) -> Option<u16> {
    let method = &session.req_header().method;
    if method != http::Method::GET && method != http::Method::HEAD {
        return None;
    }
    let head_only = method == http::Method::HEAD;
    let (path, body) = match read(dir, request_path).await {
        Some(found) => found,
        None => read(dir, "/index.html").await?,
    };
    let is_page = path.file_name().is_some_and(|name| name == "index.html");
    let status = if is_page { status } else { 200 };
    let mut header = ResponseHeader::build(status, Some(6)).ok()?;
    if status >= 500 {
        header
            .insert_header(http::header::RETRY_AFTER, retry_after)
            .ok()?;
    }
    header
        .insert_header(http::header::CONTENT_TYPE, content_type(&path))
        .ok()?;
    header
        .insert_header(http::header::CONTENT_LENGTH, body.len())
        .ok()?;
    // The placeholder must vanish from caches as soon as the app is back.
    header
        .insert_header(http::header::CACHE_CONTROL, "no-store")
        .ok()?;
    header.insert_header("x-headland-fallback", "static").ok()?;
    session
        .write_response_header(Box::new(header), head_only)
        .await
        .ok()?;
    if !head_only {
        session.write_response_body(Some(body), true).await.ok()?;
    }
    Some(status)
}

async fn read(dir: &Path, request_path: &str) -> Option<(PathBuf, Bytes)> {
    let mut path = safe_join(dir, request_path)?;
    let mut metadata = tokio::fs::metadata(&path).await.ok()?;
    if metadata.is_dir() {
        path.push("index.html");
        metadata = tokio::fs::metadata(&path).await.ok()?;
    }
    if !metadata.is_file() || metadata.len() > MAX_FILE_BYTES {
        return None;
    }
    let body = tokio::fs::read(&path).await.ok()?;
    Some((path, Bytes::from(body)))
}

/// Joins a URL path under `dir`, refusing anything that could step outside it.
fn safe_join(dir: &Path, request_path: &str) -> Option<PathBuf> {
    let mut path = dir.to_path_buf();
    for segment in request_path.split('/').filter(|s| !s.is_empty()) {
        let unsafe_segment =
            segment == ".." || segment == "." || segment.contains(['\\', '\0', '%']);
        if unsafe_segment {
            return None;
        }
        path.push(segment);
    }
    Some(path)
}

/// The media type of a file, by extension (also used by `static_site`).
pub(super) fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "pdf" => "application/pdf",
        "wasm" => "application/wasm",
        "woff" => "font/woff",
        "avif" => "image/avif",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "csv" => "text/csv; charset=utf-8",
        "map" => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_refuses_to_leave_the_directory() {
        let dir = Path::new("/srv/placeholder");
        assert_eq!(
            safe_join(dir, "/css/site.css"),
            Some(dir.join("css/site.css"))
        );
        assert_eq!(safe_join(dir, "/"), Some(dir.to_path_buf()));
        assert_eq!(safe_join(dir, "/../etc/passwd"), None);
        assert_eq!(safe_join(dir, "/%2e%2e/etc/passwd"), None);
        assert_eq!(safe_join(dir, "/a\\..\\b"), None);
    }
}
