//! `maestro bench templates`: template reads end to end. A private redis-server gets a
//! catalogue of templates (4-26 KB bodies, one tenant), then a queue of retrieve and search
//! requests (60/40) in the old producers' format; the engine (`maestro run`, or the binary
//! `--engine` names) answers them, and the same queue on a fresh server is answered by a Rust
//! loop of the old template worker's shape (XREADGROUP COUNT 5; per entry one XADD of the
//! result, one of the usage event and one XACK; no log). Both rates come from the same run;
//! the engine's data-dir growth per request is measured once it has also logged its own
//! answers read back.

use crate::plot::{Chart, Series, write_svg};
use crate::redis_server::{RedisOptions, RedisServer};
use crate::traffic::{Message, Rng, manifest, publish, template_body};
use anyhow::Context;
use maestro_schemas::StreamSet;
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct TemplatesArgs {
    /// Templates in the catalogue.
    #[arg(long, default_value_t = 200)]
    pub templates: u64,
    /// Retrieve and search requests queued (60/40).
    #[arg(long, default_value_t = 30_000)]
    pub requests: u64,
    /// The `maestro` binary to measure (default: this one).
    #[arg(long, value_name = "PATH")]
    pub engine: Option<PathBuf>,
    /// Where to write the plot (SVG): answers per second over time, engine and old loop.
    #[arg(long, value_name = "FILE", default_value = "target/bench-plots/templates.svg")]
    pub plot: PathBuf,
    /// Keep the engine's data dir here (it must not exist yet), to look at it afterwards.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
}

/// The tenant of the catalogue, and its admin (who creates and reads).
pub const TENANT: &str = "tenant-bench";
pub const USER: &str = "owner";
const GROUP: &str = "maestro-engine";

/// The catalogue's creates: bodies of 4-26 KB.
pub fn catalogue(rng: &mut Rng, templates: u64) -> Vec<Message> {
    let stream = StreamSet::default().templates_requests;
    (0..templates)
        .map(|n| {
            let size = 4_000 + rng.below(22_001) as usize;
            let name = format!("service-{n}");
            let data = json!({
                "request_id": format!("cat-{n}"), "template_id": format!("tpl-{n:05}"), "operation": "create",
                "tenant_id": TENANT, "user_id": USER,
                "parameters": {"name": name, "content": template_body(rng, size), "manifest": manifest(rng, &name)},
            });
            (stream.clone(), vec![("data".to_string(), data.to_string())])
        })
        .collect()
}

/// Read request `n` with id `<prefix>-<n>`: a retrieve of a random template of the catalogue
/// (six in ten) or a search.
pub fn read_request(rng: &mut Rng, prefix: &str, n: u64, templates: u64) -> Message {
    let stream = StreamSet::default().templates_requests;
    let id = format!("{prefix}-{n}");
    let data = if rng.below(10) < 6 {
        json!({"request_id": id, "operation": "retrieve", "template_id": format!("tpl-{:05}", rng.below(templates)),
               "tenant_id": TENANT, "user_id": USER})
    } else {
        let query = *rng.pick(&["service", "production template", "ready", "fastapi docker", "cli tool"]);
        json!({"request_id": id, "operation": "search", "tenant_id": TENANT, "user_id": USER,
               "parameters": {"query": query, "page": 1, "page_size": 20}})
    };
    (stream, vec![("data".to_string(), data.to_string())])
}

/// An engine child process; SIGKILLed if still running when dropped.
#[derive(Debug)]
pub struct Engine(pub Child);

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Engine {
    /// `exe run` against `url` with its data dir at `dir`, the bench tenant's admin configured.
    pub fn start(exe: &Path, url: &str, dir: &Path) -> anyhow::Result<Engine> {
        let log = std::fs::File::create(dir.with_extension("stderr.log"))?;
        let child = Command::new(exe)
            .args(["run", "--redis-url", url, "--data-dir"])
            .arg(dir)
            .env("RUST_LOG", "warn")
            .env("MAESTRO_ADMINS", format!("{TENANT}:{USER}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        Ok(Engine(child))
    }

    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.0.try_wait()? {
            Some(status) => anyhow::bail!("the engine exited: {status}"),
            None => Ok(()),
        }
    }

    /// SIGTERM, then wait: the engine finishes its batch and exits.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let status = self.0.wait()?;
        anyhow::ensure!(status.success(), "the engine exited with {status}");
        Ok(())
    }
}

pub fn results_len(conn: &mut redis::Connection) -> anyhow::Result<u64> {
    Ok(redis::cmd("XLEN").arg(StreamSet::default().templates_results).query(conn)?)
}

/// Waits until the results stream holds `n` entries, sampling answers per second for the plot.
fn wait_results(
    conn: &mut redis::Connection,
    n: u64,
    mut engine: Option<&mut Engine>,
    samples: &mut Vec<(f64, f64)>,
    started: Instant,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(1800);
    let (mut last_t, mut last_n) = (0.0, results_len(conn)?);
    loop {
        let len = results_len(conn)?;
        let t = started.elapsed().as_secs_f64();
        if t - last_t >= 0.5 {
            samples.push((t, (len - last_n) as f64 / (t - last_t)));
            (last_t, last_n) = (t, len);
        }
        if len >= n {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "only {len} of {n} results within 30 minutes");
        if let Some(engine) = engine.as_deref_mut() {
            engine.check_running()?;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

use crate::bench::dir_bytes;

/// Waits until the engine's group has been delivered and has acknowledged every entry of every
/// stream (its own answers read back included).
pub fn wait_drained(conn: &mut redis::Connection, engine: &mut Engine) -> anyhow::Result<()> {
    let streams: Vec<String> = StreamSet::default().all().into_iter().map(|(_, k)| k.to_string()).collect();
    let deadline = Instant::now() + Duration::from_secs(600);
    while !crate::groups::drained(conn, &streams, GROUP) {
        anyhow::ensure!(Instant::now() < deadline, "the engine did not drain its streams within 600 s");
        engine.check_running()?;
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Publishes `messages` in chunks of 500.
fn publish_all(conn: &mut redis::Connection, messages: &[Message]) -> anyhow::Result<()> {
    for chunk in messages.chunks(500) {
        publish(conn, chunk)?;
    }
    Ok(())
}

/// Creates the catalogue through the engine and waits for every answer and read-back.
pub fn create_catalogue(conn: &mut redis::Connection, engine: &mut Engine, templates: u64) -> anyhow::Result<()> {
    publish_all(conn, &catalogue(&mut Rng::new(7), templates))?;
    wait_results(conn, templates, Some(engine), &mut Vec::new(), Instant::now())?;
    wait_drained(conn, engine)
}

struct EngineFigures {
    rate: f64,
    bytes_per_request: f64,
    /// Growth per request of the sled files and of the value files.
    db_per_request: f64,
    values_per_request: f64,
    samples: Vec<(f64, f64)>,
}

fn engine_side(exe: &Path, args: &TemplatesArgs, queue: &[Message]) -> anyhow::Result<EngineFigures> {
    let server = RedisServer::start(RedisOptions::default()).context("starting a private redis-server")?;
    let mut conn = redis::Client::open(server.url())?.get_connection()?;
    let data = tempfile::Builder::new().prefix("maestro-bench-templates-").tempdir()?;
    let dir = args.keep.clone().unwrap_or_else(|| data.path().join("engine"));
    anyhow::ensure!(!dir.exists(), "{} exists already", dir.display());
    let mut engine = Engine::start(exe, &server.url(), &dir)?;
    create_catalogue(&mut conn, &mut engine, args.templates)?;
    let before = dir_bytes(&dir);
    let parts = |dir: &Path| (dir_bytes(&dir.join("db")), dir_bytes(&dir.join(maestro_engine::log::VALUE_FILES_DIR)));
    let (db_before, values_before) = parts(&dir);
    let started = Instant::now();
    publish_all(&mut conn, queue)?;
    let mut samples = Vec::new();
    wait_results(&mut conn, args.templates + args.requests, Some(&mut engine), &mut samples, started)?;
    let elapsed = started.elapsed().as_secs_f64();
    wait_drained(&mut conn, &mut engine)?;
    engine.stop()?;
    let grown = dir_bytes(&dir).saturating_sub(before);
    let (db, values) = parts(&dir);
    let per_request = |bytes: u64| bytes as f64 / args.requests as f64;
    Ok(EngineFigures {
        rate: args.requests as f64 / elapsed,
        bytes_per_request: per_request(grown),
        db_per_request: per_request(db.saturating_sub(db_before)),
        values_per_request: per_request(values.saturating_sub(values_before)),
        samples,
    })
}

/// The old template worker's loop: XREADGROUP COUNT 5 BLOCK 100; for each entry one XADD of
/// the result (the template's body, from memory, for a retrieve; the ids of the catalogue for a
/// search), one of the usage event and one XACK. No log, no state beyond the bodies.
fn old_loop(url: &str, bodies: &HashMap<String, String>, n: u64) -> anyhow::Result<()> {
    let streams = StreamSet::default();
    let mut conn = redis::Client::open(url)?.get_connection()?;
    let group = "template-worker";
    let _: redis::Value = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&streams.templates_requests)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut conn)?;
    let mut answered = 0;
    while answered < n {
        let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(group)
            .arg("worker-1")
            .arg("COUNT")
            .arg(5)
            .arg("BLOCK")
            .arg(100)
            .arg("STREAMS")
            .arg(&streams.templates_requests)
            .arg(">")
            .query(&mut conn)?;
        for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            let started = Instant::now();
            let data: String = entry.get("data").context("a request without data")?;
            let request: serde_json::Value = serde_json::from_str(&data)?;
            let operation = request["operation"].as_str().unwrap_or("");
            let template_id = request["template_id"].as_str().unwrap_or("");
            let result = match operation {
                "retrieve" => match bodies.get(template_id) {
                    Some(body) => json!({"template": {"id": template_id, "content": body}}),
                    None => json!(null),
                },
                _ => json!({"templates": bodies.keys().take(20).collect::<Vec<_>>()}),
            };
            let ms = started.elapsed().as_millis() as u64;
            let answer = json!({"request_id": request["request_id"], "template_id": template_id, "status": "success",
                                "result": result, "error": null, "duration_ms": ms, "timestamp": "2026-12-07T10:00:00"});
            let usage = json!({"event_id": format!("evt-{}", entry.id), "template_id": template_id,
                               "tenant_id": request["tenant_id"], "user_id": request["user_id"], "operation": operation,
                               "success": true, "duration_ms": ms, "timestamp": "2026-12-07T10:00:00"});
            let _: String = redis::cmd("XADD")
                .arg(&streams.templates_results)
                .arg("*")
                .arg("data")
                .arg(answer.to_string())
                .query(&mut conn)?;
            let _: String = redis::cmd("XADD")
                .arg(&streams.templates_usage)
                .arg("*")
                .arg("data")
                .arg(usage.to_string())
                .query(&mut conn)?;
            let _: u64 =
                redis::cmd("XACK").arg(&streams.templates_requests).arg(group).arg(&entry.id).query(&mut conn)?;
            answered += 1;
        }
    }
    Ok(())
}

fn old_side(args: &TemplatesArgs, queue: &[Message]) -> anyhow::Result<(f64, Vec<(f64, f64)>)> {
    let server = RedisServer::start(RedisOptions::default()).context("starting a private redis-server")?;
    let mut conn = redis::Client::open(server.url())?.get_connection()?;
    let mut rng = Rng::new(7);
    let bodies: HashMap<String, String> = (0..args.templates)
        .map(|n| {
            let size = 4_000 + rng.below(22_001) as usize;
            (format!("tpl-{n:05}"), template_body(&mut rng, size))
        })
        .collect();
    let url = server.url();
    let n = args.requests;
    let worker = std::thread::spawn(move || old_loop(&url, &bodies, n));
    // The worker creates its group before the queue arrives, as the old service did at start.
    let deadline = Instant::now() + Duration::from_secs(10);
    while crate::groups::group_state(&mut conn, &StreamSet::default().templates_requests, "template-worker").is_none() {
        anyhow::ensure!(Instant::now() < deadline, "the old loop did not create its group");
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    publish_all(&mut conn, queue)?;
    let mut samples = Vec::new();
    wait_results(&mut conn, args.requests, None, &mut samples, started)?;
    let elapsed = started.elapsed().as_secs_f64();
    worker.join().map_err(|_| anyhow::anyhow!("the old loop panicked"))??;
    Ok((args.requests as f64 / elapsed, samples))
}

pub fn templates(args: TemplatesArgs) -> anyhow::Result<()> {
    let exe = match &args.engine {
        Some(path) => path.clone(),
        None => std::env::current_exe()?,
    };
    let mut rng = Rng::new(11);
    let queue: Vec<Message> = (0..args.requests).map(|n| read_request(&mut rng, "read", n, args.templates)).collect();
    println!(
        "bench templates: {} ({} templates of 4-26 KB in one tenant, {} queued retrieves and searches 60/40)",
        exe.display(),
        args.templates,
        args.requests
    );
    let (old_rate, old_samples) = old_side(&args, &queue)?;
    let engine = engine_side(&exe, &args, &queue)?;
    println!(
        "engine {:.0} requests/s, old worker loop {:.0} requests/s: {:.2}x; data dir +{:.0} bytes ({:.2} KiB) per request (sled +{:.0}, value files +{:.0})",
        engine.rate,
        old_rate,
        engine.rate / old_rate,
        engine.bytes_per_request,
        engine.bytes_per_request / 1024.0,
        engine.db_per_request,
        engine.values_per_request
    );
    let chart = Chart { title: "template reads: answers per second", x_label: "s", y_label: "answers/s" };
    write_svg(
        &args.plot,
        chart,
        &[Series::new("engine", engine.samples), Series::new("old worker loop", old_samples)],
    )?;
    println!("plot: {}", args.plot.display());
    Ok(())
}
