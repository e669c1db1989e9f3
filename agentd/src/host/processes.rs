//! Top processes with their command lines and users: the sample's top lists name the processes,
//! and only those ten are looked up in `/proc` (reading every process's command line each sample
//! would cost more than the rest of the sample).

use flotilla_wire::host::{TopProcess, shorten_cmd};
use flotilla_wire::msg::ProcessInfo;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a user table read from `/etc/passwd` is trusted for a uid it lacks: accounts are
/// rarely added, and rereading on every unknown uid would reread it each sample for a process
/// whose uid has no name.
const PASSWD_REFRESH: Duration = Duration::from_secs(60);

/// Looks up command lines and users for top lists.
#[derive(Debug)]
pub struct ProcessDetail {
    proc_root: PathBuf,
    passwd: PathBuf,
    users: HashMap<u32, String>,
    users_read: Option<Instant>,
}

impl Default for ProcessDetail {
    fn default() -> Self {
        Self::new("/proc".into(), "/etc/passwd".into())
    }
}

impl ProcessDetail {
    /// Reads processes under `proc_root` and users from `passwd`.
    pub fn new(proc_root: PathBuf, passwd: PathBuf) -> Self {
        Self {
            proc_root,
            passwd,
            users: HashMap::new(),
            users_read: None,
        }
    }

    /// `list` with command lines and users. A process that exited since the sample keeps its name,
    /// with an empty command line and user.
    pub fn enrich(&mut self, list: &[ProcessInfo]) -> Vec<TopProcess> {
        list.iter()
            .map(|p| {
                let dir = self.proc_root.join(p.pid.to_string());
                let cmd = std::fs::read(dir.join("cmdline"))
                    .map(|raw| {
                        let text = String::from_utf8_lossy(&raw);
                        text.trim_end_matches('\0').replace('\0', " ")
                    })
                    .unwrap_or_default();
                let user = std::fs::read_to_string(dir.join("status"))
                    .ok()
                    .and_then(|s| real_uid(&s))
                    .map(|uid| self.user_name(uid))
                    .unwrap_or_default();
                TopProcess {
                    pid: p.pid,
                    name: p.name.clone(),
                    // Kernel threads have no command line: show their name as ps does.
                    cmd: shorten_cmd(if cmd.is_empty() { &p.name } else { &cmd }),
                    user,
                    cpu_pct: p.cpu_pct,
                    mem: p.rss,
                }
            })
            .collect()
    }

    fn user_name(&mut self, uid: u32) -> String {
        if !self.users.contains_key(&uid)
            && self
                .users_read
                .is_none_or(|at| at.elapsed() >= PASSWD_REFRESH)
        {
            self.users = std::fs::read_to_string(&self.passwd)
                .map(|t| parse_passwd(&t))
                .unwrap_or_default();
            self.users_read = Some(Instant::now());
        }
        self.users
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string())
    }
}

/// The real uid from a `/proc/PID/status` text.
fn real_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
}

/// uid → name from `/etc/passwd` text.
fn parse_passwd(text: &str) -> HashMap<u32, String> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_gets_its_command_line_and_user() {
        let mut d = ProcessDetail::default();
        let me = ProcessInfo {
            pid: std::process::id(),
            name: "test".into(),
            cpu_pct: 1.0,
            rss: 10,
        };
        let top = d.enrich(&[me]);
        let exe = std::env::args().next().expect("argv0");
        assert!(
            top[0].cmd.starts_with(&exe[..exe.len().min(60)]),
            "{:?}",
            top[0].cmd
        );
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let expected = parse_passwd(&std::fs::read_to_string("/etc/passwd").expect("passwd"))
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string());
        assert_eq!(top[0].user, expected);
    }

    #[test]
    fn a_gone_process_keeps_its_name() {
        let mut d = ProcessDetail::default();
        let gone = ProcessInfo {
            pid: u32::MAX - 1,
            name: "gone".into(),
            cpu_pct: 0.0,
            rss: 0,
        };
        let top = d.enrich(&[gone]);
        assert_eq!(top[0].cmd, "gone");
        assert_eq!(top[0].user, "");
    }

    #[test]
    fn passwd_and_status_parse() {
        let users = parse_passwd(
            "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33::/var/www:/usr/sbin/nologin\nbroken\n",
        );
        assert_eq!(users.get(&33).map(String::as_str), Some("www-data"));
        assert_eq!(
            real_uid("Name:\tsh\nUid:\t1000\t1000\t1000\t1000\n"),
            Some(1000)
        );
    }
}
