//! `flotilla ls`: an agent's shared folder as the hub last heard of it, and its `ls -l` rendering.

use super::FilesError;
use crate::client::{Client, ClientError};
use crate::util::{Escaped, utc_minute};
use flotilla_wire::files::{Entry, EntryKind, ListEnd, ListReply, ListRequest};
use flotilla_wire::io::{FrameError, read_frame, write_frame};
use flotilla_wire::limits::{MAX_CONTROL_FRAME, MAX_SNAPSHOT_FRAME};
use flotilla_wire::msg::StreamOpen;
use serde::Serialize;

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

/// The listing as `ls -l` would show it, names relative to the listed path.
pub fn listing_table(l: &Listing) -> String {
    let mut out = String::new();
    let prefix = if l.path.is_empty() {
        String::new()
    } else {
        format!("{}/", l.path)
    };
    for e in &l.entries {
        let name = Escaped(e.path.strip_prefix(&prefix).unwrap_or(&e.path));
        let shown = match &e.kind {
            EntryKind::Dir => format!("{name}/"),
            EntryKind::Symlink { target } => format!("{name} -> {}", Escaped(target)),
            _ => name.to_string(),
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
            Escaped(&l.end.name),
            utc_minute(l.end.as_of_ms as i64)
        ));
    }
    if l.end.truncated {
        out.push_str(&format!(
            "({} shares more files than the hub lists: the listing is cut short)\n",
            Escaped(&l.end.name)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_shown_escaped() {
        let entry = |path: &str, kind| Entry {
            path: path.into(),
            kind,
            size: 1,
            mtime_ms: 0,
            mode: 0o644,
        };
        let l = Listing {
            end: ListEnd {
                agent: flotilla_wire::IdentityId::from_random(flotilla_wire::Role::Agent, [1; 8]),
                name: "web-1".into(),
                online: false,
                as_of_ms: 0,
                total: 2,
                truncated: false,
            },
            path: String::new(),
            entries: vec![
                entry("evil\x1b[2Jname", EntryKind::File),
                entry(
                    "l\u{9b}",
                    EntryKind::Symlink {
                        target: "t\u{202e}\\".into(),
                    },
                ),
            ],
        };
        let table = listing_table(&l);
        assert!(table.contains(" evil\\x1b[2Jname\n"), "{table}");
        assert!(table.contains(" l\\u{9b} -> t\\u{202e}\\\\\n"), "{table}");
        assert!(!table.contains('\x1b'), "{table}");
    }

    #[test]
    fn listings_read_like_ls() {
        assert_eq!(mode_string(&EntryKind::Dir, 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(&EntryKind::File, 0o640), "-rw-r-----");
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
