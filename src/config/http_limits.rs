//! `[http]`: how much a client may send in a request head, how long it may take, how many
//! connections it may hold, and how much of a request body is buffered before the upstream
//! is contacted. The defaults are nginx's, so traffic that passed nginx passes here.

use std::time::Duration;

use toml::Spanned;

use super::error::ErrorSink;
use super::field::{Limits, Quantity, Scope};
use super::raw::RawHttp;

/// Limits on client requests and connections, for every listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// The whole request head must arrive within this time (nginx `client_header_timeout`).
    /// Default: 60s.
    pub header_timeout: Duration,
    /// How long an idle client connection is kept open between requests (nginx
    /// `keepalive_timeout`). Default: 75s.
    pub keepalive_timeout: Duration,
    /// Longest wait between two reads of a request body (nginx `client_body_timeout`).
    /// Default: 60s.
    pub body_timeout: Duration,
    /// Longest wait for a client to take more of a response (nginx `send_timeout`); past it
    /// the connection is closed, and with it the upstream connection. Default: 60s.
    pub send_timeout: Duration,
    /// Longest request target (path and query), in bytes; longer gets 414. Default: 8 KiB.
    pub max_uri_length: usize,
    /// Longest single header field (name and value), in bytes. Default: 8 KiB.
    pub max_header_field_size: usize,
    /// All header fields of a request together, in bytes. Default: 32 KiB.
    pub max_header_size: usize,
    /// Most header fields in one request. Default: 100.
    pub max_header_count: usize,
    /// Client connections open at once, over all listeners. Default: 10,000.
    pub max_connections: usize,
    /// Client connections open at once from one client IP. Default: 256.
    pub max_connections_per_ip: usize,
    /// Request body bytes kept in memory before the rest spills to a temporary file.
    /// Default: 16 KiB.
    pub body_buffer_memory: usize,
    /// The most of a request body buffered before the upstream is contacted (routes with
    /// `request_buffering`). Default: 1 MiB.
    pub body_buffer_max: usize,
    /// Collapse `//` in request paths to `/` before routing, as nginx does. Default: true.
    pub merge_slashes: bool,
}

// === impl HttpLimits ===

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(75),
            body_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_uri_length: 8 << 10,
            max_header_field_size: 8 << 10,
            max_header_size: 32 << 10,
            max_header_count: 100,
            max_connections: 10_000,
            max_connections_per_ip: 256,
            body_buffer_memory: 16 << 10,
            body_buffer_max: 1 << 20,
            merge_slashes: true,
        }
    }
}

/// Validates `[http]`; every key has a default, so the section may be absent.
pub(super) fn http(raw: &RawHttp, sink: &mut ErrorSink<'_>) -> HttpLimits {
    let defaults = HttpLimits::default();
    let errors_before = sink.len();
    let scope = Scope::new("http.");
    // Below a second a slow mobile client cannot get one request through: such a timeout
    // only cuts off honest clients, and zero would close every connection at once.
    let seconds = Limits::at_least(Duration::from_secs(1));
    let mut duration = |key: &str, raw: &Option<Spanned<String>>, default| {
        scope.duration(key, raw.as_ref(), default, seconds, sink)
    };
    let header_timeout = duration(
        "header_timeout",
        &raw.header_timeout,
        defaults.header_timeout,
    );
    let keepalive_timeout = duration(
        "keepalive_timeout",
        &raw.keepalive_timeout,
        defaults.keepalive_timeout,
    );
    let body_timeout = duration("body_timeout", &raw.body_timeout, defaults.body_timeout);
    let send_timeout = duration("send_timeout", &raw.send_timeout, defaults.send_timeout);

    let mut size = |key: &str, raw: &Option<Spanned<String>>, default: usize, min: u64| {
        let limits = Limits::at_least(min);
        let bytes = scope.size(key, raw.as_ref(), default as u64, limits, sink);
        // Only a 32-bit build could see a size beyond usize; there it means "no limit".
        usize::try_from(bytes).unwrap_or(usize::MAX)
    };
    // Under 256 bytes a request line or a header such as a cookie or a bearer token of
    // ordinary length no longer fits; such a limit breaks clients instead of bounding memory.
    let max_uri_length = size(
        "max_uri_length",
        &raw.max_uri_length,
        defaults.max_uri_length,
        256,
    );
    let max_header_field_size = size(
        "max_header_field_size",
        &raw.max_header_field_size,
        defaults.max_header_field_size,
        256,
    );
    let max_header_size = size(
        "max_header_size",
        &raw.max_header_size,
        defaults.max_header_size,
        1 << 10,
    );
    let body_buffer_memory = size(
        "body_buffer_memory",
        &raw.body_buffer_memory,
        defaults.body_buffer_memory,
        1 << 10,
    );
    let body_buffer_max = size(
        "body_buffer_max",
        &raw.body_buffer_max,
        defaults.body_buffer_max,
        1 << 10,
    );

    // Zero would refuse every request (HTTP/1.1 requires a Host field) or every connection;
    // a limit is switched off by raising it, never by 0.
    let max_header_count = scope.integer(
        "max_header_count",
        raw.max_header_count.as_ref(),
        defaults.max_header_count,
        &[1..=1000],
        sink,
    );
    let max_connections = scope.integer(
        "max_connections",
        raw.max_connections.as_ref(),
        defaults.max_connections,
        &[1..=1_000_000],
        sink,
    );
    let max_connections_per_ip = scope.integer(
        "max_connections_per_ip",
        raw.max_connections_per_ip.as_ref(),
        defaults.max_connections_per_ip,
        &[1..=1_000_000],
        sink,
    );

    // A value that was wrong fell back to its default; comparing that would report a
    // problem the operator did not write.
    if sink.len() == errors_before {
        not_larger(
            (
                "max_header_field_size",
                max_header_field_size,
                &raw.max_header_field_size,
            ),
            ("max_header_size", max_header_size, &raw.max_header_size),
            "a single field could never be that large",
            sink,
        );
        not_larger(
            (
                "body_buffer_memory",
                body_buffer_memory,
                &raw.body_buffer_memory,
            ),
            ("body_buffer_max", body_buffer_max, &raw.body_buffer_max),
            "the part kept in memory counts toward body_buffer_max",
            sink,
        );
    }

    HttpLimits {
        header_timeout,
        keepalive_timeout,
        body_timeout,
        send_timeout,
        max_uri_length,
        max_header_field_size,
        max_header_size,
        max_header_count,
        max_connections,
        max_connections_per_ip,
        body_buffer_memory,
        body_buffer_max,
        merge_slashes: raw.merge_slashes.unwrap_or(defaults.merge_slashes),
    }
}

/// Reports `part` larger than the `whole` it belongs to, at the part's key when the file
/// sets it, else at the whole's.
fn not_larger(
    (part_key, part, part_raw): (&str, usize, &Option<Spanned<String>>),
    (whole_key, whole, whole_raw): (&str, usize, &Option<Spanned<String>>),
    why: &str,
    sink: &mut ErrorSink<'_>,
) {
    if part <= whole {
        return;
    }
    let Some(span) = part_raw.as_ref().or(whole_raw.as_ref()).map(Spanned::span) else {
        return;
    };
    let show = |bytes: usize| u64::try_from(bytes).unwrap_or(u64::MAX).show();
    sink.at(
        span,
        format!(
            "http.{part_key} ({}) is larger than http.{whole_key} ({}): {why}",
            show(part),
            show(whole)
        ),
    );
}
