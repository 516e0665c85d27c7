//! What the pacing says at DEBUG, as typed events (see `telemetry::events`):
//! a cut of the write rate, within a budget of one line a second, and what
//! the budget held back, said when a fan-out ends so the totals stay exact.

use std::time::Instant;

use tracing::{Level, debug};

use super::controller::Cut;
use crate::telemetry::line_budget::LineBudget;

/// The write rate was cut after throttling.
pub(crate) struct WriteRateCut(pub Cut);

impl WriteRateCut {
    /// Within `budget`: one line per interval.
    pub(crate) fn emit(&self, budget: &LineBudget) {
        if !tracing::enabled!(Level::DEBUG) {
            return;
        }
        let Some(held_back) = budget.admit("cut", Instant::now()) else {
            return;
        };
        let Cut {
            old,
            new,
            admitted_share,
        } = self.0;
        debug!(
            old_writes_per_second = old.round() as u64,
            new_writes_per_second = new.round() as u64,
            admitted_share = (admitted_share * 1000.0).round() / 1000.0,
            held_back,
            "write rate cut: DynamoDB throttled writes"
        );
    }
}

/// What is still held back of [`WriteRateCut`], with the rate now; said
/// when a fan-out ends.
pub(crate) struct WriteRateCutsHeldBack<'a> {
    pub budget: &'a LineBudget,
    pub rate: f64,
}

impl WriteRateCutsHeldBack<'_> {
    pub(crate) fn emit(&self) {
        for (_, held_back) in self.budget.drain() {
            debug!(
                held_back,
                writes_per_second = self.rate.round() as u64,
                "write rate cuts held back"
            );
        }
    }
}
