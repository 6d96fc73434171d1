//! Agents, duty cycles, idle strategies, thread pinning and threading modes: runs [`Node`]s on
//! real threads. The only layer that knows about threads.
//!
//! A duty cycle reads the clock once, lets the agent do everything available (each source
//! capped per cycle inside the node), then idles according to the strategy if there was no
//! work. The runner tracks the longest cycle and counts cycles over 1 ms (stalls): that is
//! where tail latency comes from.
//!
//! Threading modes:
//! - shared: one thread runs the whole node (receive, consensus, log, apply) — small hosts,
//!   tests and CI, with the `block` idle strategy waking on the socket, the io_uring
//!   completion fd and the ring doorbells;
//! - dedicated: a receiver thread (socket → ring), the node thread (consensus, replication,
//!   the log) and a service thread ([`service_agent`]), pinned to `runtime.cores` in that
//!   order. The log's writes are io_uring submissions reaped on the node thread: the kernel
//!   is the archive agent, so a disk write, replication and the commit calculation overlap
//!   without a fourth thread and its extra ring hop.

pub mod counters;
mod idle;
pub mod service_agent;
pub mod snapshot_files;

pub use idle::{IdleStrategy, Idler, WaitSet};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use crate::auth::{Authenticated, Sealer};
use crate::config::{Config, ConfigError, MemberTransport, ThreadingMode};
use crate::io::Disk;
use crate::node::{ApplyStage, Node, NodeConfig, NodeError};
use crate::service::{Applier, Service};
use crate::sys::{ipc_links, Links, LinuxDisk, LinuxDiskOptions, NodeNet, UdpTransport};
use counters::{Counter, CountersFile};
use service_agent::{RemoteApplier, ServiceAgent};
use snapshot_files::SnapshotWriter;

pub use crate::sys::clock::monotonic_ns;

/// Work done in duty cycles on one thread.
pub trait Agent: Send {
    /// Does whatever is available now; returns the amount of work (0 = idle).
    fn do_work(&mut self, now_ns: u64) -> usize;
    /// Names the thread and the log lines.
    fn name(&self) -> &str;
    /// Why the agent cannot go on, if it cannot.
    fn failure(&self) -> Option<String> {
        None
    }
    /// Whether the agent has completed its work and its thread should end (an orderly
    /// shutdown, not a failure).
    fn finished(&self, _now_ns: u64) -> bool {
        false
    }
    /// Called once on the agent's thread when the runner stops.
    fn on_close(&mut self) {}
}

/// Duty-cycle statistics of one runner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CycleStats {
    pub cycles: u64,
    pub max_cycle_ns: u64,
    pub stalls: u64,
}

const STALL_NS: u64 = 1_000_000;

/// The CPUs this process may run on, captured once before any thread pins itself
/// (core_affinity reports the calling thread's current mask).
pub fn available_cores() -> &'static [core_affinity::CoreId] {
    static CORES: OnceLock<Vec<core_affinity::CoreId>> = OnceLock::new();
    CORES.get_or_init(|| core_affinity::get_core_ids().unwrap_or_default())
}

fn pin_current(core: usize, name: &str) {
    match available_cores().iter().find(|c| c.id == core) {
        Some(&id) if core_affinity::set_for_current(id) => {}
        _ => eprintln!("raftline: {name}: could not pin to core {core}; running unpinned"),
    }
}

/// Runs `agent` on a new thread named after it until `stop` is set or the agent fails.
pub fn spawn_agent<A: Agent + 'static>(
    mut agent: A,
    strategy: IdleStrategy,
    wait: WaitSet,
    core: Option<usize>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<(A, CycleStats)>> {
    available_cores();
    let name = agent.name().to_string();
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            if let Some(core) = core {
                pin_current(core, &name);
            }
            let mut idler = match Idler::new(strategy, &wait) {
                Ok(i) => i,
                Err(e) => {
                    eprintln!(
                        "raftline: {name}: idle strategy {} unavailable ({e}); using backoff",
                        strategy.name()
                    );
                    let backoff = IdleStrategy::parse("backoff").expect("known strategy");
                    Idler::new(backoff, &WaitSet::default()).expect("backoff needs no fds")
                }
            };
            let mut stats = CycleStats::default();
            while !stop.load(Ordering::Relaxed) {
                let now = monotonic_ns();
                let work = agent.do_work(now);
                let cycle = monotonic_ns().saturating_sub(now);
                stats.cycles += 1;
                stats.max_cycle_ns = stats.max_cycle_ns.max(cycle);
                if cycle > STALL_NS {
                    stats.stalls += 1;
                }
                if agent.failure().is_some() || agent.finished(now) {
                    break;
                }
                idler.idle(work);
            }
            agent.on_close();
            (agent, stats)
        })
}

/// A node as an agent: one duty cycle is one `Node::tick`, plus housekeeping (segments made
/// ahead of need, counters published).
pub struct NodeAgent<A: ApplyStage + Send> {
    name: String,
    /// Member addresses found (or changed) by the resolver thread.
    addresses: Option<std::sync::mpsc::Receiver<(u32, SocketAddr)>>,
    /// Zero-fills spare segment files off this thread.
    preparer: Option<SegmentPreparer>,
    node: Node<LinuxDisk, Authenticated<NodeNet>, A>,
    counters: Option<CountersFile>,
    failure: Option<String>,
    next_housekeeping_ns: u64,
    stats: CycleStats,
    /// Writes the snapshots this node's applier takes (shared threading).
    snapshots: Option<SnapshotWriter>,
    /// The log directory (retired segments are deleted from it off this thread).
    dir: std::path::PathBuf,
}

impl<A: ApplyStage + Send> NodeAgent<A> {
    pub fn node(&self) -> &Node<LinuxDisk, Authenticated<NodeNet>, A> {
        &self.node
    }

    fn publish_counters(&self) {
        let Some(c) = &self.counters else { return };
        let n = &self.node;
        let cons = n.consensus();
        c.set(Counter::Role, u64::from(cons.role().code()));
        c.set(Counter::Term, cons.term());
        c.set(Counter::Leader, cons.leader().map_or(u64::MAX, u64::from));
        c.set(Counter::AppendedPosition, n.log().appended_position());
        c.set(Counter::DurablePosition, n.log().durable_position());
        c.set(Counter::CommitPosition, n.commit_position());
        c.set(Counter::AppliedPosition, n.applier().applied_position());
        c.set(Counter::ServiceDigest, n.applier().digest());
        c.set(Counter::AppliedMessages, n.applier().applied_messages());
        c.set(Counter::SnapshotsTaken, n.applier().snapshots_taken());
        c.set(Counter::DigestMismatches, n.applier().digest_mismatches());
        c.set(Counter::LogStartPosition, n.log().start_position());
        let k = cons.counters();
        c.set(Counter::ElectionsStarted, k.elections_started);
        c.set(Counter::Leaderships, k.leaderships);
        c.set(Counter::Truncations, k.truncations);
        c.set(Counter::MessagesDropped, k.messages_dropped);
        let s = n.stats();
        c.set(Counter::FramesMalformed, s.frames_malformed);
        c.set(Counter::ClientRequests, s.client_requests);
        c.set(Counter::ClientRedirects, s.client_redirects);
        c.set(Counter::ClientBackPressure, s.client_backpressure);
        c.set(Counter::SnapshotsSent, s.snapshots_sent);
        c.set(Counter::SnapshotsInstalled, s.snapshots_installed);
        let u = n.transport().inner().udp().stats();
        let l = n
            .transport()
            .inner()
            .links()
            .map(|l| l.stats())
            .unwrap_or_default();
        c.set(Counter::DatagramsReceived, u.datagrams_received);
        c.set(Counter::DatagramsSent, u.datagrams_sent);
        c.set(Counter::ForeignDatagramsDropped, u.foreign_dropped);
        c.set(Counter::RingRecordsSent, l.records_sent);
        c.set(Counter::RingRecordsReceived, l.records_received);
        c.set(Counter::RingFullDropped, l.full_dropped);
        c.set(Counter::DutyCycles, self.stats.cycles);
        c.set(Counter::MaxCycleNs, self.stats.max_cycle_ns);
        c.set(Counter::StallCycles, self.stats.stalls);
        c.set(Counter::LogRounds, n.log().stats().rounds);
        c.set(Counter::ReplicatedAppendsRefused, s.appends_refused);
        c.set(Counter::ReplicationResends, k.resends);
        let a = n.transport().stats().unwrap_or_default();
        c.set(
            Counter::MemberSealsRefused,
            a.unsealed_refused + a.bad_tag + a.misaddressed,
        );
        c.set(Counter::MemberReplaysRefused, a.replayed);
        c.set(
            Counter::ImpossibleMessagesRefused,
            k.messages_invalid + s.peer_reports_refused,
        );
        c.set(Counter::VotesAbstained, k.votes_abstained);
        c.set(Counter::LogDamageFound, s.log_damage_found);
        c.set(Counter::OversizedDatagramsDropped, u.oversized_dropped);
        c.set(Counter::CommitInsideFrame, s.commit_inside_frame);
        c.set(Counter::MessagesTooLarge, s.messages_too_large);
        c.set(Counter::ConnectsUnauthenticated, s.connects_unauthenticated);
        c.set(Counter::SessionsRefused, s.sessions_refused);
        c.set(Counter::SessionFramesUnbound, s.session_frames_unbound);
        c.set(Counter::AdminRefused, s.admin_refused);
        c.set(Counter::MemberSettingsDiffer, s.member_settings_differ);
        c.set(Counter::MemberFramesUnagreed, s.member_frames_unagreed);
        c.set(Counter::ResendsInFlight, s.resends_in_flight);
        c.set(Counter::InstallsRefused, s.installs_refused);
        c.set(Counter::ClientAddressesRefused, u.clients_rejected);
        c.set(Counter::ClientAddressesEvicted, u.clients_evicted);
        c.set(Counter::SendErrors, u.send_errors);
    }
}

impl<A: ApplyStage + Send> Agent for NodeAgent<A> {
    fn do_work(&mut self, now_ns: u64) -> usize {
        let work = match self.node.tick(now_ns) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("raftline: {}: stopped: {e}", self.name);
                self.failure = Some(e.to_string());
                return 0;
            }
        };
        if let Some(snapshot) = self.node.take_snapshot() {
            if let Some(w) = &self.snapshots {
                w.submit(snapshot);
            }
        }
        if now_ns >= self.next_housekeeping_ns {
            self.next_housekeeping_ns = now_ns + 1_000_000;
            let retired = self.node.take_retired();
            if !retired.is_empty() {
                let paths: Vec<_> = retired.iter().map(|n| self.dir.join(n)).collect();
                // Deleting a large file may take a while (discards): not on this thread.
                let _ = std::thread::Builder::new()
                    .name("raftline-retire".into())
                    .spawn(move || {
                        for p in paths {
                            let _ = std::fs::remove_file(p);
                        }
                    });
            }
            if let Some(rx) = &self.addresses {
                while let Ok((member, addr)) = rx.try_recv() {
                    self.node
                        .net_mut()
                        .inner_mut()
                        .udp_mut()
                        .set_member_address(member, addr);
                }
            }
            let prepared = match &mut self.preparer {
                Some(p) => p.keep_ahead(self.node.log_mut()),
                None => self.node.log_mut().prepare_segments(1).map(|_| ()),
            };
            if let Err(e) = prepared {
                eprintln!("raftline: {}: stopped: {e}", self.name);
                self.failure = Some(e.to_string());
            }
            self.publish_counters();
        }
        // The cycle's own duration (not the idle time before it): where tail latency comes from.
        let cycle = monotonic_ns().saturating_sub(now_ns);
        self.stats.cycles += 1;
        self.stats.max_cycle_ns = self.stats.max_cycle_ns.max(cycle);
        if cycle > STALL_NS {
            self.stats.stalls += 1;
        }
        work
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn failure(&self) -> Option<String> {
        self.failure.clone()
    }

    fn finished(&self, now_ns: u64) -> bool {
        let done = self.node.finished(now_ns);
        if done {
            eprintln!(
                "raftline: {}: the cluster shut down at log position {}",
                self.name,
                self.node.applier().applied_position()
            );
        }
        done
    }

    fn on_close(&mut self) {
        // Finish the write in flight so a clean stop loses nothing it appended, and seal the
        // log so that recovery can tell damage anywhere in it from a torn write.
        if let Err(e) = self.node.log_mut().seal() {
            eprintln!("raftline: {}: final flush failed: {e}", self.name);
        }
        self.node.terminate();
        self.publish_counters();
    }
}

/// The receiver of dedicated threading: drains the socket into the node thread's ring.
pub struct ReceiverAgent {
    name: String,
    receiver: crate::sys::udp::UdpReceiver,
}

impl Agent for ReceiverAgent {
    fn do_work(&mut self, _now_ns: u64) -> usize {
        self.receiver.receive_batch()
    }

    fn name(&self) -> &str {
        &self.name
    }
}

fn resolve(name: &str) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    name.to_socket_addrs().ok().and_then(|mut a| a.next())
}

/// Resolves member names off the node's thread (a lookup can block for seconds): every second
/// while some are unknown, every ten seconds after, reporting new and changed addresses.
fn spawn_resolver(
    names: Vec<String>,
    mut known: Vec<Option<SocketAddr>>,
    own: u32,
    tx: std::sync::mpsc::Sender<(u32, SocketAddr)>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("raftline-resolve-{own}"))
        .spawn(move || loop {
            let pause_ms = if known.iter().any(Option::is_none) {
                1_000
            } else {
                10_000
            };
            for _ in 0..pause_ms / 50 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            for (i, name) in names.iter().enumerate() {
                if i as u32 == own {
                    continue;
                }
                let Some(addr) = resolve(name) else { continue };
                if known[i] == Some(addr) {
                    continue;
                }
                if let Some(j) = known.iter().position(|k| *k == Some(addr)) {
                    // Taking it would make one address two members: keep the old one.
                    eprintln!(
                        "raftline: node {own}: member {i} ({name}) resolved to {addr}, the address of member {j} ({}): ignored; each member needs its own address",
                        names[j]
                    );
                    continue;
                }
                match known[i] {
                    None => {
                        eprintln!("raftline: node {own}: member {i} ({name}) resolved to {addr}")
                    }
                    Some(old) => eprintln!(
                        "raftline: node {own}: member {i} ({name}) moved from {old} to {addr}"
                    ),
                }
                known[i] = Some(addr);
                if tx.send((i as u32, addr)).is_err() {
                    return;
                }
            }
        })
}

/// Makes zero-filled spare segment files on its own thread, so the node's thread never
/// stalls creating one (zero-filling costs as much as writing the segment: tens of ms).
struct SegmentPreparer {
    requests: std::sync::mpsc::Sender<()>,
    done: std::sync::mpsc::Receiver<Result<String, String>>,
    pending: usize,
    /// Failures in a row (a full disk): reported once, retried at most every 100 ms.
    failures: u64,
    retry_at_ns: u64,
}

impl SegmentPreparer {
    fn start(dir: std::path::PathBuf, len: u64, id: u32) -> std::io::Result<Self> {
        let (requests, rx) = std::sync::mpsc::channel::<()>();
        let (tx, done) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("raftline-prep-{id}"))
            .spawn(move || {
                let mut k = 0u64;
                while rx.recv().is_ok() {
                    k += 1;
                    let name = format!("spare-p{}x{k}.seg", std::process::id());
                    let result = crate::sys::files::zero_filled_file(&dir, &name, len)
                        .map(|()| name)
                        .map_err(|e| e.to_string());
                    if tx.send(result).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Self {
            requests,
            done,
            pending: 0,
            failures: 0,
            retry_at_ns: 0,
        })
    }

    /// Adopts finished spares and asks for more when the next segment would need one.
    fn keep_ahead<D: crate::io::Disk>(
        &mut self,
        log: &mut crate::log::Log<D>,
    ) -> Result<(), crate::log::LogError> {
        while let Ok(result) = self.done.try_recv() {
            self.pending -= 1;
            match result {
                Ok(name) => {
                    if self.failures > 0 {
                        eprintln!(
                            "raftline: preparing spare segments works again (after {} failed attempts)",
                            self.failures
                        );
                        self.failures = 0;
                    }
                    log.add_spare(name);
                }
                // The roll falls back to creating the file itself, and reports an error then.
                Err(e) => {
                    if self.failures == 0 {
                        eprintln!(
                            "raftline: preparing a spare segment failed: {e}; retrying every 100 ms"
                        );
                    }
                    self.failures += 1;
                    self.retry_at_ns = monotonic_ns() + 100_000_000;
                }
            }
        }
        if self.failures > 0 && monotonic_ns() < self.retry_at_ns {
            return log.prepare_segments_from_spares(0).map(|_| ());
        }
        // Zero-filling competes with the log for the disk: make the next segment only once the
        // current one is half full (a start-up with an empty log makes none).
        let segment = log.config().segment_bytes;
        let ahead = if log.appended_position() % segment >= segment / 2 {
            1
        } else {
            0
        };
        let missing = log.missing_segments(ahead);
        while self.pending < missing {
            if self.requests.send(()).is_err() {
                break;
            }
            self.pending += 1;
        }
        log.prepare_segments_from_spares(ahead).map(|_| ())
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("log directory {dir}: {source}")]
    LogDir {
        dir: String,
        source: crate::io::DiskError,
    },
    #[error("binding {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("IPC rings in {dir}: {source}")]
    Ipc { dir: String, source: std::io::Error },
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("{0}")]
    Thread(std::io::Error),
    #[error("snapshots in {dir}: {message}")]
    Snapshot { dir: String, message: String },
}

/// A node running on its own thread(s).
pub struct RunningNode<S: Service + Send + 'static> {
    stop: Arc<AtomicBool>,
    threads: Option<Threads<S>>,
    /// Dedicated threading: the receiver's thread.
    receiver: Option<JoinHandle<(ReceiverAgent, CycleStats)>>,
    resolver: Option<JoinHandle<()>>,
    pub writer: String,
}

impl<S: Service + Send + 'static> RunningNode<S> {
    /// Opens the log, binds the socket (and opens the IPC rings when members use them) and
    /// starts the node's thread(s).
    pub fn start(config: &Config, service: S) -> Result<Self, StartError> {
        config.validate()?;
        let links: Option<Box<dyn Links>> = match config.member_transport()? {
            MemberTransport::Udp => None,
            MemberTransport::Ipc => {
                let dir = config.ipc_dir();
                let links = ipc_links(
                    &dir,
                    config.node.id,
                    config.cluster.members.len() as u32,
                    config.transport.ipc_ring_kib << 10,
                )
                .map_err(|source| StartError::Ipc {
                    dir: dir.display().to_string(),
                    source,
                })?;
                Some(Box::new(links))
            }
        };
        Self::start_with_links(config, service, links)
    }

    /// Like [`RunningNode::start`], with member traffic over `links` (for example one of
    /// [`crate::sys::in_process_links`], for a cluster in one process) instead of what the
    /// configuration says.
    pub fn start_with_links(
        config: &Config,
        service: S,
        links: Option<Box<dyn Links>>,
    ) -> Result<Self, StartError> {
        config.validate()?;
        let id = config.node.id;
        // This node's own address must resolve (it binds it); others may not exist yet
        // (containers and pods start before their DNS entries): a resolver thread keeps trying.
        let members: Vec<Option<SocketAddr>> =
            config.cluster.members.iter().map(|m| resolve(m)).collect();
        let Some(bind) = members[id as usize] else {
            return Err(StartError::Config(ConfigError::Value {
                key: format!("cluster.members[{id}]"),
                value: config.cluster.members[id as usize].clone(),
                allowed: "this node's own address, resolvable at start".into(),
            }));
        };
        // Members that resolve now must be distinct (`localhost` and `127.0.0.1` with one port
        // are one member twice); later resolutions are checked by the resolver thread.
        let known: Vec<(String, SocketAddr)> = config
            .cluster
            .members
            .iter()
            .zip(&members)
            .filter_map(|(n, a)| a.map(|a| (n.clone(), a)))
            .collect();
        crate::config::check_distinct(
            &known.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
            &known.iter().map(|(_, a)| *a).collect::<Vec<_>>(),
        )?;
        for (i, m) in members.iter().enumerate() {
            if m.is_none() {
                eprintln!(
                    "raftline: node {id}: member {i} ({}) does not resolve yet; retrying in the background",
                    config.cluster.members[i]
                );
            }
        }
        let dir = config.node.log_dir.clone();
        let options = LinuxDiskOptions {
            io_uring: config.log.io_uring,
            direct: config.log.direct_io,
        };
        let disk = LinuxDisk::open(&dir, options).map_err(|source| StartError::LogDir {
            dir: dir.display().to_string(),
            source,
        })?;
        let completion_fd = disk.completion_fd();
        let mut transport = UdpTransport::bind_partial(
            bind,
            members.clone(),
            config.cluster.id,
            config.transport.max_datagram_bytes,
        )
        .map_err(|source| StartError::Bind {
            addr: bind.to_string(),
            source,
        })?;
        transport.set_client_limits(
            config.transport.max_client_addresses,
            config.transport.client_idle_ms.saturating_mul(1_000_000),
        );
        // Dedicated threading: a receiver thread drains the socket into a ring and signals an
        // eventfd; the node thread blocks on that and on io_uring completions.
        let mut receiver = None;
        let mut wait = WaitSet::default();
        let dedicated = config.threading()? == ThreadingMode::Dedicated;
        if dedicated {
            let (r, eventfd) = transport
                .split_receiver(8 << 20)
                .map_err(StartError::Thread)?;
            wait.sources.push(eventfd);
            receiver = Some(r);
        } else {
            wait.sources.push(transport.raw_fd());
        }
        wait.sources.extend(completion_fd);
        let strategy = config.idle_strategy()?;
        let blocks = matches!(strategy, IdleStrategy::Block { .. });
        let mut links = links;
        if let Some(links) = &mut links {
            links.set_reader_blocks(blocks);
            wait.doorbells.push(links.wake_fd());
        }
        let sealer = config.member_keys()?.map(|keys| {
            let epoch = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            Sealer::new(id, config.cluster.members.len() as u32, keys, epoch)
        });
        if sealer.is_none() {
            eprintln!(
                "raftline: node {id}: no member key ([transport] member_key_file or RAFTLINE_MEMBER_KEY): members are not authenticated, and anyone who can send this node a datagram can pose as a member"
            );
        }
        let transport = Authenticated::new(NodeNet::new(transport, links), sealer);
        let access = config.access()?;
        if !access.clients_checked {
            eprintln!(
                "raftline: node {id}: no client token ([access] client_token_file or RAFTLINE_CLIENT_TOKEN): any source may open a session, and one that learns a session id may re-bind it"
            );
        }
        if access.admin.is_none() {
            eprintln!(
                "raftline: node {id}: no admin token ([access] admin_token_file or RAFTLINE_ADMIN_TOKEN): any source may describe, snapshot, transfer or shut down the cluster"
            );
        }
        let node_config = NodeConfig {
            consensus: config.consensus_config(),
            log: config.log_config(),
            snapshot_interval_bytes: config.snapshot.interval_kib * 1024,
            session_timeout_ns: config.session.timeout_ms * 1_000_000,
            sessions: config.session_limits(),
            max_install_bytes: config.snapshot.max_install_mib.saturating_mul(1 << 20),
            recover_vote: config.node.recover_vote,
        };
        // Recovery starts from the newest snapshot that passes its checksum, if any; the node
        // then replays the log from its position.
        // Snapshot files live next to the log's segments (the node reads them through its
        // disk to send a follower that needs one, and writes the ones it installs).
        let snapshot_dir = dir.clone();
        remove_retired_segments(&dir);
        let mut applier = Applier::new(service);
        let latest = crate::service::snapshot::load_latest(
            &mut crate::sys::files::DirFiles::new(&snapshot_dir),
            |name, why| {
                eprintln!(
                    "raftline: node {id}: skipping snapshot {}: {why}; trying the one before",
                    snapshot_dir.join(name).display()
                )
            },
        )
        .map_err(|e| StartError::Snapshot {
            dir: snapshot_dir.display().to_string(),
            message: e.to_string(),
        })?;
        if let Some((position, _)) = &latest {
            eprintln!(
                "raftline: node {id}: starting from the snapshot at log position {position}, replaying the log after it"
            );
        }
        if dedicated {
            applier.record_timer_changes();
        }
        applier
            .start(latest.as_ref().map(|(_, bytes)| bytes.as_slice()))
            .map_err(|e| StartError::Snapshot {
                dir: snapshot_dir.display().to_string(),
                message: e.to_string(),
            })?;
        let snapshots = SnapshotWriter::start(
            snapshot_dir,
            format!("raftline-node-{id}"),
            latest.as_ref().map_or(0, |(position, _)| *position),
        )
        .map_err(StartError::Thread)?;
        let snapshot_progress = snapshots.progress();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let resolver = spawn_resolver(
            config.cluster.members.clone(),
            members,
            id,
            tx,
            stop.clone(),
        )
        .map_err(StartError::Thread)?;
        let cores = &config.runtime.cores;
        let receiver_thread = match receiver {
            Some(receiver) => {
                let fd = receiver.raw_fd();
                let agent = ReceiverAgent {
                    name: format!("raftline-recv-{id}"),
                    receiver,
                };
                Some(
                    spawn_agent(
                        agent,
                        strategy,
                        WaitSet::sources(vec![fd]),
                        cores.get(1).copied(),
                        stop.clone(),
                    )
                    .map_err(StartError::Thread)?,
                )
            }
            None => None,
        };
        let mut parts = NodeParts {
            config: node_config,
            disk,
            transport,
            wait,
            addresses: rx,
            dir,
            id,
            strategy,
            core: cores.first().copied(),
            stop: stop.clone(),
            snapshots: None,
            snapshot_progress,
            access,
        };
        let (threads, writer) = if config.threading()? == ThreadingMode::Dedicated {
            let name = format!("raftline-svc-{id}");
            let (remote, agent) =
                service_agent::split(applier, Some(snapshots), 16 << 20, name, blocks)
                    .map_err(StartError::Thread)?;
            parts.wait.doorbells.push(remote.feed().wake_fd());
            let service_stop = Arc::new(AtomicBool::new(false));
            let wait = WaitSet {
                sources: Vec::new(),
                doorbells: vec![agent.wake_fd()],
            };
            let service = spawn_agent(
                agent,
                strategy,
                wait,
                cores.get(2).copied(),
                service_stop.clone(),
            )
            .map_err(StartError::Thread)?;
            let (node, writer) = parts.spawn(remote)?;
            (
                Threads::Dedicated {
                    node,
                    service,
                    service_stop,
                },
                writer,
            )
        } else {
            parts.snapshots = Some(snapshots);
            let (node, writer) = parts.spawn(applier)?;
            (Threads::Shared(node), writer)
        };
        Ok(Self {
            stop,
            threads: Some(threads),
            receiver: receiver_thread,
            resolver: Some(resolver),
            writer,
        })
    }

    /// Whether the node's thread has stopped on its own (an error it logged).
    pub fn has_stopped(&self) -> bool {
        match &self.threads {
            None => true,
            Some(Threads::Shared(t)) => t.is_finished(),
            Some(Threads::Dedicated { node, service, .. }) => {
                node.is_finished() || service.is_finished()
            }
        }
    }

    /// Stops the node cleanly (the node thread finishes its write in flight, then the service
    /// thread applies everything it was fed) and gives back the service.
    pub fn stop(mut self) -> Option<StoppedNode<S>> {
        self.stop_threads()
    }

    fn stop_threads(&mut self) -> Option<StoppedNode<S>> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.receiver.take() {
            let _ = r.join();
        }
        if let Some(r) = self.resolver.take() {
            let _ = r.join();
        }
        match self.threads.take()? {
            Threads::Shared(node) => {
                let (agent, cycles) = node.join().ok()?;
                let failure = agent.failure();
                Some(StoppedNode {
                    service: agent.node.into_applier().into_service(),
                    failure,
                    cycles,
                    service_cycles: None,
                })
            }
            Threads::Dedicated {
                node,
                service,
                service_stop,
            } => {
                let joined = node.join().ok();
                service_stop.store(true, Ordering::Relaxed);
                let (agent, service_cycles) = service.join().ok()?;
                let (node, cycles) = joined?;
                Some(StoppedNode {
                    service: agent.into_service(),
                    failure: node.failure(),
                    cycles,
                    service_cycles: Some(service_cycles),
                })
            }
        }
    }
}

/// What is left of a node after it stopped.
pub struct StoppedNode<S> {
    pub service: S,
    /// Why the node stopped on its own, if it did.
    pub failure: Option<String>,
    /// Duty cycles of the node's thread.
    pub cycles: CycleStats,
    /// Duty cycles of the service thread (dedicated threading).
    pub service_cycles: Option<CycleStats>,
}

enum Threads<S: Service + Send + 'static> {
    /// One thread runs the node and applies to the service.
    Shared(JoinHandle<(NodeAgent<Applier<S>>, CycleStats)>),
    /// The node's thread feeds a service thread (and a receiver thread feeds the node).
    Dedicated {
        node: JoinHandle<(NodeAgent<RemoteApplier>, CycleStats)>,
        service: JoinHandle<(ServiceAgent<S>, CycleStats)>,
        /// Set after the node's thread has stopped, so the service applies all it was fed.
        service_stop: Arc<AtomicBool>,
    },
}

/// Everything a node's thread needs, whatever applies its log.
struct NodeParts {
    config: NodeConfig,
    disk: LinuxDisk,
    transport: Authenticated<NodeNet>,
    wait: WaitSet,
    addresses: std::sync::mpsc::Receiver<(u32, SocketAddr)>,
    dir: std::path::PathBuf,
    id: u32,
    strategy: IdleStrategy,
    core: Option<usize>,
    stop: Arc<AtomicBool>,
    /// Shared threading: the writer for the snapshots the node's applier takes.
    snapshots: Option<SnapshotWriter>,
    /// The newest durable snapshot position, whichever thread writes them.
    snapshot_progress: Arc<std::sync::atomic::AtomicU64>,
    access: crate::access::Access,
}

/// Deletes segment files a previous run retired and did not get to delete.
fn remove_retired_segments(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(crate::log::RETIRED_PREFIX))
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

type NodeThread<A> = JoinHandle<(NodeAgent<A>, CycleStats)>;

impl NodeParts {
    /// Opens the node (recovering its log) and starts its thread.
    fn spawn<A: ApplyStage + Send + 'static>(
        self,
        applier: A,
    ) -> Result<(NodeThread<A>, String), StartError> {
        let id = self.id;
        let mut node = Node::open(
            self.config,
            self.disk,
            self.transport,
            applier,
            monotonic_ns(),
        )?;
        node.set_log_transitions(true);
        node.set_access(self.access);
        for note in node.recovery_notes() {
            eprintln!("{note}");
        }
        node.set_snapshot_progress(self.snapshot_progress);
        let writer = node.log().disk().describe();
        let counters = match CountersFile::create(&self.dir) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!(
                    "raftline: node {id}: no counters file in {} ({e})",
                    self.dir.display()
                );
                None
            }
        };
        let preparer = SegmentPreparer::start(self.dir.clone(), node.log().segment_file_len(), id)
            .map_err(StartError::Thread)?;
        let agent = NodeAgent {
            dir: self.dir.clone(),
            snapshots: self.snapshots,
            preparer: Some(preparer),
            addresses: Some(self.addresses),
            name: format!("raftline-node-{id}"),
            node,
            counters,
            failure: None,
            next_housekeeping_ns: 0,
            stats: CycleStats::default(),
        };
        let thread = spawn_agent(agent, self.strategy, self.wait, self.core, self.stop)
            .map_err(StartError::Thread)?;
        Ok((thread, writer))
    }
}

impl<S: Service + Send + 'static> Drop for RunningNode<S> {
    fn drop(&mut self) {
        self.stop_threads();
    }
}
