//! `inferwatt-collector`: parses the command line, sets up logging, loads the config and
//! runs `serve`, `token create`, `import`, `report` or `export`. All logic lives in the
//! library.
//!
//! Exit codes: 0 success; 1 the command failed (the message on stderr names the value
//! and the fix: unreadable database or factors file, unknown grid zone, no data, bad
//! input file); 2 the command line is wrong (unknown option, bad `--from`/`--to`/
//! `--group`/`--format` value).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use inferwatt_collector::config::Backend;
use inferwatt_collector::config::Config;
use inferwatt_collector::ingest::csv_import::CsvFormat;
use inferwatt_collector::ingest::{auth, import, parse_precision};
use inferwatt_collector::report::Format;
use inferwatt_collector::reporting::{self, ExportFormat, FactorsChoice, ReportRequest};
use inferwatt_collector::store::Store;
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
    #[command(
        after_help = "Examples:\n  inferwatt-collector serve --config /etc/inferwatt/collector.toml\n  INFERWATT_COLLECTOR_CONFIG=collector.toml inferwatt-collector serve\n\nStops cleanly on SIGTERM or SIGINT. Exit codes: 0 success, 1 failure, 2 bad command line."
    )]
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
    /// Compute a report of a period: energy, emissions, water and intensities per model,
    /// site and country, with every factor and a digest of the input data.
    #[command(after_help = REPORT_EXAMPLES)]
    Report {
        #[command(flatten)]
        args: ReportArgs,
        /// Output format: json, csv, md (markdown) or html.
        #[arg(long, default_value = "json", value_parser = parse_format)]
        format: Format,
    },
    /// Export a period in formats other tools read: a Hugging Face model card block,
    /// a CodeCarbon emissions.csv, or an Impact Framework manifest.
    #[command(after_help = EXPORT_EXAMPLES)]
    Export {
        #[command(flatten)]
        args: ReportArgs,
        /// Output format: hf-card (needs --model), codecarbon or impact-framework.
        #[arg(long, value_parser = parse_export)]
        format: ExportFormat,
        /// The model of a model card (as the agents name it).
        #[arg(long, required_if_eq("format", "hf-card"))]
        model: Option<String>,
    },
    /// Import a line-protocol file (plain or gzip) into the database, all or nothing.
    #[command(after_help = IMPORT_EXAMPLES)]
    Import {
        /// The file.
        file: PathBuf,
        /// File format: lp (line protocol, plain or gzip), codecarbon (emissions.csv) or
        /// nvidia-smi (CSV log of --query-gpu=timestamp,index,uuid,name,power.draw).
        #[arg(long, default_value = "lp", value_parser = ["lp", "codecarbon", "nvidia-smi"])]
        format: String,
        /// The `site` the CSV's points belong to (codecarbon, nvidia-smi).
        #[arg(long, required_if_eq_any([("format", "codecarbon"), ("format", "nvidia-smi")]))]
        site: Option<String>,
        /// The `host` the CSV's points belong to (codecarbon, nvidia-smi).
        #[arg(long, required_if_eq_any([("format", "codecarbon"), ("format", "nvidia-smi")]))]
        host: Option<String>,
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

/// Period, grouping and factors shared by `report` and `export`.
#[derive(clap::Args)]
struct ReportArgs {
    /// Start of the period (exclusive), RFC 3339 UTC like 2026-11-28T00:00:00Z or Unix
    /// seconds; default: the first stored hour.
    #[arg(long, value_parser = parse_from)]
    from: Option<i64>,
    /// End of the period (inclusive), same forms; default: the end of the last stored hour.
    #[arg(long, value_parser = parse_to)]
    to: Option<i64>,
    /// Breakdowns: comma-separated model, site, country, namespace, workload (default: all; namespace and workload when anything ran in a pod).
    #[arg(long, default_value = "", value_parser = parse_group_arg)]
    group: GroupArg,
    /// Factors file (TOML, see docs): overrides the config's [factors]; with neither,
    /// the agents' reported PUE/WUE and built-in grid intensities by zone or country.
    #[arg(long)]
    factors: Option<PathBuf>,
    /// Merge usage-by-country rows with fewer requests than this into one 'other' row.
    #[arg(long, default_value_t = 0)]
    min_count: u64,
    /// Write the output to FILE instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Database file (default: the config's `db_path`).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Config file (TOML).
    #[arg(long, env = "INFERWATT_COLLECTOR_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Clone)]
struct GroupArg(Vec<inferwatt_collector::indicators::GroupBy>);

fn parse_from(s: &str) -> Result<i64, String> {
    reporting::parse_time(s, "--from").map_err(|e| e.to_string())
}
fn parse_to(s: &str) -> Result<i64, String> {
    reporting::parse_time(s, "--to").map_err(|e| e.to_string())
}
fn parse_group_arg(s: &str) -> Result<GroupArg, String> {
    reporting::parse_group(s)
        .map(GroupArg)
        .map_err(|e| e.to_string())
}
fn parse_format(s: &str) -> Result<Format, String> {
    s.parse::<Format>().map_err(|e| e.to_string())
}
fn parse_export(s: &str) -> Result<ExportFormat, String> {
    s.parse::<ExportFormat>()
}

const REPORT_EXAMPLES: &str = "Examples:
  inferwatt-collector report --from 2026-11-01T00:00:00Z --to 2026-12-01T00:00:00Z --format md
  inferwatt-collector report --group model,country --format csv --out nov.csv
  inferwatt-collector report --from 1795824000 --to 1796428800 --factors audit.toml --format json
  inferwatt-collector report --db /var/lib/inferwatt/inferwatt.db --format html --out report.html

Exit codes: 0 success, 1 failure (message on stderr), 2 bad command line.";

const EXPORT_EXAMPLES: &str = "Examples:
  inferwatt-collector export --model meta-llama/Llama-3.1-8B --format hf-card
  inferwatt-collector export --format codecarbon --out emissions.csv
  inferwatt-collector export --format impact-framework --from 2026-11-01T00:00:00Z --to 2026-12-01T00:00:00Z

Exit codes: 0 success, 1 failure (message on stderr), 2 bad command line.";

const IMPORT_EXAMPLES: &str = "Examples:
  inferwatt-collector import batch.lp.gz
  inferwatt-collector import --precision s old.lp --db /var/lib/inferwatt/inferwatt.db
  inferwatt-collector import emissions.csv --format codecarbon --site lab --host ws1
  inferwatt-collector import power.csv --format nvidia-smi --site lab --host ws1

Data of any age imports; points already stored (same measurement, tags and timestamp)
are skipped, and a file imported before is refused whole (its SHA-256 is kept).

Exit codes: 0 every point imported, 1 nothing imported (message names the line and column),
2 bad command line, 3 some or all points skipped (the message says how many and why).";

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token bound to a site and host, store its hash, print it once.
    #[command(
        after_help = "Examples:\n  inferwatt-collector token create --site fra1 --host gpu-host-1\n  inferwatt-collector token create --site fra1 --host '*' --db /var/lib/inferwatt/inferwatt.db\n\nThe token goes to stdout (once), the note about it to stderr. Exit codes: 0 success, 1 failure, 2 bad command line."
    )]
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

/// The factors a report uses: `--factors`, else the config's `[factors]`, else built-in.
fn factors_choice(factors: Option<&Path>, config: &Config) -> anyhow::Result<FactorsChoice> {
    Ok(match (factors, &config.factors) {
        (Some(path), _) => FactorsChoice::load(path)?,
        (None, Some(f)) => FactorsChoice::from_config(f.clone(), &config.base_dir),
        (None, None) => FactorsChoice::builtin(),
    })
}

/// Builds the report of `args` from the database.
fn report_of(args: &ReportArgs) -> anyhow::Result<inferwatt_collector::indicators::Report> {
    let config = load(args.config.clone())?;
    let req = ReportRequest {
        from_ns: args.from,
        to_ns: args.to,
        group: args.group.0.clone(),
        min_count: args.min_count,
    };
    // `[store] backend = "victoriametrics"` (unless --db names a SQLite file).
    if let (None, Some(cfg)) = (&args.db, config.store.victoria()) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let vm = inferwatt_collector::store::VictoriaStore::new(&cfg, rt.handle().clone())?;
        rt.block_on(vm.check_dedup())?;
        let factors = factors_choice(args.factors.as_deref(), &config)?;
        let report = reporting::build_report(&vm, &req, &factors)?;
        rt.shutdown_background();
        return Ok(report);
    }
    let db = args.db.clone().unwrap_or_else(|| config.db_path.clone());
    anyhow::ensure!(
        db.exists(),
        "database '{}' does not exist; give --db PATH or set 'db_path' in the config",
        db.display()
    );
    let store = Store::open(&db)?;
    let factors = factors_choice(args.factors.as_deref(), &config)?;
    Ok(reporting::build_report(&store, &req, &factors)?)
}

/// Writes `text` to `out`, or stdout.
fn emit(out: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match out {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("cannot write '{}'; check --out", path.display()))?,
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes())?;
            stdout.flush()?;
        }
    }
    Ok(())
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
            if db.is_none() && config.store.backend == Backend::VictoriaMetrics {
                // Stateless collectors: the token lives in every collector's config.
                let token = auth::generate_token()?;
                let hash = auth::hash_token(&token);
                eprintln!(
                    "the store is VictoriaMetrics, so tokens come from the config: add this to every collector's config (it is shown only once):\n\n[[tokens]]\nsha256 = \"{hash}\"\nsite = \"{site}\"\nhost = \"{host}\"\n"
                );
                println!("{token}");
                return Ok(());
            }
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
        Command::Report { args, format } => {
            let spinner = progress_spinner("reading the period's rows and computing the report");
            let report = report_of(&args)?;
            let text = inferwatt_collector::report::render(&report, format)?;
            spinner.finish_and_clear();
            emit(args.out.as_deref(), &text)?;
        }
        Command::Export {
            args,
            format,
            model,
        } => {
            let spinner = progress_spinner("reading the period's rows and computing the export");
            let report = report_of(&args)?;
            let text = reporting::render_export(&report, format, model.as_deref().unwrap_or(""))?;
            spinner.finish_and_clear();
            emit(args.out.as_deref(), &text)?;
        }
        Command::Import {
            file,
            format,
            site,
            host,
            precision,
            db,
            config,
        } => {
            let config = load(config)?;
            let precision = parse_precision(Some(&precision))?;
            anyhow::ensure!(
                db.is_some() || config.store.backend != Backend::VictoriaMetrics,
                "import writes a SQLite file and this config's store is VictoriaMetrics; send the file to a collector instead (curl --data-binary @FILE -H 'Authorization: Token …' http://COLLECTOR/api/v2/write), or give --db to import into a SQLite file"
            );
            let db = db.unwrap_or(config.db_path);
            let store = Store::open(&db)?;
            let sha = {
                use sha2::Digest as _;
                let bytes = std::fs::read(&file)
                    .with_context(|| format!("cannot read '{}'", file.display()))?;
                hex::encode(sha2::Sha256::digest(&bytes))
            };
            if let Some(prior) = store.imported(&sha)? {
                eprintln!(
                    "'{}' was imported before (same SHA-256 {sha}, as '{}', {} points): all of its points were skipped, nothing written",
                    file.display(),
                    prior.path,
                    prior.points
                );
                std::process::exit(3);
            }
            let csv = match format.as_str() {
                "codecarbon" => Some(CsvFormat::CodeCarbon),
                "nvidia-smi" => Some(CsvFormat::NvidiaSmi),
                _ => None,
            };
            let bar = import_bar(&file);
            let o = match csv {
                None => import::import_file_with_progress(
                    &store,
                    &file,
                    precision,
                    &mut |done, total| {
                        bar.set_length(total as u64);
                        bar.set_position(done as u64);
                    },
                )?,
                Some(f) => import::import_csv_file(
                    &store,
                    &file,
                    f,
                    site.as_deref().unwrap_or(""),
                    host.as_deref().unwrap_or(""),
                )?,
            };
            bar.finish_and_clear();
            store.record_import(&sha, &file.display().to_string(), o.written, now_ns())?;
            println!(
                "imported '{}': {} points written",
                file.display(),
                o.written
            );
            if o.duplicates > 0 {
                eprintln!(
                    "'{}': {} of its {} points were skipped: already stored with the same measurement, tags and timestamp ({} of them with different values; the stored ones were kept)",
                    file.display(),
                    o.duplicates,
                    o.written + o.duplicates,
                    o.conflicts
                );
                std::process::exit(3);
            }
        }
    }
    Ok(())
}

/// A spinner on stderr for a step that can take a while; drawn only on a terminal.
fn progress_spinner(message: &'static str) -> indicatif::ProgressBar {
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(message);
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    spinner
}

/// The import's progress bar on stderr (points written of the file's total); drawn only
/// on a terminal.
fn import_bar(file: &std::path::Path) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} points ({eta} left)")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(format!("importing '{}'", file.display()));
    bar
}
