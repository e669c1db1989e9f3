//! The process table for the top lists, read from `/proc/PID/stat` alone.
//!
//! Each sample needs every process's CPU time and resident memory, and nothing else: the command
//! line and user are looked up for the ten that make a top list (`processes.rs`). `stat` holds the
//! name, CPU ticks, start time and RSS in one read. A general process library reads `status` and
//! `statm` as well, three opens and reads per process per sample, which is what the agent's CPU
//! went on where a machine runs hundreds of processes (`cargo test -p flotilla-agentd --bench
//! host_collectors` with a process count given shows it).
//!
//! Only the top level of `/proc` is listed, which names thread-group leaders: threads (under
//! `/proc/PID/task`) share their process's memory and are never counted as processes of their own.

use flotilla_wire::msg::ProcessInfo;
use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

/// What one `stat` read gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatLine {
    /// The kernel's short name (`comm`), at most 15 bytes.
    pub name: String,
    /// User plus system CPU time, in clock ticks.
    pub ticks: u64,
    /// Start time after boot, in clock ticks: with the pid, it tells a new process from an old
    /// one whose pid was reused between two samples.
    pub start: u64,
    /// Resident pages.
    pub rss_pages: u64,
}

/// Parses a `/proc/PID/stat` line. The name sits in parentheses and may hold spaces and `)`, so
/// the fields after it are counted from the last `)`.
pub fn parse_stat(line: &[u8]) -> Option<StatLine> {
    let open = line.iter().position(|&b| b == b'(')?;
    let close = line.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let name = String::from_utf8_lossy(&line[open + 1..close]).into_owned();
    let rest = std::str::from_utf8(line.get(close + 1..)?).ok()?;
    // Fields after the name, numbered as in proc(5) from 3 (state).
    let mut fields = rest.split_ascii_whitespace();
    let mut nth = |n: usize| -> Option<&str> { fields.nth(n) };
    let utime: u64 = nth(14 - 3)?.parse().ok()?;
    let stime: u64 = nth(0)?.parse().ok()?;
    let start: u64 = nth(22 - 16)?.parse().ok()?;
    let rss_pages: u64 = nth(24 - 23)?.parse().ok()?;
    Some(StatLine {
        name,
        ticks: utime.saturating_add(stime),
        start,
        rss_pages,
    })
}

/// The process table between samples: the last CPU ticks of each process, for its CPU use over
/// the interval.
#[derive(Debug)]
pub struct ProcTable {
    root: PathBuf,
    ticks_per_sec: f64,
    page_size: u64,
    /// pid → (start time, ticks at the last sample).
    last: HashMap<u32, (u64, u64)>,
    last_at: Option<Instant>,
    buf: Vec<u8>,
}

impl Default for ProcTable {
    fn default() -> Self {
        Self::new("/proc".into())
    }
}

impl ProcTable {
    /// Reads the processes under `root` (normally `/proc`).
    pub fn new(root: PathBuf) -> Self {
        // SAFETY: sysconf has no preconditions.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        Self {
            root,
            ticks_per_sec: if ticks > 0 { ticks as f64 } else { 100.0 },
            page_size: if page > 0 { page as u64 } else { 4096 },
            last: HashMap::new(),
            last_at: None,
            buf: Vec::with_capacity(512),
        }
    }

    /// Every process now, with its CPU use (percent of one core, as top shows it) since the last
    /// call. A process seen for the first time, and every process on the first call, shows 0 %:
    /// its earlier CPU time was not spent in this interval. A process that exits while the table
    /// is read is skipped.
    pub fn sample(&mut self) -> Vec<ProcessInfo> {
        let now = Instant::now();
        let secs = self
            .last_at
            .map(|at| now.duration_since(at).as_secs_f64())
            .unwrap_or(0.0);
        self.last_at = Some(now);
        let Ok(dir) = std::fs::read_dir(&self.root) else {
            self.last.clear();
            return Vec::new();
        };
        let mut seen = HashMap::with_capacity(self.last.len());
        let mut out = Vec::with_capacity(self.last.len());
        let mut path = self.root.clone();
        for entry in dir.flatten() {
            let file_name = entry.file_name();
            let Some(pid) = file_name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            path.push(&file_name);
            path.push("stat");
            self.buf.clear();
            let read = std::fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut self.buf));
            path.pop();
            path.pop();
            if read.is_err() {
                continue;
            }
            let Some(stat) = parse_stat(&self.buf) else {
                continue;
            };
            let cpu_pct = match self.last.get(&pid) {
                Some(&(start, before)) if start == stat.start && secs > 0.0 => {
                    (stat.ticks.saturating_sub(before) as f64 / self.ticks_per_sec / secs * 100.0)
                        as f32
                }
                _ => 0.0,
            };
            seen.insert(pid, (stat.start, stat.ticks));
            out.push(ProcessInfo {
                pid,
                name: stat.name,
                cpu_pct,
                rss: stat.rss_pages.saturating_mul(self.page_size),
            });
        }
        self.last = seen;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_spaces_and_parentheses_parse() {
        let line = b"1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 98765 10000000 321 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let s = parse_stat(line).expect("parses");
        assert_eq!(s.name, "my (odd) name");
        assert_eq!(s.ticks, 300);
        assert_eq!(s.start, 98765);
        assert_eq!(s.rss_pages, 321);
        assert_eq!(parse_stat(b"1234 (cut"), None);
        assert_eq!(parse_stat(b"1234 (short) S 1 2 3"), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_shows_its_memory_and_cpu() {
        let mut table = ProcTable::default();
        let first = table.sample();
        let me = std::process::id();
        let mine = first.iter().find(|p| p.pid == me).expect("listed");
        assert!(mine.rss > 1 << 20, "RSS {} is this test's own", mine.rss);
        assert_eq!(mine.cpu_pct, 0.0, "no interval yet");
        // Burn CPU on this thread until the kernel has charged some ticks (bounded).
        let until = Instant::now() + std::time::Duration::from_secs(5);
        let mut x = 0u64;
        let burned = loop {
            for i in 0..1_000_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
            let again = table.sample();
            let cpu = again.iter().find(|p| p.pid == me).map(|p| p.cpu_pct);
            if cpu.is_some_and(|c| c > 0.0) || Instant::now() > until {
                break cpu;
            }
        };
        assert!(burned.is_some_and(|c| c > 0.0), "CPU seen: {burned:?}");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn threads_are_not_listed() {
        let (tx, rx) = std::sync::mpsc::channel();
        let release = std::sync::Arc::new(std::sync::Barrier::new(3));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let tx = tx.clone();
                let release = release.clone();
                std::thread::spawn(move || {
                    // SAFETY: gettid has no preconditions.
                    tx.send(unsafe { libc::gettid() } as u32).ok();
                    release.wait();
                })
            })
            .collect();
        let tids: Vec<u32> = (0..2).filter_map(|_| rx.recv().ok()).collect();
        let listed: Vec<u32> = ProcTable::default()
            .sample()
            .iter()
            .map(|p| p.pid)
            .collect();
        release.wait();
        threads.into_iter().for_each(|t| t.join().expect("thread"));
        assert!(listed.contains(&std::process::id()));
        for tid in tids {
            assert!(!listed.contains(&tid), "thread {tid} listed");
        }
    }
}
