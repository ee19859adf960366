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
use maestro_schemas::proto::templates::Operation;
use maestro_schemas::{Body, Entry, EntryId, Origin, Record, Role, Status, StreamSet, TypedEvent, decode};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

/// mimalloc, counting the bytes live, so the search index can be weighed. A global allocator
/// can only be written as unsafe code: this one adds a counter and passes every call through.
struct Counting;

static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[allow(unsafe_code)]
// SAFETY: every call goes to mimalloc unchanged, with the caller's own guarantees.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, std::sync::atomic::Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

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
    let fields = vec![(b"data".to_vec(), data.to_string().into_bytes())];
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
                     "category": rng.pick(&["backend", "frontend", "cli", "data"]), "tags": tags, "license": "MIT"},
        "placeholders": [{"variable": "PROJECT_NAME", "description": "The project's name", "type": "string"}],
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

/// The mix: 55% retrieve, 35% search, 4% create, 3% update, 3% versions. Requests get seqs
/// from `first_seq` on; creates make new templates from id `first_new` on.
fn mix(rng: &mut Rng, n: usize, first_seq: u64, first_new: usize) -> Vec<Request> {
    (0..n)
        .map(|k| {
            let seq = first_seq + k as u64;
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
                90..=93 => create(rng, seq, first_new + k),
                94..=96 => simple("update", json!({"content": template_body(rng, 12_000)})),
                _ => simple("versions", json!({})),
            }
        })
        .collect()
}

/// Deletes of the templates `requests` created, so a steady run keeps 10,000 templates.
fn deletes_of(requests: &[Request], first_seq: u64) -> Vec<Request> {
    let created = requests.iter().filter_map(|r| match &r.typed.event {
        maestro_schemas::Event::TemplateRequest(q) if q.operation == Operation::Create as i32 => q.template_id.clone(),
        _ => None,
    });
    created
        .enumerate()
        .map(|(k, id)| {
            let seq = first_seq + k as u64;
            request(
                seq,
                json!({"request_id": format!("d{seq}"), "operation": "delete", "template_id": id,
                                "tenant_id": TENANT, "user_id": "alice", "parameters": {}}),
            )
        })
        .collect()
}

fn bench_mix(c: &mut Criterion) {
    let handler = Templates::new(&StreamSet::default());
    let (state, mut rng) = catalogue(&handler);
    let requests = mix(&mut rng, 2_000, 100_000, CATALOGUE);
    let mut group = c.benchmark_group("templates");
    group.throughput(Throughput::Elements(requests.len() as u64));
    group.sample_size(20);
    // Each iteration starts from a copy of the catalogue's state, which the handler's search
    // index has not seen: its first search rebuilds the tenant's index, and no query's matches
    // are remembered yet.
    group.bench_function("realistic mix, 10k templates, cold index", |b| {
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
    // As a running engine sees it: one state, new requests every iteration (their creates
    // deleted afterwards, untimed, so the catalogue stays at 10,000).
    let mut live = state;
    let mut next_seq = 200_000;
    group.bench_function("realistic mix, 10k templates, steady", |b| {
        b.iter_custom(|iters| {
            let mut took = std::time::Duration::ZERO;
            for _ in 0..iters {
                let batch = mix(&mut rng, 2_000, next_seq, next_seq as usize);
                let deletes = deletes_of(&batch, next_seq + 2_000);
                next_seq += 4_000;
                let start = Instant::now();
                for r in &batch {
                    handle(&handler, &mut live, r);
                }
                took += start.elapsed();
                for r in &deletes {
                    handle(&handler, &mut live, r);
                }
            }
            took
        })
    });
    group.finish();
}

/// Search latency over 10,000 templates, each query timed alone: p50, p99, max. Timed twice:
/// with every query evaluated afresh (the remembered matches forgotten before each, untimed),
/// and as the queries come, where a repeated query's matches are remembered.
fn search_percentiles() {
    let handler = Templates::new(&StreamSet::default());
    let (mut state, mut rng) = catalogue(&handler);
    let queries: Vec<Request> = (0..5_000).map(|k| search(&mut rng, 200_000 + k)).collect();
    handle(&handler, &mut state, &queries[0]); // the first search builds the index
    for afresh in [true, false] {
        let mut timed: Vec<(u128, usize)> = queries
            .iter()
            .enumerate()
            .map(|(i, q)| {
                if afresh {
                    handler.index.forget_matches();
                }
                let start = Instant::now();
                handle(&handler, &mut state, q);
                (start.elapsed().as_nanos(), i)
            })
            .collect();
        timed.sort_unstable();
        if afresh && std::env::var_os("SHOW_SLOW").is_some() {
            for (nanos, i) in timed.iter().rev().take(8) {
                let params = match &queries[*i].typed.event {
                    maestro_schemas::Event::TemplateRequest(r) => r.parameters_json.clone(),
                    _ => String::new(),
                };
                println!("slow search {:.3} ms: {params}", *nanos as f64 / 1e6);
            }
        }
        let took: Vec<u128> = timed.into_iter().map(|(n, _)| n).collect();
        let at = |p: f64| took[((took.len() as f64 * p) as usize).min(took.len() - 1)] as f64 / 1e6;
        let how = if afresh { "each evaluated afresh" } else { "repeats remembered" };
        println!(
            "search over {CATALOGUE} templates, {} queries, {how}: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            took.len(),
            at(0.50),
            at(0.99),
            at(1.0)
        );
    }
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
}

/// The bytes the search index holds per template: a tenant's index built from the catalogue's
/// state by one search, weighed as the allocations it leaves live.
fn index_weight() {
    let handler = Templates::new(&StreamSet::default());
    let (state, mut rng) = catalogue(&handler);
    let fresh = Templates::new(&StreamSet::default());
    let query = search(&mut rng, 300_000);
    let before = LIVE.load(std::sync::atomic::Ordering::Relaxed);
    let decision = fresh.handle(&state, Event { record: &query.record, typed: Some(&query.typed) }).unwrap();
    drop(decision);
    let after = LIVE.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "search index of {CATALOGUE} templates: {:.1} MiB, {} bytes per template",
        (after - before) as f64 / (1 << 20) as f64,
        (after - before) / CATALOGUE
    );
}

/// Mean handling time per operation in the mix.
fn op_costs() {
    let handler = Templates::new(&StreamSet::default());
    let (mut state, mut rng) = catalogue(&handler);
    let requests = mix(&mut rng, 4_000, 100_000, CATALOGUE);
    let mut by_op: BTreeMap<String, (u32, u128)> = BTreeMap::new();
    // A search's words and filters seen before: its matches are remembered.
    let mut seen = std::collections::HashSet::new();
    for r in &requests {
        let start = Instant::now();
        handle(&handler, &mut state, r);
        let maestro_schemas::Event::TemplateRequest(q) = &r.typed.event else { continue };
        let mut op = Operation::try_from(q.operation).unwrap().as_str_name().to_lowercase();
        if q.operation == Operation::Search as i32 {
            let v: Value = serde_json::from_str(&q.parameters_json).unwrap();
            let first = seen.insert(format!("{}{}{}", v["query"], v["language"], v["tags"]));
            op.push_str(if first { " (first time)" } else { " (seen before)" });
        }
        let slot = by_op.entry(op).or_default();
        slot.0 += 1;
        slot.1 += start.elapsed().as_nanos();
    }
    for (op, (n, nanos)) in by_op {
        println!("{op:<36} {n:>5} requests, mean {:.1} us", nanos as f64 / f64::from(n) / 1e3);
    }
}

criterion_group!(benches, bench_mix);

fn main() {
    index_weight();
    op_costs();
    search_percentiles();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
