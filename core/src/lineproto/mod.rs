//! InfluxDB line protocol: the data model ([`Point`], [`FieldValue`]), the encoder
//! ([`Point::to_line`], [`encode`]) and the decoder ([`decode()`]).
//!
//! Grammar: `measurement(,tag=value)* field=value(,field=value)* [timestamp]`.
//! The decoder is checked against influxdata's conformance corpus
//! (`shared/data/line-protocol/corpus.json`) in `core/tests/corpus.rs`.

pub mod decode;

pub use decode::{decode, DecodeError, Decoder, Precision};

use std::fmt::Write as _;

/// A field value, with the four line-protocol types (and unsigned integers).
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// `1.5`, `1`, `1e3` (a bare number is a float).
    Float(f64),
    /// `12i`
    Int(i64),
    /// `12u`
    UInt(u64),
    /// `"text"`
    Str(String),
    /// `t`, `true`, `F`, …
    Bool(bool),
}

impl FieldValue {
    /// The value as a float, for numeric fields (integers convert, strings and booleans do not).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            FieldValue::Float(v) => Some(*v),
            FieldValue::Int(v) => Some(*v as f64),
            FieldValue::UInt(v) => Some(*v as f64),
            FieldValue::Str(_) | FieldValue::Bool(_) => None,
        }
    }

    /// The value as a string slice, for string fields.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// One line-protocol point. Tags are kept sorted by key (the canonical series key);
/// fields keep their insertion order. `timestamp` is in nanoseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub measurement: String,
    pub tags: Vec<(String, String)>,
    pub fields: Vec<(String, FieldValue)>,
    pub timestamp: Option<i64>,
}

/// Why a point cannot be encoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    #[error("measurement name is empty")]
    EmptyMeasurement,
    #[error("point '{0}' has no fields")]
    NoFields(String),
    #[error("field '{field}' of '{measurement}' is {value}, which line protocol cannot carry")]
    NonFinite {
        measurement: String,
        field: String,
        value: f64,
    },
    #[error("an empty tag key, tag value or field key in '{0}'")]
    EmptyKey(String),
}

impl Point {
    /// A point with no tags or fields yet.
    pub fn new(measurement: impl Into<String>) -> Self {
        Point {
            measurement: measurement.into(),
            tags: Vec::new(),
            fields: Vec::new(),
            timestamp: None,
        }
    }

    /// Adds a tag, keeping tags sorted by key. A tag with an empty value is left out,
    /// as InfluxDB does: line protocol cannot carry it.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        let value = value.into();
        let at = self
            .tags
            .partition_point(|(k, _)| k.as_str() < key.as_str());
        let present = self.tags.get(at).is_some_and(|(k, _)| *k == key);
        match (present, value.is_empty()) {
            (true, true) => {
                self.tags.remove(at);
            }
            (true, false) => self.tags[at].1 = value,
            (false, true) => {}
            (false, false) => self.tags.insert(at, (key, value)),
        }
        self
    }

    /// Adds a field.
    pub fn field(mut self, key: impl Into<String>, value: FieldValue) -> Self {
        self.fields.push((key.into(), value));
        self
    }

    /// Adds a float field.
    pub fn float(self, key: impl Into<String>, value: f64) -> Self {
        self.field(key, FieldValue::Float(value))
    }

    /// Adds an integer field.
    pub fn int(self, key: impl Into<String>, value: i64) -> Self {
        self.field(key, FieldValue::Int(value))
    }

    /// Adds an unsigned integer field.
    pub fn uint(self, key: impl Into<String>, value: u64) -> Self {
        self.field(key, FieldValue::UInt(value))
    }

    /// Adds a string field.
    pub fn string(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.field(key, FieldValue::Str(value.into()))
    }

    /// Sets the timestamp (nanoseconds since the Unix epoch).
    pub fn at(mut self, ts_ns: i64) -> Self {
        self.timestamp = Some(ts_ns);
        self
    }

    /// The value of a tag.
    pub fn tag_value(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a field.
    pub fn field_value(&self, key: &str) -> Option<&FieldValue> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A numeric field as f64.
    pub fn field_f64(&self, key: &str) -> Option<f64> {
        self.field_value(key).and_then(FieldValue::as_f64)
    }

    /// The series key: measurement and sorted tags, as encoded on the wire.
    pub fn series_key(&self) -> String {
        // Sorted by reference: the same order as sorting the tags, without copying them.
        let mut tags: Vec<&(String, String)> = self.tags.iter().collect();
        tags.sort();
        let len = self.measurement.len()
            + tags
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>();
        let mut out = String::with_capacity(len + len / 8);
        escape_into(&mut out, &self.measurement, &[',', ' ']);
        for (k, v) in &tags {
            out.push(',');
            escape_into(&mut out, k, &[',', '=', ' ']);
            out.push('=');
            escape_into(&mut out, v, &[',', '=', ' ']);
        }
        out
    }

    /// Encodes the point as one line (without the trailing newline).
    pub fn to_line(&self) -> Result<String, EncodeError> {
        if self.measurement.is_empty() {
            return Err(EncodeError::EmptyMeasurement);
        }
        if self.fields.is_empty() {
            return Err(EncodeError::NoFields(self.measurement.clone()));
        }
        let mut out = String::with_capacity(128);
        escape_into(&mut out, &self.measurement, &[',', ' ']);
        for (k, v) in &self.tags {
            if k.is_empty() || v.is_empty() {
                return Err(EncodeError::EmptyKey(self.measurement.clone()));
            }
            out.push(',');
            escape_into(&mut out, k, &[',', '=', ' ']);
            out.push('=');
            escape_into(&mut out, v, &[',', '=', ' ']);
        }
        out.push(' ');
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if k.is_empty() {
                return Err(EncodeError::EmptyKey(self.measurement.clone()));
            }
            if i > 0 {
                out.push(',');
            }
            escape_into(&mut out, k, &[',', '=', ' ']);
            out.push('=');
            match v {
                FieldValue::Float(f) => {
                    if !f.is_finite() {
                        return Err(EncodeError::NonFinite {
                            measurement: self.measurement.clone(),
                            field: k.clone(),
                            value: *f,
                        });
                    }
                    // Rust's Display for f64 is the shortest string that round-trips.
                    let _ = write!(out, "{f}");
                }
                FieldValue::Int(n) => {
                    let _ = write!(out, "{n}i");
                }
                FieldValue::UInt(n) => {
                    let _ = write!(out, "{n}u");
                }
                FieldValue::Str(s) => {
                    out.push('"');
                    escape_into(&mut out, s, &['"', '\\']);
                    out.push('"');
                }
                FieldValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            }
        }
        if let Some(ts) = self.timestamp {
            let _ = write!(out, " {ts}");
        }
        Ok(out)
    }
}

/// Encodes points as a line-protocol body, one line each, newline-terminated.
pub fn encode(points: &[Point]) -> Result<String, EncodeError> {
    let mut out = String::with_capacity(points.len() * 160);
    for p in points {
        out.push_str(&p.to_line()?);
        out.push('\n');
    }
    Ok(out)
}

fn escape_into(out: &mut String, s: &str, specials: &[char]) {
    // Most names and values need no escape: copy them whole. The specials are ASCII, so
    // a byte test is exact (no byte of a multi-byte UTF-8 character is ASCII).
    let special = |b: u8| b == b'\n' || specials.iter().any(|&c| u32::from(b) == u32::from(c));
    if !s.bytes().any(special) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            c if specials.contains(&c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_key_sorts_tags_and_escapes_only_what_needs_it() {
        let mut p = Point::new("gpu energy,x");
        p.tags = vec![
            ("zone".into(), "é=ü".into()),
            ("host".into(), "a b,c\nd".into()),
            ("gpu".into(), "GPU-0".into()),
        ];
        assert_eq!(
            p.series_key(),
            "gpu\\ energy\\,x,gpu=GPU-0,host=a\\ b\\,c\\nd,zone=é\\=ü"
        );
    }

    #[test]
    fn encodes_all_field_types_with_escaping() {
        let p = Point::new("gpu energy")
            .tag("host", "a,b")
            .tag("gpu_name", "NVIDIA H100 80GB HBM3")
            .float("energy_j", 12.5)
            .int("n", -3)
            .uint("energy_counter_mj", 42)
            .string("source", "say \"hi\"")
            .field("ok", FieldValue::Bool(true))
            .at(1_700_000_000_000_000_000);
        assert_eq!(
            p.to_line().expect("encodes"),
            "gpu\\ energy,gpu_name=NVIDIA\\ H100\\ 80GB\\ HBM3,host=a\\,b \
             energy_j=12.5,n=-3i,energy_counter_mj=42u,source=\"say \\\"hi\\\"\",ok=true \
             1700000000000000000"
        );
    }

    #[test]
    fn tags_stay_sorted_and_unique() {
        let p = Point::new("m")
            .tag("z", "1")
            .tag("a", "2")
            .tag("z", "3")
            .float("f", 1.0);
        assert_eq!(
            p.tags,
            vec![("a".into(), "2".into()), ("z".into(), "3".into())]
        );
        let p = p.tag("server", "").tag("a", "");
        assert_eq!(p.tags, vec![("z".into(), "3".into())]);
    }

    #[test]
    fn refuses_what_the_wire_cannot_carry() {
        assert!(matches!(
            Point::new("m").float("f", f64::NAN).to_line(),
            Err(EncodeError::NonFinite { .. })
        ));
        assert!(matches!(
            Point::new("m").to_line(),
            Err(EncodeError::NoFields(_))
        ));
        let mut p = Point::new("m").float("f", 1.0);
        p.tags.push(("t".into(), String::new()));
        assert!(matches!(p.to_line(), Err(EncodeError::EmptyKey(_))));
    }
}
