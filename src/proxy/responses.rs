//! Answers Headland writes itself (errors, redirects): short, plain, and carrying the request
//! id so a user can quote it to the operator.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

/// Writes a complete `text/plain` response.
pub async fn plain(
    session: &mut Session,
    status: u16,
    body: String,
    request_id: &HeaderValue,
    extra: &[(&'static str, &str)],
) -> Result<()> {
    let mut header = ResponseHeader::build(status, Some(4 + extra.len()))?;
    header.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    header.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    header.insert_header("x-request-id", request_id.clone())?;
    for (name, value) in extra {
        header.insert_header(*name, *value)?;
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(header), head_only)
        .await?;
    if !head_only {
        session
            .write_response_body(Some(Bytes::from(body)), true)
            .await?;
    }
    Ok(())
}

/// Writes `header` and `body` (only the header for HEAD).
pub async fn send(session: &mut Session, header: ResponseHeader, body: Bytes) -> Result<()> {
    let head_only = session.req_header().method == http::Method::HEAD || body.is_empty();
    session
        .write_response_header(Box::new(header), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// `"<code> <reason>: <detail>\n"`, the body of every error Headland generates.
pub fn error_body(status: u16, detail: &str) -> String {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    format!("{status} {reason}: {detail}\n")
}
