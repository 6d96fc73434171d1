//! A node's network: member traffic over shared-memory or in-process rings when configured,
//! everything else (clients, and members when no rings are) over UDP.

use std::os::fd::RawFd;

use crate::io::{Datagrams, CLIENT_ENDPOINT_BASE};
use crate::ring::mapped::MappedMemory;
use crate::ring::records::{HeapMemory, RingMemory};
use crate::sys::links::{LinkStats, MemberLinks};
use crate::sys::udp::UdpTransport;

/// Member links of either memory, behind one type.
pub trait Links: Datagrams + Send {
    fn wake_fd(&self) -> RawFd;
    fn set_reader_blocks(&mut self, blocks: bool);
    fn stats(&self) -> LinkStats;
}

impl<M: RingMemory> Links for MemberLinks<M>
where
    MemberLinks<M>: Send,
{
    fn wake_fd(&self) -> RawFd {
        MemberLinks::wake_fd(self)
    }
    fn set_reader_blocks(&mut self, blocks: bool) {
        MemberLinks::set_reader_blocks(self, blocks)
    }
    fn stats(&self) -> LinkStats {
        MemberLinks::stats(self)
    }
}

/// What the node's `Datagrams` are made of.
pub struct NodeNet {
    udp: UdpTransport,
    links: Option<Box<dyn Links>>,
}

/// Links in one process (tests, in-process clusters).
pub type InProcessLinks = MemberLinks<HeapMemory>;
/// Links between processes on one host.
pub type IpcLinks = MemberLinks<MappedMemory>;

impl NodeNet {
    pub fn new(udp: UdpTransport, links: Option<Box<dyn Links>>) -> Self {
        Self { udp, links }
    }
    pub fn udp(&self) -> &UdpTransport {
        &self.udp
    }
    pub fn udp_mut(&mut self) -> &mut UdpTransport {
        &mut self.udp
    }
    pub fn links(&self) -> Option<&dyn Links> {
        self.links.as_deref()
    }
    /// What members carry their traffic over, for reports.
    pub fn describe(&self) -> &'static str {
        if self.links.is_some() {
            "rings"
        } else {
            "udp"
        }
    }
}

impl Datagrams for NodeNet {
    fn send(&mut self, to: u32, bytes: &[u8]) -> bool {
        match &mut self.links {
            Some(links) if to < CLIENT_ENDPOINT_BASE => links.send(to, bytes),
            _ => self.udp.send(to, bytes),
        }
    }

    fn receive(&mut self, buf: &mut [u8]) -> Option<(u32, usize)> {
        if let Some(links) = &mut self.links {
            if let Some(got) = links.receive(buf) {
                return Some(got);
            }
        }
        self.udp.receive(buf)
    }

    fn flush(&mut self) {
        if let Some(links) = &mut self.links {
            links.flush();
        }
        self.udp.flush();
    }

    /// What senders chunk the log by: that is member traffic, so the links' limit when
    /// members use them (client frames are bounded by the client's own UDP limit).
    fn max_payload(&self) -> usize {
        match &self.links {
            Some(links) => links.max_payload(),
            None => self.udp.max_payload(),
        }
    }
}
