//! What raftline's threads spend: the system calls they issue, counted where they issue them
//! (a thread-local add, no atomic), each thread's CPU time (its CPU clock) and its context
//! switches (`getrusage(RUSAGE_THREAD)`). A node's threads publish their totals into one
//! [`CostBoard`] about once a millisecond; the node's counters carry the board's sums, so
//! `raftline stat` and the bench read what a committed message cost.
//!
//! The two calls that sample a thread are system calls themselves and are not counted: they
//! are measurement, once per millisecond at most, and counting them would make the count
//! depend on how often someone looks.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Sets the calling thread's timer slack to 1 ns. Linux lets a timed wait end up to the
/// slack late (50 µs by default) to batch wake-ups; a thread that waits for its next timer or
/// send time wants it on time.
pub fn exact_timers() {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and changes only this thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
}

/// The kinds of system call raftline issues on its threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Syscall {
    /// `recvmmsg`, and reading a receiver's eventfd.
    Receive,
    /// `sendmmsg`.
    Send,
    /// Waiting when idle: `epoll_pwait2`/`epoll_wait`, `io_uring_enter` waiting for a
    /// completion, parking, sleeping, yielding.
    Wait,
    /// Disk work: `io_uring_enter` submitting, `pwritev2`, `pread`, `fdatasync`.
    Disk,
    /// Doorbells: writing and draining the eventfds and FIFOs that wake another thread.
    Signal,
}

pub const SYSCALL_KINDS: usize = 5;

thread_local! {
    static ISSUED: [Cell<u64>; SYSCALL_KINDS] = const { [const { Cell::new(0) }; SYSCALL_KINDS] };
}

/// Counts one system call of `kind` on this thread.
#[inline]
pub fn count(kind: Syscall) {
    ISSUED.with(|c| {
        let cell = &c[kind as usize];
        cell.set(cell.get() + 1);
    });
}

/// What one thread has spent since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadCost {
    pub cpu_ns: u64,
    /// Blocking waits that slept (`ru_nvcsw`): each one is a wake-up later.
    pub voluntary_switches: u64,
    /// Preemptions (`ru_nivcsw`).
    pub involuntary_switches: u64,
    pub syscalls: [u64; SYSCALL_KINDS],
}

impl ThreadCost {
    /// This thread's totals.
    pub fn of_this_thread() -> Self {
        // SAFETY: rusage is plain data, for which zeroed is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: RUSAGE_THREAD fills the calling thread's usage into a valid, writable rusage.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
        let mut cost = Self::default();
        if rc == 0 {
            cost.voluntary_switches = usage.ru_nvcsw as u64;
            cost.involuntary_switches = usage.ru_nivcsw as u64;
        }
        // The thread's CPU clock, to the nanosecond (rusage's times may advance by ticks).
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: writes one timespec into a valid, writable one.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
            cost.cpu_ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
        }
        ISSUED.with(|c| {
            for (out, cell) in cost.syscalls.iter_mut().zip(c) {
                *out = cell.get();
            }
        });
        cost
    }

    pub fn syscalls_total(&self) -> u64 {
        self.syscalls.iter().sum()
    }

    fn add(&mut self, other: &Self) {
        self.cpu_ns += other.cpu_ns;
        self.voluntary_switches += other.voluntary_switches;
        self.involuntary_switches += other.involuntary_switches;
        for (a, b) in self.syscalls.iter_mut().zip(other.syscalls) {
            *a += b;
        }
    }
}

const WORDS: usize = 3 + SYSCALL_KINDS;

/// One thread's published totals.
#[derive(Default)]
struct Slot([AtomicU64; WORDS]);

/// The threads of one node, each publishing its own [`ThreadCost`]; read as their sum.
#[derive(Clone, Default)]
pub struct CostBoard {
    slots: Arc<Mutex<Vec<Arc<Slot>>>>,
}

/// A thread's place on a [`CostBoard`].
pub struct CostPublisher {
    slot: Arc<Slot>,
    next_ns: u64,
}

impl CostBoard {
    /// A place for the calling thread (call it on the thread that will publish).
    pub fn join(&self) -> CostPublisher {
        let slot = Arc::new(Slot::default());
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(slot.clone());
        CostPublisher { slot, next_ns: 0 }
    }

    /// The sum of what every thread published.
    pub fn total(&self) -> ThreadCost {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut sum = ThreadCost::default();
        for slot in slots.iter() {
            let w: Vec<u64> = slot.0.iter().map(|a| a.load(Ordering::Relaxed)).collect();
            let mut cost = ThreadCost {
                cpu_ns: w[0],
                voluntary_switches: w[1],
                involuntary_switches: w[2],
                ..Default::default()
            };
            cost.syscalls.copy_from_slice(&w[3..]);
            sum.add(&cost);
        }
        sum
    }
}

impl CostPublisher {
    /// Publishes this thread's totals if a millisecond has passed since the last time.
    pub fn maybe_publish(&mut self, now_ns: u64) {
        if now_ns >= self.next_ns {
            self.next_ns = now_ns + 1_000_000;
            self.publish();
        }
    }

    /// Publishes this thread's totals now (must run on the thread that joined).
    pub fn publish(&self) {
        let c = ThreadCost::of_this_thread();
        let words = [c.cpu_ns, c.voluntary_switches, c.involuntary_switches];
        for (a, v) in self
            .slot
            .0
            .iter()
            .zip(words.iter().chain(c.syscalls.iter()))
        {
            a.store(*v, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_board_sums_what_its_threads_spent_and_counted() {
        let board = CostBoard::default();
        let spawn = |n: u64| {
            let board = board.clone();
            std::thread::spawn(move || {
                let publisher = board.join();
                for _ in 0..n {
                    count(Syscall::Send);
                }
                count(Syscall::Disk);
                // Some CPU to account for.
                let mut x = 0u64;
                for i in 0..2_000_000u64 {
                    x = x.wrapping_mul(31).wrapping_add(i);
                }
                std::hint::black_box(x);
                publisher.publish();
            })
        };
        let (a, b) = (spawn(3), spawn(4));
        a.join().unwrap();
        b.join().unwrap();
        let total = board.total();
        assert_eq!(total.syscalls[Syscall::Send as usize], 7);
        assert_eq!(total.syscalls[Syscall::Disk as usize], 2);
        assert_eq!(total.syscalls_total(), 9);
        assert!(total.cpu_ns > 0, "two threads that spun used some CPU");
        // This thread counted nothing: counts are per thread.
        assert_eq!(ThreadCost::of_this_thread().syscalls_total(), 0);
    }
}
