//! Rough decode throughput on a realistic agent body (release mode):
//! `cargo run --release --example throughput -- [POINTS]` (default 200000).
//! Not a benchmark suite: one figure to notice order-of-magnitude regressions.

use inferwatt_core::lineproto::{decode, Precision};
use std::fmt::Write as _;
use std::time::Instant;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let mut body = String::with_capacity(n * 200);
    for i in 0..n {
        let _ = writeln!(
            body,
            "inferwatt_gpu,host=gpu-node-{h},gpu=GPU-{g},model=meta-llama/Llama-3.1-8B-Instruct,site=eu\\ west \
             energy_j={e}.25,power_w={p}.5,util_pct={u}i,counter_mj={c}u,source=\"nvml\" {ts}",
            h = i % 64,
            g = i % 8,
            e = i % 1000,
            p = 200 + i % 400,
            u = i % 101,
            c = 1_000_000 + i,
            ts = 1_700_000_000_000_000_000i64 + i as i64,
        );
    }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        let points = decode(body.as_bytes(), Precision::Nanoseconds, 0).expect("body decodes");
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(points.len(), n);
        best = best.min(secs);
    }
    println!(
        "decoded {n} points ({:.1} MB) in {:.3}s: {:.2} M points/s, {:.0} MB/s (best of 5)",
        body.len() as f64 / 1e6,
        best,
        n as f64 / best / 1e6,
        body.len() as f64 / best / 1e6
    );
}
