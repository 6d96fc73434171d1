//! Whether a config is allowed: every value in range, named by the TOML key the user wrote,
//! members distinct and this node's address its own. It never changes a value.

use super::*;

impl Config {
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

    pub(super) fn validate_log(&self) -> Result<(), ConfigError> {
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
    pub(super) fn validate_timeouts(&self) -> Result<(), ConfigError> {
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
