//! The healing domain through a real redis-server and the engine binary: orchestrators,
//! admission against the confidence threshold, the queue beyond `max_concurrent_repairs`,
//! validation outcomes, time-outs decided on the log's clock records, stop_monitoring with
//! repairs in flight, statistics, and replay equal to live.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use maestro_schemas::EntryId;
use maestro_schemas::ids::derived_id;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const JOBS: &str = "maestro:streams:automation:jobs";
const HEALING: &str = "maestro:streams:automation:healing";
const RESULTS: &str = "maestro:streams:automation:results";
const ERRORS: &str = "maestro:streams:automation:errors";
const VALIDATION: &str = "maestro:streams:automation:validation";

/// The engine with both optional healing streams configured and clock records every 200 ms.
fn engine(server: &RedisServer, dir: &Path) -> EngineProc {
    let engine = EngineProc::start(
        &server.url(),
        dir,
        &[
            ("MAESTRO_STREAMS__AUTOMATION_ERRORS", ERRORS),
            ("MAESTRO_STREAMS__AUTOMATION_VALIDATION", VALIDATION),
            ("MAESTRO_CLOCK_INTERVAL_MS", "200"),
        ],
    );
    engine.wait_connected();
    engine
}

fn xadd(conn: &mut redis::Connection, stream: &str, fields: &[(&str, String)]) -> String {
    maestro::traffic::xadd(conn, stream, fields).unwrap()
}

fn start_monitoring(conn: &mut redis::Connection, config: Value) -> String {
    let payload = json!({"project_path": "/srv/orders", "config": config});
    let id = xadd(
        conn,
        JOBS,
        &[
            ("type", "start_monitoring".into()),
            ("payload", payload.to_string()),
            ("timestamp", "2026-11-28T10:00:00".into()),
        ],
    );
    derived_id("orch", JOBS, EntryId::parse(&id).unwrap())
}

/// Sends a heal request for a realistic pytest file; returns the repair id it will get.
fn heal(conn: &mut redis::Connection, orchestrator: Option<&str>, error_type: &str, message: &str) -> String {
    let mut payload = json!({
        "file_path": "/srv/orders/tests/test_orders.py",
        "source": maestro::traffic::pytest_source(4_000),
        "error_message": message,
        "error_type": error_type,
        "line_number": 42,
    });
    if let Some(orchestrator) = orchestrator {
        payload["orchestrator_id"] = json!(orchestrator);
    }
    let id = xadd(conn, HEALING, &[("payload", payload.to_string())]);
    derived_id("repair", HEALING, EntryId::parse(&id).unwrap())
}

fn validate(conn: &mut redis::Connection, repair: &str, passed: bool) {
    xadd(
        conn,
        VALIDATION,
        &[("repair_id", repair.into()), ("passed", passed.to_string()), ("message", "pytest -x: 1 test".into())],
    );
}

/// Every `repair_result` so far, by repair id, each a list in publication order.
fn repair_results(conn: &mut redis::Connection) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (_, fields) in read_stream(conn, RESULTS).into_iter().filter(|(_, f)| f["type"] == "repair_result") {
        let result: Value = serde_json::from_str(&fields["result"]).unwrap();
        assert_eq!(result["repair_id"].as_str().unwrap().len(), "repair-".len() + 16);
        out.entry(result["repair_id"].as_str().unwrap().to_string()).or_default().push(result);
    }
    out
}

fn statuses(results: &BTreeMap<String, Vec<Value>>, repair: &str) -> Vec<String> {
    results.get(repair).map_or_else(Vec::new, |r| r.iter().map(|v| v["status"].as_str().unwrap().to_string()).collect())
}

/// Waits until `ready` holds for the repair results (at most 20 s).
fn wait_results(
    conn: &mut redis::Connection,
    what: &str,
    ready: impl Fn(&BTreeMap<String, Vec<Value>>) -> bool,
) -> BTreeMap<String, Vec<Value>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let results = repair_results(conn);
        if ready(&results) {
            return results;
        }
        assert!(Instant::now() < deadline, "{what}: not seen within 20 s; results so far: {results:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn healing_state(dir: &Path) -> Value {
    let (code, out, err) =
        maestro(&["replay", "state", "--projection", "healing", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    serde_json::from_str(&out).unwrap()
}

/// The value of one key in `replay state` output.
fn state_value<'a>(state: &'a Value, key: &str) -> &'a Value {
    let entries = state["state"].as_object().unwrap_or_else(|| panic!("no state in {state}"));
    entries.get(key).unwrap_or_else(|| panic!("no key {key:?} among {:?}", entries.keys().collect::<Vec<_>>()))
}

fn assert_replay_equals_live(dir: &Path) {
    let (code, out, err) = maestro(&["replay", "check", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.lines().any(|l| l.starts_with("healing") && l.ends_with("equal")), "{out}");
}

#[test]
fn admission_queue_validation_outcomes_and_stop_with_repairs_in_flight() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let mut engine = engine(&server, &dir);

    let orch = start_monitoring(&mut conn, json!({"confidence_threshold": 0.75, "max_concurrent_repairs": 2}));
    let h1 = heal(&mut conn, Some(&orch), "test_failure", "AssertionError: assert 404 == 200");
    let h2 = heal(&mut conn, Some(&orch), "test_failure", "requests.exceptions.ReadTimeout: read timeout=5");
    let h3 = heal(&mut conn, Some(&orch), "import_error", "ModuleNotFoundError: No module named 'requests_mock'");
    let h4 = heal(&mut conn, Some(&orch), "test_failure", "random seed mismatch on the second run");
    let h5 = heal(&mut conn, Some(&orch), "test_failure", "HTTPError: 404 Client Error: Not Found");
    // build_error is detected at 0.70, below the threshold 0.75: skipped, never queued.
    let low = heal(&mut conn, Some(&orch), "build_error", "AssertionError: build failed");
    let unknown = heal(&mut conn, Some("orch-0000000000000000"), "test_failure", "AssertionError");
    // No orchestrator_id and a file outside every monitored project: the default orchestrator.
    let payload = json!({
        "file_path": "/srv/elsewhere/tests/test_fixtures.py",
        "source": maestro::traffic::pytest_source(4_000),
        "error_message": "FileNotFoundError: [Errno 2] No such file or directory: 'fixtures/a.json'",
        "error_type": "lint_error",
    });
    let default = {
        let id = xadd(&mut conn, HEALING, &[("payload", payload.to_string())]);
        derived_id("repair", HEALING, EntryId::parse(&id).unwrap())
    };
    xadd(
        &mut conn,
        ERRORS,
        &[
            ("error_type", "type_error".into()),
            ("error_message", "Argument 1 has incompatible type".into()),
            ("file_path", "/srv/orders/app/models.py".into()),
            ("line_number", "7".into()),
            ("severity", "high".into()),
        ],
    );

    // Two slots: h1 and h2 validate, h3-h5 wait; the refused ones are skipped at once.
    let results = wait_results(&mut conn, "first plans", |r| r.len() == 5);
    assert_eq!(statuses(&results, &h1), ["validating"]);
    assert_eq!(statuses(&results, &h2), ["validating"]);
    for queued in [&h3, &h4, &h5] {
        assert!(!results.contains_key(queued), "{queued} must wait for a slot: {results:#?}");
    }
    let first = &results[&h1][0];
    assert_eq!(first["strategy"], "assertion_update");
    assert_eq!(first["decision"], "apply");
    assert!(first["healed_code"].as_str().unwrap().contains("pytest.approx(200)"), "{first}");
    assert!(first["confidence_score"].as_f64().unwrap() >= 0.9);
    assert_eq!(first["validation_passed"], false, "the old type: a bool");
    assert_eq!(first["validation_outcome"], Value::Null);
    assert_eq!(
        first["error"],
        json!({"type": "test_failure", "message": "AssertionError: assert 404 == 200", "file": "/srv/orders/tests/test_orders.py", "line": 42})
    );
    assert_eq!(results[&h2][0]["strategy"], "timing_adjustment");
    let skipped = &results[&low][0];
    assert_eq!(skipped["status"], "skipped");
    assert!(skipped["reason"].as_str().unwrap().contains("0.70 of build_error is below"), "{skipped}");
    assert!(results[&unknown][0]["reason"].as_str().unwrap().contains("is not registered"));
    assert_eq!(statuses(&results, &default), ["validating"], "no orchestrator: the default settings");
    assert_eq!(results[&default][0]["strategy"], "environment_healing");

    // An outcome frees a slot: the oldest waiting repair starts.
    validate(&mut conn, &h1, true);
    let results = wait_results(&mut conn, "h1 success, h3 started", |r| r.contains_key(&h3));
    assert_eq!(statuses(&results, &h1), ["validating", "success"]);
    assert_eq!(results[&h1][1]["validation_passed"], true);
    assert_eq!(statuses(&results, &h3), ["validating"]);
    assert_eq!(results[&h3][0]["strategy"], "dependency_fix");
    assert!(!results.contains_key(&h4));
    validate(&mut conn, &h2, false);
    let results = wait_results(&mut conn, "h2 failed, h4 started", |r| r.contains_key(&h4));
    assert_eq!(statuses(&results, &h2), ["validating", "failed"]);
    assert_eq!(results[&h2][1]["validation_passed"], false);
    assert_eq!(results[&h4][0]["strategy"], "flaky_test_stabilization");

    // Stop with h3 and h4 validating and h5 waiting: h5 is skipped, h3 and h4 still finish.
    xadd(
        &mut conn,
        JOBS,
        &[("type", "stop_monitoring".into()), ("payload", json!({"orchestrator_id": orch}).to_string())],
    );
    let results = wait_results(&mut conn, "h5 skipped", |r| r.contains_key(&h5));
    assert_eq!(statuses(&results, &h5), ["skipped"]);
    assert!(results[&h5][0]["reason"].as_str().unwrap().contains("was stopped before the repair started"));
    validate(&mut conn, &h3, true);
    let late = heal(&mut conn, Some(&orch), "test_failure", "AssertionError: assert 1 == 2");
    validate(&mut conn, &h1, true); // h1 is final already: ignored, not dead-lettered.
    let results = wait_results(&mut conn, "h3 success, late skipped", |r| r.contains_key(&late) && r[&h3].len() == 2);
    assert_eq!(statuses(&results, &h3), ["validating", "success"]);
    assert_eq!(statuses(&results, &late), ["skipped"]);
    assert_eq!(statuses(&results, &h4), ["validating"], "a stopped orchestrator's validating repair keeps waiting");

    let status_updates: Vec<(String, String)> = read_stream(&mut conn, RESULTS)
        .into_iter()
        .filter(|(_, f)| f["type"] == "status_update")
        .map(|(_, f)| (f["orchestrator_id"].clone(), f["status"].clone()))
        .collect();
    assert_eq!(status_updates, [(orch.clone(), "started".into()), (orch.clone(), "stopped".into())]);
    assert!(read_stream(&mut conn, &format!("{VALIDATION}:dead")).is_empty());
    assert!(engine.terminate().success(), "{}", engine.stderr());
    engine.assert_no_panic();

    let state = healing_state(&dir);
    let stats = state_value(&state, &format!("s/{orch}"));
    // Detected: h1-h5, low, late, and the type_error report under /srv/orders.
    assert_eq!(stats["errors_detected"], 8, "{stats}");
    assert_eq!(stats["repairs_attempted"], 4, "{stats}");
    assert_eq!(
        (stats["succeeded"].as_u64(), stats["failed"].as_u64(), stats["skipped"].as_u64()),
        (Some(2), Some(1), Some(3))
    );
    assert_eq!(stats["success_rate"], 0.5);
    let global = state_value(&state, "g");
    assert_eq!(global["errors_detected"], 10, "{global}");
    let assertion = state_value(&state, "k/assertion_update");
    assert_eq!((assertion["attempts"].as_u64(), assertion["successes"].as_u64()), (Some(1), Some(1)));
    let tally = state_value(&state, "t/type_error|high");
    assert_eq!(tally["count"], 1);
    assert_eq!(state_value(&state, &format!("r/{h4}"))["status"], "validating");
    let h1_record = state_value(&state, &format!("r/{h1}"));
    let path: Vec<&str> = h1_record["transitions"].as_array().unwrap().iter().map(|t| t[0].as_str().unwrap()).collect();
    assert_eq!(path, ["pending", "analyzing", "healing", "validating", "success"]);
    assert_eq!(h1_record["source"], maestro::traffic::pytest_source(4_000), "kept: the old original_code");
    assert_replay_equals_live(&dir);
}

#[test]
fn a_repair_without_an_outcome_times_out_on_a_clock_record() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let mut engine = engine(&server, &dir);

    let orch = start_monitoring(&mut conn, json!({"max_concurrent_repairs": 1, "validation_timeout_seconds": 1}));
    let first = heal(&mut conn, Some(&orch), "test_failure", "AssertionError: assert 404 == 200");
    let second = heal(&mut conn, Some(&orch), "test_failure", "TimeoutError: took too long");
    let results = wait_results(&mut conn, "first validating", |r| r.contains_key(&first));
    assert!(!results.contains_key(&second), "one slot: the second waits");
    let results = wait_results(&mut conn, "first timed out, second started", |r| r.contains_key(&second));
    assert_eq!(statuses(&results, &first), ["validating", "failed"]);
    let timed_out = &results[&first][1];
    assert!(timed_out["reason"].as_str().unwrap().starts_with("timed out: no validation outcome within 1000 ms"));
    assert_eq!(timed_out["validation_passed"], false);
    assert_eq!(timed_out["validation_outcome"], Value::Null);
    assert_eq!(statuses(&results, &second), ["validating"]);
    // The outcome of the timed-out repair comes too late: it changes nothing.
    validate(&mut conn, &first, true);
    let _ = wait_results(&mut conn, "second timed out", |r| r[&second].len() == 2);
    let output_ids: Vec<String> = read_stream(&mut conn, RESULTS)
        .into_iter()
        .filter(|(_, f)| {
            f["type"] == "repair_result" && f["result"].contains(first.as_str()) && f["result"].contains("timed out")
        })
        .map(|(_, f)| f["output_id"].clone())
        .collect();
    assert!(engine.terminate().success(), "{}", engine.stderr());

    // The time-out was published while handling a clock record, at or after the deadline.
    let records = export(&dir);
    let [output_id] = output_ids.as_slice() else { panic!("one time-out result expected: {output_ids:?}") };
    let seq: u64 = output_id.split('-').next().unwrap().parse().unwrap();
    let record = records.iter().find(|r| r["seq"] == seq).unwrap();
    assert_eq!(record["kind"], "clock", "{record}");
    let state = healing_state(&dir);
    let repair = state_value(&state, &format!("r/{first}"));
    assert_eq!(repair["status"], "failed");
    let clock_ms = maestro_schemas::ids::parse_utc_ms(record["time"].as_str().unwrap()).unwrap();
    assert!(clock_ms >= repair["deadline_ms"].as_u64().unwrap(), "{record} {repair}");
    assert_eq!(state_value(&state, &format!("s/{orch}"))["failed"], 2);
    let dead = read_stream(&mut conn, &format!("{VALIDATION}:dead"));
    assert!(dead.is_empty(), "the late outcome is ignored, not dead-lettered: {dead:?}");
    assert_replay_equals_live(&dir);
}

/// The engine with the default settings (no validation stream), clock records every 200 ms.
fn default_engine(server: &RedisServer, dir: &Path) -> EngineProc {
    let engine = EngineProc::start(&server.url(), dir, &[("MAESTRO_CLOCK_INTERVAL_MS", "200")]);
    engine.wait_connected();
    engine
}

fn start_project(conn: &mut redis::Connection, project: &Path) -> String {
    let payload = json!({"project_path": project.to_str().unwrap(), "config": {}});
    let id = xadd(conn, JOBS, &[("type", "start_monitoring".into()), ("payload", payload.to_string())]);
    derived_id("orch", JOBS, EntryId::parse(&id).unwrap())
}

fn send_heal(conn: &mut redis::Connection, payload: &Value) -> String {
    let id = xadd(conn, HEALING, &[("payload", payload.to_string())]);
    derived_id("repair", HEALING, EntryId::parse(&id).unwrap())
}

fn assert_nothing_dead(conn: &mut redis::Connection) {
    for stream in [JOBS, HEALING, RESULTS, ERRORS] {
        let dead = read_stream(conn, &format!("{stream}:dead"));
        assert!(dead.is_empty(), "{stream}:dead: {dead:?}");
    }
}

#[test]
fn twelve_old_shape_heal_requests_with_default_settings_get_twelve_final_answers() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let project = data.path().join("shop");
    maestro::heal_demo::write_project(&project).unwrap();
    let mut engine = default_engine(&server, &dir);
    let orch = start_project(&mut conn, &project);

    let healable: Vec<_> = maestro::heal_demo::failing().iter().filter(|f| f.strategy().is_some()).copied().collect();
    let mut sent = Vec::new();
    for n in 0..12 {
        let failing = healable[n % healable.len()];
        // Absolute paths find the project that holds them; relative ones the only running one.
        let file = if n % 3 == 0 { failing.file.to_string() } else { project.join(failing.file).display().to_string() };
        let repair = send_heal(&mut conn, &maestro::heal_demo::old_shape_request(n, &failing, &file));
        sent.push((repair, failing));
    }
    let results = wait_results(&mut conn, "twelve final answers", |r| {
        sent.iter().all(|(id, _)| r.get(id).is_some_and(|v| v.iter().any(|x| x["status"] == "success")))
    });
    for (id, failing) in &sent {
        let answers = &results[id];
        assert_eq!(answers.len(), 1, "one answer, final at once (no validation stream): {answers:#?}");
        let result = &answers[0];
        let healed = result["healed_code"].as_str().unwrap();
        assert_eq!(result["strategy"], failing.strategy().unwrap(), "{}: {result}", failing.file);
        assert!(maestro_handlers::healing::python::parses(healed), "{}: healed code must parse", failing.file);
        let original = result["healing_result"]["original_code"].as_str().unwrap();
        assert_eq!(original, failing.source, "the text came from the file on disk");
        // Confidence: 0.7 for a fix that parses + 0.3 x similarity (domain.md section 3).
        let similarity = maestro_handlers::healing::confidence::similarity(original, healed);
        let confidence = result["confidence_score"].as_f64().unwrap();
        assert!(
            (confidence - (0.7 + 0.3 * similarity).min(1.0)).abs() < 1e-9,
            "{}: {confidence} vs {similarity}",
            failing.file
        );
        assert_eq!(result["healing_result"]["confidence_score"].as_f64(), Some(confidence));
        assert_eq!(result["healing_result"]["strategy_used"], failing.strategy().unwrap());
        assert_eq!(result["error_event"]["error_type"], failing.error_type);
        assert_eq!(result["error_message"], Value::Null);
        assert_eq!(result["fix_applied"], false);
    }
    let owners: Vec<String> = read_stream(&mut conn, RESULTS)
        .into_iter()
        .filter(|(_, f)| f["type"] == "repair_result")
        .map(|(_, f)| f["orchestrator_id"].clone())
        .collect();
    assert_eq!(owners, vec![orch.clone(); 12], "every request went to the orchestrator whose project holds the file");
    assert_nothing_dead(&mut conn);
    assert!(engine.terminate().success(), "{}", engine.stderr());
    engine.assert_no_panic();
    let state = healing_state(&dir);
    let stats = state_value(&state, &format!("s/{orch}"));
    assert_eq!((stats["repairs_attempted"].as_u64(), stats["succeeded"].as_u64()), (Some(12), Some(12)), "{stats}");
    assert!(
        !state["state"].as_object().unwrap().keys().any(|k| k.starts_with("a/") || k.starts_with("q/")),
        "no slot held, nothing queued"
    );
    assert_replay_equals_live(&dir);
}

/// Sends one heal request for `file` (relative to the project, or absolute) after `prepare`
/// laid out the project; returns the repair's one answer.
fn refused(prepare: impl Fn(&Path, &Path), file: impl Fn(&Path) -> String) -> Value {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let project = data.path().join("shop");
    maestro::heal_demo::write_project(&project).unwrap();
    prepare(&project, data.path());
    let mut engine = default_engine(&server, &dir);
    let orch = start_project(&mut conn, &project);
    let request = json!({"error_type": "test_failure", "file_path": file(&project),
        "error_details": {"error_message": "AssertionError: assert 2 == 3"}});
    let repair = send_heal(&mut conn, &request);
    let results = wait_results(&mut conn, "the refusal", |r| r.contains_key(&repair));
    let result = results[&repair][0].clone();
    assert_eq!(result["status"], "failed", "{result}");
    assert_eq!(result["healing_result"], Value::Null);
    let owner = read_stream(&mut conn, RESULTS).into_iter().find(|(_, f)| f["type"] == "repair_result").unwrap().1;
    assert_eq!(owner["orchestrator_id"], orch);
    assert_nothing_dead(&mut conn);
    assert!(engine.terminate().success(), "{}", engine.stderr());
    assert_replay_equals_live(&dir);
    result
}

fn reason(result: &Value) -> String {
    result["error_message"].as_str().unwrap().to_string()
}

#[test]
fn a_path_that_escapes_the_project_with_dotdot_is_refused() {
    let result = refused(
        |_, outside| std::fs::write(outside.join("secret.py"), "password = 'x'\n").unwrap(),
        |_| "tests/../../secret.py".into(),
    );
    assert!(reason(&result).contains("escapes the project"), "{result}");
}

#[test]
fn a_symlink_out_of_the_project_is_refused() {
    let result = refused(
        |project, outside| {
            std::fs::write(outside.join("secret.py"), "password = 'x'\n").unwrap();
            std::os::unix::fs::symlink(outside.join("secret.py"), project.join("tests/test_link.py")).unwrap();
        },
        |project| project.join("tests/test_link.py").display().to_string(),
    );
    assert!(reason(&result).contains("is a symlink that leads out of the project"), "{result}");
}

#[test]
fn a_missing_file_is_refused() {
    let result = refused(|_, _| {}, |_| "tests/test_gone.py".into());
    assert!(reason(&result).contains("does not exist in the project"), "{result}");
}

#[test]
fn a_file_over_the_size_limit_is_refused() {
    let result = refused(
        |project, _| {
            let line = "    assert compute() == 3  # padding padding padding padding padding\n";
            let body = format!("def test_big():\n{}", line.repeat(600 * 1024 / line.len()));
            std::fs::write(project.join("tests/test_big.py"), body).unwrap();
        },
        |_| "tests/test_big.py".into(),
    );
    assert!(reason(&result).contains("over the limit of 524288 bytes"), "{result}");
}
