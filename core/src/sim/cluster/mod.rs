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

mod apply;
mod checkers;
mod clients;
mod faults;
mod service;

use crate::node::ApplyStage;
use apply::{SimApply, SimHost};
use clients::{Client, ClientRequest, ClientResponse};
pub use faults::Faults;
pub use service::RecordingService;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use super::disk::{SimDisk, SimDiskConfig};
use super::hostile::{Hostile, Target};
use super::net::SimEndpoint;
use crate::client::{BrokenClientRule, ClientCore, ClientEvent, ClientSettings};
use crate::codec::{FrameType, Frames};
#[cfg(any(test, feature = "sim"))]
use crate::consensus::BrokenRule;
use crate::consensus::{ConsensusConfig, MemberId, Role};
use crate::io::{Files, CLIENT_ENDPOINT_BASE};
use crate::log::{Durability, LogConfig};
use crate::node::{Node, NodeConfig, OfferError};
use crate::rng::Rng;
use crate::service::{fnv1a, Applier, Context, Egress, Service, FNV_OFFSET};

const MS: u64 = 1_000_000;
/// A UDP payload that fits an Ethernet frame.
const SMALL_DATAGRAM: usize = 1472;

type SimNode = Node<SimDisk, SimEndpoint, SimApply>;
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
    /// Clients speak the shipped client protocol (`client::ClientCore`) in datagrams through
    /// the simulated network and the nodes' door, instead of offering to nodes directly.
    /// `None`: half the seeds, drawn from the seed.
    pub client_core: Option<bool>,
    /// Members may start on the dedicated-mode apply path (`None`: a third of the seeds,
    /// drawn from the seed).
    pub remote_apply: Option<bool>,
    /// A client rule broken on purpose (teeth tests; implies `client_core`).
    pub broken_client_rule: Option<BrokenClientRule>,
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
            client_core: None,
            remote_apply: None,
            broken_client_rule: None,
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
    /// Client messages applied, at the end, by services of members that ran the dedicated-mode
    /// apply path (`node::remote`): 0 when no member did.
    pub remote_applied: u64,
    /// Messages acknowledged to clients through the shipped client protocol (0 when the
    /// seed's clients offered to nodes directly).
    pub client_core_acknowledged: u64,
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
    /// The client messages its service applied that the exactly-once checker has seen: how many
    /// of the service's list, and which (session, message).
    applied_checked: (usize, BTreeSet<(u64, u64)>),
    /// The service's host when this run of the member uses the dedicated-mode apply path.
    host: Option<SimHost>,
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
    /// A datagram of the client protocol, from a client to a member's door.
    FromClient {
        client: usize,
        to: MemberId,
        bytes: Vec<u8>,
    },
    /// A member's reply to a client's endpoint.
    ToClient {
        from: MemberId,
        client: usize,
        bytes: Vec<u8>,
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
    /// The seed's clients speak the client protocol in datagrams (see `SimConfig`).
    client_core: bool,
    /// The dedicated-mode apply path: its own generator (so the rest of the seed's run is
    /// unchanged), whether the seed uses it at all, and how often a host runs in a step.
    remote_rng: Rng,
    remote_apply: bool,
    host_run_chance: f64,
}

/// The messages in a datagram, for the trace.
fn describe_frames(bytes: &[u8]) -> String {
    let mut out = Vec::new();
    for frame in Frames::new(bytes) {
        match frame {
            Ok((_, f)) => match crate::codec::Message::decode(&f) {
                Ok(crate::codec::Message::SessionMessage { header, .. }) => out.push(format!(
                    "message {} of session {}",
                    header.sequence, f.meta.session_id
                )),
                Ok(m) => out.push(format!("{m:?}")),
                Err(e) => out.push(format!("undecodable: {e}")),
            },
            Err(e) => out.push(format!("bad frame: {e}")),
        }
    }
    out.join(", ")
}

/// The shipped client's settings at the simulator's time scale (its resends and connect
/// retries at the pace of the simulated clients that offer directly).
fn client_settings(members: u32) -> ClientSettings {
    ClientSettings {
        resend_timeout_ns: 40 * MS,
        connect_retry_ns: 40 * MS,
        keepalive_interval_ns: 200 * MS,
        ..ClientSettings::new(members)
    }
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
        // Drawn from a generator of its own, so the rest of the seed's run is unchanged.
        let client_core = config.broken_client_rule.is_some()
            || config
                .client_core
                .unwrap_or_else(|| Rng::new(config.seed ^ 0x636c_6965_6e74).below(2) == 1);
        let mut cluster = Self {
            members: Vec::new(),
            clients: (0..config.clients)
                .map(|c| Client {
                    core: client_core.then(|| {
                        let mut core = ClientCore::new(
                            client_settings(members),
                            100 + c as u64,
                            SimEndpoint::default(),
                        );
                        if let Some(rule) = config.broken_client_rule {
                            core.break_rule(rule);
                        }
                        core
                    }),
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
            client_core,
            remote_rng: Rng::new(config.seed ^ 0x7265_6d6f_7465),
            remote_apply: false,
            host_run_chance: 1.0,
            config,
        };
        let drawn = cluster.remote_rng.below(3) == 0;
        cluster.remote_apply = cluster.config.remote_apply.unwrap_or(drawn);
        cluster.host_run_chance = [1.0, 0.5, 0.1][cluster.remote_rng.below(3) as usize];
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
                applied_checked: Default::default(),
                host: None,
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
            let a = m.service().expect("all members are up after healing");
            digest = fnv1a(digest, &a.log_hash().to_le_bytes());
            digest = fnv1a(digest, &a.service().digest().to_le_bytes());
        }
        Ok(SimOutcome {
            seed: self.config.seed,
            members: self.config.members,
            steps: self.step,
            acknowledged,
            committed_position: committed,
            leaders_elected: self.leaders.len() as u64,
            crashes: self.crashes,
            timers_applied: self.members[0].service().map_or(0, |a| a.service().timers),
            remote_applied: self
                .members
                .iter()
                .filter(|m| m.host.is_some())
                .filter_map(|m| m.service())
                .map(|a| a.applied_messages())
                .sum(),
            hostile_injected: self.hostile.injected,
            corruptions: self.corruptions,
            waits_on_promise,
            client_core_acknowledged: if self.client_core { acknowledged } else { 0 },
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
                    "{:?} t{} app{} dur{} com{} appl{}{}{}",
                    n.consensus().state(),
                    n.consensus().term(),
                    n.log().appended_position(),
                    n.log().durable_position(),
                    n.commit_position(),
                    n.applier().applied_position(),
                    n.consensus()
                        .last_refusal()
                        .map_or(String::new(), |r| format!(" last refused: {r};")),
                    m.service().map_or(String::new(), |a| format!(
                        " (service{} applied {} timers {})",
                        if m.host.is_some() { " on its host" } else { "" },
                        a.applied_position(),
                        a.scheduled_timers()
                    ))
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
                    .map(|m| m.service().and_then(|a| a.last_sequence(c.session)))
                    .collect();
                format!(
                    "s{} open={} acked {} unacked {:?} next {} applied {last:?}{}",
                    c.session,
                    c.opened,
                    c.acked.len(),
                    c.unacked.keys().collect::<Vec<_>>(),
                    c.next_sequence,
                    c.core
                        .as_ref()
                        .map_or(String::new(), |core| format!(" {core:?}"))
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
        let latest = crate::service::snapshot::load_latest(&mut disk, |_, _| {})
            .ok()
            .flatten();
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
        // In a third of the seeds each start of a member takes the dedicated-mode path at even
        // odds: a node feeding its service's host over record channels.
        let (applier, host) = if self.remote_apply && self.remote_rng.chance(0.5) {
            let (feed_in, feed_out) = crate::sim::channel::sim_channel(64 << 10);
            let (back_in, back_out) = crate::sim::channel::sim_channel(64 << 10);
            let (remote, host) = crate::node::remote::split(
                applier,
                (feed_in, feed_out),
                (back_in, back_out),
                format!("member {id}'s service"),
            );
            (SimApply::Remote(remote), Some(host))
        } else {
            (SimApply::Local(applier), None)
        };
        self.members[id].host = host;
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
        // With the client protocol, egress leaves as datagrams to the clients' endpoints.
        node.set_collect_egress(!self.client_core);
        node.set_snapshot_progress(progress);
        self.members[id].node = Some(node);
        self.members[id].applied_checked = Default::default();
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
                Event::FromClient { client, to, bytes } => {
                    self.trace(|| {
                        format!(
                            "client {client} -> member {to}: {}",
                            describe_frames(&bytes)
                        )
                    });
                    if let Some(node) = self.members[to as usize].node.as_mut() {
                        node.net_mut()
                            .deliver(CLIENT_ENDPOINT_BASE + client as u32, bytes);
                    }
                }
                Event::ToClient {
                    from,
                    client,
                    bytes,
                } => {
                    self.trace(|| {
                        format!(
                            "member {from} -> client {client}: {}",
                            describe_frames(&bytes)
                        )
                    });
                    if let Some(core) = self.clients[client].core.as_mut() {
                        core.net_mut().deliver(from, bytes);
                    }
                }
            }
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
        node.assert_invariants();
        let m = &mut self.members[id];
        if let (Some(host), Some(node)) = (m.host.as_mut(), m.node.as_mut()) {
            // The service's thread runs when the simulator lets it: at once, or lagging behind.
            if self.remote_rng.chance(self.host_run_chance) {
                host.do_work(node.log_mut().disk_mut());
            }
        }
        // Snapshots go to the member's disk (the runtime writes them on a thread of its own),
        // old ones and retired segments are deleted.
        let m = &mut self.members[id];
        let node = m.node.as_mut().expect("running");
        let taken = match m.host.as_mut() {
            Some(host) => host.take_snapshot(),
            None => node.take_snapshot(),
        };
        if let Some(snapshot) = taken {
            // What the runtime's snapshot writer does, on its own thread there.
            let disk = node.log_mut().disk_mut();
            if crate::service::snapshot::store(disk, &snapshot).is_ok() {
                m.snapshot_durable
                    .fetch_max(snapshot.position, std::sync::atomic::Ordering::AcqRel);
            }
        }
        for name in node.take_retired() {
            // As the runtime does: a failed delete leaves a retired file, never lost data.
            let _ = node.log_mut().disk_mut().remove(&name);
        }
        if self.members[id]
            .service()
            .is_some_and(|a| a.digest_mismatches() > 0)
        {
            return Err(self.violation(
                "digest mismatch",
                format!("member {id}: its service digest differed from the leader's at a snapshot position"),
            ));
        }
        let node = self.members[id].node.as_mut().expect("running");
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
                let event = match to.checked_sub(CLIENT_ENDPOINT_BASE) {
                    Some(client) if (client as usize) < self.clients.len() => Event::ToClient {
                        from: id as MemberId,
                        client: client as usize,
                        bytes: bytes.clone(),
                    },
                    Some(_) => continue, // a forged client's endpoint: nobody listens
                    None => Event::Datagram {
                        from: id as MemberId,
                        to,
                        bytes: bytes.clone(),
                    },
                };
                self.schedule(at, event);
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
