//! A simulated record channel between a node and its service's host (the dedicated-mode apply
//! path): a bounded queue that the simulator drains when it runs the other side, so the hop's
//! lag and a full channel are exercised deterministically.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use crate::io::{RecordSink, RecordSource};

#[derive(Debug, Default)]
struct Queue {
    /// Published records, oldest first.
    visible: VecDeque<(u32, Vec<u8>)>,
    /// Payload bytes in `visible`.
    bytes: usize,
}

/// The writing end.
#[derive(Debug)]
pub struct SimSink {
    queue: Rc<RefCell<Queue>>,
    staged: Vec<(u32, Vec<u8>)>,
    staged_bytes: usize,
    capacity: usize,
    /// The writer asked to wait for room: a thread would yield until the reader made some, but
    /// the simulator runs one side at a time, so the next record is taken over the capacity
    /// (never lost) instead.
    over_capacity_once: bool,
}

/// The reading end.
#[derive(Debug)]
pub struct SimSource {
    queue: Rc<RefCell<Queue>>,
}

/// A channel holding up to `capacity` payload bytes.
pub fn sim_channel(capacity: usize) -> (SimSink, SimSource) {
    let queue = Rc::new(RefCell::new(Queue::default()));
    (
        SimSink {
            queue: queue.clone(),
            staged: Vec::new(),
            staged_bytes: 0,
            capacity,
            over_capacity_once: false,
        },
        SimSource { queue },
    )
}

impl RecordSink for SimSink {
    fn has_room(&mut self, len: usize) -> bool {
        self.queue.borrow().bytes + self.staged_bytes + len <= self.capacity
    }

    fn stage(&mut self, kind: u32, payload: &[u8]) -> bool {
        if !self.has_room(payload.len()) && !std::mem::take(&mut self.over_capacity_once) {
            return false;
        }
        self.staged_bytes += payload.len();
        self.staged.push((kind, payload.to_vec()));
        true
    }

    fn publish(&mut self) {
        let mut q = self.queue.borrow_mut();
        q.bytes += std::mem::take(&mut self.staged_bytes);
        q.visible.extend(self.staged.drain(..));
    }

    fn wait_for_room(&mut self) {
        self.over_capacity_once = true;
    }
}

impl RecordSource for SimSource {
    fn read(&mut self, max: usize, mut f: impl FnMut(u32, &[u8])) -> usize {
        let mut q = self.queue.borrow_mut();
        let mut n = 0;
        while n < max {
            let Some((kind, payload)) = q.visible.pop_front() else {
                break;
            };
            q.bytes -= payload.len();
            f(kind, &payload);
            n += 1;
        }
        n
    }

    fn is_drained(&self) -> bool {
        self.queue.borrow().visible.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_seen_once_published_in_order_and_room_comes_back_when_read() {
        let (mut tx, mut rx) = sim_channel(10);
        assert!(tx.stage(1, b"abcd"));
        assert!(rx.is_drained(), "staged is not yet visible");
        tx.publish();
        assert!(tx.stage(2, b"efgh"));
        assert!(!tx.stage(3, b"ijkl"), "over the capacity");
        tx.wait_for_room();
        assert!(
            tx.stage(3, b"ijkl"),
            "a record that must not be lost is taken"
        );
        tx.publish();
        let mut got = Vec::new();
        assert_eq!(rx.read(8, |k, p| got.push((k, p.to_vec()))), 3);
        assert_eq!(got[0], (1, b"abcd".to_vec()));
        assert_eq!(got[2], (3, b"ijkl".to_vec()));
        assert!(tx.has_room(10));
    }
}
