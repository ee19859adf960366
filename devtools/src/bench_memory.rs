//! `maestro bench memory`: the engine's peak resident set (VmHWM, read from /proc) with large
//! entries queued before it starts, or all at once while it runs and waits for entries, against
//! the same engine started with nothing queued. Each
//! figure is one engine process, `maestro run` as an operator starts it, so `--engine` can
//! measure another build of the binary with the same procedure.

use crate::redis_server::{RedisOptions, RedisServer};
use anyhow::Context;
use maestro_schemas::StreamSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct MemoryArgs {
    /// Size of each large entry, in MiB (one field of that many bytes).
    #[arg(long, default_value_t = 64)]
    pub entry_mib: usize,
    /// Large entries queued before the engine starts, one engine run per figure (0 = resting).
    #[arg(long, value_delimiter = ',', default_values_t = vec![0, 1, 4])]
    pub queued: Vec<usize>,
    /// Queue the entries while the engine runs, in one MULTI (so they arrive together), instead
    /// of before it starts.
    #[arg(long)]
    pub while_running: bool,
    /// The `maestro` binary to measure (default: this one).
    #[arg(long, value_name = "PATH")]
    pub engine: Option<PathBuf>,
}

/// Stops the engine child whatever happens to the run.
struct Engine(Child);

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Queues `n` entries of `bytes` bytes, one stream after another, in one transaction.
fn queue(conn: &mut redis::Connection, n: usize, bytes: usize) -> anyhow::Result<()> {
    let streams = StreamSet::default();
    let keys: Vec<&str> = streams.all().into_iter().map(|(_, k)| k).collect();
    let payload = vec![b'x'; bytes];
    let mut transaction = redis::pipe();
    transaction.atomic();
    for (i, key) in keys.iter().cycle().take(n).enumerate() {
        transaction.cmd("XADD").arg(*key).arg("*").arg("payload").arg(&payload).arg("n").arg(i).ignore();
    }
    let () = transaction.query(conn)?;
    Ok(())
}

/// Waits until the engine has created its group on every stream, and a moment more, so that it
/// is reading when entries arrive.
fn wait_reading(conn: &mut redis::Connection, streams: &[String], engine: &mut Engine) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !streams.iter().all(|s| crate::groups::group_state(conn, s, "maestro-engine").is_some()) {
        anyhow::ensure!(Instant::now() < deadline, "the engine created no group within 60 s");
        if let Some(status) = engine.0.try_wait()? {
            anyhow::bail!("the engine exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    Ok(())
}

/// One engine run: queue `n` large entries, start the engine, wait until every stream is
/// delivered and acknowledged (and a moment more, so the resting run has settled), then read
/// the engine's peak RSS.
fn run_once(exe: &Path, n: usize, bytes: usize, while_running: bool) -> anyhow::Result<u64> {
    let server = RedisServer::start(RedisOptions::default()).context("starting a private redis-server")?;
    let mut conn = redis::Client::open(server.url())?.get_connection()?;
    if n > 0 && !while_running {
        queue(&mut conn, n, bytes)?;
    }
    let dir = tempfile::tempdir()?;
    let child = Command::new(exe)
        .args(["run", "--redis-url", &server.url(), "--data-dir"])
        .arg(dir.path().join("engine"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let mut engine = Engine(child);
    let streams: Vec<String> = StreamSet::default().all().into_iter().map(|(_, k)| k.to_string()).collect();
    if n > 0 && while_running {
        wait_reading(&mut conn, &streams, &mut engine)?;
        queue(&mut conn, n, bytes)?;
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while !crate::groups::drained(&mut conn, &streams, "maestro-engine") {
        anyhow::ensure!(Instant::now() < deadline, "the engine did not drain {n} entries within 300 s");
        if let Some(status) = engine.0.try_wait()? {
            anyhow::bail!("the engine exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    crate::bench::peak_rss_kib_of(engine.0.id()).context("reading the engine's /proc status")
}

pub fn memory(args: MemoryArgs) -> anyhow::Result<()> {
    let exe = match args.engine {
        Some(path) => path,
        None => std::env::current_exe()?,
    };
    let bytes = args.entry_mib * 1024 * 1024;
    let when = if args.while_running { "queued at once while it runs" } else { "queued before start" };
    println!("bench memory: {} ({} MiB entries {when})", exe.display(), args.entry_mib);
    let mut resting = None;
    for n in args.queued {
        let kib = run_once(&exe, n, bytes, args.while_running)?;
        let mib = kib as f64 / 1024.0;
        if n == 0 {
            resting = Some(mib);
            println!("queued 0: peak RSS {mib:.0} MiB (resting)");
        } else {
            let bound =
                resting.map(|r| format!(", bound resting + 2 x entry = {:.0} MiB", r + 2.0 * args.entry_mib as f64));
            println!("queued {n}: peak RSS {mib:.0} MiB{}", bound.unwrap_or_default());
        }
    }
    Ok(())
}
