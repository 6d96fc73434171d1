//! Three `raftline node` processes on loopback, for tests that stop, damage and restart them.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftline::client::{ClientConfig, ClientEvent, ClusterClient};
use raftline::runtime::counters::{Counter, CountersReader};
use raftline::runtime::monotonic_ns;

use super::free_ports;

pub struct Member {
    pub config: PathBuf,
    pub dir: PathBuf,
    pub stderr: PathBuf,
    pub child: Option<Child>,
}

impl Member {
    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    /// Starts with extra arguments after `--config FILE` (e.g. `--recover-vote`).
    pub fn start_with(&mut self, extra: &[&str]) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.stderr)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_raftline"))
            .args(["node", "--config"])
            .arg(&self.config)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGTERM (an orderly stop) and wait for the exit.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        // SAFETY: plain syscall on our child's pid, which has not been reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert!(child.wait().unwrap().success(), "clean exit on SIGTERM");
    }

    pub fn counters(&self) -> Option<CountersReader> {
        CountersReader::open(&self.dir).ok()
    }

    pub fn said(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Configs for three members in `tmp`; `extra` is appended to each (e.g. a `[transport]` key).
pub fn cluster(tmp: &Path, extra: &str) -> (Vec<Member>, Vec<String>) {
    let addrs = free_ports(3);
    let list = addrs
        .iter()
        .map(|m| format!("\"{m}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let members = (0..3u32)
        .map(|id| {
            let dir = tmp.join(format!("node-{id}"));
            let config = tmp.join(format!("node-{id}.toml"));
            let text = format!(
                "[cluster]\nid = 9\nmembers = [{list}]\n[node]\nid = {id}\nlog_dir = \"{}\"\n\
                 [log]\nsegment_mib = 1\n[consensus]\nleader_heartbeat_interval_ms = 20\n\
                 leader_heartbeat_timeout_ms = 300\nelection_timeout_ms = 100\n\
                 startup_canvass_timeout_ms = 300\n[runtime]\nidle = \"block\"\n{extra}",
                dir.display()
            );
            std::fs::write(&config, text).unwrap();
            Member {
                config,
                dir,
                stderr: tmp.join(format!("node-{id}.stderr")),
                child: None,
            }
        })
        .collect();
    (members, addrs)
}

pub fn leader(members: &[Member]) -> Option<usize> {
    members
        .iter()
        .position(|m| m.child.is_some() && m.counters().is_some_and(|c| c.get(Counter::Role) == 2))
}

pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Offers messages until `total` are acknowledged.
pub fn stream(client: &mut ClusterClient, acked: &mut BTreeSet<u64>, total: usize) {
    let start = Instant::now();
    while acked.len() < total {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "only {} of {total} acknowledged",
            acked.len()
        );
        while client.outstanding() < 8 && (acked.len() + client.outstanding()) < total {
            client.offer(monotonic_ns(), b"order").unwrap();
        }
        client.poll(monotonic_ns(), |e| {
            if let ClientEvent::Applied { sequence } = e {
                assert!(acked.insert(sequence), "{sequence} acknowledged twice");
            }
        });
        std::thread::sleep(Duration::from_micros(200));
    }
}

pub fn client(addrs: &[String]) -> ClusterClient {
    let mut cc = ClientConfig::new(addrs.iter().map(|a| a.parse().unwrap()).collect(), 9);
    cc.resend_timeout_ns = 100_000_000;
    ClusterClient::connect(cc, monotonic_ns).unwrap()
}
