//! The client and operator door on real `raftline node` processes: connects without the
//! client token, a stranger's frames for another client's session, admin commands without the
//! admin token, floods of sessions and keep-alives, and messages over the limit. Each is
//! refused and counted, and the cluster keeps committing for the clients that hold the token.

mod common;
use common::members::{cluster, leader, stream, wait_for, Member};

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use raftline::client::{ClientConfig, ClientError, ClientEvent, ClusterClient};
use raftline::codec::message::{
    ClientConnect, ClientEvent as EventBody, ClientEventKind, CloseReason, SessionClose,
    SessionKeepAlive, SessionMessageHeader,
};
use raftline::codec::{FrameMeta, Frames, Message};
use raftline::runtime::counters::Counter;
use raftline::runtime::monotonic_ns;

const CLIENT_TOKEN: &str = "client-token-0123456789abcdef";
const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

fn client_with(addrs: &[String], credential: &str) -> Result<ClusterClient, ClientError> {
    let mut cc = ClientConfig::new(addrs.iter().map(|a| a.parse().unwrap()).collect(), 9);
    cc.max_datagram_bytes = 65_000;
    cc.resend_timeout_ns = 100_000_000;
    cc.connect_timeout_ns = 3_000_000_000;
    cc.credential = credential.as_bytes().to_vec();
    ClusterClient::connect(cc, monotonic_ns)
}

/// A process on the network that speaks the wire format but holds no token.
struct Stranger {
    socket: UdpSocket,
}

impl Stranger {
    fn new() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        Self { socket }
    }

    fn send(&self, to: &str, session_id: u64, message: &Message<'_>) {
        let mut datagram = b"RLN1".to_vec();
        datagram.extend_from_slice(&9u32.to_le_bytes());
        let mut frame = vec![0u8; message.encoded_len()];
        message.encode(
            FrameMeta {
                session_id,
                ..FrameMeta::default()
            },
            &mut frame,
        );
        datagram.extend_from_slice(&frame);
        self.socket.send_to(&datagram, to).unwrap();
    }

    /// Client events received until the socket is quiet.
    fn events(&self) -> Vec<(u64, ClientEventKind, u64)> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 70_000];
        while let Ok(n) = self.socket.recv(&mut buf) {
            for (_, frame) in Frames::new(&buf[8..n]).map_while(Result::ok) {
                if let Ok(Message::ClientEvent(EventBody {
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
}

fn counter(m: &Member, c: Counter) -> u64 {
    m.counters().map_or(0, |r| r.get(c))
}

fn raftline_cluster(config: &std::path::Path, command: &str) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftline"))
        .args(["cluster", command, "--config"])
        .arg(config)
        .env_remove("RAFTLINE_ADMIN_TOKEN")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn clients_and_operators_need_their_tokens_and_a_stranger_cannot_touch_a_session() {
    let tmp = tempfile::tempdir().unwrap();
    let client_token = tmp.path().join("client.token");
    let admin_token = tmp.path().join("admin.token");
    std::fs::write(&client_token, format!("{CLIENT_TOKEN}\n")).unwrap();
    std::fs::write(&admin_token, format!("{ADMIN_TOKEN}\n")).unwrap();
    let extra = format!(
        "[access]\nclient_token_file = \"{}\"\nadmin_token_file = \"{}\"\n",
        client_token.display(),
        admin_token.display()
    );
    let (mut members, addrs) = cluster(tmp.path(), &extra);
    for m in &mut members {
        m.start();
    }
    // The right token connects and commits.
    let mut good = wait_for("a connect with the token", Duration::from_secs(20), || {
        client_with(&addrs, CLIENT_TOKEN).ok()
    });
    let mut acked = BTreeSet::new();
    stream(&mut good, &mut acked, 100);
    let l = wait_for("a leader", Duration::from_secs(10), || leader(&members));

    // No token, or a wrong one: refused, and the error says what to set.
    for credential in ["", "client-token-0123456789abcdeX"] {
        match client_with(&addrs, credential) {
            Err(e @ ClientError::Unauthenticated { .. }) => {
                assert!(e.to_string().contains("client token"), "{e}")
            }
            Err(e) => panic!("expected a refusal of the credential, got {e}"),
            Ok(_) => panic!("a connect with credential {credential:?} was accepted"),
        }
    }
    wait_for(
        "the refused connects counted",
        Duration::from_secs(5),
        || (counter(&members[l], Counter::ConnectsUnauthenticated) >= 2).then_some(()),
    );

    // A stranger's frames for the good client's session, sent to the leader: a keep-alive (to
    // steal its replies), a message (to forge one) and a close. None is taken.
    let stranger = Stranger::new();
    let session = good.session_id();
    let to = &addrs[l];
    stranger.send(
        to,
        session,
        &Message::SessionKeepAlive(SessionKeepAlive {
            session_id: session,
        }),
    );
    stranger.send(
        to,
        session,
        &Message::SessionMessage {
            header: SessionMessageHeader {
                sequence: good.next_sequence(),
            },
            payload: b"forged",
        },
    );
    stranger.send(
        to,
        session,
        &Message::SessionClose(SessionClose {
            reason: CloseReason::ClientAction as u8,
        }),
    );
    let told = stranger.events();
    assert!(
        told.iter().all(|e| e.1 == ClientEventKind::Unbound),
        "the stranger hears only that it is not bound: {told:?}"
    );
    wait_for("the refusals counted", Duration::from_secs(5), || {
        (counter(&members[l], Counter::SessionFramesUnbound) >= 3).then_some(())
    });
    // The session is still open, its replies still reach its client, and nothing forged was
    // applied (every acknowledged sequence is one the client offered).
    stream(&mut good, &mut acked, 200);
    assert_eq!(acked, (1..=200).collect::<BTreeSet<u64>>());
    assert_eq!(good.closed(), None);

    // An operator without the admin token is refused, by name, and the cluster goes on.
    let stranger_config = tmp.path().join("stranger.toml");
    let text = std::fs::read_to_string(&members[0].config).unwrap();
    let text = text.replace(
        &format!("admin_token_file = \"{}\"\n", admin_token.display()),
        "",
    );
    std::fs::write(&stranger_config, text).unwrap();
    for command in ["shutdown", "step-down", "describe"] {
        let (ok, said) = raftline_cluster(&stranger_config, command);
        assert!(!ok, "{command} without the admin token succeeded");
        assert!(said.contains("admin credential"), "{command}: {said}");
    }
    // The command asks whichever member answers first, not necessarily the leader.
    wait_for(
        "the refused admin requests counted",
        Duration::from_secs(5),
        || {
            let refused: u64 = members
                .iter()
                .map(|m| counter(m, Counter::AdminRefused))
                .sum();
            (refused >= 2).then_some(())
        },
    );
    assert!(members
        .iter()
        .any(|m| m.said().contains("refused an admin request")));
    stream(&mut good, &mut acked, 300);
    assert!(members.iter_mut().all(|m| m
        .child
        .as_mut()
        .is_some_and(|c| c.try_wait().unwrap().is_none())));
    let (ok, said) = raftline_cluster(&members[0].config, "describe");
    assert!(ok, "describe with the admin token: {said}");
}

#[test]
fn floods_of_sessions_and_keep_alives_are_bounded_and_long_messages_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = "[session]\nmax_sessions_per_source = 4\nmax_message_bytes = 4000\n[transport]\nmax_datagram_bytes = 65000\n";
    let (mut members, addrs) = cluster(tmp.path(), extra);
    for m in &mut members {
        m.start();
    }
    let mut good = wait_for("a connect", Duration::from_secs(20), || {
        client_with(&addrs, "").ok()
    });
    let mut acked = BTreeSet::new();
    stream(&mut good, &mut acked, 50);
    let l = wait_for("a leader", Duration::from_secs(10), || leader(&members));
    let to = &addrs[l];

    // One source opens 50 sessions: 4 open, the rest are refused.
    let stranger = Stranger::new();
    for s in 1..=50u64 {
        stranger.send(
            to,
            s,
            &Message::ClientConnect {
                connect: ClientConnect {
                    correlation_id: s,
                    session_id: 1000 + s,
                },
                credential: b"",
            },
        );
    }
    let start = Instant::now();
    let mut told = Vec::new();
    while told.len() < 50 && start.elapsed() < Duration::from_secs(5) {
        told.extend(stranger.events());
    }
    let opened = told
        .iter()
        .filter(|e| e.1 == ClientEventKind::Opened)
        .count();
    let limited = told
        .iter()
        .filter(|e| e.1 == ClientEventKind::SessionLimit)
        .count();
    assert_eq!((opened, limited), (4, 46), "{told:?}");
    wait_for(
        "the refused sessions counted",
        Duration::from_secs(5),
        || (counter(&members[l], Counter::SessionsRefused) == 46).then_some(()),
    );

    // 20 000 keep-alives for sessions that were never opened: answered, never stored or
    // appended; the log grows only by what the good client sends.
    let appended = counter(&members[l], Counter::AppendedPosition);
    for s in 0..20_000u64 {
        stranger.send(
            to,
            0,
            &Message::SessionKeepAlive(SessionKeepAlive {
                session_id: 1 << 40 | s,
            }),
        );
        if s % 500 == 0 {
            stranger.events();
        }
    }
    stranger.events();
    wait_for("the keep-alives counted", Duration::from_secs(10), || {
        (counter(&members[l], Counter::SessionFramesUnbound) >= 15_000).then_some(())
    });
    assert_eq!(counter(&members[l], Counter::AppendedPosition), appended);

    // A message over session.max_message_bytes: refused to the client by sequence, never
    // appended; the next ones commit.
    let sequence = good.offer(monotonic_ns(), &vec![7u8; 5000]).unwrap();
    let start = Instant::now();
    let mut refused = false;
    while !refused {
        assert!(start.elapsed() < Duration::from_secs(10), "no TooLarge");
        good.poll(monotonic_ns(), |e| {
            refused |= e == ClientEvent::TooLarge { sequence };
        });
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(good.outstanding(), 0, "a refused message is not resent");
    wait_for("the long message counted", Duration::from_secs(5), || {
        (counter(&members[l], Counter::MessagesTooLarge) == 1).then_some(())
    });
    let mut more = BTreeSet::new();
    stream(&mut good, &mut more, 50);
}
