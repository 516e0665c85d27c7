//! What the handler says happened, one typed event per happening: each
//! `emit` writes its log line and updates its metric together, so the two
//! cannot disagree.

use std::time::Duration;

use tracing::{info, warn};

use crate::domain::failure::SinkError;
use crate::domain::outcome::{BatchSummary, MessageOutcome};
use crate::domain::stamp::{StampPlan, StampReport};
use crate::fanout::FanOutError;
use crate::telemetry::metrics;

/// The last line of every message's story, whatever happened.
pub(super) struct MessageFinished<'a>(pub(super) &'a MessageOutcome);

impl MessageFinished<'_> {
    pub(super) fn emit(&self) {
        let outcome = self.0;
        info!(
            outcome = outcome.label(),
            handed_back = outcome.hands_back(),
            error_kind = outcome.error_kind(),
            "message outcome: {}",
            outcome.label()
        );
    }
}

/// One message's fan-out ended: applied, stopped early or failed (what a
/// failure means is said next, by the handler's decision).
pub(super) struct FanOutFinished<'a> {
    pub(super) result: &'a Result<StampReport, FanOutError>,
    pub(super) plan: &'a StampPlan,
    pub(super) duration: Duration,
}

impl FanOutFinished<'_> {
    pub(super) fn emit(&self) {
        metrics::fan_out_finished(self.duration);
        match self.result {
            Ok(report) => {
                let seconds = self.duration.as_secs_f64();
                info!(
                    written = report.written,
                    already_applied = report.already_applied,
                    already_applied_on_read = report.already_applied_on_read,
                    missing = report.missing,
                    throttled_writes = report.throttled_writes,
                    duration_ms = (seconds * 1000.0) as u64,
                    records_per_second = (report.examined() as f64 / seconds.max(1e-9)) as u64,
                    "applied"
                );
                if let Some(left) = report.left_behind.filter(|n| *n > 0) {
                    warn!(
                        left_behind = left,
                        created_from = %self.plan.selection.created_before,
                        "last execution of the day: {left} records were created after the \
                         execution time and no later run will stamp them"
                    );
                }
            }
            Err(FanOutError::Stopped { reason, report }) => warn!(
                reason = %reason,
                written = report.written,
                already_applied = report.already_applied,
                throttled_writes = report.throttled_writes,
                "stopped before done, handed back: {reason}; the retry skips what is already stamped"
            ),
            Err(FanOutError::Store { .. }) => {}
        }
    }
}

/// The invocation's summary: its counters and the `METRICS:` line the
/// runbook parses, from the same numbers.
pub(super) struct BatchFinished<'a> {
    pub(super) summary: &'a BatchSummary,
    pub(super) duration: Duration,
}

impl BatchFinished<'_> {
    pub(super) fn emit(&self) {
        let summary = self.summary;
        metrics::batch_finished(summary);
        info!(
            messages_processed = summary.messages_processed,
            messages_skipped = summary.messages_skipped,
            messages_superseded = summary.messages_superseded,
            messages_dead_lettered = summary.messages_dead_lettered,
            messages_retried = summary.messages_retried,
            messages_failed = summary.messages_failed,
            chargebacks_updated = summary.chargebacks_updated,
            chargebacks_already_applied = summary.chargebacks_already_applied,
            chargebacks_missing = summary.chargebacks_missing,
            chargebacks_left_behind = summary.chargebacks_left_behind,
            duration_ms = self.duration.as_millis() as u64,
            "{}",
            summary.metrics_line()
        );
    }
}

/// Why a message could not be parked, as its handed-back line says it.
pub(super) struct NotParked<'a>(pub(super) &'a SinkError);

impl std::fmt::Display for NotParked<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            SinkError::NotConfigured { .. } | SinkError::Unencodable { .. } => {
                write!(f, "{}", self.0)
            }
            SinkError::Refused { .. } => write!(f, "the dead-letter queue refused it: {}", self.0),
            SinkError::TimedOut { waited, .. } => {
                write!(f, "the dead-letter queue did not answer within {waited:?}")
            }
        }
    }
}
