//! The whole-cluster simulator: one seeded, single-threaded loop driving N [`Node`]s over
//! simulated disks and a simulated network, with clients, faults, and checkers for every
//! invariant in the design.
//!
//! Per seed it draws its fault rates (swarm testing): message loss (up to 30 %),
//! duplication, delay (and so reordering), symmetric and asymmetric partitions, crashes and
//! restarts of a minority (losing unsynced writes and tearing blocks), and clock steps. A
//! safety phase runs with faults; then a liveness phase heals everything and must commit and
//! acknowledge every client message within a bounded number of steps.
//!
//! Checkers: election safety, leader append-only, log matching, leader completeness, state
//! machine safety (log hash and service digest agree at equal applied positions), durability
//! (a restarted node still has everything it reported durable), client exactly-once (every
//! acknowledged message applied once on every replica, nothing applied twice).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use super::disk::{SimDisk, SimDiskConfig};
use super::hostile::{Hostile, Target};
use super::net::SimEndpoint;
use crate::codec::{FrameType, Frames};
#[cfg(any(test, feature = "sim"))]
use crate::consensus::BrokenRule;
use crate::consensus::{ConsensusConfig, MemberId, Role};
use crate::io::Disk;
use crate::log::{Durability, LogConfig};
use crate::node::{Node, NodeConfig, OfferError};
use crate::rng::Rng;
use crate::service::{fnv1a, Applier, Context, Egress, Service, FNV_OFFSET};

const MS: u64 = 1_000_000;
/// A UDP payload that fits an Ethernet frame.
const SMALL_DATAGRAM: usize = 1472;

/// The test service: records every applied client message and folds it into a digest.
#[derive(Debug)]
pub struct RecordingService {
    digest: u64,
    /// (session, sequence) of every message applied, in order.
    pub applied: Vec<(u64, u64)>,
    pub timers: u64,
    /// Correlation ids of the timers fired, in order.
    pub fired_timers: Vec<u64>,
    last_timestamp_ns: u64,
    /// The first time the log's timestamps went back: (before, after).
    pub time_went_back: Option<(u64, u64)>,
}

impl Default for RecordingService {
    fn default() -> Self {
        Self {
            digest: FNV_OFFSET,
            applied: Vec::new(),
            timers: 0,
            fired_timers: Vec::new(),
            last_timestamp_ns: 0,
            time_went_back: None,
        }
    }
}

impl RecordingService {
    fn observe_time(&mut self, ctx: &Context) {
        if ctx.timestamp_ns < self.last_timestamp_ns && self.time_went_back.is_none() {
            self.time_went_back = Some((self.last_timestamp_ns, ctx.timestamp_ns));
        }
        self.last_timestamp_ns = self.last_timestamp_ns.max(ctx.timestamp_ns);
    }
}

impl Service for RecordingService {
    fn on_session_open(&mut self, ctx: &mut Context, session_id: u64) {
        self.observe_time(ctx);
        self.digest = fnv1a(fnv1a(self.digest, b"open"), &session_id.to_le_bytes());
        self.digest = fnv1a(self.digest, &ctx.timestamp_ns.to_le_bytes());
    }

    fn on_message(&mut self, ctx: &mut Context, session_id: u64, payload: &[u8]) {
        self.observe_time(ctx);
        self.digest = fnv1a(fnv1a(self.digest, &session_id.to_le_bytes()), payload);
        self.digest = fnv1a(self.digest, &ctx.timestamp_ns.to_le_bytes());
        let sequence = payload
            .get(..8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
        self.applied.push((session_id, sequence));
        // Every fifth message schedules a timer 30 ms of leader time later: timers are
        // scheduled by the service and fired through the log, once, on every replica.
        if sequence % 5 == 0 {
            ctx.schedule_timer(
                session_id * 1_000_000 + sequence,
                ctx.timestamp_ns + 30 * MS,
            );
        }
    }

    fn on_timer(&mut self, ctx: &mut Context, correlation_id: u64) {
        self.observe_time(ctx);
        self.timers += 1;
        self.fired_timers.push(correlation_id);
        self.digest = fnv1a(fnv1a(self.digest, b"timer"), &correlation_id.to_le_bytes());
        self.digest = fnv1a(self.digest, &ctx.timestamp_ns.to_le_bytes());
    }

    fn digest(&self) -> u64 {
        self.digest
    }

    /// Everything, the history included (the exactly-once checks read it).
    fn on_take_snapshot(&mut self, _position: u64, out: &mut Vec<u8>) -> bool {
        let mut w = crate::service::snapshot::Writer { out };
        w.u64(self.digest);
        w.u64(self.timers);
        w.u64(self.last_timestamp_ns);
        w.u64(self.applied.len() as u64);
        for &(session, sequence) in &self.applied {
            w.u64(session);
            w.u64(sequence);
        }
        w.u64(self.fired_timers.len() as u64);
        for &id in &self.fired_timers {
            w.u64(id);
        }
        true
    }

    fn on_start(&mut self, snapshot: Option<&[u8]>) -> Result<(), String> {
        let Some(bytes) = snapshot else {
            return Ok(());
        };
        let mut r = crate::service::snapshot::Reader::new(bytes);
        let mut read = || r.u64().map_err(|e| e.to_string());
        let digest = read()?;
        let timers = read()?;
        let last_timestamp_ns = read()?;
        let mut applied = Vec::new();
        for _ in 0..read()? {
            applied.push((read()?, read()?));
        }
        let mut fired_timers = Vec::new();
        for _ in 0..read()? {
            fired_timers.push(read()?);
        }
        *self = Self {
            digest,
            applied,
            timers,
            fired_timers,
            last_timestamp_ns,
            time_went_back: None,
        };
        Ok(())
    }
}

/// The newest snapshot on a member's disk that passes its checks.
fn latest_snapshot(disk: &mut SimDisk) -> Option<(u64, Vec<u8>)> {
    let mut found: Vec<u64> = disk
        .list()
        .ok()?
        .iter()
        .filter_map(|n| crate::service::snapshot::parse_file_name(n))
        .collect();
    found.sort_unstable_by(|a, b| b.cmp(a));
    found.into_iter().find_map(|position| {
        let bytes = disk
            .read_file(&crate::service::snapshot::file_name(position))
            .ok()??;
        let ok = crate::service::snapshot::decode(&bytes).is_ok_and(|v| v.position == position);
        ok.then_some((position, bytes))
    })
}

type SimNode = Node<SimDisk, SimEndpoint, Applier<RecordingService>>;
/// A log's frames by end position: (frame term, chained hash of the log up to the end).
type FramesByEnd = HashMap<u64, (u64, u64)>;

/// Settings of one simulation run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    /// 0 draws 3 or 5 from the seed.
    pub members: u32,
    pub clients: u32,
    pub messages_per_client: u64,
    pub safety_steps: u64,
    pub liveness_steps_max: u64,
    pub trace: bool,
    pub broken_rule: Option<BrokenRule>,
    /// Overrides for a focused test: every client message this long (0: as the seed says),
    /// this largest datagram (0: as the seed says), segments (and write rounds) this large
    /// (0: 64 KiB), and these fault rates instead of the seed's.
    pub message_bytes: usize,
    pub max_datagram: usize,
    pub segment_bytes: u64,
    pub faults: Option<Faults>,
}

impl SimConfig {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            members: 0,
            clients: 3,
            messages_per_client: 60,
            safety_steps: 3_000,
            liveness_steps_max: 30_000,
            trace: false,
            broken_rule: None,
            message_bytes: 0,
            max_datagram: 0,
            segment_bytes: 0,
            faults: None,
        }
    }
}

/// Fault rates drawn from the seed.
#[derive(Clone, Debug)]
pub struct Faults {
    pub loss: f64,
    pub duplication: f64,
    pub delay_max_ms: u64,
    pub crash_per_step: f64,
    pub partition_per_step: f64,
    pub clock_step_per_step: f64,
    /// A planned leadership transfer (to a random other member) asked of the leader.
    pub transfer_per_step: f64,
}

impl Faults {
    fn draw(rng: &mut Rng) -> Self {
        Self {
            loss: rng.below(31) as f64 / 100.0,
            duplication: rng.below(11) as f64 / 100.0,
            delay_max_ms: rng.range(1, 20),
            crash_per_step: [0.0, 1.0 / 3000.0, 1.0 / 1000.0, 1.0 / 300.0][rng.below(4) as usize],
            partition_per_step: [0.0, 1.0 / 2000.0, 1.0 / 500.0][rng.below(3) as usize],
            clock_step_per_step: [0.0, 1.0 / 2000.0][rng.below(2) as usize],
            transfer_per_step: [0.0, 1.0 / 1500.0, 1.0 / 400.0][rng.below(3) as usize],
        }
    }
}

/// What a run found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimOutcome {
    pub seed: u64,
    pub members: u32,
    pub steps: u64,
    pub acknowledged: u64,
    pub committed_position: u64,
    pub leaders_elected: u64,
    pub crashes: u64,
    /// Timer events applied (fired by whoever led, stamped with its time).
    pub timers_applied: u64,
    /// Forged or replayed datagrams injected (the hostile fault), and the messages the
    /// members refused as impossible.
    pub hostile_injected: u64,
    pub messages_refused: u64,
    /// Bits flipped in stopped members' segments (the storage fault).
    pub corruptions: u64,
    /// The run ended with the cluster waiting, as designed, on a damaged member's promise
    /// that no other member's log can keep (liveness then needs an operator).
    pub waits_on_promise: bool,
    /// A digest of the whole run, compared between two runs of one seed.
    pub run_digest: u64,
}

/// An invariant broken, with the seed that reproduces it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("seed {seed}: {invariant} violated at step {step}: {detail}")]
pub struct Violation {
    pub seed: u64,
    pub step: u64,
    pub invariant: &'static str,
    pub detail: String,
}

#[derive(Debug)]
enum ClientRequest {
    Open { session: u64 },
    Message { session: u64, sequence: u64 },
}

#[derive(Debug)]
enum ClientResponse {
    Redirect { leader: Option<MemberId> },
    Egress(Egress),
}

#[derive(Debug)]
struct Client {
    session: u64,
    target: MemberId,
    opened: bool,
    last_open_ns: Option<u64>,
    /// A redirect arrived since the target last changed: keep the target it named.
    redirected: bool,
    /// Last time the client heard a useful answer (an ack, an open).
    last_progress_ns: u64,
    last_new_ns: u64,
    next_sequence: u64,
    /// Sent, not yet acknowledged: sequence → last sent at.
    unacked: BTreeMap<u64, u64>,
    acked: BTreeSet<u64>,
}

struct Member {
    node: Option<SimNode>,
    disk: Option<SimDisk>,
    restart_at_ns: u64,
    clock_offset_ns: i64,
    /// What the node may have reported durable before it crashed.
    durable_before_crash: u64,
    /// Below this, its log can tell corruption from a torn tail after that crash.
    vouched_before_crash: u64,
    /// Its vote record was lost: the next start recovers it (`--recover-vote`).
    lost_vote: bool,
    /// A slot of its vote record was damaged: the next start must not pass over it.
    vote_slot_damaged: bool,
    /// Its log's (start, vouched position) when it crashed.
    log_at_crash: (u64, u64),
    last_state: (Role, u64),
    /// The newest snapshot written to its disk (the node retires its log behind it).
    snapshot_durable: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// (log start, snapshots installed, snapshots taken, truncations), for the trace.
    last_log_view: (u64, u64, u64, u64),
}

enum Event {
    Datagram {
        from: MemberId,
        to: MemberId,
        bytes: Vec<u8>,
    },
    Request {
        to: MemberId,
        client: usize,
        request: ClientRequest,
    },
    Response {
        client: usize,
        response: ClientResponse,
    },
}

/// The simulated cluster. See the module docs.
pub struct Cluster {
    config: SimConfig,
    rng: Rng,
    faults: Faults,
    members: Vec<Member>,
    clients: Vec<Client>,
    now_ns: u64,
    step: u64,
    events: BinaryHeap<Reverse<(u64, u64)>>,
    event_data: HashMap<u64, Event>,
    event_seq: u64,
    /// Directed links that are cut: (from, to).
    cut: BTreeSet<(MemberId, MemberId)>,
    heal_at_ns: u64,
    // checker state
    leaders: BTreeMap<u64, MemberId>,
    leader_appended: BTreeMap<(MemberId, u64), u64>,
    applied_hash: BTreeMap<u64, u64>,
    applied_digest: BTreeMap<u64, u64>,
    /// The chained log hash at segment boundaries, as logs passed them.
    boundary_hash: BTreeMap<u64, u64>,
    crashes: u64,
    run_digest: u64,
    egress: Vec<Egress>,
    hostile: Hostile,
    /// Storage corruption of stopped members: its own PRNG and rate (half the seeds).
    storage_rng: Rng,
    corrupt_per_step: f64,
    /// Members whose disk was corrupted and whose log has not been repaired yet; at most one.
    damaged: Vec<bool>,
    corruptions: u64,
    /// The highest durable position each member ever reported (a leader's commit position
    /// may never exceed the quorum-th highest of these).
    durable_ever: Vec<u64>,
}

fn node_config(
    members: u32,
    id: MemberId,
    seed: u64,
    broken: Option<BrokenRule>,
    segment_bytes: u64,
) -> NodeConfig {
    let segment_bytes = if segment_bytes == 0 {
        64 << 10
    } else {
        segment_bytes
    };
    let mut consensus = ConsensusConfig::new(id, members);
    consensus.leader_heartbeat_interval_ns = 10 * MS;
    consensus.leader_heartbeat_timeout_ns = 100 * MS;
    consensus.election_timeout_ns = 50 * MS;
    consensus.startup_canvass_timeout_ns = 150 * MS;
    consensus.replication_window_bytes = 64 * 1024;
    consensus.seed = seed.wrapping_mul(31).wrapping_add(id as u64);
    consensus.broken_rule = broken;
    let log = LogConfig {
        segment_bytes,
        write_bytes_max: segment_bytes as usize,
        durability: Durability::Fdatasync,
    };
    NodeConfig {
        consensus,
        log,
        session_timeout_ns: 0,
        sessions: Default::default(),
        max_install_bytes: u64::MAX,
        recover_vote: false,
        // Snapshot actions and digest checks every half segment: the simulated services keep
        // no snapshots, but every replica records and compares its digest at each one.
        snapshot_interval_bytes: 32 << 10,
    }
}

impl Cluster {
    pub fn new(config: SimConfig) -> Self {
        let mut rng = Rng::new(config.seed);
        let members = if config.members == 0 {
            [3, 5][rng.below(2) as usize]
        } else {
            config.members
        };
        let config = SimConfig { members, ..config };
        let drawn = Faults::draw(&mut rng);
        let faults = config.faults.clone().unwrap_or(drawn);
        let mut cluster = Self {
            members: Vec::new(),
            clients: (0..config.clients)
                .map(|c| Client {
                    session: 100 + c as u64,
                    target: 0,
                    opened: false,
                    last_open_ns: None,
                    redirected: false,
                    last_progress_ns: 0,
                    last_new_ns: 0,
                    next_sequence: 1,
                    unacked: BTreeMap::new(),
                    acked: BTreeSet::new(),
                })
                .collect(),
            rng,
            faults,
            now_ns: 0,
            step: 0,
            events: BinaryHeap::new(),
            event_data: HashMap::new(),
            event_seq: 0,
            cut: BTreeSet::new(),
            heal_at_ns: 0,
            leaders: BTreeMap::new(),
            leader_appended: BTreeMap::new(),
            applied_hash: BTreeMap::new(),
            applied_digest: BTreeMap::new(),
            boundary_hash: BTreeMap::new(),
            crashes: 0,
            run_digest: FNV_OFFSET,
            egress: Vec::new(),
            hostile: Hostile::new(config.seed),
            storage_rng: Rng::new(config.seed ^ 0x7374_6f72_6167_6521),
            corrupt_per_step: 0.0,
            damaged: vec![false; members as usize],
            corruptions: 0,
            durable_ever: vec![0; members as usize],
            config,
        };
        cluster.corrupt_per_step =
            [0.0, 0.0, 1.0 / 200.0, 1.0 / 50.0][cluster.storage_rng.below(4) as usize];
        for id in 0..members {
            let disk = SimDisk::new(
                cluster.config.seed ^ (id as u64 + 1) << 32,
                SimDiskConfig {
                    pass_over_damaged_slots: cluster.config.broken_rule
                        == Some(BrokenRule::PassOverDamagedSlot),
                    ..SimDiskConfig::default()
                },
            );
            cluster.members.push(Member {
                node: None,
                disk: Some(disk),
                restart_at_ns: 0,
                clock_offset_ns: 0,
                durable_before_crash: 0,
                vouched_before_crash: 0,
                lost_vote: false,
                vote_slot_damaged: false,
                log_at_crash: (0, 0),
                last_state: (Role::Follower, 0),
                snapshot_durable: Default::default(),
                last_log_view: (0, 0, 0, 0),
            });
        }
        cluster
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    fn trace(&self, what: impl FnOnce() -> String) {
        if self.config.trace {
            eprintln!("[{:>8.3} ms] {}", self.now_ns as f64 / MS as f64, what());
        }
    }

    fn violation(&self, invariant: &'static str, detail: String) -> Violation {
        Violation {
            seed: self.config.seed,
            step: self.step,
            invariant,
            detail,
        }
    }

    fn local_now(&self, id: usize) -> u64 {
        (self.now_ns as i64 + self.members[id].clock_offset_ns).max(0) as u64
    }

    fn schedule(&mut self, at_ns: u64, event: Event) {
        self.event_seq += 1;
        self.events.push(Reverse((at_ns, self.event_seq)));
        self.event_data.insert(self.event_seq, event);
    }

    fn delay(&mut self) -> u64 {
        self.rng.range(100_000, self.faults.delay_max_ms * MS)
    }

    /// Runs the safety phase and then the liveness phase; returns what happened, or the first
    /// invariant broken.
    pub fn run(mut self) -> Result<SimOutcome, Violation> {
        self.trace(|| {
            format!(
                "seed {} members {} faults {:?}",
                self.config.seed, self.config.members, self.faults
            )
        });
        for id in 0..self.members.len() {
            self.start_member(id)?;
        }
        while self.step < self.config.safety_steps {
            self.inject_faults()?;
            self.step_once(true)?;
        }
        self.heal_all()?;
        let deadline = self.step + self.config.liveness_steps_max;
        let mut waits_on_promise = false;
        while !self.converged() {
            if self.step >= deadline {
                if self.promise_no_one_can_keep() {
                    // As designed: a damaged member vouched for bytes no other member holds
                    // (so they may be committed), and the cluster waits for an operator
                    // rather than elect a log without them.
                    waits_on_promise = true;
                    break;
                }
                let status = self.status();
                return Err(self.violation(
                    "liveness",
                    format!("no convergence after healing: {status}"),
                ));
            }
            self.step_once(false)?;
        }
        self.check_logs_match()?;
        if !waits_on_promise {
            self.check_exactly_once()?;
            // Every member holds the committed log again: none may still owe a position its
            // log already holds (it would never lead or vote again, and one more member down
            // would stop elections). A promise beyond the cluster's log (a lost segment is
            // owed to its end, since how much of it was durable went with it) waits for the
            // log to grow or the term to change.
            for (id, m) in self.members.iter().enumerate() {
                let n = m.node.as_ref().expect("all members are up after healing");
                let c = n.consensus();
                if c.owes_log() && n.log().appended_position() >= c.promised().1 {
                    let promised = c.promised();
                    return Err(self.violation(
                        "repair",
                        format!("member {id} still owes {promised:?} after the cluster converged"),
                    ));
                }
            }
        }
        let committed = self
            .members
            .iter()
            .filter_map(|m| m.node.as_ref())
            .map(|n| n.commit_position())
            .max()
            .unwrap_or(0);
        let acknowledged = self.clients.iter().map(|c| c.acked.len() as u64).sum();
        let mut digest = self.run_digest;
        for m in &self.members {
            let n = m.node.as_ref().expect("all members are up after healing");
            digest = fnv1a(digest, &n.applier().log_hash().to_le_bytes());
            digest = fnv1a(digest, &n.applier().service().digest().to_le_bytes());
        }
        Ok(SimOutcome {
            seed: self.config.seed,
            members: self.config.members,
            steps: self.step,
            acknowledged,
            committed_position: committed,
            leaders_elected: self.leaders.len() as u64,
            crashes: self.crashes,
            timers_applied: self.members[0]
                .node
                .as_ref()
                .map_or(0, |n| n.applier().service().timers),
            hostile_injected: self.hostile.injected,
            corruptions: self.corruptions,
            waits_on_promise,
            messages_refused: self
                .members
                .iter()
                .filter_map(|m| m.node.as_ref())
                .map(|n| n.consensus().counters().messages_invalid + n.stats().peer_reports_refused)
                .sum(),
            run_digest: digest,
        })
    }

    fn status(&self) -> String {
        let nodes: Vec<String> = self
            .members
            .iter()
            .map(|m| match &m.node {
                None => "down".into(),
                Some(n) => format!(
                    "{:?} t{} app{} dur{} com{} appl{}",
                    n.consensus().state(),
                    n.consensus().term(),
                    n.log().appended_position(),
                    n.log().durable_position(),
                    n.commit_position(),
                    n.applier().applied_position()
                ),
            })
            .collect();
        let clients: Vec<String> = self
            .clients
            .iter()
            .map(|c| {
                let last: Vec<Option<u64>> = self
                    .members
                    .iter()
                    .map(|m| {
                        m.node
                            .as_ref()
                            .and_then(|n| n.applier().last_sequence(c.session))
                    })
                    .collect();
                format!(
                    "s{} open={} acked {} unacked {:?} next {} applied {last:?}",
                    c.session,
                    c.opened,
                    c.acked.len(),
                    c.unacked.keys().collect::<Vec<_>>(),
                    c.next_sequence
                )
            })
            .collect();
        format!(
            "nodes [{}] clients [{}]",
            nodes.join("; "),
            clients.join("; ")
        )
    }

    fn start_member(&mut self, id: usize) -> Result<(), Violation> {
        let disk = self.members[id]
            .disk
            .take()
            .expect("a down member has its disk");
        let config = node_config(
            self.config.members,
            id as MemberId,
            self.config.seed,
            self.config.broken_rule,
            self.config.segment_bytes,
        );
        let mut config = config;
        config.recover_vote = std::mem::take(&mut self.members[id].lost_vote);
        let now = self.local_now(id);
        let mut disk = disk;
        let latest = latest_snapshot(&mut disk);
        let mut applier = Applier::new(RecordingService::default());
        if let Err(e) = applier.start(latest.as_ref().map(|(_, b)| b.as_slice())) {
            return Err(self.violation("snapshot", format!("member {id}: {e}")));
        }
        let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(
            latest.as_ref().map_or(0, |l| l.0),
        ));
        self.members[id].snapshot_durable = progress.clone();
        let endpoint = if self.config.max_datagram > 0 {
            SimEndpoint::with_max_datagram(self.config.max_datagram)
        } else if self.small_datagrams() {
            SimEndpoint::with_max_datagram(SMALL_DATAGRAM)
        } else {
            SimEndpoint::default()
        };
        let node = Node::open(config, disk, endpoint, applier, now)
            .map_err(|e| self.violation("node start", e.to_string()))?;
        if std::mem::take(&mut self.members[id].vote_slot_damaged)
            && !node.consensus().recovering_vote()
        {
            // The damaged slot may have held the newest vote: taking the other slot's older
            // vote could let this member vote twice in one term.
            return Err(self.violation(
                "vote record",
                format!("member {id} passed over a damaged vote slot and took the other's vote"),
            ));
        }
        let recovered = node.log().appended_position();
        let promised = node.log().promise().map_or(0, |p| p.position);
        if recovered.max(promised) < self.members[id].durable_before_crash {
            return Err(self.violation(
                "durability",
                format!(
                    "member {id} recovered its log to {recovered} but had reported {} durable",
                    self.members[id].durable_before_crash
                ),
            ));
        }
        self.trace(|| format!("member {id} started, log recovered to {recovered}"));
        let mut node = node;
        node.set_collect_egress(true);
        node.set_snapshot_progress(progress);
        self.members[id].node = Some(node);
        Ok(())
    }

    fn crash_member(&mut self, id: usize) {
        let Some(node) = self.members[id].node.take() else {
            return;
        };
        self.members[id].durable_before_crash = node.consensus().durable_position();
        self.members[id].vouched_before_crash = node.log().vouched_position();
        self.members[id].log_at_crash =
            (node.log().start_position(), node.log().vouched_position());
        let mut disk = node.into_disk();
        disk.crash();
        self.members[id].disk = Some(disk);
        self.members[id].restart_at_ns = self.now_ns + self.rng.range(10, 500) * MS;
        self.crashes += 1;
        self.trace(|| format!("member {id} CRASHED"));
    }

    fn inject_faults(&mut self) -> Result<(), Violation> {
        let n = self.members.len();
        let down = self.members.iter().filter(|m| m.node.is_none()).count();
        let minority = (n - 1) / 2;
        if down < minority && self.rng.chance(self.faults.crash_per_step) {
            let id = self.rng.below(n as u64) as usize;
            self.crash_member(id);
        }
        for id in 0..n {
            if self.members[id].node.is_none() && self.now_ns >= self.members[id].restart_at_ns {
                self.start_member(id)?;
                let damaged = self.members[id]
                    .node
                    .as_ref()
                    .is_some_and(|node| node.stats().log_damage_found > 0);
                if damaged && self.storage_rng.chance(0.5) {
                    // The worst moment: the member that holds the most of what the damaged
                    // one lost goes down too, so the cluster must not elect from the rest.
                    let down = self.members.iter().filter(|m| m.node.is_none()).count();
                    let longest = (0..n)
                        .filter(|&j| j != id)
                        .filter_map(|j| {
                            let node = self.members[j].node.as_ref()?;
                            Some((node.log().appended_position(), j))
                        })
                        .max();
                    if let (true, Some((_, j))) = (down < minority, longest) {
                        self.crash_member(j);
                    }
                }
            }
        }
        if !self.cut.is_empty() && self.now_ns >= self.heal_at_ns {
            self.cut.clear();
            self.trace(|| "partition healed".into());
        }
        if self.rng.chance(self.faults.transfer_per_step) {
            let to = self.rng.below(n as u64) as MemberId;
            let now = self.now_ns;
            let leader = self.members.iter().position(|m| {
                m.node
                    .as_ref()
                    .is_some_and(|node| node.consensus().role() == Role::Leader)
            });
            if let Some(id) = leader {
                let local = self.local_now(id);
                let node = self.members[id].node.as_mut().expect("running");
                if node.transfer_leadership(local, to).is_ok() {
                    self.trace(|| format!("at {now}: leader {id} hands over to {to}"));
                }
            }
        }
        if self.cut.is_empty() && self.rng.chance(self.faults.partition_per_step) {
            let victim = self.rng.below(n as u64) as MemberId;
            let kind = self.rng.below(3);
            for other in 0..n as MemberId {
                if other == victim {
                    continue;
                }
                match kind {
                    0 => {
                        self.cut.insert((victim, other));
                        self.cut.insert((other, victim));
                    }
                    1 => {
                        self.cut.insert((victim, other));
                    }
                    _ => {
                        self.cut.insert((other, victim));
                    }
                }
            }
            if self.rng.chance(0.3) {
                // Split into halves instead: the victim's side is everyone below it.
                self.cut.clear();
                for a in 0..n as MemberId {
                    for b in 0..n as MemberId {
                        if (a < victim) != (b < victim) {
                            self.cut.insert((a, b));
                        }
                    }
                }
            }
            self.heal_at_ns = self.now_ns + self.rng.range(50, 1000) * MS;
            let cut = self.cut.clone();
            self.trace(|| format!("partition {cut:?}"));
        }
        if self.hostile.fire() {
            self.inject_hostile();
        }
        if self.corrupt_per_step > 0.0 && self.storage_rng.chance(self.corrupt_per_step) {
            self.corrupt_stopped_member();
        }
        if self.rng.chance(self.faults.clock_step_per_step) {
            let id = self.rng.below(n as u64) as usize;
            let step = self.rng.range(1, 500) as i64
                * MS as i64
                * if self.rng.chance(0.5) { 1 } else { -1 };
            self.members[id].clock_offset_ns += step;
            self.trace(|| format!("member {id} clock stepped by {} ms", step / MS as i64));
        }
        Ok(())
    }

    /// A damaged member owes a log that no other member holds: no leader can be elected
    /// without losing what it may have acknowledged.
    fn promise_no_one_can_keep(&self) -> bool {
        // (member, its log, whether it owes, what it promised)
        type Owed = (usize, (u64, u64), bool, (u64, u64));
        let logs: Vec<Owed> = (0..self.members.len())
            .filter_map(|i| {
                let c = self.members[i].node.as_ref()?.consensus();
                Some((
                    i,
                    (c.last_log_term(), c.appended_position()),
                    c.owes_log(),
                    c.promised(),
                ))
            })
            .collect();
        logs.iter().any(|&(i, _, owes, promised)| {
            owes && logs.iter().all(|&(j, log, _, _)| j == i || log < promised)
        })
    }

    /// Seeds (one in eight) whose network carries only Ethernet-sized datagrams while clients
    /// send 6 KB messages: every frame is replicated in pieces.
    fn small_datagrams(&self) -> bool {
        self.config.seed % 8 == 6
    }

    /// One forged or replayed datagram to a random running member (see `sim::hostile`).
    fn inject_hostile(&mut self) {
        let up: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].node.is_some())
            .collect();
        if up.is_empty() {
            return;
        }
        let id = up[self.rng.below(up.len() as u64) as usize];
        let node = self.members[id].node.as_ref().expect("running");
        let c = node.consensus();
        let target = Target {
            id: id as MemberId,
            members: self.config.members,
            term: c.term(),
            role: c.role(),
            leader: c.leader(),
            appended: c.appended_position(),
            commit: c.commit_position(),
        };
        let (from, bytes) = self.hostile.forge(target);
        self.trace(|| {
            let what = crate::codec::decode(&bytes)
                .ok()
                .and_then(|d| match d {
                    crate::codec::Decoded::Frame(f, _) => crate::codec::Message::decode(&f)
                        .ok()
                        .map(|m| format!("{m:?}")),
                    _ => None,
                })
                .unwrap_or_default();
            let what: String = what.chars().take(200).collect();
            format!("hostile datagram to member {id} \"from\" {from}: {what}")
        });
        let node = self.members[id].node.as_mut().expect("running");
        node.net_mut().deliver(from, bytes);
    }

    /// Flips a bit in a segment of a stopped member, below what its log can vouch for after
    /// the crash (the durable end before its last write round: above it, damage looks like a
    /// torn tail and is one the member never promised). Only while no other member is damaged: the fault model's
    /// minority.
    fn corrupt_stopped_member(&mut self) {
        let down: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].node.is_none() && !self.damaged[i])
            .collect();
        if down.is_empty() || self.damaged.iter().any(|&d| d) {
            return;
        }
        let id = down[self.storage_rng.below(down.len() as u64) as usize];
        let seg = node_config(self.config.members, 0, 0, None, self.config.segment_bytes)
            .log
            .segment_bytes;
        let limit = self.members[id].vouched_before_crash;
        let (start, vouched) = self.members[id].log_at_crash;
        let disk = self.members[id]
            .disk
            .as_mut()
            .expect("a down member has its disk");
        let segments: Vec<(u64, String)> = disk
            .file_names()
            .into_iter()
            .filter_map(|n| Some((n.strip_suffix(".seg")?.parse::<u64>().ok()?, n)))
            .filter(|&(base, _)| base < limit)
            .collect();
        if segments.is_empty() {
            return;
        }
        if vouched > start && self.storage_rng.chance(0.15) {
            // The term index is lost: the log rebuilds it from its frames (a log with none,
            // just after a snapshot install, refuses to start: not injected).
            disk.remove_record(crate::log::TERM_INDEX_FILE);
            self.damaged[id] = true;
            self.corruptions += 1;
            self.trace(|| format!("member {id}: LOST its term index"));
            return;
        }
        if self.storage_rng.chance(0.25) {
            // The vote record is lost: the operator restarts the member with --recover-vote.
            disk.remove_record(crate::node::VOTE_FILE);
            self.members[id].lost_vote = true;
            self.damaged[id] = true;
            self.corruptions += 1;
            self.trace(|| format!("member {id}: LOST its vote record"));
            return;
        }
        if self.storage_rng.chance(0.1) {
            // The newest snapshot reads back wrong: the member starts from the one before
            // (segments are kept behind the second-newest) and replays the log after it.
            let mut snapshots: Vec<u64> = disk
                .file_names()
                .into_iter()
                .filter_map(|n| crate::service::snapshot::parse_file_name(&n))
                .collect();
            snapshots.sort_unstable();
            // Only where one before it still covers the log's start: a member whose sole such
            // snapshot is damaged (just after an install) cannot rebuild its state from its own
            // disk and refuses to start, for an operator (not injected: see README).
            let fallback = snapshots.len() >= 2 && snapshots[snapshots.len() - 2] >= start;
            if let Some(&position) = snapshots.last().filter(|_| fallback) {
                let name = crate::service::snapshot::file_name(position);
                let len = disk.durable_image(&name).map_or(0, |b| b.len() as u64);
                if len > 0 {
                    let offset = self.storage_rng.below(len);
                    let bit = self.storage_rng.below(8) as u8;
                    disk.corrupt(&name, offset, bit);
                    self.damaged[id] = true;
                    self.corruptions += 1;
                    self.trace(|| format!("member {id}: CORRUPTED {name} at byte {offset}"));
                    return;
                }
            }
        }
        if self.storage_rng.chance(0.1) {
            // The newest segment the member wrote into is lost as a file (and the prepared
            // ones after it, which would otherwise leave a gap the log refuses to open).
            let newest = limit.saturating_sub(1) - limit.saturating_sub(1) % seg;
            let lowest = segments.iter().map(|&(b, _)| b).min().unwrap_or(0);
            if newest > lowest && newest >= start {
                let lost: Vec<String> = disk
                    .file_names()
                    .into_iter()
                    .filter(|n| {
                        n.strip_suffix(".seg")
                            .and_then(|b| b.parse::<u64>().ok())
                            .is_some_and(|b| b >= newest)
                    })
                    .collect();
                for name in &lost {
                    disk.remove(name);
                }
                self.damaged[id] = true;
                self.corruptions += 1;
                self.trace(|| format!("member {id}: LOST segment files {lost:?}"));
                return;
            }
        }
        if self.storage_rng.chance(0.2) {
            // One slot of the vote record or of the term index reads back wrong.
            let vote = self.storage_rng.chance(0.5);
            if vote || vouched > start {
                let name = if vote {
                    crate::node::VOTE_FILE
                } else {
                    crate::log::TERM_INDEX_FILE
                };
                let slot = crate::io::record::slot_name(name, self.storage_rng.below(2));
                let len = disk.durable_image(&slot).map_or(0, |b| b.len() as u64);
                if len > 0 {
                    let offset = self.storage_rng.below(len);
                    let bit = self.storage_rng.below(8) as u8;
                    disk.corrupt(&slot, offset, bit);
                    if vote {
                        // The node refuses to start; the operator restarts it with
                        // --recover-vote.
                        self.members[id].lost_vote = true;
                        self.members[id].vote_slot_damaged = true;
                    }
                    self.damaged[id] = true;
                    self.corruptions += 1;
                    self.trace(|| format!("member {id}: CORRUPTED {slot} at byte {offset}"));
                    return;
                }
            }
        }
        let (base, name) = &segments[self.storage_rng.below(segments.len() as u64) as usize];
        let offset = self.storage_rng.below((limit - base).min(seg));
        let bit = self.storage_rng.below(8) as u8;
        if disk.corrupt(name, offset, bit) {
            self.damaged[id] = true;
            self.corruptions += 1;
            let position = base + offset;
            self.trace(|| format!("member {id}: CORRUPTED log byte at {position} ({name})"));
        }
    }

    fn heal_all(&mut self) -> Result<(), Violation> {
        self.cut.clear();
        for id in 0..self.members.len() {
            if self.members[id].node.is_none() {
                self.start_member(id)?;
            }
        }
        self.trace(|| "HEALED: liveness phase".into());
        Ok(())
    }

    fn step_once(&mut self, faulty: bool) -> Result<(), Violation> {
        self.step += 1;
        self.now_ns += MS;
        self.deliver_due(faulty);
        for id in 0..self.members.len() {
            self.tick_member(id, faulty)?;
        }
        self.step_clients();
        self.check_step()?;
        if self.step % 500 == 0 {
            self.check_logs_match()?;
        }
        Ok(())
    }

    fn deliver_due(&mut self, faulty: bool) {
        while let Some(&Reverse((at, seq))) = self.events.peek() {
            if at > self.now_ns {
                break;
            }
            self.events.pop();
            let event = self.event_data.remove(&seq).expect("scheduled event");
            match event {
                Event::Datagram { from, to, bytes } => {
                    if faulty && self.cut.contains(&(from, to)) {
                        continue;
                    }
                    if let Some(node) = self.members[to as usize].node.as_mut() {
                        node.net_mut().deliver(from, bytes);
                    }
                }
                Event::Request {
                    to,
                    client,
                    request,
                } => self.deliver_request(to, client, request),
                Event::Response { client, response } => self.deliver_response(client, response),
            }
        }
    }

    fn deliver_request(&mut self, to: MemberId, client: usize, request: ClientRequest) {
        let now = self.local_now(to as usize);
        let Some(node) = self.members[to as usize].node.as_mut() else {
            return;
        };
        let result = match request {
            ClientRequest::Open { session } => node.open_session(now, session, session),
            ClientRequest::Message { session, sequence } => {
                let mut payload = sequence.to_le_bytes().to_vec();
                payload.extend_from_slice(&session.to_le_bytes());
                // Some seeds send large messages, so the log spans several segments: snapshots,
                // retired segments and snapshot installs for lagging members get exercised.
                let filler = match self.config.seed % 8 {
                    _ if self.config.message_bytes > 0 => self.config.message_bytes - 16,
                    0 | 4 => 2000,
                    6 => 6_000, // small_datagrams()
                    _ => 0,
                };
                payload.resize(payload.len() + filler, (sequence % 251) as u8);
                node.offer(now, session, sequence, &payload)
            }
        };
        if let Err(OfferError::NotLeader { leader }) = result {
            let at = self.now_ns + self.delay();
            self.schedule(
                at,
                Event::Response {
                    client,
                    response: ClientResponse::Redirect { leader },
                },
            );
        }
    }

    fn deliver_response(&mut self, client: usize, response: ClientResponse) {
        let n = self.members.len() as u64;
        let c = &mut self.clients[client];
        match response {
            ClientResponse::Redirect { leader } => {
                c.target = leader.unwrap_or_else(|| ((c.target as u64 + 1) % n) as MemberId);
                c.redirected = true;
            }
            ClientResponse::Egress(Egress::SessionOpened { .. }) => {
                c.opened = true;
                c.last_progress_ns = self.now_ns;
            }
            ClientResponse::Egress(Egress::Applied { sequence, .. }) => {
                c.last_progress_ns = self.now_ns;
                c.unacked.remove(&sequence);
                c.acked.insert(sequence);
            }
            ClientResponse::Egress(Egress::Message { .. })
            | ClientResponse::Egress(Egress::SessionClosed { .. })
            | ClientResponse::Egress(Egress::SnapshotTaken { .. })
            | ClientResponse::Egress(Egress::Shutdown { .. }) => {}
        }
    }

    fn tick_member(&mut self, id: usize, faulty: bool) -> Result<(), Violation> {
        let now = self.local_now(id);
        let global = self.now_ns;
        let Some(node) = self.members[id].node.as_mut() else {
            return Ok(());
        };
        node.log_mut().disk_mut().advance_to(global);
        if let Err(e) = node.tick(now) {
            return Err(self.violation("node error", format!("member {id}: {e}")));
        }
        // Snapshots go to the member's disk (the runtime writes them on a thread of its own),
        // old ones and retired segments are deleted.
        if let Some(snapshot) = node.take_snapshot() {
            use crate::service::snapshot::{file_name, parse_file_name, SNAPSHOTS_KEPT};
            let disk = node.log_mut().disk_mut();
            if disk
                .write_file_atomic(&file_name(snapshot.position), &snapshot.bytes)
                .is_ok()
            {
                let mut kept: Vec<u64> = disk
                    .list()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|n| parse_file_name(n))
                    .collect();
                kept.sort_unstable_by(|a, b| b.cmp(a));
                for old in kept.into_iter().skip(SNAPSHOTS_KEPT) {
                    disk.remove(&file_name(old));
                }
                self.members[id]
                    .snapshot_durable
                    .fetch_max(snapshot.position, std::sync::atomic::Ordering::AcqRel);
            }
        }
        let node = self.members[id].node.as_mut().expect("running");
        for name in node.take_retired() {
            node.log_mut().disk_mut().remove(&name);
        }
        if node.applier().digest_mismatches() > 0 {
            return Err(self.violation(
                "digest mismatch",
                format!("member {id}: its service digest differed from the leader's at a snapshot position"),
            ));
        }
        let outgoing = std::mem::take(&mut node.net_mut().outgoing);
        let mut egress = std::mem::take(&mut self.egress);
        node.take_egress(&mut egress);
        for (to, bytes) in outgoing {
            self.run_digest = fnv1a(self.run_digest, &bytes);
            self.hostile.observe(id as MemberId, &bytes);
            if faulty && self.rng.chance(self.faults.loss) {
                continue;
            }
            let copies = if faulty && self.rng.chance(self.faults.duplication) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let at = global + if faulty { self.delay() } else { 100_000 };
                self.schedule(
                    at,
                    Event::Datagram {
                        from: id as MemberId,
                        to,
                        bytes: bytes.clone(),
                    },
                );
            }
        }
        for e in egress.drain(..) {
            let session =
                match &e {
                    Egress::SessionOpened { session_id, .. }
                    | Egress::Applied { session_id, .. } => *session_id,
                    Egress::Message { session_id, .. }
                    | Egress::SessionClosed { session_id, .. } => *session_id,
                    Egress::SnapshotTaken { .. } | Egress::Shutdown { .. } => continue,
                };
            let Some(client) = self.clients.iter().position(|c| c.session == session) else {
                continue;
            };
            if faulty && self.rng.chance(self.faults.loss) {
                continue;
            }
            let at = global + self.delay();
            self.schedule(
                at,
                Event::Response {
                    client,
                    response: ClientResponse::Egress(e),
                },
            );
        }
        self.egress = egress;
        Ok(())
    }

    fn step_clients(&mut self) {
        const RESEND_NS: u64 = 40 * MS;
        const GIVE_UP_ON_TARGET_NS: u64 = 120 * MS;
        const OUTSTANDING: usize = 3;
        // New messages are paced so the workload spans the faulty phase.
        const PACE_NS: u64 = 40 * MS;
        let n = self.members.len() as u64;
        for i in 0..self.clients.len() {
            let mut requests = Vec::new();
            let c = &mut self.clients[i];
            // No answer from the target for a while and no redirect: try the next member.
            if self.now_ns - c.last_progress_ns >= GIVE_UP_ON_TARGET_NS {
                if !c.redirected {
                    c.target = ((c.target as u64 + 1) % n) as MemberId;
                }
                c.redirected = false;
                c.last_progress_ns = self.now_ns;
            }
            if !c.opened {
                if c.last_open_ns.is_none_or(|t| self.now_ns - t >= RESEND_NS) {
                    c.last_open_ns = Some(self.now_ns);
                    requests.push(ClientRequest::Open { session: c.session });
                }
            } else {
                for (&sequence, sent) in c.unacked.iter_mut() {
                    if self.now_ns - *sent >= RESEND_NS {
                        *sent = self.now_ns;
                        requests.push(ClientRequest::Message {
                            session: c.session,
                            sequence,
                        });
                    }
                }
                if c.unacked.len() < OUTSTANDING
                    && c.next_sequence <= self.config.messages_per_client
                    && self.now_ns - c.last_new_ns >= PACE_NS
                {
                    let sequence = c.next_sequence;
                    c.next_sequence += 1;
                    c.last_new_ns = self.now_ns;
                    c.unacked.insert(sequence, self.now_ns);
                    requests.push(ClientRequest::Message {
                        session: c.session,
                        sequence,
                    });
                }
            }
            let to = self.clients[i].target;
            for request in requests {
                let at = self.now_ns + self.delay();
                self.schedule(
                    at,
                    Event::Request {
                        to,
                        client: i,
                        request,
                    },
                );
            }
        }
    }

    fn converged(&self) -> bool {
        if !self
            .clients
            .iter()
            .all(|c| c.acked.len() as u64 == self.config.messages_per_client)
        {
            return false;
        }
        let nodes: Vec<&SimNode> = self
            .members
            .iter()
            .filter_map(|m| m.node.as_ref())
            .collect();
        if nodes.len() != self.members.len() {
            return false;
        }
        let leader = nodes.iter().find(|n| n.consensus().role() == Role::Leader);
        let Some(leader) = leader else { return false };
        let target = leader.log().appended_position();
        nodes.iter().all(|n| {
            n.applier().applied_position() == target && n.applier().scheduled_timers() == 0
        })
    }

    /// Checks run after every step.
    fn check_step(&mut self) -> Result<(), Violation> {
        for id in 0..self.members.len() {
            let Some(node) = self.members[id].node.as_ref() else {
                continue;
            };
            let c = node.consensus();
            let state = (c.role(), c.term());
            let leader_term = c.leader_term();
            let (durable_now, commit_now) = (c.durable_position(), c.commit_position());
            let invalid = c.counters().messages_invalid
                + node.stats().peer_reports_refused
                + node.stats().commit_inside_frame;
            let owes = c.owes_log() || c.recovering_vote();
            let appended = node.log().appended_position();
            let applier = node.applier();
            let time_went_back = applier.service().time_went_back;
            let (position, hash, digest) = (
                applier.applied_position(),
                applier.log_hash(),
                applier.service().digest(),
            );
            let log_view = (
                node.log().start_position(),
                node.stats().snapshots_installed,
                node.applier().snapshots_taken(),
                c.counters().truncations,
            );
            let (applied, commit) = (applier.applied_position(), node.commit_position());
            if state != self.members[id].last_state {
                self.members[id].last_state = state;
                self.trace(|| format!("member {id} is {:?} in term {}", state.0, state.1));
            }
            if log_view != self.members[id].last_log_view {
                self.members[id].last_log_view = log_view;
                self.trace(|| {
                    format!(
                        "member {id}: log starts at {}, {} snapshots installed, {} taken, {} truncations; appended {appended}, commit {commit}, applied {applied}",
                        log_view.0, log_view.1, log_view.2, log_view.3
                    )
                });
            }
            self.durable_ever[id] = self.durable_ever[id].max(durable_now);
            if self.damaged[id] && !owes {
                self.damaged[id] = false;
            }
            if invalid > 0 && !self.hostile.active() {
                return Err(self.violation(
                    "honest peers believed",
                    format!(
                        "member {id} refused {invalid} messages on an honest network ({:?}, {} false log ends, {} commits inside a frame)",
                        self.members[id].node.as_ref().map(|n| n.consensus().last_refusal()),
                        self.members[id].node.as_ref().map_or(0, |n| n.stats().peer_reports_refused),
                        self.members[id].node.as_ref().map_or(0, |n| n.stats().commit_inside_frame),
                    ),
                ));
            }
            if let Some(term) = leader_term {
                // Commit only with a real quorum: never past the quorum-th highest durable
                // position that members really reported.
                let mut durable = self.durable_ever.clone();
                durable.sort_unstable_by(|a, b| b.cmp(a));
                let quorum = durable[self.config.members as usize / 2];
                if commit_now > quorum {
                    return Err(self.violation(
                        "commit quorum",
                        format!(
                            "leader {id} of term {term} committed {} but only {quorum} is durable on a quorum",
                            commit_now
                        ),
                    ));
                }
                // Election safety: one leader per term.
                match self.leaders.get(&term) {
                    Some(&other) if other != id as MemberId => {
                        return Err(self.violation(
                            "election safety",
                            format!("members {other} and {id} both lead term {term}"),
                        ));
                    }
                    Some(_) => {}
                    None => {
                        self.leaders.insert(term, id as MemberId);
                        self.check_leader_completeness(id)?;
                    }
                }
                // Leader append-only.
                let key = (id as MemberId, term);
                let before = self.leader_appended.insert(key, appended).unwrap_or(0);
                if appended < before {
                    return Err(self.violation(
                        "leader append-only",
                        format!("leader {id} of term {term} went from {before} back to {appended}"),
                    ));
                }
            }
            if let Some((before, after)) = time_went_back {
                return Err(self.violation(
                    "leader time",
                    format!(
                        "member {id} applied a frame stamped {after} after one stamped {before}"
                    ),
                ));
            }
            // State machine safety: equal applied positions, equal log hash and service digest.
            if position > 0 {
                if self.applied_hash.get(&position).is_some_and(|&h| h != hash) {
                    return Err(self.violation(
                        "state machine safety",
                        format!("member {id} applied different frames up to {position}"),
                    ));
                }
                if self
                    .applied_digest
                    .get(&position)
                    .is_some_and(|&d| d != digest)
                {
                    return Err(self.violation(
                        "state machine safety",
                        format!("member {id} service digest differs at {position}"),
                    ));
                }
                self.applied_hash.insert(position, hash);
                self.applied_digest.insert(position, digest);
            }
        }
        Ok(())
    }

    /// Frames of a member's log: (end position, frame term, chained hash up to the end). A log
    /// whose start was retired behind a snapshot chains on from the hash seen at its start
    /// (segment boundaries are recorded as logs pass them); `None` if none was seen.
    fn log_summary(&mut self, id: usize) -> Option<Vec<(u64, u64, u64)>> {
        let node = self.members[id].node.as_mut().expect("member is up");
        let start = node.log().start_position();
        let end = node.log().appended_position();
        let mut hash = if start == 0 {
            FNV_OFFSET
        } else {
            *self.boundary_hash.get(&start)?
        };
        let mut bytes = vec![0u8; (end - start) as usize];
        node.log_mut()
            .read(start, &mut bytes)
            .expect("log is readable");
        let segment = node.log().config().segment_bytes;
        // Only an applied (so committed) prefix is the cluster's: a log that has bytes no
        // leader will keep must not set the hash others chain from.
        let applied = node.applier().applied_position();
        let mut out = Vec::new();
        for (offset, frame) in Frames::new(&bytes).map_while(Result::ok) {
            let len = frame.encoded_len();
            let position = start + offset as u64;
            hash = fnv1a(
                fnv1a(hash, &position.to_le_bytes()),
                &bytes[offset..offset + len],
            );
            let frame_end = position + len as u64;
            if frame_end % segment == 0 && frame_end <= applied {
                self.boundary_hash.entry(frame_end).or_insert(hash);
            }
            if frame.meta.frame_type != FrameType::Padding as u16 {
                out.push((frame_end, frame.meta.term, hash));
            } else {
                out.push((frame_end, u64::MAX, hash));
            }
        }
        Some(out)
    }

    /// Leader completeness: a new leader's log holds everything applied anywhere.
    fn check_leader_completeness(&mut self, id: usize) -> Result<(), Violation> {
        let Some((&position, &hash)) = self.applied_hash.iter().next_back() else {
            return Ok(());
        };
        let Some(summary) = self.log_summary(id) else {
            return Ok(());
        };
        let start = self.members[id]
            .node
            .as_ref()
            .map_or(0, |n| n.log().start_position());
        if position <= start {
            return Ok(()); // behind the new leader's snapshot: in it, not in its log
        }
        let found = summary
            .iter()
            .find(|(end, _, _)| *end == position)
            .map(|&(_, _, h)| h);
        if found != Some(hash) {
            let (appended, at) = self.members[id].node.as_ref().map_or((0, 0), |n| {
                (n.log().appended_position(), n.applier().applied_position())
            });
            return Err(self.violation(
                "leader completeness",
                format!(
                    "new leader {id} lacks the committed prefix up to {position} (its log {start}..{appended}, applied {at}, {})",
                    if found.is_some() { "a frame ends there with other bytes before it" } else { "no frame of its log ends there" }
                ),
            ));
        }
        Ok(())
    }

    /// Log matching: where two logs have a frame of the same term ending at the same
    /// position, the logs are equal up to there.
    fn check_logs_match(&mut self) -> Result<(), Violation> {
        let up: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].node.is_some())
            .collect();
        let summaries: Vec<(usize, FramesByEnd)> = up
            .iter()
            .filter_map(|&i| {
                let summary = self.log_summary(i)?;
                Some((
                    i,
                    summary
                        .into_iter()
                        .map(|(end, term, hash)| (end, (term, hash)))
                        .collect(),
                ))
            })
            .collect();
        for a in 0..summaries.len() {
            for b in a + 1..summaries.len() {
                for (end, (term, hash)) in &summaries[a].1 {
                    if let Some((term_b, hash_b)) = summaries[b].1.get(end) {
                        if term == term_b && *term != u64::MAX && hash != hash_b {
                            return Err(self.violation(
                                "log matching",
                                format!(
                                    "members {} and {} have term {term} at {end} but different bytes before it",
                                    summaries[a].0, summaries[b].0
                                ),
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Every acknowledged message applied exactly once on every replica.
    fn check_exactly_once(&self) -> Result<(), Violation> {
        for (id, m) in self.members.iter().enumerate() {
            let node = m.node.as_ref().expect("all members are up after healing");
            let applied = &node.applier().service().applied;
            let fired = &node.applier().service().fired_timers;
            let unique_timers: BTreeSet<&u64> = fired.iter().collect();
            if unique_timers.len() != fired.len() {
                return Err(self.violation(
                    "timers fire once",
                    format!("member {id} fired a timer twice"),
                ));
            }
            let expected = applied.iter().filter(|(_, seq)| seq % 5 == 0).count();
            if fired.len() != expected {
                return Err(self.violation(
                    "timers fire once",
                    format!(
                        "member {id} fired {} timers, {expected} were scheduled",
                        fired.len()
                    ),
                ));
            }
            let unique: BTreeSet<&(u64, u64)> = applied.iter().collect();
            if unique.len() != applied.len() {
                return Err(self.violation(
                    "client exactly-once",
                    format!("member {id} applied a message twice"),
                ));
            }
            for c in &self.clients {
                for &sequence in &c.acked {
                    if !unique.contains(&(c.session, sequence)) {
                        return Err(self.violation(
                            "client exactly-once",
                            format!(
                                "member {id} lacks acknowledged message {sequence} of session {}",
                                c.session
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Runs one seed; an assertion that fires inside the engine is reported as a violation too.
pub fn run_seed(config: &SimConfig) -> Result<SimOutcome, Violation> {
    let cluster = Cluster::new(config.clone());
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cluster.run())) {
        Ok(result) => result,
        Err(panic) => {
            let detail = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(Violation {
                seed: config.seed,
                step: 0,
                invariant: "engine assertion",
                detail,
            })
        }
    }
}

/// Runs one seed twice and compares the run digests (nondeterminism is a bug too).
pub fn run_seed_twice(config: &SimConfig) -> Result<SimOutcome, Violation> {
    let first = run_seed(config)?;
    let second = run_seed(config)?;
    if first != second {
        return Err(Violation {
            seed: config.seed,
            step: first.steps.min(second.steps),
            invariant: "determinism",
            detail: format!("two runs of the seed differ: {first:?} vs {second:?}"),
        });
    }
    Ok(first)
}
