//! Shared folders and file transfers: every message of the snapshot, listing, watch and transfer
//! streams, their ids, and the path rules both daemons and the console enforce.
//!
//! Flow, in short (docs/files.md has the long form):
//! - An agent opens a unidirectional [`crate::msg::StreamOpen::Snapshot`] stream and sends a full
//!   snapshot ([`SnapshotFrame::Begin`], [`SnapshotFrame::Entries`]…, [`SnapshotFrame::End`]), then
//!   [`SnapshotFrame::Delta`]s numbered from 1. The hub asks for a fresh snapshot on a gap by opening a
//!   [`HubStreamOpen::Resync`] stream.
//! - An operator opens [`crate::msg::StreamOpen::FileList`] (a [`ListRequest`], then [`ListReply`]s),
//!   [`crate::msg::StreamOpen::FileWatch`] (a [`WatchRequest`], then [`FileEvent`]s) or
//!   [`crate::msg::StreamOpen::Copy`] (a [`CopyRequest`], then [`TransferFrame`]s both ways).
//! - For a copy the hub opens one stream to the source agent ([`HubStreamOpen::Read`]) and one to
//!   the destination agent ([`HubStreamOpen::Write`]), or uses the operator's copy stream for a local
//!   end, and relays [`TransferFrame::Chunk`]s between them with bounded buffers.

use crate::IdentityId;
use crate::msg::Refusal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Bytes of file data per [`TransferFrame::Chunk`]: large enough that framing and per-frame work
/// vanish next to crypto, small enough that a hub relaying hundreds of transfers holds little
/// (one chunk per transfer), and within [`crate::limits::MAX_TRANSFER_FRAME`] with its envelope.
pub const CHUNK_SIZE: usize = 256 * 1024;
/// Most entries in one [`SnapshotFrame::Entries`] or [`SnapshotFrame::Delta`]: with
/// [`SNAPSHOT_CHUNK_BYTES`] it keeps every frame far below [`crate::limits::MAX_SNAPSHOT_FRAME`].
pub const SNAPSHOT_CHUNK_ENTRIES: usize = 2000;
/// Path bytes per snapshot frame before it is sent: 4 KiB paths cannot push a frame past the limit.
pub const SNAPSHOT_CHUNK_BYTES: usize = 256 * 1024;
/// Entries one shared folder may list: the hub keeps every agent's tree in memory (about 120 bytes
/// an entry), so a runaway folder of millions of files cannot exhaust it. A quarter million covers
/// the 100,000-file folders we size for, with room.
pub const MAX_SHARED_ENTRIES: u64 = 250_000;
/// Longest relative path accepted, as Linux's `PATH_MAX`.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest path component, as Linux's `NAME_MAX`.
pub const MAX_NAME_LEN: usize = 255;
/// Suffix of a destination's partial file. Partial files are hidden from snapshots and listings.
pub const PARTIAL_SUFFIX: &str = ".flotilla-part";

/// Id of one copy, chosen by the operator's console so that a retry after any party dropped names
/// the same transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TransferId(pub u64);

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t-{:016x}", self.0)
    }
}

impl TransferId {
    /// Parses [`TransferId`]'s `Display` form.
    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix("t-")?;
        if hex.len() != 16 {
            return None;
        }
        u64::from_str_radix(hex, 16).ok().map(Self)
    }
}

/// Names a destination's partial file. The hub derives it from the source (who, which path, size and
/// modification time), so copying the same source to the same place again finds the bytes a failed
/// attempt left, even from a new `flotilla cp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResumeKey(pub u64);

impl fmt::Display for ResumeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A BLAKE3 digest. 32 raw bytes on the wire, lowercase hex in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            let bad = || serde::de::Error::custom(format!("malformed digest {s:?}"));
            if s.len() != 64 {
                return Err(bad());
            }
            let mut out = [0u8; 32];
            for (i, b) in out.iter_mut().enumerate() {
                *b = u8::from_str_radix(s.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                    .map_err(|_| bad())?;
            }
            Ok(Self(out))
        } else {
            <[u8; 32]>::deserialize(d).map(Self)
        }
    }
}

pub use crate::chunk::Chunk;

/// What kind of thing a shared-folder entry is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link, listed as such and never followed.
    Symlink {
        /// The link's text, as `readlink` gives it.
        target: String,
    },
    /// A FIFO, socket or device: listed, never transferred.
    Other,
}

/// One entry of a shared folder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Path relative to the shared folder, `/`-separated, never empty.
    pub path: String,
    /// File, directory, link or other.
    pub kind: EntryKind,
    /// Size in bytes (a link's own size).
    pub size: u64,
    /// Modification time, ms since the Unix epoch (negative before 1970).
    pub mtime_ms: i64,
    /// Unix permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

/// One change in a [`SnapshotFrame::Delta`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// The entry was created or changed.
    Upsert(Entry),
    /// The entry, and everything below it, is gone.
    Remove {
        /// Path relative to the shared folder.
        path: String,
    },
}

impl Change {
    /// The path the change is about.
    pub fn path(&self) -> &str {
        match self {
            Self::Upsert(e) => &e.path,
            Self::Remove { path } => path,
        }
    }
}

/// Why an agent sends a fresh snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotReason {
    /// The link (re)connected.
    Connect,
    /// The watcher lost events (kernel queue overflow or our own queue full).
    Overflow,
    /// The hub asked, after it saw a gap in the sequence numbers.
    Requested,
    /// Only in a [`FileEvent::Snapshot`]: the hub already held this tree when the watch started.
    Held,
}

/// Frames on an agent's snapshot stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotFrame {
    /// A full snapshot starts; the hub builds it aside and swaps it in at [`Self::End`].
    Begin {
        /// Number of this snapshot on this stream; deltas name it.
        epoch: u64,
        /// Why it is sent.
        reason: SnapshotReason,
    },
    /// Some entries of the snapshot, in walk order.
    Entries(Vec<Entry>),
    /// The snapshot is complete: it is the state before delta 1.
    End {
        /// Same as in [`Self::Begin`].
        epoch: u64,
        /// Entries sent.
        total: u64,
        /// Whether the agent stopped at [`MAX_SHARED_ENTRIES`].
        truncated: bool,
    },
    /// Changes after a snapshot, numbered 1, 2, 3… within its epoch.
    Delta {
        /// The snapshot these changes apply to.
        epoch: u64,
        /// Sequence number: one more than the previous delta's.
        seq: u64,
        /// What changed, in order.
        changes: Vec<Change>,
    },
}

/// Size, time and mode of a file to transfer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// Bytes.
    pub size: u64,
    /// Modification time, ms since the Unix epoch; the destination sets it on the finished file.
    pub mtime_ms: i64,
    /// Unix permission bits; the destination applies them masked with 0o777.
    pub mode: u32,
}

/// What a write creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteKind {
    /// A file, from the data that follows.
    File,
    /// A directory (and its parents); no data follows.
    Dir,
}

/// Hub to agent: read a file of the shared folder and send it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadOpen {
    /// The transfer this belongs to.
    pub transfer: TransferId,
    /// Path relative to the shared folder.
    pub path: String,
}

/// Hub to agent: write a file (or make a directory) in the shared folder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOpen {
    /// The transfer this belongs to.
    pub transfer: TransferId,
    /// Path relative to the shared folder.
    pub path: String,
    /// File or directory.
    pub kind: WriteKind,
    /// The source's size, time and mode.
    pub meta: FileMeta,
    /// Names the partial file, so a retry finds it.
    pub resume_key: ResumeKey,
}

/// First frame of every stream the hub opens to an agent (shared with [`crate::exec`]).
pub use crate::msg::HubStreamOpen;

/// One end of a copy, as the operator names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CopyEnd {
    /// A path in an agent's shared folder.
    Agent {
        /// Agent name or id.
        agent: String,
        /// Path relative to its shared folder.
        path: String,
    },
    /// A file on the operator's machine; the operator's copy stream carries its data.
    Local {
        /// The path as the operator gave it (audit, resume key); the hub never opens it.
        path: String,
        /// Size, time and mode when this end is the source.
        meta: Option<FileMeta>,
    },
}

/// Operator to hub, after [`crate::msg::StreamOpen::Copy`]: copy one file or make one directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyRequest {
    /// Chosen by the console; the same id on every retry.
    pub transfer: TransferId,
    /// Where the data comes from.
    pub src: CopyEnd,
    /// Where it goes.
    pub dst: CopyEnd,
    /// A file, or a directory to create (`cp -r` of an empty directory).
    pub kind: WriteKind,
}

/// Why a transfer failed; decides what the console says and whether it retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferErrorKind {
    /// No such file or agent.
    NotFound,
    /// The path leaves the shared folder (`..`, absolute, or through a symlink).
    Escapes,
    /// The destination's shared folder is read-only by its configuration.
    ReadOnly,
    /// The destination ran out of space (or hit a quota or file-size limit).
    NoSpace,
    /// The data that arrived does not match the source's BLAKE3.
    HashMismatch,
    /// The source is a directory, link or special file where a file was expected, or the
    /// destination is a directory where a file should go.
    WrongKind,
    /// Another transfer is writing the same destination.
    Busy,
    /// A file operation failed (the message names it).
    Io,
    /// A party dropped mid-transfer; retrying resumes from the bytes already verified.
    Interrupted,
    /// An agent is not connected; retrying later may work.
    Offline,
    /// The operator's role may not copy.
    Forbidden,
    /// The operator cancelled.
    Cancelled,
    /// The request makes no sense (both ends local, a bad path).
    BadRequest,
    /// The source changed while it was being read.
    SourceChanged,
    /// A peer broke the transfer protocol.
    Protocol,
}

impl TransferErrorKind {
    /// Whether trying the same copy again can succeed without anyone changing anything.
    pub fn retryable(self) -> bool {
        matches!(self, Self::Interrupted | Self::Offline)
    }
}

/// A failed transfer: a kind and words for a sysadmin (naming the agent and path).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferError {
    /// Machine-readable reason.
    pub kind: TransferErrorKind,
    /// Human-readable detail.
    pub message: String,
}

impl TransferError {
    /// An error of `kind` with `message`.
    pub fn new(kind: TransferErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TransferError {}

/// Sent to the operator when the data starts to flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferStarted {
    /// Size of the source.
    pub size: u64,
    /// Bytes the destination already held and verified against the source: the transfer resumes here.
    pub offset: u64,
    /// Bytes of a partial file thrown away because they did not match the source.
    pub discarded: u64,
}

/// The destination verified the data and moved the file into place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferDone {
    /// Size of the file.
    pub size: u64,
    /// Its BLAKE3, checked at the destination.
    pub digest: Digest,
    /// Bytes that were already there from an earlier attempt.
    pub resumed_from: u64,
}

/// Frames on transfer streams, in every direction; each party accepts only those its state allows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferFrame {
    /// Source to hub: the file exists; its size, time and mode.
    Offer(FileMeta),
    /// Hub to source: send from `offset` if the first `offset` bytes hash to `prefix`, else from 0.
    ReadFrom {
        /// Bytes the destination holds.
        offset: u64,
        /// BLAKE3 of those bytes (none when `offset` is 0).
        prefix: Option<Digest>,
    },
    /// Hub to a local destination (download): get ready for this file.
    Prepare {
        /// The source's size, time and mode.
        meta: FileMeta,
        /// Names the partial file.
        resume_key: ResumeKey,
    },
    /// Destination to hub: ready; it holds `offset` bytes hashing to `prefix` from an earlier attempt.
    Ready {
        /// Bytes of the partial file.
        offset: u64,
        /// Their BLAKE3 (none when `offset` is 0).
        prefix: Option<Digest>,
    },
    /// Source to destination: data follows from `offset` (0 when the prefix did not match).
    Begin {
        /// Where the data starts.
        offset: u64,
    },
    /// Source to destination: the next bytes.
    Chunk(Chunk),
    /// Source to destination: that was all; the whole file hashes to `digest`.
    End {
        /// BLAKE3 of the whole file.
        digest: Digest,
    },
    /// Destination to hub: this many bytes are written to the partial file.
    Ack {
        /// Bytes written, counted from 0.
        written: u64,
    },
    /// Destination to hub, hub to operator: verified, fsynced and renamed into place.
    Done(TransferDone),
    /// Any direction: the transfer failed.
    Failed(TransferError),
    /// Operator to hub, hub to each end: stop and remove the partial file.
    Cancel,
    /// Hub to operator: data is flowing.
    Started(TransferStarted),
    /// Hub to operator: bytes written at the destination so far.
    Progress {
        /// Bytes, counted from 0.
        written: u64,
    },
    /// Hub to operator, end to hub: cancelled, nothing left under the destination's name.
    Cancelled,
}

/// Operator to hub, after [`crate::msg::StreamOpen::FileList`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRequest {
    /// Agent name or id.
    pub agent: String,
    /// Path relative to its shared folder; empty for the folder itself.
    pub path: String,
    /// Everything below `path`, not only its direct children.
    pub recursive: bool,
}

/// End of a listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEnd {
    /// The agent's id.
    pub agent: IdentityId,
    /// Its name.
    pub name: String,
    /// Whether it is connected now (the listing is its latest tree either way).
    pub online: bool,
    /// When the hub last heard of a change, ms since the epoch.
    pub as_of_ms: u64,
    /// Entries sent.
    pub total: u64,
    /// Whether the agent's folder holds more than [`MAX_SHARED_ENTRIES`].
    pub truncated: bool,
}

/// Hub to operator on a listing stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ListReply {
    /// Some entries, sorted by path. A path naming a file gives that entry alone.
    Entries(Vec<Entry>),
    /// The listing is complete.
    End(ListEnd),
    /// Refused (unknown agent, no listing yet, no such path).
    Error(Refusal),
}

/// Operator to hub, after [`crate::msg::StreamOpen::FileWatch`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRequest {
    /// Only this agent's events (name or id); all agents when `None`.
    pub agent: Option<String>,
}

/// How a transfer stands, in a [`TransferEvent`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransferState {
    /// Data started to flow (`bytes` is the resume offset).
    Started,
    /// Data is flowing.
    Progress,
    /// Verified and in place.
    Done,
    /// Failed; the error says why.
    Failed(TransferError),
    /// Cancelled by the operator.
    Cancelled,
}

/// A transfer's progress, for watchers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferEvent {
    /// Which transfer.
    pub transfer: TransferId,
    /// Who asked (identity id).
    pub actor: String,
    /// Source as `agent:path` or `local:path`.
    pub src: String,
    /// Destination, likewise.
    pub dst: String,
    /// How it stands.
    pub state: TransferState,
    /// Bytes written at the destination.
    pub bytes: u64,
    /// Size of the file.
    pub size: u64,
    /// When, ms since the epoch.
    pub at_ms: u64,
}

/// Hub to operator on a watch stream. A watch opens with one [`FileEvent::Snapshot`] (reason
/// [`SnapshotReason::Held`]) per agent whose tree the hub holds, then follows changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FileEvent {
    /// An agent sent a fresh snapshot of its folder.
    Snapshot {
        /// Which agent.
        agent: IdentityId,
        /// Its name.
        name: String,
        /// Entries now listed.
        entries: u64,
        /// Why it was sent.
        reason: SnapshotReason,
    },
    /// Files changed in an agent's folder.
    Changed {
        /// Which agent.
        agent: IdentityId,
        /// Its name.
        name: String,
        /// The changes, in order.
        changes: Vec<Change>,
    },
    /// A transfer started, moved on or finished.
    Transfer(TransferEvent),
    /// The watcher fell behind and missed this many events.
    Lagged {
        /// How many.
        missed: u64,
    },
    /// The watch was refused (unknown agent).
    Error(Refusal),
}

/// Why a relative path was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// It starts with `/`.
    #[error("path {0:?} is absolute: give it relative to the shared folder")]
    Absolute(String),
    /// A component is `..`.
    #[error("path {0:?} leaves the shared folder (`..`)")]
    Parent(String),
    /// A component is empty or `.` (`a//b`, `./a`) in a place that makes it ambiguous.
    #[error("path {0:?} has an empty or `.` component")]
    EmptyComponent(String),
    /// It holds a NUL byte.
    #[error("path {0:?} holds a NUL byte")]
    Nul(String),
    /// It is longer than [`MAX_PATH_LEN`] or a component is longer than [`MAX_NAME_LEN`].
    #[error(
        "path of {0} bytes is too long (limits {max_path} per path, {max_name} per name)",
        max_path = MAX_PATH_LEN,
        max_name = MAX_NAME_LEN
    )]
    TooLong(usize),
}

/// Normalises a path relative to a shared folder: strips a leading `./` and trailing `/`s, then
/// refuses absolute paths, `..`, empty or `.` components, NUL bytes and over-long names. The empty
/// string is the folder itself. Every daemon checks paths with this before touching the disk.
pub fn normalize_rel_path(path: &str) -> Result<String, PathError> {
    if path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong(path.len()));
    }
    if path.contains('\0') {
        return Err(PathError::Nul(path.into()));
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute(path.into()));
    }
    let mut p = path;
    while let Some(rest) = p.strip_prefix("./") {
        p = rest;
    }
    let p = p.trim_end_matches('/');
    if p.is_empty() || p == "." {
        return Ok(String::new());
    }
    for comp in p.split('/') {
        match comp {
            ".." => return Err(PathError::Parent(path.into())),
            "" | "." => return Err(PathError::EmptyComponent(path.into())),
            c if c.len() > MAX_NAME_LEN => return Err(PathError::TooLong(c.len())),
            _ => {}
        }
    }
    Ok(p.to_owned())
}

/// postcard's index of [`TransferFrame::Chunk`]: pinned by a test, since the hub recognises chunk
/// frames by it to forward them without decoding.
pub const CHUNK_VARIANT: u8 = 5;

/// If `body` (a frame body without its length prefix) is a [`TransferFrame::Chunk`], where its data
/// lies in `body`. Lets a receiver keep the data where it landed instead of decoding a copy.
pub fn chunk_data_range(body: &[u8]) -> Option<std::ops::Range<usize>> {
    let (&tag, rest) = body.split_first()?;
    if tag != CHUNK_VARIANT {
        return None;
    }
    let (len, data) = postcard::take_from_bytes::<u64>(rest).ok()?;
    if usize::try_from(len).ok()? != data.len() {
        return None;
    }
    Some(body.len() - data.len()..body.len())
}

/// The bytes that go before `len` bytes of data to make a whole [`TransferFrame::Chunk`] frame
/// (length prefix, variant, data length), so a sender can hand the data to the stream as it was
/// read instead of encoding a copy. Fails like [`crate::encode`] past `max`.
pub fn chunk_frame_prefix(len: usize, max: usize) -> Result<Vec<u8>, crate::EncodeError> {
    let mut varint = [0u8; 10];
    let used = postcard::to_slice(&(len as u64), &mut varint)
        .map_err(|e| crate::EncodeError::Serialize {
            reason: e.to_string(),
        })?
        .len();
    let body_len = 1 + used + len;
    if body_len > max {
        return Err(crate::EncodeError::TooLong { len: body_len, max });
    }
    let mut out = Vec::with_capacity(crate::frame::HEADER_LEN + 1 + used);
    out.extend_from_slice(&(body_len as u32).to_be_bytes());
    out.push(CHUNK_VARIANT);
    out.extend_from_slice(&varint[..used]);
    Ok(out)
}

/// Whether `name` (a final path component) is a destination's partial file, hidden from listings.
pub fn is_partial_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(PARTIAL_SUFFIX)
}

/// The partial file's name for a destination file `name` and `key`: hidden, beside the real file.
pub fn partial_name(name: &str, key: ResumeKey) -> String {
    // Keep within NAME_MAX: the key and suffix take 33 bytes, a dot and a separator two more.
    let keep = name
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .take_while(|&end| end <= MAX_NAME_LEN - 40)
        .last()
        .unwrap_or(0);
    format!(".{}.{key}{PARTIAL_SUFFIX}", &name[..keep])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;
    use crate::limits::StreamKind;
    use proptest::prelude::*;

    fn entry() -> Entry {
        Entry {
            path: "docs/a.txt".into(),
            kind: EntryKind::File,
            size: 5,
            mtime_ms: 1_700_000_000_000,
            mode: 0o644,
        }
    }

    fn link() -> Entry {
        Entry {
            path: "l".into(),
            kind: EntryKind::Symlink {
                target: "../x".into(),
            },
            size: 4,
            mtime_ms: -1,
            mode: 0o777,
        }
    }

    fn id() -> IdentityId {
        IdentityId::from_random(crate::Role::Agent, [0x22; 8])
    }

    fn round_trip<T: Serialize + serde::de::DeserializeOwned + PartialEq + fmt::Debug>(
        msg: &T,
        kind: StreamKind,
    ) {
        let mut buf = bytes::BytesMut::new();
        crate::encode(msg, &mut buf, kind.max_frame()).expect("encode");
        let back: T = crate::decode(&mut buf, kind.max_frame())
            .expect("decode")
            .expect("complete");
        assert_eq!(&back, msg);
        assert!(buf.is_empty());
    }

    fn meta() -> FileMeta {
        FileMeta {
            size: 1 << 30,
            mtime_ms: 1_700_000_000_123,
            mode: 0o640,
        }
    }

    fn error() -> TransferError {
        TransferError::new(TransferErrorKind::NoSpace, "no space left on web-2")
    }

    /// One value of every message.
    #[test]
    fn every_message_round_trips() {
        for f in [
            SnapshotFrame::Begin {
                epoch: 1,
                reason: SnapshotReason::Connect,
            },
            SnapshotFrame::Entries(vec![entry(), link()]),
            SnapshotFrame::End {
                epoch: 1,
                total: 2,
                truncated: false,
            },
            SnapshotFrame::Delta {
                epoch: 1,
                seq: 7,
                changes: vec![
                    Change::Upsert(entry()),
                    Change::Remove {
                        path: "gone".into(),
                    },
                ],
            },
        ] {
            round_trip(&f, StreamKind::Snapshot);
        }
        let write = WriteOpen {
            transfer: TransferId(9),
            path: "a/b".into(),
            kind: WriteKind::File,
            meta: meta(),
            resume_key: ResumeKey(3),
        };
        for open in [
            HubStreamOpen::Read(ReadOpen {
                transfer: TransferId(9),
                path: "a".into(),
            }),
            HubStreamOpen::Write(write),
            HubStreamOpen::Resync {
                reason: "gap".into(),
            },
        ] {
            round_trip(&open, StreamKind::Control);
        }
        round_trip(
            &CopyRequest {
                transfer: TransferId(u64::MAX),
                src: CopyEnd::Agent {
                    agent: "web-1".into(),
                    path: "x".into(),
                },
                dst: CopyEnd::Local {
                    path: "/tmp/x".into(),
                    meta: Some(meta()),
                },
                kind: WriteKind::Dir,
            },
            StreamKind::Control,
        );
        for f in [
            TransferFrame::Offer(meta()),
            TransferFrame::ReadFrom {
                offset: 5,
                prefix: Some(Digest([7; 32])),
            },
            TransferFrame::Prepare {
                meta: meta(),
                resume_key: ResumeKey(1),
            },
            TransferFrame::Ready {
                offset: 0,
                prefix: None,
            },
            TransferFrame::Begin { offset: 5 },
            TransferFrame::Chunk(Chunk(vec![1; CHUNK_SIZE])),
            TransferFrame::End {
                digest: Digest([1; 32]),
            },
            TransferFrame::Ack { written: 10 },
            TransferFrame::Done(TransferDone {
                size: 10,
                digest: Digest([2; 32]),
                resumed_from: 4,
            }),
            TransferFrame::Failed(error()),
            TransferFrame::Cancel,
            TransferFrame::Started(TransferStarted {
                size: 10,
                offset: 4,
                discarded: 0,
            }),
            TransferFrame::Progress { written: 6 },
            TransferFrame::Cancelled,
        ] {
            round_trip(&f, StreamKind::Transfer);
        }
        round_trip(
            &ListRequest {
                agent: "web-1".into(),
                path: "".into(),
                recursive: true,
            },
            StreamKind::Control,
        );
        for r in [
            ListReply::Entries(vec![entry()]),
            ListReply::End(ListEnd {
                agent: id(),
                name: "web-1".into(),
                online: true,
                as_of_ms: 5,
                total: 1,
                truncated: false,
            }),
            ListReply::Error(Refusal {
                code: ErrorCode::NotFound,
                message: "no".into(),
            }),
        ] {
            round_trip(&r, StreamKind::Snapshot);
        }
        round_trip(
            &WatchRequest {
                agent: Some("web-1".into()),
            },
            StreamKind::Control,
        );
        let tev = |state| TransferEvent {
            transfer: TransferId(1),
            actor: "o-1".into(),
            src: "web-1:a".into(),
            dst: "web-2:b".into(),
            state,
            bytes: 3,
            size: 9,
            at_ms: 4,
        };
        for ev in [
            FileEvent::Snapshot {
                agent: id(),
                name: "web-1".into(),
                entries: 3,
                reason: SnapshotReason::Overflow,
            },
            FileEvent::Changed {
                agent: id(),
                name: "web-1".into(),
                changes: vec![Change::Upsert(link())],
            },
            FileEvent::Transfer(tev(TransferState::Started)),
            FileEvent::Transfer(tev(TransferState::Progress)),
            FileEvent::Transfer(tev(TransferState::Done)),
            FileEvent::Transfer(tev(TransferState::Failed(error()))),
            FileEvent::Transfer(tev(TransferState::Cancelled)),
            FileEvent::Lagged { missed: 2 },
            FileEvent::Error(Refusal {
                code: ErrorCode::NotFound,
                message: "no".into(),
            }),
        ] {
            round_trip(&ev, StreamKind::Events);
        }
    }

    /// Golden bytes: a change here breaks deployed peers and needs a protocol version bump.
    #[test]
    fn golden_bytes_are_pinned() {
        let enc = |v: &dyn erased::Enc| v.enc();
        assert_eq!(
            enc(&SnapshotFrame::Begin {
                epoch: 1,
                reason: SnapshotReason::Requested
            }),
            [0, 1, 2]
        );
        assert_eq!(
            enc(&SnapshotFrame::Entries(vec![Entry {
                path: "a".into(),
                kind: EntryKind::Symlink { target: "b".into() },
                size: 1,
                mtime_ms: -1,
                mode: 0o644,
            }])),
            [1, 1, 1, b'a', 2, 1, b'b', 1, 1, 0xa4, 0x03]
        );
        assert_eq!(
            enc(&SnapshotFrame::Delta {
                epoch: 2,
                seq: 300,
                changes: vec![Change::Remove { path: "x".into() }]
            }),
            [3, 2, 0xac, 0x02, 1, 1, 1, b'x']
        );
        assert_eq!(
            enc(&HubStreamOpen::Read(ReadOpen {
                transfer: TransferId(1),
                path: "f".into()
            })),
            [2, 1, 1, b'f']
        );
        assert_eq!(enc(&HubStreamOpen::Resync { reason: "".into() }), [4, 0]);
        assert_eq!(
            enc(&TransferFrame::Chunk(Chunk(vec![9, 8, 7]))),
            [5, 3, 9, 8, 7],
            "data is a byte string: varint length, then the bytes"
        );
        assert_eq!(enc(&TransferFrame::Begin { offset: 128 }), [4, 0x80, 0x01]);
        assert_eq!(
            enc(&TransferFrame::Failed(TransferError::new(
                TransferErrorKind::NoSpace,
                "n"
            ))),
            [9, 3, 1, b'n']
        );
        assert_eq!(enc(&TransferFrame::Cancel), [10]);
        assert_eq!(enc(&TransferFrame::Cancelled), [13]);
        let mut end = vec![6];
        end.extend([0xab; 32]);
        assert_eq!(
            enc(&TransferFrame::End {
                digest: Digest([0xab; 32])
            }),
            end
        );
        assert_eq!(
            enc(&CopyRequest {
                transfer: TransferId(2),
                src: CopyEnd::Local {
                    path: "l".into(),
                    meta: None
                },
                dst: CopyEnd::Agent {
                    agent: "a".into(),
                    path: "p".into()
                },
                kind: WriteKind::File,
            }),
            [2, 1, 1, b'l', 0, 0, 1, b'a', 1, b'p', 0]
        );
        assert_eq!(
            enc(&ListRequest {
                agent: "a".into(),
                path: "".into(),
                recursive: true
            }),
            [1, b'a', 0, 1]
        );
        assert_eq!(enc(&FileEvent::Lagged { missed: 1 }), [3, 1]);
    }

    /// Lets the golden test take any message by reference.
    mod erased {
        pub(super) trait Enc {
            fn enc(&self) -> Vec<u8>;
        }
        impl<T: serde::Serialize> Enc for T {
            fn enc(&self) -> Vec<u8> {
                postcard::to_stdvec(self).expect("encode")
            }
        }
    }

    #[test]
    fn chunk_frames_are_built_and_recognised_without_copying_the_data() {
        let data = vec![3u8; 300];
        let body = postcard::to_stdvec(&TransferFrame::Chunk(Chunk(data.clone()))).expect("encode");
        assert_eq!(body[0], CHUNK_VARIANT);
        let range = chunk_data_range(&body).expect("a chunk");
        assert_eq!(&body[range], &data[..]);
        assert_eq!(chunk_data_range(&body[..body.len() - 1]), None, "truncated");
        let end = postcard::to_stdvec(&TransferFrame::End {
            digest: Digest([0; 32]),
        })
        .expect("encode");
        assert_eq!(chunk_data_range(&end), None);
        assert_eq!(chunk_data_range(&[]), None);
        for len in [0, 1, 127, 128, CHUNK_SIZE] {
            let data = vec![7u8; len];
            let mut whole = bytes::BytesMut::new();
            crate::encode(
                &TransferFrame::Chunk(Chunk(data.clone())),
                &mut whole,
                1 << 20,
            )
            .expect("encode");
            let mut built = chunk_frame_prefix(len, 1 << 20).expect("prefix");
            built.extend_from_slice(&data);
            assert_eq!(&whole[..], &built[..], "len {len}");
        }
        assert!(chunk_frame_prefix(CHUNK_SIZE, 100).is_err());
    }

    #[test]
    fn digest_is_hex_in_json_and_raw_on_the_wire() {
        let d = Digest([0x0f; 32]);
        assert_eq!(d.to_string(), "0f".repeat(32));
        assert_eq!(postcard::to_stdvec(&d).expect("encode"), vec![0x0f; 32]);
    }

    #[test]
    fn transfer_ids_print_and_parse() {
        let id = TransferId(0xdead_beef);
        assert_eq!(id.to_string(), "t-00000000deadbeef");
        assert_eq!(TransferId::parse(&id.to_string()), Some(id));
        assert_eq!(TransferId::parse("t-xyz"), None);
    }

    #[test]
    fn paths_are_normalised_or_refused() {
        assert_eq!(normalize_rel_path("").as_deref(), Ok(""));
        assert_eq!(normalize_rel_path("./").as_deref(), Ok(""));
        assert_eq!(normalize_rel_path("a/b/").as_deref(), Ok("a/b"));
        assert_eq!(normalize_rel_path("./a").as_deref(), Ok("a"));
        assert_eq!(normalize_rel_path("a b/c..d").as_deref(), Ok("a b/c..d"));
        assert_eq!(
            normalize_rel_path("../etc/passwd"),
            Err(PathError::Parent("../etc/passwd".into()))
        );
        assert_eq!(
            normalize_rel_path("a/../../b"),
            Err(PathError::Parent("a/../../b".into()))
        );
        assert_eq!(
            normalize_rel_path("/etc/passwd"),
            Err(PathError::Absolute("/etc/passwd".into()))
        );
        assert_eq!(
            normalize_rel_path("a//b"),
            Err(PathError::EmptyComponent("a//b".into()))
        );
        assert_eq!(
            normalize_rel_path("a/./b"),
            Err(PathError::EmptyComponent("a/./b".into()))
        );
        assert_eq!(
            normalize_rel_path("a\0b"),
            Err(PathError::Nul("a\0b".into()))
        );
        assert_eq!(
            normalize_rel_path(&"x".repeat(256)),
            Err(PathError::TooLong(256))
        );
        assert_eq!(
            PathError::Parent("../x".into()).to_string(),
            "path \"../x\" leaves the shared folder (`..`)"
        );
    }

    #[test]
    fn partial_names_are_hidden_and_bounded() {
        let p = partial_name("report.pdf", ResumeKey(0xab));
        assert_eq!(p, ".report.pdf.00000000000000ab.flotilla-part");
        assert!(is_partial_name(&p));
        assert!(!is_partial_name("report.pdf"));
        let long = partial_name(&"é".repeat(200), ResumeKey(1));
        assert!(long.len() <= MAX_NAME_LEN, "{}", long.len());
        assert!(is_partial_name(&long));
    }

    #[test]
    fn only_interruptions_are_retried() {
        assert!(TransferErrorKind::Interrupted.retryable());
        assert!(TransferErrorKind::Offline.retryable());
        assert!(!TransferErrorKind::NoSpace.retryable());
        assert!(!TransferErrorKind::HashMismatch.retryable());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = crate::decode_body::<SnapshotFrame>(&bytes);
            let _ = crate::decode_body::<TransferFrame>(&bytes);
            let _ = crate::decode_body::<HubStreamOpen>(&bytes);
            let _ = crate::decode_body::<CopyRequest>(&bytes);
            let _ = crate::decode_body::<ListReply>(&bytes);
            let _ = crate::decode_body::<FileEvent>(&bytes);
        }

        #[test]
        fn normalised_paths_never_escape(path in "[a-z./]{0,24}") {
            if let Ok(p) = normalize_rel_path(&path) {
                prop_assert!(!p.starts_with('/'));
                prop_assert!(p.split('/').all(|c| c != ".." && c != "."));
                prop_assert!(p.is_empty() || p.split('/').all(|c| !c.is_empty()));
            }
        }

        #[test]
        fn chunks_round_trip(data in proptest::collection::vec(any::<u8>(), 0..4096), offset in any::<u64>()) {
            round_trip(&TransferFrame::Chunk(Chunk(data)), StreamKind::Transfer);
            round_trip(&TransferFrame::Begin { offset }, StreamKind::Transfer);
        }
    }
}
