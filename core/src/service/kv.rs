//! A key-value register service for fault tests: every key holds a u64, and clients read,
//! write and compare-and-set it. Replies carry the client's operation id, so a client can
//! match each reply to its request and record a history for a linearizability checker.
//!
//! ```text
//! request: [ op id u64 | kind u8 | key u64 | a u64 | b u64 ]      (33 bytes, little-endian)
//!          kind 1 read; 2 write a; 3 cas: if value == a then value = b
//! reply:   [ op id u64 | ok u8 | value u64 ]                        (17 bytes)
//!          read: the value (0 if never written); write: ok; cas: ok or not, with the value seen
//! ```
//!
//! A request that does not parse is answered with op id 0 and `ok = 0` (and changes nothing),
//! on every replica alike.

use std::collections::BTreeMap;

use super::{fnv1a, Context, Service, FNV_OFFSET};

/// What a client asks of the register service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvOp {
    Read { key: u64 },
    Write { key: u64, value: u64 },
    Cas { key: u64, expected: u64, new: u64 },
}

pub const REQUEST_LEN: usize = 33;
pub const REPLY_LEN: usize = 17;

impl KvOp {
    pub fn key(&self) -> u64 {
        match *self {
            KvOp::Read { key } | KvOp::Write { key, .. } | KvOp::Cas { key, .. } => key,
        }
    }

    /// The request payload for operation `id`.
    pub fn encode(&self, id: u64) -> [u8; REQUEST_LEN] {
        let (kind, key, a, b) = match *self {
            KvOp::Read { key } => (1u8, key, 0, 0),
            KvOp::Write { key, value } => (2, key, value, 0),
            KvOp::Cas { key, expected, new } => (3, key, expected, new),
        };
        let mut out = [0u8; REQUEST_LEN];
        out[..8].copy_from_slice(&id.to_le_bytes());
        out[8] = kind;
        out[9..17].copy_from_slice(&key.to_le_bytes());
        out[17..25].copy_from_slice(&a.to_le_bytes());
        out[25..33].copy_from_slice(&b.to_le_bytes());
        out
    }

    /// Parses a request into its op id and operation.
    pub fn decode(bytes: &[u8]) -> Option<(u64, KvOp)> {
        if bytes.len() != REQUEST_LEN {
            return None;
        }
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        let (key, a, b) = (word(9), word(17), word(25));
        let op = match bytes[8] {
            1 => KvOp::Read { key },
            2 => KvOp::Write { key, value: a },
            3 => KvOp::Cas {
                key,
                expected: a,
                new: b,
            },
            _ => return None,
        };
        Some((word(0), op))
    }
}

/// A reply: which operation, whether it took effect (cas), and the value it read or saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvReply {
    pub id: u64,
    pub ok: bool,
    pub value: u64,
}

impl KvReply {
    pub fn encode(&self) -> [u8; REPLY_LEN] {
        let mut out = [0u8; REPLY_LEN];
        out[..8].copy_from_slice(&self.id.to_le_bytes());
        out[8] = self.ok as u8;
        out[9..].copy_from_slice(&self.value.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != REPLY_LEN {
            return None;
        }
        Some(Self {
            id: u64::from_le_bytes(bytes[..8].try_into().ok()?),
            ok: bytes[8] == 1,
            value: u64::from_le_bytes(bytes[9..].try_into().ok()?),
        })
    }
}

/// The register service; see the module docs.
#[derive(Debug)]
pub struct KvService {
    values: BTreeMap<u64, u64>,
    digest: u64,
}

impl Default for KvService {
    fn default() -> Self {
        Self {
            values: BTreeMap::new(),
            digest: FNV_OFFSET,
        }
    }
}

impl KvService {
    pub fn get(&self, key: u64) -> u64 {
        self.values.get(&key).copied().unwrap_or(0)
    }
}

impl Service for KvService {
    fn on_message(&mut self, ctx: &mut Context, session_id: u64, payload: &[u8]) {
        let Some((id, op)) = KvOp::decode(payload) else {
            let reply = KvReply {
                id: 0,
                ok: false,
                value: 0,
            };
            ctx.send(session_id, &reply.encode());
            return;
        };
        let current = self.get(op.key());
        let (ok, value) = match op {
            KvOp::Read { .. } => (true, current),
            KvOp::Write { key, value } => {
                self.values.insert(key, value);
                (true, value)
            }
            KvOp::Cas { key, expected, new } => {
                if current == expected {
                    self.values.insert(key, new);
                    (true, new)
                } else {
                    (false, current)
                }
            }
        };
        if !matches!(op, KvOp::Read { .. }) {
            self.digest = fnv1a(self.digest, &op.encode(0));
            self.digest = fnv1a(self.digest, &[ok as u8]);
        }
        ctx.send(session_id, &KvReply { id, ok, value }.encode());
    }

    fn digest(&self) -> u64 {
        self.digest
    }

    /// `[digest u64 | count u64 | (key u64, value u64) * count]`
    fn on_take_snapshot(&mut self, _position: u64, out: &mut Vec<u8>) -> bool {
        out.extend_from_slice(&self.digest.to_le_bytes());
        out.extend_from_slice(&(self.values.len() as u64).to_le_bytes());
        for (k, v) in &self.values {
            out.extend_from_slice(&k.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        true
    }

    fn on_start(&mut self, snapshot: Option<&[u8]>) -> Result<(), String> {
        let Some(bytes) = snapshot else {
            return Ok(());
        };
        let words: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let count = *words.get(1).ok_or("kv snapshot: no header")? as usize;
        if bytes.len() % 8 != 0 || words.len() != 2 + 2 * count {
            return Err(format!(
                "kv snapshot: {} bytes for {count} registers",
                bytes.len()
            ));
        }
        self.digest = words[0];
        self.values = words[2..].chunks_exact(2).map(|p| (p[0], p[1])).collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_restores_every_register_and_the_digest() {
        let mut kv = KvService::default();
        let mut ctx = Context::default();
        for (i, op) in [
            KvOp::Write { key: 1, value: 10 },
            KvOp::Write { key: 7, value: 70 },
            KvOp::Cas {
                key: 1,
                expected: 10,
                new: 11,
            },
        ]
        .iter()
        .enumerate()
        {
            kv.on_message(&mut ctx, 1, &op.encode(i as u64));
        }
        let mut bytes = Vec::new();
        assert!(kv.on_take_snapshot(0, &mut bytes));
        let mut restored = KvService::default();
        restored.on_start(Some(&bytes)).unwrap();
        assert_eq!((restored.get(1), restored.get(7)), (11, 70));
        assert_eq!(restored.digest(), kv.digest());
        assert!(restored.on_start(Some(&bytes[..bytes.len() - 8])).is_err());
    }

    #[test]
    fn requests_and_replies_round_trip_and_junk_is_refused() {
        for op in [
            KvOp::Read { key: 3 },
            KvOp::Write { key: 3, value: 9 },
            KvOp::Cas {
                key: 3,
                expected: 9,
                new: 10,
            },
        ] {
            assert_eq!(KvOp::decode(&op.encode(77)), Some((77, op)));
        }
        assert_eq!(KvOp::decode(b"short"), None);
        let mut bad = KvOp::Read { key: 1 }.encode(1);
        bad[8] = 9;
        assert_eq!(KvOp::decode(&bad), None);
        let r = KvReply {
            id: 5,
            ok: true,
            value: 8,
        };
        assert_eq!(KvReply::decode(&r.encode()), Some(r));
    }

    #[test]
    fn registers_read_write_and_compare_and_set() {
        let mut kv = KvService::default();
        let mut ctx = Context::default();
        let mut apply = |kv: &mut KvService, id: u64, op: KvOp| {
            kv.on_message(&mut ctx, 1, &op.encode(id));
            let (_, reply) = ctx.egress.pop().expect("a reply");
            KvReply::decode(&reply).unwrap()
        };
        assert_eq!(apply(&mut kv, 1, KvOp::Read { key: 4 }).value, 0);
        assert!(apply(&mut kv, 2, KvOp::Write { key: 4, value: 7 }).ok);
        let failed = apply(
            &mut kv,
            3,
            KvOp::Cas {
                key: 4,
                expected: 1,
                new: 2,
            },
        );
        assert_eq!((failed.ok, failed.value), (false, 7));
        let done = apply(
            &mut kv,
            4,
            KvOp::Cas {
                key: 4,
                expected: 7,
                new: 8,
            },
        );
        assert_eq!((done.id, done.ok, done.value), (4, true, 8));
        assert_eq!(kv.get(4), 8);
    }
}
