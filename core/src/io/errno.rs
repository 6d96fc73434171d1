//! The Linux error numbers the seams report, so the core names them without linking libc.
//!
//! [`DiskError`](super::DiskError) carries an OS error number because the real disk reports one;
//! the simulated disk reports the same numbers for the same faults. The values are the kernel's
//! (asm-generic/errno-base.h, errno.h); `sys` checks them against libc at compile time.

pub const EPERM: i32 = 1;
pub const ENOENT: i32 = 2;
pub const EIO: i32 = 5;
pub const EINVAL: i32 = 22;
pub const ENOSPC: i32 = 28;
pub const ENOSYS: i32 = 38;
pub const EBADMSG: i32 = 74;
pub const EDQUOT: i32 = 122;
