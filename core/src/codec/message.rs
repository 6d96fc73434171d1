//! Message types carried in frames: the log's own frames and the consensus protocol.
//!
//! Every message is one frame (see [`super::frame`]): the frame type names the message, the body
//! is a fixed little-endian layout, and a few messages carry variable bytes after the body
//! (client payload, replicated log bytes). Bodies are decoded with an exact length check, so a
//! frame whose body is too short or too long is rejected as [`DecodeError::BadLength`].
//!
//! Field names follow Aeron Cluster's protocol so the two are easy to compare.

use super::frame::{self, Frame, FrameMeta};
use super::DecodeError;

/// Frame types. Values below 16 appear in the log; 16 and above travel between members only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum FrameType {
    /// Fills the rest of a log segment so that no frame straddles two segment files.
    Padding = 1,
    SessionMessage = 2,
    SessionOpen = 3,
    SessionClose = 4,
    TimerEvent = 5,
    NewLeadershipTermEvent = 6,
    /// An action for every replica at this log position: take a snapshot, or check a digest.
    ClusterAction = 7,
    CanvassPosition = 16,
    RequestVote = 17,
    Vote = 18,
    NewLeadershipTerm = 19,
    AppendPosition = 20,
    CommitPosition = 21,
    CatchupPosition = 22,
    StopCatchup = 23,
    AppendData = 24,
    /// The leader hands over: the named follower, fully caught up, starts an election now.
    ElectNow = 25,
    /// Leader → follower behind the leader's purged log: a chunk of a snapshot file.
    InstallSnapshot = 26,
    /// Follower → leader: the snapshot bytes received so far.
    InstallAck = 27,
    /// Member → member: the settings that must agree across the cluster (see
    /// [`MemberSettings`]).
    MemberSettings = 28,
    /// Client → cluster: open a session (the client picks the session id).
    ClientConnect = 32,
    /// Cluster → client: the session opened, a message was applied, or a redirect.
    ClientEvent = 33,
    /// Cluster → client: a payload the service sent to the session.
    EgressMessage = 34,
    /// Operator → member: describe, snapshot, step down, transfer leadership, shut down.
    AdminRequest = 35,
    /// Member → operator: the answer, with the member's state.
    AdminResponse = 36,
    /// Member → member: other frames, with a MAC under the member key (see `auth`).
    Sealed = 48,
    /// Client → cluster: the session is alive (sent when the client has nothing else to send).
    SessionKeepAlive = 37,
}

impl FrameType {
    pub fn from_u16(value: u16) -> Option<Self> {
        use FrameType::*;
        Some(match value {
            1 => Padding,
            2 => SessionMessage,
            3 => SessionOpen,
            4 => SessionClose,
            5 => TimerEvent,
            6 => NewLeadershipTermEvent,
            7 => ClusterAction,
            16 => CanvassPosition,
            17 => RequestVote,
            18 => Vote,
            19 => NewLeadershipTerm,
            20 => AppendPosition,
            21 => CommitPosition,
            22 => CatchupPosition,
            23 => StopCatchup,
            24 => AppendData,
            25 => ElectNow,
            26 => InstallSnapshot,
            27 => InstallAck,
            28 => MemberSettings,
            32 => ClientConnect,
            33 => ClientEvent,
            34 => EgressMessage,
            35 => AdminRequest,
            36 => AdminResponse,
            37 => SessionKeepAlive,
            48 => Sealed,
            _ => return None,
        })
    }
}

/// A fixed-width little-endian field.
trait Wire: Sized + Copy {
    const LEN: usize;
    fn put(self, out: &mut [u8]);
    fn get(bytes: &[u8]) -> Self;
}

macro_rules! wire_int {
    ($($t:ty),*) => {$(
        impl Wire for $t {
            const LEN: usize = core::mem::size_of::<$t>();
            fn put(self, out: &mut [u8]) {
                out[..Self::LEN].copy_from_slice(&self.to_le_bytes());
            }
            fn get(bytes: &[u8]) -> Self {
                let mut raw = [0u8; core::mem::size_of::<$t>()];
                raw.copy_from_slice(&bytes[..Self::LEN]);
                <$t>::from_le_bytes(raw)
            }
        }
    )*};
}
wire_int!(u8, u32, u64);

impl Wire for bool {
    const LEN: usize = 1;
    fn put(self, out: &mut [u8]) {
        out[0] = self as u8;
    }
    fn get(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
}

/// Defines a fixed-layout message body: a plain struct, its encoded length, and exact
/// little-endian encode/decode in field order.
macro_rules! body {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name { $($(#[$fm])* pub $field: $t),* }

        impl $name {
            /// Encoded length of the body in bytes.
            pub const LEN: usize = 0 $(+ <$t as Wire>::LEN)*;

            fn put(&self, out: &mut [u8]) {
                let mut _at = 0;
                $( Wire::put(self.$field, &mut out[_at..]); _at += <$t as Wire>::LEN; )*
            }

            /// Decodes the body from the front of `bytes`; the rest is returned untouched.
            fn take(bytes: &[u8]) -> Result<(Self, &[u8]), DecodeError> {
                if bytes.len() < Self::LEN {
                    return Err(DecodeError::BadLength { length: bytes.len() });
                }
                let mut _at = 0;
                $( let $field = <$t as Wire>::get(&bytes[_at..]); _at += <$t as Wire>::LEN; )*
                Ok((Self { $($field),* }, &bytes[Self::LEN..]))
            }
        }
    };
}

body!(
    /// Body of a client's message: the client's sequence number for exactly-once delivery.
    SessionMessageHeader { sequence: u64 }
);
body!(
    /// A client asked to open a session; the leader assigned the frame's session id.
    SessionOpen { correlation_id: u64, client_id: u64 }
);
body!(
    /// A session ended. `reason` is one of [`CloseReason`] as u8.
    SessionClose { reason: u8 }
);
body!(
    /// A timer the service scheduled has fired; the frame's timestamp is the leader's time.
    TimerEvent { correlation_id: u64 }
);
body!(
    /// A cluster action in the log; `kind` is one of [`ClusterActionKind`] as u8.
    /// - `Snapshot`: every replica takes a snapshot once it has applied this frame (the
    ///   snapshot's position is the end of this frame); `position` and `value` are 0.
    /// - `DigestCheck`: the leader's service digest was `value` at snapshot position
    ///   `position`; every replica that took that snapshot compares its own.
    ClusterAction { kind: u8, position: u64, value: u64 }
);

/// What a [`ClusterAction`] frame asks of every replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ClusterActionKind {
    Snapshot = 1,
    DigestCheck = 2,
    /// Take a snapshot, then stop (an orderly shutdown of the whole cluster).
    Shutdown = 3,
}

impl ClusterActionKind {
    pub fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Snapshot),
            2 => Some(Self::DigestCheck),
            3 => Some(Self::Shutdown),
            _ => None,
        }
    }
}

body!(
    /// Written at the start of every leadership term, so replay sees term changes in order.
    NewLeadershipTermEvent {
        leadership_term_id: u64,
        term_base_log_position: u64,
        leader_member_id: u32,
        member_count: u32,
    }
);
body!(
    /// Election step 1: members exchange their log positions before anyone nominates itself.
    CanvassPosition {
        log_leadership_term_id: u64,
        log_position: u64,
        leadership_term_id: u64,
        follower_member_id: u32,
    }
);
body!(
    /// A candidate asks for a vote for `candidate_term_id`.
    RequestVote {
        log_leadership_term_id: u64,
        log_position: u64,
        candidate_term_id: u64,
        candidate_member_id: u32,
    }
);
body!(
    /// The answer to [`RequestVote`]. `vote == false` is an explicit veto.
    Vote {
        candidate_term_id: u64,
        log_leadership_term_id: u64,
        log_position: u64,
        candidate_member_id: u32,
        follower_member_id: u32,
        vote: bool,
    }
);
body!(
    /// The leader announces its term and tells one follower how to reconcile its log.
    /// `log_leadership_term_id` is the last log term the follower reported; `matched_term_id`
    /// is the leader's greatest term not above it, which spans
    /// `[matched_term_start, matched_term_end)` in the leader's log. The follower keeps its log
    /// up to `matched_term_end` if its own last term is the matched one, and otherwise drops
    /// every term the leader does not have.
    NewLeadershipTerm {
        log_leadership_term_id: u64,
        matched_term_id: u64,
        matched_term_start: u64,
        matched_term_end: u64,
        leadership_term_id: u64,
        term_base_log_position: u64,
        log_position: u64,
        commit_position: u64,
        leader_member_id: u32,
        is_startup: bool,
    }
);
body!(
    /// A follower reports its durable position (`log_position`, which counts toward commit)
    /// and the end of what it has appended (where the leader resumes sending).
    AppendPosition {
        leadership_term_id: u64,
        log_position: u64,
        appended_position: u64,
        follower_member_id: u32,
        flags: u8,
    }
);
body!(
    /// The leader's commit position; goes out with every heartbeat.
    CommitPosition { leadership_term_id: u64, log_position: u64, leader_member_id: u32 }
);
body!(
    /// A lagging follower asks to be caught up from `log_position`.
    CatchupPosition { leadership_term_id: u64, log_position: u64, follower_member_id: u32 }
);
body!(
    /// The leader tells a follower that catch-up is complete and live replication follows.
    StopCatchup { leadership_term_id: u64, follower_member_id: u32 }
);
body!(
    /// The leader of `leadership_term_id` asks `candidate_member_id`, whose log matches its
    /// own, to start an election at once (a planned leadership transfer).
    ElectNow { leadership_term_id: u64, leader_member_id: u32, candidate_member_id: u32 }
);
body!(
    /// The settings that must agree on every member, as the sender holds them: its own id
    /// and the id it believes the receiver has (the member list's order), the member count,
    /// the segment size and the largest log frame. `heard_yours`: the sender already has the
    /// receiver's settings (otherwise the receiver answers with its own).
    MemberSettings {
        sender_member_id: u32,
        receiver_member_id: u32,
        member_count: u32,
        segment_bytes: u64,
        frame_len_max: u64,
        heard_yours: bool,
    }
);
body!(
    /// Header of a chunk of what a follower behind the leader's log start is sent:
    /// `total_len` bytes, of which the first `terms_len` are the leader's term index before
    /// `log_start` (`(term u64, start u64)` pairs) and the rest the snapshot file for
    /// `snapshot_position`; this chunk starts at `offset`. Once installed, the follower's log
    /// restarts empty at `log_start` (the leader's first position, a segment boundary).
    InstallSnapshotHeader {
        leadership_term_id: u64,
        snapshot_position: u64,
        log_start: u64,
        terms_len: u64,
        total_len: u64,
        offset: u64,
        leader_member_id: u32,
    }
);
body!(
    /// The follower has `received` bytes of the snapshot file for `snapshot_position`
    /// (`received == total` once installed).
    InstallAck {
        leadership_term_id: u64,
        snapshot_position: u64,
        received: u64,
        follower_member_id: u32,
    }
);
body!(
    /// An operator's command; `command` is one of [`AdminCommand`] as u8, `target` the member
    /// a transfer names.
    AdminRequest { correlation_id: u64, command: u8, target: u32 }
);
body!(
    /// A member's answer to an [`AdminRequest`]: `status` one of [`AdminStatus`] as u8, the
    /// member's state, and `value` (the log position of a snapshot or shutdown action).
    AdminResponse {
        correlation_id: u64,
        status: u8,
        member_id: u32,
        role: u8,
        leader: u32,
        term: u64,
        appended: u64,
        commit: u64,
        applied: u64,
        snapshots: u64,
        digest_mismatches: u64,
        value: u64,
    }
);

/// What an operator asks of a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum AdminCommand {
    /// Any member: its state.
    Describe = 1,
    /// Leader: every replica takes a snapshot at the next log position.
    Snapshot = 2,
    /// Leader: hand leadership to the most caught-up follower.
    StepDown = 3,
    /// Leader: hand leadership to `target`.
    TransferLeader = 4,
    /// Leader: every replica takes a snapshot and stops, at the same log position.
    Shutdown = 5,
}

impl AdminCommand {
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::Describe,
            2 => Self::Snapshot,
            3 => Self::StepDown,
            4 => Self::TransferLeader,
            5 => Self::Shutdown,
            _ => return None,
        })
    }
}

/// How a member answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum AdminStatus {
    Done = 0,
    /// Only the leader does this; `leader` names it (u32::MAX: none known).
    NotLeader = 1,
    /// Refused: no such member, a transfer already under way, or the log is full.
    Refused = 2,
    /// The request did not carry the cluster's admin credential; nothing else is said.
    Unauthorized = 3,
}

body!(
    /// The client of `session_id` is alive.
    SessionKeepAlive { session_id: u64 }
);
body!(
    /// A client asks to open `session_id` (or to bind it to this source again, after it moved
    /// or after a failover); the answer carries `correlation_id`. A credential follows.
    ClientConnect { correlation_id: u64, session_id: u64 }
);

/// `FrameMeta::flags` of a `SessionMessage` in the log: the leader refused this sequence (its
/// message was longer than `session.max_message_bytes`) and logged an empty stand-in, so the
/// session's sequence moves past it on every replica without the service seeing it. Only the
/// leader writes log frames, and it stamps their flags itself.
pub const FLAG_REFUSED: u8 = 1;

/// The longest credential a connect or admin request may carry.
pub const CREDENTIAL_LEN_MAX: usize = 256;
body!(
    /// What the cluster tells a client about its session. `kind` is a [`ClientEventKind`];
    /// `value` is the correlation id (opened), the sequence (applied) or the leader's member id
    /// (redirect; `u64::MAX` when unknown).
    ClientEvent { session_id: u64, value: u64, kind: u8 }
);
body!(
    /// Replicated log bytes follow this body: whole frames starting at `log_position`.
    AppendDataHeader { leadership_term_id: u64, log_position: u64, leader_member_id: u32 }
);

/// What a [`ClientEvent`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientEventKind {
    Opened = 1,
    Applied = 2,
    Redirect = 3,
    /// The session was closed (`value` is the [`CloseReason`]).
    Closed = 4,
    /// Message `value` (a sequence) is longer than the cluster's `max_message_bytes`; it is
    /// not in the log and never will be.
    TooLarge = 5,
    /// The connect's credential was refused by the cluster's authenticator.
    Unauthenticated = 6,
    /// The connect was refused: the cluster holds as many sessions as it allows (in all, or
    /// from this source).
    SessionLimit = 7,
    /// This source is not bound to the session (the client moved, or leadership did): connect
    /// again, with the credential, before anything else of the session is taken.
    Unbound = 8,
}

impl ClientEventKind {
    pub fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Opened),
            2 => Some(Self::Applied),
            3 => Some(Self::Redirect),
            4 => Some(Self::Closed),
            5 => Some(Self::TooLarge),
            6 => Some(Self::Unauthenticated),
            7 => Some(Self::SessionLimit),
            8 => Some(Self::Unbound),
            _ => None,
        }
    }
}

/// Why a session closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    ClientAction = 1,
    ServiceAction = 2,
    Timeout = 3,
}

impl CloseReason {
    pub fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::ClientAction),
            2 => Some(Self::ServiceAction),
            3 => Some(Self::Timeout),
            _ => None,
        }
    }
}

/// A decoded message. Variable bytes borrow from the frame they came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Padding,
    SessionMessage {
        header: SessionMessageHeader,
        payload: &'a [u8],
    },
    SessionOpen(SessionOpen),
    SessionClose(SessionClose),
    TimerEvent(TimerEvent),
    NewLeadershipTermEvent(NewLeadershipTermEvent),
    ClusterAction(ClusterAction),
    CanvassPosition(CanvassPosition),
    RequestVote(RequestVote),
    Vote(Vote),
    NewLeadershipTerm(NewLeadershipTerm),
    AppendPosition(AppendPosition),
    CommitPosition(CommitPosition),
    CatchupPosition(CatchupPosition),
    StopCatchup(StopCatchup),
    AppendData {
        header: AppendDataHeader,
        bytes: &'a [u8],
    },
    ElectNow(ElectNow),
    MemberSettings(MemberSettings),
    InstallSnapshot {
        header: InstallSnapshotHeader,
        bytes: &'a [u8],
    },
    InstallAck(InstallAck),
    /// `credential`: the operator's admin credential (empty when none is configured).
    AdminRequest {
        request: AdminRequest,
        credential: &'a [u8],
    },
    AdminResponse(AdminResponse),
    SessionKeepAlive(SessionKeepAlive),
    /// `credential`: what the cluster's client authenticator checks (empty when none).
    ClientConnect {
        connect: ClientConnect,
        credential: &'a [u8],
    },
    ClientEvent(ClientEvent),
    /// The frame's session id names the session.
    EgressMessage {
        payload: &'a [u8],
    },
}

fn exact<T>(decoded: (T, &[u8]), payload_len: usize) -> Result<T, DecodeError> {
    if decoded.1.is_empty() {
        Ok(decoded.0)
    } else {
        Err(DecodeError::BadLength {
            length: payload_len,
        })
    }
}

impl<'a> Message<'a> {
    pub fn frame_type(&self) -> FrameType {
        match self {
            Message::Padding => FrameType::Padding,
            Message::SessionMessage { .. } => FrameType::SessionMessage,
            Message::SessionOpen(_) => FrameType::SessionOpen,
            Message::SessionClose(_) => FrameType::SessionClose,
            Message::TimerEvent(_) => FrameType::TimerEvent,
            Message::NewLeadershipTermEvent(_) => FrameType::NewLeadershipTermEvent,
            Message::ClusterAction(_) => FrameType::ClusterAction,
            Message::CanvassPosition(_) => FrameType::CanvassPosition,
            Message::RequestVote(_) => FrameType::RequestVote,
            Message::Vote(_) => FrameType::Vote,
            Message::NewLeadershipTerm(_) => FrameType::NewLeadershipTerm,
            Message::AppendPosition(_) => FrameType::AppendPosition,
            Message::CommitPosition(_) => FrameType::CommitPosition,
            Message::CatchupPosition(_) => FrameType::CatchupPosition,
            Message::StopCatchup(_) => FrameType::StopCatchup,
            Message::AppendData { .. } => FrameType::AppendData,
            Message::ElectNow(_) => FrameType::ElectNow,
            Message::MemberSettings(_) => FrameType::MemberSettings,
            Message::InstallSnapshot { .. } => FrameType::InstallSnapshot,
            Message::InstallAck(_) => FrameType::InstallAck,
            Message::AdminRequest { .. } => FrameType::AdminRequest,
            Message::AdminResponse(_) => FrameType::AdminResponse,
            Message::SessionKeepAlive(_) => FrameType::SessionKeepAlive,
            Message::ClientConnect { .. } => FrameType::ClientConnect,
            Message::ClientEvent(_) => FrameType::ClientEvent,
            Message::EgressMessage { .. } => FrameType::EgressMessage,
        }
    }

    /// Payload bytes this message needs (body plus variable part).
    pub fn payload_len(&self) -> usize {
        match self {
            Message::Padding => 0,
            Message::SessionMessage { payload, .. } => SessionMessageHeader::LEN + payload.len(),
            Message::SessionOpen(_) => SessionOpen::LEN,
            Message::SessionClose(_) => SessionClose::LEN,
            Message::TimerEvent(_) => TimerEvent::LEN,
            Message::NewLeadershipTermEvent(_) => NewLeadershipTermEvent::LEN,
            Message::ClusterAction(_) => ClusterAction::LEN,
            Message::CanvassPosition(_) => CanvassPosition::LEN,
            Message::RequestVote(_) => RequestVote::LEN,
            Message::Vote(_) => Vote::LEN,
            Message::NewLeadershipTerm(_) => NewLeadershipTerm::LEN,
            Message::AppendPosition(_) => AppendPosition::LEN,
            Message::CommitPosition(_) => CommitPosition::LEN,
            Message::CatchupPosition(_) => CatchupPosition::LEN,
            Message::StopCatchup(_) => StopCatchup::LEN,
            Message::AppendData { bytes, .. } => AppendDataHeader::LEN + bytes.len(),
            Message::ElectNow(_) => ElectNow::LEN,
            Message::MemberSettings(_) => MemberSettings::LEN,
            Message::InstallSnapshot { bytes, .. } => InstallSnapshotHeader::LEN + bytes.len(),
            Message::InstallAck(_) => InstallAck::LEN,
            Message::AdminRequest { credential, .. } => AdminRequest::LEN + credential.len(),
            Message::AdminResponse(_) => AdminResponse::LEN,
            Message::SessionKeepAlive(_) => SessionKeepAlive::LEN,
            Message::ClientConnect { credential, .. } => ClientConnect::LEN + credential.len(),
            Message::ClientEvent(_) => ClientEvent::LEN,
            Message::EgressMessage { payload } => payload.len(),
        }
    }

    /// Bytes the encoded frame occupies, padding included.
    pub fn encoded_len(&self) -> usize {
        frame::encoded_len(self.payload_len())
    }

    fn write_payload(&self, out: &mut [u8]) {
        match self {
            Message::Padding => {}
            Message::SessionMessage { header, payload } => {
                header.put(out);
                out[SessionMessageHeader::LEN..].copy_from_slice(payload);
            }
            Message::SessionOpen(b) => b.put(out),
            Message::SessionClose(b) => b.put(out),
            Message::TimerEvent(b) => b.put(out),
            Message::NewLeadershipTermEvent(b) => b.put(out),
            Message::ClusterAction(b) => b.put(out),
            Message::CanvassPosition(b) => b.put(out),
            Message::RequestVote(b) => b.put(out),
            Message::Vote(b) => b.put(out),
            Message::NewLeadershipTerm(b) => b.put(out),
            Message::AppendPosition(b) => b.put(out),
            Message::CommitPosition(b) => b.put(out),
            Message::CatchupPosition(b) => b.put(out),
            Message::StopCatchup(b) => b.put(out),
            Message::AppendData { header, bytes } => {
                header.put(out);
                out[AppendDataHeader::LEN..].copy_from_slice(bytes);
            }
            Message::ElectNow(b) => b.put(out),
            Message::MemberSettings(b) => b.put(out),
            Message::InstallSnapshot { header, bytes } => {
                header.put(out);
                out[InstallSnapshotHeader::LEN..].copy_from_slice(bytes);
            }
            Message::InstallAck(b) => b.put(out),
            Message::AdminRequest {
                request,
                credential,
            } => {
                request.put(out);
                out[AdminRequest::LEN..].copy_from_slice(credential);
            }
            Message::AdminResponse(b) => b.put(out),
            Message::SessionKeepAlive(b) => b.put(out),
            Message::ClientConnect {
                connect,
                credential,
            } => {
                connect.put(out);
                out[ClientConnect::LEN..].copy_from_slice(credential);
            }
            Message::ClientEvent(b) => b.put(out),
            Message::EgressMessage { payload } => out.copy_from_slice(payload),
        }
    }

    /// Encodes this message as one frame at the front of `out`; returns the bytes used.
    /// `meta.frame_type` is taken from the message. Panics if `out` is too short.
    pub fn encode(&self, meta: FrameMeta, out: &mut [u8]) -> usize {
        let meta = FrameMeta {
            frame_type: self.frame_type() as u16,
            ..meta
        };
        frame::encode_with(&meta, self.payload_len(), out, |dst| {
            self.write_payload(dst)
        })
    }

    /// Interprets a checked frame. Never panics on any input.
    pub fn decode(frame: &Frame<'a>) -> Result<Self, DecodeError> {
        let p = frame.payload;
        let n = p.len();
        let Some(frame_type) = FrameType::from_u16(frame.meta.frame_type) else {
            return Err(DecodeError::UnknownType {
                frame_type: frame.meta.frame_type,
            });
        };
        Ok(match frame_type {
            // Opened by `auth` before any message is decoded; one that reaches here was not
            // (a seal sent to a member without a key).
            FrameType::Sealed => {
                return Err(DecodeError::UnknownType {
                    frame_type: frame.meta.frame_type,
                })
            }
            FrameType::Padding => Message::Padding,
            FrameType::SessionMessage => {
                let (header, payload) = SessionMessageHeader::take(p)?;
                Message::SessionMessage { header, payload }
            }
            FrameType::SessionOpen => Message::SessionOpen(exact(SessionOpen::take(p)?, n)?),
            FrameType::SessionClose => {
                let body = exact(SessionClose::take(p)?, n)?;
                if CloseReason::from_u8(body.reason).is_none() {
                    return Err(DecodeError::BadField {
                        field: "SessionClose.reason",
                    });
                }
                Message::SessionClose(body)
            }
            FrameType::TimerEvent => Message::TimerEvent(exact(TimerEvent::take(p)?, n)?),
            FrameType::NewLeadershipTermEvent => {
                Message::NewLeadershipTermEvent(exact(NewLeadershipTermEvent::take(p)?, n)?)
            }
            FrameType::ClusterAction => {
                let body = exact(ClusterAction::take(p)?, n)?;
                if ClusterActionKind::from_u8(body.kind).is_none() {
                    return Err(DecodeError::BadField {
                        field: "ClusterAction.kind",
                    });
                }
                Message::ClusterAction(body)
            }
            FrameType::CanvassPosition => {
                Message::CanvassPosition(exact(CanvassPosition::take(p)?, n)?)
            }
            FrameType::RequestVote => Message::RequestVote(exact(RequestVote::take(p)?, n)?),
            FrameType::Vote => Message::Vote(exact(Vote::take(p)?, n)?),
            FrameType::NewLeadershipTerm => {
                Message::NewLeadershipTerm(exact(NewLeadershipTerm::take(p)?, n)?)
            }
            FrameType::AppendPosition => {
                Message::AppendPosition(exact(AppendPosition::take(p)?, n)?)
            }
            FrameType::CommitPosition => {
                Message::CommitPosition(exact(CommitPosition::take(p)?, n)?)
            }
            FrameType::CatchupPosition => {
                Message::CatchupPosition(exact(CatchupPosition::take(p)?, n)?)
            }
            FrameType::StopCatchup => Message::StopCatchup(exact(StopCatchup::take(p)?, n)?),
            FrameType::AppendData => {
                let (header, bytes) = AppendDataHeader::take(p)?;
                if header.log_position % frame::FRAME_ALIGNMENT as u64 != 0 {
                    return Err(DecodeError::BadField {
                        field: "AppendData.log_position",
                    });
                }
                Message::AppendData { header, bytes }
            }
            FrameType::ElectNow => Message::ElectNow(exact(ElectNow::take(p)?, n)?),
            FrameType::MemberSettings => {
                Message::MemberSettings(exact(MemberSettings::take(p)?, n)?)
            }
            FrameType::InstallSnapshot => {
                let (header, bytes) = InstallSnapshotHeader::take(p)?;
                if header
                    .offset
                    .checked_add(bytes.len() as u64)
                    .is_none_or(|end| end > header.total_len)
                {
                    return Err(DecodeError::BadField {
                        field: "InstallSnapshot.offset",
                    });
                }
                Message::InstallSnapshot { header, bytes }
            }
            FrameType::InstallAck => Message::InstallAck(exact(InstallAck::take(p)?, n)?),
            FrameType::AdminRequest => {
                let (body, credential) = AdminRequest::take(p)?;
                if credential.len() > CREDENTIAL_LEN_MAX {
                    return Err(DecodeError::BadLength { length: n });
                }
                if AdminCommand::from_u8(body.command).is_none() {
                    return Err(DecodeError::BadField {
                        field: "AdminRequest.command",
                    });
                }
                Message::AdminRequest {
                    request: body,
                    credential,
                }
            }
            FrameType::AdminResponse => Message::AdminResponse(exact(AdminResponse::take(p)?, n)?),
            FrameType::SessionKeepAlive => {
                Message::SessionKeepAlive(exact(SessionKeepAlive::take(p)?, n)?)
            }
            FrameType::ClientConnect => {
                let (connect, credential) = ClientConnect::take(p)?;
                if credential.len() > CREDENTIAL_LEN_MAX {
                    return Err(DecodeError::BadLength { length: n });
                }
                Message::ClientConnect {
                    connect,
                    credential,
                }
            }
            FrameType::ClientEvent => {
                let body = exact(ClientEvent::take(p)?, n)?;
                if ClientEventKind::from_u8(body.kind).is_none() {
                    return Err(DecodeError::BadField {
                        field: "ClientEvent.kind",
                    });
                }
                Message::ClientEvent(body)
            }
            FrameType::EgressMessage => Message::EgressMessage { payload: p },
        })
    }
}
