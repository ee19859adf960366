//! `maestro`: the one entry point. `run` the engine, see it work with `demo`, check a data dir
//! with `verify`, read it with `export`, measure it with `bench`.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use maestro::settings::{self, ConfigArgs};
use maestro_engine::config::EngineConfig;
use maestro_engine::status::Health;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// The engine allocates and frees small buffers per entry on several threads; mimalloc does that
/// markedly faster than glibc here (measured with `maestro bench ingest`, see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "maestro",
    version,
    about = "The Maestro event engine: Redis Streams into an append-only log, pure handlers, replayable projections."
)]
struct Cli {
    /// Log format on stderr. Env: MAESTRO_LOG_FORMAT.
    #[arg(long, value_enum, default_value = "text", env = "MAESTRO_LOG_FORMAT", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ExportFormat {
    Jsonl,
    Proto,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum DeployCommand {
    /// The StatefulSet (one pod per member, each `run --member <ordinal>/N` on its own volume),
    /// its headless Service and PodDisruptionBudget, as one multi-document YAML.
    Manifests {
        #[arg(long, value_name = "N", default_value_t = 1)]
        members: u32,
    },
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the engine until SIGINT or SIGTERM.
    Run {
        #[command(flatten)]
        config: ConfigArgs,
        /// Serve /healthz, /readyz, /status and /metrics here. Env: MAESTRO_HTTP.
        #[arg(long, value_name = "ADDR", env = "MAESTRO_HTTP")]
        http: Option<SocketAddr>,
        /// Start even though the log is shorter than, or disagrees with, one of its anchors
        /// (the data dir's HEAD, the anchor file, the Redis anchor key): records were lost.
        /// The choice is recorded in the log, naming what disagreed. See README, "When the
        /// engine refuses its log".
        #[arg(long)]
        accept_truncated_log: bool,
    },
    /// Move entries from the unpartitioned stream keys producers write into their partitions
    /// (`--partitions P`, at least 2), each exactly once, until SIGINT or SIGTERM. One router
    /// at a time holds the router's lease; another waits on it.
    Route {
        #[command(flatten)]
        config: ConfigArgs,
        /// Serve /healthz, /readyz, /status and /metrics here. Env: MAESTRO_HTTP.
        #[arg(long, value_name = "ADDR", env = "MAESTRO_HTTP")]
        http: Option<SocketAddr>,
    },
    /// Start a private Redis (unless MAESTRO_REDIS_URL answers), run the engine, publish a
    /// realistic mix on all streams, and print what was ingested.
    Demo(maestro::demo::DemoArgs),
    /// Print log records with their chain hashes, as JSON lines or length-delimited protobuf
    /// (`maestro.log.v1.ExportedRecord`); works with no Redis running.
    Export {
        #[arg(long, value_name = "DIR", default_value = "./maestro-data")]
        data_dir: PathBuf,
        /// First record: a seq, or a time (the first record at or after it).
        #[arg(long, value_name = "SEQ|TIME")]
        from: Option<maestro::replay_cli::At>,
        /// Last record: a seq, or a time (the last record at or before it). Default: the head.
        #[arg(long, value_name = "SEQ|TIME")]
        to: Option<maestro::replay_cli::At>,
        /// Only entries of this stream key.
        #[arg(long, value_name = "KEY")]
        stream: Option<String>,
        /// Only entries naming this tenant (`tenant_id`).
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
    },
    /// Check every record's checksum and the hash chain, the head against anchors kept outside
    /// the data dir, the dedup index and cursors against the records, and that a replay of the
    /// log gives every projection its live state hash. Exit non-zero naming the first bad seq,
    /// index entry or projection.
    Verify {
        /// The engine's settings and `--data-dir` (a replay needs the streams it ran with).
        #[command(flatten)]
        config: ConfigArgs,
        /// The engine's `anchor_file`: its `<seq> <hash>` must be in the log.
        #[arg(long, value_name = "FILE")]
        anchor_file: Option<PathBuf>,
        /// A Redis holding the engine's anchor key (`maestro:engine:<group>:anchor:<consumer>`).
        #[arg(long, value_name = "URL")]
        anchor_redis: Option<String>,
        /// Only the checksums, chain and anchors: no index check, no replay.
        #[arg(long)]
        chain_only: bool,
        /// A Redis holding the streams: every own output the log keeps by reference is compared
        /// with its entry there (entries Redis no longer holds are counted, not failed).
        #[arg(long, value_name = "URL")]
        outputs_redis: Option<String>,
    },
    /// Print every Kubernetes object of an execution's environment as one multi-document YAML,
    /// for `kubectl apply -f -` (rendered again from the request in the log).
    Manifests {
        /// The execution's id (from its request, or derived from its entry).
        execution_id: String,
        #[arg(long, value_name = "DIR", default_value = "./maestro-data")]
        data_dir: PathBuf,
    },
    /// Kubernetes objects to run the engine: `maestro deploy manifests --members N`.
    Deploy {
        #[command(subcommand)]
        which: DeployCommand,
    },
    /// Offline tools that replay the log (no Redis needed; the engine must not hold the dir).
    Replay {
        #[command(subcommand)]
        which: ReplayCommand,
    },
    /// Benchmarks that need a Redis: `maestro bench ingest`.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ReplayCommand {
    /// Rebuild every projection from the log into a scratch store and compare its state hash
    /// with the live one; exit non-zero naming each projection that differs.
    Check {
        /// The engine's settings (streams, admins) and `--data-dir`: a replay must see the
        /// configuration the engine ran with.
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Rebuild the template history repository from the log into DIR and compare its branch
    /// heads with the live `<data dir>/history.git`.
    History {
        #[command(flatten)]
        config: ConfigArgs,
        /// Where to write the rebuilt bare repository (must not exist yet).
        #[arg(long, value_name = "DIR")]
        into: PathBuf,
    },
    /// Rebuild projections (all, or one) from the log into a new generation of the store, then
    /// make it live with one write; prints whether each state hash changed.
    Rebuild {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        projection: Option<String>,
    },
    /// Replay one tenant's records alone into a new data dir (projections and template
    /// history), and compare the tenant's keys and history branch with live.
    Sandbox {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        tenant: String,
        #[arg(long, value_name = "DIR")]
        into: PathBuf,
    },
    /// Print a projection's state as canonical JSON, as of a log position or time (default:
    /// the head), optionally only one tenant's keys; `--list` prints the projection names.
    State {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        projection: Option<String>,
        /// A seq, or a time like 2026-11-28T10:00:00Z (the last record at or before it).
        #[arg(long, value_name = "SEQ|TIME", conflicts_with = "until")]
        at: Option<maestro::replay_cli::At>,
        /// A time: the state after the last record at or before it.
        #[arg(long, value_name = "TIME")]
        until: Option<maestro::replay_cli::At>,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        list: bool,
        /// Replay from the log's first record instead of starting from the live store's state.
        #[arg(long)]
        from_log: bool,
    },
    /// The keys that differ between two log positions or times of this data dir, or between
    /// two data dirs (give their paths): one JSON line per key, with before and after.
    Diff {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long, value_name = "SEQ|TIME|DIR")]
        from: String,
        #[arg(long, value_name = "SEQ|TIME|DIR")]
        to: String,
        #[arg(long)]
        projection: Option<String>,
    },
    /// The records that wrote a key of a projection (the last one produced its current value),
    /// as JSON lines. Keys as `replay state` prints them.
    Explain {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        projection: String,
        #[arg(long)]
        key: String,
        #[arg(long, value_name = "SEQ|TIME")]
        at: Option<maestro::replay_cli::At>,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Raw baseline (XREADGROUP -> sled batch -> flush -> XACK) against the engine, same run.
    Ingest(maestro::bench::IngestArgs),
    /// Rebuild throughput of every projection from a realistic log, and restart time.
    Replay(maestro::bench_replay::ReplayArgs),
    /// The measured half of `bench replay`, run by it as a child process.
    #[command(hide = true)]
    ReplayWorker(maestro::bench_replay::ReplayWorkerArgs),
    /// Engine memory and create throughput with a large template catalogue (default 100,000).
    Catalogue(maestro::bench_catalogue::CatalogueArgs),
    /// Good template requests beside a flood of malformed entries (S5): latency before and during.
    Flood(maestro::flood::FloodArgs),
    /// Engine peak RSS with large entries queued before it starts (VmHWM of `maestro run`).
    Memory(maestro::bench_memory::MemoryArgs),
    /// Template reads end to end against a loop of the old worker's shape, and data-dir growth.
    Templates(maestro::bench_templates::TemplatesArgs),
    /// Open-loop template reads at a fixed rate: latency from the scheduled send (appendfsync always).
    Latency(maestro::bench_latency::LatencyArgs),
    /// One side of `bench ingest`, run by it as a child process.
    #[command(hide = true)]
    IngestWorker(maestro::bench::WorkerArgs),
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// A shutdown channel that fires on SIGINT or SIGTERM.
fn shutdown_on_signals() -> anyhow::Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = watch::channel(false);
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: finishing the current batch"),
            _ = int.recv() => tracing::info!("SIGINT: finishing the current batch"),
        }
        let _ = tx.send(true);
    });
    Ok(rx)
}

async fn run(
    config: ConfigArgs,
    http: Option<SocketAddr>,
    accept_truncated_log: bool,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (config, domain_settings) = settings::load_with_domains(&config)?;
    let config = EngineConfig { accept_truncated_log, ..config };
    let status = Arc::new(Health::default());
    if let Some(addr) = http {
        let handle = maestro::metrics::install()?;
        maestro::metrics::register(&config);
        let (bound, _task) = maestro_engine::http::serve(addr, status.clone(), Some(handle), shutdown.clone()).await?;
        tracing::info!(%bound, "serving /healthz /readyz /status /metrics /state/<projection>");
        *status.http.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(bound);
    }
    maestro_engine::runtime::run(config.clone(), maestro::domains(&config, &domain_settings), status, shutdown).await?;
    Ok(())
}

async fn route(config: ConfigArgs, http: Option<SocketAddr>, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let config = settings::load(&config)?;
    let status = Arc::new(Health::default());
    if let Some(addr) = http {
        let handle = maestro::metrics::install()?;
        maestro::metrics::register(&config);
        let (bound, _task) = maestro_engine::http::serve(addr, status.clone(), Some(handle), shutdown.clone()).await?;
        tracing::info!(%bound, "serving /healthz /readyz /status /metrics");
    }
    let routing = maestro::domains::routing(&config);
    maestro_engine::router::route(config, routing, status, shutdown).await?;
    Ok(())
}

fn export(
    data_dir: PathBuf,
    range: (Option<maestro::replay_cli::At>, Option<maestro::replay_cli::At>),
    stream: Option<String>,
    tenant: Option<String>,
    format: ExportFormat,
) -> anyhow::Result<()> {
    use maestro_replay::export::{Filter, Format};
    let (_dir, log) = maestro_replay::open_log(&data_dir)?;
    let from = range.0.map_or(Ok(1), |at| at.first_seq(&log))?;
    let to = range.1.map(|at| at.last_seq(&log)).transpose()?;
    let filter = Filter { from, to, stream, tenant };
    let format = match format {
        ExportFormat::Jsonl => Format::Jsonl,
        ExportFormat::Proto => Format::Proto,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let written = maestro_replay::export::export(&log, &filter, format, &mut out)?;
    std::io::Write::flush(&mut out)?;
    eprintln!("exported {written} records");
    Ok(())
}

fn verify(
    config: ConfigArgs,
    anchor_file: Option<PathBuf>,
    redis: (Option<String>, Option<String>),
    chain_only: bool,
) -> anyhow::Result<()> {
    let (anchor_redis, outputs_redis) = redis;
    let (config, dir, log, checks) = maestro::replay_cli::open_checking_segments(&config)?;
    let report = maestro_replay::verify_log_checked(&log, &checks)?;
    println!(
        "ok: {} records, checksums and chain intact; head seq {} hash {}",
        report.records, report.head_seq, report.head_hash
    );
    let check = |text: &str, what: &str| -> anyhow::Result<()> {
        let (seq, hash) = text.trim().split_once(' ').with_context(|| format!("{what} is not `<seq> <hash>`"))?;
        let seq: u64 = seq.parse().with_context(|| format!("{what}: seq {seq:?}"))?;
        log.check_point(seq, hash, what)?;
        println!("ok: the log holds record {seq} as the {what} names it");
        Ok(())
    };
    if let Some(file) = &anchor_file {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        check(&text, &format!("anchor file {}", file.display()))?;
    }
    if let Some(url) = &anchor_redis {
        let file = dir.path().join("consumer");
        let consumer = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        let consumer = consumer.trim();
        let key = config.anchor_key(consumer);
        let mut conn = redis::Client::open(url.as_str())?.get_connection()?;
        let text: Option<String> = redis::cmd("GET").arg(&key).query(&mut conn)?;
        check(&text.with_context(|| format!("no anchor at {key} in {url}"))?, &format!("redis anchor {key}"))?;
    }
    if let Some(url) = &outputs_redis {
        let mut conn = redis::Client::open(url.as_str())?.get_connection()?;
        let found = maestro::verify_outputs::compare(&log, &mut conn)?;
        println!(
            "ok: {} own outputs kept by reference equal their entries in {url}; {} no longer there",
            found.equal, found.gone
        );
    }
    if chain_only {
        return Ok(());
    }
    let entries = maestro_replay::verify_indexes(&log)?;
    println!("ok: dedup index and stream cursors agree with the {entries} entry records");
    let scratch = tempfile::tempdir()?;
    let handlers = maestro::handlers(&config);
    let comparisons = maestro_replay::rebuild::replay_equals_live(&log, &config, handlers, scratch.path())?;
    for c in &comparisons {
        anyhow::ensure!(
            c.equal(),
            "projection {}: live state hash {} at seq {}, a replay of the log gives {}{}",
            c.projection,
            c.live,
            c.position,
            c.rebuilt,
            if c.kept_matches { "" } else { "; its kept digest does not match its stored state" }
        );
    }
    let names: Vec<&str> = comparisons.iter().map(|c| c.projection.as_str()).collect();
    println!("ok: a replay of the log gives the live state hash of {}", names.join(", "));
    Ok(())
}

/// Reports a panic as one line on stderr. Panics inside dependencies that the engine catches
/// (sled on damaged files) still show up here, so tests can assert that none happened.
fn report_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = maestro_engine::error::panic_text(info.payload());
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("internal panic at {location}: {message}");
    }));
}

#[tokio::main]
async fn main() {
    report_panics();
    // Signal handlers first, so that a SIGTERM even during start-up is a clean stop.
    let shutdown = match shutdown_on_signals() {
        Ok(shutdown) => shutdown,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::exit(1);
        }
    };
    let cli = Cli::parse();
    if let Err(error) = maestro_engine::failpoint::configure_from_env() {
        eprintln!("error: {error}");
        std::process::exit(2);
    }
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Run { config, http, accept_truncated_log } => run(config, http, accept_truncated_log, shutdown).await,
        Command::Route { config, http } => route(config, http, shutdown).await,
        Command::Demo(args) => maestro::demo::demo(args).await,
        Command::Manifests { execution_id, data_dir } => maestro::manifests_cli::print(&data_dir, &execution_id),
        Command::Deploy { which: DeployCommand::Manifests { members } } => maestro::deploy_cli::print(members),
        Command::Export { data_dir, from, to, stream, tenant, format } => {
            export(data_dir, (from, to), stream, tenant, format)
        }
        Command::Verify { config, anchor_file, anchor_redis, chain_only, outputs_redis } => {
            // sled panics on some damaged files where a read meets them; a damaged data dir must
            // be reported (exit 1), never crash the verifier.
            let run =
                std::panic::AssertUnwindSafe(|| verify(config, anchor_file, (anchor_redis, outputs_redis), chain_only));
            std::panic::catch_unwind(run).unwrap_or_else(|panic| {
                let text = maestro_engine::error::panic_text(panic.as_ref());
                Err(anyhow::anyhow!("the data dir is damaged: reading it failed with: {text}"))
            })
        }
        Command::Replay { which: ReplayCommand::Check { config } } => maestro::replay_cli::check(config),
        Command::Replay { which: ReplayCommand::History { config, into } } => {
            maestro::replay_cli::history(config, into)
        }
        Command::Replay { which: ReplayCommand::Sandbox { config, tenant, into } } => {
            maestro::replay_cli::sandbox(config, tenant, into)
        }
        Command::Replay { which: ReplayCommand::Rebuild { config, projection } } => {
            maestro::replay_cli::rebuild(config, projection)
        }
        Command::Replay { which: ReplayCommand::State { config, projection, at, until, tenant, list, from_log } } => {
            let what = maestro::replay_cli::StateQuery { projection, at: at.or(until), tenant, from_log };
            maestro::replay_cli::state(config, what, list)
        }
        Command::Replay { which: ReplayCommand::Diff { config, from, to, projection } } => {
            maestro::replay_cli::diff(config, from, to, projection)
        }
        Command::Replay { which: ReplayCommand::Explain { config, projection, key, at } } => {
            maestro::replay_cli::explain(config, projection, key, at)
        }
        Command::Bench { which: BenchCommand::Ingest(args) } => maestro::bench::ingest(args).await,
        Command::Bench { which: BenchCommand::Replay(args) } => maestro::bench_replay::replay(args),
        Command::Bench { which: BenchCommand::ReplayWorker(args) } => maestro::bench_replay::worker(args),
        Command::Bench { which: BenchCommand::Catalogue(args) } => maestro::bench_catalogue::catalogue(args),
        Command::Bench { which: BenchCommand::Flood(args) } => maestro::flood::bench(args),
        Command::Bench { which: BenchCommand::Memory(args) } => maestro::bench_memory::memory(args),
        Command::Bench { which: BenchCommand::Templates(args) } => maestro::bench_templates::templates(args),
        Command::Bench { which: BenchCommand::Latency(args) } => maestro::bench_latency::latency(args),
        Command::Bench { which: BenchCommand::IngestWorker(args) } => maestro::bench::worker(args).await,
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
