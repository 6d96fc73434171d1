//! loom explores every interleaving (and every weak-memory outcome loom models) of a
//! producer and a consumer, checking that what is read is what was written, in order.
//! Run: RUSTFLAGS="--cfg loom" cargo test -p raftline --lib --release ring::loom

use super::records::record_channel;
use super::spsc::channel;

#[test]
fn loom_spsc_messages_arrive_in_order_and_intact() {
    loom::model(|| {
        let (mut p, mut c) = channel::<[u64; 2]>(2);
        let producer = loom::thread::spawn(move || {
            let mut i = 0;
            while i < 3 {
                if p.push([i, !i]).is_ok() {
                    i += 1;
                } else {
                    loom::thread::yield_now();
                }
            }
        });
        let mut expected = 0;
        while expected < 3 {
            match c.pop() {
                Some([v, check]) => {
                    assert_eq!(v, expected);
                    assert_eq!(check, !v);
                    expected += 1;
                }
                None => loom::thread::yield_now(),
            }
        }
        producer.join().unwrap();
    });
}

#[test]
fn loom_records_wrap_and_arrive_intact() {
    loom::model(|| {
        let (mut p, mut c) = record_channel(64);
        let producer = loom::thread::spawn(move || {
            for i in 0..3u32 {
                let payload = vec![i as u8; 20];
                while !p.try_write(i, &payload) {
                    loom::thread::yield_now();
                }
            }
        });
        let mut expected = 0u32;
        while expected < 3 {
            let n = c.read(1, |kind, bytes| {
                assert_eq!(kind, expected);
                assert_eq!(bytes, &[expected as u8; 20][..]);
                expected += 1;
            });
            if n == 0 {
                loom::thread::yield_now();
            }
        }
        producer.join().unwrap();
    });
}
