//! `raftline-tune apply`: the runtime settings that can change safely without a reboot. Each
//! change is printed with the command that undoes it; nothing is written without `--yes`.
//! Boot parameters are printed, never written.

use crate::host::{device_irqs, parse_cpu_list, Host};

/// One setting to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    pub from: String,
    pub to: String,
}

impl Change {
    pub fn undo(&self) -> String {
        format!("echo '{}' > {}", self.from, self.path)
    }
}

fn current_choice(value: &str) -> String {
    value
        .split_whitespace()
        .find(|w| w.starts_with('['))
        .map_or(value.to_string(), |w| {
            w.trim_matches(['[', ']']).to_string()
        })
}

/// The changes this host needs.
pub fn plan(host: &Host) -> Vec<Change> {
    let mut changes = Vec::new();
    let cpus = host
        .read("/sys/devices/system/cpu/online")
        .map(|s| parse_cpu_list(&s))
        .unwrap_or_default();
    for cpu in cpus {
        let path = format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor");
        if let Some(g) = host.read(&path) {
            if g != "performance" {
                changes.push(Change {
                    path,
                    from: g,
                    to: "performance".into(),
                });
            }
        }
    }
    let thp = "/sys/kernel/mm/transparent_hugepage/enabled";
    if let Some(t) = host.read(thp) {
        let mode = current_choice(&t);
        if mode == "always" {
            changes.push(Change {
                path: thp.into(),
                from: mode,
                to: "madvise".into(),
            });
        }
    }
    for (path, want) in [
        ("/proc/sys/net/core/rmem_max", 8u64 << 20),
        ("/proc/sys/net/core/wmem_max", 8 << 20),
        ("/proc/sys/net/core/busy_poll", 50),
        ("/proc/sys/net/core/busy_read", 50),
    ] {
        if let Some(v) = host.read_u64(path) {
            if v < want {
                changes.push(Change {
                    path: path.into(),
                    from: v.to_string(),
                    to: want.to_string(),
                });
            }
        }
    }
    // Device interrupts off the isolated cores (only when cores are isolated).
    let isolated = host
        .cmdline_param("isolcpus")
        .map(|s| parse_cpu_list(&s))
        .unwrap_or_default();
    let online = host
        .read("/sys/devices/system/cpu/online")
        .map(|s| parse_cpu_list(&s))
        .unwrap_or_default();
    let housekeeping: Vec<String> = online
        .iter()
        .filter(|c| !isolated.contains(c))
        .map(|c| c.to_string())
        .collect();
    if !isolated.is_empty() && !housekeeping.is_empty() {
        let table = host.read("/proc/interrupts").unwrap_or_default();
        for irq in device_irqs(&table) {
            let path = format!("/proc/irq/{irq}/smp_affinity_list");
            if let Some(current) = host.read(&path) {
                if parse_cpu_list(&current)
                    .iter()
                    .any(|c| isolated.contains(c))
                {
                    changes.push(Change {
                        path,
                        from: current,
                        to: housekeeping.join(","),
                    });
                }
            }
        }
    }
    changes
}

/// Boot parameters that cannot be applied at run time.
pub fn boot_advice(host: &Host) -> Vec<String> {
    let mut advice = Vec::new();
    for p in ["isolcpus", "nohz_full", "rcu_nocbs"] {
        if host.cmdline_param(p).is_none() {
            advice.push(format!("{p}=<cores for raftline>"));
        }
    }
    if host.cmdline_param("processor.max_cstate").is_none() {
        advice.push("processor.max_cstate=1 intel_idle.max_cstate=0".into());
    }
    advice
}

/// Writes each change under the host's root; returns the ones that failed, with the reason.
pub fn apply(host: &Host, changes: &[Change]) -> Vec<(Change, String)> {
    let mut failed = Vec::new();
    for change in changes {
        if let Err(e) = std::fs::write(host.path(&change.path), format!("{}\n", change.to)) {
            failed.push((change.clone(), e.to_string()));
        }
    }
    failed
}
