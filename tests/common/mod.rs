//! Test harness: real `redis-server` processes on free ports in temp dirs, the `maestro` binary
//! as a child process that can be killed, and checks that compare what was produced with what
//! the log, the pending lists and the dead-letter streams hold.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod chaos;
pub mod python;

pub use maestro::redis_server::{RedisOptions, RedisServer};
use maestro::traffic::{Message, Traffic, publish};
use maestro_schemas::StreamSet;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const GROUP: &str = "maestro-engine";

/// A private Redis; fails the test, saying how to install it, when `redis-server` is missing.
pub fn redis(durable: bool) -> RedisServer {
    RedisServer::start(RedisOptions { durable, extra: vec![] }).unwrap_or_else(|e| panic!("{e}"))
}

pub fn connect(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url()).unwrap().get_connection().unwrap()
}

pub fn streams() -> Vec<String> {
    StreamSet::default().all().into_iter().map(|(_, k)| k.to_string()).collect()
}

/// Publishes `n` entries of the realistic mix (or ~300 B control messages); returns
/// (stream, id) of each, in order.
pub fn produce(conn: &mut redis::Connection, n: u64, seed: u64, control: bool) -> Vec<(String, String)> {
    let mut traffic = Traffic::new(seed, StreamSet::default());
    let messages: Vec<Message> =
        (0..n).map(|i| if control { traffic.control_message(i) } else { traffic.next_message() }).collect();
    produce_messages(conn, &messages)
}

pub fn produce_messages(conn: &mut redis::Connection, messages: &[Message]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for chunk in messages.chunks(500) {
        let ids = publish(conn, chunk).unwrap();
        out.extend(chunk.iter().map(|(s, _)| s.clone()).zip(ids));
    }
    out
}

/// The engine binary as a child process.
pub struct EngineProc {
    pub child: Child,
    pub stderr_path: PathBuf,
    /// How many times the shared stderr file said "connected to redis" before this start.
    connected_before: usize,
}

const CONNECTED: &str = "connected to redis";

impl EngineProc {
    pub fn start(redis_url: &str, data_dir: &Path, env: &[(&str, &str)]) -> EngineProc {
        Self::start_with(redis_url, data_dir, env, &[])
    }

    pub fn start_with(redis_url: &str, data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> EngineProc {
        let data_dir = data_dir.to_str().expect("a UTF-8 data dir path");
        let run = [&["run", "--redis-url", redis_url, "--data-dir", data_dir][..], args].concat();
        Self::spawn(&run, &Path::new(data_dir).with_extension("stderr.log"), env)
    }

    /// `maestro` with `args` (any subcommand) as a child process, `RUST_LOG=info`, its stderr
    /// appended to `stderr_path`; the caller's Redis and config variables are not passed on.
    pub fn spawn(args: &[&str], stderr_path: &Path, env: &[(&str, &str)]) -> EngineProc {
        let connected_before = std::fs::read_to_string(stderr_path).unwrap_or_default().matches(CONNECTED).count();
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(stderr_path).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_maestro"));
        cmd.args(args).env("RUST_LOG", "info").env_remove("MAESTRO_REDIS_URL").env_remove("MAESTRO_CONFIG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr).spawn().unwrap();
        EngineProc { child, stderr_path: stderr_path.to_path_buf(), connected_before }
    }

    /// Waits until this start of the engine has connected to Redis (at most 15 s).
    pub fn wait_connected(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.stderr().matches(CONNECTED).count() <= self.connected_before {
            assert!(Instant::now() < deadline, "the engine did not connect within 15 s:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY-free: libc::kill only sends a signal to our own child.
        let pid = self.child.id() as i32;
        assert_eq!(unsafe_kill(pid, signal), 0, "kill({pid}, {signal}) failed");
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.child.wait().unwrap()
    }

    /// SIGTERM and wait (at most 15 s) for a clean exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_for(Duration::from_secs(15)).unwrap_or_else(|| {
            let _ = self.child.kill();
            panic!("engine did not stop within 15 s of SIGTERM; stderr:\n{}", self.stderr())
        })
    }

    pub fn wait_for(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// No panic ever: exit code 101 or a "panicked at" line is a failed test.
    pub fn assert_no_panic(&self) {
        let stderr = self.stderr();
        assert!(!stderr.contains("panicked at") && !stderr.contains("internal panic"), "engine panicked:\n{stderr}");
    }
}

impl Drop for EngineProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(unsafe_code)]
fn unsafe_kill(pid: i32, signal: i32) -> i32 {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, signal) }
}

pub fn sigterm(pid: u32) {
    assert_eq!(unsafe_kill(pid as i32, libc::SIGTERM), 0);
}

pub fn sigstop(pid: u32) {
    assert_eq!(unsafe_kill(pid as i32, libc::SIGSTOP), 0);
}

pub fn sigcont(pid: u32) {
    assert_eq!(unsafe_kill(pid as i32, libc::SIGCONT), 0);
}

fn group_state(conn: &mut impl redis::ConnectionLike, stream: &str) -> Option<(String, u64)> {
    maestro::groups::group_state(conn, stream, GROUP)
}

/// True once every stream's group has been delivered everything and has nothing pending.
pub fn drained(conn: &mut impl redis::ConnectionLike) -> bool {
    maestro::groups::drained(conn, &streams(), GROUP)
}

pub fn wait_drained(conn: &mut impl redis::ConnectionLike, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if drained(conn) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "streams not drained within {timeout:?}: {:?}",
        streams().iter().map(|s| (s.clone(), group_state(conn, s))).collect::<Vec<_>>()
    );
}

/// Total pending entries of the group over all streams.
pub fn total_pending(conn: &mut impl redis::ConnectionLike) -> u64 {
    streams().iter().filter_map(|s| group_state(conn, s)).map(|(_, p)| p).sum()
}

/// The log as exported JSON lines (the engine must be stopped).
pub fn export(data_dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    maestro_replay::export(data_dir, 1, None, &mut out).unwrap();
    String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// How often each (stream, id) appears among the log's entry records, the engine's own outputs
/// read back left out.
pub fn recorded(records: &[Value]) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for r in records.iter().filter(|r| r.get("stream").is_some() && r["status"] != "own") {
        *out.entry((r["stream"].as_str().unwrap().to_string(), r["id"].as_str().unwrap().to_string())).or_insert(0) +=
            1;
    }
    out
}

/// Jepsen-style buckets: produced entries missing from the log, and entries recorded twice.
pub fn assert_exactly_once(produced: &[(String, String)], records: &[Value]) {
    let seen = recorded(records);
    let lost: Vec<_> = produced.iter().filter(|k| !seen.contains_key(*k)).collect();
    let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(lost.is_empty(), "{} entries lost, first {:?}", lost.len(), lost.first());
    assert!(duplicated.is_empty(), "{} entries recorded twice, first {:?}", duplicated.len(), duplicated.first());
    assert_eq!(seen.len(), produced.len(), "the log holds entries nobody produced");
}

/// Reads a whole stream as (id, fields).
pub fn read_stream(conn: &mut impl redis::ConnectionLike, stream: &str) -> Vec<(String, HashMap<String, String>)> {
    let reply: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg(stream).arg("-").arg("+").query(conn).unwrap();
    reply
        .ids
        .into_iter()
        .map(|e| {
            let fields = e
                .map
                .iter()
                .map(|(k, v)| (k.clone(), redis::from_redis_value_ref::<String>(v).unwrap_or_default()))
                .collect();
            (e.id, fields)
        })
        .collect()
}

/// Runs the `maestro` binary to completion: (exit code, stdout, stderr).
pub fn maestro(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_maestro")).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Opens a data dir's sled directly, retrying while a previous handle's flusher thread lets go
/// of the files (it can hold them for a flush interval after the drop).
pub fn open_sled(dir: &Path) -> sled::Db {
    open_sled_at(&dir.join("db"))
}

/// The projection store's sled database of a stopped engine's data dir (`store/`).
pub fn open_store_sled(dir: &Path) -> sled::Db {
    open_sled_at(&dir.join(maestro_engine::datadir::STORE_DIR))
}

fn open_sled_at(path: &Path) -> sled::Db {
    for _ in 0..200 {
        if let Ok(db) = sled::open(path) {
            return db;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    sled::open(path).unwrap()
}

/// Rewrites a stopped engine's data dir into the layout of builds that kept the projection
/// store's trees in the log's database: every tree of `store/` copied into `db/`, then
/// `store/` removed.
pub fn to_old_layout(dir: &Path) {
    {
        let (log, store) = (open_sled(dir), open_store_sled(dir));
        for name in store.tree_names().into_iter().filter(|name| store_tree(name)) {
            let (from, to) = (store.open_tree(&name).unwrap(), log.open_tree(&name).unwrap());
            for item in from.iter() {
                let (key, value) = item.unwrap();
                to.insert(key, value).unwrap();
            }
        }
        log.flush().unwrap();
    }
    std::fs::remove_dir_all(dir.join(maestro_engine::datadir::STORE_DIR)).unwrap();
}

/// The names of the projection store's trees in the log's database of `dir` (none in a data
/// dir of the current layout).
pub fn store_trees_in_log(dir: &Path) -> Vec<String> {
    let db = open_sled(dir);
    db.tree_names().iter().filter(|name| store_tree(name)).map(|n| String::from_utf8_lossy(n).into_owned()).collect()
}

fn store_tree(name: &[u8]) -> bool {
    maestro_engine::store::Store::owns_tree(name)
}

/// Creates template `tpl-1` ("api", tenant `acme`, user `alice`) with a body of 9,000 bytes
/// made from `seed`: large enough to be stored as a value file.
pub fn create_large_template(conn: &mut redis::Connection, seed: u64) {
    let body = maestro::traffic::template_body(&mut maestro::traffic::Rng::new(seed), 9_000);
    let create = serde_json::json!({"request_id": "r1", "operation": "create", "tenant_id": "acme",
        "user_id": "alice", "template_id": "tpl-1",
        "parameters": {"name": "api", "content": body, "manifest": manifest("api")}});
    redis::cmd("XADD")
        .arg("maestro:streams:templates:requests")
        .arg("*")
        .arg("data")
        .arg(create.to_string())
        .query::<String>(conn)
        .unwrap();
}

/// A template manifest that passes the quality gate with a score of 100.
pub fn manifest(name: &str) -> Value {
    serde_json::json!({
        "name": name, "version": "1.0.0", "description": "A production-ready FastAPI service with tests",
        "author": "platform-team", "engine": "jinja2",
        "metadata": {"language": "python", "framework": "fastapi", "category": "backend", "tags": ["rest", "docker", "ci"], "license": "MIT"},
        "placeholders": [{"variable": "PROJECT_NAME", "description": "The project's name", "type": "string"}],
        "hooks": {"post_generation": ["hooks/init.sh"]},
        "documentation": {"readme": "README.md", "examples": ["basic"]},
        "dependencies": {"runtime": ["fastapi"]},
        "configuration": {"supported_os": ["linux"]}
    })
}

/// A plain HTTP GET: (status code, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let code = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, response.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

/// Copies a directory tree (a data dir, for a test that damages or restores it).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Each bad entry's dead-letter copy, counted on every dead-letter stream: exactly one each,
/// and no entry copied twice. Returns how many entries were copied.
pub fn assert_dead_lettered_once(conn: &mut redis::Connection, bad: &[(String, String)]) -> usize {
    let mut copies: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (_, stream) in StreamSet::default().all() {
        for (_, fields) in read_stream(conn, &StreamSet::dead_letter_key(stream)) {
            *copies.entry((fields["dead_stream"].clone(), fields["dead_id"].clone())).or_default() += 1;
        }
    }
    let wrong: Vec<_> = bad.iter().filter(|entry| copies.get(*entry) != Some(&1)).collect();
    assert!(wrong.is_empty(), "{} bad entries not dead-lettered exactly once, first {:?}", wrong.len(), wrong.first());
    let twice: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{} entries dead-lettered more than once, first {:?}", twice.len(), twice.first());
    copies.len()
}

/// How many answers the template results stream holds per request id starting with `prefix`
/// (entries others wrote there without a JSON `data` field are not answers).
pub fn answers_to(conn: &mut impl redis::ConnectionLike, prefix: &str) -> BTreeMap<String, usize> {
    let mut answers = BTreeMap::new();
    for (_, fields) in read_stream(conn, "maestro:streams:templates:results") {
        let Some(data) = fields.get("data").and_then(|d| serde_json::from_str::<Value>(d).ok()) else { continue };
        if let Some(id) = data["request_id"].as_str().filter(|id| id.starts_with(prefix)) {
            *answers.entry(id.to_string()).or_default() += 1;
        }
    }
    answers
}

/// Appends `records` status updates of the k8s status stream (entry ids 1_795_000_000_001...),
/// 500 to a batch.
pub fn append_status_updates(log: &mut maestro_engine::log::Log, records: u64) {
    use maestro_engine::log::NewRecord;
    use maestro_schemas::{Body, Entry, EntryId, Status};
    let batch: Vec<NewRecord> = (1..=records)
        .map(|i| NewRecord {
            body: Body::Entry(Entry {
                stream: "maestro:streams:k8s:status".into(),
                id: EntryId { ms: 1_795_000_000_000 + i, seq: 0 },
                fields: vec![
                    ("type".into(), b"status_update".to_vec()),
                    ("execution_id".into(), format!("exec-{i}").into_bytes()),
                ],
                status: Status::Accepted,
            }),
            request: None,
        })
        .collect();
    for chunk in batch.chunks(500) {
        log.append(chunk.to_vec()).unwrap();
    }
}

/// A loopback address with a port free now, for an engine's `--http`.
pub fn free_http_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("127.0.0.1:{port}")
}
