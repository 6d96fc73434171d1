//! Member-to-member links over record rings: shared memory between processes on one host
//! (IPC, rings in memory-mapped files) or heap memory between nodes in one process.
//!
//! Every ordered pair of members has its own single-producer ring (`from` → `to`); a send
//! stages one record, `flush` publishes each touched ring with one store. A receiver that has
//! read everything may be asleep in `epoll`, so the sender rings its doorbell (an eventfd in
//! one process, a FIFO between processes) — only when the reader blocks at all (it says so in
//! the ring's bell word, [`MemberLinks::set_reader_blocks`]) and the ring's handshake says it
//! had caught up (`publish_needs_wake`). Under load, or with a spinning reader, no system call
//! is made. The reader's idle strategy drains the doorbell when it wakes on it (a doorbell
//! that stayed readable would turn the reader's sleep into a spin).
//!
//! ```text
//!  <dir>/0-1.ring  <dir>/1-0.ring  …   one ring file per ordered pair of members
//!  <dir>/0.bell    <dir>/1.bell    …   one FIFO per member: its doorbell
//! ```
//!
//! A full ring drops the send, like a full socket buffer: the protocol resends.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::io::Datagrams;
use crate::ring::mapped::MappedMemory;
use crate::ring::records::{HeapMemory, RecordConsumer, RecordProducer, RingMemory};

const RECORD_TYPE: u32 = 1;

/// Counters of the links.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub records_sent: u64,
    pub records_received: u64,
    /// Sends dropped because the peer's ring was full (it is slow, or not running).
    pub full_dropped: u64,
    pub oversized_dropped: u64,
    pub bells_rung: u64,
    /// Inbound rings that stopped at an impossible record (a file written by something else).
    pub corrupt_rings: u64,
}

struct Outbound<M: RingMemory> {
    ring: RecordProducer<M>,
    bell: Arc<OwnedFd>,
    staged: bool,
}

/// One member's ends of the links: rings to and from every other member, and its doorbell.
pub struct MemberLinks<M: RingMemory> {
    outbound: Vec<Option<Outbound<M>>>,
    inbound: Vec<(u32, RecordConsumer<M>)>,
    next_inbound: usize,
    bell: Arc<OwnedFd>,
    stats: LinkStats,
}

/// A new non-blocking eventfd: a doorbell between threads of one process.
pub fn eventfd() -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens (making it if needed) the FIFO at `path` for reading and writing, non-blocking:
/// opened read-write it never reports end-of-file and never blocks at open.
fn fifo(path: &Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path with a NUL byte"))?;
    // SAFETY: `c` is a valid NUL-terminated path for the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(e);
        }
    }
    // SAFETY: as above; the result is checked.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ring_bell_fd(fd: &OwnedFd) {
    let one = 1u64.to_ne_bytes();
    crate::sys::cost::count(crate::sys::cost::Syscall::Signal);
    // SAFETY: writes 8 bytes from a live buffer to an open fd. A full FIFO (EAGAIN) already
    // holds a wake-up, so the result needs no handling.
    unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
}

/// Empties a doorbell (a non-blocking eventfd or FIFO), so its reader can block again; the
/// idle strategy calls it when it wakes on one.
pub fn drain_bell(fd: RawFd) {
    let mut buf = [0u8; 256];
    loop {
        crate::sys::cost::count(crate::sys::cost::Syscall::Signal);
        // SAFETY: reads into a live buffer of the given length; a closed or blocking fd only
        // makes the call fail or return short, which ends the loop.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < buf.len() as isize {
            return;
        }
    }
}

/// Publishes what `ring` staged and, if its reader blocks on `bell` and had read everything
/// before this publish (so it may be asleep), rings `bell`. Returns whether it rang. The
/// reader checks [`RecordConsumer::is_drained`] before it sleeps: with the handshake's fences,
/// either it sees this publish or this sees it caught up and rings.
pub fn publish_and_wake<M: RingMemory>(ring: &mut RecordProducer<M>, bell: &OwnedFd) -> bool {
    if ring.publish_needs_wake() && ring.bell().load(Ordering::Relaxed) == READER_BLOCKS {
        ring_bell_fd(bell);
        return true;
    }
    false
}

/// The bell word's value when the ring's reader sleeps on its doorbell.
const READER_BLOCKS: usize = 1;

/// Tells the ring's producer whether its reader may sleep on a doorbell (and so must be rung).
pub fn set_reader_blocks<M: RingMemory>(ring: &RecordConsumer<M>, blocks: bool) {
    ring.bell()
        .store(if blocks { READER_BLOCKS } else { 0 }, Ordering::Relaxed);
}

/// Links between `members` nodes of one process, on the heap (the in-process transport):
/// element `i` is member `i`'s ends. `ring_bytes` per ordered pair.
pub fn in_process_links(
    members: u32,
    ring_bytes: usize,
) -> std::io::Result<Vec<MemberLinks<HeapMemory>>> {
    let bells: Vec<Arc<OwnedFd>> = (0..members)
        .map(|_| eventfd().map(Arc::new))
        .collect::<Result<_, _>>()?;
    let mut links: Vec<MemberLinks<HeapMemory>> = (0..members)
        .map(|own| MemberLinks::empty(members, bells[own as usize].clone()))
        .collect();
    for from in 0..members {
        for to in 0..members {
            if from == to {
                continue;
            }
            let (producer, consumer) = crate::ring::records::record_channel(ring_bytes);
            links[from as usize].outbound[to as usize] = Some(Outbound {
                ring: producer,
                bell: bells[to as usize].clone(),
                staged: false,
            });
            links[to as usize].inbound.push((from, consumer));
        }
    }
    Ok(links)
}

/// The directory of a cluster's IPC ring files.
pub fn ipc_ring_path(dir: &Path, from: u32, to: u32) -> PathBuf {
    dir.join(format!("{from}-{to}.ring"))
}

/// Member `own`'s ends of the shared-memory links of a cluster of `members` on one host, in
/// `dir` (a tmpfs such as /dev/shm keeps them in memory). Every process opens the same files;
/// whichever comes first makes them.
pub fn ipc_links(
    dir: &Path,
    own: u32,
    members: u32,
    ring_bytes: usize,
) -> std::io::Result<MemberLinks<MappedMemory>> {
    std::fs::create_dir_all(dir)?;
    let with_path = |e: std::io::Error, path: &Path| {
        std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
    };
    let bell_path = |m: u32| dir.join(format!("{m}.bell"));
    let own_bell = Arc::new(fifo(&bell_path(own)).map_err(|e| with_path(e, &bell_path(own)))?);
    let mut links = MemberLinks::empty(members, own_bell);
    for peer in 0..members {
        if peer == own {
            continue;
        }
        let out_path = ipc_ring_path(dir, own, peer);
        let out = MappedMemory::open_or_create(&out_path, ring_bytes, 1)
            .map_err(|e| with_path(e, &out_path))?;
        let in_path = ipc_ring_path(dir, peer, own);
        let inbound = MappedMemory::open_or_create(&in_path, ring_bytes, 1)
            .map_err(|e| with_path(e, &in_path))?;
        let peer_bell = fifo(&bell_path(peer)).map_err(|e| with_path(e, &bell_path(peer)))?;
        links.outbound[peer as usize] = Some(Outbound {
            ring: RecordProducer::attach(Arc::new(out)),
            bell: Arc::new(peer_bell),
            staged: false,
        });
        links
            .inbound
            .push((peer, RecordConsumer::attach(Arc::new(inbound), 0)));
    }
    Ok(links)
}

impl<M: RingMemory> MemberLinks<M> {
    fn empty(members: u32, bell: Arc<OwnedFd>) -> Self {
        Self {
            outbound: (0..members).map(|_| None).collect(),
            inbound: Vec::new(),
            next_inbound: 0,
            bell,
            stats: LinkStats::default(),
        }
    }

    /// The doorbell, for an idle strategy that blocks until it is rung (and drains it).
    pub fn wake_fd(&self) -> RawFd {
        self.bell.as_raw_fd()
    }

    /// Whether this member's thread sleeps on [`MemberLinks::wake_fd`] when idle: then the
    /// senders ring it when they publish to a caught-up ring. A spinning reader needs no bell.
    pub fn set_reader_blocks(&mut self, blocks: bool) {
        for (_, ring) in &self.inbound {
            set_reader_blocks(ring, blocks);
        }
    }

    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Whether `to` is a member these links reach.
    pub fn reaches(&self, to: u32) -> bool {
        self.outbound.get(to as usize).is_some_and(Option::is_some)
    }

    fn read_one(&mut self, buf: &mut [u8]) -> Option<(u32, usize)> {
        let count = self.inbound.len();
        for k in 0..count {
            let i = (self.next_inbound + k) % count;
            let (from, ring) = &mut self.inbound[i];
            let mut got = None;
            let mut oversized = false;
            ring.read(1, |_, bytes| {
                if bytes.len() <= buf.len() {
                    buf[..bytes.len()].copy_from_slice(bytes);
                    got = Some(bytes.len());
                } else {
                    oversized = true;
                }
            });
            if oversized {
                self.stats.oversized_dropped += 1;
            }
            if let Some(len) = got {
                self.next_inbound = (i + 1) % count;
                self.stats.records_received += 1;
                return Some((*from, len));
            }
        }
        None
    }
}

impl<M: RingMemory> Datagrams for MemberLinks<M> {
    fn send(&mut self, to: u32, bytes: &[u8]) -> bool {
        let Some(Some(out)) = self.outbound.get_mut(to as usize) else {
            return false;
        };
        if bytes.len() > out.ring.max_payload() {
            self.stats.oversized_dropped += 1;
            return false;
        }
        if !out.ring.stage(RECORD_TYPE, bytes) {
            self.stats.full_dropped += 1;
            return false;
        }
        out.staged = true;
        self.stats.records_sent += 1;
        true
    }

    fn receive(&mut self, buf: &mut [u8]) -> Option<(u32, usize)> {
        if let Some(got) = self.read_one(buf) {
            return Some(got);
        }
        // Nothing to read: check again behind the handshake's fence, so a record published
        // meanwhile is either seen now or rings the doorbell.
        let mut corrupt = 0;
        let mut pending = false;
        for (_, ring) in &self.inbound {
            corrupt += ring.is_corrupt() as u64;
            pending |= !ring.is_drained() && !ring.is_corrupt();
        }
        self.stats.corrupt_rings = corrupt;
        if pending {
            self.read_one(buf)
        } else {
            None
        }
    }

    fn flush(&mut self) {
        for out in self.outbound.iter_mut().flatten() {
            if !out.staged {
                continue;
            }
            out.staged = false;
            if publish_and_wake(&mut out.ring, &out.bell) {
                self.stats.bells_rung += 1;
            }
        }
    }

    fn max_payload(&self) -> usize {
        self.outbound
            .iter()
            .flatten()
            .map(|o| o.ring.max_payload())
            .min()
            .unwrap_or(usize::MAX)
    }
}

/// Whether `fd` is readable right now (tests of doorbells).
#[cfg(test)]
pub(crate) fn readable(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    crate::sys::cost::count(crate::sys::cost::Syscall::Signal);
    // SAFETY: one valid pollfd for the call; zero timeout.
    unsafe { libc::poll(&mut p, 1, 0) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_doorbell_rings_for_a_blocking_reader_that_had_caught_up() {
        let mut links = in_process_links(2, 4096).unwrap();
        let (a, b) = links.split_at_mut(1);
        let (a, b) = (&mut a[0], &mut b[0]);
        let mut buf = [0u8; 64];
        assert_eq!(b.receive(&mut buf), None);

        // A spinning reader is never rung.
        assert!(a.send(1, b"zero"));
        a.flush();
        assert!(!readable(b.wake_fd()));
        assert_eq!(a.stats().bells_rung, 0);
        assert_eq!(b.receive(&mut buf), Some((0, 4)));

        b.set_reader_blocks(true);
        assert_eq!(b.receive(&mut buf), None);
        assert!(a.send(1, b"one"));
        assert!(!readable(b.wake_fd()), "nothing is visible before flush");
        a.flush();
        assert!(readable(b.wake_fd()), "the idle reader is woken");
        assert!(a.send(1, b"two"));
        a.flush();
        assert_eq!(
            a.stats().bells_rung,
            1,
            "the reader is behind: it needs no bell"
        );

        drain_bell(b.wake_fd());
        assert!(!readable(b.wake_fd()), "drained by the idle strategy");
        assert_eq!(b.receive(&mut buf), Some((0, 3)));
        assert_eq!(&buf[..3], b"one");
        assert_eq!(b.receive(&mut buf), Some((0, 3)));
        assert_eq!(&buf[..3], b"two");
        assert_eq!(b.receive(&mut buf), None);

        assert!(a.send(1, b"three"));
        a.flush();
        assert!(readable(b.wake_fd()));
        assert_eq!(a.stats().bells_rung, 2);
    }

    #[test]
    fn full_rings_and_oversized_records_drop_the_send_and_count_it() {
        let mut links = in_process_links(2, 4096).unwrap();
        let max = links[0].max_payload();
        assert!(!links[0].send(1, &vec![0u8; max + 1]));
        assert_eq!(links[0].stats().oversized_dropped, 1);
        let mut sent = 0;
        while links[0].send(1, &[7u8; 512]) {
            sent += 1;
        }
        assert_eq!(links[0].stats().full_dropped, 1);
        assert!(!links[0].send(5, b"x"), "no such member");
        links[0].flush();
        let mut buf = [0u8; 1024];
        let mut got = 0;
        while let Some((from, len)) = links[1].receive(&mut buf) {
            assert_eq!((from, len), (0, 512));
            got += 1;
        }
        assert_eq!(got, sent, "everything accepted arrives");
    }

    #[test]
    fn ipc_links_reach_each_other_through_files_and_a_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = ipc_links(dir.path(), 0, 2, 64 << 10).unwrap();
        let mut b = ipc_links(dir.path(), 1, 2, 64 << 10).unwrap();
        b.set_reader_blocks(true);
        assert!(a.send(1, b"hello"));
        a.flush();
        assert!(readable(b.wake_fd()));
        drain_bell(b.wake_fd());
        assert!(!readable(b.wake_fd()));
        let mut buf = [0u8; 64];
        assert_eq!(b.receive(&mut buf), Some((0, 5)));
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(b.receive(&mut buf), None);
        // A different ring size for the same files is refused, naming the file.
        let e = ipc_links(dir.path(), 0, 2, 128 << 10).err().unwrap();
        assert!(e.to_string().contains("0-1.ring"), "{e}");
    }
}
