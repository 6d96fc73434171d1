//! `raftline node --check-config`: everything a node would find wrong at start, found without
//! starting it — the config, the secrets it names, the members' addresses, this member's port,
//! the log directory (writable, free space, O_DIRECT where the durability needs it) and
//! io_uring. Each check is one line an operator can act on.

use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::Path;

use crate::config::Config;
use crate::log::Durability;
use crate::sys::disk::{direct_write_works, is_tmpfs};

/// One check's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// What was checked ("log directory", "member 2 address", ...).
    pub what: String,
    /// `Ok(detail)` or `Err(what is wrong)`.
    pub outcome: Result<String, String>,
}

impl Check {
    fn new(what: impl Into<String>, outcome: Result<String, String>) -> Self {
        Self {
            what: what.into(),
            outcome,
        }
    }

    pub fn passed(&self) -> bool {
        self.outcome.is_ok()
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.outcome {
            Ok(detail) => write!(f, "ok    {}: {detail}", self.what),
            Err(problem) => write!(f, "FAIL  {}: {problem}", self.what),
        }
    }
}

/// Runs every check for the node `config` describes (its config file already parsed and
/// validated: [`Config::load`] refuses a bad key with its name).
pub fn check_node(config: &Config) -> Vec<Check> {
    let mut checks = Vec::new();
    let id = config.node.id as usize;
    checks.push(Check::new(
        "secrets",
        config
            .member_keys()
            .and_then(|keys| config.access().map(|a| (keys, a)))
            .map(|(keys, access)| {
                format!(
                    "member key {}, client token {}, admin token {}",
                    if keys.is_some() {
                        "set"
                    } else {
                        "NOT set (members unauthenticated)"
                    },
                    if access.clients_checked {
                        "set"
                    } else {
                        "not set"
                    },
                    if access.admin.is_some() {
                        "set"
                    } else {
                        "not set"
                    },
                )
            })
            .map_err(|e| e.to_string()),
    ));
    // Each member resolves, and to an address no other member has.
    let mut addrs = Vec::new();
    for (i, name) in config.cluster.members.iter().enumerate() {
        let resolved = name.to_socket_addrs().map(|mut a| a.next());
        let outcome = match &resolved {
            &Ok(Some(a)) => match addrs
                .iter()
                .position(|b: &Option<SocketAddr>| *b == Some(a))
            {
                Some(j) => Err(format!(
                    "{name} resolves to {a}, the address of member {j}; each member needs its own"
                )),
                None => Ok(format!("{name} -> {a}")),
            },
            Ok(None) => Err(format!("{name} resolves to no address")),
            Err(e) if i == id => Err(format!("{name} does not resolve ({e})")),
            Err(e) => Err(format!(
                "{name} does not resolve ({e}); the node would start and keep retrying"
            )),
        };
        addrs.push(resolved.ok().flatten());
        checks.push(Check::new(format!("member {i} address"), outcome));
    }
    // This member's port: free, and an address of this host.
    if let Some(Some(own)) = addrs.get(id) {
        let outcome = match UdpSocket::bind(own) {
            Ok(_) => Ok(format!("{own} can be bound")),
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => Err(format!(
                "{own} is in use (another node, or a process holding the port?)"
            )),
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Err(format!(
                "{own} is not an address of this host (is node.id {id} right?)"
            )),
            Err(e) => Err(format!("{own}: {e}")),
        };
        checks.push(Check::new("this member's port", outcome));
    }
    let durability = config.durability().unwrap_or(Durability::Fdatasync);
    checks.push(check_log_dir(
        &config.node.log_dir,
        config.log.segment_mib,
        durability,
    ));
    if durability == Durability::Fdatasync {
        checks.push(Check::new(
            "O_DIRECT",
            direct_write_works(&config.node.log_dir)
                .map(|()| "the log directory's filesystem takes O_DIRECT writes".into())
                .map_err(|e| {
                    format!("refused ({e}): the log would fall back to buffered writes + fdatasync")
                }),
        ));
    }
    checks.push(Check::new(
        "io_uring",
        match io_uring::IoUring::new(8) {
            Ok(_) => Ok("a ring can be created".into()),
            Err(e) => Err(format!(
                "{e}; the log falls back to pwrite (a seccomp profile or kernel.io_uring_disabled?)"
            )),
        },
    ));
    checks
}

/// Creates the directory if needed, writes, syncs and removes a file in it, and compares its
/// free space with two segments.
fn check_log_dir(dir: &Path, segment_mib: u64, durability: Durability) -> Check {
    let what = format!("log directory {}", dir.display());
    let outcome = (|| {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create it: {e}"))?;
        let probe = dir.join(".check-config.creating");
        let written = std::fs::File::create(&probe)
            .and_then(|mut f| f.write_all(b"raftline").and_then(|()| f.sync_all()));
        let _ = std::fs::remove_file(&probe);
        written.map_err(|e| format!("cannot write and sync a file in it: {e}"))?;
        let free = free_bytes(dir).map_err(|e| format!("statvfs: {e}"))?;
        let need = (2 * segment_mib) << 20;
        if free < need {
            return Err(format!(
                "{} MiB free, less than two segments ({need} bytes at log.segment_mib = {segment_mib})",
                free >> 20
            ));
        }
        let fs = if is_tmpfs(dir) {
            "; tmpfs: nothing survives a reboot (not durable)"
        } else {
            ""
        };
        Ok(format!(
            "writable, {} MiB free, durability {durability}{fs}",
            free >> 20
        ))
    })();
    Check::new(what, outcome)
}

fn statfs(dir: &Path) -> std::io::Result<libc::statfs> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: all-zero is a valid statfs; it is only read after statfs filled it.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `s` a valid out-pointer for the call.
    if unsafe { libc::statfs(path.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(s)
}

fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let s = statfs(dir)?;
    Ok(s.f_bavail as u64 * s.f_bsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, members: Vec<String>) -> Config {
        Config::builder(0, members, dir.join("log"))
            .segment_mib(1)
            .build()
            .unwrap()
    }

    #[test]
    fn a_good_node_passes_and_each_problem_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let free = UdpSocket::bind("127.0.0.1:0").unwrap();
        let own = free.local_addr().unwrap().to_string();
        drop(free);
        let good = config(tmp.path(), vec![own.clone(), "127.0.0.1:1".into()]);
        let checks = check_node(&good);
        let failed: Vec<_> = checks
            .iter()
            .filter(|c| !c.passed() && c.what != "io_uring" && c.what != "O_DIRECT")
            .collect();
        assert!(failed.is_empty(), "{failed:?}");
        assert!(checks.iter().any(|c| c.what.starts_with("log directory")));

        // The port in use.
        let held = UdpSocket::bind(&own).unwrap();
        let port = check_node(&good)
            .into_iter()
            .find(|c| c.what == "this member's port")
            .unwrap();
        assert!(port.outcome.unwrap_err().contains("is in use"));
        drop(held);

        // Two members on one address (two names for it: the config alone cannot tell).
        let port = own.rsplit_once(':').unwrap().1;
        let alias = format!("localhost:{port}");
        let first = alias.to_socket_addrs().ok().and_then(|mut a| a.next());
        if first.map(|a| a.to_string()) == Some(own.clone()) {
            let twice = config(tmp.path(), vec![own.clone(), alias]);
            let dup = check_node(&twice)
                .into_iter()
                .find(|c| c.what == "member 1 address")
                .unwrap();
            assert!(dup.outcome.unwrap_err().contains("the address of member 0"));
        } else {
            println!("skipped the alias case: localhost resolves first to {first:?}, not {own}");
        }

        // A log directory that cannot be created (its parent is a file).
        std::fs::write(tmp.path().join("file"), b"x").unwrap();
        let mut bad = good.clone();
        bad.node.log_dir = tmp.path().join("file").join("log");
        let dir = check_node(&bad)
            .into_iter()
            .find(|c| c.what.starts_with("log directory"))
            .unwrap();
        assert!(dir.outcome.unwrap_err().contains("cannot create it"));
    }
}
