//! Shared folders from the console: `flotilla ls`, `flotilla watch --files` and `flotilla cp`.
//!
//! A copy's ends are each `AGENT:PATH` or a local path (upload, download, agent to agent). Each file
//! is one transfer with an id chosen here and kept across retries: when the hub, an agent or this
//! console's link drops, [`copy`] reconnects and asks again, and the destination resumes from the
//! bytes it already holds once the source has checked them. Ctrl-C cancels: both ends drop the
//! partial file.

mod local;
pub mod progress;

use crate::client::{Client, ClientError, Login};
use flotilla_wire::files::{
    CopyEnd, CopyRequest, Entry, EntryKind, FileEvent, ListEnd, ListReply, ListRequest,
    TransferDone, TransferError, TransferErrorKind, TransferFrame, TransferId, WatchRequest,
    WriteKind,
};
use flotilla_wire::io::{FrameError, read_frame, write_frame};
use flotilla_wire::limits::{
    MAX_CONTROL_FRAME, MAX_EVENTS_FRAME, MAX_SNAPSHOT_FRAME, MAX_TRANSFER_FRAME,
};
use flotilla_wire::msg::StreamOpen;
use local::{LocalSink, LocalSource, meta_of};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Frames read ahead from the hub by a copy's reader task.
const FRAME_QUEUE: usize = 8;
/// Chunks read ahead of the network, or waiting for the disk.
const PIPELINE_DEPTH: usize = 4;
/// Bytes between two acknowledgements a download sends the hub.
const ACK_EVERY: u64 = 1024 * 1024;
/// First wait before a retry; doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(500);
/// Longest wait between retries: an agent reconnecting after a hub restart waits up to its own
/// back-off, so polling faster than this would only add load.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Time the hub gets to confirm a cancel (both ends cleaned).
const CANCEL_WAIT: Duration = Duration::from_secs(15);

/// One side of a copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// `AGENT:PATH`: a path in an agent's shared folder.
    Agent {
        /// Agent name or id.
        agent: String,
        /// Path relative to its shared folder (empty: the folder itself).
        path: String,
    },
    /// A path on this machine.
    Local(PathBuf),
}

impl Place {
    /// `AGENT:PATH` when the part before the first `:` names an agent (no `/` in it), else a local
    /// path (write `./a:b` for a local file with a colon, as with scp).
    pub fn parse(s: &str) -> Self {
        match s.split_once(':') {
            Some((agent, path)) if !agent.is_empty() && !agent.contains('/') => Self::Agent {
                agent: agent.to_owned(),
                path: path.to_owned(),
            },
            _ => Self::Local(PathBuf::from(s)),
        }
    }

    fn label(&self) -> String {
        match self {
            Self::Agent { agent, path } => format!("{agent}:{path}"),
            Self::Local(p) => p.display().to_string(),
        }
    }

    fn join(&self, name: &str) -> Self {
        match self {
            Self::Agent { agent, path } => Self::Agent {
                agent: agent.clone(),
                path: join_rel(path, name),
            },
            Self::Local(p) => Self::Local(p.join(name)),
        }
    }

    fn basename(&self) -> Option<String> {
        match self {
            Self::Agent { path, .. } => path
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            Self::Local(p) => p.file_name().and_then(|n| n.to_str()).map(str::to_owned),
        }
    }
}

fn join_rel(dir: &str, name: &str) -> String {
    let dir = dir.trim_end_matches('/');
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// Why a copy, listing or watch failed.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The hub could not be reached, or refused the request.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A transfer failed (the message names the agent and path).
    #[error("{0}")]
    Transfer(TransferError),
    /// A local file operation failed.
    #[error("{0}")]
    Local(String),
    /// The command line asked for something that cannot be done.
    #[error("{0}")]
    Usage(String),
    /// Ctrl-C.
    #[error("cancelled")]
    Cancelled,
}

// ---------------------------------------------------------------------------------------------
// ls

/// A listing of an agent's shared folder, from the hub's copy of its tree.
#[derive(Debug, Serialize)]
pub struct Listing {
    /// Agent id, name, whether online, how fresh.
    #[serde(flatten)]
    pub end: ListEnd,
    /// The path listed.
    pub path: String,
    /// Entries in path order.
    pub entries: Vec<Entry>,
}

/// Lists `path` in `agent`'s shared folder (children of a directory; the entry itself for a file).
pub async fn list(
    client: &Client,
    agent: &str,
    path: &str,
    recursive: bool,
) -> Result<Listing, FilesError> {
    let (mut send, mut recv) = client.open_stream(&StreamOpen::FileList).await?;
    let req = ListRequest {
        agent: agent.to_owned(),
        path: path.to_owned(),
        recursive,
    };
    let lost = |e: FrameError| {
        FilesError::Client(
            client
                .closed_reason()
                .unwrap_or(ClientError::Stream(e.to_string())),
        )
    };
    write_frame(&mut send, &req, MAX_CONTROL_FRAME)
        .await
        .map_err(lost)?;
    let _ = send.finish();
    let mut entries = Vec::new();
    loop {
        match read_frame::<ListReply, _>(&mut recv, MAX_SNAPSHOT_FRAME).await {
            Ok(Some(ListReply::Entries(mut e))) => entries.append(&mut e),
            Ok(Some(ListReply::End(end))) => {
                return Ok(Listing {
                    end,
                    path: path.trim_end_matches('/').to_owned(),
                    entries,
                });
            }
            Ok(Some(ListReply::Error(r))) => {
                return Err(FilesError::Client(ClientError::Refused(r)));
            }
            Ok(None) => {
                return Err(FilesError::Client(ClientError::Stream(
                    "hub ended the listing early".into(),
                )));
            }
            Err(e) => return Err(lost(e)),
        }
    }
}

/// `drwxr-xr-x` from a kind and mode.
pub fn mode_string(kind: &EntryKind, mode: u32) -> String {
    let t = match kind {
        EntryKind::Dir => 'd',
        EntryKind::Symlink { .. } => 'l',
        EntryKind::File => '-',
        EntryKind::Other => '?',
    };
    let mut s = String::with_capacity(10);
    s.push(t);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// `YYYY-MM-DD HH:MM` (UTC) for ms since the epoch.
pub fn utc_minute(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// The listing as `ls -l` would show it, names relative to the listed path.
pub fn listing_table(l: &Listing) -> String {
    let mut out = String::new();
    let prefix = if l.path.is_empty() {
        String::new()
    } else {
        format!("{}/", l.path)
    };
    for e in &l.entries {
        let name = e.path.strip_prefix(&prefix).unwrap_or(&e.path);
        let shown = match &e.kind {
            EntryKind::Dir => format!("{name}/"),
            EntryKind::Symlink { target } => format!("{name} -> {target}"),
            _ => name.to_owned(),
        };
        out.push_str(&format!(
            "{} {:>8} {} {}\n",
            mode_string(&e.kind, e.mode),
            crate::format::bytes(e.size),
            utc_minute(e.mtime_ms),
            shown
        ));
    }
    if !l.end.online {
        out.push_str(&format!(
            "({} is offline: its last known tree, as of {} UTC)\n",
            l.end.name,
            utc_minute(l.end.as_of_ms as i64)
        ));
    }
    if l.end.truncated {
        out.push_str(&format!(
            "({} shares more files than the hub lists: the listing is cut short)\n",
            l.end.name
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// watch --files

/// Subscribes to file events (of one agent, or all).
pub async fn watch_stream(
    client: &Client,
    agent: Option<String>,
) -> Result<(quinn::SendStream, quinn::RecvStream), FilesError> {
    let (mut send, recv) = client.open_stream(&StreamOpen::FileWatch).await?;
    write_frame(&mut send, &WatchRequest { agent }, MAX_CONTROL_FRAME)
        .await
        .map_err(|e| FilesError::Client(ClientError::Stream(e.to_string())))?;
    Ok((send, recv))
}

/// The next file event; `Ok(None)` when the hub ends the watch. Not cancel-safe.
pub async fn next_event(recv: &mut quinn::RecvStream) -> Result<Option<FileEvent>, FilesError> {
    match read_frame::<FileEvent, _>(recv, MAX_EVENTS_FRAME).await {
        Ok(Some(FileEvent::Error(r))) => Err(FilesError::Client(ClientError::Refused(r))),
        Ok(ev) => Ok(ev),
        Err(e) => Err(FilesError::Client(ClientError::Stream(e.to_string()))),
    }
}

/// A file event as one line of text.
pub fn event_line(ev: &FileEvent) -> String {
    match ev {
        FileEvent::Snapshot {
            name,
            entries,
            reason,
            ..
        } => format!("snapshot {name:<20} {entries} entries ({reason:?})"),
        FileEvent::Changed { name, changes, .. } => changes
            .iter()
            .map(|c| match c {
                flotilla_wire::files::Change::Upsert(e) => {
                    format!(
                        "changed  {name}:{} ({})",
                        e.path,
                        crate::format::bytes(e.size)
                    )
                }
                flotilla_wire::files::Change::Remove { path } => format!("removed  {name}:{path}"),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        FileEvent::Transfer(t) => {
            let state = match &t.state {
                flotilla_wire::files::TransferState::Failed(e) => format!("failed: {}", e.message),
                other => format!("{other:?}").to_lowercase(),
            };
            format!(
                "transfer {} {} -> {} {}/{} {state}",
                t.transfer,
                t.src,
                t.dst,
                crate::format::bytes(t.bytes),
                crate::format::bytes(t.size)
            )
        }
        FileEvent::Lagged { missed } => {
            format!("(missed {missed} file events: output fell behind)")
        }
        FileEvent::Error(r) => format!("error: {}", r.message),
    }
}

// ---------------------------------------------------------------------------------------------
// cp

/// How `copy` behaves.
#[derive(Clone, Debug)]
pub struct CopyOptions {
    /// Copy directory trees.
    pub recursive: bool,
    /// Keep retrying an interrupted transfer this long before giving up.
    pub retry_for: Duration,
}

impl Default for CopyOptions {
    fn default() -> Self {
        Self {
            recursive: false,
            retry_for: Duration::from_secs(300),
        }
    }
}

/// What a copy reports as it goes (a progress bar on a terminal, NDJSON with `--json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum CopyEvent {
    /// Data started to flow for one file.
    Started {
        /// Transfer id.
        transfer: String,
        /// Source.
        src: String,
        /// Destination.
        dst: String,
        /// File size.
        size: u64,
        /// Bytes already verified at the destination: the transfer resumes here.
        offset: u64,
        /// Bytes of an earlier partial file thrown away because they did not match the source.
        discarded: u64,
        /// Attempt number (1 for the first).
        attempt: u32,
    },
    /// Bytes written at the destination so far.
    Progress {
        /// Transfer id.
        transfer: String,
        /// Source.
        src: String,
        /// Destination.
        dst: String,
        /// Bytes, counted from 0.
        written: u64,
        /// File size.
        size: u64,
    },
    /// An attempt was interrupted; another follows after `delay_ms`.
    Retrying {
        /// Transfer id.
        transfer: String,
        /// Source.
        src: String,
        /// Destination.
        dst: String,
        /// What went wrong.
        error: String,
        /// The attempt that failed.
        attempt: u32,
        /// Wait before the next.
        delay_ms: u64,
    },
    /// One file verified and in place.
    Done {
        /// Transfer id.
        transfer: String,
        /// Source.
        src: String,
        /// Destination.
        dst: String,
        /// File size.
        size: u64,
        /// Bytes that were already there from an earlier attempt.
        resumed_from: u64,
        /// BLAKE3 of the file, checked at the destination.
        blake3: String,
    },
    /// A directory was made at the destination.
    Mkdir {
        /// The directory.
        dst: String,
    },
    /// Something in a tree was not copied (links, special files).
    Skipped {
        /// What.
        src: String,
        /// Why.
        reason: String,
    },
}

/// What a copy did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    /// Files copied.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Directories made.
    pub dirs: u64,
    /// Entries skipped.
    pub skipped: u64,
}

/// A connection kept across files and replaced after it drops.
struct Session<'a> {
    login: &'a Login,
    client: Option<Client>,
}

impl Session<'_> {
    async fn client(&mut self) -> Result<&Client, ClientError> {
        if self
            .client
            .as_ref()
            .is_some_and(|c| c.closed_reason().is_some())
        {
            self.client = None;
        }
        if self.client.is_none() {
            self.client = Some(Client::connect_bulk(self.login).await?);
        }
        self.client
            .as_ref()
            .ok_or_else(|| ClientError::Stream("no connection".into()))
    }

    async fn close(self) {
        if let Some(c) = self.client {
            c.close().await;
        }
    }
}

/// Copies `src` to `dst` (each an agent path or a local path), reporting to `on_event`. Cancelling
/// `cancel` cancels the transfer in flight on both ends.
pub async fn copy(
    login: &Login,
    src: &Place,
    dst: &Place,
    opts: &CopyOptions,
    cancel: &CancellationToken,
    on_event: &mut (dyn FnMut(&CopyEvent) + Send),
) -> Result<CopyReport, FilesError> {
    if matches!((src, dst), (Place::Local(_), Place::Local(_))) {
        return Err(FilesError::Usage(
            "both ends are local: one side must be AGENT:PATH".into(),
        ));
    }
    let mut session = Session {
        login,
        client: None,
    };
    let result = copy_in(&mut session, src, dst, opts, cancel, on_event).await;
    session.close().await;
    result
}

/// What a source path is.
enum SourceKind {
    File,
    Dir,
}

async fn source_kind(session: &mut Session<'_>, src: &Place) -> Result<SourceKind, FilesError> {
    match src {
        Place::Local(p) => match std::fs::symlink_metadata(p) {
            Ok(md) if md.is_dir() => Ok(SourceKind::Dir),
            Ok(md) if md.is_file() => Ok(SourceKind::File),
            Ok(_) => Err(FilesError::Usage(format!(
                "{} is not a regular file or directory",
                p.display()
            ))),
            Err(e) => Err(FilesError::Local(format!("{}: {e}", p.display()))),
        },
        Place::Agent { agent, path } => {
            let client = session.client().await?;
            match stat(client, agent, path).await? {
                Some(EntryKind::Dir) => Ok(SourceKind::Dir),
                _ => Ok(SourceKind::File),
            }
        }
    }
}

/// The kind of `path` on `agent` per the hub's tree; `None` if it does not exist.
async fn stat(client: &Client, agent: &str, path: &str) -> Result<Option<EntryKind>, FilesError> {
    if path.trim_end_matches('/').is_empty() {
        return Ok(Some(EntryKind::Dir));
    }
    match list(client, agent, path, false).await {
        Ok(l) => {
            let p = path.trim_end_matches('/');
            match l.entries.as_slice() {
                [one] if one.path == p && one.kind != EntryKind::Dir => Ok(Some(one.kind.clone())),
                _ => Ok(Some(EntryKind::Dir)),
            }
        }
        // Missing, or a path the hub refuses: the transfer itself then says why in its own words.
        Err(FilesError::Client(ClientError::Refused(r)))
            if (r.code == flotilla_wire::ErrorCode::NotFound
                && r.message.ends_with("not found"))
                || r.code == flotilla_wire::ErrorCode::BadRequest =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

async fn dest_is_dir(session: &mut Session<'_>, dst: &Place) -> Result<bool, FilesError> {
    match dst {
        Place::Local(p) => Ok(p.is_dir()),
        Place::Agent { agent, path } => {
            if path.ends_with('/') || path.is_empty() {
                return Ok(true);
            }
            let client = session.client().await?;
            Ok(stat(client, agent, path).await? == Some(EntryKind::Dir))
        }
    }
}

async fn copy_in(
    session: &mut Session<'_>,
    src: &Place,
    dst: &Place,
    opts: &CopyOptions,
    cancel: &CancellationToken,
    on_event: &mut (dyn FnMut(&CopyEvent) + Send),
) -> Result<CopyReport, FilesError> {
    let mut report = CopyReport::default();
    let kind = source_kind(session, src).await?;
    let into_dir = dest_is_dir(session, dst).await?;
    let base_name = src.basename();
    let target = match (&base_name, into_dir) {
        (Some(name), true) => dst.join(name),
        _ => dst.clone(),
    };
    match kind {
        SourceKind::File => {
            let done = copy_file(session, src, &target, opts, cancel, on_event).await?;
            report.files = 1;
            report.bytes = done.size;
        }
        SourceKind::Dir if !opts.recursive => {
            return Err(FilesError::Usage(format!(
                "{} is a directory: use cp -r",
                src.label()
            )));
        }
        SourceKind::Dir => {
            let entries = tree_of(session, src).await?;
            make_dir(session, &target, opts, cancel, on_event).await?;
            report.dirs += 1;
            let root = match src {
                Place::Agent { path, .. } => path.trim_end_matches('/').to_owned(),
                Place::Local(_) => String::new(),
            };
            for (rel, kind) in entries {
                if cancel.is_cancelled() {
                    return Err(FilesError::Cancelled);
                }
                let rel = if root.is_empty() {
                    rel
                } else {
                    rel.strip_prefix(&format!("{root}/"))
                        .unwrap_or(&rel)
                        .to_owned()
                };
                let from = src.join(&rel);
                let to = target.join(&rel);
                match kind {
                    EntryKind::Dir => {
                        make_dir(session, &to, opts, cancel, on_event).await?;
                        report.dirs += 1;
                    }
                    EntryKind::File => {
                        let done = copy_file(session, &from, &to, opts, cancel, on_event).await?;
                        report.files += 1;
                        report.bytes += done.size;
                    }
                    EntryKind::Symlink { .. } | EntryKind::Other => {
                        report.skipped += 1;
                        on_event(&CopyEvent::Skipped {
                            src: from.label(),
                            reason: "links and special files are not copied".into(),
                        });
                    }
                }
            }
        }
    }
    Ok(report)
}

/// Every entry below a source directory, parents before children, paths relative to it (for a
/// local source) or to the agent's folder (for an agent).
async fn tree_of(
    session: &mut Session<'_>,
    src: &Place,
) -> Result<Vec<(String, EntryKind)>, FilesError> {
    match src {
        Place::Agent { agent, path } => {
            let client = session.client().await?;
            let l = list(client, agent, path, true).await?;
            // Sorted by path, so a parent always comes before what it holds.
            Ok(l.entries.into_iter().map(|e| (e.path, e.kind)).collect())
        }
        Place::Local(root) => {
            let root = root.clone();
            tokio::task::spawn_blocking(move || walk_local(&root))
                .await
                .map_err(|e| FilesError::Local(e.to_string()))?
        }
    }
}

fn walk_local(root: &Path) -> Result<Vec<(String, EntryKind)>, FilesError> {
    let mut out = Vec::new();
    let mut pending = vec![String::new()];
    while let Some(dir) = pending.pop() {
        let abs = root.join(&dir);
        let read = std::fs::read_dir(&abs)
            .map_err(|e| FilesError::Local(format!("{}: {e}", abs.display())))?;
        let mut names: Vec<_> = read.flatten().collect();
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let rel = join_rel(&dir, &name);
            let Ok(ft) = e.file_type() else { continue };
            let kind = if ft.is_dir() {
                pending.push(rel.clone());
                EntryKind::Dir
            } else if ft.is_file() {
                EntryKind::File
            } else if ft.is_symlink() {
                EntryKind::Symlink {
                    target: String::new(),
                }
            } else {
                EntryKind::Other
            };
            out.push((rel, kind));
        }
    }
    Ok(out)
}

async fn make_dir(
    session: &mut Session<'_>,
    dst: &Place,
    opts: &CopyOptions,
    cancel: &CancellationToken,
    on_event: &mut (dyn FnMut(&CopyEvent) + Send),
) -> Result<(), FilesError> {
    match dst {
        Place::Local(p) => std::fs::create_dir_all(p)
            .map_err(|e| FilesError::Local(format!("create {}: {e}", p.display())))?,
        Place::Agent { .. } => {
            let src = Place::Local(PathBuf::new());
            with_retries(session, &src, dst, WriteKind::Dir, opts, cancel, on_event).await?;
        }
    }
    on_event(&CopyEvent::Mkdir { dst: dst.label() });
    Ok(())
}

async fn copy_file(
    session: &mut Session<'_>,
    src: &Place,
    dst: &Place,
    opts: &CopyOptions,
    cancel: &CancellationToken,
    on_event: &mut (dyn FnMut(&CopyEvent) + Send),
) -> Result<TransferDone, FilesError> {
    with_retries(session, src, dst, WriteKind::File, opts, cancel, on_event).await
}

/// Why one attempt ended without the file in place.
enum Attempt {
    /// Worth another attempt (a party dropped, an agent is offline).
    Retry(String),
    /// Final.
    Fatal(FilesError),
    /// Cancelled, both ends clean.
    Cancelled,
}

impl From<TransferError> for Attempt {
    fn from(e: TransferError) -> Self {
        // Busy is what a console sees when its own previous attempt has not let go yet.
        if e.kind.retryable() || e.kind == TransferErrorKind::Busy {
            Self::Retry(e.message)
        } else if e.kind == TransferErrorKind::Cancelled {
            Self::Cancelled
        } else {
            Self::Fatal(FilesError::Transfer(e))
        }
    }
}

fn retry(e: impl std::fmt::Display) -> Attempt {
    Attempt::Retry(e.to_string())
}

/// Labels and ids shared by the attempts of one file.
struct Job<'a> {
    transfer: TransferId,
    src: &'a Place,
    dst: &'a Place,
    kind: WriteKind,
    attempt: u32,
}

impl Job<'_> {
    fn started(&self, size: u64, offset: u64, discarded: u64) -> CopyEvent {
        CopyEvent::Started {
            transfer: self.transfer.to_string(),
            src: self.src.label(),
            dst: self.dst.label(),
            size,
            offset,
            discarded,
            attempt: self.attempt,
        }
    }

    fn progress(&self, written: u64, size: u64) -> CopyEvent {
        CopyEvent::Progress {
            transfer: self.transfer.to_string(),
            src: self.src.label(),
            dst: self.dst.label(),
            written,
            size,
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn with_retries(
    session: &mut Session<'_>,
    src: &Place,
    dst: &Place,
    kind: WriteKind,
    opts: &CopyOptions,
    cancel: &CancellationToken,
    on_event: &mut (dyn FnMut(&CopyEvent) + Send),
) -> Result<TransferDone, FilesError> {
    let mut job = Job {
        transfer: TransferId(u64::from_le_bytes(flotilla_certs::random_bytes())),
        src,
        dst,
        kind,
        attempt: 0,
    };
    let deadline = Instant::now() + opts.retry_for;
    let mut delay = RETRY_MIN;
    loop {
        job.attempt += 1;
        let result = match session.client().await {
            Ok(client) => match (src, dst) {
                (_, Place::Agent { .. }) if kind == WriteKind::Dir => {
                    attempt_remote(client, &job, cancel, on_event).await
                }
                (Place::Agent { .. }, Place::Agent { .. }) => {
                    attempt_remote(client, &job, cancel, on_event).await
                }
                (Place::Local(path), Place::Agent { .. }) => {
                    attempt_upload(client, &job, path, cancel, on_event).await
                }
                (Place::Agent { .. }, Place::Local(path)) => {
                    attempt_download(client, &job, path, cancel, on_event).await
                }
                (Place::Local(_), Place::Local(_)) => Err(Attempt::Fatal(FilesError::Usage(
                    "both ends are local".into(),
                ))),
            },
            Err(e) if reconnectable(&e) => Err(retry(e)),
            Err(e) => Err(Attempt::Fatal(e.into())),
        };
        match result {
            Ok(done) => {
                if kind == WriteKind::File {
                    on_event(&CopyEvent::Done {
                        transfer: job.transfer.to_string(),
                        src: src.label(),
                        dst: dst.label(),
                        size: done.size,
                        resumed_from: done.resumed_from,
                        blake3: done.digest.to_string(),
                    });
                }
                return Ok(done);
            }
            Err(Attempt::Cancelled) => return Err(FilesError::Cancelled),
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Retry(why)) => {
                if cancel.is_cancelled() {
                    return Err(FilesError::Cancelled);
                }
                if Instant::now() + delay > deadline {
                    return Err(FilesError::Transfer(TransferError::new(
                        TransferErrorKind::Interrupted,
                        format!(
                            "{} -> {}: gave up after {} s of retries: {why}",
                            src.label(),
                            dst.label(),
                            opts.retry_for.as_secs()
                        ),
                    )));
                }
                on_event(&CopyEvent::Retrying {
                    transfer: job.transfer.to_string(),
                    src: src.label(),
                    dst: dst.label(),
                    error: why,
                    attempt: job.attempt,
                    delay_ms: delay.as_millis() as u64,
                });
                tokio::select! {
                    _ = cancel.cancelled() => return Err(FilesError::Cancelled),
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Whether dialling the hub again later may work: it is down, restarting or busy, not refusing us.
fn reconnectable(e: &ClientError) -> bool {
    use flotilla_certs::dial::DialError;
    use flotilla_wire::ErrorCode;
    match e {
        ClientError::Dial(DialError::Unreachable(_) | DialError::Protocol(_))
        | ClientError::Stream(_) => true,
        ClientError::Dial(DialError::Refused(r)) => matches!(
            r.code,
            ErrorCode::ShuttingDown
                | ErrorCode::Timeout
                | ErrorCode::Internal
                | ErrorCode::Replaced
        ),
        _ => false,
    }
}

/// Reads frames from the hub in a task of its own, so waiting for one never races a cancel.
struct Frames {
    rx: mpsc::Receiver<Result<TransferFrame, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Frames {
    fn spawn(mut recv: quinn::RecvStream) -> Self {
        let (tx, rx) = mpsc::channel(FRAME_QUEUE);
        let task = tokio::spawn(async move {
            loop {
                let r = read_frame::<TransferFrame, _>(&mut recv, MAX_TRANSFER_FRAME).await;
                let end = !matches!(r, Ok(Some(_)));
                let item = match r {
                    Ok(Some(f)) => Ok(f),
                    Ok(None) => Err("the hub ended the transfer stream".to_string()),
                    Err(e) => Err(reset_words(&e)),
                };
                if tx.send(item).await.is_err() || end {
                    return;
                }
            }
        });
        Self { rx, task }
    }

    /// The next frame, or why there is none. Cancel-safe.
    async fn next(&mut self) -> Result<TransferFrame, String> {
        self.rx
            .recv()
            .await
            .unwrap_or_else(|| Err("the hub ended the transfer stream".into()))
    }
}

impl Drop for Frames {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Words for a broken transfer stream; a reset carries the hub's code.
fn reset_words(e: &FrameError) -> String {
    if let FrameError::Io(io) = e
        && let Some(quinn::ReadError::Reset(code)) = io
            .get_ref()
            .and_then(|i| i.downcast_ref::<quinn::ReadError>())
        && let Some(code) = flotilla_wire::ErrorCode::from_u32(code.into_inner())
    {
        return format!("the hub stopped the transfer ({code})");
    }
    format!("transfer stream: {e}")
}

async fn open_copy(
    client: &Client,
    req: &CopyRequest,
) -> Result<(quinn::SendStream, Frames), Attempt> {
    let (mut send, recv) = client.open_stream(&StreamOpen::Copy).await.map_err(retry)?;
    write_frame(&mut send, req, MAX_CONTROL_FRAME)
        .await
        .map_err(retry)?;
    Ok((send, Frames::spawn(recv)))
}

fn agent_end(p: &Place) -> CopyEnd {
    match p {
        Place::Agent { agent, path } => CopyEnd::Agent {
            agent: agent.clone(),
            path: path.clone(),
        },
        Place::Local(path) => CopyEnd::Local {
            path: path.display().to_string(),
            meta: None,
        },
    }
}

/// Sends `Cancel` and waits for the hub to confirm both ends are clean.
async fn cancel_remote(send: &mut quinn::SendStream, frames: &mut Frames) -> Attempt {
    let _ = write_frame(send, &TransferFrame::Cancel, MAX_TRANSFER_FRAME).await;
    let wait = async {
        loop {
            match frames.next().await {
                Ok(TransferFrame::Cancelled) => return Attempt::Cancelled,
                Ok(TransferFrame::Failed(e)) if e.kind == TransferErrorKind::Cancelled => {
                    return Attempt::Fatal(FilesError::Transfer(e));
                }
                Ok(TransferFrame::Done(_)) => return Attempt::Cancelled,
                Ok(_) => {}
                Err(_) => return Attempt::Cancelled,
            }
        }
    };
    tokio::time::timeout(CANCEL_WAIT, wait)
        .await
        .unwrap_or(Attempt::Cancelled)
}

/// Agent to agent (or making a directory on an agent): the hub moves the data; this only watches.
async fn attempt_remote(
    client: &Client,
    job: &Job<'_>,
    cancel: &CancellationToken,
    on_event: &mut (dyn FnMut(&CopyEvent) + Send),
) -> Result<TransferDone, Attempt> {
    let req = CopyRequest {
        transfer: job.transfer,
        src: agent_end(job.src),
        dst: agent_end(job.dst),
        kind: job.kind,
    };
    let (mut send, mut frames) = open_copy(client, &req).await?;
    let mut size = 0;
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => return Err(cancel_remote(&mut send, &mut frames).await),
            f = frames.next() => f.map_err(retry)?,
        };
        match frame {
            TransferFrame::Started(s) => {
                size = s.size;
                on_event(&job.started(s.size, s.offset, s.discarded));
            }
            TransferFrame::Progress { written } => on_event(&job.progress(written, size)),
            TransferFrame::Done(d) => {
                let _ = send.finish();
                return Ok(d);
            }
            TransferFrame::Failed(e) => return Err(e.into()),
            TransferFrame::Cancelled => return Err(Attempt::Cancelled),
            other => {
                return Err(Attempt::Fatal(FilesError::Transfer(TransferError::new(
                    TransferErrorKind::Protocol,
                    format!("hub sent {other:?} to a watching console"),
                ))));
            }
        }
    }
}

/// What the blocking reader of an upload hands the network side.
enum Upload {
    Chunk(Vec<u8>),
    End(flotilla_wire::files::Digest),
    Failed(String),
}

/// Local file to an agent: this console is the source.
async fn attempt_upload(
    client: &Client,
    job: &Job<'_>,
    path: &Path,
    cancel: &CancellationToken,
    on_event: &mut (dyn FnMut(&CopyEvent) + Send),
) -> Result<TransferDone, Attempt> {
    let local_err =
        |e: std::io::Error| Attempt::Fatal(FilesError::Local(format!("{}: {e}", path.display())));
    let abs = std::fs::canonicalize(path).map_err(local_err)?;
    let md = std::fs::metadata(&abs).map_err(local_err)?;
    if !md.is_file() {
        return Err(Attempt::Fatal(FilesError::Usage(format!(
            "{} is not a regular file",
            path.display()
        ))));
    }
    let meta = meta_of(&md);
    let req = CopyRequest {
        transfer: job.transfer,
        src: CopyEnd::Local {
            path: abs.display().to_string(),
            meta: Some(meta),
        },
        dst: agent_end(job.dst),
        kind: WriteKind::File,
    };
    let (mut send, mut frames) = open_copy(client, &req).await?;
    let (offset, prefix) = {
        let frame = tokio::select! {
            _ = cancel.cancelled() => return Err(cancel_remote(&mut send, &mut frames).await),
            f = frames.next() => f.map_err(retry)?,
        };
        match frame {
            TransferFrame::ReadFrom { offset, prefix } => (offset, prefix),
            TransferFrame::Failed(e) => return Err(e.into()),
            other => {
                return Err(Attempt::Fatal(FilesError::Transfer(TransferError::new(
                    TransferErrorKind::Protocol,
                    format!("hub sent {other:?} before the data"),
                ))));
            }
        }
    };
    let p = abs.clone();
    let source = tokio::task::spawn_blocking(move || LocalSource::open(&p, meta, offset, prefix))
        .await
        .map_err(|e| Attempt::Fatal(FilesError::Local(e.to_string())))?
        .map_err(local_err)?;
    let start = source.start;
    write_frame(
        &mut send,
        &TransferFrame::Begin { offset: start },
        MAX_TRANSFER_FRAME,
    )
    .await
    .map_err(retry)?;
    let (tx, mut data) = mpsc::channel::<Upload>(PIPELINE_DEPTH);
    let reader = tokio::task::spawn_blocking(move || {
        let mut source = source;
        loop {
            let msg = match source.next_chunk() {
                Ok(Some(c)) => Upload::Chunk(c),
                Ok(None) => Upload::End(source.digest()),
                Err(e) => Upload::Failed(e.to_string()),
            };
            let last = !matches!(msg, Upload::Chunk(_));
            if tx.blocking_send(msg).is_err() || last {
                return;
            }
        }
    });
    let _reader = AbortOnDrop(reader);
    let mut sending = true;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Err(cancel_remote(&mut send, &mut frames).await),
            msg = data.recv(), if sending => match msg {
                Some(Upload::Chunk(c)) => {
                    let frame = TransferFrame::Chunk(flotilla_wire::files::Chunk(c));
                    if let Err(e) = write_frame(&mut send, &frame, MAX_TRANSFER_FRAME).await {
                        return Err(why_stopped(&mut frames, e).await);
                    }
                }
                Some(Upload::End(digest)) => {
                    let end = TransferFrame::End { digest };
                    if let Err(e) = write_frame(&mut send, &end, MAX_TRANSFER_FRAME).await {
                        return Err(why_stopped(&mut frames, e).await);
                    }
                    sending = false;
                }
                Some(Upload::Failed(why)) => {
                    let err = TransferError::new(
                        TransferErrorKind::SourceChanged,
                        format!("{}: {why}", path.display()),
                    );
                    let _ = write_frame(&mut send, &TransferFrame::Failed(err.clone()), MAX_TRANSFER_FRAME).await;
                    let _ = send.finish();
                    return Err(Attempt::Fatal(FilesError::Transfer(err)));
                }
                None => sending = false,
            },
            f = frames.next() => match f.map_err(retry)? {
                TransferFrame::Started(s) => on_event(&job.started(s.size, s.offset, s.discarded)),
                TransferFrame::Progress { written } => on_event(&job.progress(written, meta.size)),
                TransferFrame::Done(d) => {
                    let _ = send.finish();
                    return Ok(d);
                }
                TransferFrame::Failed(e) => return Err(e.into()),
                TransferFrame::Cancelled => return Err(Attempt::Cancelled),
                other => {
                    return Err(Attempt::Fatal(FilesError::Transfer(TransferError::new(
                        TransferErrorKind::Protocol,
                        format!("hub sent {other:?} during an upload"),
                    ))));
                }
            },
        }
    }
}

/// Longest wait, once the hub stopped taking an upload's data, for the frame saying why.
/// The hub sends it before it stops the stream, so it is normally already queued.
const WHY_STOPPED: Duration = Duration::from_secs(5);

/// An upload's data could not be written: the hub stops taking it once the transfer failed, and
/// its `Failed` frame says why (no space left on the agent is final, not worth a retry). Only
/// without such a frame is the attempt retried, with the write's error.
async fn why_stopped(frames: &mut Frames, write_error: impl std::fmt::Display) -> Attempt {
    let failure = tokio::time::timeout(WHY_STOPPED, async {
        loop {
            match frames.next().await {
                Ok(TransferFrame::Failed(e)) => return Some(Attempt::from(e)),
                Ok(TransferFrame::Cancelled) => return Some(Attempt::Cancelled),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    })
    .await;
    failure.ok().flatten().unwrap_or_else(|| retry(write_error))
}

/// Aborts a task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Words for a local write failure; a full disk says so.
fn local_write_error(e: &std::io::Error, path: &Path) -> TransferError {
    match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => TransferError::new(
            TransferErrorKind::NoSpace,
            format!(
                "no space left on this machine (writing {}: {e})",
                path.display()
            ),
        ),
        _ => TransferError::new(
            TransferErrorKind::Io,
            format!("writing {}: {e}", path.display()),
        ),
    }
}

/// Tells the hub this end failed, and finishes the stream.
async fn tell_failed(send: &mut quinn::SendStream, err: TransferError) -> TransferError {
    let _ = write_frame(
        send,
        &TransferFrame::Failed(err.clone()),
        MAX_TRANSFER_FRAME,
    )
    .await;
    let _ = send.finish();
    err
}

/// An agent's file to a local path: this console is the destination.
async fn attempt_download(
    client: &Client,
    job: &Job<'_>,
    path: &Path,
    cancel: &CancellationToken,
    on_event: &mut (dyn FnMut(&CopyEvent) + Send),
) -> Result<TransferDone, Attempt> {
    let dest = std::path::absolute(path)
        .map_err(|e| Attempt::Fatal(FilesError::Local(format!("{}: {e}", path.display()))))?;
    let req = CopyRequest {
        transfer: job.transfer,
        src: agent_end(job.src),
        dst: CopyEnd::Local {
            path: dest.display().to_string(),
            meta: None,
        },
        kind: WriteKind::File,
    };
    let (mut send, mut frames) = open_copy(client, &req).await?;
    let (meta, key) = {
        let frame = tokio::select! {
            _ = cancel.cancelled() => return Err(cancel_remote(&mut send, &mut frames).await),
            f = frames.next() => f.map_err(retry)?,
        };
        match frame {
            TransferFrame::Prepare { meta, resume_key } => (meta, resume_key),
            TransferFrame::Failed(e) => return Err(e.into()),
            other => {
                return Err(Attempt::Fatal(FilesError::Transfer(TransferError::new(
                    TransferErrorKind::Protocol,
                    format!("hub sent {other:?} before the data"),
                ))));
            }
        }
    };
    let d = dest.clone();
    let sink = match tokio::task::spawn_blocking(move || LocalSink::plan(&d, key, meta)).await {
        Ok(Ok(sink)) => sink,
        Ok(Err(e)) => {
            let err = local_write_error(&e, &dest);
            let _ = write_frame(
                &mut send,
                &TransferFrame::Failed(err.clone()),
                MAX_TRANSFER_FRAME,
            )
            .await;
            return Err(Attempt::Fatal(FilesError::Transfer(err)));
        }
        Err(e) => return Err(Attempt::Fatal(FilesError::Local(e.to_string()))),
    };
    let have = sink.have;
    let ready = TransferFrame::Ready {
        offset: have,
        prefix: sink.prefix(),
    };
    write_frame(&mut send, &ready, MAX_TRANSFER_FRAME)
        .await
        .map_err(retry)?;
    let start = {
        let frame = tokio::select! {
            _ = cancel.cancelled() => {
                let a = cancel_remote(&mut send, &mut frames).await;
                sink.discard();
                return Err(a);
            }
            f = frames.next() => f.map_err(retry)?,
        };
        match frame {
            TransferFrame::Begin { offset } if offset == 0 || offset == have => offset,
            TransferFrame::Failed(e) => {
                if e.kind.retryable() {
                    sink.keep();
                } else {
                    sink.discard();
                }
                return Err(e.into());
            }
            other => {
                return Err(Attempt::Fatal(FilesError::Transfer(TransferError::new(
                    TransferErrorKind::Protocol,
                    format!("hub sent {other:?} instead of the data"),
                ))));
            }
        }
    };
    on_event(&job.started(meta.size, start, if start < have { have } else { 0 }));
    // The disk side runs on a blocking thread fed through a short queue.
    let (tx, rx) = mpsc::channel::<Vec<u8>>(PIPELINE_DEPTH);
    let mut sink = sink;
    let writer = tokio::task::spawn_blocking(move || {
        let mut rx = rx;
        let r = sink.begin(start).and_then(|()| {
            while let Some(chunk) = rx.blocking_recv() {
                sink.write(&chunk)?;
            }
            Ok(())
        });
        (sink, r)
    });
    let mut tx = Some(tx);
    let mut received = start;
    let mut acked = start;
    let ending: Result<TransferFrame, String> = loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => break Ok(TransferFrame::Cancel),
            f = frames.next() => f,
        };
        match frame {
            Ok(TransferFrame::Chunk(c)) => {
                received += c.0.len() as u64;
                let Some(sender) = tx.as_ref() else { continue };
                if sender.send(c.0).await.is_err() {
                    tx = None;
                    break Ok(TransferFrame::Failed(TransferError::new(
                        TransferErrorKind::Io,
                        "local writer stopped".to_string(),
                    )));
                }
                on_event(&job.progress(received, meta.size));
                if received - acked >= ACK_EVERY {
                    acked = received;
                    let _ = write_frame(
                        &mut send,
                        &TransferFrame::Ack { written: received },
                        MAX_TRANSFER_FRAME,
                    )
                    .await;
                }
            }
            other => break other,
        }
    };
    drop(tx);
    let (sink, wrote) = writer
        .await
        .map_err(|e| Attempt::Fatal(FilesError::Local(e.to_string())))?;
    if let Err(e) = wrote {
        let err = tell_failed(&mut send, local_write_error(&e, &dest)).await;
        sink.discard();
        return Err(Attempt::Fatal(FilesError::Transfer(err)));
    }
    match ending {
        Ok(TransferFrame::End { digest }) => {
            let got = sink.digest();
            if received != meta.size || got != digest {
                let err = TransferError::new(
                    TransferErrorKind::HashMismatch,
                    format!(
                        "{}: BLAKE3 of the data received ({got}) does not match the source ({digest}); nothing was written under its name",
                        dest.display()
                    ),
                );
                let err = tell_failed(&mut send, err).await;
                sink.discard();
                return Err(Attempt::Fatal(FilesError::Transfer(err)));
            }
            let d = dest.clone();
            let finished = tokio::task::spawn_blocking(move || sink.finish(meta))
                .await
                .map_err(|e| Attempt::Fatal(FilesError::Local(e.to_string())))?;
            if let Err(e) = finished {
                let err = tell_failed(&mut send, local_write_error(&e, &d)).await;
                return Err(Attempt::Fatal(FilesError::Transfer(err)));
            }
            let done = TransferDone {
                size: meta.size,
                digest: got,
                resumed_from: start,
            };
            let _ = write_frame(
                &mut send,
                &TransferFrame::Done(done.clone()),
                MAX_TRANSFER_FRAME,
            )
            .await;
            let _ = send.finish();
            let _ = tokio::time::timeout(CANCEL_WAIT, send.stopped()).await;
            Ok(done)
        }
        Ok(TransferFrame::Cancel) => {
            let _ = write_frame(&mut send, &TransferFrame::Cancel, MAX_TRANSFER_FRAME).await;
            let _ = send.finish();
            sink.discard();
            // The hub ends the stream once the source is stopped and the cancel recorded.
            let ended = async { while frames.next().await.is_ok() {} };
            let _ = tokio::time::timeout(CANCEL_WAIT, ended).await;
            Err(Attempt::Cancelled)
        }
        Ok(TransferFrame::Failed(e)) => {
            if e.kind.retryable() {
                sink.keep();
            } else {
                sink.discard();
            }
            Err(e.into())
        }
        Ok(other) => {
            sink.keep();
            Err(Attempt::Fatal(FilesError::Transfer(TransferError::new(
                TransferErrorKind::Protocol,
                format!("hub sent {other:?} during the data"),
            ))))
        }
        Err(why) => {
            sink.keep();
            Err(Attempt::Retry(why))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_parse_like_scp() {
        assert_eq!(
            Place::parse("web-1:docs/a.txt"),
            Place::Agent {
                agent: "web-1".into(),
                path: "docs/a.txt".into()
            }
        );
        assert_eq!(
            Place::parse("web-1:"),
            Place::Agent {
                agent: "web-1".into(),
                path: "".into()
            }
        );
        assert_eq!(Place::parse("./a:b"), Place::Local("./a:b".into()));
        assert_eq!(Place::parse("/tmp/x"), Place::Local("/tmp/x".into()));
        assert_eq!(Place::parse(":x"), Place::Local(":x".into()));
        assert_eq!(
            Place::parse("web-1:dir/").basename(),
            Some("dir".to_string())
        );
        assert_eq!(Place::parse("web-1:").join("f"), Place::parse("web-1:f"));
    }

    #[test]
    fn listings_read_like_ls() {
        assert_eq!(mode_string(&EntryKind::Dir, 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(&EntryKind::File, 0o640), "-rw-r-----");
        assert_eq!(utc_minute(0), "1970-01-01 00:00");
        assert_eq!(utc_minute(1_700_000_000_000), "2023-11-14 22:13");
        assert_eq!(utc_minute(-60_000), "1969-12-31 23:59");
        let l = Listing {
            end: ListEnd {
                agent: flotilla_wire::IdentityId::from_random(flotilla_wire::Role::Agent, [1; 8]),
                name: "web-1".into(),
                online: true,
                as_of_ms: 0,
                total: 2,
                truncated: false,
            },
            path: "docs".into(),
            entries: vec![
                Entry {
                    path: "docs/a".into(),
                    kind: EntryKind::File,
                    size: 2048,
                    mtime_ms: 0,
                    mode: 0o644,
                },
                Entry {
                    path: "docs/l".into(),
                    kind: EntryKind::Symlink {
                        target: "../x".into(),
                    },
                    size: 4,
                    mtime_ms: 0,
                    mode: 0o777,
                },
            ],
        };
        assert_eq!(
            listing_table(&l),
            "-rw-r--r--     2.0K 1970-01-01 00:00 a\nlrwxrwxrwx       4B 1970-01-01 00:00 l -> ../x\n"
        );
    }
}
