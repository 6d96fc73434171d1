//! The operator's side of the admin channel: commands sent over UDP to the members' client
//! endpoints, answered by each member with its state. `raftline cluster ...` is built on it.
//!
//! Commands other than `describe` act on the leader: a member that does not lead answers
//! `NotLeader` naming the leader it knows, and the command is sent there.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::codec::message::{AdminCommand, AdminRequest, AdminResponse, AdminStatus};
use crate::codec::{FrameMeta, Frames, Message};
use crate::consensus::Role;
use crate::io::Datagrams;
use crate::sys::UdpTransport;

/// One member's state, as it answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberState {
    pub member_id: u32,
    pub role: Role,
    pub leader: Option<u32>,
    pub term: u64,
    pub appended: u64,
    pub commit: u64,
    pub applied: u64,
    pub snapshots: u64,
    pub digest_mismatches: u64,
}

impl MemberState {
    fn of(r: &AdminResponse) -> Self {
        Self {
            member_id: r.member_id,
            role: Role::from_code(r.role),
            leader: (r.leader != u32::MAX).then_some(r.leader),
            term: r.term,
            appended: r.appended,
            commit: r.commit,
            applied: r.applied,
            snapshots: r.snapshots,
            digest_mismatches: r.digest_mismatches,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no member answered within {0:?}; check the member addresses and the cluster id")]
    NoAnswer(Duration),
    #[error("no leader found within {0:?} (an election may be under way; retry)")]
    NoLeader(Duration),
    #[error("the leader, member {member}, refused: {why}")]
    Refused { member: u32, why: &'static str },
    #[error("member {member} refused the admin credential: set [access] admin_token_file (or RAFTLINE_ADMIN_TOKEN) to the cluster's admin token")]
    Unauthorized { member: u32 },
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

/// Sends admin commands to a cluster.
pub struct AdminClient {
    transport: UdpTransport,
    members: usize,
    next_correlation: u64,
    buf: Vec<u8>,
    credential: Vec<u8>,
}

impl AdminClient {
    pub fn connect(members: Vec<SocketAddr>, cluster_id: u32) -> Result<Self, AdminError> {
        let bind: SocketAddr = if members.first().is_some_and(|a| a.is_ipv6()) {
            "[::]:0".parse().expect("valid")
        } else {
            "0.0.0.0:0".parse().expect("valid")
        };
        let n = members.len();
        let transport = UdpTransport::bind(bind, members, cluster_id, 1472)?;
        Ok(Self {
            transport,
            members: n,
            next_correlation: 1,
            buf: vec![0u8; 2048],
            credential: Vec::new(),
        })
    }

    /// How many members this client addresses.
    pub fn member_count(&self) -> usize {
        self.members
    }

    /// Presents `credential` (the cluster's admin token) with every request.
    pub fn with_credential(mut self, credential: Vec<u8>) -> Self {
        self.credential = credential;
        self
    }

    /// Sends `command` to member `to` without waiting; returns its correlation id (the answer
    /// comes through [`AdminClient::poll`]).
    pub fn send(&mut self, to: u32, command: AdminCommand, target: u32) -> u64 {
        let correlation_id = self.next_correlation;
        self.next_correlation += 1;
        let request = Message::AdminRequest {
            request: AdminRequest {
                correlation_id,
                command: command as u8,
                target,
            },
            credential: &self.credential,
        };
        let len = request.encode(FrameMeta::default(), &mut self.buf);
        self.transport.send(to, &self.buf[..len]);
        self.transport.flush();
        correlation_id
    }

    /// Answers received so far, without waiting.
    pub fn poll(&mut self, mut on_answer: impl FnMut(&AdminResponse)) {
        let mut recv = std::mem::take(&mut self.buf);
        recv.resize(70_000, 0);
        while let Some((_, len)) = self.transport.receive(&mut recv) {
            for (_, frame) in Frames::new(&recv[..len]).map_while(Result::ok) {
                if let Ok(Message::AdminResponse(r)) = Message::decode(&frame) {
                    on_answer(&r);
                }
            }
        }
        self.buf = recv;
    }

    /// Waits up to `timeout` for answers to `correlation`; each goes to `on_answer` until it
    /// returns true.
    fn await_answers(
        &mut self,
        correlation: &[u64],
        timeout: Duration,
        mut on_answer: impl FnMut(&AdminResponse) -> bool,
    ) -> bool {
        let start = Instant::now();
        let mut done = false;
        while !done && start.elapsed() < timeout {
            self.poll(|r| {
                if !done && correlation.contains(&r.correlation_id) {
                    done = on_answer(r);
                }
            });
            if !done {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        done
    }

    /// Every member's state (`None` for a member that did not answer within `timeout`).
    /// A member that refused the credential is an error.
    pub fn describe(&mut self, timeout: Duration) -> Result<Vec<Option<MemberState>>, AdminError> {
        let ids: Vec<u64> = (0..self.members as u32)
            .map(|m| self.send(m, AdminCommand::Describe, 0))
            .collect();
        let mut states = vec![None; self.members];
        let mut refused = None;
        let n = self.members;
        self.await_answers(&ids, timeout, |r| {
            if r.status == AdminStatus::Unauthorized as u8 {
                refused = Some(r.member_id);
                return true;
            }
            if let Some(slot) = states.get_mut(r.member_id as usize) {
                *slot = Some(MemberState::of(r));
            }
            states.iter().filter(|s| s.is_some()).count() == n
        });
        match refused {
            Some(member) => Err(AdminError::Unauthorized { member }),
            None => Ok(states),
        }
    }

    /// Runs `command` on the leader, following redirects, for up to `timeout`. Returns the
    /// leader's state and the command's value (a log position, or the member handed to).
    pub fn on_leader(
        &mut self,
        command: AdminCommand,
        target: u32,
        timeout: Duration,
    ) -> Result<(MemberState, u64), AdminError> {
        let start = Instant::now();
        let mut to = 0u32;
        let mut heard = false;
        while start.elapsed() < timeout {
            let id = self.send(to, command, target);
            let mut answer = None;
            self.await_answers(&[id], Duration::from_millis(200), |r| {
                answer = Some(*r);
                true
            });
            let Some(r) = answer else {
                to = (to + 1) % self.members as u32;
                continue;
            };
            heard = true;
            match r.status {
                s if s == AdminStatus::Done as u8 => return Ok((MemberState::of(&r), r.value)),
                s if s == AdminStatus::Unauthorized as u8 => {
                    return Err(AdminError::Unauthorized {
                        member: r.member_id,
                    })
                }
                s if s == AdminStatus::NotLeader as u8 => {
                    to = if r.leader != u32::MAX && r.leader != r.member_id {
                        r.leader
                    } else {
                        std::thread::sleep(Duration::from_millis(20));
                        (to + 1) % self.members as u32
                    };
                }
                _ => {
                    return Err(AdminError::Refused {
                        member: r.member_id,
                        why: match command {
                            AdminCommand::TransferLeader => {
                                "no such member, or a transfer is already under way"
                            }
                            AdminCommand::StepDown => {
                                "no caught-up follower, or a transfer is already under way"
                            }
                            _ => "its log is full or a transfer is under way; retry",
                        },
                    })
                }
            }
        }
        Err(if heard {
            AdminError::NoLeader(timeout)
        } else {
            AdminError::NoAnswer(timeout)
        })
    }
}
