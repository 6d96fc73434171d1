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
//!
//! Config is the assembler above the layers it configures: it imports consensus, log, node,
//! access and auth and builds their settings (`consensus_config`, `log_config`, ...), and it
//! lives in `raftline`, not the core, because it reads files and the environment. Its files:
//! `sections` (the TOML as written), `validate` (what is allowed, named by the key the user
//! wrote), `secrets` (member key and tokens), `builder` (configs built in code).

mod builder;
mod secrets;
mod sections;
mod validate;

pub use builder::ConfigBuilder;
pub use sections::*;

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

    /// The session limits the node enforces.
    pub fn session_limits(&self) -> crate::node::SessionLimits {
        crate::node::SessionLimits {
            max_message_bytes: self.session.max_message_bytes.unwrap_or(usize::MAX),
            max_sessions: self.session.max_sessions,
            max_sessions_per_source: self.session.max_sessions_per_source,
        }
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
