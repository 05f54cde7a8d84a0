//! Stable-Rust smoke fuzzing: runs `check_lineproto_decode` on seeded mutations of the
//! seed corpus for a bounded number of iterations, then reports what it did.
//!
//! `cargo run --release --bin smoke -- [ITERATIONS] [SEED] [SEED_DIR]`
//! (defaults: 200000, 1, `fuzz/corpus/lineproto_decode`). Exits non-zero on a finding,
//! after writing the input to `fuzz/artifacts/lineproto_decode/smoke-crash-*`.

use inferwatt_fuzz::{check_lineproto_decode, mutate, Rng};
use std::panic;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let iterations: u64 = match args.first().map(|s| s.parse()) {
        None => 200_000,
        Some(Ok(n)) => n,
        Some(Err(_)) => return usage(&args[0], "ITERATIONS"),
    };
    let seed: u64 = match args.get(1).map(|s| s.parse()) {
        None => 1,
        Some(Ok(n)) => n,
        Some(Err(_)) => return usage(&args[1], "SEED"),
    };
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = args
        .get(2)
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("corpus/lineproto_decode"));
    let seeds = match read_seeds(&dir) {
        Ok(seeds) if !seeds.is_empty() => seeds,
        Ok(_) => {
            eprintln!(
                "no seed files in '{}'; add some or pass SEED_DIR",
                dir.display()
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!(
                "cannot read seed directory '{}': {e}; pass SEED_DIR",
                dir.display()
            );
            return ExitCode::FAILURE;
        }
    };

    // Seeds first, unmutated: they must hold the property too.
    let mut seeds_accepted = 0;
    for s in &seeds {
        match run_one(s, &manifest) {
            Ok(0) => {}
            Ok(_) => seeds_accepted += 1,
            Err(code) => return code,
        }
    }
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let (mut accepted, mut points) = (0u64, 0u64);
    for _ in 0..iterations {
        let input = mutate(&mut rng, &seeds);
        match run_one(&input, &manifest) {
            Ok(0) => {}
            Ok(n) => {
                accepted += 1;
                points += n as u64;
            }
            Err(code) => return code,
        }
    }
    println!(
        "smoke lineproto_decode: {iterations} inputs from {} seeds ({seeds_accepted} of them \
         valid; seed {seed}) in {:.1}s, {accepted} accepted ({points} points), no findings",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

fn run_one(input: &[u8], manifest: &std::path::Path) -> Result<usize, ExitCode> {
    panic::catch_unwind(|| check_lineproto_decode(input)).map_err(|_| {
        let dir = manifest.join("artifacts/lineproto_decode");
        let path = dir.join(format!("smoke-crash-{:016x}", fnv1a(input)));
        match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input)) {
            Ok(()) => eprintln!("finding: input saved to '{}'", path.display()),
            Err(e) => eprintln!("finding: input {input:?} (could not save it: {e})"),
        }
        ExitCode::FAILURE
    })
}

fn read_seeds(dir: &std::path::Path) -> std::io::Result<Vec<Vec<u8>>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.sort();
    paths
        .iter()
        .filter(|p| p.is_file())
        .map(std::fs::read)
        .collect()
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn usage(value: &str, what: &str) -> ExitCode {
    eprintln!("{what} '{value}' is not a number; usage: smoke [ITERATIONS] [SEED] [SEED_DIR]");
    ExitCode::FAILURE
}
