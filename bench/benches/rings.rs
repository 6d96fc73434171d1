//! raftline's rings next to rtrb, in one run: a producer thread and a consumer thread move
//! messages one at a time and in batches of 32. Throughput in messages per second.
//!
//! cargo bench -p raftline-bench --bench rings

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use raftline::ring::records::record_channel;
use raftline::ring::spsc::channel;

const MESSAGES: u64 = 10_000_000;

/// Producer on one core, consumer on the other: on a 2-vCPU host an unpinned pair migrates
/// and the figures swing by an order of magnitude.
fn pin(index: usize) {
    // get_core_ids returns the caller's current mask: capture it once, before anyone pins.
    static CORES: std::sync::OnceLock<Vec<core_affinity::CoreId>> = std::sync::OnceLock::new();
    let cores = CORES.get_or_init(|| core_affinity::get_core_ids().unwrap_or_default());
    if let Some(core) = cores.get(index % cores.len().max(1)) {
        core_affinity::set_for_current(*core);
    }
}

fn run_raftline_single() -> Duration {
    let (mut p, mut c) = channel::<u64>(4096);
    pin(1);
    let start = Instant::now();
    let producer = std::thread::spawn(move || {
        pin(0);
        let mut i = 0;
        while i < MESSAGES {
            if p.push(i).is_ok() {
                i += 1;
            }
        }
    });
    let mut seen = 0;
    while seen < MESSAGES {
        if let Some(v) = c.pop() {
            std::hint::black_box(v);
            seen += 1;
        }
    }
    producer.join().unwrap();
    start.elapsed()
}

fn run_rtrb_single() -> Duration {
    let (mut p, mut c) = rtrb::RingBuffer::<u64>::new(4096);
    pin(1);
    let start = Instant::now();
    let producer = std::thread::spawn(move || {
        pin(0);
        let mut i = 0;
        while i < MESSAGES {
            if p.push(i).is_ok() {
                i += 1;
            }
        }
    });
    let mut seen = 0;
    while seen < MESSAGES {
        if let Ok(v) = c.pop() {
            std::hint::black_box(v);
            seen += 1;
        }
    }
    producer.join().unwrap();
    start.elapsed()
}

fn run_raftline_batch() -> Duration {
    let (mut p, mut c) = channel::<u64>(4096);
    pin(1);
    let start = Instant::now();
    let producer = std::thread::spawn(move || {
        pin(0);
        let mut i = 0;
        let mut buf = [0u64; 32];
        while i < MESSAGES {
            let n = 32.min(MESSAGES - i) as usize;
            for (k, slot) in buf[..n].iter_mut().enumerate() {
                *slot = i + k as u64;
            }
            i += p.push_slice(&buf[..n]) as u64;
        }
    });
    let mut seen = 0;
    while seen < MESSAGES {
        seen += c.pop_batch(32, |v| {
            std::hint::black_box(v);
        }) as u64;
    }
    producer.join().unwrap();
    start.elapsed()
}

fn run_rtrb_batch() -> Duration {
    let (mut p, mut c) = rtrb::RingBuffer::<u64>::new(4096);
    pin(1);
    let start = Instant::now();
    let producer = std::thread::spawn(move || {
        pin(0);
        let mut i = 0;
        while i < MESSAGES {
            let n = 32.min(MESSAGES - i) as usize;
            if let Ok(chunk) = p.write_chunk_uninit(n) {
                let base = i;
                chunk.fill_from_iter((0..n as u64).map(|k| base + k));
                i += n as u64;
            }
        }
    });
    let mut seen = 0;
    while seen < MESSAGES {
        let n = c.slots().min(32);
        if n > 0 {
            if let Ok(chunk) = c.read_chunk(n) {
                for v in chunk.into_iter() {
                    std::hint::black_box(v);
                }
                seen += n as u64;
            }
        }
    }
    producer.join().unwrap();
    start.elapsed()
}

fn run_records(payload: usize) -> Duration {
    let (mut p, mut c) = record_channel(64 * 1024);
    let start = Instant::now();
    pin(1);
    let producer = std::thread::spawn(move || {
        pin(0);
        let data = vec![7u8; payload];
        let mut i = 0;
        while i < MESSAGES {
            // Frames in batches of 32, published with one store.
            let mut staged = 0;
            while staged < 32 && i < MESSAGES && p.stage(1, &data) {
                staged += 1;
                i += 1;
            }
            p.publish();
        }
    });
    let mut seen = 0;
    while seen < MESSAGES {
        seen += c.read(32, |kind, bytes| {
            std::hint::black_box((kind, bytes));
        }) as u64;
    }
    producer.join().unwrap();
    start.elapsed()
}

/// rtrb carrying the same 40-byte records (8-byte header + 32-byte payload) as fixed-size
/// elements, in batches of 32: the reference for the record ring.
fn run_rtrb_frames() -> Duration {
    let (mut p, mut c) = rtrb::RingBuffer::<[u8; 40]>::new(64 * 1024 / 40);
    pin(1);
    let start = Instant::now();
    let producer = std::thread::spawn(move || {
        pin(0);
        let frame = [7u8; 40];
        let mut i = 0;
        while i < MESSAGES {
            let n = 32.min(MESSAGES - i) as usize;
            if let Ok(chunk) = p.write_chunk_uninit(n) {
                chunk.fill_from_iter(std::iter::repeat_n(frame, n));
                i += n as u64;
            }
        }
    });
    let mut seen = 0;
    while seen < MESSAGES {
        let n = c.slots().min(32);
        if n > 0 {
            if let Ok(chunk) = c.read_chunk(n) {
                for v in chunk.into_iter() {
                    std::hint::black_box(&v[8..]);
                }
                seen += n as u64;
            }
        }
    }
    producer.join().unwrap();
    start.elapsed()
}

fn rings(c: &mut Criterion) {
    let mut g = c.benchmark_group("spsc");
    g.throughput(Throughput::Elements(MESSAGES));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(6));
    type Run = fn() -> Duration;
    let runs: [(&str, Run); 4] = [
        ("raftline/batch1", run_raftline_single),
        ("rtrb/batch1", run_rtrb_single),
        ("raftline/batch32", run_raftline_batch),
        ("rtrb/batch32", run_rtrb_batch),
    ];
    for (name, run) in runs {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| run()).sum())
        });
    }
    g.bench_function("raftline-records/32B-batch32", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| run_records(32)).sum())
    });
    g.bench_function("rtrb-40B-frames/batch32", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| run_rtrb_frames()).sum())
    });
    g.finish();
}

criterion_group!(benches, rings);
criterion_main!(benches);
