//! Properties of the line-protocol codec: decode(encode(p)) == p for any point the wire
//! can carry, decoding never panics on any bytes, and anything the decoder accepts
//! survives a second encode/decode unchanged.

use inferwatt_core::lineproto::decode::Decoder;
use inferwatt_core::lineproto::{decode, encode, FieldValue, Point, Precision};
use proptest::prelude::*;

const DEFAULT_TIME: i64 = 1_700_000_000_123_456_789;

/// Names the wire can carry: no control characters (the grammar refuses them), no
/// trailing backslash (it would escape the delimiter after it). Biased towards the
/// characters that need escaping.
fn name() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z_]{1,12}", "[a-z ,=\\\\\"#é日\\-.]{1,10}", "\\PC{1,8}",]
        .prop_filter("no trailing backslash", |s| !s.ends_with('\\'))
}

fn measurement() -> impl Strategy<Value = String> {
    name().prop_filter("a leading '#' makes a comment", |s| !s.starts_with('#'))
}

fn field_value() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(FieldValue::Float),
        any::<i64>().prop_map(FieldValue::Int),
        any::<u64>().prop_map(FieldValue::UInt),
        any::<bool>().prop_map(FieldValue::Bool),
        // Any text at all, control characters, quotes and backslashes included.
        any::<String>().prop_map(FieldValue::Str),
        "[\"\\\\ntr\n\r\t,= ]{0,8}".prop_map(FieldValue::Str),
    ]
}

fn point() -> impl Strategy<Value = Point> {
    (
        measurement(),
        prop::collection::vec((name(), name()), 0..4),
        prop::collection::vec((name(), field_value()), 1..5),
        prop::option::of(any::<i64>()),
    )
        .prop_map(|(m, tags, fields, ts)| {
            let mut p = Point::new(m);
            for (k, v) in tags {
                p = p.tag(k, v);
            }
            for (k, v) in fields {
                p = p.field(k, v);
            }
            p.timestamp = ts;
            p
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_inverts_encode(points in prop::collection::vec(point(), 1..6)) {
        let body = encode(&points).expect("generated points are encodable");
        let decoded = decode(body.as_bytes(), Precision::Nanoseconds, DEFAULT_TIME)
            .map_err(|e| TestCaseError::fail(format!("{e} in {body:?}")))?;
        let expected: Vec<Point> = points
            .into_iter()
            .map(|mut p| {
                p.timestamp = p.timestamp.or(Some(DEFAULT_TIME));
                p
            })
            .collect();
        prop_assert_eq!(decoded, expected, "body {:?}", body);
    }

    #[test]
    fn decode_never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(&body, Precision::Nanoseconds, DEFAULT_TIME);
        // The streaming decoder must also terminate and never panic.
        prop_assert!(Decoder::new(&body, Precision::Seconds, DEFAULT_TIME).count() <= body.len() + 1);
    }

    #[test]
    fn accepted_input_reencodes_unchanged(
        points in prop::collection::vec(point(), 1..4),
        cuts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        // Mutate a valid body in a few places; whatever still decodes must round-trip.
        let mut body = encode(&points).expect("encodable").into_bytes();
        for (at, byte) in cuts {
            let i = at.index(body.len());
            body[i] = byte;
        }
        if let Ok(decoded) = decode(&body, Precision::Nanoseconds, DEFAULT_TIME) {
            let again = encode(&decoded).expect("decoded points are encodable");
            let back = decode(again.as_bytes(), Precision::Nanoseconds, 0)
                .map_err(|e| TestCaseError::fail(format!("{e} in {again:?}")))?;
            prop_assert_eq!(back, decoded);
        }
    }

    #[test]
    fn streaming_agrees_with_decode(points in prop::collection::vec(point(), 1..6)) {
        let body = encode(&points).expect("encodable");
        let streamed: Result<Vec<Point>, _> =
            Decoder::new(body.as_bytes(), Precision::Nanoseconds, 0).collect();
        prop_assert_eq!(streamed, decode(body.as_bytes(), Precision::Nanoseconds, 0));
    }
}
