//! One agent's shared folder as a tree (directories expand and collapse) and the transfers started
//! from this console.

use crate::files::{CopyEvent, CopyReport};
use flotilla_wire::IdentityId;
use flotilla_wire::files::{Entry, EntryKind};
use std::collections::HashSet;

/// The files view of one agent.
#[derive(Clone, Debug)]
pub struct FolderTree {
    /// Agent id.
    pub agent: IdentityId,
    /// Agent name.
    pub name: String,
    /// Every entry, sorted by path; `None` until the listing arrives.
    pub entries: Option<Vec<Entry>>,
    /// Why there is no listing.
    pub error: Option<String>,
    /// The listing was cut at the hub's limit.
    pub truncated: bool,
    /// Expanded directories.
    pub expanded: HashSet<String>,
    /// Index into [`FolderTree::rows`].
    pub selected: usize,
    rows: Vec<usize>,
}

/// A row of the tree as drawn.
pub struct TreeRow<'a> {
    /// The entry.
    pub entry: &'a Entry,
    /// Nesting depth (0 at the top).
    pub depth: usize,
    /// The last path component.
    pub label: &'a str,
    /// Whether it is an expanded directory.
    pub open: bool,
}

impl FolderTree {
    /// An empty view waiting for its listing.
    pub fn new(agent: IdentityId, name: String) -> Self {
        Self {
            agent,
            name,
            entries: None,
            error: None,
            truncated: false,
            expanded: HashSet::new(),
            selected: 0,
            rows: Vec::new(),
        }
    }

    /// Takes a listing, keeping the selection on the same path if it still exists.
    pub fn set_listing(&mut self, mut entries: Vec<Entry>, truncated: bool) {
        let keep = self.selected_entry().map(|e| e.path.clone());
        entries.sort_by_cached_key(tree_key);
        self.entries = Some(entries);
        self.error = None;
        self.truncated = truncated;
        self.refresh();
        if let Some(path) = keep
            && let Some(pos) = self.row_of(&path)
        {
            self.selected = pos;
        }
        self.clamp();
    }

    /// The listing failed.
    pub fn set_error(&mut self, error: String) {
        self.error = Some(error);
    }

    fn row_of(&self, path: &str) -> Option<usize> {
        let entries = self.entries.as_ref()?;
        self.rows.iter().position(|&i| entries[i].path == path)
    }

    fn refresh(&mut self) {
        self.rows.clear();
        let Some(entries) = &self.entries else { return };
        for (i, e) in entries.iter().enumerate() {
            // Shown when every ancestor directory is expanded.
            let mut shown = true;
            let mut p = e.path.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                if !self.expanded.contains(parent) {
                    shown = false;
                    break;
                }
                p = parent;
            }
            if shown {
                self.rows.push(i);
            }
        }
    }

    fn clamp(&mut self) {
        self.selected = self.selected.min(self.rows.len().saturating_sub(1));
    }

    /// Rows as drawn.
    pub fn rows(&self) -> impl Iterator<Item = TreeRow<'_>> {
        let entries = self.entries.as_deref().unwrap_or_default();
        self.rows.iter().map(move |&i| {
            let entry = &entries[i];
            TreeRow {
                entry,
                depth: entry.path.matches('/').count(),
                label: entry.path.rsplit('/').next().unwrap_or(&entry.path),
                open: self.expanded.contains(&entry.path),
            }
        })
    }

    /// Number of rows drawn.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no rows are drawn.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The entry under the cursor.
    pub fn selected_entry(&self) -> Option<&Entry> {
        let entries = self.entries.as_ref()?;
        self.rows.get(self.selected).map(|&i| &entries[i])
    }

    /// Moves the cursor.
    pub fn move_by(&mut self, delta: i32) {
        let max = self.rows.len().saturating_sub(1) as i64;
        self.selected = (self.selected as i64 + i64::from(delta)).clamp(0, max) as usize;
    }

    /// Expands the directory under the cursor, or collapses it if already open.
    pub fn toggle(&mut self) {
        let Some(e) = self.selected_entry() else {
            return;
        };
        if e.kind != EntryKind::Dir {
            return;
        }
        let path = e.path.clone();
        if !self.expanded.remove(&path) {
            self.expanded.insert(path);
        }
        self.refresh();
        self.clamp();
    }

    /// Collapses the directory under the cursor, or goes to its parent.
    pub fn collapse(&mut self) {
        let Some(e) = self.selected_entry() else {
            return;
        };
        let path = e.path.clone();
        if self.expanded.remove(&path) {
            self.refresh();
            self.clamp();
            return;
        }
        if let Some((parent, _)) = path.rsplit_once('/')
            && let Some(pos) = self.row_of(parent)
        {
            self.selected = pos;
        }
    }
}

/// Sort key that puts a directory's children right after it (`a`, `a/b`, `a-b`, which a plain
/// string sort does not: `-` sorts before `/`) and directories before files at each level, as file
/// managers do.
fn tree_key(e: &Entry) -> Vec<(bool, String)> {
    let parts: Vec<&str> = e.path.split('/').collect();
    let last = parts.len() - 1;
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| (i == last && e.kind != EntryKind::Dir, (*p).to_owned()))
        .collect()
}

/// Where a transfer stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferState {
    /// Asked for; no data yet.
    Starting,
    /// Data flowing.
    Running,
    /// Interrupted; retrying.
    Retrying(String),
    /// Everything copied and verified.
    Done(CopyReport),
    /// Gave up.
    Failed(String),
    /// A cancel was sent.
    Cancelling,
    /// Cancelled by the operator.
    Cancelled,
}

impl TransferState {
    /// Whether it will change no more.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Done(_) | Self::Failed(_) | Self::Cancelled)
    }
}

/// A transfer started from this console.
#[derive(Clone, Debug)]
pub struct Transfer {
    /// The console's number for it.
    pub id: u64,
    /// Source as `agent:path`.
    pub src: String,
    /// Destination as `agent:path`.
    pub dst: String,
    /// The file being copied now (a tree copies several).
    pub current: String,
    /// Its size.
    pub size: u64,
    /// Bytes at the destination.
    pub written: u64,
    /// Where this attempt started (resumed bytes are not counted in the rate).
    start_offset: u64,
    /// When data started to flow, ms.
    started_ms: u64,
    /// Last progress report, ms.
    last_ms: u64,
    /// Files finished.
    pub files_done: u64,
    /// State.
    pub state: TransferState,
}

impl Transfer {
    /// A transfer just asked for, labelled `name:path` on both sides.
    pub fn new(id: u64, src: String, dst: String) -> Self {
        Self {
            id,
            src,
            dst,
            current: String::new(),
            size: 0,
            written: 0,
            start_offset: 0,
            started_ms: 0,
            last_ms: 0,
            files_done: 0,
            state: TransferState::Starting,
        }
    }

    /// Average rate of this attempt in bytes per second, while running.
    pub fn rate(&self) -> Option<u64> {
        let ms = self.last_ms.saturating_sub(self.started_ms);
        (matches!(self.state, TransferState::Running) && ms >= 200)
            .then(|| (self.written.saturating_sub(self.start_offset)) * 1000 / ms)
    }

    /// Percent of the current file.
    pub fn pct(&self) -> f32 {
        if self.size == 0 {
            return if matches!(self.state, TransferState::Done(_)) {
                100.0
            } else {
                0.0
            };
        }
        (self.written as f64 * 100.0 / self.size as f64) as f32
    }

    /// Applies a progress event reported at `at_ms`.
    pub fn apply(&mut self, ev: &CopyEvent, at_ms: u64) {
        if self.state == TransferState::Cancelling {
            // Still counts bytes, but stays "cancelling" until the copy returns.
            if let CopyEvent::Progress { written, .. } = ev {
                self.written = *written;
            }
            return;
        }
        match ev {
            CopyEvent::Started {
                src, size, offset, ..
            } => {
                self.current = src.clone();
                self.size = *size;
                self.written = *offset;
                self.start_offset = *offset;
                self.started_ms = at_ms;
                self.last_ms = at_ms;
                self.state = TransferState::Running;
            }
            CopyEvent::Progress { written, size, .. } => {
                self.written = *written;
                self.size = *size;
                self.last_ms = at_ms;
                self.state = TransferState::Running;
            }
            CopyEvent::Retrying { error, .. } => {
                self.state = TransferState::Retrying(error.clone());
            }
            CopyEvent::Done { size, .. } => {
                self.written = *size;
                self.files_done += 1;
                self.last_ms = at_ms;
            }
            CopyEvent::Mkdir { .. } | CopyEvent::Skipped { .. } => {}
        }
    }

    /// The copy returned.
    pub fn finish(&mut self, result: Result<CopyReport, String>) {
        self.state = match result {
            Ok(report) => TransferState::Done(report),
            Err(_) if self.state == TransferState::Cancelling => TransferState::Cancelled,
            Err(e) => TransferState::Failed(e),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_wire::Role;

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: path.into(),
            kind,
            size: 10,
            mtime_ms: 0,
            mode: 0o644,
        }
    }

    fn labels(t: &FolderTree) -> Vec<String> {
        t.rows()
            .map(|r| format!("{}{}", "  ".repeat(r.depth), r.label))
            .collect()
    }

    #[test]
    fn directories_expand_and_collapse_in_tree_order() {
        let mut t = FolderTree::new(IdentityId::from_random(Role::Agent, [1; 8]), "web-1".into());
        t.set_listing(
            vec![
                entry("a-b", EntryKind::File),
                entry("a/x/deep", EntryKind::File),
                entry("a", EntryKind::Dir),
                entry("a/x", EntryKind::Dir),
                entry("a/y", EntryKind::File),
            ],
            false,
        );
        assert_eq!(
            labels(&t),
            ["a", "a-b"],
            "only the top level at first, directories first"
        );
        t.toggle();
        assert_eq!(labels(&t), ["a", "  x", "  y", "a-b"]);
        t.move_by(1);
        t.toggle();
        assert_eq!(labels(&t), ["a", "  x", "    deep", "  y", "a-b"]);
        t.move_by(1);
        assert_eq!(
            t.selected_entry().map(|e| e.path.as_str()),
            Some("a/x/deep")
        );
        t.collapse();
        assert_eq!(
            t.selected_entry().map(|e| e.path.as_str()),
            Some("a/x"),
            "left on a file goes to its directory"
        );
        t.collapse();
        assert_eq!(labels(&t), ["a", "  x", "  y", "a-b"]);
        // A fresh listing keeps the cursor on the same path.
        t.set_listing(
            vec![
                entry("0-new", EntryKind::File),
                entry("a", EntryKind::Dir),
                entry("a/x", EntryKind::Dir),
            ],
            false,
        );
        assert_eq!(t.selected_entry().map(|e| e.path.as_str()), Some("a/x"));
    }

    #[test]
    fn transfer_rate_counts_only_this_attempt() {
        let mut t = Transfer::new(1, "web-1:big".into(), "db-1:big".into());
        let started = CopyEvent::Started {
            transfer: "t".into(),
            src: "web-1:big".into(),
            dst: "db-1:big".into(),
            size: 4000,
            offset: 1000,
            discarded: 0,
            attempt: 2,
        };
        t.apply(&started, 10_000);
        let progress = CopyEvent::Progress {
            transfer: "t".into(),
            src: "web-1:big".into(),
            dst: "db-1:big".into(),
            written: 3000,
            size: 4000,
        };
        t.apply(&progress, 11_000);
        assert_eq!(t.rate(), Some(2000), "2,000 new bytes in one second");
        assert_eq!(t.pct(), 75.0);
        t.state = TransferState::Cancelling;
        t.finish(Err("cancelled".into()));
        assert_eq!(t.state, TransferState::Cancelled);
        assert_eq!(t.rate(), None);
    }
}
