//! Transfers on streams the hub opens: serve reads of the shared folder, receive writes into it.
//!
//! A write lands in a hidden partial file beside its destination, named by the transfer's resume
//! key, hashed with BLAKE3 as it arrives, and is fsynced and renamed into place only when the digest
//! matches the source's. An interrupted transfer keeps the partial file for the next attempt, which
//! resumes after the source checks the bytes already there against its own; a cancelled or failed
//! one removes it. Paths are checked twice: lexically (`..`, absolute) by
//! [`flotilla_wire::files::normalize_rel_path`], then on disk, where a symlink leading out of the
//! shared folder is refused.

use crate::platform;
use bytes::Bytes;
use deploy::sync::lock;
use flotilla_wire::files::{
    CHUNK_SIZE, Chunk, Digest, FileMeta, HubStreamOpen, ReadOpen, ResumeKey, TransferDone,
    TransferError, TransferErrorKind, TransferFrame, WriteKind, WriteOpen, chunk_data_range,
    chunk_frame_prefix, normalize_rel_path, partial_name,
};
use flotilla_wire::io::{FrameError, read_frame, read_frame_len, write_frame};
use flotilla_wire::limits::MAX_TRANSFER_FRAME;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::{Notify, mpsc};

/// Chunks read ahead of the network, or waiting for the disk: four keep both busy while bounding a
/// transfer's memory to about a megabyte.
const PIPELINE_DEPTH: usize = 4;
/// Bytes between two acknowledgements to the hub: progress and the resume point move in megabytes,
/// without a frame per chunk.
const ACK_EVERY: u64 = 1024 * 1024;
/// Mode of a new partial file: private until the finished file gets the source's mode.
const PARTIAL_MODE: u32 = 0o600;
/// Bytes a destination writes between two requests to the kernel to write them back to the disk.
/// Without them a file arrives into the page cache and the fsync before the rename writes it all
/// at the end (1.3–1.7 s for 1 GiB on the benchmark machine's disk, after the last byte came in);
/// with them the disk works while the network does, and the writer waits for the window before
/// the last, which keeps a transfer's dirty pages near two windows whatever the file's size.
const WRITE_BEHIND: u64 = 8 * 1024 * 1024;

/// The shared folder and what the transfer and watch tasks share about it.
#[derive(Debug)]
pub struct SharedFolder {
    root: PathBuf,
    read_only: bool,
    /// Destinations being written now: a second transfer to the same file is refused, not interleaved.
    writing: Mutex<HashSet<PathBuf>>,
    /// Woken when the hub asks for a fresh snapshot.
    pub(crate) resync: Notify,
}

impl SharedFolder {
    /// Creates `dir` (0700) if missing and resolves it, so every later check compares canonical paths.
    pub fn open(dir: &Path, read_only: bool) -> Result<Self, crate::AgentError> {
        if !dir.exists() {
            crate::create_private_dir(dir)?;
        }
        let root = fs::canonicalize(dir).map_err(|e| crate::AgentError::Io {
            context: format!("shared folder {}", dir.display()),
            source: e,
        })?;
        if !root.is_dir() {
            return Err(crate::AgentError::Config(format!(
                "shared folder {} is not a directory",
                root.display()
            )));
        }
        Ok(Self {
            root,
            read_only,
            writing: Mutex::default(),
            resync: Notify::new(),
        })
    }

    /// Canonical path of the folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether writes are refused.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    fn claim(self: &Arc<Self>, dest: PathBuf) -> Option<WriteClaim> {
        let mut writing = lock(&self.writing);
        writing.insert(dest.clone()).then(|| WriteClaim {
            folder: self.clone(),
            dest,
        })
    }
}

/// Marks a destination as being written; releases it on drop.
struct WriteClaim {
    folder: Arc<SharedFolder>,
    dest: PathBuf,
}

impl Drop for WriteClaim {
    fn drop(&mut self) {
        lock(&self.folder.writing).remove(&self.dest);
    }
}

/// How a transfer leg ended early.
enum Stop {
    /// Tell the hub why.
    Failed(TransferError),
    /// The hub cancelled; the partial file is gone.
    Cancelled,
    /// The stream broke; nobody to tell.
    Lost(String),
}

impl From<TransferError> for Stop {
    fn from(e: TransferError) -> Self {
        Self::Failed(e)
    }
}

fn protocol(what: impl Into<String>) -> Stop {
    Stop::Failed(TransferError::new(TransferErrorKind::Protocol, what))
}

fn lost(e: FrameError) -> Stop {
    Stop::Lost(e.to_string())
}

/// Serves a transfer or resync stream the hub opened, whose opener the link has read. Dropping it
/// (the session ended) keeps an interrupted write's partial file for a resume.
pub(crate) async fn serve_open(
    folder: Arc<SharedFolder>,
    name: String,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    open: HubStreamOpen,
) {
    // Bulk data yields to the control and metrics streams.
    let _ = send.set_priority(-1);
    let (result, what) = match open {
        HubStreamOpen::Exec(_)
        | HubStreamOpen::Ping { .. }
        | HubStreamOpen::Logs(_)
        | HubStreamOpen::HostReport
        | HubStreamOpen::Shell(_) => {
            let _ = send.reset(flotilla_wire::ErrorCode::BadRequest.as_u32().into());
            return;
        }
        HubStreamOpen::Resync { reason } => {
            tracing::info!(%reason, "hub asked for a fresh snapshot");
            folder.resync.notify_one();
            let _ = send.finish();
            return;
        }
        HubStreamOpen::Read(open) => {
            let span = tracing::info_span!("read", transfer_id = %open.transfer, path = %open.path);
            let what = format!("read {}", open.path);
            let r = tracing::Instrument::instrument(
                read_side(&folder, &name, open, &mut send, &mut recv),
                span,
            )
            .await;
            (r, what)
        }
        HubStreamOpen::Write(open) => {
            let span =
                tracing::info_span!("write", transfer_id = %open.transfer, path = %open.path);
            let what = format!("write {}", open.path);
            let r = tracing::Instrument::instrument(
                write_side(&folder, &name, open, &mut send, &mut recv),
                span,
            )
            .await;
            (r, what)
        }
    };
    match result {
        Ok(()) => {
            tracing::debug!(%what, "transfer leg finished");
            let _ = send.finish();
        }
        Err(Stop::Failed(err)) => {
            tracing::warn!(%what, kind = ?err.kind, error = %err.message, "transfer failed");
            let code = stop_code(err.kind);
            let _ = write_frame(&mut send, &TransferFrame::Failed(err), MAX_TRANSFER_FRAME).await;
            let _ = send.finish();
            drain_then_stop(&mut recv, code).await;
        }
        Err(Stop::Cancelled) => {
            tracing::info!(%what, "transfer cancelled by the operator");
            let _ = write_frame(&mut send, &TransferFrame::Cancelled, MAX_TRANSFER_FRAME).await;
            let _ = send.finish();
        }
        Err(Stop::Lost(why)) => {
            tracing::info!(%what, %why, "transfer interrupted");
            let _ = send.reset(flotilla_wire::ErrorCode::Internal.as_u32().into());
        }
    }
}

/// Longest time a failed leg keeps reading (and discarding) what the hub still sends, so that the
/// hub reads the `Failed` frame instead of finding its writes stopped: a stop raced the frame and
/// turned "no space left" into a retried "sending stopped by peer". The hub ends the stream as soon
/// as it has read the frame, a round trip later; this only bounds a hub that does not.
const FAILED_DRAIN: Duration = Duration::from_secs(10);

/// The code a failed leg stops the hub's data with, if the hub still sends after [`FAILED_DRAIN`]:
/// the failure's own where the protocol has one.
fn stop_code(kind: TransferErrorKind) -> flotilla_wire::ErrorCode {
    match kind {
        TransferErrorKind::NoSpace => flotilla_wire::ErrorCode::NoSpace,
        _ => flotilla_wire::ErrorCode::Ok,
    }
}

/// After a `Failed` frame: discards what the hub still sends until it ends or resets the stream,
/// for at most [`FAILED_DRAIN`], then stops it with `code`. Cancel-safe.
async fn drain_then_stop(recv: &mut quinn::RecvStream, code: flotilla_wire::ErrorCode) {
    let drain = async {
        loop {
            match recv.read_chunk(usize::MAX, false).await {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    };
    if tokio::time::timeout(FAILED_DRAIN, drain).await.is_err() {
        tracing::debug!(
            ?code,
            "hub still sending after the failure; stopping the stream"
        );
    }
    let _ = recv.stop(code.as_u32().into());
}

/// Whether a broken stream was reset by the hub because the operator cancelled.
fn cancelled_by_reset(e: &FrameError) -> bool {
    let FrameError::Io(io) = e else { return false };
    let Some(quinn::ReadError::Reset(code)) = io
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<quinn::ReadError>())
    else {
        return false;
    };
    code.into_inner() == u64::from(flotilla_wire::ErrorCode::Cancelled.as_u32())
}

// ---------------------------------------------------------------------------------------------
// Paths

/// Words for an IO error, naming the agent; disk-full, quota and file-size limits become
/// [`TransferErrorKind::NoSpace`].
pub(crate) fn io_failed(e: &io::Error, what: &str, agent: &str) -> TransferError {
    match platform::no_space(e) {
        Some(false) => TransferError::new(
            TransferErrorKind::NoSpace,
            format!("no space left on {agent} ({what}: {e})"),
        ),
        Some(true) => TransferError::new(
            TransferErrorKind::NoSpace,
            format!("no space left on {agent} ({what}: file size limit reached: {e})"),
        ),
        _ if e.kind() == io::ErrorKind::NotFound => TransferError::new(
            TransferErrorKind::NotFound,
            format!("{what} on {agent}: not found"),
        ),
        _ => TransferError::new(TransferErrorKind::Io, format!("{what} on {agent}: {e}")),
    }
}

fn checked_rel(path: &str, agent: &str) -> Result<String, TransferError> {
    let rel = normalize_rel_path(path)
        .map_err(|e| TransferError::new(TransferErrorKind::Escapes, format!("{e} (on {agent})")))?;
    if rel.is_empty() {
        return Err(TransferError::new(
            TransferErrorKind::WrongKind,
            format!("the shared folder of {agent} itself is a directory, not a file"),
        ));
    }
    Ok(rel)
}

fn escapes(rel: &str, agent: &str) -> TransferError {
    TransferError::new(
        TransferErrorKind::Escapes,
        format!("{rel} on {agent} leads out of the shared folder through a symlink"),
    )
}

/// Resolves an existing path, following symlinks, and refuses it unless it stays inside `root`.
pub(crate) fn resolve_existing(
    root: &Path,
    rel: &str,
    agent: &str,
) -> Result<PathBuf, TransferError> {
    let canon = fs::canonicalize(root.join(rel)).map_err(|e| io_failed(&e, rel, agent))?;
    if !canon.starts_with(root) {
        return Err(escapes(rel, agent));
    }
    Ok(canon)
}

/// Makes sure directory `rel` exists inside `root`, creating what is missing one level at a time and
/// refusing a symlink that leads out. Returns its canonical path.
pub(crate) fn ensure_dir(root: &Path, rel: &str, agent: &str) -> Result<PathBuf, TransferError> {
    let mut cur = root.to_path_buf();
    if rel.is_empty() {
        return Ok(cur);
    }
    let mut so_far = String::new();
    for comp in rel.split('/') {
        if !so_far.is_empty() {
            so_far.push('/');
        }
        so_far.push_str(comp);
        let next = cur.join(comp);
        match fs::symlink_metadata(&next) {
            Ok(md) if md.file_type().is_symlink() => {
                let canon = fs::canonicalize(&next).map_err(|e| io_failed(&e, &so_far, agent))?;
                if !canon.starts_with(root) {
                    return Err(escapes(&so_far, agent));
                }
                if !canon.is_dir() {
                    return Err(not_a_dir(&so_far, agent));
                }
                cur = canon;
            }
            Ok(md) if md.is_dir() => cur = next,
            Ok(_) => return Err(not_a_dir(&so_far, agent)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match fs::create_dir(&next) {
                    Ok(()) => {}
                    // Another transfer made it meanwhile: fine if it is a directory.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists && next.is_dir() => {}
                    Err(e) => return Err(io_failed(&e, &format!("create {so_far}"), agent)),
                }
                cur = next;
            }
            Err(e) => return Err(io_failed(&e, &so_far, agent)),
        }
    }
    Ok(cur)
}

fn not_a_dir(rel: &str, agent: &str) -> TransferError {
    TransferError::new(
        TransferErrorKind::WrongKind,
        format!("{rel} on {agent} is not a directory"),
    )
}

/// Time as ms since the epoch from a file's metadata.
pub(crate) fn mtime_ms(md: &fs::Metadata) -> i64 {
    platform::mtime_ms(md)
}

fn digest(h: &blake3::Hasher) -> Digest {
    Digest(*h.finalize().as_bytes())
}

// ---------------------------------------------------------------------------------------------
// Source side

/// Opens a file of the shared folder for reading, refusing escapes and anything but a regular file.
/// A FIFO, socket or device is refused by its type before it is opened, and the open itself never
/// waits (see [`platform::open_nonblocking`]): one planted in the folder cannot wedge a thread.
fn open_for_read(root: &Path, rel: &str, agent: &str) -> Result<(File, FileMeta), TransferError> {
    let path = resolve_existing(root, rel, agent)?;
    let md =
        fs::symlink_metadata(&path).map_err(|e| io_failed(&e, &format!("stat {rel}"), agent))?;
    regular_only(&md, rel, agent)?;
    let (file, md) = platform::open_nonblocking(OpenOptions::new().read(true), &path)
        .map_err(|e| io_failed(&e, &format!("open {rel}"), agent))?;
    regular_only(&md, rel, agent)?;
    Ok((
        file,
        FileMeta {
            size: md.len(),
            mtime_ms: mtime_ms(&md),
            mode: platform::mode(&md),
        },
    ))
}

/// What the blocking reader hands the network side.
enum ReadMsg {
    /// A frame other than data.
    Frame(TransferFrame),
    /// The next bytes of the file, as read (sent without being copied into a frame).
    Data(Vec<u8>),
    /// Reading failed.
    Failed(TransferError),
}

/// Reads up to a full buffer (short only at end of file).
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The blocking half of a read: checks the destination's prefix, then sends `Begin`, chunks and
/// `End` with the whole file's BLAKE3, or a failure. Stops when the receiver goes away.
fn stream_file(
    mut file: File,
    meta: FileMeta,
    offset: u64,
    prefix: Option<Digest>,
    label: &str,
    tx: &mpsc::Sender<ReadMsg>,
) {
    let send = |msg| tx.blocking_send(msg).is_ok();
    let fail = |e: TransferError| {
        let _ = tx.blocking_send(ReadMsg::Failed(e));
    };
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut start = 0;
    if offset > 0 && offset <= meta.size && prefix.is_some() {
        let mut left = offset;
        while left > 0 {
            let want = usize::try_from(left.min(CHUNK_SIZE as u64)).unwrap_or(CHUNK_SIZE);
            match read_full(&mut file, &mut buf[..want]) {
                Ok(n) if n == want => {
                    hasher.update(&buf[..n]);
                    left -= n as u64;
                }
                Ok(_) => return fail(changed(label)),
                Err(e) => return fail(io_failed(&e, &format!("read {label}"), "the source")),
            }
        }
        if Some(digest(&hasher)) == prefix {
            start = offset;
        } else {
            hasher = blake3::Hasher::new();
            if let Err(e) = file.seek(SeekFrom::Start(0)) {
                return fail(io_failed(&e, &format!("seek {label}"), "the source"));
            }
        }
    }
    if !send(ReadMsg::Frame(TransferFrame::Begin { offset: start })) {
        return;
    }
    drop(buf);
    let mut total = start;
    loop {
        // A fresh buffer per chunk: it goes to the stream as it is, without a copy. `read_to_end`
        // reads into the spare capacity without zeroing it first (a pass over every byte saved).
        let mut chunk = Vec::with_capacity(CHUNK_SIZE);
        let n = match (&mut file).take(CHUNK_SIZE as u64).read_to_end(&mut chunk) {
            Ok(n) => n,
            Err(e) => return fail(io_failed(&e, &format!("read {label}"), "the source")),
        };
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > meta.size {
            return fail(changed(label));
        }
        hasher.update(&chunk);
        if !send(ReadMsg::Data(chunk)) {
            return;
        }
    }
    let unchanged = file
        .metadata()
        .is_ok_and(|md| md.len() == meta.size && mtime_ms(&md) == meta.mtime_ms);
    if total != meta.size || !unchanged {
        return fail(changed(label));
    }
    let _ = send(ReadMsg::Frame(TransferFrame::End {
        digest: digest(&hasher),
    }));
}

/// Refuses what is not a regular file: a directory with a hint, anything else by its kind.
fn regular_only(md: &fs::Metadata, rel: &str, agent: &str) -> Result<(), TransferError> {
    if md.is_file() {
        return Ok(());
    }
    let message = if md.is_dir() {
        format!("{rel} on {agent} is a directory (use cp -r for directories)")
    } else {
        format!(
            "not a regular file: {rel} ({}) on {agent}",
            platform::kind_name(md.file_type())
        )
    };
    Err(TransferError::new(TransferErrorKind::WrongKind, message))
}

fn changed(label: &str) -> TransferError {
    TransferError::new(
        TransferErrorKind::SourceChanged,
        format!("{label} changed while it was being sent: copy it again once it is stable"),
    )
}

async fn read_side(
    folder: &Arc<SharedFolder>,
    agent: &str,
    open: ReadOpen,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
) -> Result<(), Stop> {
    let rel = checked_rel(&open.path, agent)?;
    let (root, a, r) = (folder.root.clone(), agent.to_owned(), rel.clone());
    let (file, meta) = tokio::task::spawn_blocking(move || open_for_read(&root, &r, &a))
        .await
        .map_err(|e| protocol(format!("reader task: {e}")))??;
    write_frame(send, &TransferFrame::Offer(meta), MAX_TRANSFER_FRAME)
        .await
        .map_err(lost)?;
    let (offset, prefix) = match read_frame::<TransferFrame, _>(recv, MAX_TRANSFER_FRAME).await {
        Ok(Some(TransferFrame::ReadFrom { offset, prefix })) => (offset, prefix),
        Ok(Some(TransferFrame::Cancel)) => return Err(Stop::Cancelled),
        Ok(Some(other)) => return Err(protocol(format!("expected ReadFrom, got {other:?}"))),
        Ok(None) => return Err(Stop::Lost("hub closed before the read started".into())),
        Err(e) => return Err(lost(e)),
    };
    let (tx, mut rx) = mpsc::channel(PIPELINE_DEPTH);
    let label = format!("{rel} on {agent}");
    let reader =
        tokio::task::spawn_blocking(move || stream_file(file, meta, offset, prefix, &label, &tx));
    let hub = read_frame::<TransferFrame, _>(recv, MAX_TRANSFER_FRAME);
    tokio::pin!(hub);
    let result = loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(ReadMsg::Frame(frame)) => {
                    let end = matches!(frame, TransferFrame::End { .. });
                    if let Err(e) = write_frame(send, &frame, MAX_TRANSFER_FRAME).await {
                        break Err(lost(e));
                    }
                    if end {
                        break Ok(());
                    }
                }
                Some(ReadMsg::Data(data)) => {
                    let prefix = match chunk_frame_prefix(data.len(), MAX_TRANSFER_FRAME) {
                        Ok(p) => p,
                        Err(e) => break Err(protocol(e.to_string())),
                    };
                    let mut pieces = [Bytes::from(prefix), Bytes::from(data)];
                    if let Err(e) = send.write_all_chunks(&mut pieces).await {
                        break Err(Stop::Lost(e.to_string()));
                    }
                }
                Some(ReadMsg::Failed(e)) => break Err(Stop::Failed(e)),
                None => break Err(protocol("reader stopped without a result")),
            },
            said = &mut hub => break match said {
                Ok(Some(TransferFrame::Cancel)) => Err(Stop::Cancelled),
                Ok(Some(other)) => Err(protocol(format!("unexpected {other:?} during a read"))),
                Ok(None) => Err(Stop::Lost("hub closed the read".into())),
                Err(e) => Err(lost(e)),
            },
        }
    };
    drop(rx);
    let _ = reader.await;
    result
}

// ---------------------------------------------------------------------------------------------
// Destination side

/// Where a write goes and what an earlier attempt left.
pub(crate) struct WritePlan {
    /// The final path.
    pub(crate) dest: PathBuf,
    /// The partial file beside it.
    pub(crate) partial: PathBuf,
    /// Bytes already in the partial file.
    pub(crate) have: u64,
    /// Size of the whole file, as the source announced it.
    pub(crate) size: u64,
    /// BLAKE3 state over those bytes.
    pub(crate) hasher: blake3::Hasher,
}

/// Resolves the destination (creating parent directories), and hashes a partial file left by an
/// earlier attempt with the same resume key.
pub(crate) fn plan_write(
    root: &Path,
    rel: &str,
    key: ResumeKey,
    meta: FileMeta,
    agent: &str,
) -> Result<WritePlan, TransferError> {
    let (parent_rel, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    let parent = ensure_dir(root, parent_rel, agent)?;
    let dest = parent.join(name);
    if let Ok(md) = fs::symlink_metadata(&dest)
        && md.is_dir()
    {
        return Err(TransferError::new(
            TransferErrorKind::WrongKind,
            format!("{rel} on {agent} is a directory"),
        ));
    }
    let partial = parent.join(partial_name(name, key));
    let mut hasher = blake3::Hasher::new();
    let have = match platform::open_nonblocking(OpenOptions::new().read(true), &partial) {
        Ok((mut f, md)) => {
            if !md.is_file() {
                return Err(TransferError::new(
                    TransferErrorKind::WrongKind,
                    format!(
                        "not a regular file: {} ({}) on {agent}, where {rel} is assembled: remove it",
                        partial.file_name().unwrap_or_default().to_string_lossy(),
                        platform::kind_name(md.file_type())
                    ),
                ));
            }
            let len = md.len();
            if len > meta.size {
                0
            } else {
                let mut buf = vec![0u8; CHUNK_SIZE];
                let mut total = 0u64;
                loop {
                    let n = read_full(&mut f, &mut buf)
                        .map_err(|e| io_failed(&e, &format!("read partial of {rel}"), agent))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    total += n as u64;
                }
                total
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io_failed(&e, &format!("open partial of {rel}"), agent)),
    };
    if have == 0 {
        hasher = blake3::Hasher::new();
    }
    Ok(WritePlan {
        dest,
        partial,
        have,
        size: meta.size,
        hasher,
    })
}

/// The blocking half of a write: appends chunks to the partial file, hashing them.
pub(crate) struct DiskWriter {
    file: File,
    hasher: blake3::Hasher,
    written: Arc<AtomicU64>,
    /// Writeback has been started for everything before this offset.
    behind: u64,
    /// Writeback has finished for everything before this offset.
    settled: u64,
    /// False once the filesystem refused a writeback request: it is only a hint.
    write_behind: bool,
}

impl DiskWriter {
    /// Opens the partial file at `start` (truncating it when starting over).
    pub(crate) fn open(plan: &WritePlan, start: u64, written: Arc<AtomicU64>) -> io::Result<Self> {
        let (mut file, md) = platform::open_nonblocking(
            platform::create_mode(
                OpenOptions::new().create(true).write(true).truncate(false),
                PARTIAL_MODE,
            ),
            &plan.partial,
        )?;
        if !md.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is a {}",
                    plan.partial.display(),
                    platform::kind_name(md.file_type())
                ),
            ));
        }
        let hasher = if start == plan.have {
            plan.hasher.clone()
        } else {
            blake3::Hasher::new()
        };
        file.set_len(start)?;
        // Claim the room for the rest now: a disk that cannot hold the file says so before any
        // data moves, instead of after most of it did.
        if plan.size > start {
            platform::preallocate(&file, start, plan.size - start)?;
        }
        file.seek(SeekFrom::Start(start))?;
        written.store(start, Ordering::Release);
        Ok(Self {
            file,
            hasher,
            written,
            behind: start,
            settled: start,
            write_behind: true,
        })
    }

    /// Writes chunks until the channel closes.
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Bytes>) -> io::Result<Self> {
        while let Some(chunk) = rx.blocking_recv() {
            self.file.write_all(&chunk)?;
            self.hasher.update(&chunk);
            let len = chunk.len() as u64;
            let pos = self.written.fetch_add(len, Ordering::AcqRel) + len;
            if self.write_behind && pos - self.behind >= WRITE_BEHIND {
                self.write_behind(pos);
            }
        }
        Ok(self)
    }

    /// Starts writeback of the bytes written since the last call, up to `pos`, and waits for the
    /// window before them ([`WRITE_BEHIND`]). A disk slower than the network thus holds the writer back, and
    /// through the bounded channel and QUIC flow control, the source.
    fn write_behind(&mut self, pos: u64) {
        let started = platform::writeback(
            &self.file,
            self.behind,
            pos - self.behind,
            platform::Writeback::Start,
        );
        // A length of 0 would mean "to the end of the file": the first call has nothing to wait for.
        let settled = started.and_then(|()| match self.behind - self.settled {
            0 => Ok(()),
            len => platform::writeback(&self.file, self.settled, len, platform::Writeback::Finish),
        });
        if let Err(e) = settled {
            tracing::debug!(error = %e, "writeback hint refused; leaving it to the final fsync");
            self.write_behind = false;
        }
        self.settled = self.behind;
        self.behind = pos;
    }

    /// The BLAKE3 of everything written, prefix included.
    pub(crate) fn digest(&self) -> Digest {
        digest(&self.hasher)
    }

    /// Applies the source's mode and time, fsyncs, renames into place and fsyncs the directory.
    pub(crate) fn finish(self, plan: &WritePlan, meta: FileMeta) -> io::Result<()> {
        platform::set_mode(&self.file, meta.mode)?;
        let mtime = if meta.mtime_ms >= 0 {
            UNIX_EPOCH + Duration::from_millis(meta.mtime_ms.unsigned_abs())
        } else {
            UNIX_EPOCH - Duration::from_millis(meta.mtime_ms.unsigned_abs())
        };
        self.file
            .set_times(fs::FileTimes::new().set_modified(mtime))?;
        self.file.sync_all()?;
        fs::rename(&plan.partial, &plan.dest)?;
        if let Some(parent) = plan.dest.parent() {
            File::open(parent)?.sync_all()?;
        }
        Ok(())
    }

    /// Keeps the bytes for a later attempt.
    pub(crate) fn keep(self) {
        let _ = self.file.sync_data();
    }
}

/// A frame from the hub during data: file bytes kept where they landed, or any other frame.
enum Incoming {
    Data(Bytes),
    Frame(TransferFrame),
}

/// Reads one transfer frame; a chunk's data is sliced out of the frame, not decoded into a copy.
/// `Ok(None)` at a clean end between frames. Not cancel-safe.
async fn read_incoming(recv: &mut quinn::RecvStream) -> Result<Option<Incoming>, FrameError> {
    let Some(len) = read_frame_len(recv, MAX_TRANSFER_FRAME).await? else {
        return Ok(None);
    };
    // Gathered from quinn's pieces into uninitialised capacity: zeroing a 256 KiB buffer first
    // and copying into it would be two passes over every byte instead of one.
    let mut body = Vec::with_capacity(len);
    while body.len() < len {
        match recv.read_chunk(len - body.len(), true).await {
            Ok(Some(piece)) => body.extend_from_slice(&piece.bytes),
            Ok(None) => return Err(FrameError::Truncated),
            Err(e) => return Err(FrameError::Io(io::Error::from(e))),
        }
    }
    if let Some(range) = chunk_data_range(&body) {
        return Ok(Some(Incoming::Data(Bytes::from(body).slice(range))));
    }
    Ok(Some(Incoming::Frame(flotilla_wire::decode_body(&body)?)))
}

/// Removes a partial file; missing is fine.
fn discard(partial: &Path) {
    if let Err(e) = fs::remove_file(partial)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %partial.display(), error = %e, "could not remove partial file");
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Stop> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| protocol(format!("disk task: {e}")))
}

async fn write_side(
    folder: &Arc<SharedFolder>,
    agent: &str,
    open: WriteOpen,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
) -> Result<(), Stop> {
    if folder.read_only {
        return Err(Stop::Failed(TransferError::new(
            TransferErrorKind::ReadOnly,
            format!(
                "the shared folder of {agent} is read-only (read_only = true in its agent.toml)"
            ),
        )));
    }
    let rel = checked_rel(&open.path, agent)?;
    let (root, a) = (folder.root.clone(), agent.to_owned());
    if open.kind == WriteKind::Dir {
        let r = rel.clone();
        blocking(move || ensure_dir(&root, &r, &a)).await??;
        let done = TransferDone {
            size: 0,
            digest: Digest(*blake3::hash(b"").as_bytes()),
            resumed_from: 0,
        };
        write_frame(send, &TransferFrame::Done(done), MAX_TRANSFER_FRAME)
            .await
            .map_err(lost)?;
        return Ok(());
    }
    let (r, meta, key) = (rel.clone(), open.meta, open.resume_key);
    let plan = blocking(move || plan_write(&root, &r, key, meta, &a)).await??;
    let Some(_claim) = folder.claim(plan.dest.clone()) else {
        return Err(Stop::Failed(TransferError::new(
            TransferErrorKind::Busy,
            format!("{rel} on {agent} is being written by another transfer"),
        )));
    };
    let prefix = (plan.have > 0).then(|| digest(&plan.hasher));
    write_frame(
        send,
        &TransferFrame::Ready {
            offset: plan.have,
            prefix,
        },
        MAX_TRANSFER_FRAME,
    )
    .await
    .map_err(lost)?;
    let start = match read_frame::<TransferFrame, _>(recv, MAX_TRANSFER_FRAME).await {
        Ok(Some(TransferFrame::Begin { offset })) if offset == 0 || offset == plan.have => offset,
        Ok(Some(TransferFrame::Begin { offset })) => {
            return Err(protocol(format!(
                "data starts at {offset}, but {} bytes are here",
                plan.have
            )));
        }
        Ok(Some(TransferFrame::Cancel)) => {
            discard(&plan.partial);
            return Err(Stop::Cancelled);
        }
        Ok(Some(TransferFrame::Failed(e))) => {
            if !e.kind.retryable() {
                discard(&plan.partial);
            }
            return Err(Stop::Lost(format!("source failed: {}", e.message)));
        }
        Ok(Some(other)) => return Err(protocol(format!("expected Begin, got {other:?}"))),
        Ok(None) => return Err(Stop::Lost("hub closed before data".into())),
        Err(e) if cancelled_by_reset(&e) => {
            discard(&plan.partial);
            return Err(Stop::Cancelled);
        }
        Err(e) => return Err(lost(e)),
    };
    let plan = Arc::new(plan);
    let written = Arc::new(AtomicU64::new(start));
    let (p, w, label) = (plan.clone(), written.clone(), format!("write {rel}"));
    let writer = blocking(move || DiskWriter::open(&p, start, w))
        .await?
        .map_err(|e| Stop::Failed(io_failed(&e, &label, agent)))?;
    let (tx, rx) = mpsc::channel::<Bytes>(PIPELINE_DEPTH);
    let mut disk = tokio::task::spawn_blocking(move || writer.run(rx));
    let mut tx = Some(tx);
    let mut received = start;
    let mut acked = start;
    // What the hub said last, once it said something other than a chunk.
    let ending = loop {
        let frame = match read_incoming(recv).await {
            Ok(Some(Incoming::Data(data))) => data,
            Ok(Some(Incoming::Frame(TransferFrame::Chunk(Chunk(data))))) => Bytes::from(data),
            Ok(Some(Incoming::Frame(other))) => break Ok(Some(other)),
            Ok(None) => break Ok(None),
            Err(e) => break Err(e),
        };
        received += frame.len() as u64;
        if received > meta.size {
            break Ok(Some(TransferFrame::Failed(TransferError::new(
                TransferErrorKind::Protocol,
                format!("more data than the {} bytes announced", meta.size),
            ))));
        }
        let Some(sender) = tx.as_ref() else {
            break Ok(None);
        };
        if sender.send(frame).await.is_err() {
            // The writer stopped: its error says why.
            tx = None;
            break Ok(None);
        }
        let now = written.load(Ordering::Acquire);
        if now - acked >= ACK_EVERY {
            acked = now;
            if let Err(e) = write_frame(
                send,
                &TransferFrame::Ack { written: now },
                MAX_TRANSFER_FRAME,
            )
            .await
            {
                break Err(e);
            }
        }
    };
    drop(tx);
    let writer = match (&mut disk).await {
        Ok(Ok(w)) => w,
        Ok(Err(e)) => {
            discard(&plan.partial);
            return Err(Stop::Failed(io_failed(&e, &format!("write {rel}"), agent)));
        }
        Err(e) => return Err(protocol(format!("disk task: {e}"))),
    };
    match ending {
        Ok(Some(TransferFrame::End { digest: expected })) => {
            let got = writer.digest();
            if received != meta.size {
                drop(writer);
                discard(&plan.partial);
                return Err(protocol(format!(
                    "data ended at {received} of {} bytes",
                    meta.size
                )));
            }
            if got != expected {
                drop(writer);
                discard(&plan.partial);
                return Err(Stop::Failed(TransferError::new(
                    TransferErrorKind::HashMismatch,
                    format!(
                        "{rel} on {agent}: BLAKE3 of the data received ({got}) does not match the source ({expected}); nothing was written under its name"
                    ),
                )));
            }
            let (p, label) = (plan.clone(), format!("finish {rel}"));
            blocking(move || writer.finish(&p, meta))
                .await?
                .map_err(|e| {
                    discard(&plan.partial);
                    Stop::Failed(io_failed(&e, &label, agent))
                })?;
            tracing::info!(
                bytes = meta.size,
                resumed_from = start,
                "file received and verified"
            );
            let done = TransferDone {
                size: meta.size,
                digest: got,
                resumed_from: start,
            };
            write_frame(send, &TransferFrame::Done(done), MAX_TRANSFER_FRAME)
                .await
                .map_err(lost)
        }
        Ok(Some(TransferFrame::Cancel)) => {
            drop(writer);
            discard(&plan.partial);
            Err(Stop::Cancelled)
        }
        Ok(Some(TransferFrame::Failed(e))) if e.kind.retryable() => {
            writer.keep();
            Err(Stop::Lost(format!("source interrupted: {}", e.message)))
        }
        Ok(Some(TransferFrame::Failed(e))) => {
            drop(writer);
            discard(&plan.partial);
            Err(Stop::Lost(format!("source failed: {}", e.message)))
        }
        Ok(Some(other)) => {
            writer.keep();
            Err(protocol(format!("unexpected {other:?} during data")))
        }
        Ok(None) => {
            writer.keep();
            Err(Stop::Lost("hub closed the write before the end".into()))
        }
        Err(e) if cancelled_by_reset(&e) => {
            drop(writer);
            discard(&plan.partial);
            Err(Stop::Cancelled)
        }
        Err(e) => {
            writer.keep();
            Err(lost(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = fs::canonicalize(dir.path()).expect("canon");
        (dir, root)
    }

    #[test]
    #[cfg(unix)] // Unix symbolic links
    fn escapes_through_symlinks_are_refused() {
        let (_d, root) = folder();
        let outside = tempfile::tempdir().expect("tempdir");
        fs::write(outside.path().join("secret"), b"x").expect("write");
        std::os::unix::fs::symlink(outside.path(), root.join("out")).expect("link");
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("s")).expect("link");
        fs::create_dir(root.join("in")).expect("mkdir");
        std::os::unix::fs::symlink(root.join("in"), root.join("inlink")).expect("link");
        let err = resolve_existing(&root, "out/secret", "web-1").expect_err("escape");
        assert_eq!(err.kind, TransferErrorKind::Escapes);
        assert_eq!(
            err.message,
            "out/secret on web-1 leads out of the shared folder through a symlink"
        );
        assert_eq!(
            resolve_existing(&root, "s", "web-1")
                .expect_err("escape")
                .kind,
            TransferErrorKind::Escapes
        );
        assert_eq!(
            ensure_dir(&root, "out/new", "web-1")
                .expect_err("escape")
                .kind,
            TransferErrorKind::Escapes
        );
        assert!(!outside.path().join("new").exists(), "nothing made outside");
        assert_eq!(
            ensure_dir(&root, "inlink/deeper", "web-1").expect("inside"),
            root.join("in/deeper")
        );
        assert_eq!(
            checked_rel("../x", "web-1").expect_err("dotdot").kind,
            TransferErrorKind::Escapes
        );
    }

    /// Makes a FIFO at `path`.
    #[cfg(unix)]
    fn mkfifo(path: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("no NUL");
        // SAFETY: a valid NUL-terminated path; mkfifo reads it and nothing else.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    }

    /// Runs `f` on a thread and waits for it under a deadline: a call that blocks forever fails the
    /// test instead of hanging it.
    fn within_deadline<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("returns within the deadline instead of blocking")
    }

    #[test]
    #[cfg(unix)] // FIFOs
    fn a_fifo_is_refused_at_once_as_a_source_and_as_a_partial_file() {
        let (_d, root) = folder();
        mkfifo(&root.join("pipe"));
        let r = root.clone();
        let err = within_deadline(move || open_for_read(&r, "pipe", "web-1").map(|_| ()))
            .expect_err("a fifo is not a file");
        assert_eq!(err.kind, TransferErrorKind::WrongKind);
        assert_eq!(err.message, "not a regular file: pipe (fifo) on web-1");

        // A FIFO planted where a write assembles its partial file.
        let meta = FileMeta {
            size: 3,
            mtime_ms: 0,
            mode: 0o644,
        };
        mkfifo(&root.join(partial_name("f", ResumeKey(7))));
        let r = root.clone();
        let err =
            within_deadline(move || plan_write(&r, "f", ResumeKey(7), meta, "web-2").map(|_| ()))
                .expect_err("a fifo is not a partial file");
        assert_eq!(err.kind, TransferErrorKind::WrongKind);
        assert!(
            err.message.starts_with("not a regular file: "),
            "{}",
            err.message
        );
        assert!(
            err.message
                .ends_with("(fifo) on web-2, where f is assembled: remove it"),
            "{}",
            err.message
        );
        let plan = WritePlan {
            dest: root.join("g"),
            partial: root.join("pipe"),
            have: 0,
            size: 3,
            hasher: blake3::Hasher::new(),
        };
        // Without a reader the kernel refuses a non-blocking open for writing (ENXIO).
        within_deadline(move || DiskWriter::open(&plan, 0, Arc::default()).map(|_| ()))
            .expect_err("no writing into a fifo");
    }

    #[test]
    fn a_wrong_digest_leaves_nothing_under_the_real_name() {
        let (_d, root) = folder();
        let meta = FileMeta {
            size: 6,
            mtime_ms: 1_000,
            mode: 0o644,
        };
        let plan = plan_write(&root, "dir/f", ResumeKey(1), meta, "web-2").expect("plan");
        assert_eq!(plan.have, 0);
        let written = Arc::new(AtomicU64::new(0));
        let w = DiskWriter::open(&plan, 0, written.clone()).expect("open");
        let (tx, rx) = mpsc::channel(2);
        tx.try_send(Bytes::from_static(b"abc")).expect("send");
        tx.try_send(Bytes::from_static(b"def")).expect("send");
        drop(tx);
        let w = w.run(rx).expect("run");
        assert_eq!(written.load(Ordering::Acquire), 6);
        assert_eq!(w.digest(), Digest(*blake3::hash(b"abcdef").as_bytes()));
        assert_ne!(w.digest(), Digest(*blake3::hash(b"abcdeX").as_bytes()));
        w.keep();
        assert!(!root.join("dir/f").exists());
        // A second attempt finds the bytes and the hash state.
        let again = plan_write(&root, "dir/f", ResumeKey(1), meta, "web-2").expect("plan");
        assert_eq!(again.have, 6);
        assert_eq!(
            digest(&again.hasher),
            Digest(*blake3::hash(b"abcdef").as_bytes())
        );
        let w = DiskWriter::open(&again, 6, Arc::default()).expect("open");
        w.finish(&again, meta).expect("finish");
        assert_eq!(fs::read(root.join("dir/f")).expect("read"), b"abcdef");
        assert!(!again.partial.exists());
    }

    #[test]
    fn a_large_file_is_written_back_as_it_arrives() {
        let (_d, root) = folder();
        let size = 3 * WRITE_BEHIND + 5;
        let meta = FileMeta {
            size,
            mtime_ms: 1_000,
            mode: 0o644,
        };
        let plan = plan_write(&root, "big", ResumeKey(2), meta, "web-2").expect("plan");
        let w = DiskWriter::open(&plan, 0, Arc::default()).expect("open");
        let (tx, rx) = mpsc::channel(4);
        let feeder = std::thread::spawn(move || {
            let chunk = Bytes::from(vec![7u8; CHUNK_SIZE]);
            let mut left = size;
            while left > 0 {
                let n = left.min(CHUNK_SIZE as u64);
                tx.blocking_send(chunk.slice(..n as usize)).expect("send");
                left -= n;
            }
        });
        let w = w.run(rx).expect("run");
        feeder.join().expect("feeder");
        // Every window was handed to the kernel and all but the last two waited for; on Linux
        // the kernel accepts the requests on any filesystem, tmpfs included.
        assert_eq!(w.written.load(Ordering::Acquire), size);
        assert_eq!((w.settled, w.behind), (2 * WRITE_BEHIND, 3 * WRITE_BEHIND));
        #[cfg(target_os = "linux")]
        assert!(w.write_behind, "the kernel refused a writeback request");
        w.finish(&plan, meta).expect("finish");
        assert_eq!(fs::metadata(root.join("big")).expect("stat").len(), size);
    }

    #[test]
    #[cfg(unix)] // Unix errno values
    fn disk_full_errors_say_no_space_on_the_agent() {
        let e = io::Error::from_raw_os_error(libc::ENOSPC);
        let t = io_failed(&e, "write big.iso", "web-2");
        assert_eq!(t.kind, TransferErrorKind::NoSpace);
        assert!(
            t.message.starts_with("no space left on web-2"),
            "{}",
            t.message
        );
        let e = io::Error::from_raw_os_error(libc::EFBIG);
        assert_eq!(io_failed(&e, "w", "a").kind, TransferErrorKind::NoSpace);
    }

    #[test]
    #[cfg(target_os = "linux")] // fallocate
    fn a_file_the_disk_cannot_hold_fails_before_any_data_moves() {
        let (_d, root) = folder();
        let meta = FileMeta {
            size: 1 << 62,
            mtime_ms: 0,
            mode: 0o644,
        };
        let plan = plan_write(&root, "huge", ResumeKey(3), meta, "web-2").expect("plan");
        let Err(e) = DiskWriter::open(&plan, 0, Arc::default()) else {
            panic!("4 EiB reserved on a test disk");
        };
        let t = io_failed(&e, "write huge", "web-2");
        assert_eq!(t.kind, TransferErrorKind::NoSpace, "{e}");
        assert!(
            t.message.starts_with("no space left on web-2 (write huge"),
            "{}",
            t.message
        );
        discard(&plan.partial);
    }

    #[test]
    fn the_source_resumes_only_after_a_matching_prefix() {
        let (_d, root) = folder();
        let data: Vec<u8> = (0..(CHUNK_SIZE * 2 + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        fs::write(root.join("f"), &data).expect("write");
        let run = |offset: u64, prefix: Option<Digest>| {
            let (file, meta) = open_for_read(&root, "f", "web-1").expect("open");
            let (tx, mut rx) = mpsc::channel(64);
            stream_file(file, meta, offset, prefix, "f", &tx);
            drop(tx);
            let mut frames = Vec::new();
            loop {
                match rx.blocking_recv() {
                    Some(ReadMsg::Frame(f)) => frames.push(f),
                    Some(ReadMsg::Data(d)) => frames.push(TransferFrame::Chunk(Chunk(d))),
                    Some(ReadMsg::Failed(e)) => panic!("{e}"),
                    None => break,
                }
            }
            frames
        };
        let good = Digest(*blake3::hash(&data[..100]).as_bytes());
        let frames = run(100, Some(good));
        assert_eq!(frames[0], TransferFrame::Begin { offset: 100 });
        let whole = Digest(*blake3::hash(&data).as_bytes());
        assert_eq!(frames.last(), Some(&TransferFrame::End { digest: whole }));
        let sent: usize = frames
            .iter()
            .map(|f| match f {
                TransferFrame::Chunk(c) => c.0.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(sent, data.len() - 100);
        let frames = run(100, Some(Digest([0; 32])));
        assert_eq!(
            frames[0],
            TransferFrame::Begin { offset: 0 },
            "bad prefix: start over"
        );
        assert_eq!(frames.last(), Some(&TransferFrame::End { digest: whole }));
    }
}
