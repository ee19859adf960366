//! One heal request's pure work on a 10 KB pytest file: classify the message, apply the
//! strategy, parse the result and score it; then the same through the healing handler
//! (decode, admission, plan, state and `repair_result`). Run: `cargo bench --bench healing`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use maestro_handlers::contract::apply_changes;
use maestro_handlers::healing::handler::Healing;
use maestro_handlers::healing::plan;
use maestro_handlers::healing::python::parses;
use maestro_handlers::{Event, Handler};
use maestro_schemas::envelope::Limits;
use maestro_schemas::ids::derived_id;
use maestro_schemas::{Body, Entry, EntryId, Origin, Record, Status, StreamSet, TypedEvent, decode};
use serde_json::json;
use std::collections::BTreeMap;
use std::hint::black_box;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn heal(source: &str, message: &str) -> f64 {
    plan(source, message).assessment.map_or(0.0, |a| a.confidence)
}

fn bench(c: &mut Criterion) {
    let source = maestro::traffic::pytest_source(10_000);
    assert!(parses(&source), "the bench file must parse");
    let messages = [
        "ModuleNotFoundError: No module named 'requests_mock'",
        "AssertionError: assert 404 == 200",
        "requests.exceptions.ReadTimeout: read timeout=5",
        "HTTPError: 404 Client Error",
        "FileNotFoundError: [Errno 2] No such file or directory: 'fixtures/a.json'",
        "something odd happened",
    ];
    let mut group = c.benchmark_group("healing");
    group.throughput(Throughput::Elements(messages.len() as u64));
    group.bench_function(format!("heal requests on a {} B pytest file", source.len()), |b| {
        b.iter(|| {
            for message in messages {
                black_box(heal(&source, message));
            }
        })
    });
    group.throughput(Throughput::Elements(1));
    let (state, record, typed) = handler_input(&source);
    let handler = Healing::new(&StreamSet::default());
    group.bench_function("one heal request through the healing handler (10 KB source)", |b| {
        b.iter(|| {
            let decision = handler.handle(&state, Event { record: &record, typed: Some(&typed) }).unwrap();
            assert_eq!(decision.outputs.len(), 1);
            black_box(decision)
        })
    });
    group.finish();
}

/// A state with one running orchestrator (slots to spare) and a heal request for it.
fn handler_input(source: &str) -> (BTreeMap<Vec<u8>, Vec<u8>>, Record, TypedEvent) {
    let entry = |stream: &str, ms: u64, fields: Vec<(Vec<u8>, Vec<u8>)>| {
        let id = EntryId { ms, seq: 0 };
        let role = StreamSet::default().role_of(stream).unwrap();
        let typed = decode(role, Origin { stream, entry: id }, &fields, &Limits::default()).unwrap().event;
        let body = Body::Entry(Entry { stream: stream.into(), id, fields, status: Status::Accepted });
        (Record { format: 1, seq: ms, prev_hash: [0; 32], body }, typed)
    };
    let jobs = "maestro:streams:automation:jobs";
    let start = json!({"project_path": "/srv", "config": {"max_concurrent_repairs": 1_000_000}}).to_string();
    let (record, typed) =
        entry(jobs, 1, vec![("type".into(), b"start_monitoring".to_vec()), ("payload".into(), start.into_bytes())]);
    let mut state = BTreeMap::new();
    let handler = Healing::new(&StreamSet::default());
    let decision = handler.handle(&state, Event { record: &record, typed: Some(&typed) }).unwrap();
    apply_changes(&mut state, &decision.changes);
    let orchestrator = derived_id("orch", jobs, EntryId { ms: 1, seq: 0 });
    let heal = json!({"orchestrator_id": orchestrator, "file_path": "tests/test_api.py", "source": source,
        "error_message": "AssertionError: assert 404 == 200", "error_type": "test_failure"});
    let (record, typed) =
        entry("maestro:streams:automation:healing", 2, vec![("payload".into(), heal.to_string().into_bytes())]);
    (state, record, typed)
}

criterion_group!(benches, bench);
criterion_main!(benches);
