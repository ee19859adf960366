//! S6: an entry counts as the engine's own output only when it carries a mark that an engine of
//! the group made (`maestro_schemas::own`). A producer that writes the engine's `origin` and
//! `output_id`, even copied from a real output, is input: answered or dead-lettered like any
//! producer's entry. The engines' real outputs are still recognised, by every engine of the
//! group.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

const REQUESTS: &str = "maestro:streams:templates:requests";
const RESULTS: &str = "maestro:streams:templates:results";
const USAGE: &str = "maestro:streams:templates:usage";
const JOBS: &str = "maestro:streams:k8s:jobs";

fn search(request_id: &str) -> String {
    format!(r#"{{"request_id":"{request_id}","operation":"search","tenant_id":"t","user_id":"u","parameters":{{}}}}"#)
}

fn xadd(conn: &mut redis::Connection, stream: &str, fields: &[(&str, &str)]) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*");
    for (name, value) in fields {
        cmd.arg(*name).arg(*value);
    }
    cmd.query(conn).unwrap()
}

/// The answers on the results stream, by request id.
fn answers(conn: &mut redis::Connection) -> HashMap<String, HashMap<String, String>> {
    read_stream(conn, RESULTS)
        .into_iter()
        .map(|(_, f)| {
            let data: Value = serde_json::from_str(&f["data"]).unwrap();
            (data["request_id"].as_str().unwrap().to_string(), f)
        })
        .collect()
}

fn wait_for_answers(conn: &mut redis::Connection, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while answers(conn).len() < n {
        assert!(Instant::now() < deadline, "no {n} answers within 30 s: {:?}", answers(conn));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every log record of an entry on `stream`.
fn on(records: &[Value], stream: &str) -> Vec<Value> {
    records.iter().filter(|r| r["stream"] == stream).cloned().collect()
}

#[test]
fn a_producer_imitating_the_engines_origin_and_output_id_is_answered_or_dead_lettered() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let mut engine = EngineProc::start(&server.url(), &dir, &[]);
    // A real answer, to imitate: its exact origin (the engine's consumer) and its output id.
    xadd(&mut conn, REQUESTS, &[("data", &search("real"))]);
    wait_for_answers(&mut conn, 1);
    let real = answers(&mut conn).remove("real").unwrap();
    let (origin, output_id) = (real["origin"].clone(), real["output_id"].clone());
    assert!(origin.starts_with("maestro-engine/"), "{real:?}");
    let plain_id = output_id.split('.').next().unwrap().to_string();
    let forged_id = format!("{plain_id}.{}", "0".repeat(64));

    // Requests claiming to be outputs, with the real output id (its mark), the id without a
    // mark, and a mark made with another key: each is answered.
    let claims = [("copied-mark", &output_id), ("no-mark", &plain_id), ("forged-mark", &forged_id)];
    let mut claimed = BTreeSet::new();
    for (request_id, id) in claims {
        let entry = xadd(&mut conn, REQUESTS, &[("origin", &origin), ("output_id", id), ("data", &search(request_id))]);
        claimed.insert((REQUESTS.to_string(), entry));
    }
    // A bad job claiming the same is dead-lettered with its reason.
    let bad_job = xadd(
        &mut conn,
        JOBS,
        &[("origin", &origin), ("output_id", &output_id), ("type", "cleanup_environment"), ("payload", "{}")],
    );
    // The real answer copied onto the request stream: its mark is for the results stream.
    let fields: Vec<(&str, &str)> = ["origin", "output_id", "data"].iter().map(|k| (*k, real[*k].as_str())).collect();
    let copied = xadd(&mut conn, REQUESTS, &fields);
    wait_drained(&mut conn, Duration::from_secs(60));
    assert!(engine.terminate().success(), "{}", engine.stderr());
    engine.assert_no_panic();

    let answered = answers(&mut conn);
    for (request_id, _) in claims {
        // The user holds no role in the tenant: the answer is a refusal, but an answer.
        let answer = answered.get(request_id).unwrap_or_else(|| panic!("{request_id} not answered: {answered:?}"));
        assert!(answer["data"].contains(r#""status":"error""#), "{answer:?}");
    }
    let dead = read_stream(&mut conn, &format!("{JOBS}:dead"));
    let job_copy = dead.iter().find(|(_, f)| f["dead_id"] == bad_job).unwrap_or_else(|| panic!("{dead:?}"));
    assert_eq!(job_copy.1["dead_reason"], "missing_field");
    let dead = read_stream(&mut conn, &format!("{REQUESTS}:dead"));
    assert!(dead.iter().any(|(_, f)| f["dead_id"] == copied), "the copied answer is dead-lettered: {dead:?}");

    let records = export(&dir);
    for record in on(&records, REQUESTS).iter().chain(&on(&records, JOBS)) {
        assert_ne!(record["status"], "own", "a producer's entry recorded as the engine's: {record}");
    }
    // No answer to an answer: everything on the results and usage streams is the engine's,
    // recorded as its own.
    let outputs: Vec<Value> = [on(&records, RESULTS), on(&records, USAGE)].concat();
    let published = read_stream(&mut conn, RESULTS).len() + read_stream(&mut conn, USAGE).len();
    assert_eq!(outputs.len(), published, "each answer and usage event read back once");
    assert!(outputs.iter().all(|r| r["status"] == "own"), "{outputs:?}");
    assert_eq!(answered.len(), 4, "the real request and the three claims, by request id: {answered:?}");
}

#[test]
fn two_engines_of_one_group_recognise_each_others_outputs() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dirs = [data.path().join("a"), data.path().join("b")];
    let mut engines: Vec<EngineProc> = dirs.iter().map(|d| EngineProc::start(&server.url(), d, &[])).collect();
    for engine in &engines {
        engine.wait_connected();
    }
    let requests = 200;
    for i in 0..requests {
        xadd(&mut conn, REQUESTS, &[("data", &search(&format!("r{i}")))]);
    }
    wait_for_answers(&mut conn, requests);
    wait_drained(&mut conn, Duration::from_secs(60));
    for engine in &mut engines {
        assert!(engine.terminate().success(), "{}", engine.stderr());
        engine.assert_no_panic();
    }
    let answered = answers(&mut conn);
    assert_eq!(answered.len(), requests, "one answer per request");
    let mut others = 0;
    let mut outputs = 0;
    // Answers are logged by reference (their fields stay in Redis); usage events in full.
    let origins: HashMap<String, String> = [RESULTS, USAGE]
        .iter()
        .flat_map(|stream| read_stream(&mut conn, stream))
        .map(|(id, fields)| (id, fields.get("origin").cloned().unwrap_or_default()))
        .collect();
    for dir in &dirs {
        let consumer = std::fs::read_to_string(dir.join("consumer")).unwrap();
        let records = export(dir);
        for record in [on(&records, RESULTS), on(&records, USAGE)].concat() {
            assert_eq!(record["status"], "own", "an output of the group taken as input: {record}");
            outputs += 1;
            let origin = record["fields"]["origin"].as_str().unwrap_or(&origins[record["id"].as_str().unwrap()]);
            if origin != format!("maestro-engine/{}", consumer.trim()) {
                others += 1;
            }
        }
    }
    assert_eq!(outputs, 2 * requests, "every answer and usage event recorded once, by one of the two");
    assert!(others > 0, "some outputs of one engine were read by the other");
}
