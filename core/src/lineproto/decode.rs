//! Line-protocol decoder: turns an InfluxDB v2 write body into [`Point`]s.
//!
//! Owns the grammar of `shared/data/line-protocol/line-protocol.ebnf` and the semantics
//! influxdata's conformance corpus pins down (checked in `core/tests/corpus.rs`):
//!
//! * lines end in `\n` or `\r\n`; blank lines, leading spaces and `#` comments are skipped;
//! * measurement: escapes `\,` and `\ `; tag keys, tag values and field keys: escapes
//!   `\,`, `\=` and `\ `. Any other backslash is kept as written (so `\\` stays two
//!   backslashes). Control characters (U+0000–U+001F, U+007F) are refused there;
//! * string field values: `\"` → `"`, `\\` → `\`, `\n`, `\r`, `\t` → newline, carriage
//!   return, tab; other backslashes are kept; raw newlines are allowed inside quotes;
//! * `12i` (i64), `12u` (u64), floats with optional fraction and exponent (out of range
//!   is an error, never ±inf), booleans `t T true True TRUE f F false False FALSE`;
//! * every token must be valid UTF-8; tags come out sorted by key and a repeated tag
//!   key is an error; a repeated field key is kept as written (both, in order); a point
//!   needs at least one field;
//! * a timestamp is scaled by the [`Precision`] with an overflow check; a point without
//!   one gets the default time, truncated to the precision (as InfluxDB does).
//!
//! The decoder walks the body once, allocating only the strings the points own, and
//! refuses a point past the [limits](MAX_FIELDS) as soon as it crosses one, so a hostile
//! body cannot make it hold more than one point's worth of them: at most
//! `MAX_FIELDS × (MAX_KEY_BYTES + MAX_STRING_BYTES)` bytes of a point in progress.

use super::{FieldValue, Point};

/// Most tags a point may carry (the wire schema uses at most 7; influxdata's corpus has a
/// point of 255).
pub const MAX_TAGS: usize = 256;
/// Most fields a point may carry (the wire schema uses at most 9).
pub const MAX_FIELDS: usize = 256;
/// Longest measurement name, tag key or field key, bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Longest tag value, bytes (model names run to about a hundred).
pub const MAX_TAG_VALUE_BYTES: usize = 1024;
/// Longest string field value, bytes.
pub const MAX_STRING_BYTES: usize = 65_536;

/// Timestamp precision of a write (`precision=` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
}

impl Precision {
    /// Parses the InfluxDB v2 `precision=` values `ns`, `us` (or `µs`), `ms` and `s`.
    pub fn parse(s: &str) -> Option<Precision> {
        match s {
            "ns" => Some(Precision::Nanoseconds),
            "us" | "µs" => Some(Precision::Microseconds),
            "ms" => Some(Precision::Milliseconds),
            "s" => Some(Precision::Seconds),
            _ => None,
        }
    }

    /// The `precision=` spelling of this precision.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Nanoseconds => "ns",
            Precision::Microseconds => "us",
            Precision::Milliseconds => "ms",
            Precision::Seconds => "s",
        }
    }

    /// Nanoseconds in one unit of this precision.
    pub fn nanos_per_unit(self) -> i64 {
        match self {
            Precision::Nanoseconds => 1,
            Precision::Microseconds => 1_000,
            Precision::Milliseconds => 1_000_000,
            Precision::Seconds => 1_000_000_000,
        }
    }
}

/// Why a body cannot be decoded: the 1-based line number and the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct DecodeError {
    pub line: usize,
    pub reason: String,
}

/// The first 40 characters of a (possibly huge) token, for an error message.
fn prefix(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Decodes a line-protocol body. Points without a timestamp get `default_time_ns`,
/// truncated to a multiple of `precision`. The first malformed line fails the body.
pub fn decode(
    body: &[u8],
    precision: Precision,
    default_time_ns: i64,
) -> Result<Vec<Point>, DecodeError> {
    let mut points = Vec::with_capacity(body.len() / 96 + 1);
    for point in Decoder::new(body, precision, default_time_ns) {
        points.push(point?);
    }
    Ok(points)
}

/// Streaming decoder: yields one point (or error) at a time, without collecting.
///
/// After an error it resumes at the line following the point of failure, so a caller
/// can accept the good lines of a partly bad body (InfluxDB's "partial write"). A
/// string field left open by the bad line can make the following lines fail too.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    line: usize,
    line_start: usize,
    nanos_per_unit: i64,
    default_time_ns: i64,
    /// Tag and field counts of the previous point: consecutive points usually share a
    /// shape, so they size the next point's vectors in one allocation each.
    shape: (usize, usize),
    /// Line the current point started on.
    point_line: usize,
}

impl<'a> Decoder<'a> {
    /// A decoder over `body`; see [`decode`] for the meaning of the arguments.
    pub fn new(body: &'a [u8], precision: Precision, default_time_ns: i64) -> Self {
        let unit = precision.nanos_per_unit();
        Decoder {
            buf: body,
            pos: 0,
            line: 1,
            line_start: 0,
            nanos_per_unit: unit,
            default_time_ns: truncate(default_time_ns, unit),
            shape: (0, 1),
            point_line: 1,
        }
    }

    /// The 1-based line the decoder is on.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The 1-based line the last point (or failed point) started on — right even when an
    /// earlier point's string field held a newline.
    pub fn point_line(&self) -> usize {
        self.point_line
    }
}

impl Iterator for Decoder<'_> {
    type Item = Result<Point, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            while self.peek() == Some(b' ') {
                self.pos += 1;
            }
            match self.peek()? {
                b'\n' => self.newline(),
                b'\r' => {
                    if let Err(e) = self.end_of_line("a blank line") {
                        self.recover();
                        return Some(Err(e));
                    }
                }
                b'#' => {
                    if let Err(e) = self.comment() {
                        self.recover();
                        return Some(Err(e));
                    }
                }
                _ => {
                    let point = self.point();
                    if point.is_err() {
                        self.recover();
                    }
                    return Some(point);
                }
            }
        }
    }
}

/// Which token a key-like scan reads; decides its delimiters and escapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Measurement,
    TagKey,
    TagValue,
    FieldKey,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Measurement => "measurement",
            Kind::TagKey => "tag key",
            Kind::TagValue => "tag value",
            Kind::FieldKey => "field key",
        }
    }

    /// Bytes that end the token (besides control characters and the end of input).
    fn table(self) -> &'static [bool; 256] {
        match self {
            Kind::Measurement => &MEASUREMENT_STOP,
            Kind::TagKey | Kind::TagValue | Kind::FieldKey => &KEY_STOP,
        }
    }

    fn unescapes(self, b: u8) -> bool {
        match self {
            Kind::Measurement => matches!(b, b',' | b' '),
            Kind::TagKey | Kind::TagValue | Kind::FieldKey => matches!(b, b',' | b'=' | b' '),
        }
    }
}

const fn stop_table(stops: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[0x7f] = true;
    t[b'\\' as usize] = true;
    let mut j = 0;
    while j < stops.len() {
        t[stops[j] as usize] = true;
        j += 1;
    }
    t
}

static MEASUREMENT_STOP: [bool; 256] = stop_table(b", ");
static KEY_STOP: [bool; 256] = stop_table(b", =");
/// Bytes that end an unquoted field value.
static VALUE_STOP: [bool; 256] = {
    let mut t = [false; 256];
    t[b',' as usize] = true;
    t[b' ' as usize] = true;
    t[b'\n' as usize] = true;
    t[b'\r' as usize] = true;
    t
};

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

impl<'a> Decoder<'a> {
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn column(&self) -> usize {
        self.pos.saturating_sub(self.line_start) + 1
    }

    fn error(&self, reason: impl std::fmt::Display) -> DecodeError {
        DecodeError {
            line: self.line,
            reason: format!("{reason} (column {})", self.column()),
        }
    }

    fn newline(&mut self) {
        self.pos += 1;
        self.line += 1;
        self.line_start = self.pos;
    }

    /// Skips past the next newline after a failure.
    fn recover(&mut self) {
        match self.buf[self.pos.min(self.buf.len())..]
            .iter()
            .position(|&b| b == b'\n')
        {
            Some(at) => {
                self.pos += at;
                self.newline();
            }
            None => self.pos = self.buf.len(),
        }
    }

    /// Consumes the end of a line (`\n`, `\r\n`, or the end of input after an optional `\r`).
    fn end_of_line(&mut self, after: &str) -> Result<(), DecodeError> {
        match self.peek() {
            None => Ok(()),
            Some(b'\n') => {
                self.newline();
                Ok(())
            }
            Some(b'\r') => match self.buf.get(self.pos + 1) {
                None => {
                    self.pos += 1;
                    Ok(())
                }
                Some(b'\n') => {
                    self.pos += 1;
                    self.newline();
                    Ok(())
                }
                Some(_) => Err(self.error(format!(
                    "carriage return after {after} is not followed by a newline"
                ))),
            },
            Some(b) => Err(self.error(format!(
                "unexpected {} after {after}; expected the end of the line",
                show_byte(b)
            ))),
        }
    }

    fn comment(&mut self) -> Result<(), DecodeError> {
        let rest = &self.buf[self.pos..];
        let len = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let text = rest[..len].strip_suffix(b"\r").unwrap_or(&rest[..len]);
        if let Some(at) = text.iter().position(|&b| is_control(b) && b != b'\t') {
            self.pos += at;
            return Err(self.error(format!(
                "comment contains the control character {}; remove it",
                show_byte(text[at])
            )));
        }
        if std::str::from_utf8(text).is_err() {
            return Err(self.error("comment is not valid UTF-8"));
        }
        self.pos += len;
        Ok(())
    }

    /// A token over its length limit: the error names the limit.
    fn check_len(&self, what: &str, token: &str, max: usize) -> Result<(), DecodeError> {
        if token.len() > max {
            Err(self.error(format!(
                "{what} is {} bytes, more than the limit of {max}",
                token.len()
            )))
        } else {
            Ok(())
        }
    }

    fn point(&mut self) -> Result<Point, DecodeError> {
        self.point_line = self.line;
        let measurement = self.key(Kind::Measurement)?;
        self.check_len("the measurement name", &measurement, MAX_KEY_BYTES)?;
        let mut tags: Vec<(String, String)> = Vec::with_capacity(self.shape.0);
        loop {
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    let key = self.key(Kind::TagKey)?;
                    self.expect_equals(Kind::TagKey, &key)?;
                    let value = self.key(Kind::TagValue)?;
                    match self.peek() {
                        Some(b',' | b' ') => {}
                        Some(b'=') => {
                            return Err(self.error(format!(
                                "tag '{key}' has an unescaped '=' in its value; write it as '\\='"
                            )))
                        }
                        _ => {
                            return Err(self.error(format!(
                                "tag '{key}' is not followed by ',' or ' '; a point needs at least one field"
                            )))
                        }
                    }
                    self.check_len(&format!("tag key '{}…'", prefix(&key)), &key, MAX_KEY_BYTES)?;
                    self.check_len(&format!("the value of tag '{}'", prefix(&key)), &value, MAX_TAG_VALUE_BYTES)?;
                    if tags.len() == MAX_TAGS {
                        return Err(self.error(format!(
                            "the point of '{}' has more than {MAX_TAGS} tags, the limit",
                            prefix(&measurement)
                        )));
                    }
                    tags.push((key, value));
                }
                Some(b' ') => break,
                _ => {
                    return Err(self.error(format!(
                        "measurement '{measurement}' is not followed by ',' or ' '; a point needs at least one field"
                    )))
                }
            }
        }
        if !tags.is_sorted_by(|a, b| a.0 < b.0) {
            tags.sort_by(|a, b| a.0.cmp(&b.0));
            if let Some(pair) = tags.windows(2).find(|pair| pair[0].0 == pair[1].0) {
                return Err(self.error(format!(
                    "tag '{}' appears twice in the point of '{measurement}'; keep one",
                    pair[0].0
                )));
            }
        }
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
        let mut fields: Vec<(String, FieldValue)> = Vec::with_capacity(self.shape.1);
        loop {
            let key = self.key(Kind::FieldKey)?;
            self.check_len(
                &format!("field key '{}…'", prefix(&key)),
                &key,
                MAX_KEY_BYTES,
            )?;
            self.expect_equals(Kind::FieldKey, &key)?;
            let value = self.field_value(&key)?;
            if let FieldValue::Str(v) = &value {
                self.check_len(
                    &format!("the value of field '{}'", prefix(&key)),
                    v,
                    MAX_STRING_BYTES,
                )?;
            }
            if fields.len() == MAX_FIELDS {
                return Err(self.error(format!(
                    "the point of '{}' has more than {MAX_FIELDS} fields, the limit",
                    prefix(&measurement)
                )));
            }
            fields.push((key, value));
            if self.peek() == Some(b',') {
                self.pos += 1;
            } else {
                break;
            }
        }
        let mut timestamp = self.default_time_ns;
        let mut after = "the fields";
        if self.peek() == Some(b' ') {
            while self.peek() == Some(b' ') {
                self.pos += 1;
            }
            if matches!(self.peek(), Some(b'-' | b'0'..=b'9')) {
                timestamp = self.timestamp()?;
                after = "the timestamp";
                while self.peek() == Some(b' ') {
                    self.pos += 1;
                }
            }
        }
        self.end_of_line(after)?;
        self.shape = (tags.len(), fields.len());
        Ok(Point {
            measurement,
            tags,
            fields,
            timestamp: Some(timestamp),
        })
    }

    fn expect_equals(&mut self, kind: Kind, key: &str) -> Result<(), DecodeError> {
        match self.peek() {
            Some(b'=') => {
                self.pos += 1;
                Ok(())
            }
            Some(b) => Err(self.error(format!(
                "expected '=' after {} '{key}', found {}",
                kind.name(),
                show_byte(b)
            ))),
            None => Err(self.error(format!(
                "expected '=' after {} '{key}', found the end of the input",
                kind.name()
            ))),
        }
    }

    /// Reads a measurement, tag key, tag value or field key and unescapes it.
    fn key(&mut self, kind: Kind) -> Result<String, DecodeError> {
        let start = self.pos;
        let table = kind.table();
        let mut escaped = false;
        loop {
            let rest = &self.buf[self.pos..];
            match rest.iter().position(|&b| table[usize::from(b)]) {
                None => {
                    self.pos = self.buf.len();
                    break;
                }
                Some(at) => {
                    self.pos += at;
                    if rest[at] != b'\\' {
                        break;
                    }
                    escaped = true;
                    while self.peek() == Some(b'\\') {
                        self.pos += 1;
                    }
                    match self.peek() {
                        Some(b) if !is_control(b) => self.pos += 1,
                        Some(b) => {
                            return Err(self.error(format!(
                                "{} ends in a backslash before the control character {}",
                                kind.name(),
                                show_byte(b)
                            )))
                        }
                        None => {
                            return Err(self.error(format!(
                                "{} ends in a backslash at the end of the input",
                                kind.name()
                            )))
                        }
                    }
                }
            }
        }
        let raw = &self.buf[start..self.pos];
        if raw.is_empty() {
            return Err(match self.peek() {
                Some(b) if is_control(b) => self.error(format!(
                    "invalid character {} where a {} should start",
                    show_byte(b),
                    kind.name()
                )),
                _ => self.error(format!("empty {}", kind.name())),
            });
        }
        // A line end after the token is the caller's to report (e.g. "no fields").
        if let Some(b) = self
            .peek()
            .filter(|&b| is_control(b) && b != b'\n' && b != b'\r')
        {
            return Err(self.error(format!(
                "{} '{}' contains the control character {}",
                kind.name(),
                show(raw),
                show_byte(b)
            )));
        }
        let text = std::str::from_utf8(raw).map_err(|_| DecodeError {
            line: self.line,
            reason: format!(
                "{} '{}' is not valid UTF-8 (column {})",
                kind.name(),
                show(raw),
                start - self.line_start + 1
            ),
        })?;
        Ok(if escaped {
            unescape_key(text, kind)
        } else {
            text.to_owned()
        })
    }

    fn field_value(&mut self, key: &str) -> Result<FieldValue, DecodeError> {
        if self.peek() == Some(b'"') {
            return self.string_value(key).map(FieldValue::Str);
        }
        let start = self.pos;
        let rest = &self.buf[start..];
        let len = rest
            .iter()
            .position(|&b| VALUE_STOP[usize::from(b)])
            .unwrap_or(rest.len());
        let raw = &rest[..len];
        let value = parse_scalar(raw).map_err(|why| {
            let reason = match why {
                ScalarError::Missing => format!("field '{key}' has no value"),
                ScalarError::Invalid => {
                    format!(
                        "field '{key}' has invalid value '{}'; expected a float (1.5), an \
                         integer (12i), an unsigned (12u), a boolean (true) or a \"string\"",
                        show(raw)
                    )
                }
                ScalarError::OutOfRange => format!(
                    "field '{key}' has value '{}', which is out of range for its type",
                    show(raw)
                ),
            };
            self.error(reason)
        })?;
        self.pos += len;
        Ok(value)
    }

    fn string_value(&mut self, key: &str) -> Result<String, DecodeError> {
        let open = (self.pos, self.line, self.line_start);
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        loop {
            let rest = &self.buf[self.pos..];
            match rest.iter().position(|&b| matches!(b, b'"' | b'\\' | b'\n')) {
                None => {
                    return Err(self.unclosed(key, open));
                }
                Some(at) => {
                    self.pos += at;
                    match rest[at] {
                        b'"' => break,
                        b'\n' => self.newline(),
                        _ => {
                            escaped = true;
                            match self.buf.get(self.pos + 1) {
                                None => {
                                    return Err(self.unclosed(key, open));
                                }
                                Some(b'\n') => {
                                    self.pos += 1;
                                    self.newline();
                                }
                                Some(_) => self.pos += 2,
                            }
                        }
                    }
                }
            }
        }
        let raw = &self.buf[start..self.pos];
        self.pos += 1;
        let text = std::str::from_utf8(raw).map_err(|_| {
            self.error(format!(
                "string field '{key}' is not valid UTF-8: '{}'",
                show(raw)
            ))
        })?;
        Ok(if escaped {
            unescape_string(text)
        } else {
            text.to_owned()
        })
    }

    /// The error for a string opened at `open` (position, line, line start) and never closed.
    fn unclosed(&mut self, key: &str, open: (usize, usize, usize)) -> DecodeError {
        (self.pos, self.line, self.line_start) = open;
        let err = self.error(format!(
            "string field '{key}' has no closing '\"'; escape quotes inside it as '\\\"'"
        ));
        self.pos = self.buf.len();
        err
    }

    fn timestamp(&mut self) -> Result<i64, DecodeError> {
        let start = self.pos;
        let rest = &self.buf[start..];
        let len = rest
            .iter()
            .position(|&b| matches!(b, b' ' | b'\n' | b'\r'))
            .unwrap_or(rest.len());
        let raw = &rest[..len];
        let units = parse_i64(raw).map_err(|why| match why {
            ScalarError::OutOfRange => self.error(format!(
                "timestamp '{}' is out of range for a 64-bit integer",
                show(raw)
            )),
            _ => self.error(format!(
                "invalid timestamp '{}'; expected an integer such as 1700000000000000000",
                show(raw)
            )),
        })?;
        let ns = units.checked_mul(self.nanos_per_unit).ok_or_else(|| {
            self.error(format!(
                "timestamp '{}' overflows 64-bit nanoseconds at this precision; check the 'precision' of the write",
                show(raw)
            ))
        })?;
        self.pos += len;
        Ok(ns)
    }
}

/// `t` rounded down to a multiple of `unit` (up, where down would overflow).
fn truncate(t: i64, unit: i64) -> i64 {
    let rem = t.rem_euclid(unit);
    t.checked_sub(rem).unwrap_or_else(|| t + (unit - rem))
}

fn unescape_key(text: &str, kind: Kind) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b'\\' && kind.unescapes(bytes[i + 1]) {
            // Both bytes are ASCII, so the slice boundaries are char boundaries.
            out.push_str(&text[from..i]);
            from = i + 1;
            i += 2;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[from..]);
    out
}

fn unescape_string(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b'\\' {
            let replacement = match bytes[i + 1] {
                b'"' => Some('"'),
                b'\\' => Some('\\'),
                b'n' => Some('\n'),
                b'r' => Some('\r'),
                b't' => Some('\t'),
                _ => None,
            };
            if let Some(c) = replacement {
                out.push_str(&text[from..i]);
                out.push(c);
                i += 2;
                from = i;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&text[from..]);
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScalarError {
    Missing,
    Invalid,
    OutOfRange,
}

fn parse_scalar(raw: &[u8]) -> Result<FieldValue, ScalarError> {
    let (&last, body) = raw.split_last().ok_or(ScalarError::Missing)?;
    match last {
        b'i' => parse_i64(body).map(FieldValue::Int),
        b'u' => parse_u64(body).map(FieldValue::UInt),
        _ => match raw {
            b"t" | b"T" | b"true" | b"True" | b"TRUE" => Ok(FieldValue::Bool(true)),
            b"f" | b"F" | b"false" | b"False" | b"FALSE" => Ok(FieldValue::Bool(false)),
            _ => parse_f64(raw).map(FieldValue::Float),
        },
    }
}

fn parse_u64(digits: &[u8]) -> Result<u64, ScalarError> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(ScalarError::Invalid);
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(d - b'0')))
            .ok_or(ScalarError::OutOfRange)
    })
}

fn parse_i64(raw: &[u8]) -> Result<i64, ScalarError> {
    let (negative, digits) = match raw.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, raw),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(ScalarError::Invalid);
    }
    // Accumulate on the negative side so that i64::MIN is reachable.
    let magnitude = digits.iter().try_fold(0i64, |acc, &d| {
        acc.checked_mul(10)
            .and_then(|v| v.checked_sub(i64::from(d - b'0')))
            .ok_or(ScalarError::OutOfRange)
    })?;
    if negative {
        Ok(magnitude)
    } else {
        magnitude.checked_neg().ok_or(ScalarError::OutOfRange)
    }
}

/// Checks the float grammar (`[-] digits [. [digits]] [exp] | [-] . digits [exp]`)
/// before handing the text to the standard parser, which accepts more (`inf`, `+1`).
fn parse_f64(raw: &[u8]) -> Result<f64, ScalarError> {
    let digits = |from: usize| {
        raw[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let mut i = usize::from(raw.first() == Some(&b'-'));
    let int_digits = digits(i);
    i += int_digits;
    let mut frac_digits = 0;
    if raw.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = digits(i);
        i += frac_digits;
    }
    if int_digits == 0 && frac_digits == 0 {
        return Err(ScalarError::Invalid);
    }
    if matches!(raw.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(raw.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp_digits = digits(i);
        if exp_digits == 0 {
            return Err(ScalarError::Invalid);
        }
        i += exp_digits;
    }
    if i != raw.len() {
        return Err(ScalarError::Invalid);
    }
    let text = std::str::from_utf8(raw).map_err(|_| ScalarError::Invalid)?;
    let value: f64 = text.parse().map_err(|_| ScalarError::Invalid)?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(ScalarError::OutOfRange)
    }
}

/// A token for an error message: lossy UTF-8, control characters escaped, long ones cut.
fn show(raw: &[u8]) -> String {
    const MAX: usize = 48;
    let text = String::from_utf8_lossy(raw);
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == MAX {
            out.push('…');
            break;
        }
        out.extend(c.escape_debug());
    }
    out
}

fn show_byte(b: u8) -> String {
    match b {
        b'\n' => "a newline".to_owned(),
        b'\r' => "a carriage return".to_owned(),
        b'\t' => "a tab".to_owned(),
        b if b.is_ascii_graphic() || b == b' ' => format!("'{}'", char::from(b)),
        b => format!("byte 0x{b:02x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Point {
        let mut points = decode(line.as_bytes(), Precision::Nanoseconds, 7).expect("decodes");
        assert_eq!(points.len(), 1, "one point from {line:?}");
        points.remove(0)
    }

    fn fails(body: &str) -> DecodeError {
        match decode(body.as_bytes(), Precision::Nanoseconds, 0) {
            Ok(points) => panic!("{body:?} decoded to {points:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn decodes_every_field_type() {
        let p =
            one(r#"gpu,host=a,gpu=0 e=1.5,n=-3i,c=42u,s="hi",ok=T,no=false 1700000000000000000"#);
        assert_eq!(p.measurement, "gpu");
        assert_eq!(
            p.tags,
            vec![("gpu".into(), "0".into()), ("host".into(), "a".into())]
        );
        assert_eq!(
            p.fields,
            vec![
                ("e".into(), FieldValue::Float(1.5)),
                ("n".into(), FieldValue::Int(-3)),
                ("c".into(), FieldValue::UInt(42)),
                ("s".into(), FieldValue::Str("hi".into())),
                ("ok".into(), FieldValue::Bool(true)),
                ("no".into(), FieldValue::Bool(false)),
            ]
        );
        assert_eq!(p.timestamp, Some(1_700_000_000_000_000_000));
    }

    #[test]
    fn escapes_follow_the_context() {
        let p = one(r#"c\ p\,u\=,t\=k=v\ a\\l\=x f\,k="q\"\\\n\x" 1"#);
        assert_eq!(p.measurement, r"c p,u\=");
        assert_eq!(p.tags, vec![("t=k".into(), r"v a\\l=x".into())]);
        assert_eq!(p.fields[0].0, "f,k");
        assert_eq!(p.fields[0].1, FieldValue::Str("q\"\\\n\\x".into()));
    }

    #[test]
    fn integer_limits_are_exact() {
        let p = one("m a=-9223372036854775808i,b=9223372036854775807i,c=18446744073709551615u");
        assert_eq!(p.fields[0].1, FieldValue::Int(i64::MIN));
        assert_eq!(p.fields[1].1, FieldValue::Int(i64::MAX));
        assert_eq!(p.fields[2].1, FieldValue::UInt(u64::MAX));
        assert!(fails("m a=9223372036854775808i")
            .reason
            .contains("out of range"));
        assert!(fails("m a=18446744073709551616u")
            .reason
            .contains("out of range"));
        assert!(fails("m a=-1u").reason.contains("invalid value '-1u'"));
    }

    #[test]
    fn float_forms_follow_the_grammar() {
        for (text, want) in [
            ("1", 1.0),
            ("1.", 1.0),
            (".5", 0.5),
            ("-1.5e3", -1500.0),
            ("2E-2", 0.02),
        ] {
            assert_eq!(
                one(&format!("m v={text}")).fields[0].1,
                FieldValue::Float(want),
                "{text}"
            );
        }
        for bad in ["inf", "NaN", "+1", "1e", ".", "-", "1.2.3", "0x10", "1e400"] {
            fails(&format!("m v={bad}"));
        }
    }

    #[test]
    fn precision_scales_and_checks_overflow() {
        let p = decode(b"m v=1 1700000000", Precision::Seconds, 0).expect("decodes");
        assert_eq!(p[0].timestamp, Some(1_700_000_000_000_000_000));
        let err = decode(b"m v=1 9223372037", Precision::Seconds, 0).expect_err("overflows");
        assert!(err.reason.contains("overflows"), "{err}");
        let p = decode(b"m v=1", Precision::Milliseconds, 1_234_567_890).expect("decodes");
        assert_eq!(p[0].timestamp, Some(1_234_000_000));
        let p = decode(b"m v=1", Precision::Seconds, -1).expect("decodes");
        assert_eq!(p[0].timestamp, Some(-1_000_000_000));
        let p = decode(b"m v=1", Precision::Seconds, i64::MIN).expect("decodes");
        assert_eq!(p[0].timestamp, Some(i64::MIN + 854_775_808));
        let p = decode(b"m v=1", Precision::Milliseconds, i64::MAX).expect("decodes");
        assert_eq!(p[0].timestamp, Some(i64::MAX - 854_775_807 % 1_000_000));
    }

    #[test]
    fn skips_blank_lines_comments_and_crlf() {
        let body = b"# header\r\n\r\n   \nm v=1 5\r\n  # indented comment\nm v=2\r";
        let points = decode(body, Precision::Nanoseconds, 9).expect("decodes");
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].timestamp, Some(5));
        assert_eq!(points[1].timestamp, Some(9));
    }

    #[test]
    fn errors_name_the_line_the_token_and_the_column() {
        let e = fails("m v=1\n\nm,host=a energy_j=12..5 3\n");
        assert_eq!(e.line, 3);
        assert_eq!(
            e.to_string(),
            "line 3: field 'energy_j' has invalid value '12..5'; expected a float (1.5), an \
             integer (12i), an unsigned (12u), a boolean (true) or a \"string\" (column 19)"
        );
        assert_eq!(fails("m v=\"a\nb\" 1\nm").line, 3);
        assert!(fails("m").reason.contains("at least one field"));
        assert!(fails("m,t= v=1").reason.contains("empty tag value"));
        assert!(fails("m v=\"open").reason.contains("no closing"));
        assert!(fails("\tm v=1").reason.contains("a tab"));
    }

    #[test]
    fn streaming_resumes_after_a_bad_line() {
        let got: Vec<_> = Decoder::new(b"m v=1\nm v=oops\nm v=3\n", Precision::Nanoseconds, 0)
            .map(|r| r.map(|p| p.fields[0].1.clone()).map_err(|e| e.line))
            .collect();
        assert_eq!(
            got,
            vec![
                Ok(FieldValue::Float(1.0)),
                Err(2),
                Ok(FieldValue::Float(3.0))
            ]
        );
    }

    #[test]
    fn precision_names_round_trip() {
        for p in [
            Precision::Nanoseconds,
            Precision::Microseconds,
            Precision::Milliseconds,
            Precision::Seconds,
        ] {
            assert_eq!(Precision::parse(p.as_str()), Some(p));
        }
        assert_eq!(Precision::parse("h"), None);
    }
}
