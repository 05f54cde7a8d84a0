//! The properties the fuzz targets check, and a small seeded mutator so that the same
//! checks also run on stable Rust (`src/bin/smoke.rs`) where libFuzzer cannot.

use inferwatt_core::lineproto::decode::Decoder;
use inferwatt_core::lineproto::{decode, encode, Precision};

const DEFAULT_TIME_NS: i64 = 1_700_000_000_123_456_789;

/// Decodes `data`; panics (a finding) if the decoder panics, if the streaming decoder
/// does not terminate, or if accepted input does not survive encode → decode unchanged.
/// Returns how many points `data` decoded to (0 when it was refused).
pub fn check_lineproto_decode(data: &[u8]) -> usize {
    // Every precision path, including the default-time truncation, must be panic-free.
    for (precision, default_time) in [
        (Precision::Seconds, i64::MIN),
        (Precision::Milliseconds, i64::MAX),
        (Precision::Microseconds, DEFAULT_TIME_NS),
    ] {
        let _ = decode(data, precision, default_time);
    }
    // After an error the streaming decoder resumes at the next line, so it yields at
    // most one item per line; more would mean it is not advancing.
    let lines = data.iter().filter(|&&b| b == b'\n').count() + 1;
    let items = Decoder::new(data, Precision::Nanoseconds, i64::MIN)
        .take(lines + 1)
        .count();
    assert!(
        items <= lines,
        "streaming decoder yielded {items} items for {lines} lines"
    );

    let Ok(points) = decode(data, Precision::Nanoseconds, DEFAULT_TIME_NS) else {
        return 0;
    };
    let body = encode(&points).expect("decoded points are encodable");
    let again = decode(body.as_bytes(), Precision::Nanoseconds, 0)
        .unwrap_or_else(|e| panic!("re-encoded body {body:?} does not decode: {e}"));
    assert_eq!(
        again, points,
        "encode → decode changed the points of {body:?}"
    );
    points.len()
}

/// Bytes that matter to the line-protocol grammar, favoured when mutating.
const INTERESTING: &[u8] = b"\\\"',= \n\r\t#-.0123456789eEiutTfF\x00\x7f\xff\xc3";

/// A splitmix64 generator: deterministic from its seed, no dependencies.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        if self.below(2) == 0 {
            INTERESTING[self.below(INTERESTING.len())]
        } else {
            self.next_u64() as u8
        }
    }
}

/// A mutant of one of `seeds` (`seeds` must not be empty): one to four byte-level edits
/// — flips, replacements, insertions, deletions, duplications, splices, truncation.
pub fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(4) {
        let len = data.len();
        match rng.below(8) {
            0 if len > 0 => {
                let at = rng.below(len);
                data[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                data[at] = rng.byte();
            }
            2 => {
                let at = rng.below(len + 1);
                let b = rng.byte();
                data.insert(at, b);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let n = (1 + rng.below(8)).min(len - at);
                data.drain(at..at + n);
            }
            4 if len > 0 => {
                let at = rng.below(len);
                let n = (1 + rng.below(16)).min(len - at);
                let chunk = data[at..at + n].to_vec();
                let to = rng.below(len + 1);
                data.splice(to..to, chunk);
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                let at = rng.below(len + 1);
                data.splice(at..at, other.iter().copied());
            }
            6 if len > 0 => data.truncate(rng.below(len)),
            _ => {
                let at = rng.below(len + 1);
                let b = rng.next_u64() as u8;
                data.insert(at, b);
            }
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutation_is_deterministic_and_changes_input() {
        let seeds = vec![b"m,t=a v=1i 5\n".to_vec()];
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..50)
                .map(|_| mutate(&mut rng, &seeds))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert!(run(7).iter().any(|m| m != &seeds[0]));
    }

    #[test]
    fn check_accepts_valid_and_refused_input() {
        assert_eq!(check_lineproto_decode(b"m,t=a v=1i,s=\"x\" 5\nm v=2\n"), 2);
        assert_eq!(check_lineproto_decode(b"m v=\"open"), 0);
    }
}
