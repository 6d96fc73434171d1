//! How a simulated member applies: on the node's own tick (an `Applier`, shared threading) or,
//! in a share of the seeds, through the dedicated-mode path the runtime ships: the node's
//! `RemoteApplier` feeding a `ServiceHost` over simulated record channels, the host run by the
//! simulator when it chooses (the service thread's lag).

use super::*;
use crate::codec;
use crate::node::remote::{RemoteApplier, ServiceHost};
use crate::service::snapshot::TakenSnapshot;
use crate::sim::channel::{SimSink, SimSource};

/// The simulated service's host on its "thread".
pub(super) type SimHost = ServiceHost<RecordingService, SimSource, SimSink>;

/// A member's apply stage: local, or the node's end of the dedicated-mode path.
pub(super) enum SimApply {
    Local(Applier<RecordingService>),
    Remote(RemoteApplier<SimSink, SimSource>),
}

macro_rules! each {
    ($self:expr, $a:ident => $e:expr) => {
        match $self {
            SimApply::Local($a) => $e,
            SimApply::Remote($a) => $e,
        }
    };
}

impl ApplyStage for SimApply {
    fn fed_position(&self) -> u64 {
        each!(self, a => a.fed_position())
    }
    fn applied_position(&self) -> u64 {
        each!(self, a => ApplyStage::applied_position(a))
    }
    fn can_take(&mut self, len: usize) -> bool {
        each!(self, a => a.can_take(len))
    }
    fn apply(
        &mut self,
        position: u64,
        encoded: &[u8],
        frame: &codec::Frame<'_>,
        egress: &mut Vec<Egress>,
    ) {
        each!(self, a => ApplyStage::apply(a, position, encoded, frame, egress))
    }
    fn flush(&mut self) {
        each!(self, a => a.flush())
    }
    fn poll_egress(&mut self, egress: &mut Vec<Egress>) -> usize {
        each!(self, a => a.poll_egress(egress))
    }
    fn due_timers(&self, now_ns: u64, max: usize, out: &mut Vec<u64>) {
        each!(self, a => ApplyStage::due_timers(a, now_ns, max, out))
    }
    fn on_role_change(&mut self, role: Role) {
        each!(self, a => ApplyStage::on_role_change(a, role))
    }
    fn terminate(&mut self) {
        each!(self, a => ApplyStage::terminate(a))
    }
    fn digest(&self) -> u64 {
        each!(self, a => ApplyStage::digest(a))
    }
    fn applied_messages(&self) -> u64 {
        each!(self, a => ApplyStage::applied_messages(a))
    }
    fn take_snapshot(&mut self) -> Option<TakenSnapshot> {
        each!(self, a => ApplyStage::take_snapshot(a))
    }
    fn snapshots_taken(&self) -> u64 {
        each!(self, a => ApplyStage::snapshots_taken(a))
    }
    fn digest_mismatches(&self) -> u64 {
        each!(self, a => ApplyStage::digest_mismatches(a))
    }
    fn install(&mut self, position: u64, bytes: &[u8]) -> Result<(), String> {
        each!(self, a => ApplyStage::install(a, position, bytes))
    }
    fn open_sessions(&self, out: &mut Vec<u64>) {
        each!(self, a => ApplyStage::open_sessions(a, out))
    }
}

impl Member {
    /// The applier that holds the member's service (on the node, or in its host): what the
    /// checkers read. `None` while the member is down.
    pub(super) fn service(&self) -> Option<&Applier<RecordingService>> {
        match self.node.as_ref()?.applier() {
            SimApply::Local(a) => Some(a),
            SimApply::Remote(_) => self.host.as_ref().map(|h| h.applier()),
        }
    }
}
