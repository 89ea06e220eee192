//! `fastcgi` routes: PHP scripts under a root run by a FastCGI server (PHP-FPM) over TCP or
//! a Unix socket, other files under the root served as a static site.
//!
//! One connection per request. The request body's first `http.body_buffer_memory` bytes are
//! read before the server is contacted, so a slow small form post does not hold a PHP
//! worker; a longer body streams after them. A chunked body is read whole first (bounded
//! by the route's `max_body_size`), since PHP needs `CONTENT_LENGTH`. The script's output
//! streams to the client as it comes. The server unreachable is a 502; no connection or no
//! output within `timeout` is a 504.

mod params;
mod record;
mod response;
mod script;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::route_table::Route;
use super::{static_site, RequestCtx};
use crate::config::{FastCgiServer, FastCgiSite};
use script::{Script, Target};

/// A connection to the FastCGI server, over TCP or a Unix socket.
trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

/// What went wrong before the script's response began; each is one status for the client.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("the FastCGI server is unreachable: {0}")]
    Unreachable(std::io::Error),
    #[error("the FastCGI server did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("the FastCGI server broke the protocol: {0}")]
    Protocol(String),
    #[error("the request body was not sent in time")]
    BodyTimedOut,
    #[error("request body too large")]
    BodyTooLarge,
    #[error("the client went away: {0}")]
    Client(Box<pingora::Error>),
}

/// The request body as far as it was read before the server was contacted.
struct BodyStart {
    bytes: Bytes,
    /// The whole body is in `bytes`.
    complete: bool,
    /// The body's full length.
    length: u64,
}

/// Answers a request on a `fastcgi` route. `path` is the normalised request path.
pub(super) async fn serve(
    session: &mut Session,
    ctx: &RequestCtx,
    route: &Route,
    site: &FastCgiSite,
    path: &str,
) -> Result<()> {
    let request_id = &ctx.request_id;
    match script::resolve(site, path).await {
        Target::Script(script) => run(session, ctx, route, site, &script).await,
        Target::File(file) => static_site::send_file(session, request_id, &site.root, &file).await,
        Target::AddSlash => static_site::redirect_to_directory(session, request_id).await,
        Target::Forbidden => {
            static_site::error(session, request_id, 403, "directory listing is not allowed").await
        }
        Target::Missing => {
            static_site::error(session, request_id, 404, "no such script or file").await
        }
    }
}

async fn run(
    session: &mut Session,
    ctx: &RequestCtx,
    route: &Route,
    site: &FastCgiSite,
    script: &Script,
) -> Result<()> {
    let outcome = async {
        let body = read_body_start(session, ctx, route).await?;
        let origin = params::Origin {
            root: &site.root,
            client_ip: ctx.client_ip,
            client_port: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.port()),
            server: session.server_addr().and_then(|a| a.as_inet()).copied(),
            host: &ctx.host,
            https: ctx.https,
            content_length: body.length,
        };
        let params = params::build(session.req_header(), script, &origin);
        let connection = match tokio::time::timeout(site.timeout, connect(&site.server)).await {
            Err(_) => return Err(Failure::TimedOut(site.timeout)),
            Ok(connection) => connection.map_err(Failure::Unreachable)?,
        };
        exchange(session, ctx, route, site, connection, &params, body).await
    }
    .await;
    let (status, detail) = match outcome {
        Ok(()) => return Ok(()),
        Err(Failure::Client(mut error)) => {
            error.as_down();
            return Err(error);
        }
        Err(Failure::BodyTooLarge) => (413, "request body too large".to_owned()),
        Err(Failure::BodyTimedOut) => (408, "the request body was not sent in time".to_owned()),
        Err(failure @ Failure::TimedOut(_)) => (504, failure.to_string()),
        Err(failure) => (502, failure.to_string()),
    };
    if status >= 500 {
        tracing::warn!(route = %route.name, script = %script.name, "fastcgi: {detail}");
    } else {
        // Part of the body may be unread: this connection cannot carry another request.
        session.set_keepalive(None);
    }
    static_site::error(session, &ctx.request_id, status, &detail).await
}

async fn connect(server: &FastCgiServer) -> std::io::Result<Box<dyn Connection>> {
    Ok(match server {
        FastCgiServer::Tcp(addr) => {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Box::new(stream)
        }
        FastCgiServer::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
    })
}

/// Reads the body up to `http.body_buffer_memory` (all of it when it is chunked), within
/// the route's `max_body_size`.
async fn read_body_start(
    session: &mut Session,
    ctx: &RequestCtx,
    route: &Route,
) -> Result<BodyStart, Failure> {
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let max = route.max_body_size.unwrap_or(u64::MAX);
    if declared.is_some_and(|len| len > max) {
        return Err(Failure::BodyTooLarge);
    }
    if session.is_body_empty() {
        return Ok(BodyStart {
            bytes: Bytes::new(),
            complete: true,
            length: 0,
        });
    }
    // The client may wait for "100 Continue" (RFC 9110 §10.1.1) before it sends the body.
    let expects_continue = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        session
            .write_continue_response()
            .await
            .map_err(Failure::Client)?;
    }
    let limits = &ctx.snapshot.config.http;
    let keep = match declared {
        Some(len) => usize::try_from(len).map_or(limits.body_buffer_memory, |len| {
            len.min(limits.body_buffer_memory)
        }),
        None => usize::MAX,
    };
    let mut bytes = BytesMut::new();
    let mut complete = false;
    while bytes.len() < keep {
        match read_chunk(session, limits.body_timeout).await? {
            Some(chunk) => bytes.extend_from_slice(&chunk),
            None => {
                complete = true;
                break;
            }
        }
        if bytes.len() as u64 > max {
            return Err(Failure::BodyTooLarge);
        }
    }
    let length = match declared {
        Some(len) => len,
        None => bytes.len() as u64,
    };
    let complete = complete || bytes.len() as u64 >= length;
    Ok(BodyStart {
        bytes: bytes.freeze(),
        complete,
        length,
    })
}

async fn read_chunk(session: &mut Session, limit: Duration) -> Result<Option<Bytes>, Failure> {
    match tokio::time::timeout(limit, session.read_request_body()).await {
        Err(_) => Err(Failure::BodyTimedOut),
        Ok(Err(error)) if error.etype() == &pingora::ErrorType::ReadTimedout => {
            Err(Failure::BodyTimedOut)
        }
        Ok(Err(error)) => Err(Failure::Client(error)),
        Ok(Ok(chunk)) => Ok(chunk),
    }
}

/// Sends the request and streams the response back.
async fn exchange(
    session: &mut Session,
    ctx: &RequestCtx,
    route: &Route,
    site: &FastCgiSite,
    connection: Box<dyn Connection>,
    params: &[(Vec<u8>, Vec<u8>)],
    body: BodyStart,
) -> Result<(), Failure> {
    let (reader, mut writer) = tokio::io::split(connection);
    let mut reader = BufReader::with_capacity(64 << 10, reader);
    let mut out = record::request_head(params.iter().map(|(n, v)| (&n[..], &v[..])));
    record::put_stream(&mut out, record::STDIN, &body.bytes);
    let mut sent = body.bytes.len() as u64;
    if !body.complete {
        send(&mut writer, &out, site.timeout).await?;
        out.clear();
        let limits = &ctx.snapshot.config.http;
        while let Some(chunk) = read_chunk(session, limits.body_timeout).await? {
            sent += chunk.len() as u64;
            if sent > body.length {
                return Err(Failure::Client(pingora::Error::explain(
                    pingora::ErrorType::InvalidHTTPHeader,
                    "the body is longer than its Content-Length",
                )));
            }
            record::put_stream(&mut out, record::STDIN, &chunk);
            send(&mut writer, &out, site.timeout).await?;
            out.clear();
        }
    }
    record::end_stream(&mut out, record::STDIN);
    send(&mut writer, &out, site.timeout).await?;

    let mut head = BytesMut::new();
    loop {
        let next = tokio::time::timeout(site.timeout, record::read(&mut reader)).await;
        let record = match next {
            Err(_) => return Err(Failure::TimedOut(site.timeout)),
            Ok(Err(error)) => return Err(Failure::Protocol(error.to_string())),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(record))) => record,
        };
        match record.kind {
            record::STDOUT => {
                head.extend_from_slice(&record.content);
                if let Some((end, body_start)) = response::head_end(&head) {
                    let parsed = response::parse(&head[..end])
                        .map_err(|e| Failure::Protocol(e.to_string()))?;
                    let rest = head.split_off(body_start).freeze();
                    return stream_response(session, ctx, site, &mut reader, parsed, rest).await;
                }
                if head.len() > response::MAX_HEAD {
                    return Err(Failure::Protocol("response head too long".into()));
                }
            }
            record::STDERR => log_stderr(route, &record.content),
            record::END_REQUEST => break,
            _ => {}
        }
    }
    Err(Failure::Protocol(
        "the connection ended before a response head".into(),
    ))
}

async fn send<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
    limit: Duration,
) -> Result<(), Failure> {
    match tokio::time::timeout(limit, writer.write_all(bytes)).await {
        Err(_) => Err(Failure::TimedOut(limit)),
        Ok(Err(error)) => Err(Failure::Unreachable(error)),
        Ok(Ok(())) => Ok(()),
    }
}

/// Writes the response head, then the body as `STDOUT` records arrive. Once the head is
/// out, a failure can only cut the response short.
async fn stream_response<R: AsyncRead + Unpin>(
    session: &mut Session,
    ctx: &RequestCtx,
    site: &FastCgiSite,
    reader: &mut R,
    head: response::CgiHead,
    first: Bytes,
) -> Result<(), Failure> {
    let header =
        response_header(session, ctx, &head).map_err(|e| Failure::Protocol(e.to_string()))?;
    let head_only = session.req_header().method == http::Method::HEAD;
    let no_body = head_only || matches!(head.status, 204 | 304);
    let cut = |error: Box<pingora::Error>| Failure::Client(error);
    session
        .write_response_header(Box::new(header), no_body)
        .await
        .map_err(cut)?;
    if no_body {
        return Ok(());
    }
    if !first.is_empty() {
        session
            .write_response_body(Some(first), false)
            .await
            .map_err(cut)?;
    }
    loop {
        let next = tokio::time::timeout(site.timeout, record::read(reader)).await;
        let record = match next {
            Ok(Ok(Some(record))) => record,
            Ok(Ok(None)) => break,
            Err(_) | Ok(Err(_)) => {
                return Err(Failure::Client(pingora::Error::explain(
                    pingora::ErrorType::ReadError,
                    "the FastCGI server stopped in the middle of a response",
                )))
            }
        };
        match record.kind {
            record::STDOUT if !record.content.is_empty() => session
                .write_response_body(Some(record.content), false)
                .await
                .map_err(cut)?,
            record::END_REQUEST => {
                if record::protocol_status(&record.content).is_some_and(|s| s != 0) {
                    tracing::warn!("fastcgi: the server refused the request");
                }
                break;
            }
            _ => {}
        }
    }
    session.write_response_body(None, true).await.map_err(cut)
}

fn response_header(
    session: &Session,
    ctx: &RequestCtx,
    head: &response::CgiHead,
) -> Result<ResponseHeader> {
    let mut header = ResponseHeader::build(head.status, Some(head.headers.len() + 2))?;
    for (name, value) in &head.headers {
        header.append_header(name.clone(), value.clone())?;
    }
    header.insert_header("x-request-id", ctx.request_id.clone())?;
    // Without a length, HTTP/1.1 would otherwise be close-delimited (HTTP/2 frames itself).
    let framed = header.headers.contains_key(http::header::CONTENT_LENGTH);
    if !framed && session.req_header().version == http::Version::HTTP_11 {
        header.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    Ok(header)
}

/// What PHP writes on stderr (warnings, "Primary script unknown") goes to the log, as nginx
/// logs "FastCGI sent in stderr".
fn log_stderr(route: &Route, content: &[u8]) {
    let text = String::from_utf8_lossy(&content[..content.len().min(2048)]);
    tracing::warn!(route = %route.name, "fastcgi stderr: {}", text.trim_end());
}
