//! The interface a peer Raft implementation offers `compare`: one load run at a rate.

use raftline::log::Durability;

/// One load run of a peer: `rate` msg/s of `size` bytes for `warmup_s` (discarded) and then
/// `seconds`, its files under `dir`.
#[cfg_attr(not(feature = "peer-openraft"), allow(dead_code))]
pub struct PeerRun<'a> {
    pub durability: Durability,
    pub dir: &'a std::path::Path,
    pub rate: u64,
    pub size: usize,
    pub warmup_s: f64,
    pub seconds: f64,
}
