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
}

impl Datagrams for SimEndpoint {
    fn send(&mut self, to: u32, bytes: &[u8]) -> bool {
        self.outgoing.push((to, bytes.to_vec()));
        true
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
