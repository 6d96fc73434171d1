//! Micro-benchmarks of the hot paths, on the workloads the instruction-count gate runs:
//! frame encode + decode, durable-log append (on the simulated disk: the log's own CPU cost),
//! the leader's commit-position calculation, and sealing plus opening a member frame (the
//! cost member authentication adds per frame, on each side).
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
    let mut g = c.benchmark_group("auth");
    g.throughput(Throughput::Elements(1));
    let key = || raftline::auth::MemberKey::from_bytes([0x5a; 32]);
    let mut a = raftline::auth::Sealer::new(0, 3, vec![key()], 1);
    let mut b2 = raftline::auth::Sealer::new(1, 3, vec![key()], 1);
    for len in [64usize, 1400] {
        let frame = vec![7u8; len];
        let (mut sealed, mut opened) = (Vec::new(), Vec::new());
        g.bench_function(format!("seal + open ({len} B)"), |b| {
            b.iter(|| {
                let n = a.seal(1, &frame, &mut sealed);
                opened.clear();
                b2.open(0, &sealed[..n], &mut opened);
                opened.len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, micro);
criterion_main!(benches);
