//! Small helpers shared across the client: paths, time, output. Imports nothing of this crate, so
//! any module may use it without tying modules to each other.

/// `println!` that returns the write's error instead of panicking: output into a closed pipe
/// (`flotilla agents | head -1`) ends the command through the caller's error path, where it is
/// recognised as a broken pipe and ends quietly.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// `print!` that returns the write's error instead of panicking (see [`outln`]).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)
    }};
}

pub(crate) use {out, outln};

/// Whether `c` must not reach a terminal as it is: C0 controls (ESC among them), DEL, C1 controls
/// (U+0080–U+009F, which some terminals read as escape introducers), and the bidi embeddings,
/// overrides and isolates (U+202A–U+202E, U+2066–U+2069), which reorder what is shown after them.
pub fn must_escape(c: char) -> bool {
    matches!(c, '\0'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` safe to show on a terminal: every character of [`must_escape`] written as a visible escape
/// (`\x1b`, `\x7f`, `\u{9b}`, `\u{202e}`), and a backslash doubled so an escape cannot be forged by
/// a name that spells one. Borrowed when nothing needed escaping (the common case).
pub fn escaped(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c == '\\' || must_escape(c)) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    std::borrow::Cow::Owned(out)
}

/// Commands and their output made safe for a screen: like [`escaped`], but a backslash stays
/// single, since these are not names to be told apart (`printf 'a\n'` reads as typed).
pub fn escaped_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(must_escape) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c == '\\' {
            out.push(c);
        } else {
            push_escaped(&mut out, c);
        }
    }
    std::borrow::Cow::Owned(out)
}

fn push_escaped(out: &mut String, c: char) {
    use std::fmt::Write as _;
    match c {
        '\\' => out.push_str("\\\\"),
        '\0'..='\u{1f}' | '\u{7f}' => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if must_escape(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// Displays a string as [`escaped`] does; width, fill and alignment (`{:<20}`) apply to the
/// escaped text, so tables stay aligned.
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&escaped(self.0))
    }
}

/// The user's config, data, state and cache directories for flotilla.
pub fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("dev", "flotilla", "flotilla")
}

/// Creates a directory with mode 0700 (its missing parents as `mkdir -p` makes them) and tightens
/// an existing one to 0700: `certs`' one implementation, with the path in the error.
pub fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    Ok(flotilla_certs::create_private_dir(dir)?)
}

pub use flotilla_certs::clock::now_ms;

/// Parses a duration written as a number then `ms`, `s`, `m`, `h` or `d` (`500ms`, `90s`, `30m`,
/// `2h`, `7d`); a bare number is seconds. `wire`'s parser, with its message as the error clap shows.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    flotilla_wire::text::parse_duration(s).map_err(|e| e.to_string())
}

/// `2025-01-31 12:34:56Z` from ms since the epoch.
pub fn utc(ms: u64) -> String {
    flotilla_wire::text::UtcTime::from_unix_ms(ms as i64).to_second_string()
}

/// `YYYY-MM-DD HH:MM` (UTC) for ms since the epoch.
pub fn utc_minute(ms: i64) -> String {
    flotilla_wire::text::UtcTime::from_unix_ms(ms).to_minute_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(escaped("web-1"), "web-1");
        assert!(matches!(escaped("web-1"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(escaped("evil\x1b[2Jname"), "evil\\x1b[2Jname");
        assert_eq!(escaped("a\tb\nc\r\0"), "a\\x09b\\x0ac\\x0d\\x00");
        assert_eq!(escaped("del\u{7f}"), "del\\x7f");
        assert_eq!(escaped("csi\u{9b}2J nel\u{85}"), "csi\\u{9b}2J nel\\u{85}");
        assert_eq!(
            escaped("txt.\u{202e}exe\u{2066}x\u{2069}"),
            "txt.\\u{202e}exe\\u{2066}x\\u{2069}"
        );
        assert_eq!(escaped("a\\x1b"), "a\\\\x1b");
        // Printable text beyond ASCII stays as it is.
        assert_eq!(escaped("café ü 日本 \u{a0}"), "café ü 日本 \u{a0}");
        assert_eq!(format!("[{:<8}]", Escaped("a\x1bb")), "[a\\x1bb  ]");
        assert_eq!(escaped_controls("C:\\dir\x1b[2J"), "C:\\dir\\x1b[2J");
        assert_eq!(format!("[{:>6}]", Escaped("ab")), "[    ab]");
        for c in ('\0'..='\u{9f}').chain('\u{2000}'..='\u{206f}') {
            let shown = escaped(&c.to_string()).into_owned();
            assert!(
                !shown.chars().any(must_escape),
                "{:?} shown as {shown:?}",
                c
            );
        }
    }

    #[test]
    fn durations_parse_with_their_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(
            parse_duration("1w"),
            Err("duration \"1w\": unknown unit \"w\" (use ms, s, m, h or d)".into())
        );
        assert_eq!(
            parse_duration("s"),
            Err("duration \"s\": expected a number then ms, s, m, h or d".into())
        );
        assert_eq!(
            parse_duration("99999999999999999d"),
            Err("duration \"99999999999999999d\" is too long".into())
        );
    }

    #[test]
    fn times_read_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14 22:13:20Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(utc_minute(0), "1970-01-01 00:00");
        assert_eq!(utc_minute(1_700_000_000_000), "2023-11-14 22:13");
        assert_eq!(utc_minute(-60_000), "1969-12-31 23:59");
    }
}
