//! The service every simulated replica runs: it records what it applied (for the exactly-once
//! and time checkers) and snapshots its whole state, so installs and recovery are exercised.

use super::*;

/// The test service: records every applied client message and folds it into a digest.
#[derive(Debug)]
pub struct RecordingService {
    digest: u64,
    /// (session, sequence) of every message applied, in order.
    pub applied: Vec<(u64, u64)>,
    pub timers: u64,
    /// Correlation ids of the timers fired, in order.
    pub fired_timers: Vec<u64>,
    last_timestamp_ns: u64,
    /// The first time the log's timestamps went back: (before, after).
    pub time_went_back: Option<(u64, u64)>,
}

impl Default for RecordingService {
    fn default() -> Self {
        Self {
            digest: FNV_OFFSET,
            applied: Vec::new(),
            timers: 0,
            fired_timers: Vec::new(),
            last_timestamp_ns: 0,
            time_went_back: None,
        }
    }
}

impl RecordingService {
    fn observe_time(&mut self, ctx: &Context) {
        if ctx.timestamp_ns < self.last_timestamp_ns && self.time_went_back.is_none() {
            self.time_went_back = Some((self.last_timestamp_ns, ctx.timestamp_ns));
        }
        self.last_timestamp_ns = self.last_timestamp_ns.max(ctx.timestamp_ns);
    }
}

impl Service for RecordingService {
    fn on_session_open(&mut self, ctx: &mut Context, session_id: u64) {
        self.observe_time(ctx);
        self.digest = fnv1a(fnv1a(self.digest, b"open"), &session_id.to_le_bytes());
        self.digest = fnv1a(self.digest, &ctx.timestamp_ns.to_le_bytes());
    }

    fn on_message(&mut self, ctx: &mut Context, session_id: u64, payload: &[u8]) {
        self.observe_time(ctx);
        self.digest = fnv1a(fnv1a(self.digest, &session_id.to_le_bytes()), payload);
        self.digest = fnv1a(self.digest, &ctx.timestamp_ns.to_le_bytes());
        let sequence = payload
            .get(..8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
        self.applied.push((session_id, sequence));
        // Every fifth message schedules a timer 30 ms of leader time later: timers are
        // scheduled by the service and fired through the log, once, on every replica.
        if sequence % 5 == 0 {
            ctx.schedule_timer(
                session_id * 1_000_000 + sequence,
                ctx.timestamp_ns + 30 * MS,
            );
        }
    }

    fn on_timer(&mut self, ctx: &mut Context, correlation_id: u64) {
        self.observe_time(ctx);
        self.timers += 1;
        self.fired_timers.push(correlation_id);
        self.digest = fnv1a(fnv1a(self.digest, b"timer"), &correlation_id.to_le_bytes());
        self.digest = fnv1a(self.digest, &ctx.timestamp_ns.to_le_bytes());
    }

    fn digest(&self) -> u64 {
        self.digest
    }

    /// Everything, the history included (the exactly-once checks read it).
    fn on_take_snapshot(&mut self, _position: u64, out: &mut Vec<u8>) -> bool {
        let mut w = crate::service::snapshot::Writer { out };
        w.u64(self.digest);
        w.u64(self.timers);
        w.u64(self.last_timestamp_ns);
        w.u64(self.applied.len() as u64);
        for &(session, sequence) in &self.applied {
            w.u64(session);
            w.u64(sequence);
        }
        w.u64(self.fired_timers.len() as u64);
        for &id in &self.fired_timers {
            w.u64(id);
        }
        true
    }

    fn on_start(&mut self, snapshot: Option<&[u8]>) -> Result<(), String> {
        let Some(bytes) = snapshot else {
            return Ok(());
        };
        let mut r = crate::service::snapshot::Reader::new(bytes);
        let mut read = || r.u64().map_err(|e| e.to_string());
        let digest = read()?;
        let timers = read()?;
        let last_timestamp_ns = read()?;
        let mut applied = Vec::new();
        for _ in 0..read()? {
            applied.push((read()?, read()?));
        }
        let mut fired_timers = Vec::new();
        for _ in 0..read()? {
            fired_timers.push(read()?);
        }
        *self = Self {
            digest,
            applied,
            timers,
            fired_timers,
            last_timestamp_ns,
            time_went_back: None,
        };
        Ok(())
    }
}
