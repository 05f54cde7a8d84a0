//! `inferwatt-collector`: parses the command line, sets up logging, loads the config and
//! runs `serve`, `token create` or `import`. All logic lives in the library.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use inferwatt_collector::config::Config;
use inferwatt_collector::ingest::{auth, import, parse_precision};
use inferwatt_collector::store::{retention, Store};
use inferwatt_collector::{now_ns, server};

#[derive(Parser)]
#[command(
    name = "inferwatt-collector",
    version,
    about = "inferwatt collector: ingest, store and report the energy, carbon and water of AI inference"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the write API, /metrics and /healthz.
    Serve {
        /// Config file (TOML); defaults apply without one.
        #[arg(long, env = "INFERWATT_COLLECTOR_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Manage write tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Import a line-protocol file (plain or gzip) into the database, all or nothing.
    Import {
        /// The file.
        file: PathBuf,
        /// Timestamp precision of the file: ns, us, ms or s.
        #[arg(long, default_value = "ns")]
        precision: String,
        /// Database file (default: the config's `db_path`).
        #[arg(long)]
        db: Option<PathBuf>,
        /// Config file (TOML).
        #[arg(long, env = "INFERWATT_COLLECTOR_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token bound to a site and host, store its hash, print it once.
    Create {
        /// The `site` tag the token may write.
        #[arg(long)]
        site: String,
        /// The `host` tag the token may write, or `*` for every host of the site.
        #[arg(long)]
        host: String,
        /// Database file (default: the config's `db_path`).
        #[arg(long)]
        db: Option<PathBuf>,
        /// Config file (TOML).
        #[arg(long, env = "INFERWATT_COLLECTOR_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn load(config: Option<PathBuf>) -> anyhow::Result<Config> {
    Ok(match config {
        Some(path) => Config::load(&path)?,
        None => Config::default(),
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve { config } => {
            let config = load(config)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(server::serve(config))?;
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    site,
                    host,
                    db,
                    config,
                },
        } => {
            anyhow::ensure!(
                !site.is_empty() && !host.is_empty(),
                "--site and --host must not be empty (use --host '*' for every host of the site)"
            );
            let config = load(config)?;
            let db = db.unwrap_or(config.db_path);
            let store = Store::open(&db)?;
            let token = auth::generate_token()?;
            let hash = auth::hash_token(&token);
            store.add_token(&hash, &site, &host, now_ns())?;
            eprintln!(
                "token for site '{site}' host '{host}' stored (sha256 {hash}) in '{}'; it is shown only once:",
                db.display()
            );
            println!("{token}");
        }
        Command::Import {
            file,
            precision,
            db,
            config,
        } => {
            let config = load(config)?;
            let precision = parse_precision(Some(&precision))?;
            let db = db.unwrap_or(config.db_path);
            let store = Store::open(&db)?;
            let min = retention::raw_cutoff_ns(now_ns(), config.raw_retention_days);
            let o = import::import_file(&store, &file, precision, min)?;
            println!(
                "imported '{}': {} points written, {} duplicates ignored ({} with different values), {} older than the raw retention skipped",
                file.display(),
                o.written,
                o.duplicates,
                o.conflicts,
                o.expired
            );
        }
    }
    Ok(())
}
