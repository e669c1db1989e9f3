//! The console's command history on disk, so Up recalls yesterday's commands as a shell would.
//!
//! One command per line in `console_history` under the user's state directory
//! (`$XDG_STATE_HOME/flotilla`, else the data directory), appended as each command runs. Commands
//! can hold secrets, so the file is 0600 in a 0700 directory, a command typed with a leading space
//! is not written (bash's `ignorespace`), and `history = false` in config.toml turns it off.
//! A failure to read or write the file costs the history, never the console: it is logged.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// The file grows by appends; once it holds this many times the kept length it is rewritten.
const COMPACT_FACTOR: usize = 4;

/// The history file of one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryFile {
    path: PathBuf,
}

impl HistoryFile {
    /// The file at `path`.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// `console_history` in the user's state directory (or data directory where there is none).
    pub fn default_location() -> Option<Self> {
        let dirs = crate::util::project_dirs()?;
        let dir = dirs.state_dir().unwrap_or(dirs.data_dir());
        Some(Self::at(dir.join("console_history")))
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The newest `keep` commands, oldest first; none when the file does not exist yet. A file
    /// grown past [`COMPACT_FACTOR`] × `keep` lines is rewritten with the kept ones.
    pub fn load(&self, keep: usize) -> io::Result<Vec<String>> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut lines = VecDeque::with_capacity(keep + 1);
        let mut total = 0usize;
        for line in BufReader::new(file).lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            total += 1;
            lines.push_back(line);
            if lines.len() > keep {
                lines.pop_front();
            }
        }
        let lines = Vec::from(lines);
        if total > keep.saturating_mul(COMPACT_FACTOR) {
            self.rewrite(&lines)?;
        }
        Ok(lines)
    }

    /// Appends one command, creating the file (0600) and its directory (0700) when needed.
    pub fn append(&self, line: &str) -> io::Result<()> {
        // One line per command: the exec prompt has no newlines, but a pasted one must not turn
        // into two commands on the next recall.
        let line = line.replace(['\n', '\r'], " ");
        if let Some(dir) = self.path.parent() {
            crate::util::create_private_dir(dir).map_err(io::Error::other)?;
        }
        let mut options = OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(&self.path)?
            .write_all(format!("{line}\n").as_bytes())
    }

    /// Replaces the file with `lines`, atomically and 0600 as the identity key is written.
    fn rewrite(&self, lines: &[String]) -> io::Result<()> {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        flotilla_certs::write_private(&self.path, text.as_bytes()).map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn commands_come_back_in_order_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = HistoryFile::at(dir.path().join("state/flotilla/console_history"));
        assert!(file.load(10).expect("missing file").is_empty());
        for line in ["uptime", "df -h", "systemctl restart nginx"] {
            file.append(line).expect("append");
        }
        file.append("echo a\nb").expect("append");
        let again = HistoryFile::at(file.path());
        assert_eq!(
            again.load(10).expect("load"),
            ["uptime", "df -h", "systemctl restart nginx", "echo a b"]
        );
        assert_eq!(
            again.load(2).expect("load"),
            ["systemctl restart nginx", "echo a b"]
        );
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_private_to_its_user() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = HistoryFile::at(dir.path().join("new/console_history"));
        file.append("mysql -psecret").expect("append");
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(file.path()), 0o600);
        assert_eq!(mode(&dir.path().join("new")), 0o700);
    }

    #[test]
    fn a_long_file_is_cut_back_to_what_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = HistoryFile::at(dir.path().join("console_history"));
        for i in 0..50 {
            file.append(&format!("cmd {i}")).expect("append");
        }
        let kept = file.load(10).expect("load");
        assert_eq!(kept.first().map(String::as_str), Some("cmd 40"));
        let text = fs::read_to_string(file.path()).expect("read");
        assert_eq!(text.lines().count(), 10, "rewritten with the kept lines");
        file.append("after").expect("append");
        assert_eq!(
            file.load(10).expect("load").last().map(String::as_str),
            Some("after")
        );
    }
}
