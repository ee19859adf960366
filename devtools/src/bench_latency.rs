//! `maestro bench latency --rate R`: open-loop template reads at a fixed rate against a Redis
//! with `appendfsync always`. The catalogue of `bench templates` is created first; then request
//! `i` is due at `start + i / R` and every request due is sent at once (a sender that falls
//! behind sends what is due in one pipeline, so it never slows the schedule down); latency runs
//! from the scheduled send to the answer's arrival on the results stream, so a stall of the
//! engine or of the sender is not hidden. Every request must be answered exactly once.

use crate::bench_templates::{Engine, create_catalogue, read_request};
use crate::plot::{Chart, Series, write_svg};
use crate::redis_server::{RedisOptions, RedisServer};
use crate::traffic::Rng;
use anyhow::Context;
use hdrhistogram::Histogram;
use maestro_schemas::StreamSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct LatencyArgs {
    /// Requests per second (retrieves and searches, 60/40).
    #[arg(long, default_value_t = 500)]
    pub rate: u64,
    /// How long requests are sent.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Templates in the catalogue (4-26 KB bodies, one tenant).
    #[arg(long, default_value_t = 200)]
    pub templates: u64,
    /// The `maestro` binary to measure (default: this one).
    #[arg(long, value_name = "PATH")]
    pub engine: Option<PathBuf>,
    /// Where to write the latency plot (SVG); the throughput plot goes beside it, `-throughput`
    /// added to its name.
    #[arg(long, value_name = "FILE", default_value = "target/bench-plots/latency.svg")]
    pub plot: PathBuf,
}

/// When the first answer to each request arrived, and how many answers each got.
type Arrivals = (Vec<Option<Instant>>, Vec<u32>);

/// Reads the results stream from `from`, noting when the first answer to each `lat-<n>`
/// arrived and counting every answer per request.
fn spawn_reader(
    url: String,
    from: String,
    n: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<anyhow::Result<Arrivals>> {
    std::thread::spawn(move || {
        let mut conn = redis::Client::open(url)?.get_connection()?;
        let results = StreamSet::default().templates_results;
        let (mut arrived, mut answers) = (vec![None; n], vec![0u32; n]);
        let mut last = from;
        while !stop.load(Ordering::SeqCst) {
            let entries = crate::flood::read_after(&mut conn, &results, &last)?;
            let now = Instant::now();
            for entry in entries {
                last.clone_from(&entry.id);
                let Some(i) = answer_index(&entry) else { continue };
                if let Some(count) = answers.get_mut(i) {
                    *count += 1;
                    arrived[i].get_or_insert(now);
                }
            }
        }
        Ok((arrived, answers))
    })
}

/// `n` of an answer to request `lat-<n>`.
fn answer_index(entry: &redis::streams::StreamId) -> Option<usize> {
    let data: String = entry.get("data")?;
    let value: serde_json::Value = serde_json::from_str(&data).ok()?;
    value.get("request_id")?.as_str()?.strip_prefix("lat-")?.parse().ok()
}

pub fn latency(args: LatencyArgs) -> anyhow::Result<()> {
    let exe = match &args.engine {
        Some(path) => path.clone(),
        None => std::env::current_exe()?,
    };
    let server = RedisServer::start(RedisOptions { durable: true, ..RedisOptions::default() })
        .context("starting a private redis-server")?;
    let url = server.url();
    let mut conn = redis::Client::open(url.as_str())?.get_connection()?;
    let data = tempfile::Builder::new().prefix("maestro-bench-latency-").tempdir()?;
    let mut engine = Engine::start(&exe, &url, &data.path().join("engine"))?;
    create_catalogue(&mut conn, &mut engine, args.templates)?;
    let results = StreamSet::default().templates_results;
    let last: Vec<redis::Value> =
        redis::cmd("XREVRANGE").arg(&results).arg("+").arg("-").arg("COUNT").arg(1).query(&mut conn)?;
    let from = match last.first() {
        Some(redis::Value::Array(parts)) => match parts.first() {
            Some(redis::Value::BulkString(id)) => String::from_utf8_lossy(id).into_owned(),
            _ => "0-0".into(),
        },
        _ => "0-0".into(),
    };
    let n = (args.rate * args.seconds) as usize;
    let mut rng = Rng::new(13);
    let requests: Vec<_> = (0..n as u64).map(|i| read_request(&mut rng, "lat", i, args.templates)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = spawn_reader(url.clone(), from, n, stop.clone());
    let period = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    let start = Instant::now();
    let scheduled = |i: usize| start + period.mul_f64(i as f64);
    let mut sent = 0;
    while sent < n {
        std::thread::sleep(scheduled(sent).saturating_duration_since(Instant::now()));
        let now = Instant::now();
        let due = (sent..n).take_while(|i| scheduled(*i) <= now).count().max(1);
        crate::traffic::publish(&mut conn, &requests[sent..sent + due])?;
        sent += due;
        engine.check_running()?;
    }
    // Every request answered, or a deadline 60 s after the last was due.
    let deadline = Instant::now() + Duration::from_secs(60);
    let results_now = |conn: &mut redis::Connection| crate::bench_templates::results_len(conn);
    let want = args.templates + n as u64;
    while results_now(&mut conn)? < want && Instant::now() < deadline {
        engine.check_running()?;
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let (arrived, answers) = reader.join().map_err(|_| anyhow::anyhow!("the reader thread panicked"))??;
    engine.stop()?;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut over_time = Vec::new();
    let mut throughput: Vec<(f64, f64)> = Vec::new();
    let mut per_second = vec![0u64; args.seconds as usize + 62];
    for (i, at) in arrived.iter().enumerate() {
        let Some(at) = at else { continue };
        let us = at.saturating_duration_since(scheduled(i)).as_micros().max(1) as u64;
        histogram.record(us)?;
        over_time.push((scheduled(i).duration_since(start).as_secs_f64(), us as f64 / 1000.0));
        let second = at.saturating_duration_since(start).as_secs() as usize;
        if let Some(slot) = per_second.get_mut(second) {
            *slot += 1;
        }
    }
    let last_second = per_second.iter().rposition(|c| *c > 0).unwrap_or(0);
    throughput.extend(per_second[..=last_second].iter().enumerate().map(|(s, c)| (s as f64 + 0.5, *c as f64)));
    let answered = arrived.iter().filter(|a| a.is_some()).count();
    let duplicated = answers.iter().filter(|c| **c > 1).count();
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "bench latency: {} at {} requests/s for {} s (appendfsync always): {answered} of {n} answered, {duplicated} answered twice; latency p50 {:.1} ms  p99 {:.1} ms  p99.9 {:.1} ms  max {:.1} ms",
        exe.display(),
        args.rate,
        args.seconds,
        ms(0.5),
        ms(0.99),
        ms(0.999),
        histogram.max() as f64 / 1000.0
    );
    // One point per request is too many for an SVG: the worst of each 1/20 s.
    let mut worst: Vec<(f64, f64)> = Vec::new();
    for (t, latency) in over_time {
        let slot = (t * 20.0).floor() / 20.0;
        match worst.last_mut() {
            Some((s, l)) if *s == slot => *l = l.max(latency),
            _ => worst.push((slot, latency)),
        }
    }
    let title = format!("template reads at {}/s: worst latency per 50 ms of schedule", args.rate);
    write_svg(
        &args.plot,
        Chart { title: &title, x_label: "scheduled send (s)", y_label: "ms" },
        &[Series::new("latency", worst)],
    )?;
    let throughput_plot = args.plot.with_file_name(format!(
        "{}-throughput.svg",
        args.plot.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    let title = format!("template reads at {}/s: answers per second", args.rate);
    write_svg(
        &throughput_plot,
        Chart { title: &title, x_label: "s", y_label: "answers/s" },
        &[Series::new("answers", throughput)],
    )?;
    println!("plots: {} {}", args.plot.display(), throughput_plot.display());
    anyhow::ensure!(
        answered == n && duplicated == 0,
        "{} requests unanswered, {duplicated} answered twice",
        n - answered
    );
    Ok(())
}
