//! `flotilla cp`: plans a copy (files, trees, which end is where) and runs each file as one
//! transfer, retried with the same id while the hub, an agent or our link comes back.

mod attempt;

use super::{FilesError, Place, join_rel, list};
use crate::client::{Client, ClientError, Login};
use attempt::{attempt_download, attempt_remote, attempt_upload};
use flotilla_wire::files::{
    EntryKind, TransferDone, TransferError, TransferErrorKind, TransferId, WriteKind,
};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// First wait before a retry; doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(500);
/// Longest wait between retries: an agent reconnecting after a hub restart waits up to its own
/// back-off, so polling faster than this would only add load.
const RETRY_MAX: Duration = Duration::from_secs(5);

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
