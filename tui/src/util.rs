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
