//! JSON access log: one line per request, written by a dedicated thread so that a slow disk
//! or pipe never stalls request handling. When the writer falls behind by more than
//! `QUEUE_LINES`, lines are dropped and counted rather than queued without bound.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, SystemTime};

use prometheus::IntCounter;
use serde::Serialize;

use crate::config::AccessLogOutput;

const QUEUE_LINES: usize = 16 * 1024;
/// How often queued lines are written out; the queue holds far more than this many lines
/// at any rate one node serves.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// What one log line says about one request.
#[derive(Debug, Serialize)]
pub struct AccessRecord<'a> {
    pub time: String,
    pub client_ip: Option<IpAddr>,
    pub host: &'a str,
    pub method: &'a str,
    /// Path as the client sent it, without the query string (which may carry secrets).
    pub path: &'a str,
    pub status: u16,
    /// Response body bytes sent to the client.
    pub bytes: usize,
    pub duration_ms: f64,
    pub route: Option<&'a str>,
    pub upstream: Option<&'a str>,
    pub server: Option<&'a str>,
    pub request_id: &'a str,
}

#[derive(Debug)]
pub struct AccessLog {
    sender: Option<SyncSender<Entry>>,
    /// `headland_access_log_dropped_total`.
    dropped: IntCounter,
}

/// What the writer thread is sent: a line, or a request to write out everything before it.
#[derive(Debug)]
enum Entry {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

// === impl AccessLog ===

impl AccessLog {
    /// Opens `output` and starts the writer thread.
    pub fn start(output: &AccessLogOutput, dropped: IntCounter) -> io::Result<Self> {
        let writer: Box<dyn Write + Send> = match output {
            AccessLogOutput::Off => {
                return Ok(Self {
                    sender: None,
                    dropped,
                })
            }
            AccessLogOutput::Stdout => Box::new(io::stdout()),
            AccessLogOutput::File(path) => {
                Box::new(OpenOptions::new().create(true).append(true).open(path)?)
            }
        };
        let (sender, receiver) = mpsc::sync_channel(QUEUE_LINES);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(receiver, writer))?;
        Ok(Self {
            sender: Some(sender),
            dropped,
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.sender.is_some()
    }

    /// Queues one line: an `AccessRecord`, or a stream's `StreamRecord`.
    pub fn write(&self, record: &impl Serialize) {
        let Some(sender) = &self.sender else { return };
        let mut line = Vec::with_capacity(256);
        if serde_json::to_writer(&mut line, record).is_err() {
            return;
        }
        line.push(b'\n');
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            sender.try_send(Entry::Line(line))
        {
            self.dropped.inc();
        }
    }

    /// Writes out every line queued so far, waiting at most `limit` (before the process exits).
    pub fn flush(&self, limit: Duration) {
        let Some(sender) = &self.sender else { return };
        let (done, written) = mpsc::sync_channel(1);
        if sender.send(Entry::Flush(done)).is_ok() {
            let _ = written.recv_timeout(limit);
        }
    }
}

/// RFC 3339 UTC time with milliseconds, the format log pipelines parse without configuration.
pub fn timestamp(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1_000.0
}

/// Writes what has queued up every `FLUSH_EVERY`, in one write. The writer never blocks
/// waiting for a line: a blocked receiver would make every request wake it (a futex call and
/// a context switch per line), which cost a quarter of the throughput with logging on
/// (benches/compare/http.sh). Lines appear at most `FLUSH_EVERY` late.
fn write_lines(receiver: Receiver<Entry>, writer: Box<dyn Write + Send>) {
    let mut out = BufWriter::with_capacity(64 * 1024, writer);
    loop {
        std::thread::sleep(FLUSH_EVERY);
        let mut ok = true;
        let mut flushed = Vec::new();
        let finished = loop {
            match receiver.try_recv() {
                Ok(Entry::Line(line)) => ok &= out.write_all(&line).is_ok(),
                Ok(Entry::Flush(done)) => flushed.push(done),
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        if !(ok && out.flush().is_ok()) {
            tracing::warn!("access log write failed");
        }
        for done in flushed {
            let _ = done.send(());
        }
        if finished {
            return;
        }
    }
}
