//! The local sockets the hub's own CLI uses (admin and maintenance): a Unix socket at a path in the
//! data directory, mode 0600 inside the 0700 directory, on Unix; a named pipe on Windows.
//!
//! Windows has no socket file: the pipe's name is derived from the socket's path ([`pipe_name`]),
//! so the CLI finds the hub serving a given data directory. The pipe keeps Windows' default
//! security (full control for LocalSystem, Administrators and the creating account; read only for
//! everyone else, which cannot send a request), refuses remote clients, and is created as the first
//! instance of its name, so another process cannot squat on it. Untested on Windows.

use std::io;
use std::path::Path;

/// A connected local client or server stream.
#[cfg(unix)]
pub(crate) type LocalStream = tokio::net::UnixStream;
/// A connected local client or server stream.
#[cfg(windows)]
pub(crate) type LocalStream = tokio::net::windows::named_pipe::NamedPipeServer;

/// The pipe name standing for the socket at `path`: `\\.\pipe\flotilla-<file name>-<hash of the
/// path>`. Pure, so tested everywhere.
#[cfg(any(windows, test))]
pub(crate) fn pipe_name(path: &Path) -> String {
    let hash = blake3::hash(path.as_os_str().as_encoded_bytes());
    let stem = path
        .file_name()
        .map(|n| n.to_string_lossy().replace(['\\', '/'], "_"))
        .unwrap_or_default();
    format!(r"\\.\pipe\flotilla-{stem}-{}", &hash.to_hex()[..32])
}

/// A bound local socket.
pub(crate) struct LocalListener {
    #[cfg(unix)]
    inner: tokio::net::UnixListener,
    #[cfg(windows)]
    name: String,
    /// The pipe instance the next client connects to.
    #[cfg(windows)]
    next: tokio::net::windows::named_pipe::NamedPipeServer,
}

impl LocalListener {
    /// Binds the socket at `path`, replacing a stale socket file (the caller holds the data-dir
    /// lock, which proves no other hub owns it).
    #[cfg(unix)]
    pub(crate) fn bind(path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::remove_file(path);
        let inner = tokio::net::UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(Self { inner })
    }

    /// Creates the first instance of the pipe named after `path`; fails if any process already
    /// serves that name.
    #[cfg(windows)]
    pub(crate) fn bind(path: &Path) -> io::Result<Self> {
        let name = pipe_name(path);
        let next = tokio::net::windows::named_pipe::ServerOptions::new()
            .first_pipe_instance(true)
            .reject_remote_clients(true)
            .create(&name)?;
        Ok(Self { name, next })
    }

    /// Waits for the next client. Cancel-safe: a client not yet taken stays queued.
    pub(crate) async fn accept(&mut self) -> io::Result<LocalStream> {
        #[cfg(unix)]
        {
            self.inner.accept().await.map(|(stream, _)| stream)
        }
        #[cfg(windows)]
        {
            self.next.connect().await?;
            let fresh = tokio::net::windows::named_pipe::ServerOptions::new()
                .reject_remote_clients(true)
                .create(&self.name)?;
            Ok(std::mem::replace(&mut self.next, fresh))
        }
    }
}

/// Connects to the socket at `path`; `Ok(None)` when it cannot be reached (no file, a stale file,
/// or no permission: the caller then works on the database directly).
#[cfg(unix)]
pub(crate) async fn connect(path: &Path) -> io::Result<Option<tokio::net::UnixStream>> {
    Ok(tokio::net::UnixStream::connect(path).await.ok())
}

/// How many times a client retries a pipe whose instances are all busy.
#[cfg(windows)]
const PIPE_BUSY_TRIES: u32 = 50;

/// Connects to the pipe named after `path`; `Ok(None)` when nothing serves it.
#[cfg(windows)]
pub(crate) async fn connect(
    path: &Path,
) -> io::Result<Option<tokio::net::windows::named_pipe::NamedPipeClient>> {
    use tokio::net::windows::named_pipe::ClientOptions;
    /// `ERROR_PIPE_BUSY`: every instance is taken; the server makes a new one on each accept.
    const ERROR_PIPE_BUSY: i32 = 231;
    let name = pipe_name(path);
    for _ in 0..PIPE_BUSY_TRIES {
        match ClientOptions::new().open(&name) {
            Ok(client) => return Ok(Some(client)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(ERROR_PIPE_BUSY) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("pipe {name} stayed busy"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_names_differ_per_data_dir_and_fit_windows_limit() {
        let a = pipe_name(Path::new(r"C:\ProgramData\Flotilla\hub\admin.sock"));
        let b = pipe_name(Path::new(r"D:\other\hub\admin.sock"));
        assert!(a.starts_with(r"\\.\pipe\flotilla-"), "{a}");
        assert_ne!(a, b);
        // Windows allows 256 characters; the name has no backslash after the prefix.
        assert!(a.len() < 256);
        assert!(!a[r"\\.\pipe\".len()..].contains('\\'), "{a}");
    }
}
