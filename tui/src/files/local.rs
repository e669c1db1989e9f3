//! The console's own disk in a copy: reading an upload's source and writing a download's
//! destination, with the same rules as an agent (BLAKE3 over everything, a hidden partial file
//! beside the destination, fsync and an atomic rename, resume after checking the bytes left).

use flotilla_wire::files::{CHUNK_SIZE, Digest, FileMeta, ResumeKey, partial_name};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// Mode of a new partial file: private until the finished file gets the source's mode.
const PARTIAL_MODE: u32 = 0o600;
/// Bytes written between two requests to the kernel to write a download back to the disk, as
/// agentd does for the files it receives: the disk works while the network does, instead of the
/// fsync before the rename writing the whole file after its last byte arrived, and the dirty pages
/// of a download stay near two windows.
const WRITE_BEHIND: u64 = 8 * 1024 * 1024;

/// Size, time and mode of a local file.
pub(crate) fn meta_of(md: &fs::Metadata) -> FileMeta {
    FileMeta {
        size: md.len(),
        mtime_ms: md
            .mtime()
            .saturating_mul(1000)
            .saturating_add(md.mtime_nsec() / 1_000_000),
        mode: md.mode() & 0o7777,
    }
}

/// Reads up to a full buffer (short only at end of file).
pub(crate) fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
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

fn digest(h: &blake3::Hasher) -> Digest {
    Digest(*h.finalize().as_bytes())
}

/// An upload's source file, positioned where the data starts.
pub(crate) struct LocalSource {
    file: File,
    /// BLAKE3 over the bytes before the position.
    hasher: blake3::Hasher,
    /// Where the data starts.
    pub(crate) start: u64,
    meta: FileMeta,
    buf: Vec<u8>,
    sent: u64,
}

impl LocalSource {
    /// Opens `path` and checks the destination's `offset` bytes against `prefix`: the data starts
    /// there if they match, else at 0.
    pub(crate) fn open(
        path: &Path,
        meta: FileMeta,
        offset: u64,
        prefix: Option<Digest>,
    ) -> io::Result<Self> {
        let mut file = File::open(path)?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; CHUNK_SIZE];
        let mut start = 0;
        if offset > 0 && offset <= meta.size && prefix.is_some() {
            let mut left = offset;
            while left > 0 {
                let want = usize::try_from(left.min(CHUNK_SIZE as u64)).unwrap_or(CHUNK_SIZE);
                let n = read_full(&mut file, &mut buf[..want])?;
                if n < want {
                    break;
                }
                hasher.update(&buf[..n]);
                left -= n as u64;
            }
            if left == 0 && Some(digest(&hasher)) == prefix {
                start = offset;
            } else {
                hasher = blake3::Hasher::new();
                file.seek(SeekFrom::Start(0))?;
            }
        }
        Ok(Self {
            file,
            hasher,
            start,
            meta,
            buf,
            sent: start,
        })
    }

    /// The next chunk, or `None` at the end (after checking the file did not change).
    pub(crate) fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let n = read_full(&mut self.file, &mut self.buf)?;
        if n == 0 {
            let md = self.file.metadata()?;
            if self.sent != self.meta.size || meta_of(&md) != self.meta {
                return Err(io::Error::other(
                    "the file changed while it was being sent: copy it again once it is stable",
                ));
            }
            return Ok(None);
        }
        self.sent += n as u64;
        if self.sent > self.meta.size {
            return Err(io::Error::other("the file grew while it was being sent"));
        }
        self.hasher.update(&self.buf[..n]);
        Ok(Some(self.buf[..n].to_vec()))
    }

    /// BLAKE3 of the whole file (valid once `next_chunk` returned `None`).
    pub(crate) fn digest(&self) -> Digest {
        digest(&self.hasher)
    }
}

/// A download's destination: the final path, its partial file, and what an earlier attempt left.
pub(crate) struct LocalSink {
    dest: PathBuf,
    partial: PathBuf,
    /// Bytes already in the partial file.
    pub(crate) have: u64,
    have_hasher: blake3::Hasher,
    file: Option<File>,
    hasher: blake3::Hasher,
    /// Bytes written so far, counted from 0.
    pub(crate) written: u64,
    behind: WriteBehind,
}

/// Where the writeback of a download stands: started before `behind`, finished before `settled`.
#[derive(Debug, Default)]
struct WriteBehind {
    behind: u64,
    settled: u64,
    /// Set once the filesystem refused a request (it is only a hint; the fsync reports errors).
    off: bool,
}

impl WriteBehind {
    fn at(pos: u64) -> Self {
        Self {
            behind: pos,
            settled: pos,
            off: false,
        }
    }

    /// Called with the offset after each write: every [`WRITE_BEHIND`] bytes, starts writeback of
    /// the new bytes and waits for the window before them.
    fn advance(&mut self, file: &File, pos: u64) {
        if self.off || pos - self.behind < WRITE_BEHIND {
            return;
        }
        let started = sync_range(file, self.behind, pos - self.behind, false);
        // A length of 0 means "to the end of the file": the first window has nothing to wait for.
        let settled = self.behind == self.settled
            || sync_range(file, self.settled, self.behind - self.settled, true);
        self.off = !(started && settled);
        self.settled = self.behind;
        self.behind = pos;
    }
}

/// `sync_file_range` over `len` (> 0) bytes at `offset`: start writeback, or with `wait` also wait
/// for it. Whether the kernel took it.
#[cfg(target_os = "linux")]
fn sync_range(file: &File, offset: u64, len: u64, wait: bool) -> bool {
    use std::os::fd::AsRawFd;
    let flags = if wait {
        libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER
    } else {
        libc::SYNC_FILE_RANGE_WRITE
    };
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return false;
    };
    // SAFETY: the descriptor is open for the life of `file`; the call reads no memory of ours.
    unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) == 0 }
}

/// No writeback hints off Linux: the fsync before the rename writes the file.
#[cfg(not(target_os = "linux"))]
fn sync_range(_file: &File, _offset: u64, _len: u64, _wait: bool) -> bool {
    false
}

impl LocalSink {
    /// Prepares to write `dest`, hashing a partial file an earlier attempt left under `key`.
    pub(crate) fn plan(dest: &Path, key: ResumeKey, meta: FileMeta) -> io::Result<Self> {
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(parent)?;
        if dest.is_dir() {
            return Err(io::Error::other(format!(
                "{} is a directory",
                dest.display()
            )));
        }
        let name = dest
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| io::Error::other("destination has no UTF-8 file name"))?;
        let partial = parent.join(partial_name(name, key));
        let mut hasher = blake3::Hasher::new();
        let mut have = 0;
        match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&partial)
        {
            Ok(mut f) if f.metadata()?.len() <= meta.size => {
                let mut buf = vec![0u8; CHUNK_SIZE];
                loop {
                    let n = read_full(&mut f, &mut buf)?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    have += n as u64;
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(Self {
            dest: dest.to_owned(),
            partial,
            have,
            have_hasher: hasher,
            file: None,
            hasher: blake3::Hasher::new(),
            written: 0,
            behind: WriteBehind::default(),
        })
    }

    /// BLAKE3 of the bytes already there, if any.
    pub(crate) fn prefix(&self) -> Option<Digest> {
        (self.have > 0).then(|| digest(&self.have_hasher))
    }

    /// Opens the partial file for data starting at `start` (0 or `have`).
    pub(crate) fn begin(&mut self, start: u64) -> io::Result<()> {
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .mode(PARTIAL_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.partial)?;
        self.hasher = if start == self.have && start > 0 {
            self.have_hasher.clone()
        } else {
            blake3::Hasher::new()
        };
        file.set_len(start)?;
        file.seek(SeekFrom::Start(start))?;
        self.written = start;
        self.behind = WriteBehind::at(start);
        self.file = Some(file);
        Ok(())
    }

    /// Appends data.
    pub(crate) fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("data before begin"))?;
        file.write_all(data)?;
        self.hasher.update(data);
        self.written += data.len() as u64;
        self.behind.advance(file, self.written);
        Ok(())
    }

    /// BLAKE3 of everything written.
    pub(crate) fn digest(&self) -> Digest {
        digest(&self.hasher)
    }

    /// Applies the source's mode and time, fsyncs, renames into place, fsyncs the directory.
    pub(crate) fn finish(mut self, meta: FileMeta) -> io::Result<PathBuf> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("finish before begin"))?;
        file.set_permissions(fs::Permissions::from_mode(meta.mode & 0o777))?;
        let mtime = if meta.mtime_ms >= 0 {
            UNIX_EPOCH + Duration::from_millis(meta.mtime_ms.unsigned_abs())
        } else {
            UNIX_EPOCH - Duration::from_millis(meta.mtime_ms.unsigned_abs())
        };
        file.set_times(fs::FileTimes::new().set_modified(mtime))?;
        file.sync_all()?;
        fs::rename(&self.partial, &self.dest)?;
        if let Some(parent) = self.dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
        Ok(self.dest.clone())
    }

    /// Keeps the bytes for a later attempt.
    pub(crate) fn keep(mut self) {
        if let Some(f) = self.file.take() {
            let _ = f.sync_data();
        }
    }

    /// Removes the partial file.
    pub(crate) fn discard(mut self) {
        self.file = None;
        let _ = fs::remove_file(&self.partial);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_download_is_written_back_as_it_arrives() {
        let dir = tempfile::tempdir().expect("tempdir");
        let size = 3 * WRITE_BEHIND + 5;
        let meta = FileMeta {
            size,
            mtime_ms: 5_000,
            mode: 0o600,
        };
        let mut sink = LocalSink::plan(&dir.path().join("big"), ResumeKey(8), meta).expect("plan");
        sink.begin(0).expect("begin");
        let chunk = vec![7u8; CHUNK_SIZE];
        let mut left = size;
        while left > 0 {
            let n = left.min(CHUNK_SIZE as u64) as usize;
            sink.write(&chunk[..n]).expect("write");
            left -= n as u64;
        }
        // Every window went to the kernel and all but the last two were waited for.
        assert_eq!(
            (sink.behind.settled, sink.behind.behind),
            (2 * WRITE_BEHIND, 3 * WRITE_BEHIND)
        );
        #[cfg(target_os = "linux")]
        assert!(!sink.behind.off, "the kernel refused a writeback request");
        let done = sink.finish(meta).expect("finish");
        assert_eq!(fs::metadata(done).expect("stat").len(), size);
    }

    #[test]
    fn a_download_resumes_from_a_verified_partial_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("out/f.bin");
        let meta = FileMeta {
            size: 6,
            mtime_ms: 5_000,
            mode: 0o640,
        };
        let mut sink = LocalSink::plan(&dest, ResumeKey(7), meta).expect("plan");
        assert_eq!((sink.have, sink.prefix()), (0, None));
        sink.begin(0).expect("begin");
        sink.write(b"abc").expect("write");
        sink.keep();
        let mut sink = LocalSink::plan(&dest, ResumeKey(7), meta).expect("plan");
        assert_eq!(sink.have, 3);
        assert_eq!(
            sink.prefix(),
            Some(Digest(*blake3::hash(b"abc").as_bytes()))
        );
        sink.begin(3).expect("begin");
        sink.write(b"def").expect("write");
        assert_eq!(sink.digest(), Digest(*blake3::hash(b"abcdef").as_bytes()));
        let done = sink.finish(meta).expect("finish");
        assert_eq!(fs::read(&done).expect("read"), b"abcdef");
        let md = fs::metadata(&done).expect("stat");
        assert_eq!(md.mode() & 0o777, 0o640);
        assert_eq!(meta_of(&md).mtime_ms, 5_000);
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("out"))
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("f.bin")]);
    }

    #[test]
    fn an_upload_starts_over_when_the_prefix_differs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("src");
        fs::write(&path, b"hello world").expect("write");
        let meta = meta_of(&fs::metadata(&path).expect("stat"));
        let good = Digest(*blake3::hash(b"hello").as_bytes());
        let src = LocalSource::open(&path, meta, 5, Some(good)).expect("open");
        assert_eq!(src.start, 5);
        let mut src = LocalSource::open(&path, meta, 5, Some(Digest([9; 32]))).expect("open");
        assert_eq!(src.start, 0);
        let mut all = Vec::new();
        while let Some(c) = src.next_chunk().expect("read") {
            all.extend(c);
        }
        assert_eq!(all, b"hello world");
        assert_eq!(
            src.digest(),
            Digest(*blake3::hash(b"hello world").as_bytes())
        );
    }
}
