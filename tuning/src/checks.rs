//! The host checks: each reads /proc and /sys (through [`Host`]), says ok / warn / fail /
//! unknown, the value found, why it matters for tail latency, and the command or boot
//! parameter that fixes it. Probes that make syscalls run only on the live host.

use std::path::Path;

use serde::Serialize;

use crate::host::{device_irqs, parse_cpu_list, Host};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    Unknown,
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub area: &'static str,
    pub name: &'static str,
    pub status: Status,
    pub value: String,
    pub why: &'static str,
    pub fix: String,
}

/// Where each agent of each node should run, as raftline configuration keys.
#[derive(Clone, Debug, Serialize)]
pub struct Layout {
    pub nodes: usize,
    pub cores_available: Vec<usize>,
    pub threading: &'static str,
    pub idle: &'static str,
    /// Per node: the `runtime.cores` list (node thread first, then receiver).
    pub node_cores: Vec<Vec<usize>>,
    pub client_core: Option<usize>,
    pub config: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    pub layout: Layout,
}

impl Report {
    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }
}

struct Checks<'a> {
    host: &'a Host,
    out: Vec<Check>,
}

impl Checks<'_> {
    fn add(
        &mut self,
        area: &'static str,
        name: &'static str,
        status: Status,
        value: impl Into<String>,
        why: &'static str,
        fix: impl Into<String>,
    ) {
        self.out.push(Check {
            area,
            name,
            status,
            value: value.into(),
            why,
            fix: fix.into(),
        });
    }

    fn unknown(
        &mut self,
        area: &'static str,
        name: &'static str,
        why: &'static str,
        fix: impl Into<String>,
    ) {
        self.add(area, name, Status::Unknown, "unknown", why, fix);
    }
}

fn online_cpus(host: &Host) -> Vec<usize> {
    host.read("/sys/devices/system/cpu/online")
        .map(|s| parse_cpu_list(&s))
        .unwrap_or_default()
}

fn isolated_cpus(host: &Host) -> Vec<usize> {
    host.cmdline_param("isolcpus")
        .map(|s| parse_cpu_list(&s))
        .unwrap_or_default()
}

/// Runs every check. `log_dir` adds the storage checks; `nodes` sizes the core layout.
pub fn run(host: &Host, log_dir: Option<&Path>, nodes: usize) -> Report {
    let mut c = Checks {
        host,
        out: Vec::new(),
    };
    cpu(&mut c, nodes);
    memory(&mut c);
    interrupts(&mut c);
    network(&mut c);
    if let Some(dir) = log_dir {
        storage(&mut c, dir);
    }
    io_uring(&mut c);
    scheduling(&mut c);
    let layout = layout(host, nodes);
    Report {
        checks: c.out,
        layout,
    }
}

fn cpu(c: &mut Checks, nodes: usize) {
    let host = c.host;
    let cpus = online_cpus(host);
    let needed = nodes * 2;
    if cpus.is_empty() {
        c.unknown(
            "cpu",
            "count",
            "each hot thread needs a core of its own",
            "",
        );
    } else if cpus.len() < needed {
        c.add(
            "cpu",
            "count",
            Status::Warn,
            format!("{} online", cpus.len()),
            "busy-spinning more threads than cores costs milliseconds per hop (a scheduler tick)",
            format!("use threading = \"shared\" and idle = \"block\"; dedicated mode for {nodes} nodes wants {needed} cores"),
        );
    } else {
        c.add(
            "cpu",
            "count",
            Status::Ok,
            format!("{} online", cpus.len()),
            "each hot thread needs a core of its own",
            "",
        );
    }
    let model = host.read("/proc/cpuinfo").and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|m| m.trim().to_string())
    });
    match model {
        Some(m) => c.add(
            "cpu",
            "model",
            Status::Ok,
            m,
            "recorded with every benchmark",
            "",
        ),
        None => c.unknown("cpu", "model", "recorded with every benchmark", ""),
    }
    let smt = host
        .read("/sys/devices/system/cpu/smt/active")
        .map(|s| s == "1")
        .or_else(|| {
            host.read("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list")
                .map(|s| parse_cpu_list(&s).len() > 1)
        });
    match smt {
        Some(true) => c.add(
            "cpu",
            "smt",
            Status::Warn,
            "siblings share cores",
            "two hot threads on sibling hyperthreads share one core's pipelines and caches",
            "pin hot threads to one sibling per core, or boot with nosmt",
        ),
        Some(false) => c.add(
            "cpu",
            "smt",
            Status::Ok,
            "one thread per core",
            "siblings share a core",
            "",
        ),
        None => c.unknown("cpu", "smt", "siblings share a core", "check lscpu"),
    }
    let params = ["isolcpus", "nohz_full", "rcu_nocbs"];
    let present: Vec<String> = params
        .iter()
        .filter_map(|p| host.cmdline_param(p).map(|v| format!("{p}={v}")))
        .collect();
    let isolation_fix =
        "boot with isolcpus=2-5 nohz_full=2-5 rcu_nocbs=2-5 (the cores for raftline's threads)";
    if host.read("/proc/cmdline").is_none() {
        c.unknown(
            "cpu",
            "isolation",
            "the scheduler, timer ticks and RCU callbacks interrupt non-isolated cores",
            isolation_fix,
        );
    } else if present.len() == params.len() {
        c.add(
            "cpu",
            "isolation",
            Status::Ok,
            present.join(" "),
            "isolated cores are left to raftline",
            "",
        );
    } else {
        c.add(
            "cpu",
            "isolation",
            Status::Warn,
            if present.is_empty() {
                "none".into()
            } else {
                present.join(" ")
            },
            "the scheduler, timer ticks and RCU callbacks interrupt non-isolated cores",
            isolation_fix,
        );
    }
    let governors: Vec<String> = cpus
        .iter()
        .filter_map(|n| {
            host.read(&format!(
                "/sys/devices/system/cpu/cpu{n}/cpufreq/scaling_governor"
            ))
        })
        .collect();
    if governors.is_empty() {
        c.unknown(
            "cpu",
            "governor",
            "frequency scaling adds wake-up latency",
            "no cpufreq (a VM?): the hypervisor decides",
        );
    } else if governors.iter().all(|g| g == "performance") {
        c.add(
            "cpu",
            "governor",
            Status::Ok,
            "performance",
            "frequency scaling adds wake-up latency",
            "",
        );
    } else {
        c.add(
            "cpu",
            "governor",
            Status::Warn,
            governors.join(","),
            "frequency scaling adds wake-up latency",
            "raftline-tune apply (echo performance > /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor)",
        );
    }
    match host.read("/sys/devices/system/cpu/cpufreq/boost") {
        Some(b) if b == "1" => c.add(
            "cpu",
            "boost",
            Status::Warn,
            "on",
            "turbo frequencies vary with temperature and load: benchmark figures drift",
            "echo 0 > /sys/devices/system/cpu/cpufreq/boost for benchmarks",
        ),
        Some(_) => c.add("cpu", "boost", Status::Ok, "off", "stable frequency", ""),
        None => c.unknown("cpu", "boost", "turbo frequencies vary", ""),
    }
    let mut deep = Vec::new();
    let states = host.list("/sys/devices/system/cpu/cpu0/cpuidle");
    for s in states.iter().filter(|s| s.starts_with("state")) {
        let base = format!("/sys/devices/system/cpu/cpu0/cpuidle/{s}");
        let name = host
            .read(&format!("{base}/name"))
            .unwrap_or_else(|| s.clone());
        let latency = host.read_u64(&format!("{base}/latency")).unwrap_or(0);
        let disabled = host
            .read(&format!("{base}/disable"))
            .is_some_and(|d| d == "1");
        if latency > 10 && !disabled {
            deep.push(format!("{name} ({latency} µs exit)"));
        }
    }
    if states.is_empty() {
        c.unknown(
            "cpu",
            "idle_states",
            "waking from a deep C-state takes tens to hundreds of µs",
            "",
        );
    } else if deep.is_empty() {
        c.add(
            "cpu",
            "idle_states",
            Status::Ok,
            "no deep states enabled",
            "deep C-states add wake-up latency",
            "",
        );
    } else {
        c.add(
            "cpu",
            "idle_states",
            Status::Warn,
            deep.join(", "),
            "waking from a deep C-state takes tens to hundreds of µs",
            "boot with processor.max_cstate=1 intel_idle.max_cstate=0, or echo 1 > .../cpuidle/stateN/disable",
        );
    }
    match host.read("/sys/devices/system/clocksource/clocksource0/current_clocksource") {
        Some(cs) if cs == "tsc" => c.add(
            "cpu",
            "clocksource",
            Status::Ok,
            cs,
            "clock reads are ~25 ns with tsc",
            "",
        ),
        Some(cs) => c.add(
            "cpu",
            "clocksource",
            Status::Warn,
            cs,
            "a non-tsc clocksource makes every clock read a slow path or a syscall",
            "boot with tsc=reliable clocksource=tsc if the TSC is invariant",
        ),
        None => c.unknown("cpu", "clocksource", "clock read cost", ""),
    }
    match host.read_u64("/proc/self/timerslack_ns") {
        Some(ns) if ns > 1_000 => c.add(
            "cpu",
            "timer_slack",
            Status::Warn,
            format!("{ns} ns"),
            "timed waits (sleep, epoll timeouts) may fire this late",
            "raftline's own threads set prctl(PR_SET_TIMERSLACK, 1) themselves; an embedding application's timed threads (its clients) should too",
        ),
        Some(ns) => c.add("cpu", "timer_slack", Status::Ok, format!("{ns} ns"), "timed waits fire on time", ""),
        None => c.unknown("cpu", "timer_slack", "timed waits may fire late", ""),
    }
    let numa = host
        .list("/sys/devices/system/node")
        .iter()
        .filter(|n| n.starts_with("node"))
        .count();
    match numa {
        0 => c.unknown("cpu", "numa", "remote memory costs ~100 ns a miss", ""),
        1 => c.add("cpu", "numa", Status::Ok, "1 node", "all memory is local", ""),
        n => c.add(
            "cpu",
            "numa",
            Status::Warn,
            format!("{n} nodes"),
            "remote memory costs ~100 ns a miss",
            "keep each raftline node's threads and memory on one NUMA node (numactl --cpunodebind=N --membind=N)",
        ),
    }
}

fn memory(c: &mut Checks) {
    let host = c.host;
    match host.read("/sys/kernel/mm/transparent_hugepage/enabled") {
        Some(t) if t.contains("[always]") => c.add(
            "memory",
            "thp",
            Status::Warn,
            "always",
            "khugepaged compaction stalls threads at random times",
            "raftline-tune apply (echo madvise > /sys/kernel/mm/transparent_hugepage/enabled)",
        ),
        Some(t) => {
            let mode = t
                .split_whitespace()
                .find(|w| w.starts_with('['))
                .unwrap_or(&t)
                .trim_matches(['[', ']'])
                .to_string();
            c.add(
                "memory",
                "thp",
                Status::Ok,
                mode,
                "huge pages only where asked for",
                "",
            )
        }
        None => c.unknown("memory", "thp", "compaction stalls", ""),
    }
    let meminfo = host.read("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> Option<u64> {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    match field("HugePages_Total:") {
        Some(0) => c.add(
            "memory",
            "hugepages",
            Status::Warn,
            "0 reserved",
            "explicit huge pages avoid TLB misses on large rings and log buffers",
            "optional: sysctl -w vm.nr_hugepages=512",
        ),
        Some(n) => c.add(
            "memory",
            "hugepages",
            Status::Ok,
            format!("{n} reserved"),
            "fewer TLB misses",
            "",
        ),
        None => c.unknown("memory", "hugepages", "TLB misses", ""),
    }
    let swaps = host.read("/proc/swaps");
    let swap_devices = swaps.as_deref().map_or(0, |s| {
        s.lines().skip(1).filter(|l| !l.trim().is_empty()).count()
    });
    let swappiness = host.read_u64("/proc/sys/vm/swappiness");
    match (swaps, swappiness) {
        (None, _) => c.unknown(
            "memory",
            "swap",
            "a swapped-out page costs milliseconds",
            "swapoff -a",
        ),
        (Some(_), _) if swap_devices > 0 => c.add(
            "memory",
            "swap",
            Status::Warn,
            format!(
                "{swap_devices} swap devices, swappiness {}",
                swappiness.map_or("?".into(), |s| s.to_string())
            ),
            "a swapped-out page costs milliseconds",
            "swapoff -a (or mlockall: raftline's memory must never page out)",
        ),
        (Some(_), _) => c.add(
            "memory",
            "swap",
            Status::Ok,
            "no swap",
            "nothing pages out",
            "",
        ),
    }
    let limits = host.read("/proc/self/limits").unwrap_or_default();
    let memlock = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))
        .map(|l| l.split_whitespace().nth(3).unwrap_or("?").to_string());
    match memlock {
        Some(v) if v == "unlimited" || v.parse::<u64>().is_ok_and(|b| b >= 1 << 30) => c.add(
            "memory",
            "memlock",
            Status::Ok,
            v,
            "mlockall and registered io_uring buffers need it",
            "",
        ),
        Some(v) => c.add(
            "memory",
            "memlock",
            Status::Warn,
            format!("{v} bytes"),
            "mlockall and registered io_uring buffers need locked memory",
            "ulimit -l unlimited, or LimitMEMLOCK=infinity in the systemd unit",
        ),
        None => c.unknown("memory", "memlock", "locked memory", ""),
    }
    if host.is_live() {
        // SAFETY: plain syscalls; locking is undone right away.
        let rc = unsafe { libc::mlockall(libc::MCL_CURRENT) };
        if rc == 0 {
            // SAFETY: as above.
            unsafe { libc::munlockall() };
            c.add(
                "memory",
                "mlockall",
                Status::Ok,
                "works",
                "keeps the process's pages resident",
                "",
            );
        } else {
            c.add(
                "memory",
                "mlockall",
                Status::Warn,
                std::io::Error::last_os_error().to_string(),
                "without it a page can be swapped or reclaimed under memory pressure",
                "run as root or raise RLIMIT_MEMLOCK",
            );
        }
    }
}

fn interrupts(c: &mut Checks) {
    let host = c.host;
    let procs = host.list("/proc");
    let irqbalance = procs
        .iter()
        .filter(|p| p.chars().all(|ch| ch.is_ascii_digit()))
        .any(|p| {
            host.read(&format!("/proc/{p}/comm"))
                .is_some_and(|comm| comm == "irqbalance")
        });
    if irqbalance {
        c.add(
            "interrupts",
            "irqbalance",
            Status::Warn,
            "running",
            "irqbalance moves device interrupts onto raftline's cores",
            "systemctl stop irqbalance, then pin IRQs away from raftline's cores",
        );
    } else {
        c.add(
            "interrupts",
            "irqbalance",
            Status::Ok,
            "not running",
            "interrupts stay where pinned",
            "",
        );
    }
    let Some(table) = host.read("/proc/interrupts") else {
        c.unknown(
            "interrupts",
            "affinity",
            "device interrupts on raftline's cores preempt it",
            "",
        );
        return;
    };
    let isolated = isolated_cpus(host);
    let mut on_isolated = Vec::new();
    let mut devices = 0;
    for irq in device_irqs(&table) {
        devices += 1;
        if let Some(list) = host.read(&format!("/proc/irq/{irq}/smp_affinity_list")) {
            if parse_cpu_list(&list)
                .iter()
                .any(|cpu| isolated.contains(cpu))
            {
                on_isolated.push(irq.to_string());
            }
        }
    }
    if devices == 0 {
        c.unknown(
            "interrupts",
            "affinity",
            "device interrupts preempt raftline",
            "",
        );
    } else if isolated.is_empty() {
        c.add(
            "interrupts",
            "affinity",
            Status::Warn,
            format!("{devices} device IRQs, no isolated cores"),
            "device interrupts land on any core, raftline's included",
            "isolate cores (isolcpus) and keep IRQs off them: echo 0-1 > /proc/irq/N/smp_affinity_list",
        );
    } else if on_isolated.is_empty() {
        c.add(
            "interrupts",
            "affinity",
            Status::Ok,
            format!("{devices} device IRQs off isolated cores"),
            "",
            "",
        );
    } else {
        c.add(
            "interrupts",
            "affinity",
            Status::Warn,
            format!("IRQs {} can run on isolated cores", on_isolated.join(",")),
            "a device interrupt on a raftline core preempts it",
            "echo <housekeeping cores> > /proc/irq/N/smp_affinity_list for each",
        );
    }
}

fn network(c: &mut Checks) {
    let host = c.host;
    for (name, path) in [
        ("rmem_max", "/proc/sys/net/core/rmem_max"),
        ("wmem_max", "/proc/sys/net/core/wmem_max"),
    ] {
        match host.read_u64(path) {
            Some(v) if v >= 8 << 20 => c.add("network", name, Status::Ok, format!("{v}"), "socket buffers absorb bursts", ""),
            Some(v) => c.add(
                "network",
                name,
                Status::Warn,
                format!("{v}"),
                "small socket buffers drop datagrams in bursts (the protocol resends, at a latency cost)",
                format!("raftline-tune apply (sysctl -w net.core.{name}=8388608)"),
            ),
            None => c.unknown("network", name, "socket buffer limits", ""),
        }
    }
    for (name, path) in [
        ("rmem_default", "/proc/sys/net/core/rmem_default"),
        ("wmem_default", "/proc/sys/net/core/wmem_default"),
    ] {
        match host.read_u64(path) {
            Some(v) => c.add(
                "network",
                name,
                Status::Ok,
                format!("{v}"),
                "raftline asks for 8 MiB socket buffers itself (up to the *_max limits, or past them as root)",
                "",
            ),
            None => c.unknown("network", name, "default socket buffers", ""),
        }
    }
    for (name, path) in [
        ("busy_poll", "/proc/sys/net/core/busy_poll"),
        ("busy_read", "/proc/sys/net/core/busy_read"),
    ] {
        match host.read_u64(path) {
            Some(0) => c.add(
                "network",
                name,
                Status::Warn,
                "0",
                "busy polling the NIC queue saves an interrupt and a wake-up per packet on real NICs",
                format!("raftline-tune apply (sysctl -w net.core.{name}=50)"),
            ),
            Some(v) => c.add("network", name, Status::Ok, format!("{v} µs"), "NIC queues are polled", ""),
            None => c.unknown("network", name, "NIC busy polling", ""),
        }
    }
    let mut mtus = Vec::new();
    for dev in host.list("/sys/class/net") {
        if dev == "lo" {
            continue;
        }
        if let Some(mtu) = host.read(&format!("/sys/class/net/{dev}/mtu")) {
            mtus.push(format!("{dev}={mtu}"));
        }
    }
    if mtus.is_empty() {
        c.unknown("network", "mtu", "datagrams above the MTU fragment", "");
    } else {
        c.add(
            "network",
            "mtu",
            Status::Ok,
            mtus.join(" "),
            "raftline packs frames into datagrams up to transport.max_datagram_bytes; keep it under the MTU minus 28",
            "set transport.max_datagram_bytes = MTU - 28 (1472 for 1500)",
        );
    }
    c.unknown(
        "network",
        "coalescing",
        "interrupt coalescing holds packets back by tens of µs",
        "ethtool -c <dev> to read, ethtool -C <dev> rx-usecs 0 tx-usecs 0 to disable",
    );
}

/// The mount holding `dir`: (device, fstype, options).
fn mount_of(host: &Host, dir: &Path) -> Option<(String, String, String)> {
    let mounts = host.read("/proc/mounts")?;
    let dir = dir.to_string_lossy();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4).then(|| {
                (
                    f[0].to_string(),
                    f[1].to_string(),
                    f[2].to_string(),
                    f[3].to_string(),
                )
            })
        })
        .filter(|(_, point, _, _)| {
            dir == point.as_str()
                || dir.starts_with(&format!("{}/", point.trim_end_matches('/')))
                || point == "/"
        })
        .max_by_key(|(_, point, _, _)| point.len())
        .map(|(dev, _, fstype, options)| (dev, fstype, options))
}

/// The whole-disk name under /sys/block for a device path: the name itself if it is a disk,
/// else the name without its partition suffix (vda1 -> vda, nvme0n1p2 -> nvme0n1).
fn block_device(host: &Host, dev: &str) -> Option<String> {
    let name = dev.strip_prefix("/dev/")?;
    if host.path(&format!("/sys/block/{name}")).exists() {
        return Some(name.to_string());
    }
    let trimmed = name.trim_end_matches(|ch: char| ch.is_ascii_digit());
    let disk = trimmed
        .strip_suffix('p')
        .filter(|d| d.ends_with(|ch: char| ch.is_ascii_digit()))
        .unwrap_or(trimmed);
    Some(disk.to_string())
}

fn storage(c: &mut Checks, dir: &Path) {
    let host = c.host;
    let Some((dev, fstype, options)) = mount_of(host, dir) else {
        c.unknown(
            "storage",
            "filesystem",
            "the log's durability depends on the filesystem",
            "",
        );
        return;
    };
    match fstype.as_str() {
        "tmpfs" | "ramfs" => c.add(
            "storage",
            "filesystem",
            Status::Fail,
            fstype.clone(),
            "tmpfs is memory: the log does not survive a reboot or power loss",
            "put log_dir on a disk filesystem (ext4 or xfs)",
        ),
        "ext4" | "xfs" => c.add(
            "storage",
            "filesystem",
            Status::Ok,
            fstype.clone(),
            "O_DIRECT and fdatasync behave",
            "",
        ),
        other => c.add(
            "storage",
            "filesystem",
            Status::Warn,
            other.to_string(),
            "raftline is measured on ext4 and xfs",
            "prefer ext4 or xfs for log_dir",
        ),
    }
    if options.split(',').any(|o| o == "discard") {
        c.add(
            "storage",
            "discard",
            Status::Warn,
            "mounted with discard",
            "deleting large files issues discards that stall writes (raftline recycles segments for this reason)",
            "mount without discard and run fstrim from a timer",
        );
    } else {
        c.add(
            "storage",
            "discard",
            Status::Ok,
            "no online discard",
            "deletes do not stall writes",
            "",
        );
    }
    let block = block_device(host, &dev);
    let queue = |file: &str| {
        block
            .as_ref()
            .and_then(|b| host.read(&format!("/sys/block/{b}/queue/{file}")))
    };
    match (queue("write_cache"), queue("fua")) {
        (Some(wc), Some(fua)) if wc == "write back" && fua == "0" => c.add(
            "storage",
            "write_cache",
            Status::Warn,
            "volatile write cache, no FUA",
            "every durable write is a write and then a cache flush (about twice the cost)",
            "use a device with power-loss protection (write cache reported as write through) or FUA",
        ),
        (Some(wc), Some(fua)) => c.add("storage", "write_cache", Status::Ok, format!("{wc}, fua {fua}"), "durable writes are cheap", ""),
        _ => c.unknown("storage", "write_cache", "a volatile cache doubles the cost of a durable write", ""),
    }
    match queue("scheduler") {
        Some(s) if s.contains("[bfq]") || s.contains("[cfq]") => c.add(
            "storage",
            "scheduler",
            Status::Warn,
            s,
            "fairness schedulers delay a latency-critical writer behind others",
            "echo none > /sys/block/<dev>/queue/scheduler (mq-deadline is fine too)",
        ),
        Some(s) => {
            let current = s
                .split_whitespace()
                .find(|w| w.starts_with('['))
                .unwrap_or(&s)
                .to_string();
            c.add(
                "storage",
                "scheduler",
                Status::Ok,
                current,
                "no fairness queueing in front of the log",
                "",
            )
        }
        None => c.unknown("storage", "scheduler", "IO scheduling", ""),
    }
    if host.is_live() {
        live_storage(c, dir);
    }
}

fn live_storage(c: &mut Checks, dir: &Path) {
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return;
    };
    // DIO alignment is reported for regular files: probe one in the directory.
    let probe = dir.join(".raftline-tune-probe");
    let created = std::fs::write(&probe, b"").is_ok();
    let probe_c = std::ffi::CString::new(probe.as_os_str().as_encoded_bytes()).ok();
    // SAFETY: statx is plain data; zeroed is valid.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let rc = match (&probe_c, created) {
        // SAFETY: the path is NUL-terminated and stx is a valid, writable statx.
        (Some(p), true) => unsafe {
            libc::statx(
                libc::AT_FDCWD,
                p.as_ptr(),
                0,
                libc::STATX_DIOALIGN,
                &mut stx,
            )
        },
        _ => -1,
    };
    if created {
        let _ = std::fs::remove_file(&probe);
    }
    if rc == 0 && stx.stx_mask & libc::STATX_DIOALIGN != 0 && stx.stx_dio_offset_align > 0 {
        c.add(
            "storage",
            "dio_alignment",
            Status::Ok,
            format!(
                "offset {} B, memory {} B",
                stx.stx_dio_offset_align, stx.stx_dio_mem_align
            ),
            "raftline writes 4 KiB-aligned blocks from 4 KiB-aligned buffers",
            "",
        );
    } else {
        c.add(
            "storage",
            "dio_alignment",
            Status::Warn,
            if created {
                "not reported".to_string()
            } else {
                "could not create a probe file".to_string()
            },
            "without O_DIRECT support the log falls back to buffered writes + fdatasync",
            "check the filesystem supports O_DIRECT and the directory is writable",
        );
    }
    // SAFETY: statvfs is plain data; zeroed is valid.
    let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: path is NUL-terminated and vfs valid and writable.
    if unsafe { libc::statvfs(path.as_ptr(), &mut vfs) } == 0 {
        let free = vfs.f_bavail as u64 * vfs.f_frsize as u64;
        let segment = 128u64 << 20;
        let status = if free >= 16 * segment {
            Status::Ok
        } else {
            Status::Warn
        };
        c.add(
            "storage",
            "free_space",
            status,
            format!(
                "{} MiB free ({} segments of 128 MiB)",
                free >> 20,
                free / segment
            ),
            "segments are created zero-filled ahead of need; a full disk stops the writer",
            "keep at least 16 segments of space free, and purge after snapshots",
        );
    }
}

fn io_uring(c: &mut Checks) {
    let host = c.host;
    match host.read_u64("/proc/sys/kernel/io_uring_disabled") {
        Some(0) => c.add(
            "io_uring",
            "disabled",
            Status::Ok,
            "0 (enabled)",
            "raftline's log writer uses io_uring",
            "",
        ),
        Some(1) => c.add(
            "io_uring",
            "disabled",
            Status::Warn,
            "1 (only for the io_uring_group)",
            "without io_uring the log falls back to pwrite",
            "sysctl -w kernel.io_uring_disabled=0, or add the user to kernel.io_uring_group",
        ),
        Some(v) => c.add(
            "io_uring",
            "disabled",
            Status::Fail,
            v.to_string(),
            "io_uring is off: the log falls back to pwrite",
            "sysctl -w kernel.io_uring_disabled=0",
        ),
        None => c.unknown("io_uring", "disabled", "the log writer uses io_uring", ""),
    }
    if host.is_live() {
        match ::io_uring::IoUring::new(8) {
            Ok(_) => c.add("io_uring", "ring", Status::Ok, "created", "the kernel and seccomp profile allow io_uring", ""),
            Err(e) => c.add(
                "io_uring",
                "ring",
                Status::Fail,
                e.to_string(),
                "a container seccomp profile may block io_uring_setup: the log falls back to pwrite",
                "allow io_uring_setup/io_uring_enter/io_uring_register in the seccomp profile",
            ),
        }
        match ::io_uring::IoUring::<::io_uring::squeue::Entry>::builder()
            .setup_sqpoll(1000)
            .build(8)
        {
            Ok(_) => c.add(
                "io_uring",
                "sqpoll",
                Status::Ok,
                "available",
                "a kernel thread can submit without syscalls",
                "",
            ),
            Err(e) => c.add(
                "io_uring",
                "sqpoll",
                Status::Warn,
                e.to_string(),
                "SQPOLL saves a syscall per submission",
                "needs CAP_SYS_NICE on older kernels",
            ),
        }
    }
}

fn scheduling(c: &mut Checks) {
    let host = c.host;
    if host.is_live() {
        let param = libc::sched_param { sched_priority: 1 };
        // SAFETY: changes this thread's policy, restored right after.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
        if rc == 0 {
            let normal = libc::sched_param { sched_priority: 0 };
            // SAFETY: restores the default policy.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &normal) };
            c.add(
                "scheduling",
                "sched_fifo",
                Status::Ok,
                "allowed",
                "real-time threads are not preempted by normal ones",
                "",
            );
        } else {
            c.add(
                "scheduling",
                "sched_fifo",
                Status::Warn,
                std::io::Error::last_os_error().to_string(),
                "without SCHED_FIFO any process can preempt raftline's threads",
                "run with CAP_SYS_NICE or raise RLIMIT_RTPRIO",
            );
        }
    }
    match host.read("/proc/sys/kernel/sched_rt_runtime_us") {
        Some(v) if v == "-1" => c.add("scheduling", "rt_throttling", Status::Ok, "off", "RT threads are never throttled", ""),
        Some(v) => c.add(
            "scheduling",
            "rt_throttling",
            Status::Warn,
            format!("{v} µs per {} µs", host.read("/proc/sys/kernel/sched_rt_period_us").unwrap_or_else(|| "?".into())),
            "a spinning SCHED_FIFO thread is stopped for the rest of each period once it uses its share",
            "do not spin under SCHED_FIFO, or sysctl -w kernel.sched_rt_runtime_us=-1 (only on isolated cores)",
        ),
        None => c.unknown("scheduling", "rt_throttling", "RT throttling", ""),
    }
}

/// Suggests which core each agent pins to: isolated cores if any, else every online core but
/// the first (left to the OS) when there are enough. Each node takes two (node thread and
/// receiver); the client takes the next one, or a housekeeping core.
pub fn layout(host: &Host, nodes: usize) -> Layout {
    let isolated = isolated_cpus(host);
    let online = online_cpus(host);
    let cores = if !isolated.is_empty() {
        isolated.clone()
    } else if online.len() > 2 {
        online[1..].to_vec()
    } else {
        online.clone()
    };
    if cores.len() >= 2 * nodes {
        let node_cores: Vec<Vec<usize>> = (0..nodes)
            .map(|i| vec![cores[2 * i], cores[2 * i + 1]])
            .collect();
        let housekeeping = online.iter().rev().find(|c| !cores.contains(c)).copied();
        let client_core = cores.get(2 * nodes).copied().or(housekeeping);
        let mut config = node_cores
            .iter()
            .enumerate()
            .map(|(i, cs)| {
                format!("# node {i}\n[runtime]\nthreading = \"dedicated\"\nidle = \"busy-spin\"\ncores = {cs:?}   # node thread, receiver")
            })
            .collect::<Vec<_>>()
            .join("\n");
        if let Some(core) = client_core {
            config += &format!("\n# client: pin to core {core}");
        }
        Layout {
            nodes,
            cores_available: cores,
            threading: "dedicated",
            idle: "busy-spin",
            node_cores,
            client_core,
            config,
        }
    } else {
        let config = "[runtime]\nthreading = \"shared\"\nidle = \"block\"\ncores = []   # too few cores to pin hot threads".to_string();
        Layout {
            nodes,
            cores_available: cores,
            threading: "shared",
            idle: "block",
            node_cores: vec![Vec::new(); nodes],
            client_core: None,
            config,
        }
    }
}
