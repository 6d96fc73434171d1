//! Three `raftline node` processes on loopback; a client streams messages; the leader is
//! killed with SIGKILL mid-stream and restarted. No acknowledged message is lost or applied
//! twice, a new leader takes over, and every replica ends with the same service digest.

mod common;
use common::free_ports;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftline::client::{ClientConfig, ClientEvent, ClusterClient};
use raftline::runtime::counters::{Counter, CountersReader};
use raftline::runtime::monotonic_ns;

struct Member {
    config: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_raftline"))
            .args(["node", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn signal(&mut self, signal: i32) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: plain syscall on our child's pid, which has not been reaped yet.
        unsafe { libc::kill(child.id() as i32, signal) };
        child.wait().unwrap()
    }

    fn counters(&self) -> Option<CountersReader> {
        CountersReader::open(&self.dir).ok()
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

fn write_config(path: &Path, id: u32, members: &[String], dir: &Path, ipc: Option<&Path>) {
    let list = members
        .iter()
        .map(|m| format!("\"{m}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        "[cluster]\nid = 9\nmembers = [{list}]\n[node]\nid = {id}\nlog_dir = \"{}\"\n[log]\nsegment_mib = 1\n\
         [consensus]\nleader_heartbeat_interval_ms = 20\nleader_heartbeat_timeout_ms = 300\n\
         election_timeout_ms = 100\nstartup_canvass_timeout_ms = 300\n[runtime]\nidle = \"block\"\n\
         [transport]\nmax_datagram_bytes = 65000\n{}",
        dir.display(),
        ipc.map_or(String::new(), |d| format!(
            "members = \"ipc\"\nipc_dir = \"{}\"\n",
            d.display()
        ))
    );
    std::fs::write(path, text).unwrap();
}

/// Offers messages until `total` are acknowledged; returns when done or panics after `limit`.
fn stream(client: &mut ClusterClient, acked: &mut BTreeSet<u64>, total: usize, limit: Duration) {
    let start = Instant::now();
    while acked.len() < total {
        assert!(
            start.elapsed() < limit,
            "only {} of {total} acknowledged",
            acked.len()
        );
        while client.outstanding() < 8 && (acked.len() + client.outstanding()) < total {
            client.offer(monotonic_ns(), b"order").unwrap();
        }
        client.poll(monotonic_ns(), |e| {
            if let ClientEvent::Applied { sequence } = e {
                assert!(
                    acked.insert(sequence),
                    "sequence {sequence} acknowledged twice"
                );
            }
        });
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn leader(members: &[Member]) -> Option<usize> {
    members
        .iter()
        .position(|m| m.child.is_some() && m.counters().is_some_and(|c| c.get(Counter::Role) == 2))
}

#[test]
fn sigkill_of_the_leader_mid_stream_loses_no_acknowledged_message() {
    kill_the_leader_mid_stream(false);
}

/// The same over the shared-memory rings: the killed process re-attaches to its ring files
/// (reading what was sent to it while it was down) and its peers' doorbells.
#[test]
fn sigkill_of_the_leader_with_members_over_ipc_rings() {
    kill_the_leader_mid_stream(true);
}

fn kill_the_leader_mid_stream(ipc: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let ipc_dir = ipc.then(|| tmp.path().join("ipc"));
    let addrs = free_ports(3);
    let mut members: Vec<Member> = (0..3u32)
        .map(|id| {
            let dir = tmp.path().join(format!("node-{id}"));
            let config = tmp.path().join(format!("node-{id}.toml"));
            write_config(&config, id, &addrs, &dir, ipc_dir.as_deref());
            Member {
                config,
                dir,
                child: None,
            }
        })
        .collect();
    for m in &mut members {
        m.start();
    }
    let mut cc = ClientConfig::new(addrs.iter().map(|a| a.parse().unwrap()).collect(), 9);
    cc.max_datagram_bytes = 65_000;
    cc.resend_timeout_ns = 100_000_000;
    let mut client = ClusterClient::connect(cc, monotonic_ns).unwrap();
    let mut acked = BTreeSet::new();
    stream(&mut client, &mut acked, 300, Duration::from_secs(30));

    // Kill the leader while messages are in flight.
    let start = Instant::now();
    let old_leader = loop {
        if let Some(l) = leader(&members) {
            break l;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no leader in the counters"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    for _ in 0..8 {
        client.offer(monotonic_ns(), b"in flight").unwrap();
    }
    let status = members[old_leader].signal(libc::SIGKILL);
    assert!(!status.success());
    stream(&mut client, &mut acked, 700, Duration::from_secs(60));
    let new_leader = leader(&members).expect("a new leader took over");
    assert_ne!(new_leader, old_leader);

    // Bring the old leader back; it catches up from its log and the new leader.
    members[old_leader].start();
    stream(&mut client, &mut acked, 800, Duration::from_secs(30));
    assert_eq!(
        acked,
        (1..=800).collect::<BTreeSet<u64>>(),
        "every sequence acknowledged once"
    );

    // All replicas converge: each applied all 800 messages exactly once, same digest.
    let start = Instant::now();
    loop {
        let state: Vec<(u64, u64, u64)> = members
            .iter()
            .map(|m| {
                m.counters().map_or((0, 0, 0), |c| {
                    (
                        c.get(Counter::AppliedPosition),
                        c.get(Counter::ServiceDigest),
                        c.get(Counter::AppliedMessages),
                    )
                })
            })
            .collect();
        // Converged: the same position and digest everywhere, with every message applied
        // once (a duplicate would make the count exceed 800, a loss keep it below).
        let converged = state.windows(2).all(|w| w[0] == w[1]) && state[0].2 == 800;
        if converged {
            break;
        }
        assert!(
            state.iter().all(|s| s.2 <= 800),
            "a message was applied twice: {state:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "replicas did not converge: {state:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Member traffic went where it was configured to go.
    for m in &members {
        let rings = m.counters().unwrap().get(Counter::RingRecordsReceived);
        assert_eq!(rings > 0, ipc, "ring records received: {rings}");
    }
    // A clean stop on SIGTERM.
    for m in &mut members {
        assert!(m.signal(libc::SIGTERM).success(), "clean exit on SIGTERM");
    }
}
