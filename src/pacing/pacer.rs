//! The rate on the real clock: each request waits here for its writes' turn
//! (or for new work to stop) and reports what the table answered; the cuts
//! this makes are logged within a budget.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::controller::{RateController, START_RATE, Ticket};
use super::events::{WriteRateCut, WriteRateCutsHeldBack};
use crate::domain::failure::StopReason;
use crate::retry::InvocationControl;
use crate::telemetry::events::REPEATED_LINE_INTERVAL;
use crate::telemetry::line_budget::LineBudget;

/// A waiter looks again at least this often, so a rate that grew while it
/// slept is used at once.
const LONGEST_NAP: Duration = Duration::from_millis(20);

/// One [`RateController`] shared by every request of the process, on the
/// real clock.
pub struct WritePacer {
    controller: Mutex<RateController>,
    /// Requests wait their turn in order (a fair, first-come lock): none is
    /// passed over again and again while later ones go, so the pages of a
    /// fan-out finish in about the order they were read and its checkpoint
    /// keeps up.
    turn: tokio::sync::Mutex<()>,
    ceiling: Option<u32>,
    /// DEBUG lines of its cuts: a few per second, however many there are.
    cut_lines: LineBudget,
}

impl WritePacer {
    pub fn new(ceiling: Option<u32>) -> Self {
        Self {
            controller: Mutex::new(RateController::new(ceiling, Instant::now())),
            turn: tokio::sync::Mutex::new(()),
            ceiling,
            cut_lines: LineBudget::new(REPEATED_LINE_INTERVAL),
        }
    }

    /// `MAX_WRITE_RATE`, if set.
    pub fn ceiling(&self) -> Option<u32> {
        self.ceiling
    }

    pub fn begin_invocation(&self) {
        self.with(|c| c.begin_invocation(Instant::now()));
    }

    /// Writes per second the bucket lets through now.
    pub fn rate(&self) -> f64 {
        self.with(|c| c.rate()).unwrap_or(START_RATE)
    }

    /// The lowest rate a cut set in this invocation, if any did.
    pub fn lowest(&self) -> Option<f64> {
        self.with(|c| c.lowest()).flatten()
    }

    pub fn stalled(&self) -> bool {
        self.with(|c| c.stalled(Instant::now())).unwrap_or(false)
    }

    /// Waits until `writes` may go out; `Err` when new work stops first.
    pub async fn admit(
        &self,
        writes: usize,
        control: &InvocationControl,
    ) -> Result<Ticket, StopReason> {
        let _turn = self.turn.lock().await;
        loop {
            let wait = match self.with(|c| c.try_take(Instant::now(), writes)) {
                Some(Ok(ticket)) => return Ok(ticket),
                Some(Err(wait)) => wait,
                // A poisoned lock: a panic elsewhere; do not pace at all
                // rather than stop every write.
                None => {
                    return Ok(Ticket::unpaced(Instant::now()));
                }
            };
            if let Some(reason) = control.stop_reason() {
                return Err(reason);
            }
            let mut nap = wait.min(LONGEST_NAP);
            if let Some(left) = control.time_for_new_work() {
                nap = nap.min(left);
            }
            tokio::time::sleep(nap).await;
        }
    }

    pub fn on_answers(&self, ticket: Ticket, admitted: u64, throttled: u64) {
        if let Some(Some(cut)) =
            self.with(|c| c.on_answers(Instant::now(), ticket, admitted, throttled))
        {
            WriteRateCut(cut).emit(&self.cut_lines);
        }
    }

    /// Says, at DEBUG, the cuts whose lines were held back (at the end of a
    /// fan-out, so that the totals are complete).
    pub fn log_held_back_cuts(&self) {
        WriteRateCutsHeldBack {
            budget: &self.cut_lines,
            rate: self.rate(),
        }
        .emit();
    }

    fn with<T>(&self, f: impl FnOnce(&mut RateController) -> T) -> Option<T> {
        self.controller.lock().ok().map(|mut c| f(&mut c))
    }
}
