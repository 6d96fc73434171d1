//! Micro-benchmarks of the hot paths, on the workloads the instruction-count gate runs:
//! frame encode + decode, durable-log append (on the simulated disk: the log's own CPU cost),
//! and the leader's commit-position calculation.
//!
//! cargo bench -p raftline-bench --bench micro

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use raftline_bench::workloads::{codec, commit, log_append};

fn micro(c: &mut Criterion) {
    let mut g = c.benchmark_group("micro");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("frame encode+decode (64 B payload)", |b| {
        b.iter(|| codec(10_000))
    });
    g.bench_function(
        "log append (32 B frames, group commit, simulated disk)",
        |b| b.iter(|| log_append(10_000)),
    );
    g.bench_function(
        "commit calculation (append, durable, 2 follower reports)",
        |b| b.iter(|| commit(10_000)),
    );
    g.finish();
}

criterion_group!(benches, micro);
criterion_main!(benches);
