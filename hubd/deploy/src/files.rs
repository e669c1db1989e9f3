//! Files an installer writes: atomically, with their mode from the first byte, owned by the
//! service's account where we are root; and the account itself.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A file operation that failed, with the path.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub struct FileError {
    /// What was being done (`write`, `create`, `remove`…).
    pub op: &'static str,
    /// The path.
    pub path: PathBuf,
    /// The cause.
    pub source: std::io::Error,
}

impl FileError {
    fn new(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, the file having `mode` from its
/// creation (never the umask's looser default), creating missing parent directories 0755.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| FileError::new("create", parent, e))?;
    }
    let tmp = path.with_extension("flotilla-tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = opts
        .open(&tmp)
        .map_err(|e| FileError::new("create", &tmp, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| FileError::new("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| FileError::new("rename", path, e))
}

/// Sets the permission bits of `path`.
pub fn set_mode(path: &Path, mode: u32) -> Result<(), FileError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| FileError::new("chmod", path, e))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}

/// Removes a file; a missing one is fine. Returns whether it existed.
pub fn remove_file(path: &Path) -> Result<bool, FileError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(FileError::new("remove", path, e)),
    }
}

/// Removes a directory tree; a missing one is fine. Returns whether it existed.
pub fn remove_dir_all(path: &Path) -> Result<bool, FileError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(FileError::new("remove", path, e)),
    }
}

/// Most bytes of buffer offered to `getpwnam_r` for one account's strings: a `passwd` entry is a
/// few hundred bytes, and a directory service returning more than 1 MiB is broken, not large.
#[cfg(unix)]
const PASSWD_BUF_MAX: usize = 1 << 20;

/// User and group id of the account `name`, if it exists. Uses `getpwnam_r`, which fills a buffer
/// of ours: `getpwnam` returns static storage that another thread's lookup overwrites (the daemons
/// call this on a multi-threaded runtime). A lookup the system cannot answer counts as no account.
#[cfg(unix)]
pub fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let cname = std::ffi::CString::new(name).ok()?;
    // SAFETY: sysconf only reads a constant; -1 (no hint) is handled below.
    let hint = unsafe { libc::sysconf(libc::_SC_GETPW_R_SIZE_MAX) };
    let mut size = usize::try_from(hint)
        .unwrap_or(0)
        .clamp(1024, PASSWD_BUF_MAX);
    // Bounded: the buffer doubles up to PASSWD_BUF_MAX, and an interrupted call is retried a
    // few times at most.
    for _ in 0..32 {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: passwd is plain data (integers and pointers); all-zero is a valid value that
        // getpwnam_r overwrites.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer refers to a live local of the stated size; the strings getpwnam_r
        // writes point into `buf`, which we do not read, and `pwd` is read only while `buf` lives.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        match rc {
            0 if found.is_null() => return None,
            0 => return Some((pwd.pw_uid, pwd.pw_gid)),
            libc::ERANGE if size < PASSWD_BUF_MAX => size = (size * 2).min(PASSWD_BUF_MAX),
            libc::EINTR => {}
            _ => return None,
        }
    }
    None
}

/// Accounts are a Unix matter here.
#[cfg(not(unix))]
pub fn lookup_user(_name: &str) -> Option<(u32, u32)> {
    None
}

/// Gives `path` and everything under it to `uid:gid` (symlinks themselves, never their targets).
#[cfg(unix)]
pub fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<(), FileError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .map_err(|e| FileError::new("chown", path, e))?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| FileError::new("stat", path, e))?;
    if meta.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| FileError::new("list", path, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| FileError::new("list", path, e))?;
            chown_tree(&entry.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Ownership is a Unix matter here.
#[cfg(not(unix))]
pub fn chown_tree(_path: &Path, _uid: u32, _gid: u32) -> Result<(), FileError> {
    Ok(())
}

/// Gives `path` the owner and group of `like` (a restored database must belong to the account
/// the hub runs as, even when root restored it). Only root may; anyone else already owns it.
#[cfg(unix)]
pub fn match_owner(path: &Path, like: &Path) -> Result<(), FileError> {
    use std::os::unix::fs::MetadataExt;
    if !crate::is_root() {
        return Ok(());
    }
    let meta = std::fs::metadata(like).map_err(|e| FileError::new("stat", like, e))?;
    std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| FileError::new("chown", path, e))
}

/// Ownership is a Unix matter here.
#[cfg(not(unix))]
pub fn match_owner(_path: &Path, _like: &Path) -> Result<(), FileError> {
    Ok(())
}

/// Contents of the systemd-sysusers entry that creates [`crate::layout::SERVICE_USER`]: a system
/// account with its own group, no login shell, home in the data root.
pub fn sysusers_entry() -> String {
    format!(
        "# Written by Flotilla's installer: the account hubd and agentd run as.\n\
         u {user} - \"Flotilla fleet daemons\" /var/lib/flotilla -\n",
        user = crate::layout::SERVICE_USER
    )
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_have_their_mode_from_the_start() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("a/b/c.toml");
        write_atomic(&path, b"x = 1\n", 0o640).expect("write");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        write_atomic(&path, b"x = 2\n", 0o600).expect("rewrite");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "x = 2\n");
        assert!(!path.with_extension("flotilla-tmp").exists());
        assert!(remove_file(&path).expect("rm"));
        assert!(!remove_file(&path).expect("rm again"));
    }

    #[test]
    fn root_is_uid_0_and_a_missing_account_is_none() {
        assert_eq!(lookup_user("root").map(|(uid, _)| uid), Some(0));
        assert_eq!(lookup_user("no-such-user-flotilla-test"), None);
        assert_eq!(lookup_user("nul\0inside"), None);
    }

    /// Accounts from `/etc/passwd` (name, uid, gid), which every Unix we run on keeps.
    fn passwd_accounts() -> Vec<(String, u32, u32)> {
        let text = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                Some((
                    f.first()?.to_string(),
                    f.get(2)?.parse().ok()?,
                    f.get(3)?.parse().ok()?,
                ))
            })
            .collect()
    }

    #[test]
    fn lookups_on_many_threads_at_once_each_get_their_own_account() {
        let accounts = passwd_accounts();
        assert!(accounts.len() >= 2, "want two accounts: {accounts:?}");
        std::thread::scope(|s| {
            for t in 0..8 {
                let accounts = &accounts;
                s.spawn(move || {
                    for i in 0..2_000 {
                        let (name, uid, gid) = &accounts[(t + i) % accounts.len()];
                        assert_eq!(lookup_user(name), Some((*uid, *gid)), "{name}");
                    }
                });
            }
        });
    }
}
