//! `inferwatt-agent`: parse the command line, start logging, load the config, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use inferwatt_agent::config::Config;

/// Measures the energy, emissions and water of each AI model served on this host's
/// GPUs, through NVML.
#[derive(Parser)]
#[command(
    name = "inferwatt-agent",
    version,
    after_help = "Examples:\n  inferwatt-agent check\n  inferwatt-agent run --config /etc/inferwatt/agent.toml\n  INFERWATT_NVML_LIB=/opt/nvidia/libnvidia-ml.so.1 inferwatt-agent check\n\nExit codes: 0 success, 1 runtime error, 2 bad command line or configuration, 3 NVML not available."
)]
struct Cli {
    /// Configuration file (TOML); without it, every key takes its default.
    #[arg(long, short, global = true, env = "INFERWATT_AGENT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Sample the GPUs and publish (the default).
    #[command(
        after_help = "Examples:\n  inferwatt-agent run --config /etc/inferwatt/agent.toml\n  INFERWATT_LOG=debug inferwatt-agent run\n\nStops cleanly on SIGTERM or SIGINT."
    )]
    Run,
    /// Show what the agent finds on this host: GPUs, processes and their models,
    /// which NVML functions work, and what it would ship.
    #[command(
        after_help = "Examples:\n  inferwatt-agent check\n  inferwatt-agent check --config agent.toml\n  INFERWATT_NVML_LIB=/usr/lib64/libnvidia-ml.so.1 inferwatt-agent check"
    )]
    Check,
    /// Print the example configuration, every key with its default.
    #[command(
        after_help = "Example:\n  inferwatt-agent example-config > /etc/inferwatt/agent.toml"
    )]
    ExampleConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("INFERWATT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let command = cli.command.unwrap_or(Command::Run);
    if let Command::ExampleConfig = command {
        print!("{}", Config::example());
        return ExitCode::SUCCESS;
    }
    let cfg = match &cli.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("inferwatt-agent: {e}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    let lib = inferwatt_agent::sources::nvml::library_path(cfg.nvml.library.as_deref());
    let reader = match inferwatt_agent::sources::nvml::NvmlReader::open(&lib) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("inferwatt-agent: {e}");
            return ExitCode::from(3);
        }
    };
    let result = match command {
        Command::Check => inferwatt_agent::check::run(cfg, reader).map_err(anyhow::Error::from),
        _ => inferwatt_agent::pipeline::run(cfg, reader).map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inferwatt-agent: {e:#}");
            ExitCode::from(1)
        }
    }
}
