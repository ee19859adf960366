//! Stalls (R4): Redis behind a proxy that blackholes every connection for 10 s, then resets
//! every connection every 2 s under load. The engine reports itself not ready during the stall,
//! resumes when it heals, never deadlocks, and loses nothing. The times are printed (the
//! reliability table quotes them); the bounds asserted are generous, timings belong to benches.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::chaos::ChaosProxy;
use common::*;
use std::time::{Duration, Instant};

/// Waits until `/readyz` says `ready`; returns how long that took.
fn wait_ready(addr: &str, ready: bool, timeout: Duration) -> Duration {
    let started = Instant::now();
    let wanted = if ready { 200 } else { 503 };
    while started.elapsed() < timeout {
        let code = std::net::TcpStream::connect(addr).map(|_| http_get(addr, "/readyz").0).unwrap_or(0);
        if code == wanted {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("/readyz did not turn {wanted} within {timeout:?}");
}

#[test]
fn a_blackholed_or_resetting_connection_is_reported_survived_and_loses_nothing() {
    let server = redis(true);
    let mut conn = connect(&server);
    let proxy = ChaosProxy::start(&server.addr());
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let addr = free_http_addr();
    let env = [("MAESTRO_INFO_INTERVAL_MS", "100")];
    let mut engine = EngineProc::start_with(&proxy.url(), &dir, &env, &["--http", &addr]);
    let mut produced = produce(&mut conn, 180, 31, true);
    wait_drained(&mut conn, Duration::from_secs(60));
    wait_ready(&addr, true, Duration::from_secs(15));

    proxy.blackhole(true);
    let stalled = Instant::now();
    produced.extend(produce(&mut conn, 180, 32, true));
    let degraded = wait_ready(&addr, false, Duration::from_secs(15));
    println!("blackhole: not ready after {degraded:?}");
    std::thread::sleep(Duration::from_secs(10).saturating_sub(stalled.elapsed()));
    assert!(engine.child.try_wait().unwrap().is_none(), "the engine exited during the stall");
    proxy.blackhole(false);
    let healed = Instant::now();
    wait_drained(&mut conn, Duration::from_secs(60));
    println!("blackhole healed: drained {:?} later", healed.elapsed());
    wait_ready(&addr, true, Duration::from_secs(30));

    for round in 0..5 {
        produced.extend(produce(&mut conn, 90, 40 + round, true));
        std::thread::sleep(Duration::from_secs(2));
        proxy.reset();
    }
    let last_reset = Instant::now();
    wait_drained(&mut conn, Duration::from_secs(60));
    println!("resets every 2 s: drained {:?} after the last", last_reset.elapsed());
    assert!(engine.terminate().success(), "{}", engine.stderr());
    engine.assert_no_panic();
    assert_eq!(total_pending(&mut conn), 0);
    assert_exactly_once(&produced, &export(&dir));
}
