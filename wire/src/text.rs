//! The text forms every binary reads or prints: durations (`90s`, `30m`), labels (`key=value`) and
//! UTC dates from a Unix time. Pure functions, so the hub, the agent and the console agree on them.

use std::time::Duration;

/// Why a duration did not parse. The text is quoted as given, so a shell's mangling shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// No leading number.
    #[error("duration {0:?}: expected a number then ms, s, m, h or d")]
    NoNumber(String),
    /// A number followed by a unit we do not know.
    #[error("duration {text:?}: unknown unit {unit:?} (use ms, s, m, h or d)")]
    UnknownUnit {
        /// The whole text.
        text: String,
        /// The part after the number.
        unit: String,
    },
    /// More than `u64` milliseconds.
    #[error("duration {0:?} is too long")]
    TooLong(String),
    /// Milliseconds where whole seconds are stored.
    #[error("duration {0:?} is not a whole number of seconds")]
    NotWholeSeconds(String),
}

/// Parses `500ms`, `90s`, `30m`, `1h` or `7d`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| DurationError::NoNumber(s.to_owned()))?;
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(DurationError::UnknownUnit {
                text: s.to_owned(),
                unit: unit.to_owned(),
            });
        }
    };
    n.checked_mul(ms_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| DurationError::TooLong(s.to_owned()))
}

/// [`parse_duration`] in whole seconds, for settings kept in seconds (a token's time to live, an
/// audit window): `1500ms` is refused rather than rounded.
pub fn parse_duration_s(s: &str) -> Result<u64, DurationError> {
    let d = parse_duration(s)?;
    if d.subsec_nanos() == 0 {
        Ok(d.as_secs())
    } else {
        Err(DurationError::NotWholeSeconds(s.to_owned()))
    }
}

/// A label argument that is not `key=value`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("label {0:?} must be key=value")]
pub struct LabelError(pub String);

/// Splits `key=value` at its first `=` (a value may hold more). Which words a label may use is the
/// hub's rule, checked at enrolment.
pub fn parse_label(s: &str) -> Result<(String, String), LabelError> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| LabelError(s.to_owned()))
}

/// A moment as a UTC calendar date and time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    /// Proleptic Gregorian year (negative before 1 BC).
    pub year: i64,
    /// 1 to 12.
    pub month: u8,
    /// 1 to 31.
    pub day: u8,
    /// 0 to 23.
    pub hour: u8,
    /// 0 to 59.
    pub minute: u8,
    /// 0 to 59 (Unix time has no leap seconds).
    pub second: u8,
}

impl UtcTime {
    /// The UTC date and time of `ms` milliseconds since the Unix epoch (negative before 1970),
    /// rounded down to the second.
    pub fn from_unix_ms(ms: i64) -> Self {
        let secs = ms.div_euclid(1000);
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        // Days to civil date: Howard Hinnant's `civil_from_days`, exact for every i64 day count
        // this can reach.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        // Each cast below narrows a value the arithmetic above bounds (month 1-12, day 1-31,
        // hour 0-23, minute and second 0-59).
        Self {
            year: yoe + era * 400 + i64::from(month <= 2),
            month: month as u8,
            day: day as u8,
            hour: (rem / 3600) as u8,
            minute: (rem % 3600 / 60) as u8,
            second: (rem % 60) as u8,
        }
    }

    /// `2025-01-31 12:34` (UTC, no zone mark): file listings.
    pub fn to_minute_string(self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute
        )
    }

    /// `2025-01-31 12:34:56Z`: job and event times.
    pub fn to_second_string(self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration_s("30m"), Ok(1800));
        assert_eq!(parse_duration_s("1h"), Ok(3600));
        assert_eq!(parse_duration_s("7d"), Ok(604_800));
        assert_eq!(parse_duration_s("2000ms"), Ok(2));
    }

    #[test]
    fn bad_durations_say_what_is_wrong() {
        assert_eq!(
            parse_duration("1w"),
            Err(DurationError::UnknownUnit {
                text: "1w".into(),
                unit: "w".into()
            })
        );
        assert_eq!(
            parse_duration("h"),
            Err(DurationError::NoNumber("h".into()))
        );
        assert_eq!(parse_duration(""), Err(DurationError::NoNumber("".into())));
        assert_eq!(
            parse_duration("-5s"),
            Err(DurationError::NoNumber("-5s".into()))
        );
        let huge = format!("{}d", u64::MAX / 86_400_000 + 1);
        assert_eq!(
            parse_duration(&huge),
            Err(DurationError::TooLong(huge.clone()))
        );
        assert_eq!(
            parse_duration_s("1500ms"),
            Err(DurationError::NotWholeSeconds("1500ms".into()))
        );
        assert_eq!(
            DurationError::UnknownUnit {
                text: "1w".into(),
                unit: "w".into()
            }
            .to_string(),
            r#"duration "1w": unknown unit "w" (use ms, s, m, h or d)"#
        );
    }

    #[test]
    fn labels_split_at_the_first_equals_sign() {
        assert_eq!(parse_label("env=prod"), Ok(("env".into(), "prod".into())));
        assert_eq!(parse_label("url=a=b"), Ok(("url".into(), "a=b".into())));
        assert_eq!(parse_label("env="), Ok(("env".into(), String::new())));
        assert_eq!(parse_label("env"), Err(LabelError("env".into())));
    }

    #[test]
    fn utc_dates_match_known_moments() {
        let at = |ms| UtcTime::from_unix_ms(ms);
        assert_eq!(at(0).to_second_string(), "1970-01-01 00:00:00Z");
        assert_eq!(
            at(1_700_000_000_000).to_second_string(),
            "2023-11-14 22:13:20Z"
        );
        assert_eq!(
            at(951_782_400_000).to_second_string(),
            "2000-02-29 00:00:00Z"
        );
        assert_eq!(at(1_700_000_000_000).to_minute_string(), "2023-11-14 22:13");
        assert_eq!(at(-60_000).to_minute_string(), "1969-12-31 23:59");
        assert_eq!(at(-1).to_second_string(), "1969-12-31 23:59:59Z");
        // 2100 is not a leap year, 2400 is.
        assert_eq!(at(4_107_542_400_000).to_minute_string(), "2100-03-01 00:00");
        assert_eq!(
            at(13_574_563_200_000).to_minute_string(),
            "2400-02-29 00:00"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_moment_has_a_calendar_date(ms in proptest::num::i64::ANY) {
            let t = UtcTime::from_unix_ms(ms);
            proptest::prop_assert!((1..=12).contains(&t.month));
            proptest::prop_assert!((1..=31).contains(&t.day));
            proptest::prop_assert!(t.hour < 24 && t.minute < 60 && t.second < 60);
        }
    }
}
