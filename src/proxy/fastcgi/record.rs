//! The FastCGI record layer (FastCGI 1.0 specification §3, §5): what a Responder request
//! puts on the wire, and the records that come back.
//!
//! One request per connection (`FCGI_KEEP_CONN` off), so the server closes the connection
//! when it is done and request id 1 is the only one in use.

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// `FCGI_VERSION_1`.
const VERSION: u8 = 1;
/// The one request on each connection.
const REQUEST_ID: u16 = 1;
/// `FCGI_RESPONDER` (§6.2).
const ROLE_RESPONDER: u16 = 1;
/// The largest record content (`contentLength` is 16 bits).
const MAX_CONTENT: usize = 0xffff;

/// Record types (§8).
pub(super) const BEGIN_REQUEST: u8 = 1;
pub(super) const END_REQUEST: u8 = 3;
pub(super) const PARAMS: u8 = 4;
pub(super) const STDIN: u8 = 5;
pub(super) const STDOUT: u8 = 6;
pub(super) const STDERR: u8 = 7;

/// One record read from the server.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Record {
    pub kind: u8,
    pub content: Bytes,
}

/// Appends the 8-byte record header (§3.3).
fn put_header(out: &mut BytesMut, kind: u8, content_len: usize) {
    out.put_u8(VERSION);
    out.put_u8(kind);
    out.put_u16(REQUEST_ID);
    // Callers never pass more than MAX_CONTENT.
    out.put_u16(u16::try_from(content_len).unwrap_or(u16::MAX));
    out.put_u8(0); // no padding
    out.put_u8(0);
}

/// Appends `data` as records of `kind`, split at the 64 KiB record limit. Empty data
/// appends nothing: the empty record that ends a stream is `end_stream`.
pub(super) fn put_stream(out: &mut BytesMut, kind: u8, data: &[u8]) {
    for chunk in data.chunks(MAX_CONTENT) {
        put_header(out, kind, chunk.len());
        out.put_slice(chunk);
    }
}

/// Appends the empty record that closes the `PARAMS` or `STDIN` stream (§3.3).
pub(super) fn end_stream(out: &mut BytesMut, kind: u8) {
    put_header(out, kind, 0);
}

/// The start of a request: `FCGI_BEGIN_REQUEST` as a Responder, then the parameters as
/// name-value pairs (§3.4), then the end of the `PARAMS` stream.
pub(super) fn request_head<'a>(params: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> BytesMut {
    let mut out = BytesMut::with_capacity(1024);
    put_header(&mut out, BEGIN_REQUEST, 8);
    out.put_u16(ROLE_RESPONDER);
    out.put_u8(0); // flags: the server closes the connection after the request
    out.put_slice(&[0; 5]);
    let mut pairs = BytesMut::with_capacity(1024);
    for (name, value) in params {
        put_length(&mut pairs, name.len());
        put_length(&mut pairs, value.len());
        pairs.put_slice(name);
        pairs.put_slice(value);
    }
    put_stream(&mut out, PARAMS, &pairs);
    end_stream(&mut out, PARAMS);
    out
}

/// A name-value pair length: one byte below 128, else four with the top bit set (§3.4).
fn put_length(out: &mut BytesMut, len: usize) {
    match u8::try_from(len) {
        Ok(short) if short < 0x80 => out.put_u8(short),
        // Parameter lengths come from request headers, far below 2^31.
        _ => out.put_u32(u32::try_from(len).unwrap_or(u32::MAX >> 1) | 0x8000_0000),
    }
}

/// Reads the next record; `Ok(None)` when the server closed the connection between records.
pub(super) async fn read<R: AsyncRead + Unpin>(reader: &mut R) -> std::io::Result<Option<Record>> {
    let mut header = [0u8; 8];
    match reader.read_exact(&mut header[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    reader.read_exact(&mut header[1..]).await?;
    if header[0] != VERSION {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("FastCGI record version {} (expected 1)", header[0]),
        ));
    }
    let content_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    let padding = usize::from(header[6]);
    let mut content = BytesMut::zeroed(content_len + padding);
    reader.read_exact(&mut content).await?;
    content.truncate(content_len);
    Ok(Some(Record {
        kind: header[1],
        content: content.freeze(),
    }))
}

/// `protocolStatus` of an `FCGI_END_REQUEST` body (§5.5): 0 is `FCGI_REQUEST_COMPLETE`.
pub(super) fn protocol_status(end_request: &[u8]) -> Option<u8> {
    end_request.get(4).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_head_is_begin_then_params_then_their_end() {
        let head = request_head([(&b"SCRIPT_NAME"[..], &b"/index.php"[..])]);
        let expected: &[u8] = &[
            1, 1, 0, 1, 0, 8, 0, 0, // BEGIN_REQUEST header, 8 bytes of content
            0, 1, 0, 0, 0, 0, 0, 0, // role Responder, flags 0, reserved
            1, 4, 0, 1, 0, 23, 0, 0, // PARAMS header: 2 + 11 + 10 bytes
            11, 10, // lengths
        ];
        assert_eq!(&head[..expected.len()], expected);
        assert_eq!(
            &head[expected.len()..expected.len() + 21],
            b"SCRIPT_NAME/index.php"
        );
        assert_eq!(&head[expected.len() + 21..], &[1, 4, 0, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn long_lengths_take_four_bytes() {
        let mut out = BytesMut::new();
        put_length(&mut out, 127);
        put_length(&mut out, 128);
        put_length(&mut out, 70_000);
        assert_eq!(
            &out[..],
            &[127, 0x80, 0, 0, 128, 0x80, 0x01, 0x11, 0x70][..]
        );
    }

    #[test]
    fn streams_split_at_the_record_limit() {
        let data = vec![7u8; MAX_CONTENT + 10];
        let mut out = BytesMut::new();
        put_stream(&mut out, STDIN, &data);
        assert_eq!(out.len(), 8 + MAX_CONTENT + 8 + 10);
        assert_eq!(&out[..8], &[1, STDIN, 0, 1, 0xff, 0xff, 0, 0]);
        let second = 8 + MAX_CONTENT;
        assert_eq!(&out[second..second + 8], &[1, STDIN, 0, 1, 0, 10, 0, 0]);
        let mut empty = BytesMut::new();
        put_stream(&mut empty, STDIN, &[]);
        assert!(empty.is_empty());
    }

    #[tokio::test]
    async fn reads_records_skipping_padding() {
        let wire: &[u8] = &[
            1,
            STDOUT,
            0,
            1,
            0,
            3,
            5,
            0,
            b'a',
            b'b',
            b'c',
            0,
            0,
            0,
            0,
            0, // 5 bytes padding
            1,
            END_REQUEST,
            0,
            1,
            0,
            8,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        let mut reader = wire;
        let first = read(&mut reader).await.unwrap().unwrap();
        assert_eq!(first.kind, STDOUT);
        assert_eq!(&first.content[..], b"abc");
        let end = read(&mut reader).await.unwrap().unwrap();
        assert_eq!(end.kind, END_REQUEST);
        assert_eq!(protocol_status(&end.content), Some(0));
        assert_eq!(read(&mut reader).await.unwrap(), None);
    }

    #[tokio::test]
    async fn refuses_other_versions_and_truncation() {
        let mut wrong: &[u8] = &[2, STDOUT, 0, 1, 0, 0, 0, 0];
        assert!(read(&mut wrong).await.is_err());
        let mut cut: &[u8] = &[1, STDOUT, 0, 1, 0, 9, 0, 0, b'x'];
        assert!(read(&mut cut).await.is_err());
    }
}
