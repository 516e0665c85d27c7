//! The requests in flight for one fan-out, what the finished ones did, and
//! how the fan-out ended once none is left.

use tokio::task::{JoinError, JoinSet};

use super::FanOutError;
use super::checkpoint::{PageNumber, Watermark};
use super::progress::Progress;
use super::requests::{RequestDone, RequestEnd};
use crate::domain::failure::{ErrorClass, StopReason, StoreError};
use crate::domain::stamp::{StampReport, StampResult};
use crate::retry::InvocationControl;

/// The updates in flight for one fan-out (each with its page), and what
/// finished ones reported.
pub(super) struct Running<C> {
    pub(super) updates: JoinSet<(PageNumber, RequestDone)>,
    pub(super) marks: Watermark<C>,
    pub(super) report: StampReport,
    pub(super) failure: Option<StoreError>,
    /// A request that stopped waiting for its turn (the deadline came).
    pub(super) stopped: Option<StopReason>,
}

impl<C> Default for Running<C> {
    fn default() -> Self {
        Self {
            updates: JoinSet::new(),
            marks: Watermark::default(),
            report: StampReport::default(),
            failure: None,
            stopped: None,
        }
    }
}

impl<C: Clone> Running<C> {
    /// Waits for every request in flight, counting what each did.
    pub(super) async fn wait_for_all(&mut self, process: &Progress, live: &Progress) {
        while let Some(joined) = self.updates.join_next().await {
            self.tally(joined, process, live);
        }
    }

    /// Counts what a finished request did, and keeps the first failure or
    /// reason to stop. `process` counts for the whole process, `live` for
    /// this fan-out.
    pub(super) fn tally(
        &mut self,
        joined: Result<(PageNumber, RequestDone), JoinError>,
        process: &Progress,
        live: &Progress,
    ) {
        match joined {
            Ok((page, RequestDone { results, end })) => {
                self.marks.request_ended(page, &results, end.is_none());
                // Whatever was written counts, however the request ended.
                for result in results {
                    self.record(result, process, live);
                }
                match end {
                    None => {}
                    Some(RequestEnd::Failed(error)) => {
                        self.failure.get_or_insert(error);
                    }
                    Some(RequestEnd::Stopped(reason)) => {
                        self.stopped.get_or_insert(reason);
                    }
                }
            }
            Err(join_error) => {
                self.failure.get_or_insert(StoreError::new(
                    ErrorClass::Transient,
                    "UpdateItem",
                    format!("update task ended abnormally: {join_error}"),
                ));
            }
        }
    }

    fn record(&mut self, result: StampResult, process: &Progress, live: &Progress) {
        self.report.record(result);
        process.record(result);
        live.record(result);
    }
}

/// Why a fan-out ended before every record was examined.
pub(super) enum Unfinished {
    Failed(StoreError),
    Stopped(StopReason),
}

impl Unfinished {
    /// Once nothing is in flight: the first failure decides, else the first
    /// reason to stop.
    pub(super) fn judge(
        failure: Option<StoreError>,
        stopped: Option<StopReason>,
        control: &InvocationControl,
    ) -> Option<Self> {
        if let Some(error) = failure {
            // A retryable failure cut short because new work stopped (the
            // deadline) is unfinished work, not a failure of the store.
            if error.class.severity() <= ErrorClass::Unreachable.severity()
                && let Some(reason) = control.stop_reason()
            {
                return Some(Self::Stopped(reason));
            }
            return Some(Self::Failed(error));
        }
        stopped.map(Self::Stopped)
    }

    pub(super) fn with_report(self, report: StampReport) -> FanOutError {
        match self {
            Self::Failed(error) => FanOutError::Store { error, report },
            Self::Stopped(reason) => FanOutError::Stopped { reason, report },
        }
    }
}
