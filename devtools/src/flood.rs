//! The malformed flood (S5): good template requests at a fixed rate, first alone, then beside
//! a flood of bad entries on every stream; each good request's latency is measured from its
//! scheduled send time (so a stall is not hidden) to its answer on the results stream.
//! `maestro bench flood` prints the figures; `tests/flood.rs` runs it small and checks what is
//! not a timing: the engine stays up, every good request is answered once, every bad entry is
//! recorded as rejected and the dead-letter streams stay capped.

use crate::redis_server::{RedisOptions, RedisServer};
use anyhow::Context;
use hdrhistogram::Histogram;
use maestro_schemas::StreamSet;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone, Debug)]
pub struct FloodArgs {
    /// Good template requests per second, in both phases.
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// Bad entries per second during the flood.
    #[arg(long, default_value_t = 10_000)]
    pub bad_rate: u64,
    /// Length of each phase.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// The engine's `dead_letter_maxlen` for the run.
    #[arg(long, default_value_t = 1_000)]
    pub dead_letter_maxlen: u64,
}

/// Latencies of one phase's good requests, in microseconds.
#[derive(Debug)]
pub struct Phase {
    pub sent: u64,
    pub answered: u64,
    pub latency_us: Histogram<u64>,
}

impl Phase {
    pub fn line(&self, name: &str) -> String {
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1000.0;
        format!(
            "{name:<8} {} of {} answered; latency p50 {:.1} ms  p99 {:.1} ms  p99.9 {:.1} ms  max {:.1} ms",
            self.answered,
            self.sent,
            ms(0.5),
            ms(0.99),
            ms(0.999),
            self.latency_us.max() as f64 / 1000.0
        )
    }
}

#[derive(Debug)]
pub struct FloodFigures {
    pub clean: Phase,
    pub flooded: Phase,
    pub bad_sent: u64,
    /// Answers per good request id (more than one would be a duplicate).
    pub answers: HashMap<String, u64>,
    /// Length of each dead-letter stream at the end.
    pub dead_letters: Vec<(String, u64)>,
    /// Whether the engine was still running at the end.
    pub engine_alive: bool,
    pub engine_peak_rss_kib: u64,
}

const RESULTS: &str = "maestro:streams:templates:results";
const REQUESTS: &str = "maestro:streams:templates:requests";

/// Runs both phases against a private redis-server and the engine binary `engine`, whose data
/// dir is `data_dir`; the engine is stopped (SIGTERM) before this returns.
pub fn flood(engine: &Path, data_dir: &Path, args: &FloodArgs) -> anyhow::Result<FloodFigures> {
    let server = RedisServer::start(RedisOptions::default()).context("starting a private redis-server")?;
    let url = server.url();
    let mut child = start_engine(engine, &url, data_dir, args.dead_letter_maxlen)?;
    let outcome = phases(&url, args, &mut child);
    let engine_alive = matches!(child.try_wait(), Ok(None));
    let engine_peak_rss_kib = crate::bench::peak_rss_kib_of(child.id()).unwrap_or(0);
    // kill(1), not libc::kill: the workspace denies unsafe code.
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
    let (clean, flooded, bad_sent, answers) = outcome?;
    let mut conn = redis::Client::open(url.as_str())?.get_connection()?;
    let mut dead_letters = Vec::new();
    for (_, key) in StreamSet::default().all() {
        let dead = StreamSet::dead_letter_key(key);
        dead_letters.push((dead.clone(), redis::cmd("XLEN").arg(&dead).query(&mut conn)?));
    }
    Ok(FloodFigures { clean, flooded, bad_sent, answers, dead_letters, engine_alive, engine_peak_rss_kib })
}

type Outcome = (Phase, Phase, u64, HashMap<String, u64>);

fn phases(url: &str, args: &FloodArgs, child: &mut Child) -> anyhow::Result<Outcome> {
    wait_for_group(url, child)?;
    let answers = Arc::new(std::sync::Mutex::new(HashMap::<String, u64>::new()));
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = spawn_reader(url.to_string(), answers.clone(), stop.clone());
    let period = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    let per_phase = args.rate * args.seconds;
    send_good(url, "clean", per_phase, start, period)?;
    let flood_stop = Arc::new(AtomicBool::new(false));
    let bad_sent = Arc::new(AtomicU64::new(0));
    let flooder = spawn_flooder(url.to_string(), args.bad_rate, flood_stop.clone(), bad_sent.clone());
    let flood_start = Instant::now();
    send_good(url, "flood", per_phase, flood_start, period)?;
    flood_stop.store(true, Ordering::SeqCst);
    flooder.join().map_err(|_| anyhow::anyhow!("the flooder thread panicked"))??;
    wait_answered(&answers, 2 * per_phase, child)?;
    stop.store(true, Ordering::SeqCst);
    let latencies = reader.join().map_err(|_| anyhow::anyhow!("the reader thread panicked"))??;
    let answers = answers.lock().map_err(|_| anyhow::anyhow!("answers lock poisoned"))?.clone();
    let phase = |name: &str, sent: u64, origin: Instant| -> anyhow::Result<Phase> {
        let mut latency_us = Histogram::new_with_bounds(1, 600_000_000, 3)?;
        let mut answered = 0;
        for ((phase, n), arrived) in &latencies {
            if phase == name {
                let scheduled = origin + period * (*n as u32);
                latency_us.record(arrived.saturating_duration_since(scheduled).as_micros().max(1) as u64)?;
                answered += 1;
            }
        }
        Ok(Phase { sent, answered, latency_us })
    };
    Ok((
        phase("clean", per_phase, start)?,
        phase("flood", per_phase, flood_start)?,
        bad_sent.load(Ordering::SeqCst),
        answers,
    ))
}

fn start_engine(engine: &Path, url: &str, data_dir: &Path, maxlen: u64) -> anyhow::Result<Child> {
    let log = std::fs::File::create(data_dir.with_extension("stderr.log"))?;
    Command::new(engine)
        .args(["run", "--redis-url", url, "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .env("MAESTRO_DEAD_LETTER_MAXLEN", maxlen.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", engine.display()))
}

/// Waits until the engine created its group (it is connected and reading).
fn wait_for_group(url: &str, child: &mut Child) -> anyhow::Result<()> {
    let mut conn = redis::Client::open(url)?.get_connection()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while crate::groups::group_state(&mut conn, REQUESTS, "maestro-engine").is_none() {
        anyhow::ensure!(child.try_wait()?.is_none(), "the engine exited before connecting");
        anyhow::ensure!(Instant::now() < deadline, "the engine did not connect within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Sends `n` searches named `<phase>-<i>`, the i-th at `origin + i * period`.
fn send_good(url: &str, phase: &str, n: u64, origin: Instant, period: Duration) -> anyhow::Result<()> {
    let mut conn = redis::Client::open(url)?.get_connection()?;
    for i in 0..n {
        let scheduled = origin + period * (i as u32);
        std::thread::sleep(scheduled.saturating_duration_since(Instant::now()));
        send_search(&mut conn, &format!("{phase}-{i}"))?;
    }
    Ok(())
}

/// XADDs a template search (tenant `acme`, user `alice`) in the old producers' shape; returns
/// its entry id. Its answer on the results stream carries `request_id`.
pub fn send_search(conn: &mut redis::Connection, request_id: &str) -> redis::RedisResult<String> {
    let data = serde_json::json!({"request_id": request_id, "operation": "search", "tenant_id": "acme",
        "user_id": "alice", "parameters": {"query": "fastapi", "page": 1, "page_size": 5}});
    redis::cmd("XADD").arg(REQUESTS).arg("*").arg("data").arg(data.to_string()).query(conn)
}

/// Adds bad entry `i` of the flood's mix (see [`bad_entry`]); returns its stream and id.
pub fn send_bad(conn: &mut redis::Connection, i: u64) -> redis::RedisResult<(String, String)> {
    let (stream, fields) = bad_entry(i, &StreamSet::default());
    let id = redis::cmd("XADD").arg(&stream).arg("*").arg(fields).query(conn)?;
    Ok((stream, id))
}

/// The bad entries, in turn: broken JSON, JSON nested 10,000 deep (one in a hundred: they are
/// 20 KB each), a request without its payload field, a value that is not UTF-8.
fn bad_entry(i: u64, streams: &StreamSet) -> (String, Vec<(&'static str, Vec<u8>)>) {
    let all = streams.all();
    let (_, stream) = all[(i % all.len() as u64) as usize];
    let fields = match i % 4 {
        _ if i % 100 == 99 => {
            vec![("data", format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes())]
        }
        0 => vec![("data", b"{\"request_id\": \"bad".to_vec()), ("payload", b"{\"x\":".to_vec())],
        1 => vec![("nothing", b"here".to_vec())],
        2 => vec![("data", vec![0xff, 0xfe, b'{']), ("payload", vec![0xc3, 0x28])],
        _ => vec![("data", b"[1, 2, 3]".to_vec()), ("payload", b"42".to_vec())],
    };
    (stream.to_string(), fields)
}

fn spawn_flooder(
    url: String,
    rate: u64,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> std::thread::JoinHandle<anyhow::Result<()>> {
    std::thread::spawn(move || {
        let mut conn = redis::Client::open(url)?.get_connection()?;
        let streams = StreamSet::default();
        let started = Instant::now();
        let chunk = (rate / 100).max(1);
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let mut pipe = redis::pipe();
            for _ in 0..chunk {
                let (stream, fields) = bad_entry(i, &streams);
                pipe.cmd("XADD").arg(stream).arg("*").arg(fields).ignore();
                i += 1;
            }
            pipe.query::<()>(&mut conn)?;
            sent.store(i, Ordering::SeqCst);
            let due = started + Duration::from_secs_f64(i as f64 / rate.max(1) as f64);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        Ok(())
    })
}

type Arrivals = Vec<((String, u64), Instant)>;

/// The entries of `stream` after `last`, up to 1,000, waiting up to 100 ms for some.
pub fn read_after(
    conn: &mut redis::Connection,
    stream: &str,
    last: &str,
) -> redis::RedisResult<Vec<redis::streams::StreamId>> {
    let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(1000)
        .arg("BLOCK")
        .arg(100)
        .arg("STREAMS")
        .arg(stream)
        .arg(last)
        .query(conn)?;
    Ok(reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).collect())
}

/// Reads the results stream from its start, noting when each good answer arrived.
fn spawn_reader(
    url: String,
    answers: Arc<std::sync::Mutex<HashMap<String, u64>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<anyhow::Result<Arrivals>> {
    std::thread::spawn(move || {
        let mut conn = redis::Client::open(url)?.get_connection()?;
        let mut last = "0-0".to_string();
        let mut arrivals = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let entries = read_after(&mut conn, RESULTS, &last)?;
            let now = Instant::now();
            for entry in entries {
                last = entry.id.clone();
                let Some(id) = answer_id(&entry) else { continue };
                let mut answers = answers.lock().map_err(|_| anyhow::anyhow!("answers lock poisoned"))?;
                let count = answers.entry(id.clone()).or_default();
                *count += 1;
                if *count == 1
                    && let Some((phase, n)) = id.split_once('-')
                    && let Ok(n) = n.parse()
                {
                    arrivals.push(((phase.to_string(), n), now));
                }
            }
        }
        Ok(arrivals)
    })
}

fn answer_id(entry: &redis::streams::StreamId) -> Option<String> {
    let data: String = entry.get("data")?;
    let value: serde_json::Value = serde_json::from_str(&data).ok()?;
    Some(value.get("request_id")?.as_str()?.to_string())
}

fn wait_answered(answers: &std::sync::Mutex<HashMap<String, u64>>, n: u64, child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let answers = answers.lock().map_err(|_| anyhow::anyhow!("answers lock poisoned"))?;
        // Rejected template requests are answered too (with an error, under a derived id).
        let answered = answers.keys().filter(|id| id.starts_with("clean-") || id.starts_with("flood-")).count() as u64;
        drop(answers);
        if answered >= n || Instant::now() > deadline || child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `maestro bench flood`: prints both phases and the verdicts of S5.
pub fn bench(args: FloodArgs) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let engine: PathBuf = std::env::current_exe()?;
    println!(
        "bench flood: {} good template searches/s for {} s clean, then {} s beside {} bad entries/s",
        args.rate, args.seconds, args.seconds, args.bad_rate
    );
    let figures = flood(&engine, &data.path().join("engine"), &args)?;
    println!("{}", figures.clean.line("clean"));
    println!("{}", figures.flooded.line("flooded"));
    let p99 = |p: &Phase| p.latency_us.value_at_quantile(0.99).max(1) as f64;
    println!("p99 flooded / clean: {:.2} (S5 asks at most 2)", p99(&figures.flooded) / p99(&figures.clean));
    println!("bad entries sent: {}", figures.bad_sent);
    let longest = figures.dead_letters.iter().map(|(_, n)| *n).max().unwrap_or(0);
    println!("longest dead-letter stream: {longest} (cap {})", args.dead_letter_maxlen);
    println!(
        "engine alive at the end: {}; its peak RSS {} MiB",
        figures.engine_alive,
        figures.engine_peak_rss_kib / 1024
    );
    Ok(())
}
