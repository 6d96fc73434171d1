//! What monitoring reads: the counters and stage times of one or several node directories, as
//! JSON (`raftline stat --json`) or in the Prometheus text exposition format (`raftline stat
//! --prometheus`, and served over HTTP by `raftline exporter`).
//!
//! Names are stable: a counter is `raftline_<key>` (a gauge: positions, role, term, leader,
//! digest, longest cycle) or `raftline_<key>_total` (a count of events), where `<key>` is
//! [`Counter::key`]; every sample carries `member` and `dir` labels. Each stage time is the
//! histogram `raftline_stage_seconds{stage=...}` with the node's own bucket edges. A directory
//! that cannot be read shows as `raftline_up{dir=...} 0` and nothing else.
//!
//! The HTTP side is a minimal handler on `std::net`, not an HTTP crate: it answers one route
//! (`GET /metrics`), one request per connection, on one thread, with read and write timeouts so
//! a client that stalls cannot hold the next scrape for more than two seconds. That is all a
//! Prometheus scraper needs, and it adds no dependency and no runtime to a latency-critical
//! process (the exporter runs as its own process beside the nodes anyway: it reads their
//! memory-mapped counters files).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::counters::{Counter, CountersReader, ALL};
use crate::node::stages::{bucket_upper_us, quantile_us, Stage, STAGES, STAGE_BUCKETS};

/// One stage's histogram as a node published it.
#[derive(Clone, Debug)]
pub struct StageMetrics {
    pub stage: Stage,
    pub buckets: [u64; STAGE_BUCKETS],
    pub sum_ns: u64,
}

impl StageMetrics {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// One node directory, read once.
#[derive(Clone, Debug)]
pub struct NodeMetrics {
    pub dir: PathBuf,
    /// The counters file could not be read: why.
    pub error: Option<String>,
    pub pid: u64,
    pub values: Vec<(Counter, u64)>,
    pub stages: Vec<StageMetrics>,
}

impl NodeMetrics {
    /// Reads `dir/counters` (a running or stopped node's).
    pub fn read(dir: &Path) -> Self {
        match CountersReader::open(dir) {
            Err(e) => Self {
                dir: dir.to_path_buf(),
                error: Some(format!("{}: {e}", dir.join("counters").display())),
                pid: 0,
                values: Vec::new(),
                stages: Vec::new(),
            },
            Ok(r) => Self {
                dir: dir.to_path_buf(),
                error: None,
                pid: r.pid(),
                values: ALL.iter().map(|&c| (c, r.get(c))).collect(),
                stages: STAGES
                    .iter()
                    .map(|&stage| StageMetrics {
                        stage,
                        buckets: r.stage(stage),
                        sum_ns: r.stage_sum_ns(stage),
                    })
                    .collect(),
            },
        }
    }

    pub fn get(&self, counter: Counter) -> Option<u64> {
        self.values
            .iter()
            .find(|(c, _)| *c == counter)
            .map(|&(_, v)| v)
    }
}

/// Reads every directory.
pub fn read_all(dirs: &[PathBuf]) -> Vec<NodeMetrics> {
    dirs.iter().map(|d| NodeMetrics::read(d)).collect()
}

/// `{"nodes": [{"dir", "up", "pid", "counters": {key: value}, "stages": {name: {...}}}]}`.
pub fn json(nodes: &[NodeMetrics]) -> String {
    use serde_json::{json, Map, Value};
    let nodes: Vec<Value> = nodes
        .iter()
        .map(|n| {
            let dir = n.dir.display().to_string();
            if let Some(e) = &n.error {
                return json!({ "dir": dir, "up": false, "error": e });
            }
            let counters: Map<String, Value> =
                n.values.iter().map(|&(c, v)| (c.key(), json!(v))).collect();
            let stages: Map<String, Value> = n
                .stages
                .iter()
                .map(|s| {
                    let q = |q: f64| quantile_us(&s.buckets, q);
                    let value = json!({
                        "count": s.count(),
                        "sum_us": s.sum_ns as f64 / 1e3,
                        "p50_us": q(0.5),
                        "p99_us": q(0.99),
                        "p999_us": q(0.999),
                        "max_us": q(1.0),
                    });
                    (s.stage.name().to_string(), value)
                })
                .collect();
            json!({ "dir": dir, "up": true, "pid": n.pid, "counters": counters, "stages": stages })
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&json!({ "nodes": nodes })).expect("plain values");
    text.push('\n');
    text
}

/// A label value with `\`, `"` and newlines escaped, as the text format wants.
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition format (version 0.0.4).
pub fn prometheus(nodes: &[NodeMetrics]) -> String {
    let mut out = String::new();
    let labels = |n: &NodeMetrics| {
        let member = n
            .get(Counter::MemberId)
            .map_or(String::new(), |m| format!("member=\"{m}\","));
        format!(
            "{member}dir=\"{}\"",
            label_value(&n.dir.display().to_string())
        )
    };
    out.push_str("# HELP raftline_up 1 if the node directory's counters file could be read\n");
    out.push_str("# TYPE raftline_up gauge\n");
    for n in nodes {
        let _ = writeln!(
            out,
            "raftline_up{{{}}} {}",
            labels(n),
            n.error.is_none() as u8
        );
    }
    let up: Vec<&NodeMetrics> = nodes.iter().filter(|n| n.error.is_none()).collect();
    for c in ALL {
        let (name, kind) = if c.is_gauge() {
            (format!("raftline_{}", c.key()), "gauge")
        } else {
            (format!("raftline_{}_total", c.key()), "counter")
        };
        let help = c.name().replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for n in &up {
            let _ = writeln!(out, "{name}{{{}}} {}", labels(n), n.get(c).unwrap_or(0));
        }
    }
    out.push_str(
        "# HELP raftline_stage_seconds how long a log byte waited between two stages (sampled once per duty cycle)\n",
    );
    out.push_str("# TYPE raftline_stage_seconds histogram\n");
    for n in &up {
        let l = labels(n);
        for s in &n.stages {
            let stage = s.stage.name();
            let mut seen = 0;
            for (i, &count) in s.buckets[..STAGE_BUCKETS - 1].iter().enumerate() {
                seen += count;
                let le = bucket_upper_us(i) / 1e6;
                let _ = writeln!(
                    out,
                    "raftline_stage_seconds_bucket{{{l},stage=\"{stage}\",le=\"{le:e}\"}} {seen}"
                );
            }
            let total = s.count();
            let _ = writeln!(
                out,
                "raftline_stage_seconds_bucket{{{l},stage=\"{stage}\",le=\"+Inf\"}} {total}"
            );
            let _ = writeln!(
                out,
                "raftline_stage_seconds_sum{{{l},stage=\"{stage}\"}} {:e}",
                s.sum_ns as f64 / 1e9
            );
            let _ = writeln!(
                out,
                "raftline_stage_seconds_count{{{l},stage=\"{stage}\"}} {total}"
            );
        }
    }
    out
}

/// The request line a client sent, or why there is none.
fn read_request_line(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    // The whole head (to its blank line), bounded.
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    Ok(head.lines().next().unwrap_or("").to_string())
}

fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
}

/// Answers one connection: `GET /metrics` with the Prometheus text of `dirs`, read now.
pub fn answer(mut stream: TcpStream, dirs: &[PathBuf]) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let Ok(line) = read_request_line(&mut stream) else {
        return;
    };
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => respond(
            &mut stream,
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            &prometheus(&read_all(dirs)),
        ),
        ("GET", _) => respond(
            &mut stream,
            "404 Not Found",
            "text/plain",
            "raftline exporter: the metrics are at /metrics\n",
        ),
        _ => respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "raftline exporter: only GET\n",
        ),
    }
}

/// Serves `GET /metrics` for `dirs` on `listener`, one connection at a time, until accepting
/// fails.
pub fn serve(listener: &TcpListener, dirs: &[PathBuf]) -> std::io::Error {
    loop {
        match listener.accept() {
            Ok((stream, _)) => answer(stream, dirs),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // Out of descriptors, a connection reset before accept: the next one may work.
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
            Err(e) => return e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::counters::CountersFile;

    #[test]
    fn a_node_reads_as_json_and_prometheus_text_and_a_missing_one_as_down() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("node-1");
        std::fs::create_dir(&dir).unwrap();
        let w = CountersFile::create(&dir).unwrap();
        w.set(Counter::MemberId, 1);
        w.set(Counter::Role, 2);
        w.set(Counter::CommitPosition, 4096);
        w.set(Counter::DatagramsReceived, 17);
        let mut buckets = [0; STAGE_BUCKETS];
        buckets[10] = 3;
        w.set_stage(Stage::AppendedToCommitted, &buckets, 30_000);
        let nodes = read_all(&[dir.clone(), tmp.path().join("absent")]);

        let text = prometheus(&nodes);
        let dir_label = label_value(&dir.display().to_string());
        for line in [
            format!("raftline_up{{member=\"1\",dir=\"{dir_label}\"}} 1"),
            format!("raftline_role{{member=\"1\",dir=\"{dir_label}\"}} 2"),
            format!("raftline_commit_position{{member=\"1\",dir=\"{dir_label}\"}} 4096"),
            format!("raftline_datagrams_received_total{{member=\"1\",dir=\"{dir_label}\"}} 17"),
            format!("raftline_stage_seconds_count{{member=\"1\",dir=\"{dir_label}\",stage=\"appended_to_committed\"}} 3"),
            "# TYPE raftline_commit_position gauge".to_string(),
            "# TYPE raftline_datagrams_received_total counter".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("raftline_up{dir=\"") && text.contains("absent\"} 0"));

        let v: serde_json::Value = serde_json::from_str(&json(&nodes)).unwrap();
        let node = &v["nodes"][0];
        assert_eq!(node["up"], true);
        assert_eq!(node["counters"]["commit_position"], 4096);
        assert_eq!(node["stages"]["appended_to_committed"]["count"], 3);
        assert_eq!(node["stages"]["appended_to_committed"]["sum_us"], 30.0);
        assert_eq!(v["nodes"][1]["up"], false);
        assert!(v["nodes"][1]["error"].as_str().unwrap().contains("absent"));
    }
}
