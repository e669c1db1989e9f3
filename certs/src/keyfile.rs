//! Private files: created 0600 from the first byte, written atomically, refused when loose.

use crate::CertError;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Writes `bytes` to `path` with mode 0600, through a temporary file and a rename, so a crash never
/// leaves a half-written key and the key is never readable by others, whatever the umask.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CertError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| CertError::io(&tmp, e))?;
    file.write_all(bytes).map_err(|e| CertError::io(&tmp, e))?;
    file.sync_all().map_err(|e| CertError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| CertError::io(path, e))
}

/// Reads a private file, refusing one that group or others can read.
pub fn read_private(path: &Path) -> Result<Vec<u8>, CertError> {
    let meta = fs::metadata(path).map_err(|e| CertError::io(path, e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CertError::LooseMode {
            path: path.to_owned(),
            mode,
        });
    }
    fs::read(path).map_err(|e| CertError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
