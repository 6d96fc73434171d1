//! Linux implementations of the seams. Thin: everything hard to get right lives in code the
//! simulator drives; this layer only talks to the kernel.

pub mod clock;
pub mod cost;
pub mod disk;
pub mod files;
pub mod links;
pub mod net;
pub mod record;
pub mod udp;

pub use disk::{LinuxDisk, LinuxDiskOptions, WriterMode};
pub use links::{in_process_links, ipc_links, LinkStats, MemberLinks};
pub use net::{InProcessLinks, IpcLinks, Links, NodeNet};
pub use udp::{UdpStats, UdpTransport, SAFE_MTU_DATAGRAM};

// The core names the OS error numbers without libc; they must be the kernel's.
const _: () = {
    use crate::io::errno as e;
    assert!(e::EPERM == libc::EPERM && e::ENOENT == libc::ENOENT && e::EIO == libc::EIO);
    assert!(e::EINVAL == libc::EINVAL && e::ENOSPC == libc::ENOSPC && e::ENOSYS == libc::ENOSYS);
    assert!(e::EBADMSG == libc::EBADMSG && e::EDQUOT == libc::EDQUOT);
};
