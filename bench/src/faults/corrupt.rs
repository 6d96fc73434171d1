//! The `corrupt` fault: bytes flipped in a stopped member's files, as a failing disk or a
//! stray write would leave them. One file a time: a segment (anywhere in what was written,
//! so below what the member reported durable as often as in a torn tail), one slot of the
//! vote record, or the newest snapshot. The member must find the damage when it starts, and
//! repair it from its peers or fall back, without losing an acknowledged write.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use raftline::rng::Rng;

/// Which file was damaged, and where.
pub struct Damage {
    pub file: PathBuf,
    pub offset: u64,
    pub len: usize,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.file.file_name().map_or_else(
            || self.file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        write!(f, "{} bytes flipped at {} of {name}", self.len, self.offset)
    }
}

fn names(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&keep))
        .collect();
    found.sort();
    found
}

/// Flips `len` bytes at a random offset below the last non-zero byte of `path` (the part that
/// was written; segments and slots are preallocated with zeros).
fn flip(path: &Path, rng: &mut Rng, len: usize) -> Result<Option<Damage>, String> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let file = File::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(err)?;
    let size = file.metadata().map_err(err)?.len();
    let mut data = vec![0u8; size as usize];
    file.read_exact_at(&mut data, 0).map_err(err)?;
    let Some(last) = data.iter().rposition(|&b| b != 0) else {
        return Ok(None);
    };
    let offset = rng.below(last as u64 + 1);
    let len = len.min(size as usize - offset as usize);
    let mut bytes = data[offset as usize..offset as usize + len].to_vec();
    for b in &mut bytes {
        *b ^= 1 + rng.below(255) as u8;
    }
    file.write_all_at(&bytes, offset).map_err(err)?;
    file.sync_all().map_err(err)?;
    Ok(Some(Damage {
        file: path.to_path_buf(),
        offset,
        len,
    }))
}

/// Damages one file of the stopped member whose log directory is `dir`.
pub fn corrupt(dir: &Path, rng: &mut Rng) -> Result<Option<Damage>, String> {
    let segments = names(dir, |n| n.ends_with(".seg"));
    let snapshots = names(dir, |n| n.starts_with("snapshot-") && n.ends_with(".snap"));
    let slots = names(dir, |n| n.starts_with("vote-state.slot"));
    let choice = rng.below(10);
    let path = if choice < 6 || (snapshots.is_empty() && slots.is_empty()) {
        match segments.get(rng.below(segments.len().max(1) as u64) as usize) {
            Some(p) => p.clone(),
            None => return Ok(None),
        }
    } else if (choice < 8 || slots.is_empty()) && !snapshots.is_empty() {
        snapshots.last().expect("not empty").clone()
    } else {
        slots[rng.below(slots.len() as u64) as usize].clone()
    };
    let len = 1 + rng.below(16) as usize;
    flip(&path, rng, len)
}
