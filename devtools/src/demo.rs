//! `maestro demo`: the engine doing its job on a realistic mix, start to finish, in one command.

use crate::redis_server::{RedisOptions, RedisServer};
use crate::traffic::{Message, Traffic, publish};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use maestro_effects::domains::DomainSettings;
use maestro_engine::config::EngineConfig;
use maestro_engine::status::Health;
use maestro_handlers::stream_stats::{NAME as STATS, StreamStats};
use maestro_schemas::StreamSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Entries to publish across the nine streams.
    #[arg(long, default_value_t = 20_000)]
    pub entries: u64,
    /// Data dir for the engine (default: a new temporary directory, kept afterwards so that
    /// `maestro export` and `maestro verify` can read it).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Seed of the generated traffic.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// The Redis the demo talks to: the one `MAESTRO_REDIS_URL` names when it answers, else a
/// private server (kept alive by the returned handle). On a named Redis the demo's stream keys
/// get a prefix of their own, so it never writes into streams the user already has.
fn pick_redis() -> anyhow::Result<(String, Option<RedisServer>, StreamSet)> {
    if let Ok(url) = std::env::var("MAESTRO_REDIS_URL") {
        let answers = redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok();
        if answers {
            let prefix = format!("maestro-demo-{}", std::process::id());
            println!("using the Redis at MAESTRO_REDIS_URL={url}, stream keys prefixed with {prefix}:");
            return Ok((url, None, prefixed(&prefix)));
        }
        println!("nothing answers at MAESTRO_REDIS_URL={url}; starting a private redis-server instead");
    }
    let server = RedisServer::start(RedisOptions::default()).context("starting a private redis-server")?;
    println!("started a private redis-server on {} (data in {})", server.addr(), server.dir().display());
    // The demo plays the validator of applied fixes too, so it reads the validation stream.
    let streams = StreamSet {
        automation_errors: Some("maestro:streams:automation:errors".into()),
        automation_validation: Some("maestro:streams:automation:validation".into()),
        ..StreamSet::default()
    };
    Ok((server.url(), Some(server), streams))
}

fn prefixed(prefix: &str) -> StreamSet {
    let d = StreamSet::default();
    let p = |key: &str| format!("{prefix}:{key}");
    StreamSet {
        templates_requests: p(&d.templates_requests),
        templates_results: p(&d.templates_results),
        templates_usage: p(&d.templates_usage),
        automation_jobs: p(&d.automation_jobs),
        automation_healing: p(&d.automation_healing),
        automation_results: p(&d.automation_results),
        automation_errors: Some(p("maestro:streams:automation:errors")),
        automation_validation: Some(p("maestro:streams:automation:validation")),
        k8s_jobs: p(&d.k8s_jobs),
        k8s_results: p(&d.k8s_results),
        k8s_status: p(&d.k8s_status),
    }
}

/// Three entries that the engine must park, not process: bad JSON, a missing field, and one
/// byte over the 1 MiB entry limit.
fn poison(streams: &StreamSet) -> Vec<Message> {
    vec![
        (streams.templates_requests.clone(), vec![("data".into(), "{\"request_id\": \"req-broken\", ".into())]),
        (streams.k8s_jobs.clone(), vec![("type".into(), "execute_ephemeral_test".into())]),
        (streams.automation_healing.clone(), vec![("payload".into(), "x".repeat(1024 * 1024 + 1 - "payload".len()))]),
    ]
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style =
        ProgressStyle::with_template(&format!("{what:>10} [{{bar:40}}] {{pos}}/{{len}} {{per_sec}} eta {{eta}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar
}

/// Publishes the mix (and the poison) from a blocking thread, with a progress bar.
async fn produce(url: String, streams: StreamSet, entries: u64, seed: u64) -> anyhow::Result<u64> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let mut conn = redis::Client::open(url.as_str())?.get_connection()?;
        let mut traffic = Traffic::new(seed, streams.clone());
        let progress = bar(entries, "publish");
        let mut sent = 0;
        while sent < entries {
            let chunk: Vec<Message> = (0..(entries - sent).min(500)).map(|_| traffic.next_message()).collect();
            publish(&mut conn, &chunk)?;
            sent += chunk.len() as u64;
            progress.set_position(sent);
        }
        progress.finish();
        let bad = poison(&streams);
        publish(&mut conn, &bad)?;
        Ok(sent + bad.len() as u64)
    })
    .await?
}

pub async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let (url, _server, streams) = pick_redis()?;
    let data_dir = match args.data_dir {
        Some(dir) => dir,
        None => tempfile::Builder::new().prefix("maestro-demo-").tempdir()?.keep(),
    };
    println!("engine data dir: {}", data_dir.display());
    let config = EngineConfig {
        redis_url: url.clone(),
        data_dir: data_dir.clone(),
        streams: streams.clone(),
        // Clock records twice a second, so that the scenario's short TTL runs out quickly.
        clock_interval_ms: 500,
        ..EngineConfig::default()
    };
    let domain_settings = DomainSettings {
        // Every demo user is an admin of its tenant, so that creates reach the quality gate.
        admins: (0..8).flat_map(|t| (0..50).map(move |u| format!("tenant-{t}:user-{u}"))).collect(),
        // The compressed traffic asks for hundreds of environments at once, and no cluster
        // finishes them: a cap of 10 would queue nearly all.
        max_active_environments: 1000,
        ..DomainSettings::default()
    };
    let config_group = config.group.clone();
    let status = Arc::new(Health::default());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let engine = tokio::spawn(maestro_engine::runtime::run(
        config.clone(),
        maestro_effects::domains::domains(&config, &domain_settings),
        status.clone(),
        shutdown,
    ));

    let started = Instant::now();
    let published = produce(url.clone(), streams.clone(), args.entries, args.seed).await?;
    let ingest = bar(published, "ingest");
    let deadline = Instant::now() + Duration::from_secs(120);
    let keys: Vec<String> = streams.all().into_iter().map(|(_, k)| k.to_string()).collect();
    let mut conn = redis::Client::open(url.as_str())?.get_connection()?;
    // Done when Redis says the group was delivered every entry (the engine's own answers
    // included) and acknowledged them all.
    while !crate::groups::drained(&mut conn, &keys, &config_group) {
        ingest.set_position(status.entries_acked.load(Ordering::Relaxed).min(published));
        if engine.is_finished() || Instant::now() > deadline {
            let _ = stop.send(true);
            let snap = status.snapshot();
            anyhow::bail!(
                "the engine did not catch up: {} of {published} entries recorded; last error: {}",
                snap.records_appended,
                snap.last_error
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    ingest.finish();
    let orchestrator = crate::heal_demo::run(&mut conn, &streams)?;
    crate::exec_demo::run(&mut conn, &streams)?;
    let _ = stop.send(true);
    engine.await?.context("engine")?;

    let snap = status.snapshot();
    println!();
    println!(
        "ingested {published} entries in {:.2} s ({:.0} entries/s, publishing included)",
        elapsed.as_secs_f64(),
        published as f64 / elapsed.as_secs_f64()
    );
    println!(
        "records appended {}, entries acked {}, dead-lettered {}",
        snap.records_appended, snap.entries_acked, snap.dead_lettered
    );
    print_stream_table(&data_dir)?;
    print_template_answers(&mut conn, &streams.templates_results)?;
    {
        let (_dir, log) = maestro_replay::open_log(&data_dir)?;
        let store = log.store()?;
        crate::report::print_catalogue(&store)?;
        crate::report::print_usage(&store)?;
        crate::report::print_healing(&store, &orchestrator)?;
        crate::report::print_environments(&store)?;
    }
    let report = maestro_replay::verify(&data_dir)?;
    println!(
        "verify: ok, {} records, checksums and hash chain intact (head {})",
        report.records,
        &report.head_hash[..16]
    );
    let dir = data_dir.display();
    println!("\nlook closer: maestro export --data-dir {dir} | head");
    println!("             maestro replay state --data-dir {dir} --projection templates --tenant tenant-3 | head -40");
    println!("             maestro replay state --data-dir {dir} --projection healing | head -40");
    println!("             maestro manifests demo-exec-05 --data-dir {dir}    (YAML for kubectl apply -f -)");
    println!("             maestro verify --data-dir {dir}    (chain, indexes, replay equals live)");
    println!("             git --git-dir {dir}/history.git log --stat tenants/tenant-3 | head -20");
    Ok(())
}

fn print_stream_table(data_dir: &Path) -> anyhow::Result<()> {
    let (_dir, log) = maestro_replay::open_log(data_dir)?;
    let store = log.store()?;
    println!("\n{:<40} {:>8} {:>9} {:>9} {:>6}  last entry id", "stream", "records", "accepted", "rejected", "own");
    for (key, value) in store.entries(STATS)? {
        let counts = StreamStats::decode(&value)?;
        println!(
            "{:<40} {:>8} {:>9} {:>9} {:>6}  {}",
            String::from_utf8_lossy(&key),
            counts.records,
            counts.accepted,
            counts.rejected,
            counts.own,
            counts.last_id
        );
    }
    Ok(())
}

/// What the template registry answered: results by status, and the most common errors.
fn print_template_answers(conn: &mut redis::Connection, results: &str) -> anyhow::Result<()> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE").arg(results).arg("-").arg("+").query(conn)?;
    let mut statuses: std::collections::BTreeMap<String, u64> = Default::default();
    let mut errors: std::collections::BTreeMap<String, u64> = Default::default();
    for entry in reply.ids.iter().filter(|e| e.map.contains_key("origin")) {
        let data: String = entry.get("data").unwrap_or_default();
        let value: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
        *statuses.entry(value["status"].as_str().unwrap_or("?").to_string()).or_default() += 1;
        if let Some(error) = value["error"].as_str() {
            // Group errors by their wording, with the quoted names left out.
            let kind: String = error.split('"').step_by(2).collect::<Vec<_>>().join("…");
            *errors.entry(kind).or_default() += 1;
        }
    }
    println!("\ntemplate registry answers: {statuses:?}");
    let mut top: Vec<_> = errors.into_iter().collect();
    top.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    for (kind, n) in top.into_iter().take(4) {
        println!("  {n:>6}  {kind}");
    }
    Ok(())
}
