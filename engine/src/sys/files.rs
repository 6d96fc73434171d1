//! File helpers the runtime uses off the hot path (segment preparation).

/// Creates `dir/name` zero-filled to `len` bytes, durably (temporary name, O_DIRECT writes,
/// fsync, rename, fsync of the directory).
pub fn zero_filled_file(dir: &std::path::Path, name: &str, len: u64) -> std::io::Result<()> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let tmp = dir.join(format!("{name}.creating"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&tmp)
        .or_else(|_| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&tmp)
        })?;
    let zeros = crate::io::AlignedBuf::new(1 << 20);
    let mut at = 0;
    while at < len {
        let n = (len - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}
