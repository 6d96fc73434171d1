//! Idle strategies: what a duty-cycle thread does when a cycle found no work.
//!
//! On a dedicated host with isolated cores, busy-spinning gives the lowest latency. On a small
//! host (MACHINE.md: 2 vCPUs), more hot threads than cores cost milliseconds per hop, so
//! [`IdleStrategy::Block`] sleeps in `epoll_wait` on the node's real event sources (its socket
//! and the io_uring completion fd) and wakes within microseconds of a packet or a completed
//! write, without spinning.

use std::os::fd::RawFd;

pub use crate::config::IdleStrategy;
use std::time::Duration;

/// The running state of an idle strategy for one thread.
pub struct Idler {
    strategy: IdleStrategy,
    idle_cycles: u64,
    park_ns: u64,
    epoll: Option<Epoll>,
}

/// What a thread blocks on with [`IdleStrategy::Block`].
#[derive(Clone, Debug, Default)]
pub struct WaitSet {
    /// Event sources that the agent itself consumes (sockets, the io_uring fd).
    pub sources: Vec<RawFd>,
    /// Doorbells (eventfds, FIFOs) that only say "look at your rings": drained by the idler
    /// when it wakes on them, so a rung bell never turns the next sleep into a spin.
    pub doorbells: Vec<RawFd>,
}

impl WaitSet {
    pub fn sources(sources: Vec<RawFd>) -> Self {
        Self {
            sources,
            doorbells: Vec::new(),
        }
    }
}

impl Idler {
    /// `wait` is what `Block` waits on (ignored by the other strategies).
    pub fn new(strategy: IdleStrategy, wait: &WaitSet) -> std::io::Result<Self> {
        let epoll = match strategy {
            IdleStrategy::Block { .. } => Some(Epoll::new(wait)?),
            _ => None,
        };
        Ok(Self {
            strategy,
            idle_cycles: 0,
            park_ns: 0,
            epoll,
        })
    }

    pub fn strategy(&self) -> IdleStrategy {
        self.strategy
    }

    /// Called after every duty cycle with the work it did.
    pub fn idle(&mut self, work: usize) {
        if work > 0 {
            self.idle_cycles = 0;
            self.park_ns = 0;
            return;
        }
        self.idle_cycles += 1;
        match self.strategy {
            IdleStrategy::BusySpin => std::hint::spin_loop(),
            IdleStrategy::Yield { spins } => {
                if self.idle_cycles <= spins as u64 {
                    std::hint::spin_loop();
                } else {
                    crate::sys::cost::count(crate::sys::cost::Syscall::Wait);
                    std::thread::yield_now();
                }
            }
            IdleStrategy::Backoff {
                spins,
                yields,
                min_park_ns,
                max_park_ns,
            } => {
                if self.idle_cycles <= spins as u64 {
                    std::hint::spin_loop();
                } else if self.idle_cycles <= (spins + yields) as u64 {
                    crate::sys::cost::count(crate::sys::cost::Syscall::Wait);
                    std::thread::yield_now();
                } else {
                    self.park_ns = if self.park_ns == 0 {
                        min_park_ns
                    } else {
                        (self.park_ns * 2).min(max_park_ns)
                    };
                    crate::sys::cost::count(crate::sys::cost::Syscall::Wait);
                    std::thread::park_timeout(Duration::from_nanos(self.park_ns));
                }
            }
            IdleStrategy::Sleep { ns } => {
                crate::sys::cost::count(crate::sys::cost::Syscall::Wait);
                std::thread::sleep(Duration::from_nanos(ns))
            }
            IdleStrategy::Block { max_ns } => {
                if let Some(epoll) = &self.epoll {
                    epoll.wait(max_ns);
                }
            }
        }
    }
}

/// An epoll set over the event sources of a node.
struct Epoll {
    fd: RawFd,
}

/// Marks a doorbell in an epoll event's data (the low 32 bits hold the fd).
const DOORBELL: u64 = 1 << 32;

impl Epoll {
    fn new(wait: &WaitSet) -> std::io::Result<Self> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let epoll = Self { fd };
        let sources = wait.sources.iter().map(|&fd| (fd, 0));
        let doorbells = wait.doorbells.iter().map(|&fd| (fd, DOORBELL));
        for (source, flag) in sources.chain(doorbells) {
            let mut event = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: source as u32 as u64 | flag,
            };
            // SAFETY: both fds are open; `event` is a valid epoll_event for the call.
            let rc = unsafe { libc::epoll_ctl(fd, libc::EPOLL_CTL_ADD, source, &mut event) };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(epoll)
    }

    fn wait(&self, max_ns: u64) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];
        let timeout = libc::timespec {
            tv_sec: (max_ns / 1_000_000_000) as i64,
            tv_nsec: (max_ns % 1_000_000_000) as i64,
        };
        crate::sys::cost::count(crate::sys::cost::Syscall::Wait);
        // SAFETY: `events` has room for 8 entries and `timeout` is valid for the call;
        // epoll_pwait2 (Linux 5.11) takes a nanosecond timeout.
        let rc = unsafe {
            libc::epoll_pwait2(
                self.fd,
                events.as_mut_ptr(),
                events.len() as i32,
                &timeout,
                std::ptr::null(),
            )
        };
        let mut ready = rc;
        if rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
            crate::sys::cost::count(crate::sys::cost::Syscall::Wait);
            // SAFETY: as above, with a millisecond timeout on older kernels.
            ready = unsafe {
                libc::epoll_wait(
                    self.fd,
                    events.as_mut_ptr(),
                    events.len() as i32,
                    (max_ns / 1_000_000).max(1) as i32,
                )
            };
        }
        for event in events.iter().take(ready.max(0) as usize) {
            let data = event.u64;
            if data & DOORBELL != 0 {
                crate::sys::links::drain_bell(data as u32 as RawFd);
            }
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own this fd and close it once.
        unsafe { libc::close(self.fd) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::links::readable;
    use std::os::fd::AsRawFd;

    fn ring(fd: RawFd) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to an open eventfd.
        assert_eq!(unsafe { libc::write(fd, one.as_ptr().cast(), 8) }, 8);
    }

    /// A doorbell left readable would make every later sleep return at once: a spin that
    /// starves the other threads of a small host. Waking on one drains it; a source (which
    /// its agent consumes) is left alone.
    #[test]
    fn block_drains_the_doorbell_it_woke_on_and_leaves_sources_alone() {
        let bell = crate::sys::links::eventfd().unwrap();
        let source = crate::sys::links::eventfd().unwrap();
        let wait = WaitSet {
            sources: vec![source.as_raw_fd()],
            doorbells: vec![bell.as_raw_fd()],
        };
        let mut idler = Idler::new(IdleStrategy::Block { max_ns: 1_000_000 }, &wait).unwrap();
        ring(bell.as_raw_fd());
        ring(source.as_raw_fd());
        idler.idle(0);
        assert!(!readable(bell.as_raw_fd()), "the doorbell was drained");
        assert!(
            readable(source.as_raw_fd()),
            "the source is its agent's to read"
        );
    }
}
