//! `nvml-sim`: command-line access to the simulator's ground truth.
//!
//! `nvml-sim truth --scenario F --from-unix-ms A --to-unix-ms B` prints the true energy
//! per GPU and per process over [A, B] as JSON (`nvml_sim::Truth`), for peers that are
//! not written in Rust.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nvml_sim::Scenario;

#[derive(Parser)]
#[command(
    name = "nvml-sim",
    version,
    about = "Ground truth of the simulated NVML driver"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the true energy per GPU and per process over a window, as JSON.
    Truth {
        /// Scenario file (the one FAKE_NVML_SCENARIO names).
        #[arg(long)]
        scenario: PathBuf,
        /// Window start, Unix milliseconds.
        #[arg(long)]
        from_unix_ms: i64,
        /// Window end, Unix milliseconds.
        #[arg(long)]
        to_unix_ms: i64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Truth {
            scenario,
            from_unix_ms,
            to_unix_ms,
        } => {
            let truth = Scenario::load(&scenario)
                .and_then(|s| s.truth_unix_ms(from_unix_ms, to_unix_ms))
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::to_string_pretty(&t).map_err(|e| e.to_string()));
            match truth {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("nvml-sim: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
