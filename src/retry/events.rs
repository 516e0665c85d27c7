//! What the retry policy and the limiter say at DEBUG, as typed events (see
//! `telemetry::events`): a request retried or failed, the concurrency limit
//! moved. Faults multiply them, so each kind has a budget ([`LineBudget`]):
//! at most one [`RequestFailed`] and one [`RequestRetried`] line per
//! DynamoDB operation per second, and one [`ConcurrencyLimitChanged`] line
//! per direction per second. Each line carries `held_back`, how many of its
//! kind were not written since the previous one, and what is still held back
//! when a fan-out ends is said in one summary line per kind
//! ([`RequestsHeldBack`], [`LimitChangesHeldBack`]), so the totals stay exact.

use std::fmt::Display;
use std::time::{Duration, Instant};

use tracing::{Level, debug};

use crate::domain::failure::StoreError;
use crate::telemetry::events::{REPEATED_LINE_INTERVAL, millis};
use crate::telemetry::line_budget::LineBudget;

/// Retries of the whole process, keyed by operation.
static RETRY_LINES: LineBudget = LineBudget::new(REPEATED_LINE_INTERVAL);
/// Failed calls of the whole process, keyed by operation.
static FAILURE_LINES: LineBudget = LineBudget::new(REPEATED_LINE_INTERVAL);

/// A failed request that will be sent again after `delay`.
pub(crate) struct RequestRetried<'a> {
    pub error: &'a StoreError,
    /// The attempt that failed, the first being 1.
    pub attempt: u32,
    pub delay: Duration,
}

impl RequestRetried<'_> {
    pub(crate) fn emit(&self) {
        if !tracing::enabled!(Level::DEBUG) {
            return;
        }
        let Some(held_back) = RETRY_LINES.admit(self.error.operation, Instant::now()) else {
            return;
        };
        debug!(
            operation = self.error.operation,
            error_kind = self.error.class.kind(),
            error_code = self.error.code.as_deref(),
            throttling_reason = self.error.throttling_reason.as_deref(),
            attempt = self.attempt,
            delay_ms = millis(self.delay),
            held_back,
            error = %self.error.message,
            "request retried"
        );
    }
}

/// A DynamoDB call failed: the SDK's whole chain of causes (the error
/// itself keeps only the root cause, in one line).
pub(crate) struct RequestFailed<'a> {
    pub operation: &'static str,
    pub chain: &'a dyn Display,
}

impl RequestFailed<'_> {
    pub(crate) fn emit(&self) {
        if !tracing::enabled!(Level::DEBUG) {
            return;
        }
        let Some(held_back) = FAILURE_LINES.admit(self.operation, Instant::now()) else {
            return;
        };
        debug!(
            operation = self.operation,
            held_back,
            error = %self.chain,
            "request failed"
        );
    }
}

/// What is still held back of [`RequestFailed`] and [`RequestRetried`], one
/// line per operation; said when a fan-out ends.
pub(crate) struct RequestsHeldBack;

impl RequestsHeldBack {
    pub(crate) fn emit() {
        for (operation, held_back) in FAILURE_LINES.drain() {
            debug!(operation, held_back, "request failures held back");
        }
        for (operation, held_back) in RETRY_LINES.drain() {
            debug!(operation, held_back, "retries held back");
        }
    }
}

/// Why the concurrency limit moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitChange {
    /// Halved: requests failed or timed out (throttling lowers the write
    /// rate instead: the pacing's `WriteRateCut`).
    Congested,
    /// One more: a round of successes since the last decrease.
    Recovered,
}

impl LimitChange {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Congested => "congested",
            Self::Recovered => "recovered",
        }
    }
}

/// The invocation's concurrency limit moved from `old` to `new`.
pub(crate) struct ConcurrencyLimitChanged {
    pub old: usize,
    pub new: usize,
    pub why: LimitChange,
}

impl ConcurrencyLimitChanged {
    /// Within `budget`: one line per direction per interval.
    pub(crate) fn emit(&self, budget: &LineBudget) {
        if !tracing::enabled!(Level::DEBUG) {
            return;
        }
        let Some(held_back) = budget.admit(self.why.as_str(), Instant::now()) else {
            return;
        };
        debug!(
            old_limit = self.old,
            new_limit = self.new,
            why = self.why.as_str(),
            held_back,
            "concurrency limit changed"
        );
    }
}

/// What is still held back of [`ConcurrencyLimitChanged`], one line per
/// direction, with the limit now; said when a fan-out ends.
pub(crate) struct LimitChangesHeldBack<'a> {
    pub budget: &'a LineBudget,
    pub limit: usize,
}

impl LimitChangesHeldBack<'_> {
    pub(crate) fn emit(&self) {
        for (why, held_back) in self.budget.drain() {
            debug!(
                why,
                held_back,
                limit = self.limit,
                "concurrency limit changes held back"
            );
        }
    }
}
