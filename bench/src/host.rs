//! What the harness needs from the host, shared by its commands: the node binary to start,
//! and waiting on a socket.

use std::os::fd::RawFd;
use std::path::PathBuf;

/// The `raftline` node binary: `given`, or the one next to this program, or in target/.
pub fn find_node_bin(given: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(p) = given {
        return Ok(p);
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut candidates = Vec::new();
    for dir in exe.ancestors().skip(1).take(3) {
        candidates.push(dir.join("raftline"));
    }
    candidates.push(PathBuf::from("target/release/raftline"));
    candidates.push(PathBuf::from("target/debug/raftline"));
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        "no `raftline` node binary found next to this program or in target/: build it with \
             `cargo build --release -p raftline` or pass --node-bin"
            .into()
    })
}

/// Blocks until `fd` is readable or `timeout_ns` passes.
pub fn wait_readable(fd: RawFd, timeout_ns: u64) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: (timeout_ns / 1_000_000_000) as i64,
        tv_nsec: (timeout_ns % 1_000_000_000) as i64,
    };
    // SAFETY: one valid pollfd and a valid timespec for the duration of the call.
    unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
}
