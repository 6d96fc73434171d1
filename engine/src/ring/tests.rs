//! Multi-threaded stress tests: every message arrives once, in order, intact.

use super::records::record_channel;
use super::spsc::channel;

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
    let mut expected = 0u64;
    while expected < N {
        let n = c.read(128, |kind, bytes| {
            assert_eq!(kind, expected as u32, "out of order or lost");
            assert_eq!(bytes, &record(expected)[..], "torn record");
            expected += 1;
        });
        if n == 0 {
            std::thread::yield_now();
        }
    }
    producer.join().unwrap();
}
