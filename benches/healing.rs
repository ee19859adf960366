//! One heal request's pure work on a 10 KB pytest file: classify the message, apply the
//! strategy, parse the result and score it. Run: `cargo bench --bench healing`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use maestro_handlers::healing::plan;
use maestro_handlers::healing::python::parses;
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
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
