//! Simulated clients: each offers messages with increasing sequence numbers, resends across
//! failover and redirects, and records what the cluster acknowledged, for the exactly-once
//! checker.

use super::*;

#[derive(Debug)]
pub(super) enum ClientRequest {
    Open { session: u64 },
    Message { session: u64, sequence: u64 },
}

#[derive(Debug)]
pub(super) enum ClientResponse {
    Redirect { leader: Option<MemberId> },
    Egress(Egress),
}

#[derive(Debug)]
pub(super) struct Client {
    /// The shipped client protocol, when the seed uses it (see `SimConfig::client_core`).
    pub(super) core: Option<ClientCore<SimEndpoint>>,
    pub(super) session: u64,
    pub(super) target: MemberId,
    pub(super) opened: bool,
    pub(super) last_open_ns: Option<u64>,
    /// A redirect arrived since the target last changed: keep the target it named.
    pub(super) redirected: bool,
    /// Last time the client heard a useful answer (an ack, an open).
    pub(super) last_progress_ns: u64,
    pub(super) last_new_ns: u64,
    pub(super) next_sequence: u64,
    /// Sent, not yet acknowledged: sequence → last sent at.
    pub(super) unacked: BTreeMap<u64, u64>,
    pub(super) acked: BTreeSet<u64>,
}

/// The payload of message `sequence` of `session`: its sequence and session (what the service
/// records), then filler. Some seeds send large messages, so the log spans several segments:
/// snapshots, retired segments and snapshot installs for lagging members get exercised.
pub(super) fn message_payload(config: &SimConfig, session: u64, sequence: u64) -> Vec<u8> {
    let mut payload = sequence.to_le_bytes().to_vec();
    payload.extend_from_slice(&session.to_le_bytes());
    let filler = match config.seed % 8 {
        _ if config.message_bytes > 0 => config.message_bytes - 16,
        0 | 4 => 2000,
        6 => 6_000, // small_datagrams()
        _ => 0,
    };
    payload.resize(payload.len() + filler, (sequence % 251) as u8);
    payload
}

impl Cluster {
    pub(super) fn deliver_request(&mut self, to: MemberId, client: usize, request: ClientRequest) {
        let now = self.local_now(to as usize);
        let Some(node) = self.members[to as usize].node.as_mut() else {
            return;
        };
        let result = match request {
            ClientRequest::Open { session } => node.open_session(now, session, session),
            ClientRequest::Message { session, sequence } => {
                let payload = message_payload(&self.config, session, sequence);
                node.offer(now, session, sequence, &payload)
            }
        };
        if let Err(OfferError::NotLeader { leader }) = result {
            let at = self.now_ns + self.delay();
            self.schedule(
                at,
                Event::Response {
                    client,
                    response: ClientResponse::Redirect { leader },
                },
            );
        }
    }

    pub(super) fn deliver_response(&mut self, client: usize, response: ClientResponse) {
        let n = self.members.len() as u64;
        let c = &mut self.clients[client];
        match response {
            ClientResponse::Redirect { leader } => {
                c.target = leader.unwrap_or_else(|| ((c.target as u64 + 1) % n) as MemberId);
                c.redirected = true;
            }
            ClientResponse::Egress(Egress::SessionOpened { .. }) => {
                c.opened = true;
                c.last_progress_ns = self.now_ns;
            }
            ClientResponse::Egress(Egress::Applied { sequence, .. }) => {
                c.last_progress_ns = self.now_ns;
                c.unacked.remove(&sequence);
                c.acked.insert(sequence);
            }
            ClientResponse::Egress(Egress::Message { .. })
            | ClientResponse::Egress(Egress::SessionClosed { .. })
            | ClientResponse::Egress(Egress::SnapshotTaken { .. })
            | ClientResponse::Egress(Egress::Shutdown { .. }) => {}
        }
    }

    pub(super) fn step_clients(&mut self) {
        const RESEND_NS: u64 = 40 * MS;
        const GIVE_UP_ON_TARGET_NS: u64 = 120 * MS;
        const OUTSTANDING: usize = 3;
        // New messages are paced so the workload spans the faulty phase.
        const PACE_NS: u64 = 40 * MS;
        let n = self.members.len() as u64;
        for i in 0..self.clients.len() {
            if self.clients[i].core.is_some() {
                self.step_core_client(i, OUTSTANDING, PACE_NS);
                continue;
            }
            let mut requests = Vec::new();
            let c = &mut self.clients[i];
            // No answer from the target for a while and no redirect: try the next member.
            if self.now_ns - c.last_progress_ns >= GIVE_UP_ON_TARGET_NS {
                if !c.redirected {
                    c.target = ((c.target as u64 + 1) % n) as MemberId;
                }
                c.redirected = false;
                c.last_progress_ns = self.now_ns;
            }
            if !c.opened {
                if c.last_open_ns.is_none_or(|t| self.now_ns - t >= RESEND_NS) {
                    c.last_open_ns = Some(self.now_ns);
                    requests.push(ClientRequest::Open { session: c.session });
                }
            } else {
                for (&sequence, sent) in c.unacked.iter_mut() {
                    if self.now_ns - *sent >= RESEND_NS {
                        *sent = self.now_ns;
                        requests.push(ClientRequest::Message {
                            session: c.session,
                            sequence,
                        });
                    }
                }
                if c.unacked.len() < OUTSTANDING
                    && c.next_sequence <= self.config.messages_per_client
                    && self.now_ns - c.last_new_ns >= PACE_NS
                {
                    let sequence = c.next_sequence;
                    c.next_sequence += 1;
                    c.last_new_ns = self.now_ns;
                    c.unacked.insert(sequence, self.now_ns);
                    requests.push(ClientRequest::Message {
                        session: c.session,
                        sequence,
                    });
                }
            }
            let to = self.clients[i].target;
            for request in requests {
                let at = self.now_ns + self.delay();
                self.schedule(
                    at,
                    Event::Request {
                        to,
                        client: i,
                        request,
                    },
                );
            }
        }
    }

    /// A client that speaks the shipped protocol: it polls its core (which resends, follows
    /// redirects and re-binds on its own), offers the next message when the window allows,
    /// and its datagrams go out through the simulated network's loss, duplication and delay.
    fn step_core_client(&mut self, i: usize, outstanding: usize, pace_ns: u64) {
        let now = self.now_ns;
        let faulty = self.step < self.config.safety_steps;
        let config = &self.config;
        let c = &mut self.clients[i];
        let core = c.core.as_mut().expect("a client of the protocol");
        let mut acked = Vec::new();
        core.poll(now, |e| {
            if let ClientEvent::Applied { sequence } = e {
                acked.push(sequence);
            }
        });
        for sequence in acked {
            c.acked.insert(sequence);
            c.last_progress_ns = now;
        }
        c.opened = core.is_open();
        if core.is_open()
            && core.outstanding() < outstanding
            && core.next_sequence() <= config.messages_per_client
            && now - c.last_new_ns >= pace_ns
        {
            let payload = message_payload(config, c.session, core.next_sequence());
            if core.offer(now, &payload).is_ok() {
                c.last_new_ns = now;
            }
        }
        c.next_sequence = core.next_sequence();
        let outgoing = std::mem::take(&mut core.net_mut().outgoing);
        for (to, bytes) in outgoing {
            if to as usize >= self.members.len() || (faulty && self.rng.chance(self.faults.loss)) {
                continue;
            }
            let copies = if faulty && self.rng.chance(self.faults.duplication) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let at = now + if faulty { self.delay() } else { 100_000 };
                self.schedule(
                    at,
                    Event::FromClient {
                        client: i,
                        to,
                        bytes: bytes.clone(),
                    },
                );
            }
        }
    }
}
