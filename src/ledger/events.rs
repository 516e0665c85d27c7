//! What the run ledger says: a run answered an event, a run completed, the
//! ledger could not be used. Each `emit` writes its line and bumps its
//! metric together.

use tracing::{debug, info, warn};

use crate::domain::event::ConsolidationEvent;
use crate::domain::failure::StoreError;
use crate::domain::run::{Checkpoint, IndexPosition, Run, RunCounts, RunStart, ledger_time};
use crate::telemetry::metrics;

/// A completed run covers the event: no fan-out. (`RunsSuperseded` is
/// counted with the invocation's other message counts, from its summary.)
pub(crate) struct RunSuperseded<'a> {
    pub(crate) run: &'a Run,
    pub(crate) event: &'a ConsolidationEvent,
}

impl RunSuperseded<'_> {
    pub(crate) fn emit(&self) {
        let run = self.run;
        info!(
            superseded_by_execution = run.execution_sequence,
            superseded_by_execution_time = run.execution_time.map(ledger_time),
            run_finished_at = run.finished_at.map(ledger_time),
            "already done: the run ledger has execution {} of {} completed with a cutoff at or \
             after this event's; nothing read or written for execution {}",
            run.execution_sequence,
            run.partition_date,
            self.event.execution.sequence()
        );
    }
}

/// An in-progress run is picked up after its checkpoint.
pub(crate) struct RunResumed<'a> {
    pub(crate) checkpoint: &'a Checkpoint,
}

impl RunResumed<'_> {
    pub(crate) fn emit(&self) {
        let (position, counts) = (&self.checkpoint.position, &self.checkpoint.counts);
        info!(
            checkpoint_created_at = %position.created_at,
            done_before = counts.selected(),
            "resuming the run after its checkpoint (created_at {}): {} records before it are \
             done ({} stamped, {} already applied, {} gone) and are not read again",
            position.created_at,
            counts.selected(),
            counts.stamped,
            counts.already_applied,
            counts.gone
        );
    }
}

/// A fan-out saved how far it got (or the ledger had a position as far).
pub(crate) struct CheckpointSaved<'a> {
    pub(crate) run: &'a RunStart,
    pub(crate) checkpoint: &'a Checkpoint,
    pub(crate) moved: bool,
    /// The refused checkpoint this one may replace.
    pub(crate) replacing: Option<&'a IndexPosition>,
}

impl CheckpointSaved<'_> {
    pub(crate) fn emit(&self) {
        let (position, counts) = (&self.checkpoint.position, &self.checkpoint.counts);
        debug!(
            partition_date = %self.run.partition_date,
            execution_sequence = self.run.execution_sequence,
            checkpoint_created_at = %position.created_at,
            done = counts.selected(),
            moved = self.moved,
            replacing_created_at = self.replacing.map(|r| r.created_at.as_str()),
            "{}",
            if self.moved {
                "checkpoint saved: every record up to it is done"
            } else {
                "checkpoint not moved: the ledger has one as far or the run is no longer in progress"
            }
        );
    }
}

/// This delivery completed its run: the run's one summary line.
pub(crate) struct RunCompleted<'a> {
    pub(crate) run: &'a RunStart,
    pub(crate) counts: &'a RunCounts,
}

impl RunCompleted<'_> {
    pub(crate) fn emit(&self) {
        metrics::run_completed();
        let (run, counts) = (self.run, self.counts);
        info!(
            partition_date = %run.partition_date,
            execution_sequence = run.execution_sequence,
            stamped = counts.stamped,
            already_applied = counts.already_applied,
            gone = counts.gone,
            left_for_next = counts.left_for_next,
            selected = counts.selected(),
            records_processed = run.records_processed,
            duplicates_removed = run.duplicates_removed,
            "run completed: execution {} of {}, {} selected ({} stamped, {} already applied, {} \
             gone) beside the producer's records_processed {} and duplicates_removed {}",
            run.execution_sequence,
            run.partition_date,
            counts.selected(),
            counts.stamped,
            counts.already_applied,
            counts.gone,
            run.records_processed,
            run.duplicates_removed
        );
    }
}

/// The ledger failed: the message is stamped without it, and so is the
/// rest of the invocation. WARN the first time in an invocation.
pub(crate) struct LedgerUnavailable<'a> {
    pub(crate) table: &'a str,
    pub(crate) error: &'a StoreError,
    pub(crate) first: bool,
}

impl LedgerUnavailable<'_> {
    pub(crate) fn emit(&self) {
        let error = self.error;
        if self.first {
            warn!(
                ledger_table = %self.table,
                error_kind = error.class.kind(),
                error_code = error.code.as_deref(),
                operation = error.operation,
                error = %error.message,
                "run ledger unavailable ({}: {}); stamping without it for the rest of this \
                 invocation: a full pass, each record still guarded by its condition",
                error.operation,
                error.message
            );
        } else {
            debug!(
                ledger_table = %self.table,
                error = %error,
                "run ledger unavailable again in this invocation"
            );
        }
    }
}
