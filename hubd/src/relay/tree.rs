//! One agent's shared-folder tree as the hub knows it, built from its snapshot stream.
//!
//! Sans-IO: [`AgentTree::handle`] takes a frame and the time and says what changed; the snapshot
//! stream task does the IO. A new snapshot is built aside and swapped in whole at its end, so a
//! listing never shows half of one. A delta whose epoch or sequence number is not the next one is a
//! gap: the tree stops taking deltas and the caller asks the agent for a fresh snapshot.

use flotilla_wire::files::{
    Change, Entry, EntryKind, MAX_SHARED_ENTRIES, SnapshotFrame, SnapshotReason,
};
use std::collections::BTreeMap;
use std::ops::Bound;

/// What the hub stores per entry (the path is the map key).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Meta {
    kind: EntryKind,
    size: u64,
    mtime_ms: i64,
    mode: u32,
}

type Map = BTreeMap<String, Meta>;

fn entry(path: &str, m: &Meta) -> Entry {
    Entry {
        path: path.to_owned(),
        kind: m.kind.clone(),
        size: m.size,
        mtime_ms: m.mtime_ms,
        mode: m.mode,
    }
}

/// Keys strictly below directory `dir` sort between `dir/` and `dir0` ('0' follows '/').
fn below(dir: &str) -> (Bound<String>, Bound<String>) {
    if dir.is_empty() {
        (Bound::Unbounded, Bound::Unbounded)
    } else {
        (
            Bound::Excluded(format!("{dir}/")),
            Bound::Excluded(format!("{dir}0")),
        )
    }
}

/// What a frame changed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Nothing visible yet (a snapshot is being built).
    Nothing,
    /// A fresh snapshot replaced the tree.
    Snapshot {
        /// Entries now listed.
        entries: u64,
        /// Why the agent sent it.
        reason: SnapshotReason,
    },
    /// A delta was applied.
    Changed(Vec<Change>),
}

/// Why a frame was not applied.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TreeError {
    /// A delta is not the next one: the tree is stale until a fresh snapshot arrives.
    #[error("delta {got_epoch}/{got_seq} after {epoch}/{seq}: lost changes")]
    Gap {
        /// Epoch of the tree.
        epoch: u64,
        /// Last sequence number applied.
        seq: u64,
        /// Epoch of the delta.
        got_epoch: u64,
        /// Its sequence number.
        got_seq: u64,
    },
    /// Frames out of order (entries outside a snapshot, an end for another epoch).
    #[error("snapshot stream out of order: {0}")]
    OutOfOrder(String),
}

/// A snapshot being received.
#[derive(Debug)]
struct Building {
    epoch: u64,
    reason: SnapshotReason,
    entries: Map,
    truncated: bool,
}

/// One agent's tree.
#[derive(Debug)]
pub(crate) struct AgentTree {
    /// The agent's name, for listings and events.
    pub(crate) name: String,
    entries: Map,
    building: Option<Building>,
    epoch: u64,
    seq: u64,
    /// A complete snapshot arrived at least once.
    ready: bool,
    /// A gap was seen; deltas are ignored until the next snapshot.
    stale: bool,
    truncated: bool,
    /// When the tree last changed, ms since the epoch.
    pub(crate) as_of_ms: u64,
}

/// A page of a listing.
#[derive(Debug, Default)]
pub(crate) struct Page {
    /// Entries in path order.
    pub(crate) entries: Vec<Entry>,
    /// Where the next page starts (the last path of this one), if there may be more.
    pub(crate) next: Option<String>,
}

/// Whether a listed path is missing, a file, or a directory.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Not in the tree.
    Missing,
    /// A file, link or other: listed alone.
    Leaf(Entry),
    /// A directory (or the folder itself): its children are listed.
    Dir,
}

impl AgentTree {
    /// An empty tree for `name`, waiting for its first snapshot.
    pub(crate) fn new(name: String) -> Self {
        Self {
            name,
            entries: Map::new(),
            building: None,
            epoch: 0,
            seq: 0,
            ready: false,
            stale: false,
            truncated: false,
            as_of_ms: 0,
        }
    }

    /// Whether a complete snapshot has arrived.
    pub(crate) fn ready(&self) -> bool {
        self.ready
    }

    /// Whether the folder holds more than the hub lists.
    pub(crate) fn truncated(&self) -> bool {
        self.truncated
    }

    /// Entries listed.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Applies one frame of the snapshot stream.
    pub(crate) fn handle(
        &mut self,
        frame: SnapshotFrame,
        now_ms: u64,
    ) -> Result<Applied, TreeError> {
        match frame {
            SnapshotFrame::Begin { epoch, reason } => {
                self.building = Some(Building {
                    epoch,
                    reason,
                    entries: Map::new(),
                    truncated: false,
                });
                Ok(Applied::Nothing)
            }
            SnapshotFrame::Entries(list) => {
                let Some(b) = self.building.as_mut() else {
                    return Err(TreeError::OutOfOrder("entries outside a snapshot".into()));
                };
                for e in list {
                    if b.entries.len() as u64 >= MAX_SHARED_ENTRIES {
                        b.truncated = true;
                        break;
                    }
                    insert(&mut b.entries, e);
                }
                Ok(Applied::Nothing)
            }
            SnapshotFrame::End {
                epoch, truncated, ..
            } => {
                let Some(b) = self.building.take() else {
                    return Err(TreeError::OutOfOrder("end outside a snapshot".into()));
                };
                if b.epoch != epoch {
                    return Err(TreeError::OutOfOrder(format!(
                        "end of snapshot {epoch} while building {}",
                        b.epoch
                    )));
                }
                self.entries = b.entries;
                self.epoch = epoch;
                self.seq = 0;
                self.ready = true;
                self.stale = false;
                self.truncated = truncated || b.truncated;
                self.as_of_ms = now_ms;
                Ok(Applied::Snapshot {
                    entries: self.entries.len() as u64,
                    reason: b.reason,
                })
            }
            SnapshotFrame::Delta {
                epoch,
                seq,
                changes,
            } => {
                if self.stale {
                    // Waiting for the snapshot that repairs the gap; these are covered by it.
                    return Ok(Applied::Nothing);
                }
                if !self.ready || epoch != self.epoch || seq != self.seq + 1 {
                    self.stale = true;
                    return Err(TreeError::Gap {
                        epoch: self.epoch,
                        seq: self.seq,
                        got_epoch: epoch,
                        got_seq: seq,
                    });
                }
                self.seq = seq;
                for c in &changes {
                    match c {
                        Change::Upsert(e) => {
                            if (self.entries.len() as u64) < MAX_SHARED_ENTRIES
                                || self.entries.contains_key(&e.path)
                            {
                                insert(&mut self.entries, e.clone());
                            } else {
                                self.truncated = true;
                            }
                        }
                        Change::Remove { path } => remove(&mut self.entries, path),
                    }
                }
                self.as_of_ms = now_ms;
                Ok(Applied::Changed(changes))
            }
        }
    }

    /// Whether `path` (normalised; empty for the folder) is missing, a leaf or a directory.
    pub(crate) fn lookup(&self, path: &str) -> Lookup {
        if path.is_empty() {
            return Lookup::Dir;
        }
        match self.entries.get(path) {
            None => Lookup::Missing,
            Some(m) if m.kind == EntryKind::Dir => Lookup::Dir,
            Some(m) => Lookup::Leaf(entry(path, m)),
        }
    }

    /// Up to `max` entries below directory `dir`, after `after`: direct children only unless
    /// `recursive`.
    pub(crate) fn page(&self, dir: &str, recursive: bool, after: Option<&str>, max: usize) -> Page {
        let (mut lo, hi) = below(dir);
        if let Some(a) = after {
            lo = Bound::Excluded(a.to_owned());
        }
        let skip = if dir.is_empty() { 0 } else { dir.len() + 1 };
        let mut page = Page::default();
        for (path, m) in self.entries.range((lo, hi)) {
            if !recursive && path[skip..].contains('/') {
                continue;
            }
            page.entries.push(entry(path, m));
            if page.entries.len() >= max {
                page.next = Some(path.clone());
                return page;
            }
        }
        page
    }
}

/// Inserts an entry, and its parent directories if the agent's walk order put them after it.
fn insert(map: &mut Map, e: Entry) {
    map.insert(
        e.path,
        Meta {
            kind: e.kind,
            size: e.size,
            mtime_ms: e.mtime_ms,
            mode: e.mode,
        },
    );
}

/// Removes an entry and everything below it.
fn remove(map: &mut Map, path: &str) {
    map.remove(path);
    let doomed: Vec<String> = map.range(below(path)).map(|(k, _)| k.clone()).collect();
    for k in doomed {
        map.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File,
            size: 1,
            mtime_ms: 0,
            mode: 0o644,
        }
    }

    fn dir(path: &str) -> Entry {
        Entry {
            kind: EntryKind::Dir,
            ..file(path)
        }
    }

    fn snapshot(t: &mut AgentTree, epoch: u64, entries: Vec<Entry>) {
        t.handle(
            SnapshotFrame::Begin {
                epoch,
                reason: SnapshotReason::Connect,
            },
            1,
        )
        .expect("begin");
        assert_eq!(
            t.handle(SnapshotFrame::Entries(entries), 1),
            Ok(Applied::Nothing)
        );
        assert!(matches!(
            t.handle(
                SnapshotFrame::End {
                    epoch,
                    total: 0,
                    truncated: false
                },
                2
            ),
            Ok(Applied::Snapshot { .. })
        ));
    }

    fn names(p: &Page) -> Vec<&str> {
        p.entries.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn snapshot_then_deltas_then_listing() {
        let mut t = AgentTree::new("web-1".into());
        assert!(!t.ready());
        snapshot(
            &mut t,
            1,
            vec![
                file("a-b"),
                dir("a"),
                file("a/x"),
                dir("a/sub"),
                file("a/sub/y"),
                file("z"),
            ],
        );
        assert!(t.ready());
        assert_eq!(names(&t.page("", false, None, 100)), ["a", "a-b", "z"]);
        assert_eq!(names(&t.page("a", false, None, 100)), ["a/sub", "a/x"]);
        assert_eq!(
            names(&t.page("a", true, None, 100)),
            ["a/sub", "a/sub/y", "a/x"]
        );
        let d = SnapshotFrame::Delta {
            epoch: 1,
            seq: 1,
            changes: vec![
                Change::Remove {
                    path: "a/sub".into(),
                },
                Change::Upsert(file("a/new")),
            ],
        };
        assert!(matches!(t.handle(d, 3), Ok(Applied::Changed(c)) if c.len() == 2));
        assert_eq!(names(&t.page("a", true, None, 100)), ["a/new", "a/x"]);
        assert_eq!(t.lookup("a"), Lookup::Dir);
        assert_eq!(t.lookup("a/x"), Lookup::Leaf(file("a/x")));
        assert_eq!(t.lookup("a/sub"), Lookup::Missing);
        assert_eq!(t.as_of_ms, 3);
    }

    #[test]
    fn pages_resume_after_the_last_path() {
        let mut t = AgentTree::new("n".into());
        snapshot(
            &mut t,
            1,
            (0..25).map(|i| file(&format!("f{i:02}"))).collect(),
        );
        let p1 = t.page("", false, None, 10);
        assert_eq!(p1.entries.len(), 10);
        let p2 = t.page("", false, p1.next.as_deref(), 10);
        let p3 = t.page("", false, p2.next.as_deref(), 10);
        assert_eq!(p3.entries.len(), 5);
        assert_eq!(p3.next, None);
        assert_eq!(p2.entries[0].path, "f10");
    }

    #[test]
    fn a_gap_makes_the_tree_stale_until_the_next_snapshot() {
        let mut t = AgentTree::new("n".into());
        snapshot(&mut t, 1, vec![file("a")]);
        let delta = |epoch, seq, path: &str| SnapshotFrame::Delta {
            epoch,
            seq,
            changes: vec![Change::Upsert(file(path))],
        };
        assert!(t.handle(delta(1, 1, "b"), 2).is_ok());
        assert_eq!(
            t.handle(delta(1, 3, "c"), 2),
            Err(TreeError::Gap {
                epoch: 1,
                seq: 1,
                got_epoch: 1,
                got_seq: 3
            })
        );
        // Later deltas of the broken epoch are ignored, not reported again.
        assert_eq!(t.handle(delta(1, 4, "d"), 2), Ok(Applied::Nothing));
        assert_eq!(t.lookup("d"), Lookup::Missing);
        snapshot(&mut t, 2, vec![file("a"), file("b"), file("c"), file("d")]);
        assert!(t.handle(delta(2, 1, "e"), 2).is_ok());
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn out_of_order_frames_are_refused() {
        let mut t = AgentTree::new("n".into());
        assert!(matches!(
            t.handle(SnapshotFrame::Entries(vec![]), 1),
            Err(TreeError::OutOfOrder(_))
        ));
        assert!(matches!(
            t.handle(
                SnapshotFrame::Delta {
                    epoch: 1,
                    seq: 1,
                    changes: vec![]
                },
                1
            ),
            Err(TreeError::Gap { .. })
        ));
    }
}
