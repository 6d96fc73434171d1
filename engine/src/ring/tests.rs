//! Multi-threaded stress tests: every message arrives once, in order, intact.

use super::mapped::MappedMemory;
use super::records::{
    record_broadcast, record_channel, RecordConsumer, RecordProducer, RingMemory,
};
use super::spsc::channel;
use std::sync::Arc;

#[test]
fn spsc_single_thread_fills_and_drains() {
    let (mut p, mut c) = channel::<u64>(4);
    for i in 0..4 {
        assert!(p.push(i).is_ok());
    }
    assert_eq!(p.push(9), Err(9), "full is back-pressure");
    assert_eq!(c.pop(), Some(0));
    assert!(p.push(4).is_ok());
    let mut got = Vec::new();
    assert_eq!(c.pop_batch(10, |v| got.push(v)), 4);
    assert_eq!(got, vec![1, 2, 3, 4]);
    assert_eq!(c.pop(), None);
    assert_eq!(p.push_slice(&[5, 6, 7, 8, 9]), 4);
}

#[test]
fn spsc_stress_two_threads_in_order_without_loss() {
    const N: u64 = 2_000_000;
    let (mut p, mut c) = channel::<[u64; 2]>(1024);
    let producer = std::thread::spawn(move || {
        let mut i = 0;
        while i < N {
            if i % 7 == 0 {
                let batch: Vec<[u64; 2]> = (i..(i + 16).min(N)).map(|v| [v, !v]).collect();
                i += p.push_slice(&batch) as u64;
            } else if p.push([i, !i]).is_ok() {
                i += 1;
            } else {
                std::thread::yield_now();
            }
        }
    });
    let mut expected = 0;
    while expected < N {
        let n = c.pop_batch(64, |[v, check]| {
            assert_eq!(v, expected, "out of order or lost");
            assert_eq!(check, !v, "torn message");
            expected += 1;
        });
        if n == 0 {
            std::thread::yield_now();
        }
    }
    producer.join().unwrap();
    assert_eq!(c.pop(), None);
}

fn record(i: u64) -> Vec<u8> {
    let len = (i * 7 % 200) as usize;
    (0..len).map(|j| (i as usize + j) as u8).collect()
}

/// Writes records `from..to` (see `record`), yielding while the ring is full.
fn write_records<M: RingMemory>(p: &mut RecordProducer<M>, from: u64, to: u64) {
    let mut i = from;
    while i < to {
        if p.try_write(i as u32, &record(i)) {
            i += 1;
        } else {
            std::thread::yield_now();
        }
    }
}

/// Reads records `from..to` in order, `batch` at a time, checking each one's type and bytes;
/// yields while the ring is empty.
fn read_records<M: RingMemory>(c: &mut RecordConsumer<M>, from: u64, to: u64, batch: usize) {
    let mut expected = from;
    while expected < to {
        let max = batch.min((to - expected) as usize);
        let n = c.read(max, |kind, bytes| {
            assert_eq!(kind, expected as u32, "out of order or lost");
            assert_eq!(bytes, &record(expected)[..], "torn record");
            expected += 1;
        });
        if n == 0 {
            std::thread::yield_now();
        }
    }
}

#[test]
fn records_wrap_with_padding_and_keep_types() {
    let (mut p, mut c) = record_channel(256);
    let mut sent = Vec::new();
    let mut got = Vec::new();
    for i in 0..200u64 {
        let payload = record(i % 13);
        while !p.try_write(i as u32, &payload) {
            c.read(usize::MAX, |kind, bytes| got.push((kind, bytes.to_vec())));
        }
        sent.push((i as u32, payload));
    }
    c.read(usize::MAX, |kind, bytes| got.push((kind, bytes.to_vec())));
    assert_eq!(got, sent);
}

#[test]
fn records_stress_two_threads_in_order_without_loss() {
    const N: u64 = 500_000;
    let (mut p, mut c) = record_channel(64 * 1024);
    let producer = std::thread::spawn(move || {
        let mut i = 0;
        while i < N {
            // Alternate single writes with staged batches published by one store.
            if i % 3 == 0 {
                if p.try_write(i as u32, &record(i)) {
                    i += 1;
                } else {
                    std::thread::yield_now();
                }
            } else {
                let mut staged = 0;
                while staged < 8 && i < N && p.stage(i as u32, &record(i)) {
                    staged += 1;
                    i += 1;
                }
                p.publish();
                if staged == 0 {
                    std::thread::yield_now();
                }
            }
        }
    });
    read_records(&mut c, 0, N, 128);
    producer.join().unwrap();
}

#[test]
fn broadcast_every_reader_sees_every_record_and_the_slowest_holds_the_producer() {
    let (mut p, mut readers) = record_broadcast(256, 3);
    // Fill the ring while reader 2 reads nothing: the producer must stop, not overwrite.
    let mut written = 0u32;
    while p.try_write(written, &[written as u8; 24]) {
        written += 1;
    }
    assert!(written > 0);
    for r in &mut readers[..2] {
        assert_eq!(r.read(usize::MAX, |_, _| {}), written as usize);
    }
    assert!(
        !p.try_write(99, &[0; 24]),
        "reader 2 has not passed those bytes"
    );
    let mut got = Vec::new();
    readers[2].read(1, |kind, bytes| got.push((kind, bytes.to_vec())));
    assert_eq!(got, vec![(0, vec![0u8; 24])]);
    assert!(
        p.try_write(99, &[0; 24]),
        "room once the slowest reader moved"
    );
}

#[test]
fn broadcast_stress_three_readers_in_order_without_loss() {
    const N: u64 = 200_000;
    let (mut p, readers) = record_broadcast(16 * 1024, 3);
    let producer = std::thread::spawn(move || write_records(&mut p, 0, N));
    let handles: Vec<_> = readers
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                read_records(&mut c, 0, N, 64);
                assert!(c.is_drained());
            })
        })
        .collect();
    producer.join().unwrap();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn wake_is_needed_exactly_when_the_reader_had_caught_up() {
    let (mut p, mut c) = record_channel(1024);
    assert!(c.is_drained());
    p.stage(1, b"a");
    assert!(
        p.publish_needs_wake(),
        "reader had read everything: it may sleep"
    );
    p.stage(2, b"b");
    assert!(
        !p.publish_needs_wake(),
        "reader is behind: it will see this without a bell"
    );
    assert!(!c.is_drained());
    assert_eq!(c.read(usize::MAX, |_, _| {}), 2);
    assert!(c.is_drained());
    assert!(
        !p.publish_needs_wake(),
        "nothing staged, nothing to wake for"
    );
}

fn ring_path(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("0-1.ring")
}

#[test]
fn mapped_ring_carries_records_between_two_mappings_and_survives_reattach() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    // Two mappings of one file, as two processes would have.
    let a = Arc::new(MappedMemory::open_or_create(&path, 4096, 1).unwrap());
    let b = Arc::new(MappedMemory::open_or_create(&path, 4096, 1).unwrap());
    let mut p = RecordProducer::attach(a);
    let mut c = RecordConsumer::attach(b.clone(), 0);
    const N: u64 = 50_000;
    let producer = std::thread::spawn(move || write_records(&mut p, 0, N));
    read_records(&mut c, 0, N / 2, 16);
    // The reader "restarts": a new mapping continues at the head it published.
    drop(c);
    let again = Arc::new(MappedMemory::open_or_create(&path, 4096, 1).unwrap());
    let mut c = RecordConsumer::attach(again, 0);
    read_records(&mut c, N / 2, N, 16);
    producer.join().unwrap();
    // A producer that reattaches continues after the last published record.
    let mut p = RecordProducer::attach(b);
    assert!(p.try_write(7, b"after"));
    let mut got = Vec::new();
    c.read(usize::MAX, |kind, bytes| got.push((kind, bytes.to_vec())));
    assert_eq!(got, vec![(7, b"after".to_vec())]);
}

#[test]
fn mapped_ring_of_another_shape_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    MappedMemory::open_or_create(&path, 4096, 1).unwrap();
    let e = MappedMemory::open_or_create(&path, 8192, 1).err().unwrap();
    let text = e.to_string();
    assert!(
        text.contains("4096 bytes") && text.contains("8192 bytes"),
        "{text}"
    );
    std::fs::write(&path, vec![0u8; 8192]).unwrap();
    let e = MappedMemory::open_or_create(&path, 4096, 1).err().unwrap();
    assert!(e.to_string().contains("bad magic"), "{e}");
}

#[test]
fn has_room_agrees_with_stage_including_the_wrap() {
    let (mut p, mut c) = record_channel(256);
    for i in 0..500u64 {
        let len = (i * 13 % 100) as usize;
        let room = p.has_room(len);
        assert_eq!(
            room,
            p.stage(i as u32, &vec![1u8; len]),
            "record {i} of {len} bytes"
        );
        p.publish();
        if !room || i % 3 == 0 {
            c.read(2, |_, _| {});
        }
    }
}
