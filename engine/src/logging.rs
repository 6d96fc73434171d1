//! What the engine says, and the plain subscriber our binaries print it with.
//!
//! Every message the engine has for an operator is a [`tracing`] event: a role transition, a
//! refused peer, a recovery finding, a fallback at start. The event carries its facts as
//! fields (`member`, `term`, positions, `reason`, ...) and a sentence that says the same for a
//! human. An application that embeds raftline installs whatever subscriber it uses and gets the
//! fields; nothing is formatted when no subscriber wants the event's level, which is what keeps
//! the per-message paths free of string work.
//!
//! [`StderrLines`] is the subscriber `raftline node` and the bench install: one line per event on
//! stderr, `raftline: ` and the sentence, exactly what the engine printed before it used
//! `tracing`. Its level comes from `RAFTLINE_LOG` (`off`, `error`, `warn`, `info` (the default),
//! `debug`, `trace`); events of other crates are printed from `warn` up.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Prints each event's message as one `raftline: ...` line on stderr (spans are ignored).
pub struct StderrLines {
    max: LevelFilter,
    next_span: AtomicU64,
}

impl StderrLines {
    pub fn new(max: LevelFilter) -> Self {
        Self {
            max,
            next_span: AtomicU64::new(1),
        }
    }

    /// The level `RAFTLINE_LOG` names, or an error naming what it holds instead.
    pub fn level_from_env() -> Result<LevelFilter, String> {
        match std::env::var("RAFTLINE_LOG") {
            Err(_) => Ok(LevelFilter::INFO),
            Ok(v) => v.trim().parse::<LevelFilter>().map_err(|_| {
                format!("RAFTLINE_LOG is {v:?}; expected off, error, warn, info, debug or trace")
            }),
        }
    }

    /// Installs this subscriber for the whole process (every thread), at the level
    /// `RAFTLINE_LOG` names. Does nothing if a subscriber is already installed.
    pub fn install() -> Result<(), String> {
        let level = Self::level_from_env()?;
        let _ = tracing::subscriber::set_global_default(Self::new(level));
        Ok(())
    }
}

/// Collects an event's `message` field (the sentence).
#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
}

/// Events from other crates in the process (a peer library the bench runs, the embedding
/// application's dependencies) are printed from this level up only.
const OTHERS_MAX: LevelFilter = LevelFilter::WARN;

impl Subscriber for StderrLines {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let ours = metadata.target().starts_with("raftline");
        *metadata.level() <= self.max && (ours || *metadata.level() <= OTHERS_MAX)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut message = Message::default();
        event.record(&mut message);
        let mut line = String::with_capacity(message.0.len() + 11);
        line.push_str("raftline: ");
        line.push_str(&message.0);
        line.push('\n');
        // One write per line, so lines from several threads do not interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_level_is_read_from_its_names_and_a_wrong_one_is_named() {
        for (text, level) in [
            ("off", LevelFilter::OFF),
            ("warn", LevelFilter::WARN),
            ("INFO", LevelFilter::INFO),
            ("debug", LevelFilter::DEBUG),
        ] {
            assert_eq!(text.parse::<LevelFilter>().unwrap(), level);
        }
        let subscriber = StderrLines::new(LevelFilter::WARN);
        tracing::subscriber::with_default(subscriber, || {
            assert!(tracing::enabled!(tracing::Level::WARN));
            assert!(!tracing::enabled!(tracing::Level::INFO));
        });
        // Another crate's INFO is not ours to print; its WARN is.
        tracing::subscriber::with_default(StderrLines::new(LevelFilter::INFO), || {
            assert!(tracing::enabled!(tracing::Level::INFO));
            assert!(!tracing::enabled!(target: "openraft::core", tracing::Level::INFO));
            assert!(tracing::enabled!(target: "openraft::core", tracing::Level::WARN));
        });
    }
}
