//! The node configuration: one `Config` with a builder and a TOML form, validated at start
//! with errors that name the key, the value and the allowed range.
//!
//! ```toml
//! [cluster]
//! id = 1
//! members = ["127.0.0.1:20001", "127.0.0.1:20002", "127.0.0.1:20003"]
//! [node]
//! id = 0
//! log_dir = "/var/lib/raftline/0"
//! [log]
//! durability = "fdatasync"      # or "none"
//! segment_mib = 128
//! write_kib = 1024
//! [consensus]
//! leader_heartbeat_interval_ms = 200
//! leader_heartbeat_timeout_ms = 10000
//! election_timeout_ms = 1000
//! [runtime]
//! threading = "shared"          # or "dedicated"
//! idle = "block"                # busy-spin, yield, backoff, sleep, block
//! [transport]
//! max_datagram_bytes = 1472     # safe for a 1500-byte MTU; loopback takes up to 65507
//! members = "udp"               # or "ipc": shared-memory rings, all members on one host
//! ipc_dir = "/dev/shm/raftline-1"   # default /dev/shm/raftline-<cluster id>
//! ipc_ring_kib = 4096
//! [snapshot]
//! interval_kib = 262144         # every replica snapshots each 256 MiB of log; 0: only on request
//! [session]
//! timeout_ms = 10000            # the leader closes a session silent this long; 0: never
//! max_message_bytes = 65536     # longer client messages are refused (default: one log frame)
//! max_sessions = 10000          # open sessions in all
//! max_sessions_per_source = 64  # open sessions bound to one client address and port
//! [access]
//! client_token_file = "/etc/raftline/client.token"  # or RAFTLINE_CLIENT_TOKEN
//! admin_token_file = "/etc/raftline/admin.token"    # or RAFTLINE_ADMIN_TOKEN
//! ```
//!
//! The cluster section (`cluster.*`, `log.segment_mib`, the consensus timeouts) must be the
//! same on every member.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::consensus::ConsensusConfig;
use crate::log::{Durability, LogConfig};

/// A configuration value that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("bad config {key} = {value}: allowed {allowed}")]
    Value {
        key: String,
        value: String,
        allowed: String,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
}

/// The TOML key of an internal setting name (what the user wrote, in the unit they wrote).
fn toml_key(internal: &str) -> &str {
    match internal {
        "consensus.leader_heartbeat_interval_ns" => "consensus.leader_heartbeat_interval_ms",
        "consensus.leader_heartbeat_timeout_ns" => "consensus.leader_heartbeat_timeout_ms",
        "consensus.election_timeout_ns" => "consensus.election_timeout_ms",
        "consensus.startup_canvass_timeout_ns" => "consensus.startup_canvass_timeout_ms",
        "consensus.replication_window_bytes" => "consensus.replication_window_kib",
        "cluster.member_count" => "cluster.members",
        "cluster.member_id" => "node.id",
        "log.segment_bytes" => "log.segment_mib",
        "log.write_bytes_max" => "log.write_kib",
        other => other,
    }
}

/// Refuses two members that resolved to one address.
pub(crate) fn check_distinct(names: &[String], resolved: &[SocketAddr]) -> Result<(), ConfigError> {
    for (i, a) in resolved.iter().enumerate() {
        if let Some(j) = resolved[..i].iter().position(|b| b == a) {
            return Err(bad(
                &format!("cluster.members[{i}]"),
                &names[i],
                format!(
                    "an address no other member has ({} and {} both resolve to {a})",
                    names[j], names[i]
                ),
            ));
        }
    }
    Ok(())
}

fn bad(key: &str, value: impl std::fmt::Display, allowed: impl Into<String>) -> ConfigError {
    ConfigError::Value {
        key: key.into(),
        value: value.to_string(),
        allowed: allowed.into(),
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub id: u32,
    pub members: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    pub id: u32,
    pub log_dir: PathBuf,
    /// Set by `raftline node --recover-vote` for one start, never from a file.
    #[serde(skip)]
    pub recover_vote: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    pub durability: String,
    pub segment_mib: u64,
    pub write_kib: u64,
    pub io_uring: bool,
    pub direct_io: bool,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            durability: "fdatasync".into(),
            segment_mib: 128,
            write_kib: 1024,
            io_uring: true,
            direct_io: true,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ConsensusSection {
    pub leader_heartbeat_interval_ms: u64,
    pub leader_heartbeat_timeout_ms: u64,
    pub election_timeout_ms: u64,
    pub startup_canvass_timeout_ms: u64,
    pub appointed_leader: Option<u32>,
    pub replication_window_kib: u64,
}

impl Default for ConsensusSection {
    fn default() -> Self {
        Self {
            leader_heartbeat_interval_ms: 200,
            leader_heartbeat_timeout_ms: 10_000,
            election_timeout_ms: 1_000,
            startup_canvass_timeout_ms: 5_000,
            appointed_leader: None,
            replication_window_kib: 4096,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSection {
    pub threading: String,
    pub idle: String,
    /// Cores to pin the node's threads to, in order (empty: no pinning).
    pub cores: Vec<usize>,
}

impl Default for RuntimeSection {
    fn default() -> Self {
        Self {
            threading: "shared".into(),
            idle: "block".into(),
            cores: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TransportSection {
    pub max_datagram_bytes: usize,
    /// How members reach each other: "udp", or "ipc" (shared memory, members on one host;
    /// clients still use UDP).
    pub members: String,
    /// Directory of the IPC ring files (default `/dev/shm/raftline-<cluster id>`).
    pub ipc_dir: Option<PathBuf>,
    /// Bytes of each member-to-member IPC ring, in KiB.
    pub ipc_ring_kib: usize,
    /// A file holding the member key (64 hexadecimal digits), the same on every member:
    /// member traffic is sealed and checked with it (see `auth`). The environment variable
    /// `RAFTLINE_MEMBER_KEY` is used instead when set. Without either, members are not
    /// authenticated.
    pub member_key_file: Option<PathBuf>,
    /// During a key rotation: the key being replaced, still accepted (never used to seal).
    pub previous_member_key_file: Option<PathBuf>,
    /// Client addresses (address and port) the node keeps; when full, addresses silent for
    /// `client_idle_ms` make room, and while none is, new addresses are dropped (counted).
    pub max_client_addresses: usize,
    pub client_idle_ms: u64,
}

impl Default for TransportSection {
    fn default() -> Self {
        Self {
            max_datagram_bytes: crate::io::SAFE_MTU_DATAGRAM,
            members: "udp".into(),
            ipc_dir: None,
            ipc_ring_kib: 4096,
            member_key_file: None,
            previous_member_key_file: None,
            max_client_addresses: crate::io::CLIENT_ADDRESSES_MAX,
            client_idle_ms: crate::io::CLIENT_IDLE_NS / 1_000_000,
        }
    }
}

/// How members reach each other.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotSection {
    /// The leader asks every replica for a snapshot each time the log grows by this much.
    pub interval_kib: u64,
    /// The largest snapshot a follower accepts from the leader (MiB); a larger install is
    /// refused before any memory is reserved for it.
    pub max_install_mib: u64,
}

impl Default for SnapshotSection {
    fn default() -> Self {
        Self {
            interval_kib: 256 * 1024,
            max_install_mib: 8 * 1024,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SessionSection {
    /// The leader closes (through the log, reason timeout) a session whose client it has not
    /// heard from for this long; clients send keep-alives when idle. 0: never.
    pub timeout_ms: u64,
    /// The longest client message, in bytes: a longer one is refused at the leader and the
    /// client told (`TooLarge`). At most what one log frame holds (about half of
    /// `log.write_kib`), which is also the default.
    pub max_message_bytes: Option<usize>,
    /// Sessions open (or being opened) in all; a connect beyond it is refused.
    pub max_sessions: usize,
    /// Sessions bound to one client source (address and port).
    pub max_sessions_per_source: usize,
}

impl Default for SessionSection {
    fn default() -> Self {
        let limits = crate::node::SessionLimits::default();
        Self {
            timeout_ms: 10_000,
            max_message_bytes: None,
            max_sessions: limits.max_sessions,
            max_sessions_per_source: limits.max_sessions_per_source,
        }
    }
}

/// Who may open sessions and operate the cluster (see `access`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AccessSection {
    /// A file holding the token every client presents when it connects (at least 16
    /// characters; surrounding white space ignored). `RAFTLINE_CLIENT_TOKEN` is used instead
    /// when set. Without either, any source may open a session.
    pub client_token_file: Option<PathBuf>,
    /// A file holding the operators' token, for `raftline cluster ...` and every admin
    /// request (`RAFTLINE_ADMIN_TOKEN` instead when set). Without either, anyone may operate
    /// the cluster.
    pub admin_token_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberTransport {
    Udp,
    /// Shared-memory rings between processes on one host.
    Ipc,
}

/// How a thread idles. Parsed from configuration as `busy-spin`, `yield`, `backoff`,
/// `sleep`, or `block`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdleStrategy {
    BusySpin,
    /// `spins` spin-loop hints, then `sched_yield` each idle cycle.
    Yield {
        spins: u32,
    },
    /// Spin, then yield, then park for a growing time up to `max_park_ns`.
    Backoff {
        spins: u32,
        yields: u32,
        min_park_ns: u64,
        max_park_ns: u64,
    },
    Sleep {
        ns: u64,
    },
    /// Block on the event sources for at most `max_ns` (the timer granularity).
    Block {
        max_ns: u64,
    },
}

impl IdleStrategy {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "busy-spin" => Self::BusySpin,
            "yield" => Self::Yield { spins: 100 },
            "backoff" => Self::Backoff {
                spins: 100,
                yields: 10,
                min_park_ns: 1_000,
                max_park_ns: 1_000_000,
            },
            "sleep" => Self::Sleep { ns: 100_000 },
            "block" => Self::Block { max_ns: 1_000_000 },
            _ => return None,
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::BusySpin => "busy-spin",
            Self::Yield { .. } => "yield",
            Self::Backoff { .. } => "backoff",
            Self::Sleep { .. } => "sleep",
            Self::Block { .. } => "block",
        }
    }
}

/// How a node's agents map to threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadingMode {
    /// One thread runs every agent of the node (small hosts, tests, CI).
    Shared,
    /// Three threads joined by rings: the receiver (socket → ring), the node (consensus,
    /// replication, the log's io_uring writes and completions) and the service (applies
    /// committed frames, sends egress back).
    Dedicated,
}

/// The whole node configuration. See the module docs for the TOML form.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub cluster: ClusterSection,
    pub node: NodeSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub consensus: ConsensusSection,
    #[serde(default)]
    pub runtime: RuntimeSection,
    #[serde(default)]
    pub transport: TransportSection,
    #[serde(default)]
    pub snapshot: SnapshotSection,
    #[serde(default)]
    pub session: SessionSection,
    #[serde(default)]
    pub access: AccessSection,
}

impl Config {
    /// Starts a builder for member `node_id` of a cluster whose members are `members`.
    pub fn builder(
        node_id: u32,
        members: Vec<String>,
        log_dir: impl Into<PathBuf>,
    ) -> ConfigBuilder {
        ConfigBuilder {
            config: Config {
                cluster: ClusterSection { id: 0, members },
                node: NodeSection {
                    id: node_id,
                    log_dir: log_dir.into(),
                    recover_vote: false,
                },
                log: LogSection::default(),
                consensus: ConsensusSection::default(),
                runtime: RuntimeSection::default(),
                transport: TransportSection::default(),
                snapshot: SnapshotSection::default(),
                session: SessionSection::default(),
                access: AccessSection::default(),
            },
        }
    }

    /// Parses the TOML form; unknown keys are errors that name the key.
    pub fn from_toml(text: &str, path: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The TOML form (what [`Config::from_toml`] reads), e.g. to start a node process.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a config always serializes")
    }

    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// The member keys (the sealing key first, then a previous one still accepted), or
    /// `None` for an unauthenticated cluster. Errors name the key or variable, never the
    /// key's bytes.
    pub fn member_keys(&self) -> Result<Option<Vec<crate::auth::MemberKey>>, ConfigError> {
        use crate::auth::MemberKey;
        let from_file = |key: &str, path: &std::path::Path| -> Result<MemberKey, ConfigError> {
            let text = std::fs::read_to_string(path)
                .map_err(|e| bad(key, path.display(), format!("a readable key file ({e})")))?;
            MemberKey::from_hex(&text).map_err(|why| bad(key, path.display(), why))
        };
        let current = match std::env::var("RAFTLINE_MEMBER_KEY") {
            Ok(text) => Some(
                MemberKey::from_hex(&text)
                    .map_err(|why| bad("RAFTLINE_MEMBER_KEY", "(set)", why))?,
            ),
            Err(_) => match &self.transport.member_key_file {
                Some(path) => Some(from_file("transport.member_key_file", path)?),
                None => None,
            },
        };
        let Some(current) = current else {
            if self.transport.previous_member_key_file.is_some() {
                return Err(bad(
                    "transport.previous_member_key_file",
                    "(set)",
                    "only with a current key (transport.member_key_file)",
                ));
            }
            return Ok(None);
        };
        let mut keys = vec![current];
        if let Some(path) = &self.transport.previous_member_key_file {
            keys.push(from_file("transport.previous_member_key_file", path)?);
        }
        Ok(Some(keys))
    }

    /// A token from the environment variable `var`, else from the file named by `key`.
    fn token(
        var: &str,
        key: &str,
        file: Option<&std::path::Path>,
    ) -> Result<Option<crate::access::SharedToken>, ConfigError> {
        use crate::access::SharedToken;
        if let Ok(text) = std::env::var(var) {
            return SharedToken::new(&text)
                .map(Some)
                .map_err(|why| bad(var, "(set)", why));
        }
        let Some(path) = file else { return Ok(None) };
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad(key, path.display(), format!("a readable token file ({e})")))?;
        SharedToken::new(&text)
            .map(Some)
            .map_err(|why| bad(key, path.display(), why))
    }

    /// The client token and the admin token, as the node checks them.
    pub fn access(&self) -> Result<crate::access::Access, ConfigError> {
        let client = Self::token(
            "RAFTLINE_CLIENT_TOKEN",
            "access.client_token_file",
            self.access.client_token_file.as_deref(),
        )?;
        let admin = Self::token(
            "RAFTLINE_ADMIN_TOKEN",
            "access.admin_token_file",
            self.access.admin_token_file.as_deref(),
        )?;
        Ok(crate::access::Access::tokens(client, admin))
    }

    /// The admin token's text, as an operator presents it (`raftline cluster ...`), from the
    /// same places the node reads it. Empty when none is configured.
    pub fn admin_credential(&self) -> Result<Vec<u8>, ConfigError> {
        Self::credential(
            "RAFTLINE_ADMIN_TOKEN",
            "access.admin_token_file",
            self.access.admin_token_file.as_deref(),
        )
    }

    /// The client token's text, as a client presents it. Empty when none is configured.
    pub fn client_credential(&self) -> Result<Vec<u8>, ConfigError> {
        Self::credential(
            "RAFTLINE_CLIENT_TOKEN",
            "access.client_token_file",
            self.access.client_token_file.as_deref(),
        )
    }

    fn credential(
        var: &str,
        key: &str,
        file: Option<&std::path::Path>,
    ) -> Result<Vec<u8>, ConfigError> {
        let text = match std::env::var(var) {
            Ok(text) => text,
            Err(_) => match file {
                Some(path) => std::fs::read_to_string(path).map_err(|e| {
                    bad(key, path.display(), format!("a readable token file ({e})"))
                })?,
                None => return Ok(Vec::new()),
            },
        };
        Ok(text.trim().as_bytes().to_vec())
    }

    /// The session limits the node enforces.
    pub fn session_limits(&self) -> crate::node::SessionLimits {
        crate::node::SessionLimits {
            max_message_bytes: self.session.max_message_bytes.unwrap_or(usize::MAX),
            max_sessions: self.session.max_sessions,
            max_sessions_per_source: self.session.max_sessions_per_source,
        }
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = self.cluster.members.len();
        if !(1..=64).contains(&n) {
            return Err(bad("cluster.members", n, "1 to 64 member addresses"));
        }
        for (i, m) in self.cluster.members.iter().enumerate() {
            match m
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse::<u16>().ok())
            {
                None => return Err(bad(&format!("cluster.members[{i}]"), m, "host:port")),
                Some(0) => {
                    return Err(bad(
                        &format!("cluster.members[{i}]"),
                        m,
                        "a fixed port (not 0: the other members must know where to reach it)",
                    ))
                }
                Some(_) => {}
            }
            if let Some(j) = self.cluster.members[..i].iter().position(|o| o == m) {
                return Err(bad(
                    &format!("cluster.members[{i}]"),
                    m,
                    format!("an address no other member has (cluster.members[{j}] is the same)"),
                ));
            }
        }
        if self.node.id as usize >= n {
            return Err(bad(
                "node.id",
                self.node.id,
                format!("0..{n} (an index into cluster.members)"),
            ));
        }
        self.durability()?;
        self.threading()?;
        self.idle_strategy()?;
        if !(512..=65_507).contains(&self.transport.max_datagram_bytes) {
            return Err(bad(
                "transport.max_datagram_bytes",
                self.transport.max_datagram_bytes,
                "512..=65507",
            ));
        }
        self.member_transport()?;
        if !(64..=1 << 20).contains(&self.transport.ipc_ring_kib)
            || !self.transport.ipc_ring_kib.is_power_of_two()
        {
            return Err(bad(
                "transport.ipc_ring_kib",
                self.transport.ipc_ring_kib,
                "a power of two from 64 to 1048576",
            ));
        }
        self.validate_log()?;
        self.validate_timeouts()?;
        self.consensus_config()
            .validate()
            .map_err(|e| bad(toml_key(e.key), e.value, e.allowed))?;
        let frame_payload_max = self.log_config().frame_len_max()
            - crate::codec::HEADER_LEN
            - crate::codec::message::SessionMessageHeader::LEN;
        if let Some(max) = self
            .session
            .max_message_bytes
            .filter(|m| !(1..=frame_payload_max).contains(m))
        {
            return Err(bad(
                "session.max_message_bytes",
                max,
                format!("1..={frame_payload_max} (what one log frame holds with log.write_kib = {} and log.segment_mib = {}; raise log.write_kib for longer messages)", self.log.write_kib, self.log.segment_mib),
            ));
        }
        if !(1..=1 << 20).contains(&self.transport.max_client_addresses) {
            return Err(bad(
                "transport.max_client_addresses",
                self.transport.max_client_addresses,
                "1..=1048576",
            ));
        }
        if self.snapshot.max_install_mib == 0 {
            return Err(bad("snapshot.max_install_mib", 0, "at least 1"));
        }
        if self.session.max_sessions == 0 {
            return Err(bad("session.max_sessions", 0, "at least 1"));
        }
        if !(1..=self.session.max_sessions).contains(&self.session.max_sessions_per_source) {
            return Err(bad(
                "session.max_sessions_per_source",
                self.session.max_sessions_per_source,
                format!("1..={} (session.max_sessions)", self.session.max_sessions),
            ));
        }
        Ok(())
    }

    pub fn durability(&self) -> Result<Durability, ConfigError> {
        match self.log.durability.as_str() {
            "fdatasync" => Ok(Durability::Fdatasync),
            "none" => Ok(Durability::None),
            other => Err(bad("log.durability", other, "\"fdatasync\" or \"none\"")),
        }
    }

    pub fn member_transport(&self) -> Result<MemberTransport, ConfigError> {
        match self.transport.members.as_str() {
            "udp" => Ok(MemberTransport::Udp),
            "ipc" => Ok(MemberTransport::Ipc),
            other => Err(bad("transport.members", other, "\"udp\" or \"ipc\"")),
        }
    }

    /// Where the IPC ring files live.
    pub fn ipc_dir(&self) -> PathBuf {
        self.transport
            .ipc_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/dev/shm/raftline-{}", self.cluster.id)))
    }

    pub fn threading(&self) -> Result<ThreadingMode, ConfigError> {
        match self.runtime.threading.as_str() {
            "shared" => Ok(ThreadingMode::Shared),
            "dedicated" => Ok(ThreadingMode::Dedicated),
            other => Err(bad(
                "runtime.threading",
                other,
                "\"shared\" or \"dedicated\"",
            )),
        }
    }

    pub fn idle_strategy(&self) -> Result<IdleStrategy, ConfigError> {
        IdleStrategy::parse(&self.runtime.idle).ok_or_else(|| {
            bad(
                "runtime.idle",
                &self.runtime.idle,
                "busy-spin, yield, backoff, sleep or block",
            )
        })
    }

    pub fn log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.log.segment_mib.saturating_mul(1 << 20),
            write_bytes_max: (self.log.write_kib.saturating_mul(1024)) as usize,
            durability: self.durability().unwrap_or(Durability::Fdatasync),
        }
    }

    pub fn consensus_config(&self) -> ConsensusConfig {
        let ms = 1_000_000;
        let c = &self.consensus;
        let mut config = ConsensusConfig::new(self.node.id, self.cluster.members.len() as u32);
        config.leader_heartbeat_interval_ns = c.leader_heartbeat_interval_ms.saturating_mul(ms);
        config.leader_heartbeat_timeout_ns = c.leader_heartbeat_timeout_ms.saturating_mul(ms);
        config.election_timeout_ns = c.election_timeout_ms.saturating_mul(ms);
        config.startup_canvass_timeout_ns = c.startup_canvass_timeout_ms.saturating_mul(ms);
        config.appointed_leader = c.appointed_leader;
        // A follower takes at most its staging buffer at once (log.write_kib, the same on
        // every member): a larger window only gets dropped and resent.
        let staging = self.log.write_kib.saturating_mul(1024) / 2;
        config.replication_window_bytes = c
            .replication_window_kib
            .saturating_mul(1024)
            .min(staging.max(4096));
        config.seed = (self.node.id as u64) << 32 ^ std::process::id() as u64;
        config
    }

    /// Resolves every member address (host names included). Two names for one address
    /// (`localhost:9000` and `127.0.0.1:9000`) are refused: each member needs its own.
    pub fn resolve_members(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        let resolved: Vec<SocketAddr> = self
            .cluster
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| {
                        bad(
                            &format!("cluster.members[{i}]"),
                            m,
                            "an address that resolves",
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        check_distinct(&self.cluster.members, &resolved)?;
        Ok(resolved)
    }

    fn validate_log(&self) -> Result<(), ConfigError> {
        // The log checks bytes; the user wrote MiB and KiB.
        self.log_config().validate().map_err(|e| match e {
            crate::log::LogError::Config {
                key: "log.segment_bytes",
                ..
            } => bad(
                "log.segment_mib",
                self.log.segment_mib,
                format!(
                    "1..={} (MiB)",
                    crate::log::LogConfig::SEGMENT_BYTES_MAX >> 20
                ),
            ),
            crate::log::LogError::Config {
                key: "log.write_bytes_max",
                ..
            } => bad(
                "log.write_kib",
                self.log.write_kib,
                format!(
                    "a multiple of 4 in {}..={} (KiB)",
                    crate::log::LogConfig::WRITE_BYTES_MIN / 1024,
                    crate::log::LogConfig::WRITE_BYTES_MAX / 1024
                ),
            ),
            crate::log::LogError::Config {
                key,
                value,
                allowed,
            } => bad(toml_key(key), value, allowed),
            other => bad("log", other, "valid log settings"),
        })
    }

    /// The consensus timeouts, in the milliseconds the user wrote, with sane upper bounds.
    fn validate_timeouts(&self) -> Result<(), ConfigError> {
        let c = &self.consensus;
        let hour = 3_600_000;
        if !(1..=60_000).contains(&c.leader_heartbeat_interval_ms) {
            return Err(bad(
                "consensus.leader_heartbeat_interval_ms",
                c.leader_heartbeat_interval_ms,
                "1..=60000",
            ));
        }
        if c.leader_heartbeat_timeout_ms <= c.leader_heartbeat_interval_ms
            || c.leader_heartbeat_timeout_ms > hour
        {
            return Err(bad(
                "consensus.leader_heartbeat_timeout_ms",
                c.leader_heartbeat_timeout_ms,
                format!(
                    "above consensus.leader_heartbeat_interval_ms ({}) and at most {hour}",
                    c.leader_heartbeat_interval_ms
                ),
            ));
        }
        if !(1..=hour).contains(&c.election_timeout_ms) {
            return Err(bad(
                "consensus.election_timeout_ms",
                c.election_timeout_ms,
                format!("1..={hour}"),
            ));
        }
        if c.startup_canvass_timeout_ms < c.election_timeout_ms
            || c.startup_canvass_timeout_ms > hour
        {
            return Err(bad(
                "consensus.startup_canvass_timeout_ms",
                c.startup_canvass_timeout_ms,
                format!(
                    "at least consensus.election_timeout_ms ({}) and at most {hour}",
                    c.election_timeout_ms
                ),
            ));
        }
        if self.session.timeout_ms > 0 && self.session.timeout_ms <= c.leader_heartbeat_interval_ms
        {
            return Err(bad(
                "session.timeout_ms",
                self.session.timeout_ms,
                format!(
                    "0 (never) or above consensus.leader_heartbeat_interval_ms ({})",
                    c.leader_heartbeat_interval_ms
                ),
            ));
        }
        Ok(())
    }
}

/// Builds a [`Config`] in code; `build` validates it.
pub struct ConfigBuilder {
    config: Config,
}

impl ConfigBuilder {
    pub fn cluster_id(mut self, id: u32) -> Self {
        self.config.cluster.id = id;
        self
    }
    pub fn durability(mut self, durability: Durability) -> Self {
        self.config.log.durability = durability.to_string();
        self
    }
    pub fn segment_mib(mut self, mib: u64) -> Self {
        self.config.log.segment_mib = mib;
        self
    }
    /// Close sessions silent for `ms` (0: never).
    pub fn session_timeout_ms(mut self, ms: u64) -> Self {
        self.config.session.timeout_ms = ms;
        self
    }
    /// Snapshot every `kib` KiB of log (0: only on request).
    pub fn snapshot_interval_kib(mut self, kib: u64) -> Self {
        self.config.snapshot.interval_kib = kib;
        self
    }
    pub fn threading(mut self, mode: ThreadingMode) -> Self {
        self.config.runtime.threading = match mode {
            ThreadingMode::Shared => "shared".into(),
            ThreadingMode::Dedicated => "dedicated".into(),
        };
        self
    }
    pub fn idle(mut self, strategy: IdleStrategy) -> Self {
        self.config.runtime.idle = strategy.name().into();
        self
    }
    pub fn timeouts_ms(
        mut self,
        heartbeat_interval: u64,
        heartbeat_timeout: u64,
        election: u64,
    ) -> Self {
        self.config.consensus.leader_heartbeat_interval_ms = heartbeat_interval;
        self.config.consensus.leader_heartbeat_timeout_ms = heartbeat_timeout;
        self.config.consensus.election_timeout_ms = election;
        self.config.consensus.startup_canvass_timeout_ms = election.max(
            self.config
                .consensus
                .startup_canvass_timeout_ms
                .min(election * 3),
        );
        self
    }
    pub fn appointed_leader(mut self, leader: Option<u32>) -> Self {
        self.config.consensus.appointed_leader = leader;
        self
    }
    pub fn max_datagram_bytes(mut self, bytes: usize) -> Self {
        self.config.transport.max_datagram_bytes = bytes;
        self
    }
    /// Members reach each other over shared-memory rings in `dir` (all on one host).
    pub fn ipc(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.transport.members = "ipc".into();
        self.config.transport.ipc_dir = Some(dir.into());
        self
    }
    pub fn build(self) -> Result<Config, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [cluster]
        id = 7
        members = ["127.0.0.1:20001", "127.0.0.1:20002", "localhost:20003"]
        [node]
        id = 1
        log_dir = "/tmp/raftline-1"
        [log]
        durability = "none"
        [runtime]
        idle = "backoff"
    "#;

    #[test]
    fn toml_form_parses_with_defaults() {
        let c = Config::from_toml(GOOD, "node.toml").unwrap();
        assert_eq!(c.cluster.id, 7);
        assert_eq!(c.durability().unwrap(), Durability::None);
        assert_eq!(c.consensus.election_timeout_ms, 1000);
        assert_eq!(c.transport.max_datagram_bytes, 1472);
        assert_eq!(c.resolve_members().unwrap().len(), 3);
    }

    #[test]
    fn errors_name_the_key() {
        let unknown = GOOD.replace("[runtime]", "[runtime]\nspin_harder = true");
        let err = Config::from_toml(&unknown, "node.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spin_harder") && err.contains("node.toml"),
            "{err}"
        );

        let bad_id = GOOD.replace("id = 1", "id = 5");
        let err = Config::from_toml(&bad_id, "node.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("node.id = 5") && err.contains("0..3"), "{err}");

        let bad_idle = GOOD.replace("\"backoff\"", "\"nap\"");
        let err = Config::from_toml(&bad_idle, "node.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("runtime.idle = nap"), "{err}");

        let bad_segment = GOOD.replace("durability = \"none\"", "segment_mib = 0");
        let err = Config::from_toml(&bad_segment, "node.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("log.segment_mib = 0"), "{err}");

        let bad_member = GOOD.replace("localhost:20003", "localhost");
        let err = Config::from_toml(&bad_member, "node.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cluster.members[2]"), "{err}");

        let bad_transport = GOOD.replace("[runtime]", "[transport]\nmembers = \"tcp\"\n[runtime]");
        let err = Config::from_toml(&bad_transport, "node.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("transport.members = tcp") && err.contains("ipc"),
            "{err}"
        );
        let bad_ring = GOOD.replace("[runtime]", "[transport]\nipc_ring_kib = 100\n[runtime]");
        let err = Config::from_toml(&bad_ring, "node.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("transport.ipc_ring_kib = 100"), "{err}");
    }

    fn refusal(text: &str) -> String {
        Config::from_toml(text, "node.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn timeouts_and_sizes_are_named_as_the_user_wrote_them() {
        let err = refusal(&GOOD.replace(
            "[runtime]",
            "[consensus]\nleader_heartbeat_timeout_ms = 100\n[runtime]",
        ));
        assert!(
            err.contains("consensus.leader_heartbeat_timeout_ms = 100")
                && err.contains("leader_heartbeat_interval_ms (200)"),
            "{err}"
        );
        let err = refusal(&GOOD.replace(
            "[runtime]",
            "[consensus]\nelection_timeout_ms = 0\n[runtime]",
        ));
        assert!(err.contains("consensus.election_timeout_ms = 0"), "{err}");
        let err = refusal(&GOOD.replace(
            "[runtime]",
            "[consensus]\nstartup_canvass_timeout_ms = 99999999\n[runtime]",
        ));
        assert!(
            err.contains("consensus.startup_canvass_timeout_ms"),
            "{err}"
        );
        let err = refusal(&GOOD.replace("durability = \"none\"", "write_kib = 3"));
        assert!(err.contains("log.write_kib = 3"), "{err}");
        let err = refusal(&GOOD.replace(
            "[runtime]",
            "[session]\nmax_message_bytes = 10000000\n[runtime]",
        ));
        assert!(
            err.contains("session.max_message_bytes = 10000000") && err.contains("log.write_kib"),
            "{err}"
        );
        let err = refusal(&GOOD.replace(
            "[runtime]",
            "[session]\nmax_sessions = 10\nmax_sessions_per_source = 11\n[runtime]",
        ));
        assert!(
            err.contains("session.max_sessions_per_source = 11"),
            "{err}"
        );
    }

    #[test]
    fn members_need_their_own_fixed_addresses() {
        let err = refusal(&GOOD.replace("127.0.0.1:20002", "127.0.0.1:20001"));
        assert!(
            err.contains("cluster.members[1] = 127.0.0.1:20001")
                && err.contains("cluster.members[0] is the same"),
            "{err}"
        );
        let err = refusal(&GOOD.replace("127.0.0.1:20002", "127.0.0.1:0"));
        assert!(
            err.contains("cluster.members[1] = 127.0.0.1:0") && err.contains("not 0"),
            "{err}"
        );
        // Two names for one address pass the text check and are caught once resolved.
        let localhost = "localhost:20003".to_socket_addrs().unwrap().next().unwrap();
        let twice = Config::from_toml(
            &GOOD.replace("127.0.0.1:20002", &localhost.to_string()),
            "node.toml",
        )
        .unwrap();
        let err = twice.resolve_members().unwrap_err().to_string();
        assert!(
            err.contains("cluster.members[2] = localhost:20003") && err.contains("both resolve to"),
            "{err}"
        );
    }

    #[test]
    fn the_toml_form_round_trips() {
        let c = Config::from_toml(GOOD, "node.toml").unwrap();
        assert_eq!(Config::from_toml(&c.to_toml(), "again.toml").unwrap(), c);
        let ipc = Config::builder(0, vec!["127.0.0.1:1".into()], "/tmp/x")
            .ipc("/dev/shm/x")
            .build()
            .unwrap();
        assert_eq!(Config::from_toml(&ipc.to_toml(), "ipc.toml").unwrap(), ipc);
    }

    #[test]
    fn builder_validates() {
        let members = vec![
            "127.0.0.1:1".to_string(),
            "127.0.0.1:2".to_string(),
            "127.0.0.1:3".to_string(),
        ];
        let c = Config::builder(2, members.clone(), "/tmp/x")
            .idle(IdleStrategy::BusySpin)
            .build()
            .unwrap();
        assert_eq!(
            c.idle_strategy().unwrap(),
            IdleStrategy::parse("busy-spin").unwrap()
        );
        assert!(Config::builder(3, members, "/tmp/x").build().is_err());
    }
}
