//! Private files: created 0600 from the first byte, written atomically, refused when loose.
//!
//! On Windows there are no mode bits: a key file inherits the ACL of its directory, which the
//! installer restricts to SYSTEM and Administrators (`icacls`, see `docs/deploy.md`). Nothing here
//! checks that ACL on load.

use crate::CertError;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` with mode 0600, through a temporary file and a rename, so a crash never
/// leaves a half-written key and the key is never readable by others, whatever the umask.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CertError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts.open(&tmp).map_err(|e| CertError::io(&tmp, e))?;
    file.write_all(bytes).map_err(|e| CertError::io(&tmp, e))?;
    file.sync_all().map_err(|e| CertError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| CertError::io(path, e))
}

/// Creates `dir` with mode 0700 from its creation (data and login directories hold keys), and sets
/// an existing one to 0700. Missing parents are made as `mkdir -p` makes them, with the umask's
/// mode: tightening `/var/lib` or `~/.local` would be a surprise, and a staged `--root` tree is
/// packaged with the modes it has. On Windows there are no modes: the directory inherits its
/// parent's ACL, which the installers restrict (see `docs/deploy.md`).
pub fn create_private_dir(dir: &Path) -> Result<(), CertError> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| CertError::io(parent, e))?;
    }
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(CertError::io(dir, e)),
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| CertError::io(dir, e))?;
    }
    Ok(())
}

/// Mode of certificates and other files that are public but belong to the fleet's admin: readable by
/// the owner's group (a monitoring user, say), never writable by others whatever the umask.
pub const PUBLIC_FILE_MODE: u32 = 0o640;

/// Writes `bytes` to `path` in place with exactly `mode` (an existing file's looser mode is
/// tightened first), so the umask never decides who may read or change it. On Windows the file
/// inherits its directory's ACL.
pub fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertError> {
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    let mut file = opts.open(path).map_err(|e| CertError::io(path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Only when it differs: a file that already has the mode needs no ownership to rewrite.
        let meta = file.metadata().map_err(|e| CertError::io(path, e))?;
        if meta.permissions().mode() & 0o777 != mode {
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(|e| CertError::io(path, e))?;
        }
    }
    #[cfg(not(unix))]
    let _ = mode;
    file.write_all(bytes).map_err(|e| CertError::io(path, e))
}

/// Reads a private file, refusing one that group or others can read (Unix only: on Windows the
/// directory's ACL is trusted, see the module doc).
pub fn read_private(path: &Path) -> Result<Vec<u8>, CertError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(path).map_err(|e| CertError::io(path, e))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CertError::LooseMode {
                path: path.to_owned(),
                mode,
            });
        }
    }
    fs::read(path).map_err(|e| CertError::io(path, e))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_are_0600_and_loose_ones_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.key");
        write_private(&path, b"secret").expect("write");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_private(&path).expect("read"), b"secret");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = read_private(&path).expect_err("loose");
        assert!(
            matches!(err, CertError::LooseMode { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"));
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("stat").permissions().mode() & 0o777
    }

    #[test]
    fn private_dirs_are_0700_and_their_missing_parents_are_not() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let parent = tmp.path().join("share");
        let dir = parent.join("flotilla");
        create_private_dir(&dir).expect("create");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(
            mode(&parent),
            0o777 & !umask(),
            "a parent gets the umask's mode"
        );
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("loosen");
        create_private_dir(&dir).expect("again");
        assert_eq!(
            mode(&dir),
            0o700,
            "an existing loose directory is tightened"
        );
    }

    #[test]
    fn a_file_in_the_way_of_a_private_dir_is_named() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("data");
        fs::write(&file, b"").expect("file");
        let err = create_private_dir(&file).expect_err("a file is not a directory");
        assert!(
            matches!(&err, CertError::Io { path, .. } if path == &file),
            "{err}"
        );
    }

    /// The process umask, read by making a directory with mode 0777.
    fn umask() -> u32 {
        let tmp = tempfile::tempdir().expect("tempdir");
        let probe = tmp.path().join("probe");
        fs::create_dir(&probe).expect("probe");
        0o777 & !mode(&probe)
    }
}
