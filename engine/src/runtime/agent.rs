//! Agents and their duty cycles: the [`Agent`] trait, running one on a thread of its own
//! (pinned when asked) with an idle strategy, and the cycle statistics that show stalls. It never
//! knows what an agent does.

use super::*;

/// Work done in duty cycles on one thread.
pub trait Agent: Send {
    /// Does whatever is available now; returns the amount of work (0 = idle).
    fn do_work(&mut self, now_ns: u64) -> usize;
    /// Names the thread and the log lines.
    fn name(&self) -> &str;
    /// Why the agent cannot go on, if it cannot.
    fn failure(&self) -> Option<String> {
        None
    }
    /// Whether the agent has completed its work and its thread should end (an orderly
    /// shutdown, not a failure).
    fn finished(&self, _now_ns: u64) -> bool {
        false
    }
    /// Called once on the agent's thread when the runner stops.
    fn on_close(&mut self) {}
}

/// Duty-cycle statistics of one runner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CycleStats {
    pub cycles: u64,
    pub max_cycle_ns: u64,
    pub stalls: u64,
}

pub(super) const STALL_NS: u64 = 1_000_000;

/// The CPUs this process may run on, captured once before any thread pins itself
/// (core_affinity reports the calling thread's current mask).
pub fn available_cores() -> &'static [core_affinity::CoreId] {
    static CORES: OnceLock<Vec<core_affinity::CoreId>> = OnceLock::new();
    CORES.get_or_init(|| core_affinity::get_core_ids().unwrap_or_default())
}

pub(super) fn pin_current(core: usize, name: &str) {
    match available_cores().iter().find(|c| c.id == core) {
        Some(&id) if core_affinity::set_for_current(id) => {}
        _ => tracing::warn!("{name}: could not pin to core {core}; running unpinned"),
    }
}

/// Runs `agent` on a new thread named after it until `stop` is set or the agent fails; the
/// thread publishes what it spends on `cost` (its node's board), if given.
pub fn spawn_agent<A: Agent + 'static>(
    mut agent: A,
    strategy: IdleStrategy,
    wait: WaitSet,
    core: Option<usize>,
    stop: Arc<AtomicBool>,
    cost: Option<CostBoard>,
) -> std::io::Result<JoinHandle<(A, CycleStats)>> {
    available_cores();
    let name = agent.name().to_string();
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            if let Some(core) = core {
                pin_current(core, &name);
            }
            crate::sys::cost::exact_timers();
            let mut idler = match Idler::new(strategy, &wait) {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(
                        "{name}: idle strategy {} unavailable ({e}); using backoff",
                        strategy.name()
                    );
                    let backoff = IdleStrategy::parse("backoff").expect("known strategy");
                    Idler::new(backoff, &WaitSet::default()).expect("backoff needs no fds")
                }
            };
            let mut stats = CycleStats::default();
            let mut cost = cost.map(|board| board.join());
            while !stop.load(Ordering::Relaxed) {
                let now = monotonic_ns();
                if let Some(c) = &mut cost {
                    c.maybe_publish(now);
                }
                let work = agent.do_work(now);
                let cycle = monotonic_ns().saturating_sub(now);
                stats.cycles += 1;
                stats.max_cycle_ns = stats.max_cycle_ns.max(cycle);
                if cycle > STALL_NS {
                    stats.stalls += 1;
                }
                if agent.failure().is_some() || agent.finished(now) {
                    break;
                }
                idler.idle(work);
            }
            if let Some(c) = &cost {
                c.publish();
            }
            agent.on_close();
            (agent, stats)
        })
}
