//! Who a command runs as, and what it must not inherit from agentd.
//!
//! `run_as` names an account that commands run as instead of agentd's own: it is resolved once at
//! start (ids, supplementary groups, home), and the child switches to it between fork and exec
//! with async-signal-safe calls only (`setgroups`, `setgid`, `setuid`). Descriptors agentd
//! inherited from whatever started it are marked close-on-exec, once at start and again in every
//! child that forks, so a command gets only its standard input, output and error.

use crate::AgentError;
use std::ffi::{CStr, CString};

/// The account commands run as (`run_as` in agent.toml), resolved at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    /// Account name, as configured.
    pub name: String,
    /// Its user id.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
    /// Every group it belongs to, primary included (as `initgroups` would set them).
    pub groups: Vec<u32>,
    /// Its home directory, for `HOME`.
    pub home: String,
}

/// Most supplementary groups looked up for an account: Linux's own limit (`NGROUPS_MAX`).
const MAX_GROUPS: usize = 65_536;
/// Buffer for one `getpwnam_r` answer; grown on `ERANGE` up to [`MAX_PASSWD_BUF`].
const PASSWD_BUF: usize = 4096;
/// Largest `getpwnam_r` buffer tried: a passwd line is a few hundred bytes.
const MAX_PASSWD_BUF: usize = 1 << 20;

/// Resolves `name` for `run_as`. Switching accounts needs root: an agentd running as anyone else
/// is refused unless `name` is its own account (nothing to switch), so a configuration that
/// cannot be honoured never starts quietly running commands as agentd's user instead.
pub(crate) fn resolve(name: &str, euid: u32) -> Result<RunAs, AgentError> {
    let bad = |m: String| AgentError::Config(m);
    let account = lookup(name)?.ok_or_else(|| {
        bad(format!(
            "run_as = \"{name}\": no such account on this machine (create it, or remove run_as)"
        ))
    })?;
    if euid != 0 && account.uid != euid {
        return Err(bad(format!(
            "run_as = \"{name}\" needs agentd to run as root to switch accounts, but it runs as uid {euid}: start agentd as root, or remove run_as to run commands as agentd's own account"
        )));
    }
    Ok(account)
}

/// The passwd entry and groups of `name`, or `None` if there is no such account.
fn lookup(name: &str) -> Result<Option<RunAs>, AgentError> {
    let cname = CString::new(name)
        .map_err(|_| AgentError::Config(format!("run_as = {name:?} contains a NUL byte")))?;
    let mut buf = vec![0u8; PASSWD_BUF];
    loop {
        // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids); getpwnam_r fills it.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; the strings it sets point into `buf`,
        // which outlives their use below.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pw,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buf.len() < MAX_PASSWD_BUF {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(AgentError::Config(format!(
                "run_as = \"{name}\": looking the account up failed: {}",
                std::io::Error::from_raw_os_error(rc)
            )));
        }
        if found.is_null() {
            return Ok(None);
        }
        let home = if pw.pw_dir.is_null() {
            "/".to_string()
        } else {
            // SAFETY: a NUL-terminated string inside `buf`, set by getpwnam_r.
            unsafe { CStr::from_ptr(pw.pw_dir) }
                .to_string_lossy()
                .into_owned()
        };
        let groups = groups_of(&cname, pw.pw_gid);
        return Ok(Some(RunAs {
            name: name.to_string(),
            uid: pw.pw_uid,
            gid: pw.pw_gid,
            groups,
            home,
        }));
    }
}

/// Every group of the account `name` with primary group `gid` (`getgrouplist`).
fn groups_of(name: &CStr, gid: u32) -> Vec<u32> {
    let mut len: libc::c_int = 32;
    loop {
        let mut groups = vec![0 as libc::gid_t; usize::try_from(len).unwrap_or(32)];
        let mut n = len;
        // SAFETY: `groups` holds `n` entries; getgrouplist writes at most that many and sets `n`.
        let rc = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(usize::try_from(n).unwrap_or(0));
            return groups;
        }
        // Too small: `n` says how many there are.
        if n <= len || usize::try_from(n).unwrap_or(usize::MAX) > MAX_GROUPS {
            return vec![gid];
        }
        len = n;
    }
}

/// In the child, between fork and exec: becomes `uid:gid` with `groups`, dropping root for good.
/// Uses only async-signal-safe system calls.
pub(crate) fn become_account(uid: u32, gid: u32, groups: &[u32]) -> std::io::Result<()> {
    // SAFETY: plain system calls on values we own; `groups` is valid for its length.
    unsafe {
        if libc::setgroups(groups.len(), groups.as_ptr()) != 0
            || libc::setgid(gid) != 0
            || libc::setuid(uid) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Marks every descriptor from 3 up close-on-exec (`close_range` with `CLOSE_RANGE_CLOEXEC`, or
/// one `fcntl` per descriptor where the kernel predates it). Marking rather than closing leaves
/// the standard library's own close-on-exec error pipe working, so a program that cannot be
/// executed is still reported as such. Async-signal-safe: usable between fork and exec.
pub(crate) fn cloexec_from_3() {
    /// `CLOSE_RANGE_CLOEXEC` from linux/close_range.h (Linux 5.11).
    #[cfg(target_os = "linux")]
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a system call on descriptor numbers only.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                CLOSE_RANGE_CLOEXEC,
            )
        };
        if rc == 0 {
            return;
        }
    }
    // SAFETY: all-zero is a valid `rlimit`; getrlimit fills it.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to `lim`.
    let top = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur.min(MAX_FD_SWEEP)
    } else {
        MAX_FD_SWEEP
    };
    for fd in 3..top {
        let Ok(fd) = libc::c_int::try_from(fd) else {
            break;
        };
        // SAFETY: fcntl on a descriptor number; EBADF for unused numbers is harmless.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// Highest descriptor number the fallback sweep visits: `RLIMIT_NOFILE` may be "unlimited" (a
/// million or more), and a million `fcntl`s per command would be slow for no gain.
const MAX_FD_SWEEP: libc::rlim_t = 1 << 16;

/// Makes agentd's memory and `/proc/PID/environ` readable by root only (`PR_SET_DUMPABLE` 0),
/// so a command running under agentd's own account cannot read agentd's environment (its join
/// token, say) through `/proc/$PPID/environ` or attach a debugger. It also stops core dumps of
/// agentd, which could hold its keys. Linux only; a no-op elsewhere.
pub fn protect_process() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_as_needs_root_and_an_account_that_exists() {
        let err = resolve("no-such-user-flotilla", 0).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "config: run_as = \"no-such-user-flotilla\": no such account on this machine (create it, or remove run_as)"
        );
        let root = resolve("root", 0).expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0), "{:?}", root.groups);
        let err = resolve("root", 1000).expect_err("not root");
        assert!(
            err.to_string()
                .contains("run_as = \"root\" needs agentd to run as root to switch accounts, but it runs as uid 1000"),
            "{err}"
        );
    }

    #[test]
    fn inherited_descriptors_are_marked_close_on_exec() {
        let file = tempfile::tempfile().expect("tempfile");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        // SAFETY: fcntl on a descriptor `file` owns.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        // SAFETY: as above.
        assert_eq!(
            unsafe { libc::fcntl(fd, libc::F_GETFD) } & libc::FD_CLOEXEC,
            0
        );
        cloexec_from_3();
        // SAFETY: as above.
        assert_ne!(
            unsafe { libc::fcntl(fd, libc::F_GETFD) } & libc::FD_CLOEXEC,
            0
        );
    }
}
