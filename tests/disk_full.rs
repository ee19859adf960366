//! R12: the data dir's file system fills up while the engine runs. An entry whose append
//! failed is not acknowledged; `/status` and `/metrics` show storage down within 5 s; once
//! space returns the engine resumes within 10 s, and every entry is recorded exactly once.
//!
//! The data dir lives on a tmpfs of its own, mounted by the test: that needs root (or
//! CAP_SYS_ADMIN), as CI runs; without it the test fails and says so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmpfs mounted on a temporary folder, unmounted when dropped.
struct SmallDisk {
    mount: PathBuf,
    _parent: tempfile::TempDir,
}

impl SmallDisk {
    /// The mount point is the data dir itself, so that the engine's stderr file beside it
    /// (`engine.stderr.log`) stays writable when the disk is full.
    fn mount(size: &str) -> SmallDisk {
        let parent = tempfile::tempdir().unwrap();
        let mount = parent.path().join("engine");
        std::fs::create_dir(&mount).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "maestro-r12"])
            .arg(&mount)
            .output()
            .unwrap_or_else(|e| panic!("R12 needs mount(8) (apt-get install -y mount): {e}"));
        assert!(
            out.status.success(),
            "R12 mounts a small tmpfs for the data dir and needs root (or CAP_SYS_ADMIN) for it; run the \
             tests as root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { mount, _parent: parent }
    }

    /// Writes a file until the file system is full.
    fn fill(&self) -> PathBuf {
        let path = self.mount.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

fn status(addr: &str) -> Option<Value> {
    let (code, body) = http_get(addr, "/status");
    (code == 200).then(|| serde_json::from_str(&body).ok()).flatten()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "not within {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

fn storage_ok(addr: &str) -> Option<bool> {
    status(addr).and_then(|s| s["storage_ok"].as_bool())
}

fn metric(addr: &str, name: &str) -> Option<f64> {
    let (_, body) = http_get(addr, "/metrics");
    body.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
}

/// Entries of `produced` the group holds as delivered but no longer pending: acknowledged.
fn acknowledged(conn: &mut redis::Connection, produced: &[(String, String)]) -> Vec<(String, String)> {
    let parse = |id: &str| maestro_schemas::EntryId::parse(id).unwrap();
    let mut acked = Vec::new();
    for (stream, id) in produced {
        let rows: Vec<redis::Value> =
            redis::cmd("XPENDING").arg(stream).arg(GROUP).arg(id).arg(id).arg(1).query(conn).unwrap();
        let delivered =
            maestro::groups::group_state(conn, stream, GROUP).is_some_and(|(last, _)| parse(&last) >= parse(id));
        if delivered && rows.is_empty() {
            acked.push((stream.clone(), id.clone()));
        }
    }
    acked
}

#[test]
fn r12_a_full_disk_stops_acknowledgement_shows_and_resumes_when_space_returns() {
    let disk = SmallDisk::mount("48m");
    let dir = disk.mount.clone();
    let server = redis(false);
    let mut conn = connect(&server);
    let addr = free_http_addr();
    let mut engine = EngineProc::start_with(&server.url(), &dir, &[], &["--http", &addr]);
    let mut produced = produce(&mut conn, 300, 41, true);
    wait_drained(&mut conn, Duration::from_secs(60));
    wait_for("storage ok at first", Duration::from_secs(15), || storage_ok(&addr) == Some(true));

    let filler = disk.fill();
    let while_full = produce(&mut conn, 300, 42, true);
    let shown = wait_for("storage shown down", Duration::from_secs(5), || storage_ok(&addr) == Some(false));
    assert_eq!(metric(&addr, "maestro_storage_ok"), Some(0.0), "/metrics shows storage down");
    std::thread::sleep(Duration::from_secs(1));
    let acked = acknowledged(&mut conn, &while_full);
    assert!(
        acked.is_empty(),
        "{} entries produced on a full disk were acknowledged, first {:?}",
        acked.len(),
        acked[0]
    );
    assert!(!drained(&mut conn), "entries wait while the disk is full");

    std::fs::remove_file(&filler).unwrap();
    let resumed = wait_for("resumed after space returned", Duration::from_secs(10), || {
        storage_ok(&addr) == Some(true) && drained(&mut conn)
    });
    produced.extend(while_full);
    assert!(engine.terminate().success(), "{}", engine.stderr());
    assert!(engine.stderr().contains("storage failed"), "the failure is logged:\n{}", engine.stderr());
    eprintln!("storage shown down after {shown:?}; resumed {resumed:?} after space returned");
    assert_exactly_once(&produced, &export(&dir));
}
