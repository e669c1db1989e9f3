//! What a one-shot command logs when `FLOTILLA_LOG` is not set: warnings and errors, one line each
//! on stderr (`flotilla: warning: …`), nothing else.
//!
//! tracing-subscriber's `fmt` builds a span registry (a sharded slab) and an `EnvFilter` whatever
//! the level, which cost a one-shot command about a tenth of its CPU time, 14 page faults and
//! 0.12 ms (docs/benchmarks.md, "Session 10") to print, in practice, nothing. With `FLOTILLA_LOG`
//! set, and in the console, the mux and every long-running command, `fmt` is used as before.

use std::fmt::Write as _;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, span};

/// A subscriber that prints warning and error events to stderr and keeps no spans.
pub struct Warnings {
    /// Where each line goes: stderr, or a test's buffer.
    sink: Box<dyn Fn(&str) + Send + Sync>,
}

impl Default for Warnings {
    fn default() -> Self {
        Self::with_sink(|line| eprintln!("{line}"))
    }
}

impl Warnings {
    /// Lines go to `sink` instead of stderr.
    pub fn with_sink(sink: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self {
            sink: Box::new(sink),
        }
    }

    fn wanted(meta: &Metadata<'_>) -> bool {
        *meta.level() <= Level::WARN
    }
}

impl tracing::Subscriber for Warnings {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if Self::wanted(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        Self::wanted(meta)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::WARN)
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        // Spans carry nothing we print; every one gets the same (non-zero) id.
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let mut line = Line::default();
        event.record(&mut line);
        let level = if *meta.level() == Level::ERROR {
            "error"
        } else {
            "warning"
        };
        (self.sink)(&line.render(level));
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}

/// One event's message and fields.
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Line {
    fn render(&self, level: &str) -> String {
        if self.fields.is_empty() {
            format!("flotilla: {level}: {}", self.message)
        } else {
            format!("flotilla: {level}: {} ({})", self.message, self.fields)
        }
    }

    fn push_field(&mut self, field: &Field, value: std::fmt::Arguments<'_>) {
        if !self.fields.is_empty() {
            self.fields.push(' ');
        }
        let _ = write!(self.fields, "{}={value}", field.name());
    }
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.push_field(field, format_args!("{value}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.push_field(field, format_args!("{value:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Warnings and errors print as one line with their fields; info and debug events are not even
    /// enabled, so their fields are never formatted.
    #[test]
    fn warnings_print_as_one_line_and_the_rest_is_off() {
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = Arc::clone(&lines);
        let warnings = Warnings::with_sink(move |l| sink.lock().expect("lines").push(l.to_owned()));
        tracing::subscriber::with_default(warnings, || {
            assert!(!tracing::enabled!(Level::INFO));
            tracing::debug!("not shown");
            tracing::info!(uid = 1, "not shown either");
            tracing::warn!(socket = "/run/x.sock", uid = 1000, "another user listens");
            let _span = tracing::info_span!("ignored", job = 7).entered();
            tracing::error!("the hub went away");
        });
        assert_eq!(
            *lines.lock().expect("lines"),
            [
                "flotilla: warning: another user listens (socket=/run/x.sock uid=1000)",
                "flotilla: error: the hub went away",
            ]
        );
    }
}
