//! Datagrams with a forged source address, sent through a raw IPv4 socket: what an attacker on
//! the path (or on the host, with CAP_NET_RAW) can send "from" a member.

use std::net::SocketAddrV4;

use raftline::codec::{FrameMeta, Message};

/// A raw socket that writes its own IPv4 and UDP headers.
pub struct Spoofer {
    fd: i32,
}

impl Spoofer {
    /// `None` (with the reason) where the host does not allow raw sockets.
    pub fn open() -> Result<Self, String> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        Ok(Self { fd })
    }

    /// Sends `payload` as a UDP datagram from `from` to `to`.
    pub fn send(&self, from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) {
        let udp_len = 8 + payload.len();
        let total = 20 + udp_len;
        let mut packet = Vec::with_capacity(total);
        // IPv4 header: version 4, IHL 5; the kernel fills the checksum (and the id when 0).
        packet.extend_from_slice(&[0x45, 0]);
        packet.extend_from_slice(&(total as u16).to_be_bytes());
        packet.extend_from_slice(&[0, 0, 0x40, 0]); // id 0, don't fragment
        packet.extend_from_slice(&[64, libc::IPPROTO_UDP as u8, 0, 0]);
        packet.extend_from_slice(&from.ip().octets());
        packet.extend_from_slice(&to.ip().octets());
        // UDP header; checksum 0 means none (allowed over IPv4).
        packet.extend_from_slice(&from.port().to_be_bytes());
        packet.extend_from_slice(&to.port().to_be_bytes());
        packet.extend_from_slice(&(udp_len as u16).to_be_bytes());
        packet.extend_from_slice(&[0, 0]);
        packet.extend_from_slice(payload);
        let dest = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(to.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: `packet` and `dest` outlive the call and the lengths passed are theirs.
        let n = unsafe {
            libc::sendto(
                self.fd,
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&dest as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        assert_eq!(
            n as usize,
            packet.len(),
            "raw send: {}",
            std::io::Error::last_os_error()
        );
    }
}

impl Drop for Spoofer {
    fn drop(&mut self) {
        // SAFETY: `fd` is ours and closed once.
        unsafe { libc::close(self.fd) };
    }
}

/// A member datagram of cluster `cluster_id` carrying `messages`, as a member without the key
/// would send it (unsealed).
pub fn member_datagram(cluster_id: u32, term: u64, messages: &[Message<'_>]) -> Vec<u8> {
    let mut datagram = b"RLN1".to_vec();
    datagram.extend_from_slice(&cluster_id.to_le_bytes());
    for m in messages {
        let mut frame = vec![0u8; m.encoded_len()];
        m.encode(
            FrameMeta {
                term,
                ..FrameMeta::default()
            },
            &mut frame,
        );
        datagram.extend_from_slice(&frame);
    }
    datagram
}
