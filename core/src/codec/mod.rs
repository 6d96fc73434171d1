//! Frame layouts, message types and checksums. Imports nothing of ours.
//!
//! This module owns the byte formats: what a frame looks like in the log and on the wire
//! ([`frame`]), and which messages frames carry ([`message`]). It never touches the OS and never
//! panics on untrusted bytes: every decoding path returns a [`DecodeError`].

#![forbid(unsafe_code)]

pub mod frame;
pub mod message;

pub use frame::{
    align_frame, decode, encode_into, encode_with, encoded_len, stored_len, Decoded, Frame,
    FrameHeader, FrameMeta, Frames, FRAME_ALIGNMENT, FRAME_LEN_MAX, HEADER_LEN, VERSION,
};
pub use message::{CloseReason, FrameType, Message};

/// Why bytes were not accepted as a frame or message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated frame: needs {needed} bytes, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error(
        "bad frame length {length} (allowed {}..={})",
        HEADER_LEN,
        FRAME_LEN_MAX
    )]
    BadLength { length: usize },
    #[error("unknown frame type {frame_type}")]
    UnknownType { frame_type: u16 },
    #[error("bad checksum: frame says {expected:#010x}, bytes give {actual:#010x}")]
    BadChecksum { expected: u32, actual: u32 },
    #[error("wrong frame version {found} (this build speaks {supported})")]
    WrongVersion { found: u8, supported: u8 },
    #[error("invalid value in field {field}")]
    BadField { field: &'static str },
}

#[cfg(test)]
mod tests {
    use super::message::*;
    use super::*;
    use proptest::prelude::*;

    fn meta() -> FrameMeta {
        FrameMeta {
            frame_type: 0,
            flags: 3,
            term: 7,
            session_id: 42,
            timestamp_ns: 123_456,
        }
    }

    fn roundtrip(msg: Message<'_>) {
        let mut buf = vec![0u8; msg.encoded_len()];
        let used = msg.encode(meta(), &mut buf);
        assert_eq!(used, buf.len());
        assert_eq!(used % FRAME_ALIGNMENT, 0);
        let Decoded::Frame(frame, consumed) = decode(&buf).unwrap() else {
            panic!("end")
        };
        assert_eq!(consumed, used);
        assert_eq!(frame.meta.term, 7);
        assert_eq!(frame.meta.session_id, 42);
        assert_eq!(frame.meta.flags, 3);
        assert_eq!(Message::decode(&frame).unwrap(), msg);
    }

    #[test]
    fn every_message_type_round_trips() {
        roundtrip(Message::Padding);
        roundtrip(Message::SessionMessage {
            header: SessionMessageHeader { sequence: 9 },
            payload: b"order: buy 10 @ 99",
        });
        roundtrip(Message::SessionOpen(SessionOpen {
            correlation_id: 1,
            client_id: 2,
        }));
        roundtrip(Message::SessionClose(SessionClose {
            reason: CloseReason::Timeout as u8,
        }));
        roundtrip(Message::TimerEvent(TimerEvent { correlation_id: 5 }));
        roundtrip(Message::SessionKeepAlive(SessionKeepAlive {
            session_id: 77,
        }));
        roundtrip(Message::InstallSnapshot {
            header: InstallSnapshotHeader {
                leadership_term_id: 3,
                snapshot_position: 4096,
                log_start: 2048,
                terms_len: 16,
                total_len: 100,
                offset: 90,
                leader_member_id: 1,
            },
            bytes: b"0123456789",
        });
        roundtrip(Message::InstallAck(InstallAck {
            leadership_term_id: 3,
            snapshot_position: 4096,
            received: 100,
            follower_member_id: 2,
        }));
        roundtrip(Message::ElectNow(ElectNow {
            leadership_term_id: 4,
            leader_member_id: 1,
            candidate_member_id: 2,
        }));
        roundtrip(Message::MemberSettings(MemberSettings {
            sender_member_id: 1,
            receiver_member_id: 2,
            member_count: 3,
            segment_bytes: 1 << 20,
            frame_len_max: 1 << 19,
            heard_yours: true,
        }));
        roundtrip(Message::AdminRequest {
            request: AdminRequest {
                correlation_id: 9,
                command: AdminCommand::TransferLeader as u8,
                target: 2,
            },
            credential: b"operator",
        });
        roundtrip(Message::AdminResponse(AdminResponse {
            correlation_id: 9,
            status: AdminStatus::NotLeader as u8,
            member_id: 1,
            role: 0,
            leader: 2,
            term: 5,
            appended: 6,
            commit: 7,
            applied: 8,
            snapshots: 1,
            digest_mismatches: 0,
            value: 3,
        }));
        roundtrip(Message::ClusterAction(ClusterAction {
            kind: ClusterActionKind::DigestCheck as u8,
            position: 4096,
            value: 0xfeed,
        }));
        roundtrip(Message::NewLeadershipTermEvent(NewLeadershipTermEvent {
            leadership_term_id: 3,
            term_base_log_position: 4096,
            leader_member_id: 2,
            member_count: 3,
        }));
        roundtrip(Message::CanvassPosition(CanvassPosition {
            log_leadership_term_id: 1,
            log_position: 2,
            leadership_term_id: 3,
            follower_member_id: 4,
        }));
        roundtrip(Message::RequestVote(RequestVote {
            log_leadership_term_id: 1,
            log_position: 2,
            candidate_term_id: 3,
            candidate_member_id: 4,
        }));
        roundtrip(Message::Vote(Vote {
            candidate_term_id: 1,
            log_leadership_term_id: 2,
            log_position: 3,
            candidate_member_id: 4,
            follower_member_id: 5,
            vote: true,
        }));
        roundtrip(Message::NewLeadershipTerm(NewLeadershipTerm {
            log_leadership_term_id: 1,
            matched_term_id: 2,
            matched_term_start: 3,
            matched_term_end: 4,
            leadership_term_id: 5,
            term_base_log_position: 6,
            log_position: 7,
            commit_position: 8,
            leader_member_id: 9,
            is_startup: true,
        }));
        roundtrip(Message::AppendPosition(AppendPosition {
            leadership_term_id: 1,
            log_position: 2,
            appended_position: 4,
            follower_member_id: 3,
            flags: 0,
        }));
        roundtrip(Message::CommitPosition(CommitPosition {
            leadership_term_id: 1,
            log_position: 2,
            leader_member_id: 3,
        }));
        roundtrip(Message::CatchupPosition(CatchupPosition {
            leadership_term_id: 1,
            log_position: 2,
            follower_member_id: 3,
        }));
        roundtrip(Message::StopCatchup(StopCatchup {
            leadership_term_id: 1,
            follower_member_id: 2,
        }));
        roundtrip(Message::ClientConnect {
            connect: ClientConnect {
                correlation_id: 1,
                session_id: 2,
            },
            credential: b"",
        });
        roundtrip(Message::ClientConnect {
            connect: ClientConnect {
                correlation_id: 1,
                session_id: 2,
            },
            credential: &[7u8; 256],
        });
        roundtrip(Message::ClientEvent(ClientEvent {
            session_id: 1,
            value: 2,
            kind: ClientEventKind::Applied as u8,
        }));
        roundtrip(Message::EgressMessage {
            payload: b"fill 10 @ 99",
        });
        roundtrip(Message::AppendData {
            header: AppendDataHeader {
                leadership_term_id: 1,
                log_position: 64,
                leader_member_id: 0,
            },
            bytes: &[1, 2, 3, 4, 5],
        });
    }

    #[test]
    fn zero_length_is_end_of_data() {
        assert_eq!(decode(&[0u8; 64]).unwrap(), Decoded::End);
        assert_eq!(decode(&[0u8; 4]).unwrap(), Decoded::End);
    }

    #[test]
    fn each_kind_of_damage_has_its_own_error() {
        let msg = Message::TimerEvent(TimerEvent { correlation_id: 5 });
        let mut buf = vec![0u8; msg.encoded_len()];
        msg.encode(meta(), &mut buf);

        assert!(matches!(
            decode(&buf[..10]),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            decode(&buf[..HEADER_LEN + 2]),
            Err(DecodeError::Truncated { .. })
        ));

        let mut flipped = buf.clone();
        flipped[HEADER_LEN] ^= 1;
        assert!(matches!(
            decode(&flipped),
            Err(DecodeError::BadChecksum { .. })
        ));

        let mut long = buf.clone();
        long[0..4].copy_from_slice(&(FRAME_LEN_MAX as u32 + 8).to_le_bytes());
        assert!(matches!(decode(&long), Err(DecodeError::BadLength { .. })));
        long[0..4].copy_from_slice(&8u32.to_le_bytes());
        assert!(matches!(decode(&long), Err(DecodeError::BadLength { .. })));

        // A wrong version with a checksum that matches it is a version error, not a checksum one.
        let meta_v = FrameMeta {
            frame_type: 5,
            ..meta()
        };
        let mut v2 = vec![0u8; encoded_len(8)];
        encode_into(&meta_v, &[0; 8], &mut v2);
        v2[10] = VERSION + 1;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&v2[0..4]), &v2[8..HEADER_LEN + 8]);
        v2[4..8].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            decode(&v2),
            Err(DecodeError::WrongVersion { found: 2, .. })
        ));

        let unknown = FrameMeta {
            frame_type: 999,
            ..meta()
        };
        let mut u = vec![0u8; encoded_len(0)];
        encode_into(&unknown, &[], &mut u);
        let Decoded::Frame(f, _) = decode(&u).unwrap() else {
            panic!()
        };
        assert_eq!(
            Message::decode(&f),
            Err(DecodeError::UnknownType { frame_type: 999 })
        );

        // A body one byte short or long of its layout is a length error.
        let short = FrameMeta {
            frame_type: FrameType::Vote as u16,
            ..meta()
        };
        for len in [Vote::LEN - 1, Vote::LEN + 1] {
            let mut s = vec![0u8; encoded_len(len)];
            encode_into(&short, &vec![0; len], &mut s);
            let Decoded::Frame(f, _) = decode(&s).unwrap() else {
                panic!()
            };
            assert!(matches!(
                Message::decode(&f),
                Err(DecodeError::BadLength { .. })
            ));
        }
    }

    #[test]
    fn frames_iterates_a_packed_buffer_and_stops_at_damage() {
        let mut buf = vec![0u8; 4096];
        let mut at = 0;
        for i in 0..5u64 {
            let m = Message::TimerEvent(TimerEvent { correlation_id: i });
            at += m.encode(meta(), &mut buf[at..]);
        }
        let got: Vec<_> = Frames::new(&buf).map(|r| r.unwrap().0).collect();
        assert_eq!(got, vec![0, 48, 96, 144, 192]);
        buf[96 + HEADER_LEN] ^= 0xff;
        let got: Vec<_> = Frames::new(&buf).collect();
        assert_eq!(got.len(), 3);
        assert!(got[2].is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_frames_round_trip(
            frame_type in any::<u16>(), flags in any::<u8>(), term in any::<u64>(),
            session_id in any::<u64>(), timestamp_ns in any::<u64>(),
            payload in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let m = FrameMeta { frame_type, flags, term, session_id, timestamp_ns };
            let mut buf = vec![0xAAu8; encoded_len(payload.len())];
            let used = encode_into(&m, &payload, &mut buf);
            prop_assert_eq!(used, buf.len());
            let Decoded::Frame(f, consumed) = decode(&buf).unwrap() else { panic!() };
            prop_assert_eq!(consumed, used);
            prop_assert_eq!(f.meta, m);
            prop_assert_eq!(f.payload, &payload[..]);
        }

        /// Untrusted bytes: decoding never panics, whatever they are.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            for (_, frame) in Frames::new(&bytes).flatten() {
                let _ = Message::decode(&frame);
            }
        }

        /// Valid frames with arbitrary bodies of every type: decoding never panics.
        #[test]
        fn arbitrary_bodies_never_panic(
            frame_type in prop_oneof![0u16..30, any::<u16>()],
            body in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let m = FrameMeta { frame_type, ..meta() };
            let mut buf = vec![0u8; encoded_len(body.len())];
            encode_into(&m, &body, &mut buf);
            let Decoded::Frame(f, _) = decode(&buf).unwrap() else { panic!() };
            let _ = Message::decode(&f);
        }

        /// Any single bit flip in a frame is caught.
        #[test]
        fn single_bit_flips_are_detected(
            payload in proptest::collection::vec(any::<u8>(), 1..200),
            bit in any::<prop::sample::Index>(),
        ) {
            let m = FrameMeta { frame_type: 2, ..meta() };
            let len = HEADER_LEN + payload.len();
            let mut buf = vec![0u8; encoded_len(payload.len())];
            encode_into(&m, &payload, &mut buf);
            let bit = bit.index(len * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(!matches!(decode(&buf), Ok(Decoded::Frame(f, _)) if f.payload == &payload[..]
                && f.meta == m));
        }
    }
}
