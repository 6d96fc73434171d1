//! Building a config in code (tests, benchmarks, embedding applications), validated at the end
//! like one read from a file.

use super::*;

/// Builds a [`Config`] in code; `build` validates it.
pub struct ConfigBuilder {
    pub(super) config: Config,
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
