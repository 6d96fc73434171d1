//! A simulated [`Datagrams`] endpoint: the cluster harness moves datagrams between endpoints
//! and decides their fate (loss, duplication, delay, partitions).

use std::collections::VecDeque;

use crate::io::Datagrams;

/// One member's end of the simulated network.
#[derive(Debug, Default)]
pub struct SimEndpoint {
    /// Datagrams the member sent, to be taken by the harness.
    pub outgoing: Vec<(u32, Vec<u8>)>,
    /// Datagrams delivered to the member, oldest first.
    /// Datagrams waiting to be received; fill through [`SimEndpoint::deliver`].
    incoming: VecDeque<(u32, Vec<u8>)>,
    /// The largest datagram the network carries (0: any); larger sends are dropped, as a
    /// UDP socket drops them, and counted.
    pub max_datagram: usize,
    pub oversized_dropped: u64,
    /// Bytes waiting in `incoming`; beyond [`RECEIVE_BUFFER_BYTES`] deliveries are dropped,
    /// as a full socket receive buffer drops them (counted).
    incoming_bytes: usize,
    pub receive_overflows: u64,
}

/// What a member's receive buffer holds before the network drops what arrives (a socket
/// buffer raised to a few MiB, as `raftline-tune` recommends).
pub const RECEIVE_BUFFER_BYTES: usize = 8 << 20;

impl SimEndpoint {
    pub fn with_max_datagram(max_datagram: usize) -> Self {
        Self {
            max_datagram,
            ..Self::default()
        }
    }
}

impl SimEndpoint {
    /// The network hands the member a datagram (dropped when its receive buffer is full).
    pub fn deliver(&mut self, from: u32, bytes: Vec<u8>) {
        if self.incoming_bytes + bytes.len() > RECEIVE_BUFFER_BYTES {
            self.receive_overflows += 1;
            return;
        }
        self.incoming_bytes += bytes.len();
        self.incoming.push_back((from, bytes));
    }
}

impl Datagrams for SimEndpoint {
    fn send(&mut self, to: u32, bytes: &[u8]) -> bool {
        if self.max_datagram > 0 && bytes.len() > self.max_datagram {
            self.oversized_dropped += 1;
            return false;
        }
        self.outgoing.push((to, bytes.to_vec()));
        true
    }

    fn max_payload(&self) -> usize {
        if self.max_datagram > 0 {
            self.max_datagram
        } else {
            usize::MAX
        }
    }

    fn receive(&mut self, buf: &mut [u8]) -> Option<(u32, usize)> {
        loop {
            let (from, bytes) = self.incoming.pop_front()?;
            self.incoming_bytes -= bytes.len();
            if bytes.len() <= buf.len() {
                buf[..bytes.len()].copy_from_slice(&bytes);
                return Some((from, bytes.len()));
            }
        }
    }
}
