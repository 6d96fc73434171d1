//! Linux implementations of the seams. Thin: everything hard to get right lives in code the
//! simulator drives; this layer only talks to the kernel.

pub mod disk;
pub mod links;
pub mod net;
pub mod record;
pub mod udp;

pub use disk::{LinuxDisk, LinuxDiskOptions, WriterMode};
pub use links::{in_process_links, ipc_links, LinkStats, MemberLinks};
pub use net::{InProcessLinks, IpcLinks, Links, NodeNet};
pub use udp::{UdpStats, UdpTransport, SAFE_MTU_DATAGRAM};
