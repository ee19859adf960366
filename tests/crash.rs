//! Crash safety: kill -9 of the engine at random points under load (R1 quick profile), and
//! Redis killed and restarted under the engine, once with its data and once empty (R3 quick).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use maestro::traffic::Rng;
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What the producer sent: every entry, the template searches (each must be answered once)
/// and the bad entries (each must be dead-lettered once).
#[derive(Default)]
struct Produced {
    entries: Vec<(String, String)>,
    searches: Vec<String>,
    bad: Vec<(String, String)>,
}

/// Produces `n` entries in chunks at a steady pace from another thread; each chunk ends with
/// a template search and two bad entries of the flood's mix.
fn background_producer(
    url: String,
    n: u64,
    seed: u64,
    pace: Duration,
) -> (std::thread::JoinHandle<Produced>, Arc<AtomicBool>) {
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let handle = std::thread::spawn(move || {
        let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
        let mut traffic = maestro::traffic::Traffic::new(seed, maestro_schemas::StreamSet::default());
        let mut produced = Produced::default();
        let mut i = 0;
        while i < n {
            let chunk: Vec<_> = (i..(i + 200).min(n))
                .map(|k| if k % 10 == 0 { traffic.next_message() } else { traffic.control_message(k) })
                .collect();
            produced.entries.extend(produce_messages(&mut conn, &chunk));
            let search = format!("crash-{i}");
            let id = maestro::flood::send_search(&mut conn, &search).unwrap();
            produced.entries.push(("maestro:streams:templates:requests".to_string(), id));
            produced.searches.push(search);
            for bad in [i, i + 1] {
                let bad = maestro::flood::send_bad(&mut conn, bad).unwrap();
                produced.entries.push(bad.clone());
                produced.bad.push(bad);
            }
            i += chunk.len() as u64;
            std::thread::sleep(pace);
        }
        flag.store(true, Ordering::SeqCst);
        produced
    });
    (handle, done)
}

#[test]
fn kill_minus_nine_at_random_points_loses_nothing_and_duplicates_nothing() {
    let seed = std::env::var("TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_u64);
    println!("seed {seed} (set TEST_SEED to repeat)");
    let mut rng = Rng::new(seed);
    let server = redis(true);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let (producer, done) = background_producer(server.url(), 20_000, seed, Duration::from_millis(60));
    let env = [("MAESTRO_CLAIM_MIN_IDLE_MS", "1000")];
    let mut kills = 0;
    let mut startup_kills = 0;
    while kills < 12 || !done.load(Ordering::SeqCst) {
        let mut engine = EngineProc::start(&server.url(), &dir, &env);
        // Two kills land during start-up, the rest at random points of the load.
        let wait = if startup_kills < 2 { rng.below(30) } else { 100 + rng.below(600) };
        std::thread::sleep(Duration::from_millis(wait));
        let status = engine.kill();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "the engine died on its own: {status:?}\n{}", engine.stderr());
        engine.assert_no_panic();
        if startup_kills < 2 {
            startup_kills += 1;
        }
        kills += 1;
        if kills > 60 {
            panic!("producer did not finish");
        }
    }
    let produced = producer.join().unwrap();
    let started = Instant::now();
    let mut engine = EngineProc::start(&server.url(), &dir, &env);
    engine.wait_connected();
    println!("{kills} kills; ready again in {:?}", started.elapsed());
    wait_drained(&mut conn, Duration::from_secs(120));
    println!("drained the rest in {:?}", started.elapsed());
    assert!(engine.terminate().success(), "{}", engine.stderr());
    engine.assert_no_panic();
    assert_eq!(total_pending(&mut conn), 0);
    let records = export(&dir);
    assert_exactly_once(&produced.entries, &records);
    let answers = answers_to(&mut conn, "crash-");
    let wrong: Vec<_> = produced.searches.iter().filter(|id| answers.get(*id) != Some(&1)).collect();
    assert!(wrong.is_empty(), "{} searches not answered exactly once, first {:?}", wrong.len(), wrong.first());
    assert_dead_lettered_once(&mut conn, &produced.bad);
    assert!(maestro_replay::verify(&dir).is_ok());
}

#[test]
fn redis_killed_and_restarted_is_survived_and_an_empty_restart_recreates_the_group() {
    let mut server = redis(true);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let mut engine = EngineProc::start(&server.url(), &dir, &[]);
    let mut produced = produce(&mut connect(&server), 1_800, 7, true);
    wait_drained(&mut connect(&server), Duration::from_secs(60));

    for down in [Duration::from_millis(200), Duration::from_secs(1)] {
        server.kill();
        std::thread::sleep(down);
        server.restart().unwrap();
        produced.extend(produce(&mut connect(&server), 900, 8 + down.as_millis() as u64, true));
        let resumed = Instant::now();
        wait_drained(&mut connect(&server), Duration::from_secs(30));
        println!("Redis down {down:?}: drained {:?} after it came back", resumed.elapsed());
        assert!(engine.child.try_wait().unwrap().is_none(), "the engine never exits because Redis went away");
    }

    // Redis comes back with nothing: no streams, no group. The engine recreates the group at
    // its own high-water mark and records what producers write from then on.
    server.restart_empty().unwrap();
    let after_loss = produce(&mut connect(&server), 450, 11, true);
    wait_drained(&mut connect(&server), Duration::from_secs(30));
    assert!(engine.terminate().success(), "{}", engine.stderr());
    engine.assert_no_panic();
    produced.extend(after_loss);
    assert_exactly_once(&produced, &export(&dir));
    // Every outage is logged when it starts and when it ends, not only the first one.
    let stderr = engine.stderr();
    let (started, ended) =
        (stderr.matches("redis unavailable").count(), stderr.matches("redis available again").count());
    assert!(started >= 2 && started == ended, "{started} outages logged, {ended} ends:\n{stderr}");
}
