//! The sections of a node's TOML file, as the user writes them, with their defaults. Plain
//! data: what the values mean and whether they are allowed is `Config`'s to say.

use super::*;

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
