//! How `flotilla cp` shows a copy: a progress bar with bytes, rate and ETA on a terminal, one line per
//! file otherwise, NDJSON events with `--json`.

use super::CopyEvent;
use crate::format::bytes;
use crate::util::Escaped;
use serde_json::json;
use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

/// Least time between two redraws of the bar (or two JSON progress lines per file).
const DRAW_EVERY: Duration = Duration::from_millis(100);
/// Least time between two JSON progress lines of one file: scripts want a pulse, not a flood.
const JSON_EVERY: Duration = Duration::from_millis(250);
/// Width of the bar itself, in characters; the line fits 80 columns with a short name.
const BAR_WIDTH: usize = 24;

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

/// One progress line: name, percent, bar, bytes, rate, ETA.
pub fn bar_line(name: &str, written: u64, size: u64, rate: f64, eta: Option<u64>) -> String {
    let frac = if size == 0 {
        1.0
    } else {
        (written as f64 / size as f64).clamp(0.0, 1.0)
    };
    let filled = (frac * BAR_WIDTH as f64).round() as usize;
    let bar: String = (0..BAR_WIDTH)
        .map(|i| if i < filled { '=' } else { ' ' })
        .collect();
    format!(
        "{} {:>3}% [{bar}] {}/{} {}/s ETA {}",
        Escaped(name),
        (frac * 100.0) as u32,
        bytes(written),
        bytes(size),
        bytes(rate as u64),
        eta.map(clock).unwrap_or_else(|| "-".into())
    )
}

/// Turns copy events into output.
#[derive(Debug)]
pub struct Progress {
    json: bool,
    tty: bool,
    meters: HashMap<String, Meter>,
    last_draw: Option<Instant>,
    bar_shown: bool,
}

impl Progress {
    /// Output for `--json` or not; the bar only when stderr is a terminal.
    pub fn new(json: bool) -> Self {
        Self {
            json,
            tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            meters: HashMap::new(),
            last_draw: None,
            bar_shown: false,
        }
    }

    fn clear_bar(&mut self) {
        if self.bar_shown {
            eprint!("\r\x1b[2K");
            self.bar_shown = false;
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
                self.clear_bar();
                if *discarded > 0 {
                    eprintln!(
                        "{}: the {} already there did not match {}: starting over",
                        Escaped(dst),
                        bytes(*discarded),
                        Escaped(src)
                    );
                }
                if *offset > 0 {
                    eprintln!(
                        "resuming {} -> {} at {} of {} (already verified at the destination)",
                        Escaped(src),
                        Escaped(dst),
                        bytes(*offset),
                        bytes(*size)
                    );
                }
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
                dst,
                written,
                size,
                ..
            } => {
                let Some(m) = self.meters.get_mut(transfer) else {
                    return;
                };
                m.written = *written;
                m.size = *size;
                if !self.tty || self.last_draw.is_some_and(|t| t.elapsed() < DRAW_EVERY) {
                    return;
                }
                let line = bar_line(dst, m.written, m.size, m.rate(), m.eta_s());
                self.last_draw = Some(Instant::now());
                eprint!("\r\x1b[2K{line}");
                let _ = std::io::stderr().flush();
                self.bar_shown = true;
            }
            CopyEvent::Retrying {
                src,
                dst,
                error,
                attempt,
                delay_ms,
                ..
            } => {
                self.clear_bar();
                eprintln!(
                    "{} -> {} interrupted: {}; retrying in {:.1} s (attempt {})",
                    Escaped(src),
                    Escaped(dst),
                    Escaped(error),
                    *delay_ms as f64 / 1000.0,
                    attempt + 1
                );
            }
            CopyEvent::Done {
                transfer,
                src,
                dst,
                size,
                resumed_from,
                blake3,
            } => {
                self.clear_bar();
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
                println!(
                    "{} -> {}: {} at {}/s{resumed}, blake3 {}",
                    Escaped(src),
                    Escaped(dst),
                    bytes(*size),
                    bytes(rate as u64),
                    &blake3[..16.min(blake3.len())]
                );
            }
            CopyEvent::Mkdir { .. } => {}
            CopyEvent::Skipped { src, reason } => {
                self.clear_bar();
                eprintln!("skipped {}: {}", Escaped(src), Escaped(reason));
            }
        }
    }

    /// Clears a bar left on screen (before an error message).
    pub fn finish(&mut self) {
        self.clear_bar();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_shows_bytes_rate_and_eta() {
        assert_eq!(
            bar_line(
                "web-2:iso",
                512 * 1024 * 1024,
                1024 * 1024 * 1024,
                100.0 * 1024.0 * 1024.0,
                Some(6)
            ),
            "web-2:iso  50% [============            ] 512.0M/1.0G 100.0M/s ETA 0:06"
        );
        assert_eq!(clock(3725), "1:02:05");
        assert_eq!(
            bar_line("x", 0, 0, 0.0, None),
            "x 100% [========================] 0B/0B 0B/s ETA -"
        );
    }
}
