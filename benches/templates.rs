//! The template registry handler on one core: a realistic request mix (retrieve and search
//! dominating) against a catalogue of 10,000 templates, and search latency percentiles.
//! Run: `cargo bench --bench templates` (`SHOW_SLOW=1` also lists the slowest searches).
//! Figures go to BENCHMARKS.md.
//!
//! State is an in-memory map (the handler's contract, without sled), so the figures are the
//! handler's own cost: decode is measured in `benches/decode.rs`, storage in `benches/log.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{Criterion, Throughput, criterion_group};
use maestro::traffic::{Rng, template_body};
use maestro_handlers::contract::apply_changes;
use maestro_handlers::templates::handler::Templates;
use maestro_handlers::{Event, Handler};
use maestro_schemas::envelope::Limits;
use maestro_schemas::{Body, Entry, EntryId, Origin, Record, Role, Status, StreamSet, TypedEvent, decode};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CATALOGUE: usize = 10_000;
const TENANT: &str = "acme";
const LANGUAGES: [&str; 6] = ["python", "typescript", "go", "ruby", "java", "rust"];
const WORDS: [&str; 10] = ["service", "api", "worker", "cli", "grpc", "react", "fastapi", "docker", "data", "ml"];

type State = BTreeMap<Vec<u8>, Vec<u8>>;

/// One request as the handler gets it: the record and its decoded event.
struct Request {
    record: Record,
    typed: TypedEvent,
}

fn request(seq: u64, data: Value) -> Request {
    let streams = StreamSet::default();
    let fields = vec![("data".to_string(), data.to_string().into_bytes())];
    let id = EntryId { ms: 1_790_000_000_000 + seq, seq: 0 };
    let origin = Origin { stream: &streams.templates_requests, entry: id };
    let typed = decode(Role::TemplatesRequests, origin, &fields, &Limits::default()).unwrap().event;
    let entry = Entry { stream: streams.templates_requests.clone(), id, fields, status: Status::Accepted };
    Request { record: Record { format: 1, seq, prev_hash: [0; 32], body: Body::Entry(entry) }, typed }
}

fn manifest(rng: &mut Rng, name: &str) -> Value {
    let tags: Vec<&str> = (0..3).map(|_| *rng.pick(&["rest", "docker", "ci", "grpc", "web", "batch"])).collect();
    json!({
        "name": name, "version": "1.0.0", "description": format!("A {} template with tests", rng.pick(&WORDS)),
        "author": "platform-team", "engine": "jinja2",
        "metadata": {"language": rng.pick(&LANGUAGES), "framework": rng.pick(&["fastapi", "express", "gin", "rails"]),
                     "category": rng.pick(&["backend", "frontend", "cli", "data"]), "tags": tags},
        "placeholders": [{"name": "PROJECT_NAME", "type": "string"}],
        "hooks": {"post_generation": ["hooks/init.sh"]},
        "documentation": {"readme": "README.md", "examples": ["basic"]},
        "configuration": {"supported_os": ["linux"]}
    })
}

fn create(rng: &mut Rng, seq: u64, i: usize) -> Request {
    // Bodies of 2-60 KB, median about 12 KB, as domain.md describes.
    let size = match rng.below(10) {
        0..=4 => 2_000 + rng.below(10_000),
        5..=8 => 12_000 + rng.below(14_000),
        _ => 26_000 + rng.below(34_000),
    } as usize;
    let name = format!("{}-{}-{i}", rng.pick(&WORDS), rng.pick(&WORDS));
    let params = json!({"name": name, "content": template_body(rng, size), "manifest": manifest(rng, &name)});
    request(
        seq,
        json!({"request_id": format!("c{seq}"), "operation": "create", "template_id": format!("tpl-{i:05}"),
                        "tenant_id": TENANT, "user_id": "alice", "parameters": params}),
    )
}

fn search(rng: &mut Rng, seq: u64) -> Request {
    let mut params = json!({"query": format!("{} {}", rng.pick(&WORDS), rng.pick(&["", "docker", "api"])).trim()});
    match rng.below(4) {
        0 => params["language"] = json!(rng.pick(&["py", "ts", "golang"])),
        1 => params["sort_by"] = json!(rng.pick(&["usage_count", "name", "quality_score", "created_at"])),
        2 => params["tags"] = json!(["grpc"]),
        _ => params["page"] = json!(1 + rng.below(3)),
    }
    request(
        seq,
        json!({"request_id": format!("s{seq}"), "operation": "search", "tenant_id": TENANT,
                        "user_id": "alice", "parameters": params}),
    )
}

fn handle(handler: &Templates, state: &mut State, r: &Request) {
    let decision = handler.handle(state, Event { record: &r.record, typed: Some(&r.typed) }).unwrap();
    apply_changes(state, &decision.changes);
    black_box(decision.outputs);
}

/// The catalogue: a config record making alice admin, then 10,000 creates.
fn catalogue(handler: &Templates) -> (State, Rng) {
    let mut state = State::new();
    let config = Record {
        format: 1,
        seq: 1,
        prev_hash: [0; 32],
        body: Body::Config { admins: vec![(TENANT.into(), "alice".into())], streams: StreamSet::default() },
    };
    let admins = handler.handle(&state, Event { record: &config, typed: None }).unwrap();
    apply_changes(&mut state, &admins.changes);
    let mut rng = Rng::new(11);
    for i in 0..CATALOGUE {
        handle(handler, &mut state, &create(&mut rng, 2 + i as u64, i));
    }
    (state, rng)
}

/// The mix: 55% retrieve, 35% search, 4% create, 3% update, 3% versions.
fn mix(rng: &mut Rng, n: usize) -> Vec<Request> {
    (0..n)
        .map(|k| {
            let seq = 100_000 + k as u64;
            let id = format!("tpl-{:05}", rng.below(CATALOGUE as u64));
            let simple = |op: &str, params: Value| {
                request(
                    seq,
                    json!({"request_id": format!("m{seq}"), "operation": op, "template_id": id,
                                    "tenant_id": TENANT, "user_id": "alice", "parameters": params}),
                )
            };
            match rng.below(100) {
                0..=54 => simple("retrieve", json!({})),
                55..=89 => search(rng, seq),
                90..=93 => create(rng, seq, CATALOGUE + k),
                94..=96 => simple("update", json!({"content": template_body(rng, 12_000)})),
                _ => simple("versions", json!({})),
            }
        })
        .collect()
}

fn bench_mix(c: &mut Criterion) {
    let handler = Templates::new(&StreamSet::default());
    let (state, mut rng) = catalogue(&handler);
    let requests = mix(&mut rng, 2_000);
    let mut group = c.benchmark_group("templates");
    group.throughput(Throughput::Elements(requests.len() as u64));
    group.sample_size(20);
    group.bench_function("realistic mix, 10k templates", |b| {
        b.iter_batched_ref(
            || state.clone(),
            |state| {
                for r in &requests {
                    handle(&handler, state, r);
                }
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// Search latency over 10,000 templates, each query timed alone: p50, p99, max.
fn search_percentiles() {
    let handler = Templates::new(&StreamSet::default());
    let (mut state, mut rng) = catalogue(&handler);
    let queries: Vec<Request> = (0..5_000).map(|k| search(&mut rng, 200_000 + k)).collect();
    handle(&handler, &mut state, &queries[0]); // the first search builds the index
    let mut timed: Vec<(u128, usize)> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let start = Instant::now();
            handle(&handler, &mut state, q);
            (start.elapsed().as_nanos(), i)
        })
        .collect();
    timed.sort_unstable();
    if std::env::var_os("SHOW_SLOW").is_some() {
        for (nanos, i) in timed.iter().rev().take(8) {
            let params = match &queries[*i].typed.event {
                maestro_schemas::Event::TemplateRequest(r) => r.parameters_json.clone(),
                _ => String::new(),
            };
            println!("slow search {:.3} ms: {params}", *nanos as f64 / 1e6);
        }
    }
    let mut took: Vec<u128> = timed.into_iter().map(|(n, _)| n).collect();
    took.sort_unstable();
    let totals: Vec<u64> = queries
        .iter()
        .take(500)
        .map(|q| {
            let d = handler.handle(&state, Event { record: &q.record, typed: Some(&q.typed) }).unwrap();
            let data: Value = serde_json::from_str(&d.outputs[0].fields[0].1).unwrap();
            data["result"]["total"].as_u64().unwrap_or(0)
        })
        .collect();
    println!("mean hits per query: {}", totals.iter().sum::<u64>() / totals.len() as u64);
    let at = |p: f64| took[((took.len() as f64 * p) as usize).min(took.len() - 1)] as f64 / 1e6;
    println!(
        "search over {CATALOGUE} templates, {} queries: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        took.len(),
        at(0.50),
        at(0.99),
        at(1.0)
    );
}

/// Mean handling time per operation in the mix.
fn op_costs() {
    let handler = Templates::new(&StreamSet::default());
    let (mut state, mut rng) = catalogue(&handler);
    let requests = mix(&mut rng, 4_000);
    let mut by_op: BTreeMap<String, (u32, u128)> = BTreeMap::new();
    for r in &requests {
        let start = Instant::now();
        handle(&handler, &mut state, r);
        let op = "request".to_string();
        let op = match &r.typed.event {
            maestro_schemas::Event::TemplateRequest(q) => format!("{op}/{}", q.operation),
            _ => op,
        };
        let slot = by_op.entry(op).or_default();
        slot.0 += 1;
        slot.1 += start.elapsed().as_nanos();
    }
    for (op, (n, nanos)) in by_op {
        println!("{op:<24} {n:>5} requests, mean {:.1} us", nanos as f64 / f64::from(n) / 1e3);
    }
}

criterion_group!(benches, bench_mix);

fn main() {
    op_costs();
    search_percentiles();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
