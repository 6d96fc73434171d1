//! A small service for examples, tests and benchmarks: echoes every message back to its
//! session and keeps a digest of everything it applied.

use super::{fnv1a, Context, Service, FNV_OFFSET};

/// Echoes each payload to its session; the digest covers sessions, payloads and log times.
#[derive(Debug)]
pub struct EchoService {
    digest: u64,
    messages: u64,
    role: Option<crate::consensus::Role>,
    terminated: bool,
}

impl Default for EchoService {
    fn default() -> Self {
        Self {
            digest: FNV_OFFSET,
            messages: 0,
            role: None,
            terminated: false,
        }
    }
}

impl EchoService {
    pub fn messages(&self) -> u64 {
        self.messages
    }
    /// The last role this replica was told about.
    pub fn role(&self) -> Option<crate::consensus::Role> {
        self.role
    }
    pub fn terminated(&self) -> bool {
        self.terminated
    }
}

impl Service for EchoService {
    fn on_message(&mut self, ctx: &mut Context, session_id: u64, payload: &[u8]) {
        self.messages += 1;
        self.digest = fnv1a(fnv1a(self.digest, &session_id.to_le_bytes()), payload);
        self.digest = fnv1a(self.digest, &ctx.timestamp_ns.to_le_bytes());
        ctx.send(session_id, payload);
    }

    fn on_role_change(&mut self, role: crate::consensus::Role) {
        self.role = Some(role);
    }

    fn on_terminate(&mut self) {
        self.terminated = true;
    }

    fn digest(&self) -> u64 {
        self.digest
    }
}
