//! `maestro bench ingest`: the engine end to end against a raw baseline that does only the
//! irreducible work (XREADGROUP -> one sled batch -> flush + fsync -> XACK), on the same
//! entries, against the same private redis-server, in the same run. Each side runs in a child
//! process of its own (`maestro bench ingest-worker`), so that each peak RSS is its own.

use crate::redis_server::{RedisOptions, RedisServer};
use crate::traffic::{Message, Traffic, publish};
use anyhow::Context;
use maestro_effects::domains::DomainSettings;
use maestro_engine::config::EngineConfig;
use maestro_engine::source::parse_read_reply;
use maestro_engine::status::Health;
use maestro_schemas::StreamSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// One side of the benchmark, run as a child process by [`ingest`].
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// `raw`, `engine` (core: the stream_stats projection) or `engine-domains` (every handler).
    #[arg(long)]
    pub phase: String,
    #[arg(long)]
    pub redis_url: String,
    #[arg(long)]
    pub entries: u64,
    #[arg(long)]
    pub count: usize,
}

#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    /// Entries to measure (about 300 B each, spread over the nine streams).
    #[arg(long, default_value_t = 200_000)]
    pub entries: u64,
    /// XREADGROUP COUNT per stream, for both runs.
    #[arg(long, default_value_t = 100)]
    pub count: usize,
    /// Where the plots go: throughput and batch latency over the run, per side (SVG).
    #[arg(long, value_name = "DIR", default_value = "target/bench-plots")]
    pub plots: std::path::PathBuf,
}

/// What one run measured.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct RunFigures {
    pub events: u64,
    pub elapsed: Duration,
    pub batch_micros: Vec<u64>,
    pub peak_rss_kib: u64,
    /// (seconds since the start, entries or records done), for the throughput plot.
    #[serde(default)]
    pub progress: Vec<(f64, u64)>,
    /// Bytes of the data dir (the raw side's sled directory) at the end of the run.
    #[serde(default)]
    pub data_dir_bytes: u64,
}

impl RunFigures {
    pub fn per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        let mut sorted = self.batch_micros.clone();
        sorted.sort_unstable();
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted.get(index).copied().unwrap_or(0) as f64 / 1000.0
    }

    fn line(&self, name: &str) -> String {
        format!(
            "{name:<14} {:>9.0} events/s  {:>6} batches  batch p50 {:>6.2} ms  p99 {:>6.2} ms  peak RSS {:>5} MiB",
            self.per_second(),
            self.batch_micros.len(),
            self.percentile_ms(0.5),
            self.percentile_ms(0.99),
            self.peak_rss_kib / 1024
        )
    }
}

/// Bytes of the files under `path`, recursively (0 for what cannot be read).
pub fn dir_bytes(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Peak resident set of this process (VmHWM), in KiB.
pub fn peak_rss_kib() -> u64 {
    peak_rss_kib_of(std::process::id()).unwrap_or(0)
}

/// VmHWM of process `pid`, in KiB.
pub fn peak_rss_kib_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cores} cores, {cpu}")
}

fn prefill(url: &str, entries: u64) -> anyhow::Result<()> {
    let mut conn = redis::Client::open(url)?.get_connection()?;
    let mut traffic = Traffic::new(1, StreamSet::default());
    let mut i = 0;
    while i < entries {
        let chunk: Vec<Message> = (i..(i + 1000).min(entries)).map(|n| traffic.control_message(n)).collect();
        publish(&mut conn, &chunk)?;
        i += chunk.len() as u64;
    }
    Ok(())
}

/// The raw baseline: no decoding, no records, no handlers; just the I/O every design must do.
fn raw_baseline(url: &str, entries: u64, count: usize) -> anyhow::Result<RunFigures> {
    let streams: Vec<String> = StreamSet::default().all().into_iter().map(|(_, k)| k.to_string()).collect();
    let mut conn = redis::Client::open(url)?.get_connection()?;
    for stream in &streams {
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg("bench-raw")
            .arg("0")
            .arg("MKSTREAM")
            .query::<()>(&mut conn)?;
    }
    let dir = tempfile::tempdir()?;
    let db = sled::Config::new().path(dir.path()).cache_capacity(64 * 1024 * 1024).open()?;
    let db_file = std::fs::File::open(dir.path().join("db"))?;
    let started = Instant::now();
    let (mut done, mut batch_micros, mut progress) = (0u64, Vec::new(), Vec::new());
    while done < entries {
        let batch_start = Instant::now();
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP").arg("bench-raw").arg("raw").arg("COUNT").arg(count).arg("STREAMS").arg(&streams);
        for _ in &streams {
            read.arg(">");
        }
        let got = parse_read_reply(read.query::<redis::Value>(&mut conn)?)?;
        if got.is_empty() {
            anyhow::bail!("raw baseline ran dry after {done} of {entries} entries");
        }
        let mut batch = sled::Batch::default();
        let mut acks = redis::pipe();
        for entry in &got {
            let mut value = Vec::new();
            for (name, field) in entry.fields.iter().flatten() {
                value.extend_from_slice(name);
                value.extend_from_slice(field);
            }
            batch.insert([entry.stream.as_bytes(), &entry.id.to_be_bytes()].concat(), value);
            acks.cmd("XACK").arg(&entry.stream).arg("bench-raw").arg(entry.id.to_string()).ignore();
        }
        db.apply_batch(batch)?;
        db.flush()?;
        db_file.sync_data()?;
        acks.query::<()>(&mut conn)?;
        done += got.len() as u64;
        batch_micros.push(batch_start.elapsed().as_micros() as u64);
        progress.push((started.elapsed().as_secs_f64(), done));
    }
    let elapsed = started.elapsed();
    drop(db);
    let data_dir_bytes = dir_bytes(dir.path());
    Ok(RunFigures { events: done, elapsed, batch_micros, peak_rss_kib: peak_rss_kib(), progress, data_dir_bytes })
}

/// Records the engine writes for `entries` control messages: one per entry, plus, with the
/// domain handlers, the result and usage event of every template request (every ninth entry),
/// read back from the streams.
fn expected_records(entries: u64, domains: bool) -> u64 {
    if domains { entries + 2 * entries.div_ceil(9) } else { entries }
}

/// How often the engine's progress is sampled for the throughput plot.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

async fn engine_run(url: &str, entries: u64, count: usize, domains: bool) -> anyhow::Result<RunFigures> {
    let dir = tempfile::tempdir()?;
    let config = EngineConfig {
        redis_url: url.to_string(),
        data_dir: dir.path().to_path_buf(),
        read_count: count,
        // Each run reads the pre-filled streams through a group of its own.
        group: if domains { "maestro-engine-domains".into() } else { "maestro-engine".into() },
        ..EngineConfig::default()
    };
    let status = Arc::new(Health::default());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let handlers = if domains {
        maestro_effects::domains::handlers(&config)
    } else {
        vec![Arc::new(maestro_handlers::stream_stats::StreamStats) as Arc<dyn maestro_handlers::Handler>]
    };
    let expected = expected_records(entries, domains);
    let engine = tokio::spawn(maestro_engine::runtime::run(
        config.clone(),
        maestro_effects::domains::domains_with(&config, &DomainSettings::default(), handlers),
        status.clone(),
        shutdown,
    ));
    let mut progress = Vec::new();
    let mut sampled = Instant::now();
    while status.records_appended.load(Ordering::Relaxed) < expected {
        if engine.is_finished() {
            break;
        }
        if sampled.elapsed() >= PROGRESS_EVERY {
            sampled = Instant::now();
            progress.push((started.elapsed().as_secs_f64(), status.records_appended.load(Ordering::Relaxed)));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    let _ = stop.send(true);
    engine.await?.context("engine")?;
    let recorded = status.records_appended.load(Ordering::Relaxed);
    if recorded < expected {
        anyhow::bail!("the engine stopped after {recorded} of {expected} records: {}", status.snapshot().last_error);
    }
    progress.push((elapsed.as_secs_f64(), recorded));
    let data_dir_bytes = dir_bytes(dir.path());
    // Throughput counts input entries, the same events the raw baseline counts.
    Ok(RunFigures {
        events: entries,
        elapsed,
        batch_micros: status.batch_micros(),
        peak_rss_kib: peak_rss_kib(),
        progress,
        data_dir_bytes,
    })
}

/// Runs one side and prints its figures as one JSON line for the parent.
pub async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let figures = match args.phase.as_str() {
        "raw" => {
            let (url, entries, count) = (args.redis_url.clone(), args.entries, args.count);
            tokio::task::spawn_blocking(move || raw_baseline(&url, entries, count)).await??
        }
        "engine" => engine_run(&args.redis_url, args.entries, args.count, false).await?,
        "engine-domains" => engine_run(&args.redis_url, args.entries, args.count, true).await?,
        other => anyhow::bail!("unknown phase {other:?}: raw, engine or engine-domains"),
    };
    println!("{}", serde_json::to_string(&figures)?);
    Ok(())
}

fn run_worker(phase: &str, url: &str, args: &IngestArgs) -> anyhow::Result<RunFigures> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe)
        .args(["bench", "ingest-worker", "--phase", phase, "--redis-url", url])
        .args(["--entries", &args.entries.to_string(), "--count", &args.count.to_string()])
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "{phase} worker failed: {:?}", out.status);
    let line = String::from_utf8_lossy(&out.stdout);
    Ok(serde_json::from_str(line.trim())?)
}

pub async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    let server = RedisServer::start(RedisOptions::default()).context("starting a private redis-server")?;
    println!("bench ingest: {} entries of about 300 B over 9 streams, COUNT {} per stream", args.entries, args.count);
    println!("machine: {}; private redis-server on {}", machine(), server.addr());
    let url = server.url();
    let fill_url = url.clone();
    let entries = args.entries;
    tokio::task::spawn_blocking(move || prefill(&fill_url, entries)).await??;
    let raw = run_worker("raw", &url, &args)?;
    let engine = run_worker("engine", &url, &args)?;
    let domains = run_worker("engine-domains", &url, &args)?;
    println!("{}", raw.line("raw baseline"));
    println!("{}", engine.line("engine"));
    println!("{}", domains.line("+ domains"));
    println!("ratio engine/raw: {:.2}", engine.per_second() / raw.per_second());
    println!(
        "with the domain handlers (answers to every template request published and read back): {:.2} of raw",
        domains.per_second() / raw.per_second()
    );
    for (name, run) in [("raw baseline", &raw), ("engine", &engine), ("+ domains", &domains)] {
        println!(
            "data dir after the run, {name}: {:.1} MB, {:.0} bytes per entry",
            run.data_dir_bytes as f64 / 1e6,
            run.data_dir_bytes as f64 / args.entries.max(1) as f64
        );
    }
    let sides = [("raw baseline", &raw), ("engine", &engine), ("engine + domains", &domains)];
    let written = plots(&args.plots, &sides)?;
    println!("plots: {}", written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    Ok(())
}

/// Throughput per half second, from `(seconds, done)` samples.
fn rate_points(progress: &[(f64, u64)]) -> Vec<(f64, f64)> {
    let mut points = Vec::new();
    let mut last = (0.0, 0u64);
    for &(t, done) in progress {
        if t - last.0 >= 0.5 {
            points.push((t, done.saturating_sub(last.1) as f64 / (t - last.0)));
            last = (t, done);
        }
    }
    points
}

/// Writes the throughput and batch latency plots of every side into `dir`.
fn plots(dir: &std::path::Path, sides: &[(&str, &RunFigures)]) -> anyhow::Result<Vec<std::path::PathBuf>> {
    use crate::plot::{Chart, Series, write_svg};
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let throughput: Vec<Series> =
        sides.iter().map(|(name, run)| Series::new(*name, rate_points(&run.progress))).collect();
    let latency: Vec<Series> = sides
        .iter()
        .map(|(name, run)| {
            let points = run.batch_micros.iter().enumerate().map(|(i, us)| (i as f64 + 1.0, *us as f64 / 1000.0));
            Series::new(*name, points.collect())
        })
        .collect();
    let files = [dir.join("ingest-throughput.svg"), dir.join("ingest-batch-latency.svg")];
    let chart = Chart {
        title: "bench ingest: throughput (per half second)",
        x_label: "seconds since the start",
        y_label: "records (raw: entries) per second",
    };
    write_svg(&files[0], chart, &throughput)?;
    let chart = Chart { title: "bench ingest: batch latency, batch by batch", x_label: "batch", y_label: "ms" };
    write_svg(&files[1], chart, &latency)?;
    Ok(files.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_is_taken_over_half_seconds_of_progress() {
        let rates = rate_points(&[(0.25, 100), (0.5, 200), (1.0, 300), (1.6, 900)]);
        let expected = [(0.5, 400.0), (1.0, 200.0), (1.6, 1000.0)];
        assert_eq!(rates.len(), expected.len(), "{rates:?}");
        for ((t, r), (et, er)) in rates.iter().zip(expected) {
            assert!((t - et).abs() < 1e-9 && (r - er).abs() < 1e-6, "{rates:?}");
        }
        assert!(rate_points(&[]).is_empty());
    }
}
