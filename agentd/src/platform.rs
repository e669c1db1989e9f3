//! The file calls that differ between Unix and Windows, for transfers and the folder watch:
//! permission bits, opening without following a link or waiting on a FIFO, and "no space" errors.
//!
//! Windows has no mode bits: a file reports 0o644 (0o444 when read-only) and a received file only
//! takes the read-only flag from the sender's mode. Untested on Windows.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

/// Permission bits of a file (setuid, setgid and sticky included on Unix).
#[cfg(unix)]
pub(crate) fn mode(md: &fs::Metadata) -> u32 {
    std::os::unix::fs::MetadataExt::mode(md) & 0o7777
}

/// Permission bits of a file: Windows has only the read-only flag.
#[cfg(not(unix))]
pub(crate) fn mode(md: &fs::Metadata) -> u32 {
    if md.permissions().readonly() {
        0o444
    } else {
        0o644
    }
}

/// Gives `file` the permission bits `mode` (Unix), or only its read-only flag (Windows).
pub(crate) fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(mode & 0o777))
    }
    #[cfg(not(unix))]
    {
        let mut perms = file.metadata()?.permissions();
        perms.set_readonly(mode & 0o222 == 0);
        file.set_permissions(perms)
    }
}

/// Makes `opts` open a link itself rather than its target (`FILE_FLAG_OPEN_REPARSE_POINT`), so the
/// caller's "is it a regular file" check on the handle refuses it. Unix uses `O_NOFOLLOW` in
/// [`open_nonblocking`].
#[cfg(not(unix))]
fn no_follow(opts: &mut OpenOptions) -> &mut OpenOptions {
    /// `FILE_FLAG_OPEN_REPARSE_POINT` from the Windows SDK.
    const FILE_FLAG_OPEN_REPARSE_POINT: u32 = 0x0020_0000;
    std::os::windows::fs::OpenOptionsExt::custom_flags(opts, FILE_FLAG_OPEN_REPARSE_POINT)
}

/// Opens `path` with `opts` without waiting and without following a symbolic link in the last
/// component, and returns the file with what `fstat` says about it. A FIFO opened plainly blocks
/// until a writer appears (forever, in a thread nobody can stop) and a device may act on being
/// opened, so the open is `O_NONBLOCK | O_NOFOLLOW`; a regular file then gets blocking IO back.
/// The caller refuses anything that is not the kind it wants, using the metadata returned, which
/// describes the object actually opened (no race with a rename).
pub(crate) fn open_nonblocking(
    opts: &mut OpenOptions,
    path: &Path,
) -> io::Result<(File, fs::Metadata)> {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        let file = std::os::unix::fs::OpenOptionsExt::custom_flags(
            opts,
            libc::O_NOFOLLOW | libc::O_NONBLOCK,
        )
        .open(path)?;
        let md = file.metadata()?;
        if md.is_file() {
            let fd = file.as_raw_fd();
            // SAFETY: fcntl on a descriptor `file` owns for the duration of the calls; no memory.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
            // SAFETY: as above.
            if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok((file, md))
    }
    #[cfg(not(unix))]
    {
        let file = no_follow(opts).open(path)?;
        let md = file.metadata()?;
        Ok((file, md))
    }
}

/// Words for what a file system object is, for "not a regular file" refusals: `fifo`, `socket`,
/// `block device`, `character device`, `symbolic link`, `directory` or `special file`.
pub(crate) fn kind_name(ft: fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "fifo";
        }
        if ft.is_socket() {
            return "socket";
        }
        if ft.is_block_device() {
            return "block device";
        }
        if ft.is_char_device() {
            return "character device";
        }
    }
    if ft.is_symlink() {
        "symbolic link"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_file() {
        "regular file"
    } else {
        "special file"
    }
}

/// Makes `opts` create a file with permission bits `mode` (Unix; on Windows the file inherits its
/// folder's ACL).
pub(crate) fn create_mode(opts: &mut OpenOptions, mode: u32) -> &mut OpenOptions {
    #[cfg(unix)]
    {
        std::os::unix::fs::OpenOptionsExt::mode(opts, mode)
    }
    #[cfg(not(unix))]
    {
        let _ = mode;
        opts
    }
}

/// Why a write ran out of room, if it did: `Some(false)` for a full disk or quota, `Some(true)` for
/// a file-size limit.
pub(crate) fn no_space(e: &io::Error) -> Option<bool> {
    #[cfg(unix)]
    {
        match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => Some(false),
            Some(libc::EFBIG) => Some(true),
            _ => None,
        }
    }
    #[cfg(not(unix))]
    {
        match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Some(false),
            io::ErrorKind::FileTooLarge => Some(true),
            _ => None,
        }
    }
}

/// Reserves `len` bytes of disk for `file` from `offset` without changing its size
/// (`fallocate` with `FALLOC_FL_KEEP_SIZE`), so that a disk or quota too small for a file being
/// received fails at once with ENOSPC or EDQUOT. Linux only; a filesystem that cannot do it (or
/// another OS) leaves the room to be found by the writes, as before.
pub(crate) fn preallocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Ok(());
        };
        // SAFETY: the descriptor is open for the life of `file`; the call reads no memory of ours.
        let rc =
            unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, offset, len) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match no_space(&e) {
            Some(_) => Err(e),
            // EOPNOTSUPP, ENOSYS, EINVAL: no preallocation here; the writes find out.
            None => Ok(()),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, offset, len);
        Ok(())
    }
}

/// Modification time in ms since the epoch.
#[cfg(unix)]
pub(crate) fn mtime_ms(md: &fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    md.mtime()
        .saturating_mul(1000)
        .saturating_add(md.mtime_nsec() / 1_000_000)
}

/// Modification time in ms since the epoch.
#[cfg(not(unix))]
pub(crate) fn mtime_ms(md: &fs::Metadata) -> i64 {
    use std::time::UNIX_EPOCH;
    match md.modified() {
        Ok(t) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
        },
        Err(_) => 0,
    }
}

/// How far the kernel's writeback of a file being received has got, as far as we asked for it.
pub(crate) enum Writeback {
    /// Start writing `len` bytes at `offset` to the disk and return at once.
    Start,
    /// Start it if not started, and wait until those bytes are on the disk.
    Finish,
}

/// Asks the kernel to write `len` bytes of `file` at `offset` back to the disk now
/// (`sync_file_range`), instead of when the dirty-page thresholds or the final fsync force it.
/// Linux only; elsewhere, and on filesystems without writeback (tmpfs), it does nothing. Only a
/// hint: the fsync before the rename is what reports a write that failed.
/// `len` must not be 0, which the kernel reads as "to the end of the file".
pub(crate) fn writeback(file: &File, offset: u64, len: u64, how: Writeback) -> io::Result<()> {
    debug_assert!(
        len > 0,
        "a writeback of 0 bytes means the whole rest of the file"
    );
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let flags = match how {
            Writeback::Start => libc::SYNC_FILE_RANGE_WRITE,
            Writeback::Finish => {
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER
            }
        };
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Ok(());
        };
        // SAFETY: the descriptor is open for the life of `file`; the call reads no memory of ours.
        let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, offset, len, how);
        Ok(())
    }
}
