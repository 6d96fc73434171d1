//! The client door of one node, driven through its sans-IO entry points: a single-member
//! cluster (it leads at once) on a simulated disk and network, with clients and strangers as
//! endpoint ids. Each test is one of the attacks of issue 14, or the behaviour a real client
//! relies on.

use super::{Node, NodeConfig, SessionLimits};
use crate::access::{Access, SharedToken};
use crate::codec::message::{
    AdminCommand, AdminRequest, AdminResponse, AdminStatus, ClientConnect, ClientEvent,
    ClientEventKind, CloseReason, SessionClose, SessionKeepAlive, SessionMessageHeader,
};
use crate::codec::{FrameMeta, Frames, Message};
use crate::consensus::ConsensusConfig;
use crate::io::CLIENT_ENDPOINT_BASE;
use crate::log::{Durability, LogConfig};
use crate::service::echo::EchoService;
use crate::service::Applier;
use crate::sim::disk::{SimDisk, SimDiskConfig};
use crate::sim::net::SimEndpoint;

const MS: u64 = 1_000_000;
const CLIENT: u32 = CLIENT_ENDPOINT_BASE;
const STRANGER: u32 = CLIENT_ENDPOINT_BASE + 1;
const TOKEN: &str = "client-token-for-tests";
const ADMIN: &str = "admin-token-for-tests";

struct Door {
    node: Node<SimDisk, SimEndpoint, Applier<EchoService>>,
    now: u64,
}

/// A lone member with 1 MiB segments.
fn door_config(limits: SessionLimits) -> NodeConfig {
    let mut consensus = ConsensusConfig::new(0, 1);
    consensus.leader_heartbeat_interval_ns = 10 * MS;
    consensus.leader_heartbeat_timeout_ns = 100 * MS;
    consensus.election_timeout_ns = 50 * MS;
    consensus.startup_canvass_timeout_ns = 50 * MS;
    NodeConfig {
        consensus,
        log: LogConfig {
            segment_bytes: 1 << 20,
            write_bytes_max: 256 << 10,
            durability: Durability::Fdatasync,
        },
        snapshot_interval_bytes: 0,
        session_timeout_ns: 0,
        recover_vote: false,
        sessions: limits,
        max_install_bytes: u64::MAX,
    }
}

impl Door {
    fn new(limits: SessionLimits, access: Access) -> Self {
        let config = door_config(limits);
        let disk = SimDisk::new(7, SimDiskConfig::default());
        let applier = Applier::new(EchoService::default());
        let mut node =
            Node::open(config, disk, SimEndpoint::default(), applier, 0).expect("node opens");
        node.set_access(access);
        let mut door = Self { node, now: 0 };
        door.run(500 * MS);
        assert!(
            door.node.consensus().leader_term().is_some(),
            "a lone member leads"
        );
        door
    }

    fn run(&mut self, for_ns: u64) {
        let end = self.now + for_ns;
        while self.now < end {
            self.now += 100_000;
            self.node.log_mut().disk_mut().advance_to(self.now);
            self.node.tick(self.now).expect("no node failure");
        }
    }

    fn send(&mut self, from: u32, session_id: u64, message: &Message<'_>) {
        let mut buf = vec![0u8; message.encoded_len()];
        message.encode(
            FrameMeta {
                session_id,
                ..FrameMeta::default()
            },
            &mut buf,
        );
        self.node.net_mut().deliver(from, buf);
        self.run(5 * MS);
    }

    fn connect(&mut self, from: u32, session_id: u64, credential: &[u8]) {
        self.send(
            from,
            session_id,
            &Message::ClientConnect {
                connect: ClientConnect {
                    correlation_id: session_id,
                    session_id,
                },
                credential,
            },
        );
    }

    fn message(&mut self, from: u32, session_id: u64, sequence: u64, payload: &[u8]) {
        self.send(
            from,
            session_id,
            &Message::SessionMessage {
                header: SessionMessageHeader { sequence },
                payload,
            },
        );
    }

    /// Client events sent to `to` since the last call, as (session, kind, value).
    fn events(&mut self, to: u32) -> Vec<(u64, ClientEventKind, u64)> {
        let mut out = Vec::new();
        let (mine, others) = std::mem::take(&mut self.node.net_mut().outgoing)
            .into_iter()
            .partition::<Vec<_>, _>(|(dest, _)| *dest == to);
        self.node.net_mut().outgoing = others;
        for (_, bytes) in mine {
            for (_, frame) in Frames::new(&bytes).map_while(Result::ok) {
                if let Ok(Message::ClientEvent(ClientEvent {
                    session_id,
                    value,
                    kind,
                })) = Message::decode(&frame)
                {
                    out.push((session_id, ClientEventKind::from_u8(kind).unwrap(), value));
                }
            }
        }
        out
    }

    fn admin(&mut self, from: u32, command: AdminCommand, credential: &[u8]) -> AdminResponse {
        self.node.net_mut().outgoing.clear();
        self.send(
            from,
            0,
            &Message::AdminRequest {
                request: AdminRequest {
                    correlation_id: 77,
                    command: command as u8,
                    target: 0,
                },
                credential,
            },
        );
        let out = std::mem::take(&mut self.node.net_mut().outgoing);
        out.iter()
            .filter(|(to, _)| *to == from)
            .flat_map(|(_, b)| Frames::new(b).map_while(Result::ok).collect::<Vec<_>>())
            .find_map(|(_, f)| match Message::decode(&f) {
                Ok(Message::AdminResponse(r)) => Some(r),
                _ => None,
            })
            .expect("an admin answer")
    }

    fn appended(&self) -> u64 {
        self.node.log().appended_position()
    }
}

fn tokens() -> Access {
    Access::tokens(
        Some(SharedToken::new(TOKEN).unwrap()),
        Some(SharedToken::new(ADMIN).unwrap()),
    )
}

#[test]
fn a_connect_without_the_token_is_refused_and_opens_nothing() {
    let mut door = Door::new(SessionLimits::default(), tokens());
    let before = door.appended();
    door.connect(STRANGER, 5, b"guess");
    assert_eq!(
        door.events(STRANGER),
        vec![(5, ClientEventKind::Unauthenticated, 5)]
    );
    assert_eq!(
        door.appended(),
        before,
        "nothing appended for a refused connect"
    );
    assert_eq!(door.node.stats().connects_unauthenticated, 1);
    door.connect(CLIENT, 5, TOKEN.as_bytes());
    assert_eq!(door.events(CLIENT), vec![(5, ClientEventKind::Opened, 5)]);
    assert!(door.appended() > before);
}

#[test]
fn frames_of_a_session_from_another_source_are_refused_and_its_replies_stay_with_its_client() {
    let mut door = Door::new(SessionLimits::default(), tokens());
    door.connect(CLIENT, 9, TOKEN.as_bytes());
    door.events(CLIENT);
    door.message(CLIENT, 9, 1, b"mine");
    assert!(door
        .events(CLIENT)
        .contains(&(9, ClientEventKind::Applied, 1)));
    // A stranger's keep-alive, message and close for session 9: refused, nothing appended,
    // nothing redirected to it.
    let before = door.appended();
    door.send(
        STRANGER,
        9,
        &Message::SessionKeepAlive(SessionKeepAlive { session_id: 9 }),
    );
    door.message(STRANGER, 9, 2, b"forged");
    door.send(
        STRANGER,
        9,
        &Message::SessionClose(SessionClose {
            reason: CloseReason::ClientAction as u8,
        }),
    );
    assert_eq!(door.appended(), before, "no forged frame in the log");
    assert_eq!(
        door.events(STRANGER),
        vec![(9, ClientEventKind::Unbound, 0); 3]
    );
    assert_eq!(door.node.stats().session_frames_unbound, 3);
    // The session's own client is still served, at its own source.
    door.message(CLIENT, 9, 2, b"still mine");
    assert!(door
        .events(CLIENT)
        .contains(&(9, ClientEventKind::Applied, 2)));
}

#[test]
fn a_moved_client_connects_again_and_its_replies_follow_it() {
    let mut door = Door::new(SessionLimits::default(), tokens());
    door.connect(CLIENT, 3, TOKEN.as_bytes());
    door.events(CLIENT);
    let moved = CLIENT + 7;
    door.message(moved, 3, 1, b"from elsewhere");
    assert_eq!(door.events(moved), vec![(3, ClientEventKind::Unbound, 0)]);
    let before = door.appended();
    door.connect(moved, 3, TOKEN.as_bytes());
    assert_eq!(door.events(moved), vec![(3, ClientEventKind::Opened, 3)]);
    assert_eq!(
        door.appended(),
        before,
        "re-binding an open session appends nothing"
    );
    door.message(moved, 3, 1, b"from elsewhere");
    assert!(door
        .events(moved)
        .contains(&(3, ClientEventKind::Applied, 1)));
    door.message(CLIENT, 3, 2, b"old source");
    assert_eq!(door.events(CLIENT), vec![(3, ClientEventKind::Unbound, 0)]);
}

#[test]
fn messages_and_keep_alives_for_sessions_never_opened_are_neither_appended_nor_remembered() {
    let mut door = Door::new(SessionLimits::default(), Access::open());
    let before = door.appended();
    for s in 1..=2_000u64 {
        let m = Message::SessionKeepAlive(SessionKeepAlive { session_id: s });
        let mut buf = vec![0u8; m.encoded_len()];
        m.encode(FrameMeta::default(), &mut buf);
        door.node.net_mut().deliver(STRANGER, buf);
    }
    door.run(20 * MS);
    door.message(STRANGER, 4242, 1, b"never opened");
    assert_eq!(door.appended(), before);
    assert_eq!(door.node.stats().session_frames_unbound, 2_001);
    assert!(door.node.sessions.last_heard.is_empty());
    assert!(door.node.sessions.bound.is_empty());
}

#[test]
fn a_message_over_the_limit_is_refused_with_its_sequence_and_the_next_one_is_applied() {
    let limits = SessionLimits {
        max_message_bytes: 1000,
        ..SessionLimits::default()
    };
    let mut door = Door::new(limits, Access::open());
    door.connect(CLIENT, 8, b"");
    door.events(CLIENT);
    let before = door.appended();
    door.message(CLIENT, 8, 1, &[1u8; 1001]);
    assert_eq!(door.events(CLIENT), vec![(8, ClientEventKind::TooLarge, 1)]);
    // Not the message: only an empty stand-in, so the session's sequence moves past it.
    assert!(door.appended() - before < 1001);
    assert_eq!(door.node.stats().messages_too_large, 1);
    assert_eq!(door.node.applier().applied_messages(), 0);
    door.message(CLIENT, 8, 2, &[1u8; 1000]);
    assert!(door
        .events(CLIENT)
        .contains(&(8, ClientEventKind::Applied, 2)));
    assert_eq!(
        door.node.applier().applied_messages(),
        1,
        "the message after the refused one is applied; the refused one never"
    );
}

#[test]
fn the_message_limit_is_never_above_what_one_log_frame_holds() {
    let door = Door::new(SessionLimits::default(), Access::open());
    let frame = door.node.log().config().frame_len_max();
    let limit = door.node.session_limits().max_message_bytes;
    assert!(limit < frame);
    assert_eq!(
        Message::SessionMessage {
            header: SessionMessageHeader { sequence: 1 },
            payload: &vec![0u8; limit],
        }
        .encoded_len(),
        frame
    );
}

#[test]
fn connects_beyond_the_session_limits_are_refused_until_a_session_closes() {
    let limits = SessionLimits {
        max_message_bytes: 1000,
        max_sessions: 3,
        max_sessions_per_source: 2,
    };
    let mut door = Door::new(limits, Access::open());
    door.connect(CLIENT, 1, b"");
    door.connect(CLIENT, 2, b"");
    door.connect(CLIENT, 3, b"");
    assert_eq!(
        door.events(CLIENT),
        vec![
            (1, ClientEventKind::Opened, 1),
            (2, ClientEventKind::Opened, 2),
            (3, ClientEventKind::SessionLimit, 3)
        ],
        "two per source"
    );
    door.connect(STRANGER, 4, b"");
    door.connect(STRANGER + 1, 5, b"");
    assert_eq!(door.events(STRANGER), vec![(4, ClientEventKind::Opened, 4)]);
    assert_eq!(
        door.events(STRANGER + 1),
        vec![(5, ClientEventKind::SessionLimit, 5)],
        "three in all"
    );
    assert_eq!(door.node.stats().sessions_refused, 2);
    door.send(
        CLIENT,
        1,
        &Message::SessionClose(SessionClose {
            reason: CloseReason::ClientAction as u8,
        }),
    );
    door.connect(STRANGER + 1, 5, b"");
    assert!(door
        .events(STRANGER + 1)
        .contains(&(5, ClientEventKind::Opened, 5)));
}

#[test]
fn admin_requests_need_the_admin_token_and_a_refusal_says_nothing_of_the_member() {
    let mut door = Door::new(SessionLimits::default(), tokens());
    let before = door.appended();
    for command in [
        AdminCommand::Describe,
        AdminCommand::Snapshot,
        AdminCommand::Shutdown,
    ] {
        let r = door.admin(STRANGER, command, TOKEN.as_bytes());
        assert_eq!(r.status, AdminStatus::Unauthorized as u8);
        assert_eq!(
            (r.term, r.appended, r.commit, r.leader),
            (0, 0, 0, u32::MAX)
        );
    }
    assert_eq!(
        door.appended(),
        before,
        "no snapshot or shutdown action appended"
    );
    assert_eq!(door.node.stats().admin_refused, 3);
    let r = door.admin(CLIENT, AdminCommand::Describe, ADMIN.as_bytes());
    assert_eq!(r.status, AdminStatus::Done as u8);
    assert!(r.term > 0);
}

/// A segment file before the service's state is gone: the start is refused, naming the
/// missing range, instead of starting and failing at apply.
#[test]
fn a_missing_first_segment_refuses_the_start_by_name() {
    let mut door = Door::new(SessionLimits::default(), Access::default());
    let payload = vec![7u8; 60_000];
    let mut sequence = 1;
    while door.node.commit_position() < (5 << 19) {
        if door.node.offer(door.now, 1, sequence, &payload).is_ok() {
            sequence += 1;
        }
        door.run(MS);
    }
    let mut disk = door.node.into_disk();
    disk.lose(&crate::log::segment_name(0));
    let applier = Applier::new(EchoService::default());
    let err = match Node::open(
        door_config(SessionLimits::default()),
        disk,
        SimEndpoint::default(),
        applier,
        door.now,
    ) {
        Ok(_) => panic!("a log without its first segment and no snapshot started"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("the log starts at position 1048576")
            && err.contains("00000000000001048576.seg")
            && err.contains("covers only up to 0"),
        "{err}"
    );
}
