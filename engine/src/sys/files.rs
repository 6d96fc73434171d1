//! Whole-file operations on a directory ([`DirFiles`], the `io::Files` seam on Linux), and the
//! zero-filled file maker the segment preparer uses. Off the hot path.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::io::{DiskError, Files};

fn io_err(op: &'static str) -> impl Fn(std::io::Error) -> DiskError {
    move |e| DiskError::from_io(op, &e)
}

/// Makes the directory's entries durable (a rename, a create or an unlink).
pub fn fsync_dir(dir: &Path) -> Result<(), DiskError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory"))
}

/// The whole-file operations on one directory. What the log's disk does for its small files,
/// and all a thread that only writes snapshots needs.
#[derive(Clone, Debug)]
pub struct DirFiles {
    dir: PathBuf,
}

impl DirFiles {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Files for DirFiles {
    fn list(&mut self) -> Result<Vec<String>, DiskError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(DiskError::from_io("list directory", &e)),
        };
        let mut names = Vec::new();
        for e in entries {
            let e = e.map_err(io_err("list directory"))?;
            names.push(e.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn write_file_atomic(&mut self, name: &str, bytes: &[u8]) -> Result<(), DiskError> {
        std::fs::create_dir_all(&self.dir).map_err(io_err("create directory"))?;
        let tmp = self.dir.join(format!("{name}.creating"));
        let f = File::create(&tmp).map_err(io_err("create"))?;
        f.write_all_at(bytes, 0).map_err(io_err("write"))?;
        f.sync_all().map_err(io_err("fsync"))?;
        std::fs::rename(&tmp, self.dir.join(name)).map_err(io_err("rename"))?;
        fsync_dir(&self.dir)
    }

    fn read_file(&mut self, name: &str) -> Result<Option<Vec<u8>>, DiskError> {
        match std::fs::read(self.dir.join(name)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DiskError::from_io("read", &e)),
        }
    }

    fn remove(&mut self, name: &str) -> Result<(), DiskError> {
        match std::fs::remove_file(self.dir.join(name)) {
            Ok(()) => fsync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(DiskError::from_io("remove", &e)),
        }
    }
}

/// Creates `dir/name` zero-filled to `len` bytes, durably (temporary name, O_DIRECT writes,
/// fsync, rename, fsync of the directory).
pub fn zero_filled_file(dir: &std::path::Path, name: &str, len: u64) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
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
