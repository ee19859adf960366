//! `maestro bench replay`: how fast every projection is rebuilt from a realistic log, with
//! what peak memory, and how fast a data dir with current projections is ready again.
//!
//! The parent writes a log of N records (the ~300 B control mix over the nine streams, as
//! `bench ingest` reads it, recorded as the engine records it) into a fresh data dir; a child
//! process (`bench replay-worker`) then opens it as the engine does at start-up: the projections
//! are empty, so catch-up dispatches the whole log (the rebuild); then it opens the data dir again,
//! now with current projections, and times how long until the engine could serve; then it
//! times reading and decoding the log alone, the floor under every rebuild, and last
//! `maestro replay rebuild`'s own path, whose progress and memory it draws as an SVG chart.
//! The log is sealed into segments as it is written, as the engine seals between batches; the
//! parent reports the data dir's bytes per record and times `maestro verify --chain-only`.

use crate::bench::dir_bytes;
use crate::traffic::Traffic;
use anyhow::Context;
use maestro_engine::config::EngineConfig;
use maestro_engine::dispatch::{Decoder, Dispatcher, OutputStamp};
use maestro_engine::log::{Log, NewRecord};
use maestro_schemas::record::RecordRef;
use maestro_schemas::{Body, Entry, EntryId, Status, StreamSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// Records in the log.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Write the log here and keep it (default: a temp dir, removed afterwards).
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// Where to draw `maestro replay rebuild`'s progress and memory (SVG).
    #[arg(long, value_name = "FILE", default_value = "target/bench-plots/replay-rebuild.svg")]
    pub plot: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct ReplayWorkerArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
}

/// What writing the log gave: entry field bytes and the records' stored bytes.
struct Written {
    field_bytes: u64,
    stored_bytes: u64,
}

/// Writes `records` accepted entries of the control mix, with their dedup index and cursors,
/// sealing complete segments after each batch as the engine does between batches.
fn write_log(dir: &Path, records: u64) -> anyhow::Result<Written> {
    let mut log = Log::open(dir, 64 << 20)?;
    let streams = StreamSet::default();
    let mut traffic = Traffic::new(3, streams);
    let mut bytes = 0;
    let mut stored_bytes = 0;
    let mut i = 0;
    while i < records {
        let batch: Vec<NewRecord> = (i..(i + 5_000).min(records))
            .map(|n| {
                let (stream, fields) = traffic.control_message(n);
                let fields: Vec<(Vec<u8>, Vec<u8>)> =
                    fields.into_iter().map(|(k, v)| (k.into_bytes(), v.into_bytes())).collect();
                bytes += fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() as u64;
                let id = EntryId { ms: 1_795_000_000_000 + n / 9, seq: n % 9 };
                NewRecord { body: Body::Entry(Entry { stream, id, fields, status: Status::Accepted }), request: None }
            })
            .collect();
        i += batch.len() as u64;
        for record in log.append(batch)? {
            stored_bytes += record.encode()?.len() as u64;
        }
        log.seal(maestro_engine::segments::DEFAULT_SEGMENT_RECORDS)?;
    }
    Ok(Written { field_bytes: bytes, stored_bytes })
}

/// The resident set now, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Opens the data dir as the engine does and brings every projection up to the log's head.
fn open_and_catch_up(config: &EngineConfig) -> anyhow::Result<u64> {
    let mut log = Log::open(&config.data_dir, config.cache_bytes)?;
    let store = log.store_with_cache(config.store_cache_bytes)?;
    let stamp = OutputStamp { origin: "maestro-engine/bench".into(), dead_letter_maxlen: config.dead_letter_maxlen };
    let decoder = Decoder { streams: config.streams.clone(), limits: config.limits };
    let mut dispatcher = Dispatcher::new(
        maestro_effects::domains::handlers(config),
        store,
        &log,
        stamp,
        decoder,
        config.checkpoint_every,
    )?;
    Ok(dispatcher.catch_up(&mut log, 512, config.max_deliveries)?.records)
}

/// Empties the outbox the catch-up filled, as the engine's publisher would have: a live data
/// dir holds a few batches of outputs at most, not one per record of the log.
fn forget_outbox(config: &EngineConfig) -> anyhow::Result<()> {
    let log = Log::open(&config.data_dir, config.cache_bytes)?;
    let store = log.store()?;
    loop {
        let keys: Vec<_> = store.outbox(10_000)?.into_iter().map(|(key, _)| key).collect();
        if keys.is_empty() {
            return Ok(());
        }
        store.remove_outbox(&keys, None)?;
    }
}

/// How long reading the log alone took, three ways.
struct ReadFigures {
    /// Opening the log as the tools do (a copy of `db/`, sled's recovery of it).
    open_s: f64,
    /// Read, checked and decoded in place (what verify and the sealer do).
    in_place_s: f64,
    /// Read, checked and decoded into records (what the lanes dispatch).
    records_s: f64,
    /// Records and the entries' typed events too.
    typed_s: f64,
    typed: u64,
    /// `maestro verify`'s checks of every record (checksums, chain) on the opened log.
    verify_s: f64,
}

/// Opens the log as the replay tools do and reads every record on one thread, dispatching
/// nothing: what every rebuild does before any handler runs.
fn read_alone(config: &EngineConfig) -> anyhow::Result<ReadFigures> {
    let started = Instant::now();
    let (_dir, log) = maestro_replay::open_log(&config.data_dir)?;
    let open_s = started.elapsed().as_secs_f64();
    let decoder = Decoder { streams: config.streams.clone(), limits: config.limits };
    let started = Instant::now();
    for item in log.stored_range(1, log.head_seq()) {
        let (seq, stored) = item?;
        RecordRef::decode(seq, &stored)?;
    }
    let in_place_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for record in log.range(1, log.head_seq()) {
        record?;
    }
    let records_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut typed = 0;
    for record in log.range(1, log.head_seq()) {
        typed += u64::from(decoder.typed(&record?).is_some());
    }
    let typed_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    log.verify(1, log.head_seq())?;
    Ok(ReadFigures { open_s, in_place_s, records_s, typed_s, typed, verify_s: started.elapsed().as_secs_f64() })
}

pub fn worker(args: ReplayWorkerArgs) -> anyhow::Result<()> {
    let config = EngineConfig { data_dir: args.data_dir, ..EngineConfig::default() };
    let started = Instant::now();
    let records = open_and_catch_up(&config)?;
    let rebuild = started.elapsed();
    let peak = crate::bench::peak_rss_kib();
    forget_outbox(&config)?;
    let started = Instant::now();
    let again = open_and_catch_up(&config)?;
    let restart = started.elapsed();
    let read = read_alone(&config)?;
    // The replay tool's path: `maestro replay rebuild`, every projection, state only, with the
    // peak RSS counted from here (writing 5 to clear_refs resets the high-water mark).
    std::fs::write("/proc/self/clear_refs", "5").context("resetting the peak RSS")?;
    let started = Instant::now();
    // (seconds, records rebuilt, RSS KiB), sampled at most every 50 ms.
    let progress = std::cell::RefCell::new(vec![(0.0, 0u64, rss_kib())]);
    {
        let (_dir, log) = maestro_replay::open_log_writable(&config.data_dir)?;
        let sample = |reached: u64, _until: u64| {
            let mut points = progress.borrow_mut();
            let at = started.elapsed().as_secs_f64();
            if points.last().is_none_or(|(last, _, _)| at - last >= 0.05) {
                points.push((at, reached, rss_kib()));
            }
        };
        maestro_replay::rebuild::rebuild_in_place(&log, &config, maestro_effects::domains::handlers(&config), &sample)?;
    }
    let replay = started.elapsed();
    progress.borrow_mut().push((replay.as_secs_f64(), records, rss_kib()));
    let figures = serde_json::json!({
        "records": records, "rebuild_s": rebuild.as_secs_f64(), "peak_rss_kib": peak,
        "restart_s": restart.as_secs_f64(), "restart_records": again, "replay_rebuild_s": replay.as_secs_f64(),
        "peak_rss_kib_replay": crate::bench::peak_rss_kib(), "read_records": read.typed, "read_s": read.records_s,
        "read_in_place_s": read.in_place_s, "read_typed_s": read.typed_s, "verify_s": read.verify_s,
        "open_s": read.open_s,
        "progress": progress.into_inner(),
    });
    println!("{figures}");
    Ok(())
}

pub fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let temp = tempfile::Builder::new().prefix("maestro-bench-replay-").tempdir()?;
    let path = args.keep.clone().unwrap_or_else(|| temp.path().to_path_buf());
    let started = Instant::now();
    let written = write_log(&path, args.records)?;
    let bytes = written.field_bytes;
    let write_s = started.elapsed().as_secs_f64();
    println!(
        "wrote {} records ({:.0} MB of entry fields) in {write_s:.1} s = {:.0} records/s, sealed into segments as written",
        args.records,
        bytes as f64 / 1e6,
        args.records as f64 / write_s
    );
    let per_record = |b: u64| b as f64 / args.records.max(1) as f64;
    println!(
        "data dir: {:.0} bytes per record ({:.0} stored bytes per record: {:.2}x; sled {:.0}, segments {:.0} bytes per record)",
        per_record(dir_bytes(&path)),
        per_record(written.stored_bytes),
        dir_bytes(&path) as f64 / written.stored_bytes.max(1) as f64,
        per_record(dir_bytes(&path.join("db"))),
        per_record(dir_bytes(&path.join(maestro_engine::segments::SEGMENTS_DIR)))
    );
    let started = Instant::now();
    let verified = std::process::Command::new(std::env::current_exe()?)
        .args(["verify", "--chain-only", "--data-dir"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .output()
        .context("running maestro verify")?;
    let verify_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(verified.status.success(), "maestro verify failed: {}", String::from_utf8_lossy(&verified.stderr));
    println!(
        "maestro verify --chain-only: {} records in {verify_s:.2} s = {:.0} records/s",
        args.records,
        args.records as f64 / verify_s
    );
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["bench", "replay-worker", "--data-dir"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("starting the replay worker")?;
    anyhow::ensure!(out.status.success(), "the replay worker failed: {:?}", out.status);
    let figures: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    println!(
        "data dir after the rebuilds: {:.0} bytes per record (the log's sled {:.0}, the store's {:.0})",
        per_record(dir_bytes(&path)),
        per_record(dir_bytes(&path.join("db"))),
        per_record(dir_bytes(&path.join(maestro_engine::datadir::STORE_DIR)))
    );
    let seconds = figures["rebuild_s"].as_f64().unwrap_or(f64::NAN);
    let records = figures["records"].as_u64().unwrap_or(0);
    println!(
        "engine catch-up from empty projections (outputs queued): {records} records in {seconds:.2} s = {:.0} records/s ({:.0} MB/s of entry fields), peak RSS {} MiB",
        records as f64 / seconds,
        bytes as f64 / 1e6 / seconds,
        figures["peak_rss_kib"].as_u64().unwrap_or(0) / 1024
    );
    let replay = figures["replay_rebuild_s"].as_f64().unwrap_or(f64::NAN);
    println!(
        "maestro replay rebuild (every projection into a new store generation, then made live): {:.2} s = {:.0} records/s ({:.0} MB/s), peak RSS {} MiB",
        replay,
        records as f64 / replay,
        bytes as f64 / 1e6 / replay,
        figures["peak_rss_kib_replay"].as_u64().unwrap_or(0) / 1024
    );
    let rate = |key: &str| records as f64 / figures[key].as_f64().unwrap_or(f64::NAN);
    println!(
        "reading the log alone (open, read, check and decode every record into a record on one thread, no handler): {:.0} records/s; checked in place: {:.0} records/s; with typed events too: {:.0} records/s ({} typed)",
        rate("read_s"),
        rate("read_in_place_s"),
        rate("read_typed_s"),
        figures["read_records"]
    );
    println!(
        "opening the log as the tools do: {:.2} s; verify's checks of every record once open: {:.0} records/s",
        figures["open_s"].as_f64().unwrap_or(f64::NAN),
        rate("verify_s")
    );
    println!(
        "restart with current projections: ready in {:.3} s ({} records dispatched)",
        figures["restart_s"].as_f64().unwrap_or(f64::NAN),
        figures["restart_records"]
    );
    let points: Vec<(f64, u64, u64)> = serde_json::from_value(figures["progress"].clone()).unwrap_or_default();
    let rebuilt = points.iter().map(|(at, seq, _)| (*at, *seq as f64 / 1000.0)).collect();
    let rss = points.iter().map(|(at, _, kib)| (*at, *kib as f64 / 1024.0)).collect();
    crate::plot::write_svg(
        &args.plot,
        crate::plot::Chart {
            title: &format!("maestro replay rebuild of {records} records"),
            x_label: "seconds",
            y_label: "thousand records / MiB",
        },
        &[
            crate::plot::Series::new("records rebuilt (thousands)", rebuilt),
            crate::plot::Series::new("resident memory (MiB)", rss),
        ],
    )?;
    println!("rebuild progress drawn in {}", args.plot.display());
    Ok(())
}
