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
use crate::domain::run::{Completion, Recorded, Run, RunCounts, RunStart, superseding_run};
use crate::domain::stamp::StampReport;
use crate::ports::{ChargebackStore, RunLedger};
use events::{LedgerUnavailable, RunCompleted, RunSuperseded};

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
    /// Stamp; the run is recorded as started, to be completed after.
    Tracked(RunStart),
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
        if verdict == Verdict::Respect {
            let runs = match self.call(port.runs_of_day(event.partition_date)).await {
                Ok(runs) => runs,
                Err(error) => return self.unavailable(&error, request_id),
            };
            if let Some(run) = superseding_run(&runs, event, &table) {
                RunSuperseded { run, event }.emit();
                return RunDecision::Superseded(Box::new(run.clone()));
            }
        }
        let start = RunStart::for_event(event, table);
        match self.call(port.start(&start)).await {
            Ok(()) => RunDecision::Tracked(start),
            Err(error) => self.unavailable(&error, request_id),
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
        let (RunDecision::Tracked(start), Some(port)) = (decision, &self.port) else {
            return;
        };
        let counts = RunCounts::from(report);
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

#[cfg(test)]
mod tests;
