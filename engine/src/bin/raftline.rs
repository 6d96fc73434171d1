//! raftline: run a cluster member, or watch one.
//!
//! ```text
//! raftline node --config node.toml [--service echo|kv] [--recover-vote]
//!                                      run a member with a built-in service: echo (the
//!                                      default) or kv (registers, for the fault tests)
//! raftline node --config node.toml --check-config
//!                                      check the config and this host without starting
//! raftline stat <log-dir>... [--once | --json | --prometheus]
//!                                      print members' counters (refreshed each second unless
//!                                      --once), or once as JSON or Prometheus text
//! raftline exporter --listen ADDR --dir <log-dir> [--dir ...]
//!                                      serve the members' counters at http://ADDR/metrics
//! ```

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use raftline::config::Config;
use raftline::node::stages::{quantile_us, STAGES};
use raftline::runtime::counters::{CountersReader, ALL};
use raftline::runtime::metrics;
use raftline::runtime::RunningNode;
use raftline::service::echo::EchoService;
use raftline::service::kv::KvService;
use raftline::service::Service;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn usage() -> ! {
    eprintln!(
        "usage: raftline node --config node.toml [--service echo|kv] [--recover-vote]\n       raftline node --config node.toml --check-config\n       raftline stat <log-dir>... [--once | --json | --prometheus]\n       raftline exporter --listen ADDR --dir <log-dir> [--dir <log-dir> ...]\n       raftline cluster describe|snapshot|step-down|transfer-leader <member>|shutdown --config node.toml"
    );
    std::process::exit(2);
}

fn main() {
    if let Err(e) = raftline::logging::StderrLines::install() {
        eprintln!("raftline: {e}");
        std::process::exit(2);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("node") => {
            let Some(i) = args.iter().position(|a| a == "--config") else {
                usage()
            };
            let Some(path) = args.get(i + 1) else { usage() };
            let path = PathBuf::from(path);
            if args.iter().any(|a| a == "--check-config") {
                std::process::exit(check_config(&path));
            }
            let service = match args.iter().position(|a| a == "--service") {
                None => "echo",
                Some(i) => args.get(i + 1).map_or_else(|| usage(), String::as_str),
            };
            let recover_vote = args.iter().any(|a| a == "--recover-vote");
            let code = match service {
                "echo" => run_node(path, recover_vote, EchoService::default()),
                "kv" => run_node(path, recover_vote, KvService::default()),
                other => {
                    eprintln!("raftline: --service {other}: use echo or kv");
                    2
                }
            };
            std::process::exit(code);
        }
        Some("cluster") => std::process::exit(cluster(&args[1..])),
        Some("stat") => {
            let dirs: Vec<PathBuf> = args[1..]
                .iter()
                .filter(|a| !a.starts_with("--"))
                .map(PathBuf::from)
                .collect();
            if dirs.is_empty() {
                usage()
            }
            let flag = |f: &str| args.iter().any(|a| a == f);
            if let Some(unknown) = args[1..].iter().find(|a| {
                a.starts_with("--") && !["--once", "--json", "--prometheus"].contains(&a.as_str())
            }) {
                eprintln!("raftline: stat: unknown option {unknown}");
                usage()
            }
            let code = if flag("--json") || flag("--prometheus") {
                let nodes = metrics::read_all(&dirs);
                if flag("--json") {
                    print!("{}", metrics::json(&nodes));
                } else {
                    print!("{}", metrics::prometheus(&nodes));
                }
                // Every directory read, or say which did not.
                nodes.iter().all(|n| n.error.is_none()) as i32 ^ 1
            } else {
                stat(&dirs, flag("--once"))
            };
            std::process::exit(code);
        }
        Some("exporter") => std::process::exit(exporter(&args[1..])),
        _ => usage(),
    }
}

/// `raftline node --config F --check-config`: the config and this host, without starting.
fn check_config(path: &std::path::Path) -> i32 {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            println!("FAIL  config {}: {e}", path.display());
            return 1;
        }
    };
    println!(
        "ok    config {}: node {} of {}",
        path.display(),
        config.node.id,
        config.cluster.members.len()
    );
    let checks = raftline::runtime::check::check_node(&config);
    for c in &checks {
        println!("{c}");
    }
    let failed = checks.iter().filter(|c| !c.passed()).count();
    if failed == 0 {
        println!("node {} can start here", config.node.id);
        0
    } else {
        println!("{failed} check(s) failed");
        1
    }
}

fn run_node<S: Service + Send + 'static>(path: PathBuf, recover_vote: bool, service: S) -> i32 {
    let mut config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("raftline: {e}");
            return 2;
        }
    };
    config.node.recover_vote = recover_vote;
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
    }
    let node = match RunningNode::start(&config, service) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("raftline: node {} could not start: {e}", config.node.id);
            return 1;
        }
    };
    eprintln!(
        "raftline: node {} of {} listening on {}; log in {} ({}); threading {}, idle {}, durability {}",
        config.node.id,
        config.cluster.members.len(),
        config.cluster.members[config.node.id as usize],
        config.node.log_dir.display(),
        node.writer,
        config.runtime.threading,
        config.runtime.idle,
        config.log.durability,
    );
    while !STOP.load(Ordering::Relaxed) && !node.has_stopped() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let failed = node.has_stopped() && !STOP.load(Ordering::Relaxed);
    let stopped = node.stop();
    match (failed, stopped) {
        (false, Some(_)) => {
            eprintln!("raftline: node {} stopped cleanly", config.node.id);
            0
        }
        (true, Some(stopped)) if stopped.failure.is_none() => {
            eprintln!(
                "raftline: node {} stopped: the cluster was shut down",
                config.node.id
            );
            0
        }
        (_, Some(stopped)) => {
            eprintln!(
                "raftline: node {} stopped: {}",
                config.node.id,
                stopped.failure.unwrap_or_default()
            );
            1
        }
        (_, None) => 1,
    }
}

/// `raftline exporter --listen ADDR --dir DIR...`.
fn exporter(args: &[String]) -> i32 {
    let mut listen = None;
    let mut dirs = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--listen", Some(v)) => listen = Some(v.clone()),
            ("--dir", Some(v)) => dirs.push(PathBuf::from(v)),
            (other, _) => {
                eprintln!("raftline: exporter: unexpected argument {other} (or a missing value)");
                usage()
            }
        }
    }
    let (Some(listen), false) = (listen, dirs.is_empty()) else {
        usage()
    };
    let listener = match std::net::TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("raftline: exporter: cannot listen on {listen}: {e}");
            return 1;
        }
    };
    let addr = listener
        .local_addr()
        .map_or(listen.clone(), |a| a.to_string());
    eprintln!(
        "raftline: exporter serving {} node directories at http://{addr}/metrics",
        dirs.len()
    );
    let e = metrics::serve(&listener, &dirs);
    eprintln!("raftline: exporter: accepting on {addr} failed: {e}");
    1
}

fn stat(dirs: &[PathBuf], once: bool) -> i32 {
    loop {
        for dir in dirs {
            if let Err(code) = stat_one(dir) {
                return code;
            }
        }
        if once {
            return 0;
        }
        std::thread::sleep(Duration::from_secs(1));
        println!();
    }
}

fn stat_one(dir: &std::path::Path) -> Result<(), i32> {
    let reader = match CountersReader::open(dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("raftline: {}: {e}", dir.join("counters").display());
            return Err(1);
        }
    };
    println!("raftline node in {} (pid {})", dir.display(), reader.pid());
    for c in ALL {
        println!("  {:<45} {}", c.name(), reader.get(c));
    }
    println!("  stage times since start (µs, bucket upper edges: p50 / p99 / p99.9 / max, count)");
    for stage in STAGES {
        let b = reader.stage(stage);
        let q = |q: f64| quantile_us(&b, q).map_or("-".into(), |v| format!("{v:.0}"));
        println!(
            "    {:<43} {} / {} / {} / {}, {}",
            stage.name(),
            q(0.5),
            q(0.99),
            q(0.999),
            q(1.0),
            b.iter().sum::<u64>()
        );
    }
    Ok(())
}

/// `raftline cluster <command> --config node.toml`: an operator command over the admin
/// channel, sent to the members named in the config (any member's).
fn cluster(args: &[String]) -> i32 {
    use raftline::client::admin::AdminClient;
    use raftline::codec::message::AdminCommand;
    let Some(i) = args.iter().position(|a| a == "--config") else {
        usage()
    };
    let Some(path) = args.get(i + 1) else { usage() };
    let config = match Config::load(std::path::Path::new(path)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("raftline: {e}");
            return 2;
        }
    };
    let members = match config.resolve_members() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("raftline: {e}");
            return 2;
        }
    };
    let credential = match config.admin_credential() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("raftline: {e}");
            return 2;
        }
    };
    let mut admin = match AdminClient::connect(members, config.cluster.id) {
        Ok(a) => a.with_credential(credential),
        Err(e) => {
            eprintln!("raftline: {e}");
            return 1;
        }
    };
    let timeout = Duration::from_secs(5);
    let (command, target) = match args.first().map(String::as_str) {
        Some("describe") => {
            println!(
                "{:>6} {:>9} {:>6} {:>6} {:>14} {:>14} {:>14} {:>9} {:>10}",
                "member",
                "role",
                "term",
                "leader",
                "appended",
                "commit",
                "applied",
                "snapshots",
                "mismatches"
            );
            let states = match admin.describe(Duration::from_secs(1)) {
                Ok(states) => states,
                Err(e) => {
                    eprintln!("raftline: cluster: {e}");
                    return 1;
                }
            };
            for (id, s) in states.iter().enumerate() {
                match s {
                    Some(s) => println!(
                        "{:>6} {:>9} {:>6} {:>6} {:>14} {:>14} {:>14} {:>9} {:>10}",
                        s.member_id,
                        format!("{:?}", s.role),
                        s.term,
                        s.leader.map_or("-".into(), |l| l.to_string()),
                        s.appended,
                        s.commit,
                        s.applied,
                        s.snapshots,
                        s.digest_mismatches
                    ),
                    None => println!("{id:>6} {:>9}", "no answer"),
                }
            }
            return if states.iter().all(Option::is_some) {
                0
            } else {
                1
            };
        }
        Some("snapshot") => (AdminCommand::Snapshot, 0),
        Some("step-down") => (AdminCommand::StepDown, 0),
        Some("shutdown") => (AdminCommand::Shutdown, 0),
        Some("transfer-leader") => match args.get(1).and_then(|a| a.parse().ok()) {
            Some(m) => (AdminCommand::TransferLeader, m),
            None => usage(),
        },
        _ => usage(),
    };
    match admin.on_leader(command, target, timeout) {
        Ok((leader, value)) => {
            match command {
                AdminCommand::Snapshot => println!(
                    "leader {} appended a snapshot action at log position {value}; every replica snapshots there",
                    leader.member_id
                ),
                AdminCommand::Shutdown => println!(
                    "leader {} appended a shutdown action at log position {value}; every replica snapshots and stops there",
                    leader.member_id
                ),
                _ => println!(
                    "leader {} is handing leadership to member {value}",
                    leader.member_id
                ),
            }
            0
        }
        Err(e) => {
            eprintln!("raftline: cluster: {e}");
            1
        }
    }
}
