//! How upstream failures are answered and when a request may be sent again.

use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};

/// What the client is told for a failure: 504 when the upstream was too slow, 502 when it
/// refused, reset or spoke nonsense; errors we raised carry their own status.
pub fn status_for(e: &Error) -> u16 {
    use ErrorType::*;
    match (e.etype(), e.esource()) {
        (HTTPStatus(code), _) => *code,
        (ConnectNoRoute, _) => 502,
        (ConnectTimedout | ReadTimedout | WriteTimedout, ErrorSource::Upstream) => 504,
        (_, ErrorSource::Upstream) => 502,
        (ReadError | WriteError | ConnectionClosed, ErrorSource::Downstream) => 0,
        (ReadTimedout, ErrorSource::Downstream) => 408,
        (_, ErrorSource::Downstream) => 400,
        _ => 500,
    }
}

/// The detail line of the error page for `status`.
pub fn detail_for(status: u16) -> &'static str {
    match status {
        504 => "the upstream server did not answer in time",
        502 => "the upstream server could not be reached or closed the connection",
        503 => "every server of this service is down",
        413 => "request body too large",
        _ => "the request could not be completed",
    }
}

/// Whether a request that failed after its connection was made may go to another server:
/// only GET, HEAD and OPTIONS (RFC 9110 §9.2.1 safe methods), only before any response
/// byte reached the client, and only if Pingora still holds the whole body to resend.
/// A POST that reached an upstream is never replayed: it may have had its effect.
pub fn may_replay(session: &Session) -> bool {
    let method = &session.req_header().method;
    let safe = method == http::Method::GET
        || method == http::Method::HEAD
        || method == http::Method::OPTIONS;
    safe && session.response_written().is_none() && !session.as_ref().retry_buffer_truncated()
}
