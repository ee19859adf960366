//! Hot paths of ingestion: the record codec and the durable log append.
//! Run: `cargo bench --bench log`. Figures go to BENCHMARKS.md with the machine.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use maestro::traffic::Traffic;
use maestro_engine::log::{Log, NewRecord};
use maestro_schemas::record::{GENESIS_HASH, RECORD_FORMAT};
use maestro_schemas::{Body, Entry, EntryId, Record, Status, StreamSet};
use std::hint::black_box;

/// The allocator of the `maestro` binary, so the figures are the deployed code's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Realistic ~300 B control entries of all nine streams, as records.
fn entries(n: u64) -> Vec<NewRecord> {
    let mut traffic = Traffic::new(3, StreamSet::default());
    (0..n)
        .map(|i| {
            let (stream, fields) = traffic.control_message(i);
            NewRecord {
                body: Body::Entry(Entry {
                    stream,
                    id: EntryId { ms: 1_795_000_000_000 + i, seq: 0 },
                    fields: fields.into_iter().map(|(k, v)| (k.into_bytes(), v.into_bytes())).collect(),
                    status: Status::Accepted,
                }),
                request: None,
            }
        })
        .collect()
}

fn codec(c: &mut Criterion) {
    let records: Vec<Record> = entries(900)
        .into_iter()
        .enumerate()
        .map(|(i, e)| Record { format: RECORD_FORMAT, seq: i as u64 + 1, prev_hash: GENESIS_HASH, body: e.body })
        .collect();
    let stored: Vec<Vec<u8>> = records.iter().map(|r| r.encode().unwrap()).collect();
    let bytes: usize = stored.iter().map(Vec::len).sum();
    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("encode+hash 900 x ~300 B", |b| {
        b.iter(|| {
            for r in &records {
                let s = r.encode().unwrap();
                black_box(maestro_schemas::record::hash_stored(&s));
            }
        })
    });
    group.bench_function("decode+check 900 x ~300 B", |b| {
        b.iter(|| {
            for (i, s) in stored.iter().enumerate() {
                black_box(Record::decode(i as u64 + 1, s).unwrap());
            }
        })
    });
    group.finish();
    println!("(900 stored records: {bytes} bytes)");
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("log");
    group.throughput(Throughput::Elements(900));
    group.sample_size(30);
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), 64 << 20).unwrap();
    let mut next_ms = 1_795_000_000_000u64;
    group.bench_function("append 900 entries, flush + fsync", |b| {
        b.iter_batched(
            || {
                // Fresh ids each round: the same entries again would all be new to the index.
                let mut batch = entries(900);
                for item in &mut batch {
                    if let Body::Entry(e) = &mut item.body {
                        next_ms += 1;
                        e.id = EntryId { ms: next_ms, seq: 0 };
                    }
                }
                batch
            },
            |batch| black_box(log.append(batch).unwrap()),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, codec, append);
criterion_main!(benches);
