//! `maestro bench catalogue`: the engine's memory with a large template catalogue. A private
//! redis-server gets N create requests with realistic bodies (2-60 KB, median about 12 KB) over
//! several tenants; a `maestro run` child process builds the catalogue, its git history and the
//! usage projection; then a few searches and retrieves per tenant make it build each tenant's
//! search index. The child's peak RSS (VmHWM) is read after each phase, and its RSS after each
//! tenth of the reads.

use crate::bench::dir_bytes;
use crate::redis_server::{RedisOptions, RedisServer};
use crate::traffic::{Rng, manifest, publish, template_body};
use anyhow::Context;
use maestro_schemas::StreamSet;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct CatalogueArgs {
    /// Templates to create.
    #[arg(long, default_value_t = 100_000)]
    pub templates: u64,
    /// Tenants they are spread over.
    #[arg(long, default_value_t = 10)]
    pub tenants: u64,
    /// Retrieves of random templates per tenant after the creates (0: searches only).
    #[arg(long, default_value_t = 100)]
    pub retrieves: u64,
    /// Run the engine under this command (for example a profiler), split on spaces.
    #[arg(long, hide = true)]
    pub wrap: Option<String>,
}

/// A create request of about `bytes` of body, for tenant `t`.
fn create(rng: &mut Rng, n: u64, tenants: u64) -> (String, Vec<(String, String)>) {
    let size = match rng.below(10) {
        0..=4 => 2_000 + rng.below(10_000),
        5..=8 => 12_000 + rng.below(14_000),
        _ => 26_000 + rng.below(34_000),
    } as usize;
    let name = format!("service-{n}");
    let data = json!({
        "request_id": format!("bench-{n}"), "template_id": format!("tpl-{n:07}"), "operation": "create",
        "tenant_id": format!("tenant-{}", n % tenants), "user_id": "owner",
        "parameters": {"name": name, "content": template_body(rng, size), "manifest": manifest(rng, &name)},
    });
    (StreamSet::default().templates_requests, vec![("data".into(), data.to_string())])
}

/// After the creates, what a serving engine then does: in each tenant a few searches (which
/// build the tenant's search index) and retrieves of random templates.
fn reads(rng: &mut Rng, templates: u64, tenants: u64, retrieves: u64) -> Vec<(String, Vec<(String, String)>)> {
    let stream = StreamSet::default().templates_requests;
    let mut out = Vec::new();
    for t in 0..tenants.min(templates) {
        let tenant = format!("tenant-{t}");
        for (k, query) in ["service", "production template", "ready"].iter().enumerate() {
            let data = json!({"request_id": format!("search-{t}-{k}"), "operation": "search", "tenant_id": tenant,
                              "user_id": "owner", "parameters": {"query": query, "sort_by": "usage_count"}});
            out.push((stream.clone(), vec![("data".into(), data.to_string())]));
        }
        for k in 0..retrieves {
            // Template n belongs to tenant n % tenants.
            let n = rng.below(templates.div_ceil(tenants)) * tenants + t;
            let n = if n < templates { n } else { t };
            let data = json!({"request_id": format!("retrieve-{t}-{k}"), "operation": "retrieve",
                              "template_id": format!("tpl-{n:07}"), "tenant_id": tenant, "user_id": "owner"});
            out.push((stream.clone(), vec![("data".into(), data.to_string())]));
        }
    }
    out
}

fn proc_status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn results_len(conn: &mut redis::Connection) -> u64 {
    redis::cmd("XLEN").arg(StreamSet::default().templates_results).query(conn).unwrap_or(0)
}

fn stop(mut child: Child) -> anyhow::Result<()> {
    // SIGTERM: the engine finishes its batch and exits cleanly.
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "the engine exited with {status}");
    Ok(())
}

pub fn catalogue(args: CatalogueArgs) -> anyhow::Result<()> {
    let server = RedisServer::start(RedisOptions::default()).context("starting a private redis-server")?;
    let data = tempfile::Builder::new().prefix("maestro-bench-catalogue-").tempdir()?;
    let admins: Vec<String> = (0..args.tenants).map(|t| format!("tenant-{t}:owner")).collect();
    let exe = std::env::current_exe()?;
    let mut command = match &args.wrap {
        Some(wrap) => {
            let mut parts = wrap.split_whitespace();
            let mut command = Command::new(parts.next().context("--wrap is empty")?);
            command.args(parts).arg(&exe);
            command
        }
        None => Command::new(&exe),
    };
    let child = command
        .args(["run", "--redis-url", &server.url(), "--data-dir"])
        .arg(data.path())
        .env("MAESTRO_ADMINS", admins.join(","))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the engine")?;
    let pid = child.id();
    let mut conn = redis::Client::open(server.url())?.get_connection()?;
    let started = Instant::now();
    let (mut rng, mut sent, mut body_bytes, mut peak_seen) = (Rng::new(7), 0u64, 0u64, 0u64);
    while sent < args.templates {
        let chunk: Vec<_> =
            (sent..(sent + 200).min(args.templates)).map(|n| create(&mut rng, n, args.tenants)).collect();
        body_bytes += chunk.iter().map(|(_, f)| f[0].1.len() as u64).sum::<u64>();
        publish(&mut conn, &chunk)?;
        sent += chunk.len() as u64;
        peak_seen = peak_seen.max(proc_status(pid, "VmRSS:"));
        // Keep the producer at most 20,000 requests ahead, as a steady stream of creates.
        while sent - results_len(&mut conn) > 20_000 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(1800);
    while results_len(&mut conn) < args.templates {
        anyhow::ensure!(Instant::now() < deadline, "the engine did not answer every create within 30 minutes");
        peak_seen = peak_seen.max(proc_status(pid, "VmRSS:"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = started.elapsed();
    let after_creates = proc_status(pid, "VmHWM:");
    let reads = reads(&mut rng, args.templates, args.tenants, args.retrieves);
    // The reads go in ten slices, so that the memory's course shows whether it levels off.
    let mut answers = args.templates;
    let mut course = Vec::new();
    for slice in reads.chunks(reads.len().div_ceil(10).max(1)) {
        publish(&mut conn, slice)?;
        answers += slice.len() as u64;
        while results_len(&mut conn) < answers {
            anyhow::ensure!(Instant::now() < deadline, "the engine did not answer the searches and retrieves in time");
            std::thread::sleep(Duration::from_millis(50));
        }
        course.push(format!("{}", proc_status(pid, "VmRSS:") / 1024));
    }
    let peak = proc_status(pid, "VmHWM:");
    stop(child)?;
    let ok: u64 = {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(StreamSet::default().templates_results)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1000)
            .query(&mut conn)?;
        reply
            .ids
            .iter()
            .filter(|e| e.get::<String>("data").is_some_and(|d| d.contains("\"status\":\"success\"")))
            .count() as u64
    };
    println!(
        "{} creates ({:.2} GB of request JSON, bodies 2-60 KB) over {} tenants in {:.1} s: {:.0} creates/s",
        args.templates,
        body_bytes as f64 / 1e9,
        args.tenants,
        elapsed.as_secs_f64(),
        args.templates as f64 / elapsed.as_secs_f64()
    );
    println!(
        "engine peak RSS (VmHWM) {} MiB after the creates ({} MiB sampled), {} MiB after {} searches and retrieves",
        after_creates / 1024,
        peak_seen / 1024,
        peak / 1024,
        reads.len()
    );
    println!("engine RSS after each tenth of the reads: {} MiB", course.join(", "));
    println!(
        "data dir {:.2} GB (log + projections {:.2} GB, value files {:.2} GB, history.git {:.2} GB); last 1000 answers (mostly the searches and retrieves): {ok} successes",
        dir_bytes(data.path()) as f64 / 1e9,
        dir_bytes(&data.path().join("db")) as f64 / 1e9,
        dir_bytes(&data.path().join(maestro_engine::log::VALUE_FILES_DIR)) as f64 / 1e9,
        dir_bytes(&data.path().join("history.git")) as f64 / 1e9,
    );
    Ok(())
}
