//! How committed frames reach the service: the [`ApplyStage`] seam (applied on the node's thread
//! by an [`Applier`], or fed to a service thread by the runtime) and the node's step that hands
//! over what the commit position allows. It never hands over a byte above the commit position.

use super::*;

/// How a node hands committed frames to its service: applied right here on the node's thread
/// ([`Applier`], shared threading and the simulator), or fed over a ring to a service thread
/// (dedicated threading, `runtime`). Everything the service sees still comes from the log in
/// order; only where it runs differs.
pub trait ApplyStage {
    /// End of the frames handed over (and, for a local applier, applied).
    fn fed_position(&self) -> u64;
    /// End of the frames the service has applied.
    fn applied_position(&self) -> u64;
    /// Whether a frame of `len` bytes can be handed over now (a full ring says no).
    fn can_take(&mut self, _len: usize) -> bool {
        true
    }
    /// Hands over the frame at `position`, which occupies `encoded` bytes of the log; egress
    /// produced right away goes to `egress`.
    fn apply(
        &mut self,
        position: u64,
        encoded: &[u8],
        frame: &codec::Frame<'_>,
        egress: &mut Vec<Egress>,
    );
    /// Makes what `apply` handed over visible (one store per duty cycle).
    fn flush(&mut self) {}
    /// Egress produced since the last call by a service on another thread; returns how many.
    fn poll_egress(&mut self, _egress: &mut Vec<Egress>) -> usize {
        0
    }
    /// Up to `max` timers due at `now_ns`, earliest first (the leader appends their events).
    fn due_timers(&self, now_ns: u64, max: usize, out: &mut Vec<u64>);
    fn on_role_change(&mut self, role: Role);
    fn terminate(&mut self);
    /// The service's state digest and the client messages applied (for counters).
    fn digest(&self) -> u64;
    fn applied_messages(&self) -> u64;
    /// A snapshot taken since the last call, for the writer (`None` when the service runs
    /// elsewhere and writes its own).
    fn take_snapshot(&mut self) -> Option<TakenSnapshot> {
        None
    }
    fn snapshots_taken(&self) -> u64;
    fn digest_mismatches(&self) -> u64;
    /// Replaces the service's and the engine's state with the snapshot file `bytes` taken at
    /// `position` (a follower that fell behind the leader's purged log); applying resumes
    /// after `position`.
    fn install(&mut self, position: u64, bytes: &[u8]) -> Result<(), String>;
    /// The sessions open when the stage was made or last installed (the node follows later
    /// opens and closes through the egress).
    fn open_sessions(&self, out: &mut Vec<u64>);
}

impl<S: Service> ApplyStage for Applier<S> {
    fn fed_position(&self) -> u64 {
        Applier::applied_position(self)
    }
    fn applied_position(&self) -> u64 {
        Applier::applied_position(self)
    }
    fn apply(
        &mut self,
        position: u64,
        encoded: &[u8],
        frame: &codec::Frame<'_>,
        egress: &mut Vec<Egress>,
    ) {
        Applier::apply(self, position, encoded, frame, egress)
    }
    fn due_timers(&self, now_ns: u64, max: usize, out: &mut Vec<u64>) {
        out.extend(Applier::due_timers(self, now_ns).take(max));
    }
    fn on_role_change(&mut self, role: Role) {
        self.service_mut().on_role_change(role);
    }
    fn terminate(&mut self) {
        self.service_mut().on_terminate();
    }
    fn digest(&self) -> u64 {
        self.service().digest()
    }
    fn applied_messages(&self) -> u64 {
        Applier::applied_messages(self)
    }
    fn take_snapshot(&mut self) -> Option<TakenSnapshot> {
        Applier::take_snapshot(self)
    }
    fn snapshots_taken(&self) -> u64 {
        Applier::snapshots_taken(self)
    }
    fn digest_mismatches(&self) -> u64 {
        Applier::digest_mismatches(self)
    }
    fn install(&mut self, _position: u64, bytes: &[u8]) -> Result<(), String> {
        Applier::install(self, bytes).map_err(|e| e.to_string())
    }
    fn open_sessions(&self, out: &mut Vec<u64>) {
        out.extend(Applier::open_sessions(self));
    }
}

impl<D: Disk, N: Datagrams, A: ApplyStage> Node<D, N, A> {
    pub(super) fn apply_committed(&mut self) -> Result<usize, NodeError> {
        let target = self.commit.min(self.log.appended_position());
        let mut applied = 0;
        let mut read_buf = std::mem::take(&mut self.read_buf);
        'chunks: while self.applier.fed_position() < target {
            let at = self.applier.fed_position();
            let want = ((target - at) as usize)
                .min(APPEND_CHUNK_BYTES.max(self.log.config().frame_len_max()));
            read_buf.resize(want, 0);
            let n = self.log.read(at, &mut read_buf)?;
            let mut progressed = false;
            for (offset, frame) in Frames::new(&read_buf[..n]).map_while(Result::ok) {
                let len = frame.encoded_len();
                if offset + len > n {
                    break;
                }
                if !self.applier.can_take(len) {
                    // The service thread is behind: the rest waits for a later cycle.
                    break 'chunks;
                }
                self.applier.apply(
                    at + offset as u64,
                    &read_buf[offset..offset + len],
                    &frame,
                    &mut self.egress,
                );
                self.stats.frames_applied += 1;
                applied += 1;
                progressed = true;
            }
            if !progressed {
                // The commit position falls inside the frame at `at`: a false durable report
                // counted toward it (only an unauthenticated peer can make one). The frame
                // waits for a commit position past its end; bytes that are no frame at all
                // are a damaged log.
                let whole = self.frame_starts_at(at, &mut read_buf)?;
                self.read_buf = read_buf;
                if whole {
                    self.stats.commit_inside_frame += 1;
                    return Ok(applied);
                }
                return Err(NodeError::Log(LogError::Corrupt {
                    file: format!("segment holding position {at}"),
                    reason: format!(
                        "committed bytes at {at} are not a frame (commit {}, log {}..{})",
                        self.commit,
                        self.log.start_position(),
                        self.log.appended_position()
                    ),
                }));
            }
        }
        self.read_buf = read_buf;
        self.applier.flush();
        Ok(applied)
    }
}
