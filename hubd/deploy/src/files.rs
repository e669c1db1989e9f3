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

/// User and group id of the account `name`, if it exists.
#[cfg(unix)]
pub fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let cname = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer into static storage or null; we copy the two ids out at
    // once and keep no reference. Installers are single-threaded at this point.
    unsafe {
        let pw = libc::getpwnam(cname.as_ptr());
        if pw.is_null() {
            None
        } else {
            Some(((*pw).pw_uid, (*pw).pw_gid))
        }
    }
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
        assert_eq!(lookup_user("no-such-user-flotilla-test"), None);
        assert_eq!(lookup_user("root").map(|(u, _)| u), Some(0));
    }
}
