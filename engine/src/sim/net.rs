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
    pub incoming: VecDeque<(u32, Vec<u8>)>,
    /// The largest datagram the network carries (0: any); larger sends are dropped, as a
    /// UDP socket drops them, and counted.
    pub max_datagram: usize,
    pub oversized_dropped: u64,
}

impl SimEndpoint {
    pub fn with_max_datagram(max_datagram: usize) -> Self {
        Self {
            max_datagram,
            ..Self::default()
        }
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
            if bytes.len() <= buf.len() {
                buf[..bytes.len()].copy_from_slice(&bytes);
                return Some((from, bytes.len()));
            }
        }
    }
}
