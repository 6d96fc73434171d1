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

mod agent;
pub mod check;
pub mod counters;
mod idle;
pub mod metrics;
mod node_agent;
mod preparer;
mod resolver;
pub mod service_agent;
pub mod snapshot_files;
mod start;

use agent::STALL_NS;
pub use agent::{available_cores, spawn_agent, Agent, CycleStats};
pub use idle::{IdleStrategy, Idler, WaitSet};
pub use node_agent::{NodeAgent, ReceiverAgent};
use preparer::SegmentPreparer;
use resolver::{resolve, spawn_resolver};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use crate::auth::{Authenticated, Sealer};
use crate::config::{Config, ConfigError, MemberTransport, ThreadingMode};
use crate::io::Disk;
use crate::log::Durability;
use crate::node::{ApplyStage, Node, NodeConfig, NodeError};
use crate::service::{Applier, Service};
use crate::sys::cost::CostBoard;
use crate::sys::{ipc_links, Links, LinuxDisk, LinuxDiskOptions, NodeNet, UdpTransport};
use counters::{Counter, CountersFile};
use service_agent::{RemoteApplier, ServiceAgent};
use snapshot_files::SnapshotWriter;

pub use crate::sys::clock::monotonic_ns;

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
        let (members, bind) = start::resolve_members(config)?;
        let dir = config.node.log_dir.clone();
        let options = LinuxDiskOptions {
            io_uring: config.log.io_uring,
            direct: config.log.direct_io,
            // Nothing is promised durable: the page cache is the fastest place that a restart
            // of the process (not of the host) still finds.
            page_cache: config.durability()? == Durability::None,
        };
        let disk = LinuxDisk::open(&dir, options).map_err(|source| StartError::LogDir {
            dir: dir.display().to_string(),
            source,
        })?;
        let completion_fd = disk.completion_fd();
        let mut transport = start::bind_transport(config, bind, &members)?;
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
        let (sealer, access) = start::authentication(config, id)?;
        let transport = Authenticated::new(NodeNet::new(transport, links), sealer);
        let node_config = start::node_config(config);
        let (applier, snapshots) = start::start_applier(service, &dir, id, dedicated)?;
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
        // What the node's threads spend, summed into its counters.
        let cost = CostBoard::default();
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
                        Some(cost.clone()),
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
            cost: cost.clone(),
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
                Some(cost.clone()),
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
    cost: CostBoard,
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
            let note = note.strip_prefix("raftline: ").unwrap_or(note);
            tracing::warn!(member = id, "{note}");
        }
        node.set_snapshot_progress(self.snapshot_progress);
        let writer = node.log().disk().describe();
        let counters = match CountersFile::create(&self.dir) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(
                    "node {id}: no counters file in {} ({e})",
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
            cost: self.cost.clone(),
        };
        let thread = spawn_agent(
            agent,
            self.strategy,
            self.wait,
            self.core,
            self.stop,
            Some(self.cost),
        )
        .map_err(StartError::Thread)?;
        Ok((thread, writer))
    }
}

impl<S: Service + Send + 'static> Drop for RunningNode<S> {
    fn drop(&mut self) {
        self.stop_threads();
    }
}
