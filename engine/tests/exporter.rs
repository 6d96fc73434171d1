//! `raftline exporter` beside a running 3-node cluster: an HTTP client scrapes
//! `/metrics`, and the answer is valid Prometheus text (checked line by line against the
//! exposition format below) that carries each member's role, term, commit position, counters
//! and stage histograms; `raftline stat --json` reads the same directories.

mod common;
use common::{free_ports, shared_config};

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftline::client::{ClientConfig, ClientEvent, ClusterClient};
use raftline::runtime::counters::{Counter, CountersReader};
use raftline::runtime::{monotonic_ns, RunningNode};
use raftline::service::echo::EchoService;

/// One sample: metric name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `k="v",...` with the format's escapes; an error names what is wrong.
fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let eq = rest.find('=').ok_or(format!("label without '=': {rest}"))?;
        let key = &rest[..eq];
        if !is_name(key) || key.contains(':') {
            return Err(format!("bad label name {key:?}"));
        }
        let mut value = String::new();
        let mut chars = rest[eq + 1..].char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("label {key} value not quoted"));
        }
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => return Err(format!("bad escape \\{other:?} in label {key}")),
                },
                '"' => {
                    end = Some(eq + 1 + i + 1);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.ok_or(format!("label {key} value not closed"))?;
        if labels.insert(key.to_string(), value).is_some() {
            return Err(format!("label {key} twice"));
        }
        rest = &rest[end..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    Ok(labels)
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("bad value {s:?}")),
    }
}

/// Parses the text exposition format strictly: every line is a HELP, a TYPE or a sample; a
/// family's TYPE comes once and before its samples, which are contiguous; a histogram's buckets
/// are cumulative and end at `+Inf` equal to its `_count`.
fn parse_exposition(text: &str) -> Result<(Vec<Sample>, BTreeMap<String, String>), String> {
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut words = rest.splitn(3, ' ');
            let (kind, name) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            if !is_name(name) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            match kind {
                "HELP" => {}
                "TYPE" => {
                    let t = words.next().unwrap_or("");
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                        return Err(at(format!("bad type {t:?}")));
                    }
                    if types.insert(name.to_string(), t.to_string()).is_some() {
                        return Err(at("TYPE twice".into()));
                    }
                    if let Some(prev) = current.replace(name.to_string()) {
                        finished.insert(prev);
                    }
                }
                _ => {}
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or(at("no value".into()))?;
        let (name, labels) = match series.split_once('{') {
            Some((name, l)) => (
                name,
                parse_labels(l.strip_suffix('}').ok_or(at("labels not closed".into()))?)
                    .map_err(at)?,
            ),
            None => (series, BTreeMap::new()),
        };
        if !is_name(name) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        if !types.contains_key(family) {
            return Err(at(format!("sample of {family} before its TYPE")));
        }
        if finished.contains(family) || current.as_deref() != Some(family) {
            return Err(at(format!("samples of {family} are not contiguous")));
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value: parse_value(value).map_err(at)?,
        });
    }
    // Histograms: cumulative buckets, +Inf = count.
    let mut series: BTreeMap<(String, String), Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts = BTreeMap::new();
    for s in &samples {
        if let Some(family) = s.name.strip_suffix("_bucket") {
            let mut key = s.labels.clone();
            let le = key.remove("le").ok_or(format!("{} without le", s.name))?;
            series
                .entry((family.to_string(), format!("{key:?}")))
                .or_default()
                .push((parse_value(&le)?, s.value));
        } else if let Some(family) = s.name.strip_suffix("_count") {
            counts.insert((family.to_string(), format!("{:?}", s.labels)), s.value);
        }
    }
    for (key, buckets) in &series {
        if !buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        {
            return Err(format!("{key:?}: buckets not cumulative in increasing le"));
        }
        let last = buckets.last().unwrap();
        if last.0 != f64::INFINITY || Some(&last.1) != counts.get(key) {
            return Err(format!("{key:?}: +Inf bucket missing or not the count"));
        }
    }
    Ok((samples, types))
}

#[test]
fn the_parser_refuses_what_prometheus_would() {
    let good = "# TYPE a gauge\na{x=\"1\"} 2\n";
    assert!(parse_exposition(good).is_ok());
    for bad in [
        "a 1\n",                                      // no TYPE
        "# TYPE a gauge\na{x=1} 2\n",                 // unquoted label
        "# TYPE a gauge\na{x=\"1\"} two\n",           // bad value
        "# TYPE a gauge\n# TYPE b gauge\nb 1\na 1\n", // not contiguous
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

struct Exporter(Child);

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_http_scrape_of_the_exporter_is_valid_prometheus_text_with_each_members_state() {
    let tmp = tempfile::tempdir().unwrap();
    let members = free_ports(3);
    let nodes: Vec<RunningNode<EchoService>> = (0..3)
        .map(|id| {
            RunningNode::start(
                &shared_config(id, &members, tmp.path(), 9),
                EchoService::default(),
            )
        })
        .collect::<Result<_, _>>()
        .unwrap();
    // Some committed traffic, so positions and stage histograms are not all zero.
    let addrs = members.iter().map(|m| m.parse().unwrap()).collect();
    let mut client = ClusterClient::connect(ClientConfig::new(addrs, 9), monotonic_ns).unwrap();
    let start = Instant::now();
    let (mut applied, mut next) = (0u64, 0u64);
    while applied < 50 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{applied} of 50 applied"
        );
        while next < 50 && client.outstanding() < 8 {
            client.offer(monotonic_ns(), &next.to_le_bytes()).unwrap();
            next += 1;
        }
        client.poll(monotonic_ns(), |e| {
            if let ClientEvent::Applied { .. } = e {
                applied += 1;
            }
        });
        std::thread::sleep(Duration::from_micros(200));
    }
    let dirs: Vec<String> = (0..3)
        .map(|id| tmp.path().join(format!("node-{id}")).display().to_string())
        .collect();
    // The counters are published once a millisecond: wait (bounded) until every member's
    // shows a commit and the leader's the 50 requests.
    let start = Instant::now();
    loop {
        let readers: Vec<CountersReader> = dirs
            .iter()
            .map(|d| CountersReader::open(d.as_ref()).unwrap())
            .collect();
        let published = readers.iter().all(|r| r.get(Counter::CommitPosition) > 0)
            && readers
                .iter()
                .any(|r| r.get(Counter::Role) == 2 && r.get(Counter::ClientRequests) >= 50);
        if published {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "counters not published"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_raftline"));
    command.args(["exporter", "--listen", "127.0.0.1:0"]);
    for d in &dirs {
        command.args(["--dir", d]);
    }
    let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let exporter = Exporter(child);
    let mut said = String::new();
    BufReader::new(stderr).read_line(&mut said).unwrap();
    let url = said
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {said:?}"))
        .to_string();

    let response = ureq::get(&url).call().unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.content_type().starts_with("text/plain"));
    let text = response.into_string().unwrap();
    let (samples, types) = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    println!("scraped {} samples from {url}", samples.len());

    let of = |name: &str, member: u32| {
        samples
            .iter()
            .find(|s| s.name == name && s.labels.get("member") == Some(&member.to_string()))
            .unwrap_or_else(|| panic!("no {name} for member {member}"))
            .value
    };
    let roles: Vec<f64> = (0..3).map(|m| of("raftline_role", m)).collect();
    assert_eq!(
        roles.iter().filter(|&&r| r == 2.0).count(),
        1,
        "one leader: {roles:?}"
    );
    for m in 0..3 {
        assert_eq!(of("raftline_up", m), 1.0);
        assert!(of("raftline_term", m) >= 1.0);
        assert!(
            of("raftline_commit_position", m) > 0.0,
            "member {m} committed"
        );
    }
    let leader = roles.iter().position(|&r| r == 2.0).unwrap() as u32;
    assert!(of("raftline_client_requests_total", leader) >= 50.0);
    assert_eq!(types["raftline_commit_position"], "gauge");
    assert_eq!(types["raftline_datagrams_received_total"], "counter");
    assert_eq!(types["raftline_stage_seconds"], "histogram");
    let committed = samples.iter().find(|s| {
        s.name == "raftline_stage_seconds_count"
            && s.labels.get("member") == Some(&leader.to_string())
            && s.labels.get("stage").map(String::as_str) == Some("appended_to_committed")
    });
    assert!(committed.is_some_and(|s| s.value > 0.0), "{committed:?}");

    let missing = ureq::get(&url.replace("/metrics", "/other")).call();
    assert!(matches!(missing, Err(ureq::Error::Status(404, _))));
    drop(exporter);

    // The same directories through `raftline stat --json`.
    let out = Command::new(env!("CARGO_BIN_EXE_raftline"))
        .arg("stat")
        .args(&dirs)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes_json = v["nodes"].as_array().unwrap();
    assert_eq!(nodes_json.len(), 3);
    assert!(nodes_json
        .iter()
        .all(|n| n["up"] == true && n["counters"]["commit_position"].as_u64() > Some(0)));

    for node in nodes {
        node.stop();
    }
}
