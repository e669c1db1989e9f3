//! The shared folder's watcher: on every connection a full snapshot on a snapshot stream, then
//! numbered deltas from notify, gathered until the folder has been quiet for 200 ms (at most 1 s).
//!
//! The gathering runs on the connection's task with timers armed only while events arrive, so an
//! idle agent does not wake at all: a debouncer with its own thread polled every 50 ms, 20 wake-ups
//! a second on every machine of the fleet.
//!
//! Memory stays bounded whatever the folder holds: the walk streams entries in chunks through a
//! channel of two, directories waiting to be read are the only thing that grows, and the agent keeps
//! no copy of the tree (the hub does). Watcher events queue in a bounded channel; when it is full, or
//! the kernel reports lost events, the agent sends a fresh snapshot instead of guessing. Symlinks are
//! listed as links and never followed; partial files of transfers in progress are hidden.

use crate::transfer::{SharedFolder, mtime_ms};
use deploy::sync::lock;
use flotilla_certs::dial::{self, DialError};
use flotilla_wire::files::{
    Change, Entry, EntryKind, MAX_SHARED_ENTRIES, SNAPSHOT_CHUNK_BYTES, SNAPSHOT_CHUNK_ENTRIES,
    SnapshotFrame, SnapshotReason, is_partial_name,
};
use flotilla_wire::io::{FrameError, write_frame};
use flotilla_wire::limits::{MAX_CONTROL_FRAME, MAX_SNAPSHOT_FRAME};
use flotilla_wire::msg::StreamOpen;
use notify::{Event, EventKind, RecursiveMode, Watcher, event::ModifyKind};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// Quiet time that ends a batch: an editor's save (truncate, write, rename) or a copy in progress
/// becomes one change instead of dozens.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// A batch ends this long after its first event even if the folder never goes quiet, so a file
/// written without pause (a log) still shows up once a second.
const DEBOUNCE_MAX: Duration = Duration::from_secs(1);
/// Distinct paths a batch may gather (a few MiB at most); beyond this a fresh snapshot costs about
/// what looking at each would, and memory stays bounded whatever rate the folder changes at.
const MAX_BATCH_PATHS: usize = 20_000;
/// Chunks of entries between the walking thread and the stream: two keep the stream busy.
const CHUNK_QUEUE: usize = 2;
/// A partial file untouched this long belongs to a transfer nobody resumed; the walk removes it.
const STALE_PARTIAL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Paths a batch of events touched, each once, and whether events were lost.
#[derive(Debug, Default)]
struct Batch {
    /// Absolute paths in the order first seen, with whether to list everything below (a
    /// directory created or moved in).
    paths: Vec<(PathBuf, bool)>,
    /// Where each path sits in `paths`.
    index: HashMap<PathBuf, usize>,
    /// Events were lost (by the kernel, or beyond [`MAX_BATCH_PATHS`]): only a fresh snapshot is
    /// right.
    rescan: bool,
}

impl Batch {
    fn add(&mut self, event: notify::Result<Event>) {
        match event {
            Ok(ev) => {
                if ev.need_rescan() {
                    self.rescan = true;
                }
                let walk = matches!(
                    ev.kind,
                    EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_))
                );
                for p in ev.paths {
                    if let Some(&i) = self.index.get(&p) {
                        self.paths[i].1 |= walk;
                    } else if self.paths.len() < MAX_BATCH_PATHS {
                        self.index.insert(p.clone(), self.paths.len());
                        self.paths.push((p, walk));
                    } else {
                        self.rescan = true;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "shared folder watcher error"),
        }
    }
}

/// Where the watcher's thread leaves events for the connection's task: coalesced per path as they
/// come, with the time of the last one, so the task wakes a few times per batch however fast the
/// folder changes, and never while it does not.
#[derive(Default)]
struct Inbox {
    pending: Mutex<Pending>,
    /// Signalled when a batch starts (the first event after the last take).
    started: Notify,
}

#[derive(Default)]
struct Pending {
    batch: Batch,
    /// When the batch's first and latest events came; `None` while nothing is pending.
    times: Option<(Instant, Instant)>,
}

impl Inbox {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        lock(&self.pending)
    }

    /// Called by the watcher for every event.
    fn add(&self, event: notify::Result<Event>) {
        let now = Instant::now();
        let mut pending = self.pending();
        pending.batch.add(event);
        let first = pending.times.map_or(now, |(first, _)| first);
        let started = pending.times.replace((first, now)).is_none();
        drop(pending);
        if started {
            self.started.notify_one();
        }
    }

    /// Drops what is pending: a snapshot is about to cover it.
    fn clear(&self) {
        *self.pending() = Pending::default();
    }

    /// The next batch: waits for an event, then until none came for [`DEBOUNCE`] or
    /// [`DEBOUNCE_MAX`] passed since the batch's first. Cancel-safe: what is pending stays, and
    /// the next call picks it up.
    async fn next_batch(&self) -> Batch {
        loop {
            let due = self
                .pending()
                .times
                .map(|(first, last)| (last + DEBOUNCE).min(first + DEBOUNCE_MAX));
            match due {
                // An event arriving between the look and the wait leaves a permit: no wake is lost.
                None => self.started.notified().await,
                Some(due) if Instant::now() >= due => {
                    let mut pending = self.pending();
                    pending.times = None;
                    return std::mem::take(&mut pending.batch);
                }
                Some(due) => tokio::time::sleep_until(due).await,
            }
        }
    }
}

/// Runs the snapshot stream for one connection; returns why it stopped.
pub(crate) async fn run(conn: quinn::Connection, folder: Arc<SharedFolder>) -> DialError {
    let lost = |conn: &quinn::Connection, e: FrameError| {
        conn.close_reason()
            .map(|r| dial::explain(&r))
            .unwrap_or_else(|| DialError::Protocol(format!("snapshot stream: {e}")))
    };
    let mut send = match conn.open_uni().await {
        Ok(s) => s,
        Err(e) => return dial::explain(&e),
    };
    if let Err(e) = write_frame(&mut send, &StreamOpen::Snapshot, MAX_CONTROL_FRAME).await {
        return lost(&conn, e);
    }
    let inbox = Arc::new(Inbox::default());
    let sink = inbox.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<Event>| sink.add(event))
        .and_then(|mut w| {
            w.watch(folder.root(), RecursiveMode::Recursive)?;
            Ok(w)
        });
    let _watcher = match watcher {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::error!(error = %e, folder = %folder.root().display(),
                "cannot watch the shared folder (raise fs.inotify.max_user_watches?): only snapshots will be sent");
            None
        }
    };
    let mut epoch = 0u64;
    let mut reason = SnapshotReason::Connect;
    'snapshot: loop {
        epoch += 1;
        // The walk below sees everything that happened so far.
        inbox.clear();
        match send_snapshot(&mut send, &folder, epoch, reason).await {
            Ok((total, truncated)) => {
                tracing::info!(
                    epoch,
                    entries = total,
                    truncated,
                    ?reason,
                    "shared folder snapshot sent"
                );
            }
            Err(e) => return lost(&conn, e),
        }
        let mut seq = 0u64;
        loop {
            tokio::select! {
                _ = folder.resync.notified() => {
                    reason = SnapshotReason::Requested;
                    continue 'snapshot;
                }
                batch = inbox.next_batch() => {
                    if batch.rescan {
                        tracing::warn!("shared folder watcher lost events: sending a fresh snapshot");
                        reason = SnapshotReason::Overflow;
                        continue 'snapshot;
                    }
                    if let Err(e) = send_changes(&mut send, &folder, epoch, &mut seq, batch).await {
                        return lost(&conn, e);
                    }
                }
            }
        }
    }
}

/// Sends `Begin`, the entries in chunks, and `End`. Not cancel-safe (the stream would be mid-snapshot).
async fn send_snapshot(
    send: &mut quinn::SendStream,
    folder: &SharedFolder,
    epoch: u64,
    reason: SnapshotReason,
) -> Result<(u64, bool), FrameError> {
    write_frame(
        send,
        &SnapshotFrame::Begin { epoch, reason },
        MAX_SNAPSHOT_FRAME,
    )
    .await?;
    let (tx, mut rx) = mpsc::channel::<Vec<Entry>>(CHUNK_QUEUE);
    let root = folder.root().to_path_buf();
    let walker = tokio::task::spawn_blocking(move || {
        let mut chunker = Chunker::new(|chunk| tx.blocking_send(chunk).is_ok());
        let total = walk(&root, "", MAX_SHARED_ENTRIES, &mut |e| chunker.push(e));
        chunker.flush();
        total
    });
    while let Some(chunk) = rx.recv().await {
        write_frame(send, &SnapshotFrame::Entries(chunk), MAX_SNAPSHOT_FRAME).await?;
    }
    let (total, truncated) = walker
        .await
        .map_err(|e| FrameError::Io(std::io::Error::other(e.to_string())))?;
    write_frame(
        send,
        &SnapshotFrame::End {
            epoch,
            total,
            truncated,
        },
        MAX_SNAPSHOT_FRAME,
    )
    .await?;
    Ok((total, truncated))
}

/// Looks at every path of a batch on disk and sends what changed as numbered deltas.
async fn send_changes(
    send: &mut quinn::SendStream,
    folder: &SharedFolder,
    epoch: u64,
    seq: &mut u64,
    batch: Batch,
) -> Result<(), FrameError> {
    let (tx, mut rx) = mpsc::channel::<Vec<Change>>(CHUNK_QUEUE);
    let root = folder.root().to_path_buf();
    let worker = tokio::task::spawn_blocking(move || {
        let mut chunker = Chunker::new(|chunk| tx.blocking_send(chunk).is_ok());
        changes_of(&root, batch, &mut chunker);
        chunker.flush();
    });
    while let Some(changes) = rx.recv().await {
        *seq += 1;
        let delta = SnapshotFrame::Delta {
            epoch,
            seq: *seq,
            changes,
        };
        write_frame(send, &delta, MAX_SNAPSHOT_FRAME).await?;
    }
    let _ = worker.await;
    Ok(())
}

/// Groups items into frames of at most [`SNAPSHOT_CHUNK_ENTRIES`] and about
/// [`SNAPSHOT_CHUNK_BYTES`] of paths, handing each full group to `out`.
struct Chunker<T, F> {
    items: Vec<T>,
    bytes: usize,
    out: F,
    open: bool,
}

/// Something with a path, to size chunks.
trait PathLen {
    fn path_len(&self) -> usize;
}

impl PathLen for Entry {
    fn path_len(&self) -> usize {
        self.path.len()
            + match &self.kind {
                EntryKind::Symlink { target } => target.len(),
                _ => 0,
            }
    }
}

impl PathLen for Change {
    fn path_len(&self) -> usize {
        match self {
            Self::Upsert(e) => e.path_len(),
            Self::Remove { path } => path.len(),
        }
    }
}

impl<T: PathLen, F: FnMut(Vec<T>) -> bool> Chunker<T, F> {
    fn new(out: F) -> Self {
        Self {
            items: Vec::new(),
            bytes: 0,
            out,
            open: true,
        }
    }

    /// Adds one item; false once the receiver is gone (stop walking).
    fn push(&mut self, item: T) -> bool {
        self.bytes += item.path_len() + 32;
        self.items.push(item);
        if self.items.len() >= SNAPSHOT_CHUNK_ENTRIES || self.bytes >= SNAPSHOT_CHUNK_BYTES {
            self.flush();
        }
        self.open
    }

    fn flush(&mut self) {
        if !self.items.is_empty() && self.open {
            self.open = (self.out)(std::mem::take(&mut self.items));
        }
        self.items.clear();
        self.bytes = 0;
    }
}

/// The listing entry for `abs` (relative path `rel`), from metadata that does not follow links.
fn entry_of(rel: String, abs: &Path, md: &fs::Metadata) -> Entry {
    let ft = md.file_type();
    let kind = if ft.is_symlink() {
        EntryKind::Symlink {
            target: fs::read_link(abs)
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    };
    Entry {
        path: rel,
        kind,
        size: md.len(),
        mtime_ms: mtime_ms(md),
        mode: crate::platform::mode(md),
    }
}

fn join_rel(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// Walks `start` (relative to `root`) depth-first without following symlinks, handing each entry
/// below it to `emit` until `limit` entries or `emit` returns false. Returns (entries, truncated).
/// Names that are not UTF-8 are skipped (they could not be named in a transfer either); stale
/// partial files are removed.
fn walk(root: &Path, start: &str, limit: u64, emit: &mut dyn FnMut(Entry) -> bool) -> (u64, bool) {
    let mut pending = vec![start.to_owned()];
    let mut count = 0u64;
    let mut skipped = 0u64;
    while let Some(dir) = pending.pop() {
        let abs_dir = root.join(&dir);
        let Ok(read) = fs::read_dir(&abs_dir) else {
            continue;
        };
        for dirent in read.flatten() {
            let Some(name) = dirent.file_name().to_str().map(str::to_owned) else {
                skipped += 1;
                continue;
            };
            let Ok(md) = dirent.metadata() else { continue };
            if is_partial_name(&name) {
                remove_if_stale(&dirent.path(), &md);
                continue;
            }
            if count >= limit {
                return (count, true);
            }
            let rel = join_rel(&dir, &name);
            if md.is_dir() {
                pending.push(rel.clone());
            }
            count += 1;
            if !emit(entry_of(rel, &dirent.path(), &md)) {
                return (count, false);
            }
        }
    }
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "names that are not UTF-8 are left out of the shared folder listing"
        );
    }
    (count, false)
}

fn remove_if_stale(path: &Path, md: &fs::Metadata) {
    let stale = md
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|age| age > STALE_PARTIAL);
    if stale && fs::remove_file(path).is_ok() {
        tracing::info!(path = %path.display(), "removed a partial file nobody resumed for a week");
    }
}

/// Turns a batch of touched paths into changes: what exists now is upserted (with everything below
/// a directory that appeared), what is gone is removed. Each path is looked at once, as it is now.
fn changes_of<F: FnMut(Vec<Change>) -> bool>(
    root: &Path,
    batch: Batch,
    out: &mut Chunker<Change, F>,
) {
    // Each path once: the batch coalesced them.
    for (path, walk_below) in batch.paths {
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        let Some(rel) = rel.to_str().map(str::to_owned) else {
            continue;
        };
        if rel.is_empty() || rel.rsplit('/').next().is_some_and(is_partial_name) {
            continue;
        }
        let open = match fs::symlink_metadata(&path) {
            Ok(md) => {
                let is_dir = md.is_dir();
                let mut open = out.push(Change::Upsert(entry_of(rel.clone(), &path, &md)));
                if open && is_dir && walk_below {
                    let mut emit = |e: Entry| out.push(Change::Upsert(e));
                    walk(root, &rel, MAX_SHARED_ENTRIES, &mut emit);
                    open = out.open;
                }
                open
            }
            Err(_) => out.push(Change::Remove { path: rel }),
        };
        if !open {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(path: &str) -> notify::Result<Event> {
        Ok(Event::new(EventKind::Create(notify::event::CreateKind::File)).add_path(path.into()))
    }

    /// Adds `created("/f<i>")` to `inbox` after each pause, in order, as the watcher would.
    fn feed(inbox: &Arc<Inbox>, pauses_ms: &[u64]) {
        let (inbox, pauses) = (inbox.clone(), pauses_ms.to_vec());
        tokio::spawn(async move {
            for (i, ms) in pauses.into_iter().enumerate() {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                inbox.add(created(&format!("/f{i}")));
            }
        });
    }

    fn names(batch: &Batch) -> Vec<&str> {
        batch.paths.iter().filter_map(|(p, _)| p.to_str()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_ends_when_the_folder_is_quiet_for_the_debounce() {
        let inbox = Arc::new(Inbox::default());
        feed(&inbox, &[0, 100, 150, 500]);
        let t0 = Instant::now();
        let batch = inbox.next_batch().await;
        assert_eq!(names(&batch), ["/f0", "/f1", "/f2"]);
        assert!(
            batch.paths.iter().all(|(_, walk)| *walk),
            "created: list below"
        );
        assert!(!batch.rescan);
        // The last event came at 250 ms; the batch closed 200 ms of quiet later.
        assert_eq!(t0.elapsed(), Duration::from_millis(450));
        let next = inbox.next_batch().await;
        assert_eq!(
            names(&next),
            ["/f3"],
            "the event after the quiet starts a new batch"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_folder_that_never_goes_quiet_still_gets_a_batch_each_second() {
        let inbox = Arc::new(Inbox::default());
        feed(&inbox, &[100; 40]);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t0 = Instant::now();
        let batch = inbox.next_batch().await;
        assert_eq!(t0.elapsed(), DEBOUNCE_MAX);
        assert!(
            (9..=11).contains(&batch.paths.len()),
            "{}",
            batch.paths.len()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn events_coalesce_per_path_and_too_many_paths_ask_for_a_snapshot() {
        let inbox = Inbox::default();
        let data = |p: &str| {
            Ok(Event::new(EventKind::Modify(ModifyKind::Data(
                notify::event::DataChange::Content,
            )))
            .add_path(p.into()))
        };
        for _ in 0..10_000 {
            inbox.add(data("/log"));
        }
        inbox.add(created("/log"));
        inbox.add(Err(notify::Error::generic(
            "a watcher error is logged, not fatal",
        )));
        let batch = inbox.next_batch().await;
        assert_eq!(batch.paths, [(PathBuf::from("/log"), true)]);
        assert!(!batch.rescan);

        for i in 0..=MAX_BATCH_PATHS {
            inbox.add(data(&format!("/f{i}")));
        }
        let batch = inbox.next_batch().await;
        assert_eq!(batch.paths.len(), MAX_BATCH_PATHS);
        assert!(batch.rescan);

        inbox.add(Ok(
            Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan)
        ));
        assert!(inbox.next_batch().await.rescan, "the kernel lost events");
    }

    #[tokio::test(start_paused = true)]
    async fn pending_events_survive_a_cancelled_wait_and_a_snapshot_clears_them() {
        let inbox = Inbox::default();
        inbox.add(created("/a"));
        tokio::select! {
            _ = inbox.next_batch() => panic!("the batch is not quiet yet"),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        inbox.add(created("/b"));
        assert_eq!(names(&inbox.next_batch().await), ["/a", "/b"]);

        inbox.add(created("/c"));
        inbox.clear();
        inbox.add(created("/d"));
        assert_eq!(names(&inbox.next_batch().await), ["/d"]);
    }

    #[test]
    #[cfg(unix)] // Unix symbolic links
    fn walk_lists_links_as_links_hides_partials_and_stops_at_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = fs::canonicalize(dir.path()).expect("canon");
        fs::create_dir_all(root.join("a/b")).expect("mkdir");
        fs::write(root.join("a/b/f"), b"hello").expect("write");
        fs::write(root.join(".f.0000000000000001.flotilla-part"), b"x").expect("write");
        std::os::unix::fs::symlink("/etc", root.join("etc")).expect("link");
        let mut got = Vec::new();
        let (n, truncated) = walk(&root, "", 100, &mut |e| {
            got.push(e);
            true
        });
        got.sort_by(|a, b| a.path.cmp(&b.path));
        let paths: Vec<_> = got.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a", "a/b", "a/b/f", "etc"]);
        assert_eq!((n, truncated), (4, false));
        assert_eq!(
            got[3].kind,
            EntryKind::Symlink {
                target: "/etc".into()
            }
        );
        assert_eq!(got[2].size, 5);
        let (n, truncated) = walk(&root, "", 2, &mut |_| true);
        assert_eq!((n, truncated), (2, true));
    }

    #[test]
    fn chunks_stay_small() {
        let mut chunks = Vec::new();
        let mut c = Chunker::new(|chunk: Vec<Change>| {
            chunks.push(chunk.len());
            true
        });
        for i in 0..(SNAPSHOT_CHUNK_ENTRIES * 2 + 5) {
            c.push(Change::Remove {
                path: format!("f{i}"),
            });
        }
        c.flush();
        assert_eq!(chunks, [SNAPSHOT_CHUNK_ENTRIES, SNAPSHOT_CHUNK_ENTRIES, 5]);
    }

    #[test]
    fn batches_become_upserts_and_removes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = fs::canonicalize(dir.path()).expect("canon");
        fs::create_dir_all(root.join("new/sub")).expect("mkdir");
        fs::write(root.join("new/sub/x"), b"1").expect("write");
        let mut batch = Batch::default();
        let event = |kind, path: PathBuf| Ok(Event::new(kind).add_path(path));
        batch.add(event(
            EventKind::Create(notify::event::CreateKind::Folder),
            root.join("new"),
        ));
        batch.add(event(
            EventKind::Remove(notify::event::RemoveKind::File),
            root.join("gone"),
        ));
        batch.add(event(
            EventKind::Modify(ModifyKind::Metadata(notify::event::MetadataKind::Any)),
            root.join("new"),
        ));
        let mut out = Vec::new();
        let mut c = Chunker::new(|chunk: Vec<Change>| {
            out.extend(chunk);
            true
        });
        changes_of(&root, batch, &mut c);
        c.flush();
        let mut paths: Vec<_> = out.iter().map(|c| c.path().to_owned()).collect();
        paths.sort();
        assert_eq!(paths, ["gone", "new", "new/sub", "new/sub/x"]);
        assert!(out.contains(&Change::Remove {
            path: "gone".into()
        }));
    }
}
