//! The peer for `raftline-bench compare`: a 3-node openraft cluster in this process, driven by
//! the same open-loop client method as raftline's latency run (a paced thread, latency from the
//! intended send time).
//!
//! - Network: in-process. A node's RPC to another is a call on the target's `Raft` handle (a
//!   tokio channel hop each way); no sockets, so the peer does not pay the loopback UDP hops
//!   raftline's members and client do.
//! - Log: in memory (durability none), or in memory plus a group-committing writer thread that
//!   writes each batch of entries to a preallocated file and fdatasyncs once per batch before it
//!   reports the entries flushed (durability fdatasync). The vote is written and fdatasynced
//!   before it is acknowledged.
//! - Service: echo — applying an entry returns its payload to the writer; the state machine keeps
//!   a count and a digest of what it applied.
//! - Runtime: a multi-threaded tokio runtime with one worker per core.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::{Cursor, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership, Vote,
};
use raftline::log::Durability;
use raftline::runtime::monotonic_ns;

use crate::latency::{Recorder, RunResult};
use crate::peer::PeerRun;

/// The exact peer version measured (pinned in bench/Cargo.toml).
pub const VERSION: &str = "openraft 0.9.25";

openraft::declare_raft_types!(
    pub Echo:
        D = Vec<u8>,
        R = Vec<u8>,
);

type NodeId = u64;
type Raft = openraft::Raft<Echo>;
type StorageResult<T> = Result<T, StorageError<NodeId>>;

fn io_error(e: std::io::Error) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

// ---- log store ---------------------------------------------------------------------------

#[derive(Default)]
struct LogInner {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
    entries: BTreeMap<u64, Entry<Echo>>,
}

/// A batch of encoded entries and the callback that reports them flushed.
type FlushJob = (Vec<u8>, LogFlushed<Echo>);

#[derive(Clone)]
struct LogStore {
    inner: Arc<Mutex<LogInner>>,
    /// With fdatasync: the group-commit writer and the vote file.
    durable: Option<(mpsc::Sender<FlushJob>, PathBuf)>,
}

impl LogStore {
    fn new(durability: Durability, dir: &Path) -> std::io::Result<Self> {
        let durable = match durability {
            Durability::None => None,
            Durability::Fdatasync => {
                std::fs::create_dir_all(dir)?;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .open(dir.join("log.dat"))?;
                // Zero-filled up front, like raftline's preallocated segments, so an
                // fdatasync flushes data and no file-size metadata.
                let zeros = vec![0u8; 1 << 20];
                for _ in 0..LOG_FILE_BYTES >> 20 {
                    (&file).write_all(&zeros)?;
                }
                file.sync_all()?;
                let (tx, rx) = mpsc::channel::<FlushJob>();
                std::thread::Builder::new()
                    .name("openraft-log".into())
                    .spawn(move || group_commit(file, rx))?;
                Some((tx, dir.join("vote.dat")))
            }
        };
        Ok(Self {
            inner: Arc::default(),
            durable,
        })
    }
}

/// The peer's log file: written in a circle (its entries are served from memory; the file is
/// there for the cost of making them durable).
const LOG_FILE_BYTES: u64 = 32 << 20;

/// Writes every job waiting, fdatasyncs once, then reports each job flushed.
fn group_commit(file: std::fs::File, rx: mpsc::Receiver<FlushJob>) {
    use std::os::unix::fs::FileExt;
    let mut at = 0u64;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        jobs.extend(rx.try_iter());
        let result = jobs
            .iter()
            .try_for_each(|(bytes, _)| {
                if at + bytes.len() as u64 > LOG_FILE_BYTES {
                    at = 0;
                }
                file.write_all_at(bytes, at)?;
                at += bytes.len() as u64;
                Ok(())
            })
            .and_then(|()| file.sync_data());
        for (_, callback) in jobs {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            };
            callback.log_io_completed(r);
        }
    }
}

fn encode(entry: &Entry<Echo>, out: &mut Vec<u8>) {
    out.extend_from_slice(&entry.log_id.leader_id.term.to_le_bytes());
    out.extend_from_slice(&entry.log_id.index.to_le_bytes());
    match &entry.payload {
        EntryPayload::Normal(data) => {
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
        }
        // Blank and membership entries: a marker is enough for the cost being measured.
        _ => out.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
}

impl RaftLogReader<Echo> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<Echo>>> {
        let inner = self.inner.lock().expect("log lock");
        Ok(inner.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<Echo> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<Echo>> {
        let inner = self.inner.lock().expect("log lock");
        let last = inner.entries.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last.or(inner.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        if let Some((_, path)) = &self.durable {
            let bytes = format!("{vote:?}");
            let mut f = std::fs::File::create(path).map_err(io_error)?;
            f.write_all(bytes.as_bytes()).map_err(io_error)?;
            f.sync_data().map_err(io_error)?;
        }
        self.inner.lock().expect("log lock").vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        Ok(self.inner.lock().expect("log lock").vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        self.inner.lock().expect("log lock").committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self.inner.lock().expect("log lock").committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<Echo>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<Echo>> + Send,
        I::IntoIter: Send,
    {
        let mut bytes = Vec::new();
        {
            let mut inner = self.inner.lock().expect("log lock");
            for entry in entries {
                if self.durable.is_some() {
                    encode(&entry, &mut bytes);
                }
                inner.entries.insert(entry.log_id.index, entry);
            }
        }
        match &self.durable {
            Some((writer, _)) => writer
                .send((bytes, callback))
                .map_err(|_| io_error(std::io::Error::other("the log writer thread stopped")))?,
            None => callback.log_io_completed(Ok(())),
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut inner = self.inner.lock().expect("log lock");
        inner.entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut inner = self.inner.lock().expect("log lock");
        inner.entries = inner.entries.split_off(&(log_id.index + 1));
        inner.last_purged = Some(log_id);
        Ok(())
    }
}

// ---- state machine -------------------------------------------------------------------------

#[derive(Clone, Default)]
struct EchoMachine {
    inner: Arc<Mutex<MachineInner>>,
}

#[derive(Default)]
struct MachineInner {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    applied: u64,
    digest: u64,
    snapshot: Option<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>)>,
}

impl RaftSnapshotBuilder<Echo> for EchoMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<Echo>> {
        let mut inner = self.inner.lock().expect("machine lock");
        let mut data = inner.applied.to_le_bytes().to_vec();
        data.extend_from_slice(&inner.digest.to_le_bytes());
        let meta = SnapshotMeta {
            last_log_id: inner.last_applied,
            last_membership: inner.membership.clone(),
            snapshot_id: format!("{:?}", inner.last_applied),
        };
        inner.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<Echo> for EchoMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let inner = self.inner.lock().expect("machine lock");
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Vec<u8>>>
    where
        I: IntoIterator<Item = Entry<Echo>> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.inner.lock().expect("machine lock");
        let mut replies = Vec::new();
        for entry in entries {
            inner.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Normal(data) => {
                    inner.applied += 1;
                    inner.digest = raftline::service::fnv1a(inner.digest, &data);
                    replies.push(data);
                }
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembership::new(Some(entry.log_id), m);
                    replies.push(Vec::new());
                }
                EntryPayload::Blank => replies.push(Vec::new()),
            }
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let word = |i: usize| {
            data.get(i * 8..i * 8 + 8)
                .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        };
        let mut inner = self.inner.lock().expect("machine lock");
        inner.applied = word(0);
        inner.digest = word(1);
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<Echo>>> {
        let inner = self.inner.lock().expect("machine lock");
        Ok(inner.snapshot.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}

// ---- in-process network --------------------------------------------------------------------

/// Every node's handle, filled once all three exist.
#[derive(Clone, Default)]
struct Router {
    nodes: Arc<OnceLock<Vec<Raft>>>,
}

impl Router {
    fn node(&self, id: NodeId) -> Result<Raft, Unreachable> {
        self.nodes
            .get()
            .and_then(|n| n.get(id as usize))
            .cloned()
            .ok_or_else(|| Unreachable::new(&std::io::Error::other(format!("no node {id}"))))
    }
}

struct Link {
    router: Router,
    target: NodeId,
}

impl RaftNetworkFactory<Echo> for Router {
    type Network = Link;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Link {
        Link {
            router: self.clone(),
            target,
        }
    }
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl RaftNetwork<Echo> for Link {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Echo>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let node = self.router.node(self.target)?;
        node.append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<Echo>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let node = self.router.node(self.target)?;
        node.install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let node = self.router.node(self.target)?;
        node.vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

// ---- the run -------------------------------------------------------------------------------

/// How the peer's log is made durable, for the report.
pub fn writer(durability: Durability) -> String {
    match durability {
        Durability::None => "in memory".into(),
        Durability::Fdatasync => {
            "in memory + a group-commit thread: write() then one fdatasync per batch".into()
        }
    }
}

/// Starts 3 openraft nodes, offers `rate` msg/s of `size` bytes to the leader open loop, and
/// records each reply's latency from its intended send time.
pub fn measure(run: &PeerRun) -> Result<RunResult, String> {
    let PeerRun {
        durability,
        dir,
        rate,
        size,
        warmup_s,
        seconds,
    } = *run;
    let _ = std::fs::remove_dir_all(dir);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let config = Arc::new(
        openraft::Config {
            cluster_name: "compare".into(),
            heartbeat_interval: 50,
            election_timeout_min: 300,
            election_timeout_max: 600,
            ..Default::default()
        }
        .validate()
        .map_err(|e| format!("openraft config: {e}"))?,
    );
    let router = Router::default();
    let mut nodes = Vec::new();
    for id in 0..3u64 {
        let log = LogStore::new(durability, &dir.join(format!("node-{id}")))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let raft = runtime
            .block_on(Raft::new(
                id,
                config.clone(),
                router.clone(),
                log,
                EchoMachine::default(),
            ))
            .map_err(|e| format!("openraft node {id}: {e}"))?;
        nodes.push(raft);
    }
    let _ = router.nodes.set(nodes.clone());
    let members: BTreeMap<NodeId, BasicNode> =
        (0..3).map(|id| (id, BasicNode::default())).collect();
    runtime
        .block_on(nodes[0].initialize(members))
        .map_err(|e| format!("openraft initialize: {e}"))?;
    let leader = runtime
        .block_on(async {
            let mut metrics = nodes[0].metrics();
            tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    if let Some(l) = metrics.borrow().current_leader {
                        return l;
                    }
                    let _ = metrics.changed().await;
                }
            })
            .await
        })
        .map_err(|_| "openraft elected no leader in 10 s".to_string())?;
    let raft = nodes[leader as usize].clone();

    let interval_ns = 1_000_000_000 / rate.max(1);
    let warmup = (warmup_s * rate as f64) as u64;
    let total = warmup + (seconds * rate as f64) as u64;
    let (done_tx, done_rx) = mpsc::channel::<(u64, u64, u64, bool)>();
    let start = monotonic_ns() + 10_000_000;
    let measured_from = start + warmup * interval_ns;
    let deadline = start + total * interval_ns + 3_000_000_000;
    let mut sent = 0u64;
    let mut t = Tally {
        recorder: Recorder::new(warmup, measured_from),
        received: 0,
        failed: 0,
    };
    let mut last_progress = 0;
    while t.received < total && monotonic_ns() < deadline {
        let now = monotonic_ns();
        while sent < total && start + sent * interval_ns <= now {
            let intended = start + sent * interval_ns;
            let mut payload = vec![0x5au8; size];
            payload[..8].copy_from_slice(&sent.to_le_bytes());
            payload[8..16].copy_from_slice(&intended.to_le_bytes());
            let (raft, tx, index) = (raft.clone(), done_tx.clone(), sent);
            runtime.spawn(async move {
                let ok = match raft.client_write(payload).await {
                    Ok(reply) => reply.data.get(..8) == Some(&index.to_le_bytes()[..]),
                    Err(_) => false,
                };
                let _ = tx.send((index, intended, monotonic_ns(), ok));
            });
            sent += 1;
        }
        for (index, intended, done, ok) in done_rx.try_iter() {
            t.record(index, intended, done, ok);
        }
        if now - last_progress > 1_000_000_000 {
            last_progress = now;
            eprint!("\r  sent {sent} / {total}, echoed {}   ", t.received);
        }
        let next = if sent < total {
            start + sent * interval_ns
        } else {
            now + 1_000_000
        };
        // Sleep until the next send, or a reply.
        let wait = next.saturating_sub(monotonic_ns()).min(1_000_000);
        if let Ok((index, intended, done, ok)) =
            done_rx.recv_timeout(Duration::from_nanos(wait.max(1)))
        {
            t.record(index, intended, done, ok);
        }
    }
    eprintln!();
    let elapsed_s = (monotonic_ns() - start) as f64 / 1e9;
    let measured = total - warmup;
    runtime.block_on(async {
        for n in &nodes {
            let _ = n.shutdown().await;
        }
    });
    drop(nodes);
    drop(router);
    runtime.shutdown_timeout(Duration::from_secs(1));
    let _ = std::fs::remove_dir_all(dir);
    if t.failed > 0 {
        eprintln!(
            "  openraft: {} writes failed or echoed the wrong payload",
            t.failed
        );
    }
    Ok(RunResult {
        achieved_rate: (t.received - t.failed) as f64 / elapsed_s.max(1e-9),
        missing: measured - t.recorder.measured,
        histogram: t.recorder.histogram,
        intervals: t.recorder.intervals,
        backpressure: 0,
        writer: writer(durability),
        // openraft publishes no counters of its own.
        spent: Default::default(),
    })
}

/// Replies counted and recorded as they arrive.
struct Tally {
    recorder: Recorder,
    received: u64,
    failed: u64,
}

impl Tally {
    fn record(&mut self, index: u64, intended: u64, done: u64, ok: bool) {
        self.received += 1;
        if ok {
            self.recorder.record(index, intended, done);
        } else {
            self.failed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_write_is_echoed_by_a_three_node_cluster_with_a_durable_log() {
        let dir = tempfile::tempdir().unwrap();
        let r = measure(&PeerRun {
            durability: Durability::Fdatasync,
            dir: dir.path(),
            rate: 500,
            size: 32,
            warmup_s: 0.2,
            seconds: 0.6,
        })
        .unwrap();
        assert_eq!(r.missing, 0);
        assert_eq!(r.histogram.len(), 300);
        assert!(!dir.path().exists(), "the run removes its files");
    }
}
