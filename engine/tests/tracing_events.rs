//! The engine reports through `tracing`: an application that embeds three nodes and installs
//! its own (capturing) subscriber sees the leader's election as one event whose fields say
//! which member, in which term, from which state, why, and at what log positions.

mod common;
use common::{free_ports, shared_config};

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftline::runtime::RunningNode;
use raftline::service::echo::EchoService;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// One event: its level and every field, as text.
#[derive(Clone, Debug)]
struct Captured {
    level: tracing::Level,
    fields: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
struct Capture {
    events: Arc<Mutex<Vec<Captured>>>,
    next_span: Arc<AtomicU64>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.events.lock().unwrap().push(Captured {
            level: *event.metadata().level(),
            fields,
        });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn an_embedding_application_sees_the_leader_elected_as_an_event_with_its_fields() {
    let capture = Capture::default();
    // The nodes run on their own threads: the subscriber is the process's.
    tracing::subscriber::set_global_default(capture.clone()).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let members = free_ports(3);
    let nodes: Vec<RunningNode<EchoService>> = (0..3)
        .map(|id| {
            RunningNode::start(
                &shared_config(id, &members, tmp.path(), 7),
                EchoService::default(),
            )
        })
        .collect::<Result<_, _>>()
        .unwrap();

    let start = Instant::now();
    let elected = loop {
        let events = capture.events.lock().unwrap().clone();
        let leader = events.into_iter().find(|e| {
            e.fields.contains_key("from")
                && e.fields.get("to").is_some_and(|to| to.contains("Leader"))
        });
        if let Some(e) = leader {
            break e;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no leader transition event in 20 s; saw {:?}",
            capture.events.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    for node in nodes {
        node.stop();
    }

    assert_eq!(elected.level, tracing::Level::INFO);
    let f = &elected.fields;
    let member: u32 = f["member"].parse().unwrap();
    assert!(member < 3, "{f:?}");
    let term: u64 = f["term"].parse().unwrap();
    assert!(term >= 1, "a leader is elected in a term above 0: {f:?}");
    assert!(f["from"].contains("Candidate"), "{f:?}");
    assert!(f.contains_key("reason"), "{f:?}");
    for position in ["appended", "durable", "commit"] {
        let _: u64 = f[position]
            .parse()
            .unwrap_or_else(|_| panic!("{position} is not a position: {f:?}"));
    }
    let message = &f["message"];
    assert!(
        message.contains(&format!("member {member} ")) && message.contains(&format!("term {term}")),
        "the sentence says what the fields say: {f:?}"
    );
}
