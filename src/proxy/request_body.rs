//! Request bodies read whole before an upstream connection is taken (nginx's
//! `proxy_request_buffering on`): 1,000 clients sending their bodies a byte at a time then
//! hold 1,000 client connections, not 1,000 upstream connections; an app that accepts 64
//! connections keeps serving everyone else.
//!
//! The first `body_buffer_memory` bytes stay in memory, the rest go to an unlinked temporary
//! file under `state_dir`, up to `body_buffer_max`; a longer body has that much read first
//! and then streams (uploads are better off with `request_buffering = false` on their
//! route). When the request goes upstream the kept bytes are handed to Pingora in one piece
//! (`ProxyHttp::request_body_filter`), the file read back first; so a buffered body costs its
//! size in memory only while it is being sent.

use std::path::Path;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::config::HttpLimits;

/// A request body, or its first part, read before the upstream was chosen.
#[derive(Debug)]
pub struct BufferedBody {
    /// The kept bytes, read back from the file if there was one.
    bytes: Bytes,
    /// The body went to a file (for the metric).
    pub spilled: bool,
}

/// Why a body could not be buffered; each maps to the status the client gets.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("the client sent no body bytes for {0:?}")]
    TimedOut(Duration),
    #[error("request body too large")]
    TooLarge,
    #[error("the client closed the connection or sent a malformed body: {0}")]
    Client(#[source] Box<pingora::Error>),
    #[error("cannot keep the body in a temporary file: {0}")]
    File(#[source] std::io::Error),
}

// === impl BufferedBody ===

impl BufferedBody {
    /// Reads the body of `session` under `limits`. `max_body` is the route's limit.
    pub async fn read(
        session: &mut Session,
        limits: &HttpLimits,
        max_body: Option<u64>,
        spill_dir: &Path,
    ) -> Result<Self, BufferError> {
        let mut memory = BytesMut::new();
        let mut file: Option<File> = None;
        let mut total: usize = 0;
        // Past `body_buffer_max` the loop stops and Pingora streams the rest after these bytes.
        loop {
            if total >= limits.body_buffer_max {
                break;
            }
            // Pingora's own read timeout (set to the same `body_timeout`) usually fires first.
            let chunk = tokio::time::timeout(limits.body_timeout, session.read_request_body())
                .await
                .map_err(|_| BufferError::TimedOut(limits.body_timeout))?
                .map_err(|error| match error.etype() {
                    pingora::ErrorType::ReadTimedout => BufferError::TimedOut(limits.body_timeout),
                    _ => BufferError::Client(error),
                })?;
            let Some(chunk) = chunk else {
                break;
            };
            total += chunk.len();
            if max_body.is_some_and(|max| total as u64 > max) {
                return Err(BufferError::TooLarge);
            }
            match &mut file {
                Some(file) => file.write_all(&chunk).await.map_err(BufferError::File)?,
                None if memory.len() + chunk.len() <= limits.body_buffer_memory => {
                    memory.extend_from_slice(&chunk);
                }
                None => {
                    let mut spill = spill_file(spill_dir).await.map_err(BufferError::File)?;
                    spill.write_all(&memory).await.map_err(BufferError::File)?;
                    spill.write_all(&chunk).await.map_err(BufferError::File)?;
                    memory = BytesMut::new();
                    file = Some(spill);
                }
            }
        }
        let spilled = file.is_some();
        let bytes = match file {
            Some(mut file) => read_back(&mut file, total)
                .await
                .map_err(BufferError::File)?,
            None => memory.freeze(),
        };
        Ok(Self { bytes, spilled })
    }

    /// The kept bytes, put in front of `chunk` (the first chunk Pingora read after them,
    /// if any). Called once per upstream attempt, so a retry sends the same body again.
    pub fn prepend_to(&self, chunk: Option<Bytes>) -> Bytes {
        match chunk {
            Some(chunk) if !chunk.is_empty() => {
                let mut joined = BytesMut::with_capacity(self.bytes.len() + chunk.len());
                joined.extend_from_slice(&self.bytes);
                joined.extend_from_slice(&chunk);
                joined.freeze()
            }
            _ => self.bytes.clone(),
        }
    }

    /// How many bytes were kept.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }
}

/// A new temporary file in `dir`, unlinked at once so that nothing is left behind whatever
/// happens to the request or the process.
async fn spill_file(dir: &Path) -> std::io::Result<File> {
    tokio::fs::create_dir_all(dir).await?;
    let name = dir.join(format!("body-{:016x}", rand::random::<u64>()));
    let file = tokio::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&name)
        .await?;
    tokio::fs::remove_file(&name).await?;
    Ok(file)
}

async fn read_back(file: &mut File, len: usize) -> std::io::Result<Bytes> {
    file.flush().await?;
    file.seek(std::io::SeekFrom::Start(0)).await?;
    let mut bytes = Vec::with_capacity(len);
    file.read_to_end(&mut bytes).await?;
    Ok(Bytes::from(bytes))
}
