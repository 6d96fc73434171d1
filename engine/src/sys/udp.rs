//! UDP [`Datagrams`]: one non-blocking socket per node, `recvmmsg` to drain up to a batch of
//! datagrams per call, many frames packed into each datagram up to `max_datagram_bytes`, and
//! `sendmmsg` to send a duty cycle's datagrams in one call.
//!
//! ```text
//! datagram: [ magic "RLN1" u32 | cluster id u32 ][ frame ][ frame ] ...
//! ```
//!
//! Senders are identified by their address: a configured member's address is its member id;
//! any other address is a client, given an endpoint id at or above `CLIENT_ENDPOINT_BASE`.
//! Datagrams with the wrong magic or cluster id are counted and dropped.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use crate::io::{Datagrams, CLIENT_ENDPOINT_BASE};
use crate::ring::records::{record_channel, RecordConsumer, RecordProducer};

const MAGIC: u32 = u32::from_le_bytes(*b"RLN1");
/// Bytes of the datagram header.
pub const DATAGRAM_HEADER: usize = 8;
/// Datagrams drained per `recvmmsg` call.
const BATCH: usize = 32;
/// The largest UDP payload over IPv4.
pub const MAX_UDP_PAYLOAD: usize = 65_507;
pub use crate::io::SAFE_MTU_DATAGRAM;

/// Socket buffers to absorb a replication window and bursts of clients.
const SOCKET_BUFFER_BYTES: i32 = 8 << 20;

/// Asks for large socket buffers: past `net.core.rmem_max` with SO_RCVBUFFORCE when allowed
/// (root), else up to the limit. Failing that, the defaults stay; the protocol resends.
fn set_buffer_sizes(socket: &UdpSocket, bytes: i32) {
    let fd = socket.as_raw_fd();
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        let value = &bytes as *const i32 as *const libc::c_void;
        let len = std::mem::size_of::<i32>() as libc::socklen_t;
        // SAFETY: setsockopt reads `len` bytes from a live i32; the fd is our open socket.
        let forced = unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, force, value, len) } == 0;
        if !forced {
            // SAFETY: as above.
            unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, plain, value, len) };
        }
    }
}

/// Counters of the transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpStats {
    pub datagrams_received: u64,
    pub datagrams_sent: u64,
    pub foreign_dropped: u64,
    pub oversized_dropped: u64,
    /// Datagrams from a new client address dropped: the table was full of active clients.
    pub clients_rejected: u64,
    /// Client addresses forgotten to make room (idle longer than the table's idle time).
    pub clients_evicted: u64,
    pub send_errors: u64,
}

/// The client addresses a node answers, each with an endpoint id that is never given to
/// another address while the transport lives (a session bound to an evicted endpoint is then
/// unbound, not redirected to a stranger). Bounded: when full, clients idle at least
/// `idle_ns` are forgotten to make room; while every one is active, new addresses are
/// dropped and counted, so a flood of spoofed sources cannot push out clients that talk.
struct ClientTable {
    by_addr: HashMap<SocketAddr, u32>,
    by_endpoint: HashMap<u32, (SocketAddr, u64)>,
    next: u32,
    max: usize,
    idle_ns: u64,
    /// No scan for idle clients before this time (scans are O(table) and a flood is fast).
    next_scan_ns: u64,
}

/// How long a full table waits before it looks for idle clients again.
const CLIENT_SCAN_INTERVAL_NS: u64 = 10_000_000;

impl ClientTable {
    fn new(max: usize, idle_ns: u64) -> Self {
        Self {
            by_addr: HashMap::new(),
            by_endpoint: HashMap::new(),
            next: CLIENT_ENDPOINT_BASE,
            max,
            idle_ns,
            next_scan_ns: 0,
        }
    }

    fn address(&self, endpoint: u32) -> Option<SocketAddr> {
        self.by_endpoint.get(&endpoint).map(|&(a, _)| a)
    }

    /// The endpoint of `addr`, heard from at `now`; `None` when the table is full of active
    /// clients.
    fn endpoint_of(&mut self, addr: SocketAddr, now: u64, stats: &mut UdpStats) -> Option<u32> {
        if let Some(&e) = self.by_addr.get(&addr) {
            if let Some(slot) = self.by_endpoint.get_mut(&e) {
                slot.1 = now;
            }
            return Some(e);
        }
        if self.by_addr.len() >= self.max {
            if now < self.next_scan_ns {
                stats.clients_rejected += 1;
                return None;
            }
            self.next_scan_ns = now + CLIENT_SCAN_INTERVAL_NS;
            let idle = self.idle_ns;
            let before = self.by_endpoint.len();
            self.by_endpoint
                .retain(|_, &mut (_, heard)| now.saturating_sub(heard) < idle);
            let kept = &self.by_endpoint;
            self.by_addr.retain(|_, e| kept.contains_key(e));
            stats.clients_evicted += (before - self.by_endpoint.len()) as u64;
            if self.by_addr.len() >= self.max {
                stats.clients_rejected += 1;
                return None;
            }
        }
        // Endpoint ids above the members' run upward and wrap past u32::MAX back to the base,
        // skipping any still in use (4 billion new addresses before the first wrap).
        let mut e = self.next;
        while self.by_endpoint.contains_key(&e) {
            e = e.checked_add(1).unwrap_or(CLIENT_ENDPOINT_BASE);
        }
        self.next = e.checked_add(1).unwrap_or(CLIENT_ENDPOINT_BASE);
        self.by_addr.insert(addr, e);
        self.by_endpoint.insert(e, (addr, now));
        Some(e)
    }

    /// A member took over an address a client used.
    fn forget(&mut self, addr: SocketAddr) {
        if let Some(e) = self.by_addr.remove(&addr) {
            self.by_endpoint.remove(&e);
        }
    }
}

pub use crate::io::{CLIENT_ADDRESSES_MAX, CLIENT_IDLE_NS};

/// See the module docs.
pub struct UdpTransport {
    socket: UdpSocket,
    cluster_id: u32,
    max_datagram: usize,
    /// Member addresses.
    endpoints: HashMap<SocketAddr, u32>,
    /// Address of every member (None while its name does not resolve).
    members: Vec<Option<SocketAddr>>,
    clients: ClientTable,
    /// When the current receive batch arrived (client addresses are aged by it).
    batch_ns: u64,
    clock: std::time::Instant,
    /// Datagrams being packed, by endpoint, each starting with the header.
    pending: HashMap<u32, Vec<u8>>,
    /// Full datagrams waiting for the next `sendmmsg`.
    outgoing: Vec<(SocketAddr, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
    recv_buf: Vec<u8>,
    /// Source of each datagram of the current batch.
    recv_from: Vec<Option<SocketAddr>>,
    /// Dedicated threading: datagrams arrive from the receiver thread through this ring.
    input: Option<RingInput>,
    recv_lens: Vec<usize>,
    recv_count: usize,
    recv_next: usize,
    /// Rounds of `receive` (calls until `None`, one per duty cycle) to end without asking the
    /// kernel. A batch that was not full emptied the socket (or ring): the round it came in
    /// ends when it is used up, and the next round (the cycle right after, microseconds
    /// later) is skipped too, since a `recvmmsg` there mostly came back empty and was most of
    /// the receive calls. The idle strategy's epoll is level-triggered, so a datagram that
    /// arrived meanwhile wakes the cycle after at once; with a spinning strategy it waits one
    /// cycle.
    recv_skip_rounds: u8,
    stats: UdpStats,
}

fn to_socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: ss_family says the storage holds a sockaddr_in; sockaddr_storage is
            // large enough and suitably aligned for it.
            let a = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn to_storage(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large enough and aligned for sockaddr_in.
            let out = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
            out.sin_family = libc::AF_INET as libc::sa_family_t;
            out.sin_port = a.port().to_be();
            out.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let out = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
            out.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            out.sin6_port = a.port().to_be();
            out.sin6_addr.s6_addr = a.ip().octets();
            out.sin6_flowinfo = a.flowinfo();
            out.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Drains up to `BATCH` datagrams with one `recvmmsg` into `buf` (one `MAX_UDP_PAYLOAD`
/// slice each), recording each one's length and source. Returns how many arrived.
fn recv_batch(
    socket: &UdpSocket,
    buf: &mut [u8],
    lens: &mut [usize],
    from: &mut [Option<SocketAddr>],
) -> usize {
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
    let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
    let mut iovecs: Vec<libc::iovec> = buf
        .chunks_mut(MAX_UDP_PAYLOAD)
        .take(BATCH)
        .map(|c| libc::iovec {
            iov_base: c.as_mut_ptr().cast(),
            iov_len: c.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain data; zeroed is valid.
    let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (i, h) in headers.iter_mut().enumerate().take(iovecs.len()) {
        h.msg_hdr.msg_iov = &mut iovecs[i];
        h.msg_hdr.msg_iovlen = 1;
        h.msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
        h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    }
    crate::sys::cost::count(crate::sys::cost::Syscall::Receive);
    // SAFETY: every header points to a live iovec over `buf` and to a live sockaddr_storage,
    // all of which outlive the call; the fd is an open socket.
    let n = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            headers.as_mut_ptr(),
            iovecs.len() as u32,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n <= 0 {
        return 0;
    }
    for (i, h) in headers.iter().take(n as usize).enumerate() {
        lens[i] = h.msg_len as usize;
        from[i] = to_socket_addr(&addrs[i]);
    }
    n as usize
}

impl UdpTransport {
    /// Binds `bind`; `members[i]` is member i's address (this node's own included).
    pub fn bind(
        bind: SocketAddr,
        members: Vec<SocketAddr>,
        cluster_id: u32,
        max_datagram_bytes: usize,
    ) -> std::io::Result<Self> {
        Self::bind_partial(
            bind,
            members.into_iter().map(Some).collect(),
            cluster_id,
            max_datagram_bytes,
        )
    }

    /// Like `bind`, with members whose names do not resolve yet (`None`): nothing is sent to
    /// them until [`UdpTransport::set_member_address`] gives their address.
    pub fn bind_partial(
        bind: SocketAddr,
        members: Vec<Option<SocketAddr>>,
        cluster_id: u32,
        max_datagram_bytes: usize,
    ) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(bind)?;
        socket.set_nonblocking(true)?;
        set_buffer_sizes(&socket, SOCKET_BUFFER_BYTES);
        let max_datagram = max_datagram_bytes.clamp(DATAGRAM_HEADER + 64, MAX_UDP_PAYLOAD);
        let endpoints = members
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.map(|a| (a, i as u32)))
            .collect();
        Ok(Self {
            socket,
            cluster_id,
            max_datagram,
            endpoints,
            members,
            clients: ClientTable::new(CLIENT_ADDRESSES_MAX, CLIENT_IDLE_NS),
            batch_ns: 0,
            clock: std::time::Instant::now(),
            pending: HashMap::new(),
            outgoing: Vec::new(),
            spare: Vec::new(),
            recv_buf: vec![0u8; BATCH * MAX_UDP_PAYLOAD],
            recv_lens: vec![0; BATCH],
            recv_from: vec![None; BATCH],
            input: None,
            recv_count: 0,
            recv_next: 0,
            recv_skip_rounds: 0,
            stats: UdpStats::default(),
        })
    }

    /// A member's address became known or changed (a restarted container, a DNS update).
    pub fn set_member_address(&mut self, member: u32, addr: SocketAddr) {
        let Some(slot) = self.members.get_mut(member as usize) else {
            return;
        };
        if let Some(old) = slot.replace(addr) {
            self.endpoints.remove(&old);
        }
        // A client that used this address before is now this member.
        self.clients.forget(addr);
        self.endpoints.insert(addr, member);
    }

    /// How many client addresses the transport keeps, and how long one must be silent before
    /// it may be forgotten to make room for another.
    pub fn set_client_limits(&mut self, max: usize, idle_ns: u64) {
        self.clients.max = max.max(1);
        self.clients.idle_ns = idle_ns;
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    pub fn stats(&self) -> UdpStats {
        self.stats
    }

    /// The socket, for an idle strategy that blocks until it is readable.
    pub fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    fn address(&self, endpoint: u32) -> Option<SocketAddr> {
        if endpoint >= CLIENT_ENDPOINT_BASE {
            self.clients.address(endpoint)
        } else {
            self.members.get(endpoint as usize).copied().flatten()
        }
    }

    fn header(&self) -> [u8; DATAGRAM_HEADER] {
        let mut h = [0u8; DATAGRAM_HEADER];
        h[..4].copy_from_slice(&MAGIC.to_le_bytes());
        h[4..].copy_from_slice(&self.cluster_id.to_le_bytes());
        h
    }

    fn new_datagram(&mut self) -> Vec<u8> {
        let mut d = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.max_datagram));
        d.clear();
        d.extend_from_slice(&self.header());
        d
    }

    fn endpoint_of(&mut self, addr: SocketAddr) -> Option<u32> {
        if let Some(&e) = self.endpoints.get(&addr) {
            return Some(e);
        }
        self.clients
            .endpoint_of(addr, self.batch_ns, &mut self.stats)
    }

    fn recv_batch(&mut self) {
        self.recv_next = 0;
        self.recv_count = recv_batch(
            &self.socket,
            &mut self.recv_buf,
            &mut self.recv_lens,
            &mut self.recv_from,
        );
    }

    /// Dedicated threading: a receiver thread takes over the socket's receive side and hands
    /// datagrams over a record ring; this transport keeps sending. The returned eventfd is
    /// signalled after every batch, for the node thread to block on.
    pub fn split_receiver(&mut self, ring_bytes: usize) -> std::io::Result<(UdpReceiver, RawFd)> {
        let socket = self.socket.try_clone()?;
        let (producer, consumer) = record_channel(ring_bytes.max(4 * MAX_UDP_PAYLOAD));
        // SAFETY: plain syscall; the result is checked.
        let eventfd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if eventfd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.input = Some(RingInput {
            ring: consumer,
            eventfd,
        });
        let receiver = UdpReceiver {
            socket,
            ring: producer,
            eventfd,
            buf: vec![0u8; BATCH * MAX_UDP_PAYLOAD],
            lens: vec![0; BATCH],
            addrs: vec![None; BATCH],
            record: Vec::with_capacity(MAX_UDP_PAYLOAD + ADDR_BYTES),
            dropped_ring_full: 0,
            received: 0,
        };
        Ok((receiver, eventfd))
    }

    fn recv_from_ring(&mut self) {
        self.recv_count = 0;
        self.recv_next = 0;
        let Some(input) = self.input.as_mut() else {
            return;
        };
        // Clear the signal first: anything published after the ring read signals again.
        let mut counter = 0u64;
        crate::sys::cost::count(crate::sys::cost::Syscall::Signal);
        // SAFETY: reads 8 bytes into a u64 from our own non-blocking eventfd.
        unsafe { libc::read(input.eventfd, (&mut counter as *mut u64).cast(), 8) };
        let (buf, lens, from) = (&mut self.recv_buf, &mut self.recv_lens, &mut self.recv_from);
        let mut i = 0;
        input.ring.read(BATCH, |_, record| {
            let (addr, datagram) = decode_addr(record);
            buf[i * MAX_UDP_PAYLOAD..i * MAX_UDP_PAYLOAD + datagram.len()]
                .copy_from_slice(datagram);
            lens[i] = datagram.len();
            from[i] = addr;
            i += 1;
        });
        self.recv_count = i;
    }

    fn send_outgoing(&mut self) {
        if self.outgoing.is_empty() {
            return;
        }
        let addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)> =
            self.outgoing.iter().map(|(a, _)| to_storage(a)).collect();
        let mut iovecs: Vec<libc::iovec> = self
            .outgoing
            .iter()
            .map(|(_, d)| libc::iovec {
                iov_base: d.as_ptr() as *mut _,
                iov_len: d.len(),
            })
            .collect();
        // SAFETY: mmsghdr is plain data; zeroed is valid.
        let mut headers: Vec<libc::mmsghdr> = (0..self.outgoing.len())
            .map(|_| unsafe { std::mem::zeroed() })
            .collect();
        for (i, h) in headers.iter_mut().enumerate() {
            h.msg_hdr.msg_iov = &mut iovecs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_name = &addrs[i].0 as *const _ as *mut _;
            h.msg_hdr.msg_namelen = addrs[i].1;
        }
        let mut sent = 0usize;
        while sent < headers.len() {
            crate::sys::cost::count(crate::sys::cost::Syscall::Send);
            // SAFETY: headers[sent..] point to live iovecs over the outgoing datagrams and to
            // live addresses, all outliving the call; the fd is our open socket.
            let n = unsafe {
                libc::sendmmsg(
                    self.socket.as_raw_fd(),
                    headers[sent..].as_mut_ptr(),
                    (headers.len() - sent) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    // The socket buffer is full: the rest would fail too; the protocol resends.
                    self.stats.send_errors += (headers.len() - sent) as u64;
                    break;
                }
                // This one datagram failed (no route to its peer, a refused address): skip
                // it, never the datagrams behind it, which go to other peers. Dropping the
                // whole batch here once kept two candidates from hearing each other while a
                // third member was cut off.
                self.stats.send_errors += 1;
                sent += 1;
                continue;
            }
            sent += n as usize;
            self.stats.datagrams_sent += n as u64;
        }
        for (_, d) in self.outgoing.drain(..) {
            self.spare.push(d);
        }
    }
}

impl Datagrams for UdpTransport {
    fn send(&mut self, to: u32, bytes: &[u8]) -> bool {
        let Some(addr) = self.address(to) else {
            return false;
        };
        if DATAGRAM_HEADER + bytes.len() > MAX_UDP_PAYLOAD {
            self.stats.oversized_dropped += 1;
            return false;
        }
        let fits = self
            .pending
            .get(&to)
            .is_some_and(|d| d.len() + bytes.len() <= self.max_datagram);
        if !fits {
            if let Some(full) = self.pending.remove(&to) {
                if full.len() > DATAGRAM_HEADER {
                    self.outgoing.push((addr, full));
                }
            }
            let fresh = self.new_datagram();
            self.pending.insert(to, fresh);
        }
        self.pending
            .get_mut(&to)
            .expect("inserted above")
            .extend_from_slice(bytes);
        true
    }

    fn receive(&mut self, buf: &mut [u8]) -> Option<(u32, usize)> {
        loop {
            if self.recv_next >= self.recv_count {
                if self.recv_skip_rounds > 0 {
                    self.recv_skip_rounds -= 1;
                    return None;
                }
                if self.input.is_some() {
                    self.recv_from_ring();
                } else {
                    self.recv_batch();
                }
                if self.recv_count == 0 {
                    return None;
                }
                self.recv_skip_rounds = if self.recv_count < BATCH { 2 } else { 0 };
                self.batch_ns = self.clock.elapsed().as_nanos() as u64;
            }
            let i = self.recv_next;
            self.recv_next += 1;
            self.stats.datagrams_received += 1;
            let len = self.recv_lens[i];
            let data = &self.recv_buf[i * MAX_UDP_PAYLOAD..i * MAX_UDP_PAYLOAD + len];
            let header = self.header();
            if len < DATAGRAM_HEADER || data[..DATAGRAM_HEADER] != header {
                self.stats.foreign_dropped += 1;
                continue;
            }
            let payload_len = len - DATAGRAM_HEADER;
            if payload_len > buf.len() {
                self.stats.oversized_dropped += 1;
                continue;
            }
            let Some(addr) = self.recv_from[i] else {
                self.stats.foreign_dropped += 1;
                continue;
            };
            let Some(endpoint) = self.endpoint_of(addr) else {
                continue;
            };
            let data = &self.recv_buf[i * MAX_UDP_PAYLOAD..i * MAX_UDP_PAYLOAD + len];
            buf[..payload_len].copy_from_slice(&data[DATAGRAM_HEADER..]);
            return Some((endpoint, payload_len));
        }
    }

    fn flush(&mut self) {
        // In endpoint order, so a duty cycle's sends go out in the same order every time.
        let mut pending: Vec<u32> = self.pending.keys().copied().collect();
        pending.sort_unstable();
        for to in pending {
            let Some(d) = self.pending.remove(&to) else {
                continue;
            };
            if d.len() > DATAGRAM_HEADER {
                if let Some(addr) = self.address(to) {
                    self.outgoing.push((addr, d));
                    continue;
                }
            }
            self.spare.push(d);
        }
        self.send_outgoing();
    }

    fn max_payload(&self) -> usize {
        self.max_datagram - DATAGRAM_HEADER
    }
}

const ADDR_BYTES: usize = 19;

fn encode_addr(addr: &SocketAddr, out: &mut Vec<u8>) {
    match addr {
        SocketAddr::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.port().to_le_bytes());
            let mut ip = [0u8; 16];
            ip[..4].copy_from_slice(&a.ip().octets());
            out.extend_from_slice(&ip);
        }
        SocketAddr::V6(a) => {
            out.push(6);
            out.extend_from_slice(&a.port().to_le_bytes());
            out.extend_from_slice(&a.ip().octets());
        }
    }
}

fn decode_addr(record: &[u8]) -> (Option<SocketAddr>, &[u8]) {
    if record.len() < ADDR_BYTES {
        return (None, &[]);
    }
    let port = u16::from_le_bytes([record[1], record[2]]);
    let ip = &record[3..19];
    let addr = match record[0] {
        4 => Some(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]),
            port,
        ))),
        6 => {
            let octets: [u8; 16] = ip.try_into().expect("16 bytes");
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(octets),
                port,
                0,
                0,
            )))
        }
        _ => None,
    };
    (addr, &record[ADDR_BYTES..])
}

/// The node side of a split receiver.
struct RingInput {
    ring: RecordConsumer,
    eventfd: RawFd,
}

impl Drop for RingInput {
    fn drop(&mut self) {
        // SAFETY: we own the eventfd; the receiver holds the same fd number but only writes to
        // it while the node runs, and the node is stopped before its transport is dropped.
        unsafe { libc::close(self.eventfd) };
    }
}

/// The receiver agent of dedicated threading: drains the socket with `recvmmsg` and hands
/// each datagram, with its source address, to the node thread over a record ring.
pub struct UdpReceiver {
    socket: UdpSocket,
    ring: RecordProducer,
    eventfd: RawFd,
    buf: Vec<u8>,
    lens: Vec<usize>,
    addrs: Vec<Option<SocketAddr>>,
    record: Vec<u8>,
    /// Datagrams dropped because the node thread fell behind (the ring was full).
    pub dropped_ring_full: u64,
    pub received: u64,
}

impl UdpReceiver {
    pub fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl UdpReceiver {
    /// Moves up to one batch of datagrams from the socket to the ring; returns how many.
    pub fn receive_batch(&mut self) -> usize {
        let n = recv_batch(&self.socket, &mut self.buf, &mut self.lens, &mut self.addrs);
        if n == 0 {
            return 0;
        }
        let mut staged = 0;
        for i in 0..n {
            let Some(addr) = self.addrs[i] else { continue };
            self.record.clear();
            encode_addr(&addr, &mut self.record);
            self.record.extend_from_slice(
                &self.buf[i * MAX_UDP_PAYLOAD..i * MAX_UDP_PAYLOAD + self.lens[i]],
            );
            if self.ring.stage(0, &self.record) {
                staged += 1;
            } else {
                self.dropped_ring_full += 1;
            }
        }
        self.received += n as u64;
        if staged > 0 {
            self.ring.publish();
            let one = 1u64;
            crate::sys::cost::count(crate::sys::cost::Syscall::Signal);
            // SAFETY: writes 8 bytes from a u64 to an eventfd the node side keeps open.
            unsafe { libc::write(self.eventfd, (&one as *const u64).cast(), 8) };
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_bytes() -> Vec<u8> {
        let m = crate::codec::Message::TimerEvent(crate::codec::message::TimerEvent {
            correlation_id: 1,
        });
        let mut buf = vec![0u8; m.encoded_len()];
        m.encode(crate::codec::FrameMeta::default(), &mut buf);
        buf
    }

    fn receive_one(t: &mut UdpTransport) -> (u32, usize) {
        let mut buf = vec![0u8; MAX_UDP_PAYLOAD];
        for _ in 0..10_000 {
            if let Some(r) = t.receive(&mut buf) {
                return r;
            }
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        panic!("nothing received");
    }

    #[test]
    fn a_member_that_resolves_later_is_recognised_by_its_address() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut a = UdpTransport::bind_partial(any, vec![None, None], 5, 1472).unwrap();
        let a_addr = a.local_addr().unwrap();
        let mut b = UdpTransport::bind_partial(any, vec![Some(a_addr), None], 5, 1472).unwrap();
        let b_addr = b.local_addr().unwrap();
        assert!(
            !a.send(1, &frame_bytes()),
            "nothing is sent to a member without an address"
        );

        b.send(0, &frame_bytes());
        b.flush();
        let (from, _) = receive_one(&mut a);
        assert!(
            from >= CLIENT_ENDPOINT_BASE,
            "unknown until resolved: a client endpoint"
        );

        a.set_member_address(1, b_addr);
        b.send(0, &frame_bytes());
        b.flush();
        assert_eq!(receive_one(&mut a).0, 1, "now member 1");
        assert!(a.send(1, &frame_bytes()));
        a.flush();
        assert_eq!(receive_one(&mut b).0, 0);
    }

    #[test]
    fn a_full_client_table_forgets_idle_clients_and_keeps_active_ones() {
        let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:1000".parse().unwrap();
        let c: SocketAddr = "10.0.0.3:1000".parse().unwrap();
        let mut stats = UdpStats::default();
        let mut t = ClientTable::new(2, 1_000);
        let ea = t.endpoint_of(a, 0, &mut stats).unwrap();
        let eb = t.endpoint_of(b, 0, &mut stats).unwrap();
        assert_ne!(ea, eb);
        // Both heard within the idle time: a new address is refused, not let in.
        assert_eq!(t.endpoint_of(a, 900, &mut stats), Some(ea));
        assert_eq!(t.endpoint_of(c, 950, &mut stats), None);
        assert_eq!(stats.clients_rejected, 1);
        // No second scan within the scan interval, even once b has gone idle.
        assert_eq!(t.endpoint_of(c, 1_500, &mut stats), None);
        // After it: b (idle) is forgotten, a (active) kept, c let in with a fresh endpoint.
        let later = CLIENT_SCAN_INTERVAL_NS + 1_000;
        assert_eq!(t.endpoint_of(a, later - 10, &mut stats), Some(ea));
        let ec = t.endpoint_of(c, later, &mut stats).unwrap();
        assert_eq!(stats.clients_evicted, 1);
        assert!(ec != ea && ec != eb, "an evicted endpoint id is not reused");
        assert_eq!(t.address(eb), None);
        assert_eq!(t.address(ec), Some(c));
        assert_eq!(t.address(ea), Some(a));
    }

    #[test]
    fn foreign_datagrams_are_counted_and_dropped() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut a = UdpTransport::bind(any, vec![any], 5, 1472).unwrap();
        let a_addr = a.local_addr().unwrap();
        let raw = UdpSocket::bind(any).unwrap();
        raw.send_to(b"not raftline at all", a_addr).unwrap();
        let mut wrong_cluster = b"RLN1".to_vec();
        wrong_cluster.extend_from_slice(&6u32.to_le_bytes());
        raw.send_to(&wrong_cluster, a_addr).unwrap();
        let mut good = b"RLN1".to_vec();
        good.extend_from_slice(&5u32.to_le_bytes());
        good.extend_from_slice(&frame_bytes());
        raw.send_to(&good, a_addr).unwrap();
        let (from, len) = receive_one(&mut a);
        assert!(from >= CLIENT_ENDPOINT_BASE);
        assert_eq!(len, frame_bytes().len());
        assert_eq!(a.stats().foreign_dropped, 2);
    }

    /// One peer the kernel refuses to send to (here a broadcast address without
    /// SO_BROADCAST; in the fault tests, a cut link) must not take the datagrams to the other
    /// peers down with it.
    #[test]
    fn a_failing_destination_does_not_drop_the_datagrams_behind_it() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let refused: SocketAddr = "255.255.255.255:9".parse().unwrap();
        let mut b = UdpTransport::bind(any, vec![any], 5, 1472).unwrap();
        let b_addr = b.local_addr().unwrap();
        let mut a = UdpTransport::bind(any, vec![any, refused, b_addr], 5, 1472).unwrap();
        b.set_member_address(0, a.local_addr().unwrap());
        assert!(a.send(1, &frame_bytes()));
        assert!(a.send(2, &frame_bytes()));
        a.flush();
        assert_eq!(
            receive_one(&mut b).0,
            0,
            "the datagram behind the refused one arrived"
        );
        assert_eq!(a.stats().send_errors, 1);
        assert_eq!(a.stats().datagrams_sent, 1);
    }
}
