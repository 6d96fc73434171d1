//! The monotonic clock the runtime reads once per duty cycle.

/// Nanoseconds on the system's monotonic clock (CLOCK_MONOTONIC, since boot): the same clock
/// in every process on the host, so nodes' log lines and a harness's records line up.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
