//! libFuzzer target: the line-protocol decoder never panics, and whatever it accepts
//! re-encodes to a body that decodes to the same points.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    inferwatt_fuzz::check_lineproto_decode(data);
});
