//! `compress = true`: responses encoded with gzip, brotli or zstd, as the client's
//! `Accept-Encoding` prefers, by Pingora's own compression (the code behind its
//! `ResponseCompression` module). Only text-like types are encoded (see `COMPRESSIBLE`);
//! Pingora also leaves alone bodies under 20 bytes and responses the upstream encoded
//! already, and adds `Vary: Accept-Encoding`.
//!
//! Used directly rather than as the module, which Pingora would build for every request of
//! every route: routes without `compress` pay nothing.

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::compression::{Algorithm, ResponseCompressionCtx};

/// nginx's `gzip_comp_level` is 1 and Caddy's default 5: 5 costs little more CPU for a
/// noticeably smaller body. brotli 4 and zstd 3 are the usual on-the-fly levels (slower
/// levels are for files compressed once).
const LEVELS: [(Algorithm, u32); 3] = [
    (Algorithm::Gzip, 5),
    (Algorithm::Brotli, 4),
    (Algorithm::Zstd, 3),
];

/// Starts compressing `response` if the client accepts an encoding and the response is
/// worth it; `None` when there is nothing to do.
pub fn start(
    request: &RequestHeader,
    response: &mut ResponseHeader,
) -> Option<Box<ResponseCompressionCtx>> {
    let status = response.status.as_u16();
    // A part of a representation is encoded by the upstream or not at all; and an answer
    // without a body has nothing to encode.
    let bodiless = request.method == http::Method::HEAD
        || matches!(status, 204 | 206 | 304)
        || response.status.is_informational()
        || response
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0");
    if bodiless
        || !request.headers.contains_key(http::header::ACCEPT_ENCODING)
        || !worth_encoding(response)
    {
        return None;
    }
    let mut ctx = ResponseCompressionCtx::new(0, false, false);
    for (algorithm, level) in LEVELS {
        ctx.adjust_algorithm_level(algorithm, level);
    }
    ctx.request_filter(request);
    ctx.response_header_filter(response, false);
    // Still waiting for a header means nothing was decided; an empty body phase means
    // Pingora chose not to encode.
    (!ctx.is_header_phase() && ctx.is_enabled()).then(|| Box::new(ctx))
}

/// Types that compress well (Caddy's default list, which nginx users write as `gzip_types`);
/// Pingora would take any `application/` or `font/` type, fonts and archives that are
/// compressed already among them.
const COMPRESSIBLE: [&str; 8] = [
    "text/",
    "application/json",
    "application/javascript",
    "application/xhtml+xml",
    "application/atom+xml",
    "application/rss+xml",
    "application/wasm",
    "image/svg+xml",
];

/// A compressible type, not a stream whose parts must reach the client as they come (server-
/// sent events: the encoder holds data until it has enough), and no `no-transform`
/// (RFC 9110 §7.7).
fn worth_encoding(response: &ResponseHeader) -> bool {
    let text = |name| {
        response
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
    };
    let Some(content_type) = text(http::header::CONTENT_TYPE) else {
        return false;
    };
    let no_transform =
        text(http::header::CACHE_CONTROL).is_some_and(|c| c.contains("no-transform"));
    COMPRESSIBLE.iter().any(|t| content_type.starts_with(t))
        && !content_type.starts_with("text/event-stream")
        && !no_transform
}

/// Replaces `body` with its encoded form (possibly empty until the encoder has enough).
pub fn encode(ctx: &mut ResponseCompressionCtx, body: &mut Option<Bytes>, end: bool) {
    if ctx.is_header_phase() {
        return;
    }
    if let Some(encoded) = ctx.response_body_filter(body.as_ref(), end) {
        *body = Some(encoded);
    }
}
