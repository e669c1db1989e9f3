//! One shell session's recording: asciicast v2, gzip-compressed, written while the session runs.
//!
//! File: `<data>/recordings/<session id>.cast.gz` (0600, in a 0700 directory). Its text is
//! asciicast v2: a JSON header line (`version` 2, `width`, `height`, `timestamp`, `command`,
//! `title`, `env.TERM`), then one JSON array per event: `[t, "o", text]` for output, `[t, "i", text]`
//! for input (only when input recording is on), `[t, "r", "COLSxROWS"]` for a resize, `t` in seconds
//! since the start.
//!
//! **Exact bytes.** asciicast holds text, while a terminal may be sent any bytes. Output that is
//! valid UTF-8 is stored as it is. A multi-byte character split between two chunks is held back
//! (at most 3 bytes) and joined to the next chunk, so a split never looks invalid. Bytes that are
//! not UTF-8 are stored twice: an `"o"` (or `"i"`) event with their lossy decoding, which any
//! asciicast player shows, directly followed by a `[t, "b", base64]` event with the exact bytes,
//! which other players skip (an unknown event code) and our reader puts in place of the lossy text.
//! Concatenating the output events a [`CastReader`] returns therefore gives back exactly the bytes
//! the client was sent.
//!
//! **Written as it goes.** Events queue to a writer task (bounded: a session whose disk cannot
//! keep up is slowed, never recorded with holes) that compresses them off the runtime and does a
//! gzip sync flush at most [`FLUSH_INTERVAL`] after new data: a hub killed at any moment leaves a
//! file readable up to its last flush (its reader reports it `truncated`).
//!
//! **Off the keystroke's path.** Queueing an event is a push under a lock; the writer is woken
//! only for the first event after it went idle, when a batch has gathered, or to finish. While it
//! has data waiting for its flush it takes whatever queued since at the flush. So a relayed echo
//! costs no task wake-up here, which on the multi-thread runtime used to wake a second worker
//! thread per chunk (shell keystroke bench in docs/benchmarks.md).

use base64::Engine as _;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flotilla_wire::Chunk;
use flotilla_wire::sessions::{CastData, CastEvent, CastHeader};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Longest a recorded event waits in memory before it is flushed to the file: what a hub killed
/// mid-session can lose. One second keeps flushes rare during a burst (each sync flush costs a
/// few bytes and resets nothing else) and the loss smaller than a human notices.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Encoded event text gathered before it is handed to the compressor in one blocking call: large
/// enough that a burst of output costs few thread hops, small enough to bound memory per session.
const WRITE_BATCH: usize = 64 * 1024;

/// Events queued to the writer. A session's relay waits when it is full: a disk that cannot keep
/// up slows the session instead of growing memory or dropping output from the recording.
const QUEUE_DEPTH: usize = 64;

/// Queued events at which the writer is woken before its flush is due: half the queue, so that a
/// burst keeps the writer busy instead of the relay waiting for room.
const WAKE_AT_EVENTS: usize = QUEUE_DEPTH / 2;

/// Longest header or event line the reader accepts: an output event holds at most one relayed
/// chunk (64 KiB) escaped as JSON (at most 6 bytes per input byte) or base64, with headroom.
const MAX_LINE: usize = 1024 * 1024;

/// File name suffix of a recording.
pub const RECORDING_SUFFIX: &str = ".cast.gz";

/// Event code of the exact bytes of the event before it (not part of asciicast v2; players skip it).
const EXACT_BYTES_CODE: &str = "b";

/// Errors of writing or reading a recording. Each names the file.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RecordingError {
    /// The session id cannot name a file (only letters, digits, `-` and `_` may).
    #[error("session id {id:?} cannot name a recording file")]
    BadId {
        /// The id given.
        id: String,
    },
    /// The recordings directory could not be made (or made private).
    #[error("cannot create recordings directory {}: {reason}", path.display())]
    Directory {
        /// The directory.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The recording file could not be created.
    #[error("cannot create recording {}: {source}", path.display())]
    Create {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Arc<io::Error>,
    },
    /// Writing or flushing the recording failed; the session cannot go on recorded.
    #[error("cannot write recording {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Arc<io::Error>,
    },
    /// The recording file could not be opened or read.
    #[error("cannot read recording {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Arc<io::Error>,
    },
    /// The file is not a recording this version can read.
    #[error("recording {} line {line}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line of the decompressed text.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The writer is gone without saying why (the runtime is shutting down).
    #[error("recording {} stopped", path.display())]
    Stopped {
        /// The file.
        path: PathBuf,
    },
}

/// What the header of a new recording says, and what it records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingMeta {
    /// Session id; the file is `<id>.cast.gz`.
    pub id: String,
    /// Start, ms since the epoch; event times are counted from it.
    pub started_ms: u64,
    /// Terminal columns at the start.
    pub cols: u16,
    /// Terminal rows at the start.
    pub rows: u16,
    /// Command line run, empty for the login shell.
    pub command: String,
    /// Title (`operator@agent`).
    pub title: String,
    /// The client's `TERM`.
    pub term: String,
    /// Whether [`Recording::input`] records anything (keystrokes may hold passwords).
    pub record_input: bool,
}

/// What a finished recording amounts to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingSummary {
    /// The file.
    pub path: PathBuf,
    /// Output bytes recorded (what the client was sent).
    pub output_bytes: u64,
    /// Input bytes recorded (0 unless input recording is on).
    pub input_bytes: u64,
    /// Events written (a non-UTF-8 chunk counts once).
    pub events: u64,
    /// Size of the compressed file, bytes.
    pub size: u64,
    /// Time from the start to the last event, ms.
    pub duration_ms: u64,
    /// Exit status given to [`Recording::finish`].
    pub exit: Option<i32>,
    /// Reason given to [`Recording::finish`].
    pub reason: String,
}

enum Op {
    Output(u64, Vec<u8>),
    Input(u64, Vec<u8>),
    Resize(u64, u16, u16),
    Finish(Option<i32>, String),
}

impl Op {
    fn bytes(&self) -> usize {
        match self {
            Self::Output(_, d) | Self::Input(_, d) => d.len(),
            Self::Resize(..) | Self::Finish(..) => 0,
        }
    }
}

/// The events between a session's relay and its writer task.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    /// Wakes the writer (it holds at most one permit, so no wake-up is lost).
    work: Notify,
    /// Wakes a relay waiting for room, once the writer took the queue or stopped.
    room: Notify,
}

#[derive(Default)]
struct QueueState {
    ops: VecDeque<Op>,
    /// Bytes of the queued events.
    bytes: usize,
    /// The writer has nothing waiting for a flush: the next event must wake it.
    idle: bool,
    /// The [`Recording`] is gone: nothing more will be queued.
    closed: bool,
    /// The writer stopped (finished or failed): nothing more is taken.
    stopped: bool,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        deploy::sync::lock(&self.state)
    }

    /// Everything queued, and whether the [`Recording`] is gone. With nothing queued, `idle`
    /// says whether the writer now waits for a first event (then the next one wakes it).
    fn take(&self, idle: bool) -> (VecDeque<Op>, bool) {
        let mut q = self.lock();
        let ops = std::mem::take(&mut q.ops);
        q.bytes = 0;
        q.idle = idle && ops.is_empty();
        let closed = q.closed;
        drop(q);
        if !ops.is_empty() {
            self.room.notify_waiters();
        }
        (ops, closed)
    }

    fn stop(&self) {
        self.lock().stopped = true;
        self.room.notify_waiters();
    }
}

/// Marks the queue stopped when the writer task ends, however it ends.
struct StopOnExit<'a>(&'a Queue);

impl Drop for StopOnExit<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Tells the writer that its [`Recording`] is gone, when dropped.
struct Closer(Arc<Queue>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.work.notify_one();
    }
}

/// A recording being written. Cloning is not offered: one session, one writer. Dropping it without
/// [`Recording::finish`] still closes the file properly (its writer sees the queue close).
pub struct Recording {
    queue: Closer,
    writer: JoinHandle<Result<RecordingSummary, RecordingError>>,
    failure: Arc<Mutex<Option<RecordingError>>>,
    failed: CancellationToken,
    path: PathBuf,
    record_input: bool,
}

impl Recording {
    /// Creates `<dir>/<id>.cast.gz` (0600; `dir` is made 0700 if missing), writes and flushes the
    /// header, and starts the writer task. Must be called within a tokio runtime.
    pub async fn create(dir: &Path, meta: RecordingMeta) -> Result<Self, RecordingError> {
        if meta.id.is_empty()
            || !meta
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(RecordingError::BadId { id: meta.id });
        }
        let path = dir.join(format!("{}{RECORDING_SUFFIX}", meta.id));
        let (dir, file_path, header) = (dir.to_path_buf(), path.clone(), header_line(&meta));
        let encoder = tokio::task::spawn_blocking(move || open_encoder(&dir, &file_path, &header))
            .await
            .map_err(|_| RecordingError::Stopped { path: path.clone() })??;
        let queue = Arc::new(Queue::default());
        let failure = Arc::new(Mutex::new(None));
        let failed = CancellationToken::new();
        let state = Writer {
            path: path.clone(),
            encoder: Some(encoder),
            pending: Vec::new(),
            output: Utf8Carry::default(),
            input: Utf8Carry::default(),
            started_ms: meta.started_ms,
            last_at: 0,
            output_bytes: 0,
            input_bytes: 0,
            events: 0,
        };
        let writer = tokio::spawn(state.run(queue.clone(), failure.clone(), failed.clone()));
        Ok(Self {
            queue: Closer(queue),
            writer,
            failure,
            failed,
            path,
            record_input: meta.record_input,
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records bytes sent to the client at `at_ms` (ms since the epoch). Waits while the writer's
    /// queue is full. Cancel-safe: if cancelled, the chunk was either queued whole or not at all.
    pub async fn output(&self, at_ms: u64, data: &[u8]) -> Result<(), RecordingError> {
        self.send(Op::Output(at_ms, data.to_vec())).await
    }

    /// Records bytes the client typed, when input recording is on; otherwise does nothing.
    /// Cancel-safe, as [`Recording::output`].
    pub async fn input(&self, at_ms: u64, data: &[u8]) -> Result<(), RecordingError> {
        if !self.record_input {
            return Ok(());
        }
        self.send(Op::Input(at_ms, data.to_vec())).await
    }

    /// Records the client's terminal changing size. Cancel-safe, as [`Recording::output`].
    pub async fn resize(&self, at_ms: u64, cols: u16, rows: u16) -> Result<(), RecordingError> {
        self.send(Op::Resize(at_ms, cols, rows)).await
    }

    /// Resolves once writing has failed (a full or vanished disk): the session should end, telling
    /// its client the error [`Recording::finish`] returns. Cancel-safe.
    pub async fn failed(&self) {
        self.failed.cancelled().await;
    }

    /// Writes what is queued, closes the gzip stream and returns the summary, or the first error
    /// writing met.
    pub async fn finish(
        self,
        exit: Option<i32>,
        reason: &str,
    ) -> Result<RecordingSummary, RecordingError> {
        let _ = self.send(Op::Finish(exit, reason.to_owned())).await;
        let Self {
            queue,
            writer,
            path,
            ..
        } = self;
        drop(queue);
        match writer.await {
            Ok(result) => result,
            Err(_) => Err(RecordingError::Stopped { path }),
        }
    }

    /// Queues `op`, waking the writer only when it must look now. Cancel-safe: only the wait for
    /// room is a suspension point, and `op` is not queued then.
    async fn send(&self, op: Op) -> Result<(), RecordingError> {
        let queue = &self.queue.0;
        loop {
            let room = queue.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut q = queue.lock();
                if q.stopped {
                    break;
                }
                if q.ops.len() < QUEUE_DEPTH {
                    q.bytes += op.bytes();
                    let finish = matches!(op, Op::Finish(..));
                    q.ops.push_back(op);
                    let wake = std::mem::take(&mut q.idle)
                        || finish
                        || q.ops.len() >= WAKE_AT_EVENTS
                        || q.bytes >= WRITE_BATCH;
                    drop(q);
                    if wake {
                        queue.work.notify_one();
                    }
                    return Ok(());
                }
            }
            queue.work.notify_one();
            room.await;
        }
        let stored = deploy::sync::lock(&self.failure).clone();
        Err(stored.unwrap_or_else(|| RecordingError::Stopped {
            path: self.path.clone(),
        }))
    }
}

/// Makes the directory and the file, and writes the flushed header.
fn open_encoder(dir: &Path, path: &Path, header: &str) -> Result<GzEncoder<File>, RecordingError> {
    flotilla_certs::create_private_dir(dir).map_err(|e| RecordingError::Directory {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let file = opts.open(path).map_err(|e| RecordingError::Create {
        path: path.to_path_buf(),
        source: Arc::new(e),
    })?;
    let mut encoder = GzEncoder::new(file, Compression::default());
    encoder
        .write_all(header.as_bytes())
        .and_then(|()| encoder.flush())
        .map_err(|e| RecordingError::Create {
            path: path.to_path_buf(),
            source: Arc::new(e),
        })?;
    Ok(encoder)
}

fn header_line(meta: &RecordingMeta) -> String {
    let header = serde_json::json!({
        "version": 2,
        "width": meta.cols,
        "height": meta.rows,
        "timestamp": meta.started_ms / 1000,
        "command": meta.command,
        "title": meta.title,
        "env": { "TERM": meta.term },
    });
    format!("{header}\n")
}

/// Holds back the start of a multi-byte UTF-8 character cut off at the end of a chunk.
#[derive(Default)]
struct Utf8Carry {
    held: Vec<u8>,
}

impl Utf8Carry {
    /// The bytes to record now: what was held, then `data`, less an incomplete character at its end.
    fn take(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.held);
        out.extend_from_slice(data);
        let keep = incomplete_tail(&out);
        self.held = out.split_off(out.len() - keep);
        out
    }

    /// Whatever is held, at the end of the session.
    fn rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }
}

/// Length of an incomplete UTF-8 character at the end of `buf` (0 to 3 bytes): a lead byte whose
/// continuation bytes have not all arrived.
fn incomplete_tail(buf: &[u8]) -> usize {
    for back in 1..=buf.len().min(3) {
        let b = buf[buf.len() - back];
        if b & 0xC0 == 0x80 {
            continue;
        }
        let needs = match b {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => 1,
        };
        return if needs > back { back } else { 0 };
    }
    0
}

/// The writer task's state.
struct Writer {
    path: PathBuf,
    /// `None` only while a blocking call holds it.
    encoder: Option<GzEncoder<File>>,
    /// Encoded lines not yet given to the compressor.
    pending: Vec<u8>,
    output: Utf8Carry,
    input: Utf8Carry,
    started_ms: u64,
    /// Time of the latest event, ms since the start.
    last_at: u64,
    output_bytes: u64,
    input_bytes: u64,
    events: u64,
}

impl Writer {
    async fn run(
        mut self,
        queue: Arc<Queue>,
        failure: Arc<Mutex<Option<RecordingError>>>,
        failed: CancellationToken,
    ) -> Result<RecordingSummary, RecordingError> {
        // However this task ends (a panic or an abort included), a relay waiting for room is
        // released and told.
        let _stop = StopOnExit(&queue);
        let result = self.serve(&queue).await;
        if let Err(e) = &result {
            tracing::warn!(path = %self.path.display(), error = %e, "recording failed");
            *deploy::sync::lock(&failure) = Some(e.clone());
            failed.cancel();
        }
        result
    }

    async fn serve(&mut self, queue: &Queue) -> Result<RecordingSummary, RecordingError> {
        // Set when data reaches the file's buffers and not yet its disk; cleared by a flush.
        let mut flush_at: Option<Instant> = None;
        let (exit, reason) = 'serve: loop {
            let (ops, closed) = queue.take(flush_at.is_none());
            let took = !ops.is_empty();
            for op in ops {
                match op {
                    Op::Output(at, data) => {
                        self.output_bytes += data.len() as u64;
                        let bytes = self.output.take(&data);
                        self.push_bytes(at, "o", &bytes);
                    }
                    Op::Input(at, data) => {
                        self.input_bytes += data.len() as u64;
                        let bytes = self.input.take(&data);
                        self.push_bytes(at, "i", &bytes);
                    }
                    Op::Resize(at, cols, rows) => {
                        let t = self.rel(at);
                        self.push_line(t, "r", &format!("{cols}x{rows}"));
                    }
                    Op::Finish(exit, reason) => break 'serve (exit, reason),
                }
            }
            if closed && !took {
                break (None, "recording dropped".to_owned());
            }
            if took && flush_at.is_none() {
                // Events queued from now on wait for this flush: none of them wakes the writer.
                flush_at = Some(Instant::now() + FLUSH_INTERVAL);
            }
            if flush_at.is_some_and(|at| at <= Instant::now()) {
                self.write_pending(true).await?;
                flush_at = None;
                continue;
            }
            if self.pending.len() >= WRITE_BATCH {
                self.write_pending(false).await?;
            }
            if took {
                // More may have queued meanwhile: look before sleeping.
                continue;
            }
            tokio::select! {
                () = queue.work.notified() => {}
                () = sleep_until_some(flush_at) => {}
            }
        };
        let at = self.started_ms + self.last_at;
        let (out, inp) = (self.output.rest(), self.input.rest());
        self.push_bytes(at, "o", &out);
        self.push_bytes(at, "i", &inp);
        self.write_pending(true).await?;
        let encoder = self.encoder.take().ok_or_else(|| RecordingError::Stopped {
            path: self.path.clone(),
        })?;
        let path = self.path.clone();
        let size = tokio::task::spawn_blocking(move || -> io::Result<u64> {
            let file = encoder.finish()?;
            file.sync_all()?;
            Ok(file.metadata()?.len())
        })
        .await
        .map_err(|_| RecordingError::Stopped { path: path.clone() })?
        .map_err(|e| RecordingError::Write {
            path: path.clone(),
            source: Arc::new(e),
        })?;
        Ok(RecordingSummary {
            path,
            output_bytes: self.output_bytes,
            input_bytes: self.input_bytes,
            events: self.events,
            size,
            duration_ms: self.last_at,
            exit,
            reason,
        })
    }

    /// Time of an event relative to the start; never earlier than the event before it.
    fn rel(&mut self, at_ms: u64) -> u64 {
        self.last_at = self.last_at.max(at_ms.saturating_sub(self.started_ms));
        self.last_at
    }

    fn push_bytes(&mut self, at_ms: u64, code: &str, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let t = self.rel(at_ms);
        match std::str::from_utf8(bytes) {
            Ok(text) => self.push_line(t, code, text),
            Err(_) => {
                self.push_line(t, code, &String::from_utf8_lossy(bytes));
                let exact = base64::engine::general_purpose::STANDARD.encode(bytes);
                self.push_raw_line(t, EXACT_BYTES_CODE, &exact);
            }
        }
        self.events += 1;
    }

    fn push_line(&mut self, t: u64, code: &str, text: &str) {
        if code == "r" {
            self.events += 1;
        }
        self.push_raw_line(t, code, text);
    }

    fn push_raw_line(&mut self, t: u64, code: &str, text: &str) {
        let text = serde_json::Value::String(text.to_owned());
        let line = format!("[{}.{:03}, \"{code}\", {text}]\n", t / 1000, t % 1000);
        self.pending.extend_from_slice(line.as_bytes());
    }

    /// Hands the pending text to the compressor off the runtime, and syncs the gzip stream to the
    /// file when `flush` is set.
    async fn write_pending(&mut self, flush: bool) -> Result<(), RecordingError> {
        if self.pending.is_empty() && !flush {
            return Ok(());
        }
        let mut encoder = self.encoder.take().ok_or_else(|| RecordingError::Stopped {
            path: self.path.clone(),
        })?;
        let mut text = std::mem::take(&mut self.pending);
        let (encoder, text, result) = tokio::task::spawn_blocking(move || {
            let mut result = encoder.write_all(&text);
            if flush && result.is_ok() {
                result = encoder.flush();
            }
            text.clear();
            (encoder, text, result)
        })
        .await
        .map_err(|_| RecordingError::Stopped {
            path: self.path.clone(),
        })?;
        self.encoder = Some(encoder);
        self.pending = text;
        result.map_err(|e| RecordingError::Write {
            path: self.path.clone(),
            source: Arc::new(e),
        })
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for. Cancel-safe.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads a recording back, event by event, with the exact bytes of each.
pub struct CastReader {
    path: PathBuf,
    lines: BufReader<GzDecoder<File>>,
    line_no: u64,
    /// An event read ahead, to see whether an exact-bytes event follows it.
    ahead: Option<CastEvent>,
    truncated: bool,
    done: bool,
    header: CastHeader,
}

impl CastReader {
    /// Opens `path` and reads its header. Blocking: call from `spawn_blocking` in async code.
    pub fn open(path: &Path) -> Result<Self, RecordingError> {
        let file = File::open(path).map_err(|e| RecordingError::Read {
            path: path.to_path_buf(),
            source: Arc::new(e),
        })?;
        let mut reader = Self {
            path: path.to_path_buf(),
            lines: BufReader::new(GzDecoder::new(file)),
            line_no: 0,
            ahead: None,
            truncated: false,
            done: false,
            header: CastHeader {
                cols: 0,
                rows: 0,
                started_ms: 0,
                command: String::new(),
                title: String::new(),
                term: String::new(),
            },
        };
        let Some(line) = reader.read_line()? else {
            return Err(reader.corrupt("no header"));
        };
        reader.header = reader.parse_header(&line)?;
        Ok(reader)
    }

    /// What the session's terminal was.
    pub fn header(&self) -> &CastHeader {
        &self.header
    }

    /// Whether the file stopped before its gzip end (a hub killed mid-session, or a session still
    /// being written): everything before that point was returned.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The next event, or `None` at the end. Blocking, as [`CastReader::open`].
    pub fn next_event(&mut self) -> Result<Option<CastEvent>, RecordingError> {
        loop {
            let Some(line) = self.read_line()? else {
                return Ok(self.ahead.take());
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let (t, code, text) = self.parse_event(&line)?;
            if code == EXACT_BYTES_CODE {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text.as_bytes())
                    .map_err(|e| self.corrupt(&format!("exact bytes: {e}")))?;
                match self.ahead.as_mut().map(|ev| &mut ev.data) {
                    Some(CastData::Output(chunk) | CastData::Input(chunk)) => chunk.0 = bytes,
                    _ => return Err(self.corrupt("exact bytes follow no output or input")),
                }
                continue;
            }
            let data = match code.as_str() {
                "o" => CastData::Output(Chunk(text.into_bytes())),
                "i" => CastData::Input(Chunk(text.into_bytes())),
                "r" => {
                    let parsed = text
                        .split_once('x')
                        .and_then(|(c, r)| Some((c.parse().ok()?, r.parse().ok()?)));
                    let Some((cols, rows)) = parsed else {
                        return Err(self.corrupt(&format!("resize {text:?} is not COLSxROWS")));
                    };
                    CastData::Resize { cols, rows }
                }
                // Markers and codes of later formats: nothing to replay.
                _ => continue,
            };
            let event = CastEvent { at_ms: t, data };
            if let Some(previous) = self.ahead.replace(event) {
                return Ok(Some(previous));
            }
        }
    }

    /// One line without its newline; `None` at the end (clean or truncated).
    fn read_line(&mut self) -> Result<Option<Vec<u8>>, RecordingError> {
        if self.done {
            return Ok(None);
        }
        let mut line = Vec::new();
        let read = (&mut self.lines)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line);
        match read {
            Ok(0) => {
                self.done = true;
                Ok(None)
            }
            Ok(_) if line.last() != Some(&b'\n') => {
                if line.len() > MAX_LINE {
                    return Err(self.corrupt(&format!("line longer than {MAX_LINE} bytes")));
                }
                // A last line without its newline: the writer was stopped in the middle of it.
                self.done = true;
                self.truncated = true;
                Ok(None)
            }
            Ok(_) => {
                self.line_no += 1;
                line.pop();
                Ok(Some(line))
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.done = true;
                self.truncated = true;
                Ok(None)
            }
            Err(e) => Err(RecordingError::Read {
                path: self.path.clone(),
                source: Arc::new(e),
            }),
        }
    }

    fn corrupt(&self, reason: &str) -> RecordingError {
        RecordingError::Corrupt {
            path: self.path.clone(),
            line: self.line_no.max(1),
            reason: reason.to_owned(),
        }
    }

    fn parse_header(&self, line: &[u8]) -> Result<CastHeader, RecordingError> {
        let v: serde_json::Value = serde_json::from_slice(line)
            .map_err(|e| self.corrupt(&format!("header is not JSON: {e}")))?;
        if v.get("version").and_then(serde_json::Value::as_u64) != Some(2) {
            return Err(self.corrupt("not asciicast version 2"));
        }
        let num = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        let text = |v: Option<&serde_json::Value>| {
            v.and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Ok(CastHeader {
            cols: u16::try_from(num("width")).unwrap_or(u16::MAX),
            rows: u16::try_from(num("height")).unwrap_or(u16::MAX),
            started_ms: num("timestamp").saturating_mul(1000),
            command: text(v.get("command")),
            title: text(v.get("title")),
            term: text(v.get("env").and_then(|e| e.get("TERM"))),
        })
    }

    fn parse_event(&self, line: &[u8]) -> Result<(u64, String, String), RecordingError> {
        let parsed: (f64, String, String) = serde_json::from_slice(line)
            .map_err(|e| self.corrupt(&format!("event is not [time, code, data]: {e}")))?;
        let (t, code, text) = parsed;
        if !t.is_finite() || t < 0.0 {
            return Err(self.corrupt(&format!("event time {t} is not a time")));
        }
        // f64 → u64 saturates; a recording of 500,000 years is not a concern.
        Ok(((t * 1000.0).round() as u64, code, text))
    }
}

/// Reads a whole recording: its header, every event and whether it was cut short. Blocking.
pub fn read_all(path: &Path) -> Result<(CastHeader, Vec<CastEvent>, bool), RecordingError> {
    let mut reader = CastReader::open(path)?;
    let mut events = Vec::new();
    while let Some(ev) = reader.next_event()? {
        events.push(ev);
    }
    Ok((reader.header.clone(), events, reader.truncated))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str, record_input: bool) -> RecordingMeta {
        RecordingMeta {
            id: id.into(),
            started_ms: 1_700_000_000_000,
            cols: 80,
            rows: 24,
            command: "bash -l".into(),
            title: "alice@web-1".into(),
            term: "xterm-256color".into(),
            record_input,
        }
    }

    fn output_of(events: &[CastEvent]) -> Vec<u8> {
        let mut out = Vec::new();
        for ev in events {
            if let CastData::Output(c) = &ev.data {
                out.extend_from_slice(&c.0);
            }
        }
        out
    }

    fn decompress(path: &Path) -> String {
        let mut text = String::new();
        // A finished file decodes whole.
        GzDecoder::new(File::open(path).expect("open"))
            .read_to_string(&mut text)
            .expect("gunzip");
        text
    }

    #[tokio::test]
    async fn writes_asciicast_v2_and_reads_it_back() {
        let dir = tempfile::tempdir().expect("tmp");
        let rdir = dir.path().join("recordings");
        let rec = Recording::create(&rdir, meta("sh-1", true))
            .await
            .expect("create");
        let t0 = 1_700_000_000_000;
        rec.output(t0 + 10, b"$ ").await.expect("out");
        rec.input(t0 + 1500, b"ls\r").await.expect("in");
        rec.resize(t0 + 2000, 100, 30).await.expect("resize");
        rec.output(t0 + 2250, "héllo \"q\"\r\n".as_bytes())
            .await
            .expect("out");
        let summary = rec.finish(Some(0), "exited").await.expect("finish");
        assert_eq!(summary.output_bytes, 2 + "héllo \"q\"\r\n".len() as u64);
        assert_eq!(summary.input_bytes, 3);
        assert_eq!(summary.events, 4);
        assert_eq!(summary.duration_ms, 2250);
        assert_eq!(
            summary.size,
            std::fs::metadata(&summary.path).expect("stat").len()
        );

        let text = decompress(&summary.path);
        let lines: Vec<&str> = text.lines().collect();
        let header: serde_json::Value = serde_json::from_str(lines[0]).expect("header");
        assert_eq!(header["version"], 2);
        assert_eq!(header["width"], 80);
        assert_eq!(header["height"], 24);
        assert_eq!(header["timestamp"], 1_700_000_000);
        assert_eq!(header["env"]["TERM"], "xterm-256color");
        assert_eq!(header["title"], "alice@web-1");
        assert_eq!(lines[1], r#"[0.010, "o", "$ "]"#);
        assert_eq!(lines[2], r#"[1.500, "i", "ls\r"]"#);
        assert_eq!(lines[3], r#"[2.000, "r", "100x30"]"#);
        assert_eq!(lines[4], r#"[2.250, "o", "héllo \"q\"\r\n"]"#);
        assert_eq!(lines.len(), 5);

        let (h, events, truncated) = read_all(&summary.path).expect("read");
        assert!(!truncated);
        assert_eq!(
            (h.cols, h.rows, h.term.as_str()),
            (80, 24, "xterm-256color")
        );
        assert_eq!(
            events,
            vec![
                CastEvent {
                    at_ms: 10,
                    data: CastData::Output(Chunk(b"$ ".to_vec()))
                },
                CastEvent {
                    at_ms: 1500,
                    data: CastData::Input(Chunk(b"ls\r".to_vec()))
                },
                CastEvent {
                    at_ms: 2000,
                    data: CastData::Resize {
                        cols: 100,
                        rows: 30
                    }
                },
                CastEvent {
                    at_ms: 2250,
                    data: CastData::Output(Chunk("héllo \"q\"\r\n".as_bytes().to_vec()))
                },
            ]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
            assert_eq!(mode(&rdir), 0o700);
            assert_eq!(mode(&summary.path), 0o600);
        }
    }

    #[tokio::test]
    async fn any_bytes_round_trip_exactly() {
        let dir = tempfile::tempdir().expect("tmp");
        let rec = Recording::create(dir.path(), meta("sh-2", false))
            .await
            .expect("create");
        // Invalid bytes, a lone continuation, a character split across chunks, a cut-off
        // character at the very end, NULs and escape sequences.
        let chunks: Vec<Vec<u8>> = vec![
            b"\x1b[1mbold\x1b[0m\r\n".to_vec(),
            vec![0xff, 0xfe, b'a', 0x80, 0],
            "日本".as_bytes()[..4].to_vec(),
            "日本".as_bytes()[4..].to_vec(),
            vec![b'x', 0xe2, 0x82],
        ];
        let mut sent = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            rec.output(1_700_000_000_000 + i as u64, c)
                .await
                .expect("out");
            sent.extend_from_slice(c);
        }
        rec.input(1_700_000_000_100, b"secret")
            .await
            .expect("input off");
        let summary = rec.finish(None, "hub stopping").await.expect("finish");
        assert_eq!(summary.input_bytes, 0, "input is not recorded unless asked");
        let (_, events, truncated) = read_all(&summary.path).expect("read");
        assert!(!truncated);
        assert_eq!(output_of(&events), sent);
        assert!(events.iter().all(|e| matches!(e.data, CastData::Output(_))));
        // The split character was joined, so only the invalid chunks needed exact bytes.
        let text = decompress(&summary.path);
        assert_eq!(text.matches(r#", "b", "#).count(), 2, "{text}");
        assert!(text.contains(r#""o", "本"]"#), "{text}");
    }

    #[tokio::test]
    async fn a_killed_writer_leaves_everything_flushed_readable() {
        let dir = tempfile::tempdir().expect("tmp");
        let rec = Recording::create(dir.path(), meta("sh-3", false))
            .await
            .expect("create");
        let path = rec.path().to_path_buf();
        rec.output(1_700_000_000_000, b"before the kill\r\n")
            .await
            .expect("out");
        // Wait for the periodic flush to put it on disk, as a kill -9 would find it.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let copy = dir.path().join("copy.cast.gz");
        loop {
            std::fs::copy(&path, &copy).expect("copy");
            let (_, events, truncated) = read_all(&copy).expect("read copy");
            if output_of(&events) == b"before the kill\r\n" {
                assert!(truncated, "no gzip end yet");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never flushed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A copy cut in the middle of the compressed data still reads up to its cut.
        let bytes = std::fs::read(&copy).expect("read");
        std::fs::write(&copy, &bytes[..bytes.len() - 3]).expect("cut");
        let (h, _, truncated) = read_all(&copy).expect("read cut copy");
        assert!(truncated);
        assert_eq!(h.cols, 80);
        drop(rec);
    }

    #[tokio::test]
    async fn bad_ids_and_unwritable_places_are_refused_by_name() {
        let dir = tempfile::tempdir().expect("tmp");
        let err = Recording::create(dir.path(), meta("../x", false))
            .await
            .err()
            .expect("bad id");
        assert!(matches!(err, RecordingError::BadId { .. }), "{err}");
        let not_dir = dir.path().join("recordings");
        std::fs::write(&not_dir, b"a file").expect("file");
        let err = Recording::create(&not_dir, meta("sh-4", false))
            .await
            .err()
            .expect("not a dir");
        assert!(matches!(err, RecordingError::Directory { .. }), "{err}");
        assert!(err.to_string().contains("recordings"), "{err}");
        let rec = Recording::create(dir.path(), meta("sh-5", false))
            .await
            .expect("create");
        drop(rec);
        let again = Recording::create(dir.path(), meta("sh-5", false))
            .await
            .err()
            .expect("exists");
        assert!(matches!(again, RecordingError::Create { .. }), "{again}");
    }

    #[test]
    fn corrupt_files_are_named_with_their_line() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("bad.cast.gz");
        let mut enc = GzEncoder::new(File::create(&path).expect("create"), Compression::fast());
        enc.write_all(b"{\"version\":2,\"width\":80,\"height\":24}\n[0.5, \"o\"]\n")
            .expect("write");
        enc.finish().expect("finish");
        let Err(err) = read_all(&path) else {
            panic!("read a corrupt file")
        };
        assert!(
            matches!(err, RecordingError::Corrupt { line: 2, .. }),
            "{err}"
        );
        let mut enc = GzEncoder::new(File::create(&path).expect("create"), Compression::fast());
        enc.write_all(b"{\"version\":1}\n").expect("write");
        enc.finish().expect("finish");
        let Err(err) = read_all(&path) else {
            panic!("read version 1")
        };
        assert!(err.to_string().contains("version 2"), "{err}");
    }

    #[test]
    fn incomplete_tails_are_found() {
        assert_eq!(incomplete_tail(b"abc"), 0);
        assert_eq!(incomplete_tail(&[b'a', 0xe6]), 1);
        assert_eq!(incomplete_tail(&[0xe6, 0x97]), 2);
        assert_eq!(incomplete_tail("日".as_bytes()), 0);
        assert_eq!(incomplete_tail(&[0xf0, 0x9f, 0x98]), 3);
        assert_eq!(incomplete_tail(&[0xff]), 0);
        assert_eq!(incomplete_tail(&[0x80, 0x80, 0x80]), 0);
    }
}
