//! `--at` times for `flotilla top`: `HH:MM` (UTC, today, or yesterday when that is still to come)
//! or a full RFC 3339 time (`2026-12-07T03:10:00Z`, `2026-12-07T04:10:00+01:00`).
//!
//! UTC, not the local zone, because every other time `flotilla` prints is UTC (`Z`): what `top`
//! prints can be pasted back into `--at`, and two operators in different zones read the same minute.

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

fn number(s: &str, what: &str, max: i64) -> Result<i64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} {s:?} is not a number"));
    }
    let n: i64 = s
        .parse()
        .map_err(|_| format!("{what} {s:?} is too large"))?;
    if n > max {
        return Err(format!("{what} {n} is out of range (at most {max})"));
    }
    Ok(n)
}

/// `HH:MM` or `HH:MM:SS` as ms into the day.
fn time_of_day(s: &str) -> Result<i64, String> {
    let mut parts = s.split(':');
    let h = number(parts.next().unwrap_or_default(), "hour", 23)?;
    let m = number(
        parts.next().ok_or_else(|| format!("{s:?} needs HH:MM"))?,
        "minute",
        59,
    )?;
    let sec = match parts.next() {
        // Fractions of a second do not change the minute.
        Some(x) => number(x.split('.').next().unwrap_or_default(), "second", 60)?,
        None => 0,
    };
    if parts.next().is_some() {
        return Err(format!("{s:?} is not HH:MM or HH:MM:SS"));
    }
    Ok((h * 3600 + m * 60 + sec) * 1000)
}

/// Parses an `--at` time into ms since the epoch, `now_ms` deciding which day `HH:MM` means.
pub fn parse_at(s: &str, now_ms: u64) -> Result<u64, String> {
    let s = s.trim();
    let now = now_ms as i64;
    if s.len() <= 8 && !s.contains('-') {
        let today = now - now.rem_euclid(DAY_MS);
        let mut at = today + time_of_day(s)?;
        if at > now {
            at -= DAY_MS;
        }
        return Ok(at as u64);
    }
    let bad = || {
        format!(
            "{s:?} is not a time: use HH:MM (UTC) or RFC 3339 like 2026-12-07T03:10:00Z or \
             2026-12-07T04:10:00+01:00"
        )
    };
    let (date, rest) = s.split_at_checked(10).ok_or_else(bad)?;
    let sep = rest.chars().next().ok_or_else(bad)?;
    if !matches!(sep, 'T' | 't' | ' ') {
        return Err(bad());
    }
    let rest = &rest[1..];
    let mut d = date.split('-');
    let (y, mo, da) = (d.next(), d.next(), d.next());
    let (Some(y), Some(mo), Some(da), None) = (y, mo, da, d.next()) else {
        return Err(bad());
    };
    let year = number(y, "year", 9999)?;
    let month = number(mo, "month", 12)?;
    if month == 0 {
        return Err("month 0 is out of range".into());
    }
    let day = number(da, "day", days_in_month(year, month))?;
    if day == 0 {
        return Err("day 0 is out of range".into());
    }
    // The zone: `Z`, or `+HH:MM` / `-HH:MM` after the time.
    let (time, offset_ms) = if let Some(t) = rest.strip_suffix(['Z', 'z']) {
        (t, 0)
    } else if let Some(at) = rest.rfind(['+', '-']) {
        let (t, zone) = rest.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (zh, zm) = zone[1..].split_once(':').ok_or_else(bad)?;
        let off = (number(zh, "zone hour", 23)? * 60 + number(zm, "zone minute", 59)?) * 60_000;
        (t, sign * off)
    } else {
        return Err(format!(
            "{s:?} has no zone: end it with Z (UTC) or an offset like +01:00"
        ));
    };
    let at = days_from_civil(year, month, day) * DAY_MS + time_of_day(time)? - offset_ms;
    u64::try_from(at).map_err(|_| format!("{s:?} is before 1970"))
}

/// The minute `at_ms` falls in, as `[start, end)`.
pub fn minute_span(at_ms: u64) -> (u64, u64) {
    let start = at_ms - at_ms % MINUTE_MS as u64;
    (start, start + MINUTE_MS as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-07 12:00:00 UTC.
    const NOON: u64 = 1_796_644_800_000;

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(
            flotilla_wire::text::UtcTime::from_unix_ms(NOON as i64).to_second_string(),
            "2026-12-07 12:00:00Z"
        );
    }

    #[test]
    fn hh_mm_is_today_or_yesterday_in_utc() {
        assert_eq!(parse_at("03:10", NOON), Ok(NOON - (8 * 60 + 50) * 60_000));
        // 13:00 has not come yet today: yesterday's.
        assert_eq!(parse_at("13:00", NOON), Ok(NOON + 3_600_000 - 86_400_000));
        assert_eq!(parse_at("12:00", NOON), Ok(NOON));
        assert_eq!(
            parse_at("25:00", NOON),
            Err("hour 25 is out of range (at most 23)".into())
        );
        assert_eq!(parse_at("3", NOON), Err("\"3\" needs HH:MM".into()));
    }

    #[test]
    fn rfc_3339_with_zones() {
        assert_eq!(parse_at("2026-12-07T12:00:00Z", 0), Ok(NOON));
        assert_eq!(parse_at("2026-12-07 12:00Z", 0), Ok(NOON));
        assert_eq!(parse_at("2026-12-07T13:00:00+01:00", 0), Ok(NOON));
        assert_eq!(parse_at("2026-12-07T07:30:00.250-04:30", 0), Ok(NOON));
        assert!(
            parse_at("2026-12-07T12:00:00", 0)
                .expect_err("no zone")
                .contains("has no zone")
        );
        assert!(parse_at("2026-02-30T12:00Z", 0).is_err());
        assert!(
            parse_at("yesterday", 0)
                .expect_err("words")
                .contains("is not a time")
        );
        assert_eq!(minute_span(NOON + 59_999), (NOON, NOON + 60_000));
    }
}
