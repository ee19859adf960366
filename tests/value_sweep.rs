//! Value files: the running engine removes the ones nothing refers to (at start, and every
//! `value_sweep_interval_ms`) and keeps every file its store refers to; each is durable (data,
//! name and folder fsynced) before the state batch that refers to it commits, as the engine's
//! system calls under `strace` show. Real `redis-server`, the engine binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const REQUESTS: &str = "maestro:streams:templates:requests";

fn send(conn: &mut redis::Connection, id: &str, op: &str, parameters: Value) {
    let data = json!({"request_id": id, "operation": op, "tenant_id": "acme", "user_id": "alice",
        "template_id": "tpl-api", "parameters": parameters});
    redis::cmd("XADD").arg(REQUESTS).arg("*").arg("data").arg(data.to_string()).query::<String>(conn).unwrap();
}

fn files(dir: &Path) -> HashSet<PathBuf> {
    let mut out = HashSet::new();
    for folder in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(folder.path()).into_iter().flatten().flatten() {
            out.insert(file.path());
        }
    }
    out
}

/// A value file no state refers to, as a replaced body leaves one.
fn plant_orphan(values: &Path, text: &str) -> PathBuf {
    let bytes = text.repeat(300).into_bytes();
    let name = blake3::hash(&bytes).to_hex().to_string();
    let path = values.join(&name[..2]).join(&name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The value files the stopped engine's store refers to.
fn referenced(dir: &Path, values: &Path) -> HashSet<PathBuf> {
    let (_dir, log) = maestro_replay::open_log(dir).unwrap();
    let store = log.store().unwrap();
    store
        .referenced_files()
        .unwrap()
        .into_iter()
        .map(|hash| {
            let name = maestro_schemas::record::hex(&hash);
            values.join(&name[..2]).join(name)
        })
        .collect()
}

#[test]
fn the_running_engine_removes_unreferenced_value_files_and_keeps_referenced_ones() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let values = dir.join(maestro_engine::log::VALUE_FILES_DIR);
    let body = |seed, bytes| maestro::traffic::template_body(&mut maestro::traffic::Rng::new(seed), bytes);
    let env = [("MAESTRO_ADMINS", "acme:alice"), ("MAESTRO_VALUE_SWEEP_INTERVAL_MS", "200")];
    let mut engine = EngineProc::start(&server.url(), &dir, &env);
    send(&mut conn, "c1", "create", json!({"name": "api", "content": body(1, 8_000), "manifest": manifest("api")}));
    wait_drained(&mut conn, Duration::from_secs(30));
    send(&mut conn, "u1", "update", json!({"content": body(2, 30_000), "version": "1.1.0"}));
    wait_drained(&mut conn, Duration::from_secs(30));
    // Planted after the update committed: once it is gone, a sweep ran after that commit.
    let orphan = plant_orphan(&values, "replaced body ");
    let deadline = Instant::now() + Duration::from_secs(20);
    while orphan.exists() {
        assert!(Instant::now() < deadline, "the running engine never removed {}", orphan.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(engine.terminate().success(), "{}", engine.stderr());
    let kept = referenced(&dir, &values);
    assert!(kept.len() >= 2, "the bodies are value files: {kept:?}");
    assert_eq!(files(&values), kept, "exactly the files the store refers to are left");

    // At start, before the first read, with no periodic sweep due for ten minutes.
    let orphan = plant_orphan(&values, "left by a crash ");
    let mut engine = EngineProc::start(&server.url(), &dir, &[env[0]]);
    engine.wait_connected();
    assert!(!orphan.exists(), "the engine removed the unreferenced file at start");
    send(&mut conn, "r1", "retrieve", json!({}));
    wait_drained(&mut conn, Duration::from_secs(30));
    assert!(engine.terminate().success(), "{}", engine.stderr());
    assert_eq!(files(&values), kept, "every referenced file stayed");
    let (code, out, err) = maestro(&["replay", "check", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(code, Some(0), "every value reads back: {out}{err}");
}

/// The engine's file system calls that make data durable, as `strace -y` prints them (each fd
/// with its path), in the order they returned.
fn durability_calls(trace: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(trace).unwrap();
    let calls = ["fsync(", "fdatasync(", "rename(", "renameat(", "renameat2("];
    text.lines()
        .filter(|line| line.ends_with("= 0") && calls.iter().any(|c| line.contains(c)))
        .map(str::to_string)
        .collect()
}

fn position(calls: &[String], after: usize, what: &str, matches: impl Fn(&str) -> bool) -> usize {
    calls
        .iter()
        .skip(after)
        .position(|c| matches(c))
        .map(|i| i + after)
        .unwrap_or_else(|| panic!("no {what} after call {after}; the engine's durability calls:\n{}", calls.join("\n")))
}

#[test]
fn a_value_file_is_fsynced_with_its_name_before_the_state_that_refers_to_it_commits() {
    let strace = std::process::Command::new("strace").arg("-V").output();
    assert!(
        strace.is_ok_and(|o| o.status.success()),
        "strace is needed to watch the engine's fsyncs: sudo apt-get install -y strace"
    );
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let trace = data.path().join("strace.txt");
    let mut traced = std::process::Command::new("strace")
        .args(["-f", "-qq", "-y", "-e", "signal=none", "-e", "trace=fsync,fdatasync,rename,renameat,renameat2", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_maestro"))
        .args(["run", "--redis-url", &server.url(), "--data-dir"])
        .arg(&dir)
        .env("RUST_LOG", "warn")
        .env("MAESTRO_ADMINS", "acme:alice")
        .env_remove("MAESTRO_REDIS_URL")
        .env_remove("MAESTRO_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let body = maestro::traffic::template_body(&mut maestro::traffic::Rng::new(7), 9_000);
    send(&mut conn, "c1", "create", json!({"name": "api", "content": body, "manifest": manifest("api")}));
    wait_drained(&mut conn, Duration::from_secs(60));
    // The engine is strace's child: stop it cleanly, and strace ends with it.
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", traced.id())).unwrap();
    sigterm(children.split_whitespace().next().expect("strace runs the engine").parse().unwrap());
    assert!(traced.wait().unwrap().success());

    let calls = durability_calls(&trace);
    let values = format!("/{}/", maestro_engine::log::VALUE_FILES_DIR);
    let renamed = position(&calls, 0, "value file named", |c| c.contains("rename") && c.contains(&values));
    let names: Vec<&str> = calls[renamed].split('"').skip(1).step_by(2).collect();
    let [temporary, final_name] = names[..] else { panic!("rename's two paths: {}", calls[renamed]) };
    let folder = Path::new(final_name).parent().unwrap().to_str().unwrap().to_string();
    let data_synced = position(&calls, 0, "fsync of the value's data", |c| c.contains(&format!("<{temporary}>")));
    assert!(data_synced < renamed, "the data is durable before it gets its name:\n{}", calls.join("\n"));
    let name_synced = position(&calls, renamed, "fsync of the value's folder", |c| c.contains(&format!("<{folder}>")));
    let store = format!("{}/{}/", dir.display(), maestro_engine::datadir::STORE_DIR);
    position(&calls, name_synced, "sled commit after the value is durable", |c| c.contains(&store));
}
