//! How `flotilla cp` shows a copy: on a terminal, a progress bar per file in flight (`indicatif`:
//! bytes, rate, ETA, the bar as wide as the terminal allows); one line per file otherwise; NDJSON
//! events with `--json`.

use super::CopyEvent;
use crate::format::bytes;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use serde_json::json;
use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

/// Redraws per second of the bars: smooth enough to watch, and a copy over a slow terminal
/// (ssh) does not spend its time drawing.
const DRAWS_PER_SECOND: u8 = 10;
/// Least time between two JSON progress lines of one file: scripts want a pulse, not a flood.
const JSON_EVERY: Duration = Duration::from_millis(250);
/// The bar line; `{wide_bar}` takes whatever width the terminal leaves.
const BAR_TEMPLATE: &str = "{prefix} {percent:>3}% [{wide_bar}] {done}/{size} {rate}/s ETA {eta}";
/// Longest name shown before a bar (its end is kept: the file name): the bar and figures still
/// fit an 80-column terminal.
const MAX_NAME: usize = 32;

/// Rate and ETA of one file.
#[derive(Debug)]
struct Meter {
    since: Instant,
    from: u64,
    written: u64,
    size: u64,
    last_print: Option<Instant>,
}

impl Meter {
    /// Bytes per second since this attempt started moving data.
    fn rate(&self) -> f64 {
        let secs = self.since.elapsed().as_secs_f64();
        if secs < 0.05 {
            0.0
        } else {
            self.written.saturating_sub(self.from) as f64 / secs
        }
    }

    fn eta_s(&self) -> Option<u64> {
        let rate = self.rate();
        (rate > 0.0).then(|| (self.size.saturating_sub(self.written) as f64 / rate).ceil() as u64)
    }
}

/// `1:05`, `1:02:03`.
pub fn clock(secs: u64) -> String {
    if secs >= 3600 {
        format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
    } else {
        format!("{}:{:02}", secs / 60, secs % 60)
    }
}

/// The style of every bar: the figures in the same units as the rest of `flotilla`'s output.
fn bar_style() -> ProgressStyle {
    let style =
        ProgressStyle::with_template(BAR_TEMPLATE).unwrap_or_else(|_| ProgressStyle::default_bar());
    style
        .progress_chars("= ")
        .with_key("done", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&bytes(s.pos()));
        })
        .with_key("size", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&bytes(s.len().unwrap_or(0)));
        })
        .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&bytes(rate_of(s) as u64));
        })
        .with_key("eta", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let eta = (rate_of(s) > 0.0).then(|| s.eta().as_secs());
            let _ = w.write_str(&eta.map(clock).unwrap_or_else(|| "-".into()));
        })
}

/// indicatif's rate estimate, 0 until it has one.
fn rate_of(s: &ProgressState) -> f64 {
    let r = s.per_sec();
    if r.is_finite() && r > 0.0 { r } else { 0.0 }
}

/// `name` cut to its last [`MAX_NAME`] characters.
fn short_name(name: &str) -> String {
    let name = crate::util::escaped(name);
    let name = name.as_ref();
    let n = name.chars().count();
    if n <= MAX_NAME {
        name.to_string()
    } else {
        let tail: String = name.chars().skip(n - (MAX_NAME - 1)).collect();
        format!("…{tail}")
    }
}

/// Turns copy events into output.
#[derive(Debug)]
pub struct Progress {
    json: bool,
    meters: HashMap<String, Meter>,
    /// The bars on stderr: hidden when it is not a terminal.
    bars: MultiProgress,
    /// The bar of each file in flight, by transfer.
    shown: HashMap<String, ProgressBar>,
}

impl Progress {
    /// Output for `--json` or not; bars only when stderr is a terminal.
    pub fn new(json: bool) -> Self {
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let target = if tty && !json {
            ProgressDrawTarget::stderr_with_hz(DRAWS_PER_SECOND)
        } else {
            ProgressDrawTarget::hidden()
        };
        Self::with_target(json, target)
    }

    fn with_target(json: bool, target: ProgressDrawTarget) -> Self {
        Self {
            json,
            meters: HashMap::new(),
            bars: MultiProgress::with_draw_target(target),
            shown: HashMap::new(),
        }
    }

    /// Prints a line above the bars (stderr), or just prints it when there are none.
    /// Prints a line above the bars; names from agents in it are shown with their control
    /// characters escaped.
    fn say(&self, line: &str) {
        let line = crate::util::escaped_controls(line);
        self.bars.suspend(|| eprintln!("{line}"));
    }

    fn drop_bar(&mut self, transfer: &str) {
        if let Some(bar) = self.shown.remove(transfer) {
            bar.finish_and_clear();
            self.bars.remove(&bar);
        }
    }

    /// Shows one event.
    pub fn on_event(&mut self, ev: &CopyEvent) {
        if self.json {
            self.json_event(ev);
        } else {
            self.text_event(ev);
        }
    }

    fn json_event(&mut self, ev: &CopyEvent) {
        let mut value = serde_json::to_value(ev).unwrap_or_else(|_| json!({}));
        match ev {
            CopyEvent::Started {
                transfer,
                size,
                offset,
                ..
            } => {
                self.meters.insert(
                    transfer.clone(),
                    Meter {
                        since: Instant::now(),
                        from: *offset,
                        written: *offset,
                        size: *size,
                        last_print: None,
                    },
                );
            }
            CopyEvent::Progress {
                transfer,
                written,
                size,
                ..
            } => {
                let Some(m) = self.meters.get_mut(transfer) else {
                    return;
                };
                m.written = *written;
                m.size = *size;
                let due = m.last_print.is_none_or(|t| t.elapsed() >= JSON_EVERY);
                if !due && written < size {
                    return;
                }
                m.last_print = Some(Instant::now());
                value["rate_bps"] = json!(m.rate() as u64);
                value["eta_s"] = json!(m.eta_s());
            }
            CopyEvent::Done { transfer, .. } => {
                if let Some(m) = self.meters.remove(transfer) {
                    value["rate_bps"] = json!(m.rate() as u64);
                    value["elapsed_ms"] = json!(m.since.elapsed().as_millis() as u64);
                }
            }
            _ => {}
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{value}");
        let _ = out.flush();
    }

    fn text_event(&mut self, ev: &CopyEvent) {
        match ev {
            CopyEvent::Started {
                transfer,
                src,
                dst,
                size,
                offset,
                discarded,
                ..
            } => {
                if *discarded > 0 {
                    self.say(&format!(
                        "{dst}: the {} already there did not match {src}: starting over",
                        bytes(*discarded)
                    ));
                }
                if *offset > 0 {
                    self.say(&format!(
                        "resuming {src} -> {dst} at {} of {} (already verified at the destination)",
                        bytes(*offset),
                        bytes(*size)
                    ));
                }
                self.drop_bar(transfer);
                let bar = self.bars.add(
                    ProgressBar::new(*size)
                        .with_style(bar_style())
                        .with_prefix(short_name(dst))
                        .with_position(*offset),
                );
                // The rate counts from here: bytes already there were not copied now.
                bar.reset_eta();
                self.shown.insert(transfer.clone(), bar);
                self.meters.insert(
                    transfer.clone(),
                    Meter {
                        since: Instant::now(),
                        from: *offset,
                        written: *offset,
                        size: *size,
                        last_print: None,
                    },
                );
            }
            CopyEvent::Progress {
                transfer,
                written,
                size,
                ..
            } => {
                let Some(m) = self.meters.get_mut(transfer) else {
                    return;
                };
                m.written = *written;
                m.size = *size;
                if let Some(bar) = self.shown.get(transfer) {
                    bar.set_length(*size);
                    bar.set_position(*written);
                }
            }
            CopyEvent::Retrying {
                src,
                dst,
                error,
                attempt,
                delay_ms,
                ..
            } => {
                self.say(&format!(
                    "{src} -> {dst} interrupted: {error}; retrying in {:.1} s (attempt {})",
                    *delay_ms as f64 / 1000.0,
                    attempt + 1
                ));
            }
            CopyEvent::Done {
                transfer,
                src,
                dst,
                size,
                resumed_from,
                blake3,
            } => {
                self.drop_bar(transfer);
                let rate = self
                    .meters
                    .remove(transfer)
                    .map(|m| m.rate())
                    .unwrap_or(0.0);
                let resumed = if *resumed_from > 0 {
                    format!(", resumed from {}", bytes(*resumed_from))
                } else {
                    String::new()
                };
                let line = format!(
                    "{src} -> {dst}: {} at {}/s{resumed}, blake3 {}",
                    bytes(*size),
                    bytes(rate as u64),
                    &blake3[..16.min(blake3.len())]
                );
                let line = crate::util::escaped_controls(&line);
                self.bars.suspend(|| println!("{line}"));
            }
            CopyEvent::Mkdir { .. } => {}
            CopyEvent::Skipped { src, reason } => {
                self.say(&format!("skipped {src}: {reason}"));
            }
        }
    }

    /// Clears the bars left on screen (before an error message).
    pub fn finish(&mut self) {
        let transfers: Vec<String> = self.shown.keys().cloned().collect();
        for t in transfers {
            self.drop_bar(&t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A terminal of a given width that keeps what is written to it.
    #[derive(Debug, Clone)]
    struct Screen {
        width: u16,
        text: Arc<Mutex<String>>,
    }

    impl Screen {
        fn new(width: u16) -> Self {
            Self {
                width,
                text: Arc::default(),
            }
        }

        /// The rows written, wrapped at the width as a terminal does (indicatif pads each line to
        /// the width and lets the terminal move to the next row).
        fn lines(&self) -> Vec<String> {
            let text = self.text.lock().expect("screen").clone();
            let mut rows = Vec::new();
            for piece in text.split(['\n', '\r']) {
                let chars: Vec<char> = piece.chars().collect();
                for row in chars.chunks(usize::from(self.width)) {
                    let row: String = row.iter().collect();
                    if !row.trim().is_empty() {
                        rows.push(row.trim_end().to_owned());
                    }
                }
            }
            rows
        }
    }

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            self.width
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            self.text.lock().expect("screen").push('\n');
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            self.text.lock().expect("screen").push('\n');
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            let mut t = self.text.lock().expect("screen");
            t.push_str(s);
            t.push('\n');
            Ok(())
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.text.lock().expect("screen").push_str(s);
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            self.text.lock().expect("screen").push('\n');
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn started(transfer: &str, dst: &str, size: u64) -> CopyEvent {
        CopyEvent::Started {
            transfer: transfer.into(),
            src: "here".into(),
            dst: dst.into(),
            size,
            offset: 0,
            discarded: 0,
            attempt: 0,
        }
    }

    fn progress(transfer: &str, dst: &str, written: u64, size: u64) -> CopyEvent {
        CopyEvent::Progress {
            transfer: transfer.into(),
            src: "here".into(),
            dst: dst.into(),
            written,
            size,
        }
    }

    /// The last line drawn that mentions `name`.
    fn bar_of(screen: &Screen, name: &str) -> String {
        screen
            .lines()
            .into_iter()
            .rev()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no bar for {name} in {:?}", screen.lines()))
    }

    #[test]
    fn bars_show_bytes_rate_and_eta_one_per_file_as_wide_as_the_terminal() {
        for width in [80, 132] {
            bars_on_a_terminal_of(width);
        }
        assert_eq!(clock(3725), "1:02:05");
        assert_eq!(clock(6), "0:06");
        assert_eq!(short_name("web-2:iso"), "web-2:iso");
        let long = format!("web-2:/srv/{}/file.iso", "d".repeat(60));
        assert_eq!(short_name(&long).chars().count(), MAX_NAME);
        assert!(short_name(&long).ends_with("/file.iso"));
    }

    fn bars_on_a_terminal_of(width: u16) {
        let screen = Screen::new(width);
        let mut p = Progress::with_target(
            false,
            ProgressDrawTarget::term_like(Box::new(screen.clone())),
        );
        let gib = 1024 * 1024 * 1024;
        p.on_event(&started("t1", "web-2:iso", gib));
        p.on_event(&started("t2", "web-3:iso", 2 * gib));
        p.on_event(&progress("t1", "web-2:iso", gib / 2, gib));
        p.on_event(&progress("t2", "web-3:iso", gib / 2, 2 * gib));
        for (name, percent, figures) in [
            ("web-2:iso", " 50%", "] 512.0M/1.0G "),
            ("web-3:iso", " 25%", "] 512.0M/2.0G "),
        ] {
            p.shown.values().for_each(ProgressBar::tick);
            let line = bar_of(&screen, name);
            assert!(line.starts_with(&format!("{name} {percent} [=")), "{line}");
            assert!(line.contains(figures), "{line}");
            assert!(line.contains("/s ETA "), "{line}");
            assert_eq!(
                line.chars().count(),
                usize::from(width),
                "the bar fills the terminal: {line}"
            );
        }
        p.finish();
        assert!(p.shown.is_empty());
    }

    #[test]
    fn without_a_terminal_there_are_no_bars() {
        // The test runner captures stderr: not a terminal.
        assert!(!std::io::IsTerminal::is_terminal(&std::io::stderr()));
        let mut p = Progress::new(false);
        p.on_event(&started("t1", "web-2:iso", 10));
        assert!(p.bars.is_hidden());
        assert!(Progress::new(true).bars.is_hidden(), "--json draws no bar");
    }
}
