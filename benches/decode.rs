//! Decoding throughput: the realistic mix (template bodies of 2-60 KB, test sources of several
//! KB) and the ~300 B control mix that `maestro bench ingest` measures.
//! Run: `cargo bench --bench decode`. Figures go to BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use maestro::traffic::Traffic;
use maestro_schemas::envelope::Limits;
use maestro_schemas::{EntryId, Origin, Role, StreamSet, decode};
use std::hint::black_box;

/// The allocator of the `maestro` binary, so the figures are the deployed code's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Entry = (Role, String, Vec<(Vec<u8>, Vec<u8>)>);

fn mix(control: bool, n: u64) -> Vec<Entry> {
    let streams = StreamSet::default();
    let mut traffic = Traffic::new(5, streams.clone());
    (0..n)
        .map(|i| {
            let (stream, fields) = if control { traffic.control_message(i) } else { traffic.next_message() };
            let role = streams.role_of(&stream).unwrap();
            (role, stream, fields.into_iter().map(|(k, v)| (k.into_bytes(), v.into_bytes())).collect())
        })
        .collect()
}

fn bench_mix(c: &mut Criterion, name: &str, entries: &[Entry]) {
    let bytes: usize = entries.iter().flat_map(|(_, _, f)| f.iter().map(|(k, v)| k.len() + v.len())).sum();
    let limits = Limits::default();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(entries.len() as u64));
    group.bench_function(format!("{name} events ({} entries, {} KiB)", entries.len(), bytes / 1024), |b| {
        b.iter(|| {
            for (role, stream, fields) in entries {
                let origin = Origin { stream, entry: EntryId { ms: 1, seq: 0 } };
                black_box(decode(*role, origin, fields, &limits).unwrap());
            }
        })
    });
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function(format!("{name} bytes"), |b| {
        b.iter(|| {
            for (role, stream, fields) in entries {
                let origin = Origin { stream, entry: EntryId { ms: 1, seq: 0 } };
                black_box(decode(*role, origin, fields, &limits).unwrap());
            }
        })
    });
    group.finish();
}

fn decoding(c: &mut Criterion) {
    bench_mix(c, "realistic mix", &mix(false, 2_000));
    bench_mix(c, "300 B control mix", &mix(true, 900));
}

criterion_group!(benches, decoding);
criterion_main!(benches);
