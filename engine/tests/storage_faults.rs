//! Storage faults on real `raftline node` processes: corruption below what a member reported
//! durable, on one of the two members holding acknowledged writes while the other is down.
//! Every acknowledged write survives, and the damaged member says what it found.

mod common;
use common::free_ports;

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftline::client::{ClientConfig, ClientEvent, ClusterClient};
use raftline::runtime::counters::{Counter, CountersReader};
use raftline::runtime::monotonic_ns;

struct Member {
    config: PathBuf,
    dir: PathBuf,
    stderr: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn start(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.stderr)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_raftline"))
            .args(["node", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGTERM (an orderly stop) and wait for the exit.
    fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        // SAFETY: plain syscall on our child's pid, which has not been reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert!(child.wait().unwrap().success(), "clean exit on SIGTERM");
    }

    fn counters(&self) -> Option<CountersReader> {
        CountersReader::open(&self.dir).ok()
    }

    fn said(&self) -> String {
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

fn cluster(tmp: &Path) -> (Vec<Member>, Vec<String>) {
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
                 startup_canvass_timeout_ms = 300\n[runtime]\nidle = \"block\"\n",
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

fn leader(members: &[Member]) -> Option<usize> {
    members
        .iter()
        .position(|m| m.child.is_some() && m.counters().is_some_and(|c| c.get(Counter::Role) == 2))
}

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
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
fn stream(client: &mut ClusterClient, acked: &mut BTreeSet<u64>, total: usize) {
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

/// Flips 4 bytes in the middle of the written part of a member's first segment.
fn corrupt_segment(dir: &Path) -> u64 {
    let path = dir.join("00000000000000000000.seg");
    let file = File::options().read(true).write(true).open(&path).unwrap();
    let mut data = vec![0u8; 1 << 20];
    file.read_exact_at(&mut data, 0).unwrap();
    let written = data
        .iter()
        .rposition(|&b| b != 0)
        .expect("the segment holds frames") as u64;
    let at = written / 2;
    let mut bytes = [0u8; 4];
    file.read_exact_at(&mut bytes, at).unwrap();
    for b in &mut bytes {
        *b ^= 0x5a;
    }
    file.write_all_at(&bytes, at).unwrap();
    file.sync_all().unwrap();
    at
}

fn client(addrs: &[String]) -> ClusterClient {
    let mut cc = ClientConfig::new(addrs.iter().map(|a| a.parse().unwrap()).collect(), 9);
    cc.resend_timeout_ns = 100_000_000;
    ClusterClient::connect(cc, monotonic_ns).unwrap()
}

#[test]
fn corruption_on_one_of_the_two_holders_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut members, addrs) = cluster(tmp.path());
    for m in &mut members {
        m.start();
    }
    let mut client = client(&addrs);
    let mut acked = BTreeSet::new();
    stream(&mut client, &mut acked, 100);
    let l = wait_for("a leader", Duration::from_secs(10), || leader(&members));
    let (f1, f2) = ((l + 1) % 3, (l + 2) % 3);

    // F2 stops; 100 more writes are acknowledged, held by L and F1 only.
    members[f2].stop();
    stream(&mut client, &mut acked, 200);
    // F1 stops cleanly and its disk flips 4 bytes below what it reported durable; L stops.
    members[f1].stop();
    let at = corrupt_segment(&members[f1].dir);
    members[l].stop();

    // F1 and F2 come back without L: F1 reports the damage and must not help elect F2.
    members[f1].start();
    members[f2].start();
    let said = wait_for(
        "the damaged member's report",
        Duration::from_secs(10),
        || {
            let said = members[f1].said();
            said.contains("log corruption").then_some(said)
        },
    );
    assert!(
        said.contains("00000000000000000000.seg") && said.contains("not a torn tail"),
        "the report names the file and what it is: {said}"
    );
    assert!(said.contains(&format!("at position {}", at - at % 8)) || said.contains("position"));

    eprintln!("{said}");
    // L returns: every acknowledged write is applied on every replica, F1 repaired.
    members[l].start();
    let mut client = self::client(&addrs);
    let mut more = BTreeSet::new();
    stream(&mut client, &mut more, 10);
    wait_for(
        "every replica to apply all 210 messages",
        Duration::from_secs(30),
        || {
            let state: Vec<(u64, u64)> = members
                .iter()
                .map(|m| {
                    m.counters().map_or((0, 0), |c| {
                        (
                            c.get(Counter::AppliedMessages),
                            c.get(Counter::ServiceDigest),
                        )
                    })
                })
                .collect();
            let done = state.iter().all(|s| s.0 == 210) && state.windows(2).all(|w| w[0] == w[1]);
            assert!(state.iter().all(|s| s.0 <= 210), "applied twice: {state:?}");
            done.then_some(())
        },
    );
    for m in &mut members {
        m.stop();
    }
}
