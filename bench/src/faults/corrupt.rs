//! The `corrupt` fault: bytes flipped in a stopped member's files, as a failing disk or a
//! stray write would leave them. One file a time: a segment (anywhere in what was written,
//! so below what the member reported durable as often as in a torn tail), one slot of the
//! vote record, the newest snapshot, or the newest segment file itself. The member must find the damage when it starts, and
//! repair it from its peers or fall back, without losing an acknowledged write.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use raftline::rng::Rng;

/// Which file was damaged, and how.
pub enum Damage {
    Flipped {
        file: PathBuf,
        offset: u64,
        len: usize,
    },
    Removed(Vec<PathBuf>),
}

fn name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Flipped { file, offset, len } => {
                write!(f, "{len} bytes flipped at {offset} of {}", name(file))
            }
            Damage::Removed(files) => {
                let names: Vec<String> = files.iter().map(|p| name(p)).collect();
                write!(f, "segment files removed: {}", names.join(", "))
            }
        }
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
    Ok(Some(Damage::Flipped {
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
    if choice == 9 {
        // The newest segment holding data goes, with the prepared ones after it (a gap
        // between segment files is refused at start rather than repaired).
        let mut with_data = Vec::new();
        for p in &segments {
            let file = File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
            let mut head = [0u8; 64];
            file.read_exact_at(&mut head, 0)
                .map_err(|e| format!("{}: {e}", p.display()))?;
            if head.iter().any(|&b| b != 0) {
                with_data.push(p.clone());
            }
        }
        // Keep at least one segment: a directory without any is a log never started.
        if with_data.len() >= 2 {
            let newest = with_data.last().expect("two").clone();
            let lost: Vec<PathBuf> = segments.iter().filter(|p| **p >= newest).cloned().collect();
            for p in &lost {
                std::fs::remove_file(p).map_err(|e| format!("{}: {e}", p.display()))?;
            }
            return Ok(Some(Damage::Removed(lost)));
        }
    }
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
