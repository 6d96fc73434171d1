//! Reads a host's /proc and /sys under a root path, so tests point it at fixture trees.
//! Anything missing or unreadable is `None`, reported as "unknown", never an error.

use std::path::{Path, PathBuf};

/// A host seen through its /proc and /sys.
pub struct Host {
    root: PathBuf,
}

impl Host {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Whether this is the machine we run on (probes that make syscalls only run then).
    pub fn is_live(&self) -> bool {
        self.root == Path::new("/")
    }

    pub fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// The trimmed contents of a file, if readable.
    pub fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.path(path))
            .ok()
            .map(|s| s.trim().to_string())
    }

    pub fn read_u64(&self, path: &str) -> Option<u64> {
        self.read(path)?.split_whitespace().next()?.parse().ok()
    }

    /// Names of the entries of a directory, sorted.
    pub fn list(&self, path: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(path))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The value of `key=value` (or presence of `key`) on the kernel command line.
    pub fn cmdline_param(&self, key: &str) -> Option<String> {
        let cmdline = self.read("/proc/cmdline")?;
        cmdline.split_whitespace().find_map(|w| {
            if w == key {
                Some(String::new())
            } else {
                w.strip_prefix(key)
                    .and_then(|rest| rest.strip_prefix('='))
                    .map(str::to_string)
            }
        })
    }
}

/// The IRQ numbers of network and storage devices in a /proc/interrupts table.
pub fn device_irqs(table: &str) -> Vec<String> {
    const DEVICES: [&str; 7] = ["virtio", "nvme", "eth", "mlx", "ixgbe", "ena", "i40e"];
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let lower = line.to_lowercase();
            DEVICES.iter().any(|d| lower.contains(d))
        })
        .filter_map(|line| {
            let irq = line.split(':').next()?.trim();
            irq.chars()
                .all(|ch| ch.is_ascii_digit())
                .then(|| irq.to_string())
        })
        .collect()
}

/// Expands a CPU list like "0-3,8" into [0, 1, 2, 3, 8].
pub fn parse_cpu_list(list: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let range = part.split(':').next().unwrap_or(part);
        match range.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    cpus.extend(a..=b);
                }
            }
            None => cpus.extend(range.parse::<usize>().ok()),
        }
    }
    cpus
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,8"), vec![0, 1, 2, 3, 8]);
        assert_eq!(parse_cpu_list("1"), vec![1]);
        assert_eq!(parse_cpu_list("domain,2-3"), vec![2, 3]);
        assert!(parse_cpu_list("").is_empty());
    }
}
