//! A bounded single-producer single-consumer ring of fixed-size `Copy` messages.
//!
//! ```text
//!   producer line (128 B)            consumer line (128 B)
//!  ┌──────────────────────────┐     ┌──────────────────────────┐
//!  │ tail: AtomicUsize        │     │ head: AtomicUsize        │   shared, each written
//!  └──────────────────────────┘     └──────────────────────────┘   by one side only
//!  Producer { tail, cached_head }   Consumer { head, cached_tail }  private to each side
//!  slots: [T; capacity]   capacity a power of two; index = counter & (capacity - 1)
//! ```
//!
//! `head` and `tail` count messages forever (they wrap at usize::MAX, far beyond any run).
//! The producer owns slots `tail..head + capacity`, the consumer `head..tail`. Each side keeps
//! a cached copy of the other side's counter and reloads it (Acquire) only when the cache
//! says full or empty; it publishes its own with one Release store per batch.

use std::mem::MaybeUninit;

use super::sync::{Arc, AtomicUsize, Cell, Ordering};
use super::CachePadded;

#[repr(C)]
struct Shared<T> {
    head: CachePadded<AtomicUsize>,
    tail: CachePadded<AtomicUsize>,
    slots: Box<[Cell<MaybeUninit<T>>]>,
}

// SAFETY: a slot is accessed by exactly one side at a time (the producer before it publishes
// the slot with a Release store of `tail`, the consumer after it observes that store with an
// Acquire load and before it releases the slot with a Release store of `head`), so sharing the
// slots between the two threads is sound when T itself can be sent.
unsafe impl<T: Send> Sync for Shared<T> {}
// SAFETY: as above; the struct owns its T values.
unsafe impl<T: Send> Send for Shared<T> {}

/// The sending side. Not `Clone`: there is one producer.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    tail: usize,
    cached_head: usize,
    /// Copies of `shared.mask` and the slots' address: read on every call, kept with the
    /// producer's own state instead of behind the shared pointer.
    mask: usize,
    slots: *const Cell<MaybeUninit<T>>,
}

// SAFETY: the raw slot pointer points into the allocation kept alive by `shared`; the
// producer side is used by one thread at a time, like rtrb's Producer.
unsafe impl<T: Send> Send for Producer<T> {}

/// The receiving side. Not `Clone`: there is one consumer.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    head: usize,
    cached_tail: usize,
    mask: usize,
    slots: *const Cell<MaybeUninit<T>>,
}

// SAFETY: as for Producer.
unsafe impl<T: Send> Send for Consumer<T> {}

/// Makes a ring holding up to `capacity` messages (rounded up to a power of two).
pub fn channel<T: Copy + Send>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let capacity = capacity.max(1).next_power_of_two();
    let slots = (0..capacity)
        .map(|_| Cell::new(MaybeUninit::uninit()))
        .collect();
    let shared = Arc::new(Shared {
        tail: CachePadded(AtomicUsize::new(0)),
        head: CachePadded(AtomicUsize::new(0)),
        slots,
    });
    let slots_ptr = shared.slots.as_ptr();
    (
        Producer {
            shared: shared.clone(),
            tail: 0,
            cached_head: 0,
            mask: capacity - 1,
            slots: slots_ptr,
        },
        Consumer {
            shared,
            head: 0,
            cached_tail: 0,
            mask: capacity - 1,
            slots: slots_ptr,
        },
    )
}

impl<T: Copy + Send> Producer<T> {
    pub fn capacity(&self) -> usize {
        self.mask + 1
    }

    fn free_slots(&mut self) -> usize {
        let capacity = self.capacity();
        if self.tail.wrapping_sub(self.cached_head) == capacity {
            self.cached_head = self.shared.head.0.load(Ordering::Acquire);
        }
        capacity - self.tail.wrapping_sub(self.cached_head)
    }

    /// Sends one message; gives it back when the ring is full (back-pressure).
    pub fn push(&mut self, value: T) -> Result<(), T> {
        if self.free_slots() == 0 {
            return Err(value);
        }
        self.write(self.tail, value);
        self.tail = self.tail.wrapping_add(1);
        self.shared.tail.0.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// Sends as many of `values` as fit, with one publishing store; returns how many.
    pub fn push_slice(&mut self, values: &[T]) -> usize {
        if self.free_slots() < values.len() {
            self.cached_head = self.shared.head.0.load(Ordering::Acquire);
        }
        let n = values.len().min(self.free_slots());
        for (i, &v) in values[..n].iter().enumerate() {
            self.write(self.tail.wrapping_add(i), v);
        }
        if n > 0 {
            self.tail = self.tail.wrapping_add(n);
            self.shared.tail.0.store(self.tail, Ordering::Release);
        }
        n
    }

    fn write(&mut self, index: usize, value: T) {
        // SAFETY: index & mask < capacity, the length of the slot allocation, which `shared`
        // keeps alive as long as this handle.
        let slot = unsafe { &*self.slots.add(index & self.mask) };
        // SAFETY: `index` is in tail..cached_head + capacity, so the consumer has released
        // this slot (its Release store of head was observed by our Acquire load) and will not
        // read it until our Release store of tail publishes it.
        slot.with_mut(|p| unsafe { (*p).write(value) });
    }
}

impl<T: Copy + Send> Consumer<T> {
    fn available(&mut self) -> usize {
        if self.cached_tail == self.head {
            self.cached_tail = self.shared.tail.0.load(Ordering::Acquire);
        }
        self.cached_tail.wrapping_sub(self.head)
    }

    /// Receives one message, if any.
    pub fn pop(&mut self) -> Option<T> {
        if self.available() == 0 {
            return None;
        }
        let value = self.read(self.head);
        self.head = self.head.wrapping_add(1);
        self.shared.head.0.store(self.head, Ordering::Release);
        Some(value)
    }

    /// Hands up to `max` waiting messages to `f` and releases them with one store; returns
    /// how many.
    pub fn pop_batch(&mut self, max: usize, mut f: impl FnMut(T)) -> usize {
        if self.available() < max {
            self.cached_tail = self.shared.tail.0.load(Ordering::Acquire);
        }
        let n = self.available().min(max);
        for i in 0..n {
            f(self.read(self.head.wrapping_add(i)));
        }
        if n > 0 {
            self.head = self.head.wrapping_add(n);
            self.shared.head.0.store(self.head, Ordering::Release);
        }
        n
    }

    /// Messages waiting (may grow while you look).
    pub fn len(&mut self) -> usize {
        self.cached_tail = self.shared.tail.0.load(Ordering::Acquire);
        self.cached_tail.wrapping_sub(self.head)
    }

    pub fn is_empty(&mut self) -> bool {
        self.len() == 0
    }

    fn read(&self, index: usize) -> T {
        // SAFETY: as in Producer::write.
        let slot = unsafe { &*self.slots.add(index & self.mask) };
        // SAFETY: `index` is in head..cached_tail, published by the producer's Release store
        // of tail that our Acquire load observed, so the slot is initialised and the producer
        // will not touch it until our Release store of head gives it back.
        slot.with(|p| unsafe { (*p).assume_init() })
    }
}
