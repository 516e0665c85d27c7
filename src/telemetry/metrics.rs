//! CloudWatch metrics in Embedded Metric Format: counters bumped through the
//! `metrics` facade as things happen, written to stdout as one EMF document at
//! the end of every invocation. CloudWatch Logs extracts them from the log
//! stream: no `PutMetricData` call, no latency, no API cost.
//!
//! Without an installed emitter (the CLI, unit tests) every call here is a
//! no-op of the `metrics` facade.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};
use metrics_cloudwatch_embedded::Collector;

use crate::config::FunctionIdentity;
use crate::domain::outcome::BatchSummary;

/// Metric names, as the runbook and the alarms use them.
pub(crate) mod name {
    /// Consolidation messages fully applied.
    pub(crate) const MESSAGES_PROCESSED: &str = "MessagesProcessed";
    /// Dead-lettered plus handed back.
    pub(crate) const MESSAGES_FAILED: &str = "MessagesFailed";
    /// Records actually written.
    pub(crate) const CHARGEBACKS_UPDATED: &str = "ChargebacksUpdated";
    /// Messages of another event type.
    pub(crate) const MESSAGES_SKIPPED: &str = "MessagesSkipped";
    pub(crate) const MESSAGES_DEAD_LETTERED: &str = "MessagesDeadLettered";
    /// Messages handed back to Lambda (`batchItemFailures`).
    pub(crate) const MESSAGES_RETRIED: &str = "MessagesRetried";
    /// Records found at this execution or a newer one, on read or by the
    /// update's condition.
    pub(crate) const CHARGEBACKS_ALREADY_APPLIED: &str = "ChargebacksAlreadyApplied";
    /// Wall time of each message's fan-out, one value per message.
    pub(crate) const FAN_OUT_DURATION: &str = "FanOutDuration";
    /// DynamoDB requests with at least one write (or the request itself)
    /// refused for capacity; each is retried. Counted, with
    /// `THROTTLED_WRITES`, by the fan-out's `WritesThrottled` event.
    pub(crate) const THROTTLED_REQUESTS: &str = "ThrottledRequests";
    /// Writes refused for capacity: an `UpdateItem`, or one statement of a
    /// batch. Some are expected while the write rate finds the table's.
    pub(crate) const THROTTLED_WRITES: &str = "ThrottledWrites";
    /// 1 on the first invocation of an execution environment, else 0.
    pub(crate) const COLD_START: &str = "ColdStart";
    /// Runs this invocation completed in the run ledger.
    pub(crate) const RUNS_COMPLETED: &str = "RunsCompleted";
    /// Messages a completed run of the ledger answered: no fan-out.
    pub(crate) const RUNS_SUPERSEDED: &str = "RunsSuperseded";
}

/// Every counter, so that each document carries each one, zeros included:
/// an alarm then sees 0, not missing data, on a quiet invocation.
const COUNTERS: [&str; 12] = [
    name::MESSAGES_PROCESSED,
    name::MESSAGES_FAILED,
    name::CHARGEBACKS_UPDATED,
    name::MESSAGES_SKIPPED,
    name::MESSAGES_DEAD_LETTERED,
    name::MESSAGES_RETRIED,
    name::CHARGEBACKS_ALREADY_APPLIED,
    name::THROTTLED_REQUESTS,
    name::THROTTLED_WRITES,
    name::COLD_START,
    name::RUNS_COMPLETED,
    name::RUNS_SUPERSEDED,
];

/// The dimension every metric carries. Nothing with many values (a date,
/// an offset) is ever a dimension: each distinct value is a metric billed apart.
pub(crate) const FUNCTION_DIMENSION: &str = "FunctionName";

/// EMF allows at most 100 values per metric in one document; the collector
/// holds no more than that between flushes.
const MAX_DURATIONS_PER_DOCUMENT: usize = 100;

static DURATIONS_SINCE_FLUSH: AtomicUsize = AtomicUsize::new(0);

/// The process's EMF writer. Only one can be installed per process.
pub struct MetricsEmitter {
    collector: &'static Collector,
}

impl MetricsEmitter {
    /// Installs the process-wide recorder for `namespace`, with the function
    /// name as the one dimension.
    pub fn install(namespace: &str, function: &FunctionIdentity) -> Result<Self, String> {
        let collector = metrics_cloudwatch_embedded::Builder::new()
            .cloudwatch_namespace(namespace.to_owned())
            .with_dimension(FUNCTION_DIMENSION, function.name.clone())
            .emit_zeros(true)
            .init()
            .map_err(|e| e.to_string())?;
        collector.set_property("function_version", function.version.clone());
        for counter in COUNTERS {
            describe_counter!(counter, Unit::Count, "");
            counter!(counter).increment(0);
        }
        describe_histogram!(name::FAN_OUT_DURATION, Unit::Milliseconds, "");
        Ok(Self { collector })
    }

    /// Writes the invocation's document (one line) and resets the counters.
    /// The request and trace ids ride along as properties, not dimensions.
    pub fn flush(
        &self,
        request_id: &str,
        trace_id: Option<&str>,
        out: impl Write,
    ) -> std::io::Result<()> {
        self.collector.set_property("request_id", request_id);
        match trace_id {
            Some(id) => self.collector.set_property("xray_trace_id", id),
            None => self.collector.remove_property("xray_trace_id"),
        };
        DURATIONS_SINCE_FLUSH.store(0, Ordering::Relaxed);
        self.collector.flush(out)
    }
}

/// The invocation's counts, the same ones its `METRICS:` line shows.
pub(crate) fn batch_finished(summary: &BatchSummary) {
    counter!(name::MESSAGES_PROCESSED).increment(summary.messages_processed);
    counter!(name::MESSAGES_FAILED).increment(summary.messages_failed);
    counter!(name::CHARGEBACKS_UPDATED).increment(summary.chargebacks_updated);
    counter!(name::MESSAGES_SKIPPED).increment(summary.messages_skipped);
    counter!(name::MESSAGES_DEAD_LETTERED).increment(summary.messages_dead_lettered);
    counter!(name::MESSAGES_RETRIED).increment(summary.messages_retried);
    counter!(name::CHARGEBACKS_ALREADY_APPLIED).increment(summary.chargebacks_already_applied);
    counter!(name::RUNS_SUPERSEDED).increment(summary.messages_superseded);
}

/// This invocation completed a run in the ledger.
pub(crate) fn run_completed() {
    counter!(name::RUNS_COMPLETED).increment(1);
}

/// One message's fan-out ended (applied, stopped or failed).
pub(crate) fn fan_out_finished(duration: Duration) {
    if DURATIONS_SINCE_FLUSH.fetch_add(1, Ordering::Relaxed) < MAX_DURATIONS_PER_DOCUMENT {
        histogram!(name::FAN_OUT_DURATION).record(duration.as_secs_f64() * 1000.0);
    }
}

/// An invocation starts; `cold` on the first of the execution environment.
pub fn invocation_started(cold: bool) {
    counter!(name::COLD_START).increment(u64::from(cold));
}
