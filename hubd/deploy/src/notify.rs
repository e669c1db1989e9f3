//! Readiness notification to systemd (`Type=notify`): `READY=1` once serving, `RELOADING=1` and
//! `STOPPING=1` around reloads and shutdown, `STATUS=` for `systemctl status`. The protocol is one
//! datagram to the socket named by `$NOTIFY_SOCKET`; without that variable every call is a no-op.

use std::path::PathBuf;

/// Where to send notifications, read once at start-up.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    socket: Option<PathBuf>,
}

impl Notifier {
    /// From the value of `$NOTIFY_SOCKET` (pass `std::env::var_os("NOTIFY_SOCKET")`).
    pub fn new(socket: Option<std::ffi::OsString>) -> Self {
        Self {
            socket: socket.filter(|s| !s.is_empty()).map(PathBuf::from),
        }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends `state` (newline-separated `KEY=value` pairs). Failures are returned, not fatal: a
    /// lost notification shows as a start timeout in systemd's own log.
    pub fn send(&self, state: &str) -> std::io::Result<()> {
        let Some(path) = &self.socket else {
            return Ok(());
        };
        send_to(path, state.as_bytes())
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) -> std::io::Result<()> {
        self.send(&format!("READY=1\nSTATUS={status}"))
    }

    /// `RELOADING=1`: the manager shows `reloading` until the next `READY=1`.
    pub fn reloading(&self) -> std::io::Result<()> {
        self.send("RELOADING=1\nSTATUS=reloading configuration")
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) -> std::io::Result<()> {
        self.send("STOPPING=1\nSTATUS=draining")
    }
}

#[cfg(unix)]
fn send_to(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::net::UnixDatagram;
    let sock = UnixDatagram::unbound()?;
    let text = path.to_string_lossy();
    if let Some(name) = text.strip_prefix('@') {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            return sock.send_to_addr(bytes, &addr).map(|_| ());
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = name;
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "abstract sockets are Linux-only",
            ));
        }
    }
    sock.send_to(bytes, path).map(|_| ())
}

#[cfg(not(unix))]
fn send_to(_path: &std::path::Path, _bytes: &[u8]) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn ready_reaches_the_socket() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("notify.sock");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
        let n = Notifier::new(Some(path.clone().into_os_string()));
        assert!(n.enabled());
        n.ready("serving").expect("send");
        let mut buf = [0u8; 256];
        let len = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=serving");
        let off = Notifier::new(None);
        assert!(!off.enabled());
        off.ready("x").expect("no-op");
    }
}
