//! The run ledger as a message's story uses it: before a fan-out, the day's
//! runs are read and a completed run that covers the event answers it; a
//! fan-out that starts is recorded, and one that finished every selected
//! record completes its run.
//!
//! The ledger saves work; it never causes any. Whatever it answers with an
//! error (unreachable, missing, refused), the message is stamped as it would
//! be without a ledger, each record still guarded by its condition, and the
//! rest of the invocation does without it: said once, in one WARN.

pub(crate) mod events;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::debug;

use crate::domain::event::ConsolidationEvent;
use crate::domain::failure::{ErrorClass, StoreError};
use crate::domain::run::{
    Checkpoint, Completion, IndexPosition, Recorded, Run, RunCounts, RunStart, superseding_run,
};
use crate::domain::stamp::StampReport;
use crate::ports::{BoxFuture, ChargebackStore, Checkpoints, RunLedger};
use events::{CheckpointSaved, LedgerUnavailable, RunCompleted, RunResumed, RunSuperseded};

/// The longest one ledger call may take, its retries included: past it the
/// message is stamped without the ledger.
const CALL_LIMIT: Duration = Duration::from_secs(10);

/// Whether a completed run may answer the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Yes: a delivery of a message.
    Respect,
    /// No, stamp anyway (`backfill --force`); the run is still recorded.
    Ignore,
}

/// What the ledger says before a fan-out.
#[derive(Debug, Clone)]
pub enum RunDecision {
    /// No ledger, or it failed: stamp as if there were none.
    Untracked,
    /// This completed run already did everything the event asks: no fan-out.
    Superseded(Box<Run>),
    /// Stamp; the run is recorded as started, to be completed after. An
    /// in-progress run with a checkpoint is `resume`d after it.
    Tracked {
        start: Box<RunStart>,
        resume: Option<Box<Checkpoint>>,
    },
}

/// The run ledger, when there is one, and what it has said in this invocation.
pub struct Ledger {
    port: Option<Arc<dyn RunLedger>>,
    /// The ledger table's name, for the log lines.
    table: String,
    /// The invocation (request id) in which the ledger failed: the rest of
    /// it does without the ledger, having said so once.
    failed_in: Mutex<Option<String>>,
}

impl Default for Ledger {
    fn default() -> Self {
        Self::off()
    }
}

impl Ledger {
    /// No ledger: every message is stamped in full.
    pub fn off() -> Self {
        Self {
            port: None,
            table: String::new(),
            failed_in: Mutex::new(None),
        }
    }

    /// The ledger in `port`, whose table is named `table`.
    pub fn new(port: Arc<dyn RunLedger>, table: impl Into<String>) -> Self {
        Self {
            port: Some(port),
            table: table.into(),
            failed_in: Mutex::new(None),
        }
    }

    pub fn is_on(&self) -> bool {
        self.port.is_some()
    }

    /// Requests sent to the ledger so far (every attempt), when counted.
    pub fn requests_sent(&self) -> Option<u64> {
        self.port.as_ref().and_then(|port| port.requests_sent())
    }

    /// Before `event`'s fan-out over `store`: one read of the day's runs
    /// (unless the verdict is ignored), then the run's start recorded.
    pub async fn before_fan_out<S: ChargebackStore>(
        &self,
        store: &S,
        event: &ConsolidationEvent,
        verdict: Verdict,
        request_id: &str,
    ) -> RunDecision {
        let Some(port) = self.usable(request_id) else {
            return RunDecision::Untracked;
        };
        // The fan-out meets (and reports) the same failure if the table
        // cannot be described: nothing for the ledger to say.
        let Ok(table) = store.table_identity().await else {
            return RunDecision::Untracked;
        };
        let mut resume = None;
        if verdict == Verdict::Respect {
            let runs = match self.call(port.runs_of_day(event.partition_date)).await {
                Ok(runs) => runs,
                Err(error) => return self.unavailable(&error, request_id),
            };
            if let Some(run) = superseding_run(&runs, event, &table) {
                RunSuperseded { run, event }.emit();
                return RunDecision::Superseded(Box::new(run.clone()));
            }
            resume = runs
                .iter()
                .find_map(|run| run.resume_point(event, &table))
                .map(Box::new);
        }
        let start = RunStart::for_event(event, table);
        match self.call(port.start(&start)).await {
            Ok(()) => {
                if let Some(checkpoint) = &resume {
                    RunResumed { checkpoint }.emit();
                }
                RunDecision::Tracked {
                    start: Box::new(start),
                    resume,
                }
            }
            Err(error) => self.unavailable(&error, request_id),
        }
    }

    /// Where the fan-out of a tracked run saves its checkpoints; `None`
    /// without a ledger or a tracked run.
    pub fn checkpoints<'a>(
        &'a self,
        decision: &'a RunDecision,
        request_id: &'a str,
    ) -> Option<RunCheckpoints<'a>> {
        match decision {
            RunDecision::Tracked { start, resume } => Some(RunCheckpoints {
                ledger: self,
                start,
                resume: resume.as_deref(),
                request_id,
            }),
            _ => None,
        }
    }

    /// After a fan-out that finished every selected record: its run
    /// completed with `report`'s counts (under `rule`).
    pub async fn completed(
        &self,
        decision: &RunDecision,
        report: &StampReport,
        rule: Completion,
        request_id: &str,
    ) {
        let (RunDecision::Tracked { start, resume }, Some(port)) = (decision, &self.port) else {
            return;
        };
        let counts = counted(
            resume.as_ref().map(|c| c.counts),
            report.resumed,
            report.into(),
        );
        match self.call(port.complete(start, &counts, rule)).await {
            Ok(Recorded::Completed) => RunCompleted {
                run: start,
                counts: &counts,
            }
            .emit(),
            Ok(Recorded::AlreadyCompleted) => debug!(
                partition_date = %start.partition_date,
                execution_sequence = start.execution_sequence,
                "run already completed by another delivery; the ledger keeps its counts"
            ),
            Err(error) => {
                self.unavailable(&error, request_id);
            }
        }
    }

    /// The port, unless there is none or it failed earlier in this invocation.
    fn usable(&self, request_id: &str) -> Option<&Arc<dyn RunLedger>> {
        let failed = self.failed_in.lock().ok()?;
        match failed.as_deref() {
            Some(failed_in) if failed_in == request_id => None,
            _ => self.port.as_ref(),
        }
    }

    /// One ledger call, bounded by [`CALL_LIMIT`].
    async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(CALL_LIMIT, call)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::new(
                    ErrorClass::Unreachable,
                    "ledger",
                    format!("no answer within {CALL_LIMIT:?}"),
                ))
            })
    }

    /// The ledger failed: said once per invocation, and not used again in it.
    fn unavailable(&self, error: &StoreError, request_id: &str) -> RunDecision {
        let first = match self.failed_in.lock() {
            Ok(mut failed) => failed.replace(request_id.to_owned()).as_deref() != Some(request_id),
            Err(_) => true,
        };
        LedgerUnavailable {
            table: &self.table,
            error,
            first,
        }
        .emit();
        RunDecision::Untracked
    }
}

/// A run's checkpoints, saved as its fan-out goes.
pub struct RunCheckpoints<'a> {
    ledger: &'a Ledger,
    start: &'a RunStart,
    /// The checkpoint this delivery resumes after.
    resume: Option<&'a Checkpoint>,
    request_id: &'a str,
}

impl Checkpoints for RunCheckpoints<'_> {
    fn resume_at(&self) -> Option<&IndexPosition> {
        self.resume.map(|c| &c.position)
    }

    fn save(&self, position: IndexPosition, done: RunCounts, resumed: bool) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(port) = self.ledger.usable(self.request_id) else {
                return;
            };
            let checkpoint = Checkpoint {
                position,
                counts: counted(self.resume.map(|c| c.counts), resumed, done),
            };
            // A pass that did not start after the run's checkpoint (refused
            // as a start key) may put its own in place of it: otherwise
            // every stopped pass would leave the unusable one, and the run
            // would start over from the beginning on every delivery.
            let replacing = self.resume.filter(|_| !resumed).map(|c| &c.position);
            match self
                .ledger
                .call(port.save_checkpoint(self.start, &checkpoint, replacing))
                .await
            {
                Ok(moved) => CheckpointSaved {
                    run: self.start,
                    checkpoint: &checkpoint,
                    moved,
                    replacing,
                }
                .emit(),
                Err(error) => {
                    self.ledger.unavailable(&error, self.request_id);
                }
            }
        })
    }
}

/// A run's counts: the checkpoint's it resumed after (when the resumed
/// pass did start there), then this pass's.
fn counted(before: Option<RunCounts>, resumed: bool, this_pass: RunCounts) -> RunCounts {
    match before {
        Some(before) if resumed => before.then(&this_pass),
        _ => this_pass,
    }
}

#[cfg(test)]
mod tests;
