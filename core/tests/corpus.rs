//! Conformance: every decode case of influxdata's line-protocol corpus
//! (`shared/data/line-protocol/corpus.json`, beside the repository) through
//! [`inferwatt_core::lineproto::decode`]: the same points where the corpus has a result,
//! an error where it has one.

use base64::Engine as _;
use inferwatt_core::lineproto::{decode, FieldValue, Point, Precision};
use serde_json::Value;
use std::path::PathBuf;

/// Cases in the corpus today; the test fails if fewer are checked.
const EXPECTED_CASES: usize = 6_615;

/// Cases whose expected behaviour we deliberately do not match, with the reason.
/// Empty: the decoder matches the whole corpus.
const KNOWN_DIVERGENCES: &[(&str, &str)] = &[];

fn corpus_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/line-protocol/corpus.json")
}

fn precision(text: &str) -> Precision {
    match text {
        "1ns" => Precision::Nanoseconds,
        "1µs" | "1us" => Precision::Microseconds,
        "1ms" => Precision::Milliseconds,
        "1s" => Precision::Seconds,
        other => {
            panic!("corpus precision '{other}' is not one the test knows; add it to precision()")
        }
    }
}

fn input_bytes(text: &Value) -> Vec<u8> {
    match text {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Object(o) => {
            let b64 = o
                .get("binary")
                .and_then(Value::as_str)
                .expect("a non-string input is {\"binary\": base64}");
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("corpus binary input is valid base64")
        }
        other => panic!("unexpected input text {other}"),
    }
}

fn field_matches(got: &FieldValue, want: &Value) -> bool {
    let Some((kind, value)) = want.as_object().and_then(|o| o.iter().next()) else {
        return false;
    };
    match (kind.as_str(), got) {
        ("float", FieldValue::Float(g)) => value.as_f64() == Some(*g),
        ("int", FieldValue::Int(g)) => value.as_i64() == Some(*g),
        ("uint", FieldValue::UInt(g)) => value.as_u64() == Some(*g),
        ("string", FieldValue::Str(g)) => value.as_str() == Some(g.as_str()),
        ("bool", FieldValue::Bool(g)) => value.as_bool() == Some(*g),
        _ => false,
    }
}

fn point_matches(got: &Point, want: &Value) -> bool {
    let pairs = |key: &str| want[key].as_array().cloned().unwrap_or_default();
    let tags = pairs("tags");
    let fields = pairs("fields");
    want["name"].as_str() == Some(got.measurement.as_str())
        && want["time"].as_i64() == got.timestamp
        && tags.len() == got.tags.len()
        && tags.iter().zip(&got.tags).all(|(w, (k, v))| {
            w["key"].as_str() == Some(k.as_str()) && w["value"].as_str() == Some(v.as_str())
        })
        && fields.len() == got.fields.len()
        && fields.iter().zip(&got.fields).all(|(w, (k, v))| {
            w["key"].as_str() == Some(k.as_str()) && field_matches(v, &w["value"])
        })
}

#[test]
fn decoder_matches_the_influxdata_corpus() {
    let path = corpus_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the line-protocol corpus at '{}': {e}; check out shared/ beside the repository",
            path.display()
        )
    });
    let corpus: Value = serde_json::from_str(&text).expect("corpus.json is valid JSON");
    let cases = corpus["decode"]
        .as_object()
        .expect("corpus.json has a \"decode\" object");

    let mut checked = 0;
    let mut failures = Vec::new();
    for (key, case) in cases {
        if KNOWN_DIVERGENCES.iter().any(|(k, _)| k == key) {
            continue;
        }
        let input = &case["input"];
        let body = input_bytes(&input["text"]);
        let precision = precision(input["precision"].as_str().expect("precision is a string"));
        let default_time = input["defaultTime"]
            .as_i64()
            .expect("defaultTime is an integer");
        let got = decode(&body, precision, default_time);
        let output = &case["output"];
        let ok = match (&got, output.get("result"), output.get("error")) {
            (Ok(points), Some(Value::Array(want)), None) => {
                points.len() == want.len()
                    && points.iter().zip(want).all(|(g, w)| point_matches(g, w))
            }
            (Err(_), None, Some(_)) => true,
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "case {key}: input {:?}\n  want {output}\n  got  {got:?}",
                String::from_utf8_lossy(&body)
            ));
        }
        checked += 1;
    }
    println!(
        "line-protocol corpus: {checked} decode cases checked, {} known divergences",
        KNOWN_DIVERGENCES.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {checked} corpus cases differ:\n{}",
        failures.len(),
        failures
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        checked + KNOWN_DIVERGENCES.len() >= EXPECTED_CASES,
        "only {checked} corpus cases checked, expected {EXPECTED_CASES}: is corpus.json truncated?"
    );
}
