//! Hourly (or finer) grid carbon-intensity series imported from CSV, for location-based
//! emissions with time-varying intensity (METHODOLOGY §5). Parses text the caller read;
//! no I/O here.
//!
//! Accepted headers (case ignored, `₂` read as `2`):
//! - inferwatt's own: `datetime,zone,g_per_kwh`;
//! - Electricity Maps' hourly export: `Datetime (UTC)`, `Zone id` (or `Zone Id`), and the
//!   lifecycle column `Carbon intensity gCO₂eq/kWh (LCA)` (or `(Life cycle)`); other
//!   columns are ignored. The lifecycle figure is used, as in the built-in yearly tables.
//!
//! Times are ISO 8601: `2024-01-01T00:00:00Z`, `2024-01-01 00:00:00` (read as UTC),
//! `2024-01-01T01:00:00+01:00`; fractions of a second are dropped.

use std::collections::BTreeMap;

use super::FactorError;

/// Intensity series by zone. Each value holds from its timestamp until the next step
/// (the zone's smallest spacing between timestamps; one hour for a single row).
#[derive(Debug, Clone, PartialEq)]
pub struct HourlyIntensity {
    series: BTreeMap<String, Series>,
}

#[derive(Debug, Clone, PartialEq)]
struct Series {
    /// (start unix seconds, gCO2e/kWh), sorted, unique starts.
    points: Vec<(i64, f64)>,
    step_s: i64,
}

const DEFAULT_STEP_S: i64 = 3600;

impl HourlyIntensity {
    /// The intensity (gCO2e/kWh) in `zone` at `unix_s`: the value of the step that
    /// contains it. `None` for an unknown zone, before the first row, after the last step,
    /// or in a gap of the series (the caller then falls back to the yearly table).
    pub fn at(&self, zone: &str, unix_s: i64) -> Option<f64> {
        let series = self.series.get(&normalize_zone(zone))?;
        let idx = series.points.partition_point(|(t, _)| *t <= unix_s);
        let (start, value) = *series.points.get(idx.checked_sub(1)?)?;
        (unix_s.saturating_sub(start) < series.step_s).then_some(value)
    }

    /// The time-weighted mean intensity in `zone` over `[from_s, to_s)`: each step counts
    /// for the seconds of it inside the span (15-minute rows weigh a quarter of an hour
    /// each); seconds the series does not cover count at `fallback`. `None` when the series
    /// covers none of the span (or the zone is unknown).
    pub fn mean(&self, zone: &str, from_s: i64, to_s: i64, fallback: f64) -> Option<f64> {
        let series = self.series.get(&normalize_zone(zone))?;
        if to_s <= from_s {
            return self.at(zone, from_s);
        }
        let first = series
            .points
            .partition_point(|(t, _)| *t <= from_s)
            .saturating_sub(1);
        let (mut covered, mut weighted) = (0i64, 0.0);
        for (start, value) in series.points.iter().skip(first) {
            if *start >= to_s {
                break;
            }
            let a = (*start).max(from_s);
            let b = start.saturating_add(series.step_s).min(to_s);
            if b > a {
                covered += b - a;
                weighted += value * (b - a) as f64;
            }
        }
        if covered == 0 {
            return None;
        }
        let span = to_s - from_s;
        Some((weighted + fallback * (span - covered) as f64) / span as f64)
    }

    /// The zones present, upper-cased, sorted.
    pub fn zones(&self) -> impl Iterator<Item = &str> {
        self.series.keys().map(String::as_str)
    }

    /// The spacing of a zone's series in seconds (3600 for hourly data).
    pub fn step_s(&self, zone: &str) -> Option<i64> {
        self.series.get(&normalize_zone(zone)).map(|s| s.step_s)
    }

    /// First and last timestamps (unix seconds) of a zone's series.
    pub fn range(&self, zone: &str) -> Option<(i64, i64)> {
        let s = self.series.get(&normalize_zone(zone))?;
        Some((s.points.first()?.0, s.points.last()?.0))
    }

    /// Rows held, all zones together.
    pub fn len(&self) -> usize {
        self.series.values().map(|s| s.points.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn normalize_zone(zone: &str) -> String {
    zone.trim().to_uppercase()
}

fn normalize_header(h: &str) -> String {
    h.trim()
        .trim_matches('"')
        .replace('₂', "2")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

const DATETIME_HEADERS: &[&str] = &["datetime", "datetime (utc)", "datetime_utc", "timestamp"];
const ZONE_HEADERS: &[&str] = &["zone", "zone id", "zone_id"];
const INTENSITY_HEADERS: &[&str] = &[
    "g_per_kwh",
    "carbon intensity gco2eq/kwh (lca)",
    "carbon intensity gco2eq/kwh (life cycle)",
];

fn find_column(
    headers: &[String],
    accepted: &[&str],
    wanted: &'static str,
    accepted_text: &'static str,
) -> Result<usize, FactorError> {
    headers
        .iter()
        .position(|h| accepted.contains(&normalize_header(h).as_str()))
        .ok_or_else(|| FactorError::HourlyCsvMissingColumn {
            wanted,
            accepted: accepted_text,
            found: headers
                .iter()
                .map(|h| format!("'{}'", h.trim()))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Parses an hourly carbon-intensity CSV (see the module docs for accepted headers and
/// times). Errors name the line and column. Rows may come in any order; a zone and time
/// given twice with different values is an error.
pub fn parse_hourly_csv(text: &str) -> Result<HourlyIntensity, FactorError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty());
    let (header_line, header) = lines.next().ok_or(FactorError::HourlyCsvEmpty)?;
    let headers = split_csv_line(header).map_err(|message| FactorError::HourlyCsvValue {
        line: header_line,
        column: "header".to_owned(),
        message,
    })?;
    let dt_col = find_column(
        &headers,
        DATETIME_HEADERS,
        "time",
        "'datetime', 'Datetime (UTC)'",
    )?;
    let zone_col = find_column(&headers, ZONE_HEADERS, "zone", "'zone', 'Zone id'")?;
    let ci_col = find_column(
        &headers,
        INTENSITY_HEADERS,
        "lifecycle carbon-intensity",
        "'g_per_kwh', 'Carbon intensity gCO₂eq/kWh (LCA)', 'Carbon intensity gCO₂eq/kWh (Life cycle)'",
    )?;
    let column_name = |col: usize| {
        headers
            .get(col)
            .map(|h| h.trim().to_owned())
            .unwrap_or_default()
    };

    // zone → start → (value, line)
    let mut rows: BTreeMap<String, BTreeMap<i64, (f64, usize)>> = BTreeMap::new();
    for (line, text) in lines {
        let cells = split_csv_line(text).map_err(|message| FactorError::HourlyCsvValue {
            line,
            column: "row".to_owned(),
            message,
        })?;
        let cell = |col: usize| -> Result<&str, FactorError> {
            cells
                .get(col)
                .map(|c| c.trim())
                .ok_or_else(|| FactorError::HourlyCsvValue {
                    line,
                    column: column_name(col),
                    message: format!(
                        "the row has {} cells but the header has {}; give every row all columns",
                        cells.len(),
                        headers.len()
                    ),
                })
        };
        let raw_time = cell(dt_col)?;
        let start = parse_iso8601_utc(raw_time).map_err(|why| FactorError::HourlyCsvValue {
            line,
            column: column_name(dt_col),
            message: format!(
                "'{raw_time}' is not an ISO 8601 time ({why}); write it as '2024-01-01T00:00:00Z'"
            ),
        })?;
        let zone = cell(zone_col)?;
        if zone.is_empty() {
            return Err(FactorError::HourlyCsvValue {
                line,
                column: column_name(zone_col),
                message: "the zone is empty; give the grid zone, e.g. 'US-CAL-CISO'".to_owned(),
            });
        }
        let raw_ci = cell(ci_col)?;
        let value = raw_ci
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| FactorError::HourlyCsvValue {
                line,
                column: column_name(ci_col),
                message: format!(
                    "'{raw_ci}' is not a carbon intensity; write gCO2e/kWh as a number ≥ 0, e.g. '245.5'"
                ),
            })?;
        let series = rows.entry(normalize_zone(zone)).or_default();
        if let Some((previous, previous_line)) = series.insert(start, (value, line)) {
            if previous != value {
                return Err(FactorError::HourlyCsvValue {
                    line,
                    column: column_name(dt_col),
                    message: format!(
                        "'{raw_time}' for zone '{zone}' was already given on line {previous_line} \
                         with '{previous}', now '{value}'; keep one row per zone and time"
                    ),
                });
            }
        }
    }

    let series = rows
        .into_iter()
        .map(|(zone, by_start)| {
            let points: Vec<(i64, f64)> = by_start.into_iter().map(|(t, (v, _))| (t, v)).collect();
            let step_s = points
                .windows(2)
                .map(|w| w[1].0 - w[0].0)
                .min()
                .unwrap_or(DEFAULT_STEP_S);
            (zone, Series { points, step_s })
        })
        .collect();
    Ok(HourlyIntensity { series })
}

/// Splits one CSV line (RFC 4180 quoting within a line: `"a,b"`, `""` for a quote).
fn split_csv_line(line: &str) -> Result<Vec<String>, String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut chars = line.chars().peekable();
    let mut in_quotes = false;
    while let Some(c) = chars.next() {
        match (in_quotes, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => in_quotes = false,
            (true, c) => cell.push(c),
            (false, '"') if cell.trim().is_empty() => {
                cell.clear();
                in_quotes = true;
            }
            (false, ',') => cells.push(std::mem::take(&mut cell)),
            (false, c) => cell.push(c),
        }
    }
    if in_quotes {
        return Err("a quoted cell is not closed; end it with '\"' on the same line".to_owned());
    }
    cells.push(cell);
    Ok(cells)
}

/// The UTC calendar year of `unix_s` (proleptic Gregorian).
pub fn year_of(unix_s: i64) -> i32 {
    let days = unix_s.div_euclid(86_400);
    // Inverse of `days_from_civil` (era-based).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    i32::try_from(year).unwrap_or(if year < 0 { i32::MIN } else { i32::MAX })
}

/// Unix seconds of `year`-01-01T00:00:00Z (proleptic Gregorian).
pub fn year_start_unix_s(year: i32) -> i64 {
    days_from_civil(i64::from(year), 1, 1) * 86_400
}

/// Days from 1970-01-01 to a proleptic Gregorian date (era-based civil-date arithmetic).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
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
    fn fifteen_minute_rows_are_time_weighted() {
        let csv = "datetime,zone,g_per_kwh\n\
                   2024-06-01T10:00:00Z,FR,100\n2024-06-01T10:15:00Z,FR,200\n\
                   2024-06-01T10:30:00Z,FR,300\n2024-06-01T10:45:00Z,FR,400\n";
        let h = parse_hourly_csv(csv).expect("csv");
        let t = parse_iso8601_utc("2024-06-01T10:00:00Z").expect("t");
        assert_eq!(h.mean("FR", t, t + 3600, 0.0), Some(250.0));
        // Half the hour uncovered: the fallback fills it.
        assert_eq!(h.mean("FR", t + 1800, t + 5400, 50.0), Some(200.0));
        assert_eq!(h.mean("FR", t + 7200, t + 10_800, 50.0), None);
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
    fn csv_quoting() {
        assert_eq!(
            split_csv_line(r#"a,"b,c","d ""q""",e"#),
            Ok(vec![
                "a".to_owned(),
                "b,c".to_owned(),
                r#"d "q""#.to_owned(),
                "e".to_owned()
            ])
        );
        assert!(split_csv_line(r#"a,"b"#).is_err());
        assert_eq!(split_csv_line(""), Ok(vec![String::new()]));
    }
}
