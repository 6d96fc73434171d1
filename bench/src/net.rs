//! Where a test's nodes live on the network (the fault harness's, the external-cluster
//! test's): each in its own network namespace, joined to the host by a veth pair on a bridge,
//! so links between nodes can be cut (a blackhole route in the sender's namespace cuts one
//! direction), or on loopback when namespaces are not available (not root, no iproute2), where
//! partitions are skipped.

use std::path::Path;
use std::process::Command;

/// The nodes' network.
pub enum Network {
    /// One namespace per node; the client stays in the host namespace.
    Namespaces {
        prefix: String,
        subnet: u8,
        nodes: usize,
    },
    Loopback,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Network {
    /// Builds namespaces `<prefix><i>` for `nodes` nodes on 10.<subnet>.0.0/24, or says why not.
    pub fn namespaces(nodes: usize, tag: u32) -> Result<Self, String> {
        remove_stale();
        let prefix = format!("rlf{tag}n");
        // A subnet no other run on this host is using (two harnesses may run at once).
        let in_use = Command::new("ip")
            .args(["-o", "-4", "addr", "show"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let subnet = (0..100u32)
            .map(|k| 100 + ((tag + k) % 100) as u8)
            .find(|s| !in_use.contains(&format!("10.{s}.0.254/")))
            .ok_or("every subnet 10.100-199.0.0/24 is in use")?;
        let net = Network::Namespaces {
            prefix: prefix.clone(),
            subnet,
            nodes,
        };
        net.teardown();
        let bridge = format!("{prefix}br");
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("10.{subnet}.0.254/24"),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 0..nodes {
            let ns = format!("{prefix}{i}");
            let host_end = format!("{prefix}v{i}");
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &host_end, "master", &bridge])?;
            ip(&["link", "set", &host_end, "up"])?;
            let addr = format!("10.{subnet}.0.{}/24", i + 1);
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// Node `i`'s address for members and clients.
    pub fn address(&self, i: usize, loopback_port: &str) -> String {
        match self {
            Network::Namespaces { subnet, .. } => format!("10.{subnet}.0.{}:7400", i + 1),
            Network::Loopback => loopback_port.to_string(),
        }
    }

    /// The command prefix that runs a program in node `i`'s namespace.
    pub fn wrap(&self, i: usize) -> Vec<String> {
        match self {
            Network::Namespaces { prefix, .. } => {
                vec![
                    "ip".into(),
                    "netns".into(),
                    "exec".into(),
                    format!("{prefix}{i}"),
                ]
            }
            Network::Loopback => Vec::new(),
        }
    }

    pub fn can_partition(&self) -> bool {
        matches!(self, Network::Namespaces { .. })
    }

    /// Drops everything node `from` sends to node `to` (one direction).
    pub fn cut(&self, from: usize, to: usize) -> Result<(), String> {
        match self {
            Network::Namespaces { prefix, subnet, .. } => ip(&[
                "-n",
                &format!("{prefix}{from}"),
                "route",
                "add",
                "blackhole",
                &format!("10.{subnet}.0.{}/32", to + 1),
            ]),
            Network::Loopback => Err("no partitions on loopback".into()),
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        if let Network::Namespaces {
            prefix,
            subnet,
            nodes,
        } = self
        {
            for from in 0..*nodes {
                for to in 0..*nodes {
                    let _ = ip(&[
                        "-n",
                        &format!("{prefix}{from}"),
                        "route",
                        "del",
                        "blackhole",
                        &format!("10.{subnet}.0.{}/32", to + 1),
                    ]);
                }
            }
        }
    }

    /// Removes the namespaces and the bridge (also what an earlier run left behind).
    pub fn teardown(&self) {
        if let Network::Namespaces { prefix, nodes, .. } = self {
            for i in 0..*nodes {
                let _ = ip(&["netns", "del", &format!("{prefix}{i}")]);
            }
            let _ = ip(&["link", "del", &format!("{prefix}br")]);
        }
    }
}

/// Removes the namespaces and bridges of earlier runs whose process is gone (a run stopped by
/// a signal cannot clean up after itself).
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("rlf") else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('n') else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
            let _ = ip(&["link", "del", &format!("rlf{pid}nbr")]);
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.teardown();
    }
}
