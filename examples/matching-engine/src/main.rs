//! `cargo run --release -p matching-engine [-- ORDERS [SEED]]`: a 3-node matching engine on
//! loopback; the leader is killed halfway through a stream of orders and restarted; every
//! replica's book is then checked against a reference that applied each order once.

fn main() {
    // The engine reports through `tracing`; an application installs the subscriber it uses.
    raftline::logging::StderrLines::install().unwrap_or_else(|e| panic!("{e}"));
    let args: Vec<String> = std::env::args().collect();
    let count = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5000);
    let seed = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    let dir = std::env::temp_dir().join(format!("matching-engine-{}", std::process::id()));
    let result = matching_engine::demo::run(&dir, count, seed);
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(r) => {
            println!(
                "{} orders, {} fills ({} of {} fill events received by the client), {} orders resting",
                r.orders, r.fills, r.fill_events_seen, r.fill_events_expected, r.resting
            );
            println!(
                "leader {} killed halfway: {:.1} ms to the first order acknowledged by the new leader",
                r.killed_leader, r.interruption_ms
            );
            println!("every replica's book equals the reference book: intact");
        }
        Err(e) => {
            eprintln!("matching-engine: {e}");
            std::process::exit(1);
        }
    }
}
