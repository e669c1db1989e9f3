//! A program on a pseudo-terminal of the host: portable-pty opens and sizes the PTY pair; the
//! program is spawned here so that it can switch accounts between fork and exec (portable-pty's
//! own spawn cannot), and the master is read and written through tokio's `AsyncFd`, so a session
//! has no thread of its own and nothing blocks.

use super::{Login, ShellAccount};
use flotilla_wire::shell::{ShellExit, ShellOpen};
use portable_pty::{MasterPty, PtySize};
use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;

/// Login shell of an account whose passwd entry names none.
pub(super) const DEFAULT_SHELL: &str = "/bin/sh";
/// Buffer for one `getpwuid_r` answer; grown on `ERANGE` up to [`MAX_PASSWD_BUF`].
const PASSWD_BUF: usize = 4096;
/// Largest `getpwuid_r` buffer tried: a passwd line is a few hundred bytes.
const MAX_PASSWD_BUF: usize = 1 << 20;

/// The master side of the PTY, non-blocking.
pub(super) struct PtyFd(AsyncFd<OwnedFd>);

/// The program and what sizes its terminal. Dropped without [`HostChild::hang_up`] (the link
/// to the hub went away and its stream tasks were aborted), it kills the session's process group,
/// so no shell outlives its session.
pub(super) struct HostChild {
    master: Option<Box<dyn MasterPty + Send>>,
    child: tokio::process::Child,
    /// Its process id, which is also its process group and session (it calls `setsid`).
    pid: i32,
    exit: Option<ShellExit>,
    hung_up: bool,
}

impl Drop for HostChild {
    fn drop(&mut self) {
        if !self.hung_up {
            // SAFETY: signals to the process group we created (its id is the child's pid).
            unsafe {
                libc::killpg(self.pid, libc::SIGHUP);
                libc::killpg(self.pid, libc::SIGKILL);
            }
        }
    }
}

/// The passwd entry of `uid`: name, home and login shell.
pub(super) fn login_of(uid: u32) -> Option<Login> {
    let mut buf = vec![0u8; PASSWD_BUF];
    loop {
        // SAFETY: all-zero is a valid `passwd`; getpwuid_r fills it.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; the strings it sets point into `buf`.
        let rc = unsafe {
            libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut found)
        };
        if rc == libc::ERANGE && buf.len() < MAX_PASSWD_BUF {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || found.is_null() {
            return None;
        }
        let text = |p: *const libc::c_char| {
            if p.is_null() {
                String::new()
            } else {
                // SAFETY: a NUL-terminated string inside `buf`, set by getpwuid_r.
                unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
            }
        };
        let shell = text(pw.pw_shell);
        let home = text(pw.pw_dir);
        return Some(Login {
            name: text(pw.pw_name),
            home: if home.is_empty() { "/".into() } else { home },
            shell: if shell.is_empty() {
                DEFAULT_SHELL.into()
            } else {
                shell
            },
        });
    }
}

/// Opens a PTY of the requested size and starts the login shell (or the command) on it as the
/// session leader with the PTY as its controlling terminal.
pub(super) fn spawn(
    account: &ShellAccount,
    base_env: &[(String, String)],
    open: &ShellOpen,
) -> Result<(Arc<PtyFd>, HostChild), String> {
    let (login, switch) = match account {
        ShellAccount::Own(login) => (login, None),
        ShellAccount::Switch { run_as, login } => (login, Some(run_as.clone())),
        ShellAccount::RootNotChosen => return Err("root shells are not allowed here".into()),
    };
    let size = PtySize {
        rows: open.size.rows,
        cols: open.size.cols,
        pixel_width: 0,
        pixel_height: 0,
    };
    let pair = portable_pty::native_pty_system()
        .openpty(size)
        .map_err(|e| format!("cannot open a pseudo-terminal: {e}"))?;
    let tty = pair
        .master
        .tty_name()
        .ok_or("the pseudo-terminal has no name")?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&tty)
        .map_err(|e| format!("cannot open {}: {e}", tty.display()))?;
    drop(pair.slave);
    if let Some(run_as) = &switch {
        // The terminal belongs to whoever logs in on it, as login and sshd arrange.
        // SAFETY: fchown on a descriptor we own.
        unsafe { libc::fchown(slave.as_raw_fd(), run_as.uid, u32::MAX) };
    }
    let (program, argv0, args): (&str, String, &[String]) = match open.command.split_first() {
        None => {
            let base = login.shell.rsplit('/').next().unwrap_or("sh");
            (&login.shell, format!("-{base}"), &[])
        }
        Some((program, args)) => (program, program.clone(), args),
    };
    let home = std::path::Path::new(&login.home);
    let cwd = if home.is_dir() {
        home
    } else {
        std::path::Path::new("/")
    };
    let mut cmd = std::process::Command::new(program);
    cmd.arg0(argv0)
        .args(args)
        .env_clear()
        .envs(
            base_env
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "HOME" | "USER" | "LOGNAME" | "SHELL"))
                .map(|(k, v)| (k, v)),
        )
        .env("HOME", &login.home)
        .env("USER", &login.name)
        .env("LOGNAME", &login.name)
        .env("SHELL", &login.shell)
        .env("TERM", &open.term)
        .current_dir(cwd);
    let stdio = |f: &std::fs::File| {
        f.try_clone()
            .map(std::process::Stdio::from)
            .map_err(|e| format!("cannot duplicate the terminal: {e}"))
    };
    cmd.stdin(stdio(&slave)?)
        .stdout(stdio(&slave)?)
        .stderr(std::process::Stdio::from(slave));
    let ids = switch.map(|r| (r.uid, r.gid, r.groups));
    // SAFETY: the closure runs between fork and exec and makes only async-signal-safe calls.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some((uid, gid, groups)) = &ids {
                crate::exec::account::become_account(*uid, *gid, groups)?;
            }
            crate::exec::account::cloexec_from_3();
            Ok(())
        });
    }
    let child = tokio::process::Command::from(cmd)
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or("the program exited before it started")?;
    let raw = pair
        .master
        .as_raw_fd()
        .ok_or("the pseudo-terminal has no descriptor")?;
    // SAFETY: fcntl on the master's descriptor, which stays open while `pair.master` lives; the
    // duplicate is a new descriptor we own.
    let dup = unsafe { libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(format!(
            "cannot duplicate the pseudo-terminal: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `dup` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(dup) };
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(dup, libc::F_GETFL);
        libc::fcntl(dup, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    // SAFETY: `fd` is an open descriptor the `OwnedFd` owns, and the `AsyncFd` owns it in turn
    // until dropped, so it refers to the same file description throughout.
    let fd = unsafe { AsyncFd::register(fd) }
        .map_err(|e| format!("cannot watch the pseudo-terminal: {e}"))?;
    Ok((
        Arc::new(PtyFd(fd)),
        HostChild {
            master: Some(pair.master),
            child,
            pid,
            exit: None,
            hung_up: false,
        },
    ))
}

impl PtyFd {
    /// Next output; `Ok(None)` once no process holds the terminal open (the kernel answers EIO).
    /// Cancel-safe.
    pub(super) async fn read(&self, buf: &mut [u8]) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            let mut guard = self.0.readable().await?;
            let r = guard.try_io(|fd| {
                // SAFETY: reads at most `buf.len()` bytes into `buf`.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
            });
            match r {
                Ok(Ok(0)) => return Ok(None),
                Ok(Ok(n)) => return Ok(Some(buf[..n].to_vec())),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(None),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes some of `data`. Cancel-safe: nothing is written unless it returns.
    pub(super) async fn write(&self, data: &[u8]) -> std::io::Result<usize> {
        loop {
            let mut guard = self.0.writable().await?;
            let r = guard.try_io(|fd| {
                // SAFETY: writes at most `data.len()` bytes from `data`.
                let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
                usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
            });
            match r {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }
}

impl HostChild {
    /// Sets the terminal's size; the kernel sends the foreground process group SIGWINCH.
    pub(super) fn resize(&mut self, cols: u16, rows: u16) {
        let size = PtySize {
            rows,
            cols,
            pixel_width: 0,
            pixel_height: 0,
        };
        if let Some(master) = &self.master
            && let Err(e) = master.resize(size)
        {
            tracing::debug!(error = %e, "resize failed");
        }
    }

    /// Waits for the program to exit. Cancel-safe; answers at once when it already has.
    pub(super) async fn wait(&mut self) -> ShellExit {
        if let Some(exit) = self.exit {
            return exit;
        }
        let exit = match self.child.wait().await {
            Ok(status) => match (status.code(), status.signal()) {
                (Some(code), _) => ShellExit::Code(code),
                (None, Some(sig)) => ShellExit::Signal(sig),
                (None, None) => ShellExit::Code(255),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot wait for the shell");
                ShellExit::Code(255)
            }
        };
        self.exit = Some(exit);
        exit
    }

    /// Hangs up as a closed terminal does: SIGHUP to the session's process group, then SIGKILL
    /// after `grace` if the program is still there. Always reaps it.
    pub(super) async fn hang_up(mut self, grace: Duration) {
        // SAFETY: signals to the process group we created (its id is the child's pid).
        unsafe { libc::killpg(self.pid, libc::SIGHUP) };
        drop(self.master.take());
        if self.exit.is_none()
            && tokio::time::timeout(grace, self.child.wait())
                .await
                .is_err()
        {
            // SAFETY: as above.
            unsafe { libc::killpg(self.pid, libc::SIGKILL) };
            let _ = self.child.wait().await;
        }
        self.hung_up = true;
    }
}
