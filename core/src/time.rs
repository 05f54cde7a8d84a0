//! Time in one place: the UTC civil calendar (days from dates and back, years), ISO 8601 /
//! RFC 3339 parsing and printing, and the times a user may give on a command line or a
//! query string. No I/O, no time zone database: offsets are read, zones are not.

/// The UTC calendar year of `unix_s` (proleptic Gregorian).
pub fn year_of(unix_s: i64) -> i32 {
    let (year, _, _) = civil_from_days(unix_s.div_euclid(86_400));
    i32::try_from(year).unwrap_or(if year < 0 { i32::MIN } else { i32::MAX })
}

/// Unix seconds of `year`-01-01T00:00:00Z (proleptic Gregorian).
pub fn year_start_unix_s(year: i32) -> i64 {
    days_from_civil(i64::from(year), 1, 1) * 86_400
}

/// Days from 1970-01-01 to a proleptic Gregorian date (era-based civil-date arithmetic).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

pub fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

fn digits(s: &str, what: &str) -> Result<i64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} '{s}' is not a number"));
    }
    s.parse()
        .map_err(|_| format!("{what} '{s}' is out of range"))
}

/// Parses `YYYY-MM-DD[T| ]HH:MM[:SS[.fff]][Z|±HH:MM|±HHMM]` to unix seconds; no offset
/// means UTC. The error says what is wrong, for the caller to place (file, line, column).
pub fn parse_iso8601_utc(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (date, rest) = s
        .split_once(['T', 't', ' '])
        .ok_or("no time after the date")?;
    let mut date_parts = date.split('-');
    let (Some(y), Some(mo), Some(d), None) = (
        date_parts.next(),
        date_parts.next(),
        date_parts.next(),
        date_parts.next(),
    ) else {
        return Err("the date is not YYYY-MM-DD".to_owned());
    };
    if y.len() != 4 || mo.len() != 2 || d.len() != 2 {
        return Err("the date is not YYYY-MM-DD".to_owned());
    }
    let (year, month, day) = (digits(y, "year")?, digits(mo, "month")?, digits(d, "day")?);
    if !(1..=12).contains(&month) {
        return Err(format!("month '{mo}' is not 01–12"));
    }
    if !(1..=days_in_month(year, month)).contains(&day) {
        return Err(format!("day '{d}' does not exist in {y}-{mo}"));
    }

    // Split the clock from the offset.
    let rest = rest.trim();
    let (clock, offset_s) = if let Some(clock) = rest.strip_suffix(['Z', 'z']) {
        (clock, 0)
    } else if let Some(pos) = rest.rfind(['+', '-']) {
        let (clock, offset) = rest.split_at(pos);
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let offset = &offset[1..];
        let (oh, om) = match offset.split_once(':') {
            Some((h, m)) => (h, m),
            None if offset.len() == 4 => offset.split_at(2),
            None if offset.len() == 2 => (offset, "00"),
            None => return Err(format!("offset '{offset}' is not ±HH:MM")),
        };
        let (oh, om) = (digits(oh, "offset hour")?, digits(om, "offset minute")?);
        if oh > 23 || om > 59 {
            return Err(format!("offset '{offset}' is not ±HH:MM"));
        }
        (clock, sign * (oh * 3600 + om * 60))
    } else {
        (rest, 0)
    };
    let mut clock_parts = clock.split(':');
    let h = clock_parts.next().unwrap_or_default();
    let mi = clock_parts.next().ok_or("the time is not HH:MM[:SS]")?;
    let sec = clock_parts.next().unwrap_or("00");
    if clock_parts.next().is_some() || h.len() != 2 || mi.len() != 2 {
        return Err("the time is not HH:MM[:SS]".to_owned());
    }
    let whole_sec = match sec.split_once('.') {
        Some((whole, frac)) => {
            digits(frac, "fraction of a second")?;
            whole
        }
        None => sec,
    };
    if whole_sec.len() != 2 {
        return Err("the time is not HH:MM[:SS]".to_owned());
    }
    let (hour, minute, second) = (
        digits(h, "hour")?,
        digits(mi, "minute")?,
        digits(whole_sec, "second")?,
    );
    if hour > 23 || minute > 59 || second > 59 {
        return Err(format!("'{clock}' is not a time of day"));
    }
    let days = days_from_civil(year, month, day);
    Ok(days * 86_400 + hour * 3600 + minute * 60 + second - offset_s)
}

/// The UTC civil date (year, month, day) of a day number since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// RFC 3339 UTC time of `ns` since the Unix epoch: `2024-01-01T00:00:00Z`, with a
/// nanosecond fraction only when it is not zero.
pub fn rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let (h, m, s) = (sod / 3600, sod % 3600 / 60, sod % 60);
    if nanos == 0 {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{nanos:09}Z")
    }
}

/// Why a time a user gave cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeArgError {
    /// Neither form.
    NotATime,
    /// A time outside the period data can have (`validate::MIN_TS_NS` to `END_TS_NS`).
    OutOfRange,
}

/// A time as a user gives it (`--from`, `?to=`): RFC 3339 UTC
/// (`2026-11-28T00:00:00Z`, optional fraction, `Z` or `+00:00`) or Unix seconds
/// (`1795824000`), in ns. Only times in the period points can have are accepted
/// (1970-01-01 to 2200-01-01, [`crate::validate`]), so no later arithmetic can overflow.
pub fn parse_time_arg(value: &str) -> Result<i64, TimeArgError> {
    let v = value.trim();
    let ns = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        v.parse::<i64>()
            .ok()
            .and_then(|s| s.checked_mul(1_000_000_000))
            .ok_or(TimeArgError::OutOfRange)?
    } else {
        let ok_suffix = v.ends_with('Z') || v.ends_with('z') || v.ends_with("+00:00");
        let has_clock = v.contains('T') || v.contains('t') || v.contains(' ');
        if !ok_suffix || !has_clock {
            return Err(TimeArgError::NotATime);
        }
        let s = parse_iso8601_utc(v).map_err(|_| TimeArgError::NotATime)?;
        let frac = match v.split_once('.') {
            None => 0,
            Some((_, rest)) => {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if digits.is_empty() || digits.len() > 9 {
                    return Err(TimeArgError::NotATime);
                }
                let n: i64 = digits.parse().map_err(|_| TimeArgError::NotATime)?;
                n * 10_i64.pow(9 - digits.len() as u32)
            }
        };
        s.checked_mul(1_000_000_000)
            .and_then(|n| n.checked_add(frac))
            .ok_or(TimeArgError::OutOfRange)?
    };
    if (crate::validate::MIN_TS_NS..crate::validate::END_TS_NS).contains(&ns) {
        Ok(ns)
    } else {
        Err(TimeArgError::OutOfRange)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_unix_times() {
        assert_eq!(parse_iso8601_utc("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_iso8601_utc("2024-01-01T00:00:00Z"), Ok(1_704_067_200));
        assert_eq!(parse_iso8601_utc("2024-02-29 12:30"), Ok(1_709_209_800));
        assert_eq!(
            parse_iso8601_utc("2000-03-01T00:00:00.999Z"),
            Ok(951_868_800)
        );
        assert_eq!(parse_iso8601_utc("1969-12-31T23:59:59Z"), Ok(-1));
        assert_eq!(
            parse_iso8601_utc("2024-01-01T01:00:00+01:00"),
            Ok(1_704_067_200)
        );
        assert_eq!(
            parse_iso8601_utc("2023-12-31T19:00:00-0500"),
            Ok(1_704_067_200)
        );
    }

    #[test]
    fn years_of_known_instants() {
        assert_eq!(year_of(0), 1970);
        assert_eq!(year_of(1_704_067_199), 2023);
        assert_eq!(year_of(1_704_067_200), 2024);
        assert_eq!(year_of(1_735_689_599), 2024);
        assert_eq!(year_of(1_735_689_600), 2025);
        assert_eq!(year_of(951_782_400), 2000); // 2000-02-29
        assert_eq!(year_of(-1), 1969);
        assert_eq!(year_start_unix_s(2024), 1_704_067_200);
        assert_eq!(year_start_unix_s(1970), 0);
    }

    #[test]
    fn bad_times_are_rejected() {
        for bad in [
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-01-01",
            "2024-1-1T00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00+25:00",
            "yesterday",
            "2024-01-01T00:00:00:00Z",
        ] {
            assert!(parse_iso8601_utc(bad).is_err(), "{bad} accepted");
        }
    }

    proptest::proptest! {
        #[test]
        fn clock_and_offset_add_up(
            year in 1900i64..2200, month in 1i64..=12, day_seed in 0i64..31,
            hour in 0i64..24, minute in 0i64..60, second in 0i64..60,
            off_h in 0i64..15, off_m in 0i64..60, negative in proptest::bool::ANY,
        ) {
            let day = 1 + day_seed % days_in_month(year, month);
            let date = format!("{year:04}-{month:02}-{day:02}");
            let midnight = parse_iso8601_utc(&format!("{date}T00:00:00Z")).expect("midnight");
            let utc = parse_iso8601_utc(&format!("{date}T{hour:02}:{minute:02}:{second:02}Z"))
                .expect("valid time");
            proptest::prop_assert_eq!(utc, midnight + hour * 3600 + minute * 60 + second);
            let sign = if negative { '-' } else { '+' };
            let local = parse_iso8601_utc(&format!(
                "{date} {hour:02}:{minute:02}:{second:02}{sign}{off_h:02}:{off_m:02}"
            ))
            .expect("valid offset");
            let offset = (off_h * 3600 + off_m * 60) * if negative { -1 } else { 1 };
            proptest::prop_assert_eq!(local, utc - offset);
            // The last day of a month is followed, 86,400 s later, by the 1st of the next.
            let last = days_in_month(year, month);
            let (next_year, next_month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
            let end = parse_iso8601_utc(&format!("{year:04}-{month:02}-{last:02}T00:00Z"))
                .expect("last day");
            let next = parse_iso8601_utc(&format!("{next_year:04}-{next_month:02}-01T00:00Z"))
                .expect("first day");
            proptest::prop_assert_eq!(next - end, 86_400);
        }
    }

    #[test]
    fn rfc3339_round_trips_and_user_times_stay_in_range() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_704_067_200_000_000_000), "2024-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_500_000_000), "1970-01-01T00:00:01.500000000Z");
        assert_eq!(
            rfc3339(1_709_210_096_500_000_000),
            "2024-02-29T12:34:56.500000000Z"
        );
        assert_eq!(rfc3339(-1_000_000_000), "1969-12-31T23:59:59Z");
        for ns in [0, 1_709_210_096_500_000_000, 7_258_118_399_000_000_000] {
            assert_eq!(parse_time_arg(&rfc3339(ns)), Ok(ns));
        }
        assert_eq!(parse_time_arg("1704067200"), Ok(1_704_067_200_000_000_000));
        assert_eq!(
            parse_time_arg("2024-02-29T12:34:56.5+00:00"),
            Ok(1_709_210_096_500_000_000)
        );
        for far in [
            "2262-04-12T00:00:00Z",
            "1600-01-01T00:00:00Z",
            "99999999999999999999",
            "9223372036854775807",
        ] {
            assert_eq!(parse_time_arg(far), Err(TimeArgError::OutOfRange), "{far}");
        }
        for bad in [
            "2024-02-30T00:00:00Z",
            "2024-01-01T00:00:00",
            "yesterday",
            "",
            "2024-01-01Z",
        ] {
            assert_eq!(parse_time_arg(bad), Err(TimeArgError::NotATime), "{bad}");
        }
    }
}
