//! What the fan-out's requests report, as typed events (see
//! `telemetry::events`).

use metrics::counter;

use crate::telemetry::metrics::name::{THROTTLED_REQUESTS, THROTTLED_WRITES};

/// DynamoDB refused `writes` writes of one request for capacity: an
/// `UpdateItem`, statements of a batch, or the whole batch. The one
/// definition of "throttled": one event per throttled answer, counted by the
/// fan-out's progress (`throttled_writes`) and by the metrics alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WritesThrottled<'a> {
    pub writes: u64,
    /// The reason DynamoDB gave (`ThrottlingReasons`); none for a statement
    /// of a batch. One answer's throttled writes share it.
    pub reason: Option<&'a str>,
}

impl WritesThrottled<'_> {
    /// The reason as the progress and its summary line name it.
    pub(crate) fn reason_or_unknown(&self) -> &str {
        self.reason.unwrap_or("unknown")
    }

    /// Bumps `ThrottledRequests` by one and `ThrottledWrites` by `writes`.
    /// No line of its own: the retry says it at DEBUG (`request retried`),
    /// the pacing's cut too, and the fan-out's end sums it up at INFO.
    pub(crate) fn emit(&self) {
        counter!(THROTTLED_REQUESTS).increment(1);
        counter!(THROTTLED_WRITES).increment(self.writes);
    }
}
