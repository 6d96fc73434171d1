//! Member authentication over the [`Datagrams`] seam: every frame a member sends another is
//! sealed with a MAC under the cluster's member key, and nothing from a member's address is
//! believed until its seal checks out.
//!
//! A sealed unit is one frame of type [`FrameType::Sealed`] wrapping what one `send` carried:
//!
//! ```text
//! payload: sender u32 | receiver u32 | epoch u64 | sequence u64 | tag [16] | inner frames
//! tag:     keyed BLAKE3 (first 16 bytes) over everything in the payload but the tag
//! ```
//!
//! The receiver checks the tag (under the current key, or the previous one during a
//! rotation), that the sender is the member the transport says it came from and the receiver
//! is this member, and then a replay window: per sender, the newest epoch (the sender's start
//! time, so a restarted member starts a new one) and the last 64 sequence numbers of it. A
//! stranger cannot make a seal without the key; a replayed seal is refused. Client traffic
//! (endpoints from [`CLIENT_ENDPOINT_BASE`]) passes through unchanged: clients are not
//! members.
//!
//! This authenticates, it does not encrypt: a listener on the path still reads member
//! traffic. The cost is one keyed BLAKE3 per send and per receive (measured in BENCHMARKS.md).

#![forbid(unsafe_code)]

use crate::codec::{self, Decoded, FrameMeta, FrameType, Frames, FRAME_ALIGNMENT, HEADER_LEN};
use crate::io::{Datagrams, CLIENT_ENDPOINT_BASE};

/// Bytes a seal adds to what it wraps: a frame header and the seal's fields.
pub const SEAL_OVERHEAD: usize = HEADER_LEN + SEAL_FIELDS + FRAME_ALIGNMENT;
const SEAL_FIELDS: usize = 4 + 4 + 8 + 8 + TAG_LEN;
const TAG_LEN: usize = 16;

/// A 32-byte member key.
#[derive(Clone, PartialEq, Eq)]
pub struct MemberKey([u8; 32]);

impl std::fmt::Debug for MemberKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemberKey(..)") // never logged
    }
}

impl MemberKey {
    /// From 64 hexadecimal digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(format!(
                "a member key is 64 hexadecimal digits (32 bytes), not {} characters",
                text.len()
            ));
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|_| "a member key is hexadecimal digits only".to_string())?;
        }
        Ok(Self(key))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

/// What a receiver refused, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthStats {
    pub sealed: u64,
    pub opened: u64,
    /// Member traffic without a seal, or with one that does not check out.
    pub unsealed_refused: u64,
    pub bad_tag: u64,
    /// A seal naming another sender than the transport's, or another receiver.
    pub misaddressed: u64,
    pub replayed: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Window {
    epoch: u64,
    high: u64,
    /// Bit i: sequence `high - i` was seen.
    seen: u64,
}

impl Window {
    /// Whether (epoch, sequence) is new; records it if so.
    fn admit(&mut self, epoch: u64, sequence: u64) -> bool {
        if epoch < self.epoch {
            return false;
        }
        if epoch > self.epoch || self.seen == 0 {
            *self = Window {
                epoch,
                high: sequence,
                seen: 1,
            };
            return true;
        }
        if sequence > self.high {
            let shift = sequence - self.high;
            self.seen = if shift >= 64 { 0 } else { self.seen << shift } | 1;
            self.high = sequence;
            return true;
        }
        let back = self.high - sequence;
        if back >= 64 || self.seen & (1 << back) != 0 {
            return false;
        }
        self.seen |= 1 << back;
        true
    }
}

/// Seals and opens member traffic; see the module docs.
pub struct Sealer {
    me: u32,
    /// The key seals are made with, and every key accepted (the current one first).
    keys: Vec<MemberKey>,
    epoch: u64,
    sequence: u64,
    windows: Vec<Window>,
    stats: AuthStats,
}

impl Sealer {
    /// `keys[0]` seals; all of `keys` are accepted (two during a rotation). `epoch` must grow
    /// across restarts of this member (its start time in nanoseconds).
    pub fn new(me: u32, members: u32, keys: Vec<MemberKey>, epoch: u64) -> Self {
        assert!(!keys.is_empty(), "a sealer needs a key");
        Self {
            me,
            keys,
            epoch,
            sequence: 0,
            windows: vec![Window::default(); members as usize],
            stats: AuthStats::default(),
        }
    }

    pub fn stats(&self) -> AuthStats {
        self.stats
    }

    fn tag(key: &MemberKey, fields: &[u8], inner: &[u8]) -> [u8; TAG_LEN] {
        let mut hasher = blake3::Hasher::new_keyed(&key.0);
        hasher.update(fields);
        hasher.update(inner);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&hasher.finalize().as_bytes()[..TAG_LEN]);
        tag
    }

    /// Writes `inner` to `to`, sealed, into `out`; returns the bytes used.
    pub fn seal(&mut self, to: u32, inner: &[u8], out: &mut Vec<u8>) -> usize {
        self.sequence += 1;
        let mut fields = [0u8; SEAL_FIELDS - TAG_LEN];
        fields[0..4].copy_from_slice(&self.me.to_le_bytes());
        fields[4..8].copy_from_slice(&to.to_le_bytes());
        fields[8..16].copy_from_slice(&self.epoch.to_le_bytes());
        fields[16..24].copy_from_slice(&self.sequence.to_le_bytes());
        let tag = Self::tag(&self.keys[0], &fields, inner);
        let meta = FrameMeta {
            frame_type: FrameType::Sealed as u16,
            ..FrameMeta::default()
        };
        out.resize(codec::encoded_len(SEAL_FIELDS + inner.len()), 0);
        self.stats.sealed += 1;
        codec::encode_with(&meta, SEAL_FIELDS + inner.len(), out, |dst| {
            dst[..fields.len()].copy_from_slice(&fields);
            dst[fields.len()..SEAL_FIELDS].copy_from_slice(&tag);
            dst[SEAL_FIELDS..].copy_from_slice(inner);
        })
    }

    /// Opens every sealed frame of a datagram from member `from`, appending what they carry
    /// (whole frames, each padded to the frame alignment) to `out`. What fails is counted
    /// and dropped.
    pub fn open(&mut self, from: u32, datagram: &[u8], out: &mut Vec<u8>) {
        for item in Frames::new(datagram) {
            let Ok((_, frame)) = item else {
                self.stats.unsealed_refused += 1;
                return;
            };
            if frame.meta.frame_type != FrameType::Sealed as u16
                || frame.payload.len() < SEAL_FIELDS
            {
                self.stats.unsealed_refused += 1;
                continue;
            }
            let (fields, rest) = frame.payload.split_at(SEAL_FIELDS - TAG_LEN);
            let (tag, inner) = rest.split_at(TAG_LEN);
            // Every byte is compared whatever differs (no early exit), so the time taken
            // does not tell a forger how much of a guessed tag was right.
            let good = self.keys.iter().any(|key| {
                let want = Self::tag(key, fields, inner);
                want.iter().zip(tag).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
            });
            if !good {
                self.stats.bad_tag += 1;
                continue;
            }
            let word = |i: usize| u64::from_le_bytes(fields[i..i + 8].try_into().expect("8"));
            let sender = u32::from_le_bytes(fields[0..4].try_into().expect("4"));
            let receiver = u32::from_le_bytes(fields[4..8].try_into().expect("4"));
            if sender != from || receiver != self.me || sender as usize >= self.windows.len() {
                self.stats.misaddressed += 1;
                continue;
            }
            if !self.windows[sender as usize].admit(word(8), word(16)) {
                self.stats.replayed += 1;
                continue;
            }
            self.stats.opened += 1;
            out.extend_from_slice(inner);
            out.resize(codec::align_frame(out.len()), 0);
        }
    }
}

/// A [`Datagrams`] that seals what it sends to members and opens what members send it; with
/// no sealer, member traffic passes as it is (an unauthenticated cluster).
pub struct Authenticated<N: Datagrams> {
    inner: N,
    sealer: Option<Sealer>,
    buf: Vec<u8>,
    opened: Vec<u8>,
}

impl<N: Datagrams> Authenticated<N> {
    pub fn new(inner: N, sealer: Option<Sealer>) -> Self {
        Self {
            inner,
            sealer,
            buf: Vec::new(),
            opened: Vec::new(),
        }
    }

    pub fn inner(&self) -> &N {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut N {
        &mut self.inner
    }

    pub fn stats(&self) -> Option<AuthStats> {
        self.sealer.as_ref().map(Sealer::stats)
    }
}

impl<N: Datagrams> Datagrams for Authenticated<N> {
    fn send(&mut self, to: u32, bytes: &[u8]) -> bool {
        match &mut self.sealer {
            Some(sealer) if to < CLIENT_ENDPOINT_BASE => {
                let mut buf = std::mem::take(&mut self.buf);
                let len = sealer.seal(to, bytes, &mut buf);
                let sent = self.inner.send(to, &buf[..len]);
                self.buf = buf;
                sent
            }
            _ => self.inner.send(to, bytes),
        }
    }

    fn receive(&mut self, buf: &mut [u8]) -> Option<(u32, usize)> {
        loop {
            let (from, n) = self.inner.receive(buf)?;
            let Some(sealer) = &mut self.sealer else {
                return Some((from, n));
            };
            if from >= CLIENT_ENDPOINT_BASE {
                return Some((from, n));
            }
            let mut opened = std::mem::take(&mut self.opened);
            opened.clear();
            sealer.open(from, &buf[..n], &mut opened);
            let len = opened.len();
            let fits = len > 0 && len <= buf.len();
            if fits {
                buf[..len].copy_from_slice(&opened);
            }
            self.opened = opened;
            if fits {
                return Some((from, len));
            }
        }
    }

    fn flush(&mut self) {
        self.inner.flush();
    }

    fn max_payload(&self) -> usize {
        let inner = self.inner.max_payload();
        if self.sealer.is_some() {
            inner.saturating_sub(SEAL_OVERHEAD)
        } else {
            inner
        }
    }
}

/// Whether `bytes` begin with a sealed frame (for diagnostics).
pub fn is_sealed(bytes: &[u8]) -> bool {
    matches!(codec::decode(bytes), Ok(Decoded::Frame(f, _)) if f.meta.frame_type == FrameType::Sealed as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Message;
    use crate::sim::net::SimEndpoint;
    use proptest::prelude::*;

    fn key(b: u8) -> MemberKey {
        MemberKey::from_bytes([b; 32])
    }

    fn frame(message: &Message<'_>) -> Vec<u8> {
        let mut out = vec![0u8; 1024];
        let n = message.encode(FrameMeta::default(), &mut out);
        out.truncate(n);
        out
    }

    fn ping(term: u64) -> Vec<u8> {
        frame(&Message::CommitPosition(
            crate::codec::message::CommitPosition {
                leadership_term_id: term,
                log_position: 0,
                leader_member_id: 0,
            },
        ))
    }

    /// Member 0 sends to member 1 through a sealer each; returns what member 1 receives.
    fn deliver(a: &mut Sealer, b: &mut Sealer, from: u32, bytes: &[u8]) -> Vec<u8> {
        let mut sealed = Vec::new();
        let n = a.seal(1, bytes, &mut sealed);
        let mut out = Vec::new();
        b.open(from, &sealed[..n], &mut out);
        out
    }

    #[test]
    fn a_sealed_frame_opens_to_what_was_sent_and_only_once() {
        let (mut a, mut b) = (
            Sealer::new(0, 3, vec![key(7)], 1),
            Sealer::new(1, 3, vec![key(7)], 1),
        );
        let bytes = ping(5);
        let mut sealed = Vec::new();
        let n = a.seal(1, &bytes, &mut sealed);
        let mut out = Vec::new();
        b.open(0, &sealed[..n], &mut out);
        assert_eq!(out, bytes);
        out.clear();
        b.open(0, &sealed[..n], &mut out);
        assert!(out.is_empty(), "a replay is refused");
        assert_eq!(b.stats().replayed, 1);
    }

    #[test]
    fn strangers_wrong_keys_and_misaddressed_seals_are_refused() {
        let mut b = Sealer::new(1, 3, vec![key(7)], 1);
        let mut out = Vec::new();
        b.open(0, &ping(5), &mut out);
        assert_eq!(b.stats().unsealed_refused, 1, "an unsealed frame");
        let mut stranger = Sealer::new(0, 3, vec![key(8)], 1);
        assert!(deliver(&mut stranger, &mut b, 0, &ping(5)).is_empty());
        assert_eq!(b.stats().bad_tag, 1, "a seal under another key");
        let mut member2 = Sealer::new(2, 3, vec![key(7)], 1);
        assert!(deliver(&mut member2, &mut b, 0, &ping(5)).is_empty());
        assert_eq!(
            b.stats().misaddressed,
            1,
            "member 2's seal from member 0's address"
        );
        assert!(out.is_empty());
    }

    #[test]
    fn during_a_rotation_both_keys_open_and_the_new_one_seals() {
        let mut old = Sealer::new(0, 3, vec![key(1)], 1);
        let mut rotating = Sealer::new(1, 3, vec![key(2), key(1)], 1);
        assert_eq!(deliver(&mut old, &mut rotating, 0, &ping(1)), ping(1));
        let mut new = Sealer::new(0, 3, vec![key(2)], 2);
        assert_eq!(deliver(&mut new, &mut rotating, 0, &ping(2)), ping(2));
    }

    #[test]
    fn a_restarted_sender_starts_a_new_epoch_and_old_epochs_are_refused() {
        let mut b = Sealer::new(1, 3, vec![key(7)], 1);
        let mut first = Sealer::new(0, 3, vec![key(7)], 10);
        assert!(!deliver(&mut first, &mut b, 0, &ping(1)).is_empty());
        let mut restarted = Sealer::new(0, 3, vec![key(7)], 20);
        assert!(!deliver(&mut restarted, &mut b, 0, &ping(1)).is_empty());
        assert!(deliver(&mut first, &mut b, 0, &ping(1)).is_empty());
    }

    #[test]
    fn the_wrapper_passes_clients_and_unwraps_members() {
        let mut net = Authenticated::new(
            SimEndpoint::default(),
            Some(Sealer::new(1, 3, vec![key(7)], 1)),
        );
        let mut peer = Sealer::new(0, 3, vec![key(7)], 1);
        let mut sealed = Vec::new();
        let n = peer.seal(1, &ping(3), &mut sealed);
        net.inner_mut().deliver(0, sealed[..n].to_vec());
        net.inner_mut().deliver(0, ping(4));
        net.inner_mut()
            .deliver(CLIENT_ENDPOINT_BASE, b"client".to_vec());
        let mut buf = vec![0u8; 2048];
        assert_eq!(net.receive(&mut buf), Some((0, ping(3).len())));
        // The unsealed member datagram is dropped; the client's passes.
        assert_eq!(net.receive(&mut buf), Some((CLIENT_ENDPOINT_BASE, 6)));
        assert_eq!(net.receive(&mut buf), None);
        net.send(2, &ping(5));
        assert!(is_sealed(&net.inner().outgoing[0].1));
    }

    proptest! {
        /// Any bytes from a member's address: never a panic, nothing accepted without a seal.
        #[test]
        fn arbitrary_bytes_never_open(bytes: Vec<u8>, from in 0u32..4) {
            let mut b = Sealer::new(1, 3, vec![key(7)], 1);
            let mut out = Vec::new();
            b.open(from, &bytes, &mut out);
            prop_assert!(out.is_empty());
        }

        /// Any replay order of one sender's seals: each opens at most once.
        #[test]
        fn each_seal_opens_at_most_once(order in proptest::collection::vec(0usize..80, 1..300)) {
            let mut a = Sealer::new(0, 3, vec![key(7)], 1);
            let mut b = Sealer::new(1, 3, vec![key(7)], 1);
            let seals: Vec<Vec<u8>> = (0..80).map(|i| {
                let mut s = Vec::new();
                let n = a.seal(1, &ping(i), &mut s);
                s.truncate(n);
                s
            }).collect();
            let mut opened = vec![0u32; 80];
            for i in order {
                let mut out = Vec::new();
                b.open(0, &seals[i], &mut out);
                if !out.is_empty() {
                    opened[i] += 1;
                }
            }
            prop_assert!(opened.iter().all(|&n| n <= 1));
        }
    }
}
