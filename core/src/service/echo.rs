//! A small service for examples, tests and benchmarks: echoes every message back to its
//! session and keeps a digest of everything it applied.

use super::{fnv1a, Context, Service, FNV_OFFSET};

/// Echoes each payload to its session; the digest covers sessions, payloads and log times.
#[derive(Debug)]
pub struct EchoService {
    digest: u64,
    messages: u64,
    /// Messages applied by this instance (not counting those in the snapshot it started from).
    messages_since_start: u64,
    role: Option<crate::consensus::Role>,
    terminated: bool,
}

impl Default for EchoService {
    fn default() -> Self {
        Self {
            digest: FNV_OFFSET,
            messages: 0,
            messages_since_start: 0,
            role: None,
            terminated: false,
        }
    }
}

impl EchoService {
    pub fn messages(&self) -> u64 {
        self.messages
    }
    /// Messages this instance applied itself, after the snapshot it started from.
    pub fn messages_since_start(&self) -> u64 {
        self.messages_since_start
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
        self.messages_since_start += 1;
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

    /// `[digest u64 | messages u64]`
    fn on_take_snapshot(&mut self, _position: u64, out: &mut Vec<u8>) -> bool {
        out.extend_from_slice(&self.digest.to_le_bytes());
        out.extend_from_slice(&self.messages.to_le_bytes());
        true
    }

    fn on_start(&mut self, snapshot: Option<&[u8]>) -> Result<(), String> {
        let Some(bytes) = snapshot else {
            return Ok(());
        };
        let [digest, messages] = [0, 8].map(|at| {
            bytes
                .get(at..at + 8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        });
        match (digest, messages, bytes.len()) {
            (Some(d), Some(m), 16) => {
                self.digest = d;
                self.messages = m;
                Ok(())
            }
            _ => Err(format!("echo snapshot: {} bytes, expected 16", bytes.len())),
        }
    }
}
