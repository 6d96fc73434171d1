//! raftline: run a cluster member, or watch one.
//!
//! ```text
//! raftline node --config node.toml [--service echo|kv]
//!                                      run a member with a built-in service: echo (the
//!                                      default) or kv (registers, for the fault tests)
//! raftline stat <log-dir> [--once]     print a running member's counters, refreshed each second
//! ```

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use raftline::config::Config;
use raftline::runtime::counters::{CountersReader, ALL};
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
        "usage: raftline node --config node.toml [--service echo|kv] | raftline stat <log-dir> [--once]"
    );
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("node") => {
            let Some(i) = args.iter().position(|a| a == "--config") else {
                usage()
            };
            let Some(path) = args.get(i + 1) else { usage() };
            let path = PathBuf::from(path);
            let service = match args.iter().position(|a| a == "--service") {
                None => "echo",
                Some(i) => args.get(i + 1).map_or_else(|| usage(), String::as_str),
            };
            let code = match service {
                "echo" => run_node(path, EchoService::default()),
                "kv" => run_node(path, KvService::default()),
                other => {
                    eprintln!("raftline: --service {other}: use echo or kv");
                    2
                }
            };
            std::process::exit(code);
        }
        Some("stat") => {
            let Some(dir) = args.get(1) else { usage() };
            std::process::exit(stat(PathBuf::from(dir), args.iter().any(|a| a == "--once")));
        }
        _ => usage(),
    }
}

fn run_node<S: Service + Send + 'static>(path: PathBuf, service: S) -> i32 {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("raftline: {e}");
            return 2;
        }
    };
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

fn stat(dir: PathBuf, once: bool) -> i32 {
    loop {
        let reader = match CountersReader::open(&dir) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("raftline: {}: {e}", dir.join("counters").display());
                return 1;
            }
        };
        println!("raftline node in {} (pid {})", dir.display(), reader.pid());
        for c in ALL {
            println!("  {:<45} {}", c.name(), reader.get(c));
        }
        if once {
            return 0;
        }
        std::thread::sleep(Duration::from_secs(1));
        println!();
    }
}
