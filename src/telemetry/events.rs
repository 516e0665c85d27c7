//! What `LOG_LEVEL=DEBUG` and `TRACE` add, as typed events: one struct per
//! thing that happens, whose `emit()` writes one line of structured fields
//! (the message is a constant, so lines are counted and queried by it). The
//! call site is one line; a later metric or typed-event sink goes in `emit`.
//!
//! Volume, by design:
//! - DEBUG grows with pages, never with records: two lines at cold start
//!   ([`SettingsInEffect`], `TableLayoutFound`), two per message
//!   ([`EventDecoded`], [`SelectionMade`]), one per page read
//!   (`KeyPageRead`, `CountPageRead`).
//! - Failures, retries and limit changes multiply under faults, so they have
//!   a budget ([`LineBudget`]): at most one [`RequestFailed`] and one
//!   [`RequestRetried`] line per DynamoDB operation per second, and one
//!   [`ConcurrencyLimitChanged`] line per direction per second. Each line carries `held_back`, how many of its
//!   kind were not written since the previous one, and what is still held
//!   back when a fan-out ends is said in one summary line per kind, so the
//!   totals stay exact.
//! - TRACE adds `RecordStamped`, one line per record written or declined.
//!
//! `TableLayoutFound`, `KeyPageRead`, `CountPageRead` and `RecordStamped` are
//! the DynamoDB adapter's, in `store::dynamodb::events`.

use std::fmt::Display;
use std::time::{Duration, Instant};

use chrono::SecondsFormat;
use tracing::{Level, debug};

use super::line_budget::LineBudget;
use crate::config::{LogFormat, Settings, WriteMode};
use crate::domain::event::ConsolidationEvent;
use crate::domain::failure::StoreError;
use crate::domain::stamp::StampPlan;
use crate::pacing::Cut;

/// How often a line of one kind may be written while faults repeat it.
pub const REPEATED_LINE_INTERVAL: Duration = Duration::from_secs(1);

/// Retries of the whole process, keyed by operation.
static RETRY_LINES: LineBudget = LineBudget::new(REPEATED_LINE_INTERVAL);
/// Failed calls of the whole process, keyed by operation.
static FAILURE_LINES: LineBudget = LineBudget::new(REPEATED_LINE_INTERVAL);

/// Milliseconds with two decimals: local reads take well under one.
pub(crate) fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 100_000.0).round() / 100.0
}

/// Cold start: the settings the function runs with. None of them is a
/// secret (credentials come from the SDK's chain and are never logged).
pub struct SettingsInEffect<'a> {
    pub settings: &'a Settings,
    /// The region the SDK resolved (`AWS_REGION`, the profile's, or the default).
    pub region: Option<&'a str>,
}

impl SettingsInEffect<'_> {
    pub fn emit(&self) {
        let s = self.settings;
        debug!(
            table = %s.table_name,
            region = self.region,
            log_level = %s.log_level,
            log_format = s.log_format.map(|f| match f {
                LogFormat::Json => "json",
                LogFormat::Text => "text",
            }),
            date_index = %s.date_index,
            max_concurrency = s.max_concurrency,
            max_write_rate = s.max_write_rate,
            write_mode = match s.write_mode {
                WriteMode::UpdateItem => "update-item",
                WriteMode::BatchStatement => "batch-statement",
            },
            dlq_url = s.dlq_url.as_deref(),
            failure_topic_arn = s.failure_topic_arn.as_deref(),
            deadline_margin_ms = s.deadline_margin.as_millis() as u64,
            metrics_namespace = %s.metrics_namespace,
            progress_interval_seconds = s.progress_interval.as_secs(),
            xray_daemon = s.xray.map(|d| d.0.to_string()),
            "settings in effect"
        );
    }
}

/// A message's value, decoded and validated.
pub struct EventDecoded<'a>(pub &'a ConsolidationEvent);

impl EventDecoded<'_> {
    pub fn emit(&self) {
        let e = self.0;
        debug!(
            event_type = crate::domain::event::CONSOLIDATION_COMPLETED,
            partition_date = %e.partition_date,
            execution_sequence = e.execution.sequence(),
            total_executions = e.execution.total(),
            records_processed = e.records_processed,
            duplicates_removed = e.duplicates_removed,
            output_files = e.output_files,
            output_format = e.output_format.as_str(),
            output_path = e.output_path.as_str(),
            execution_time = %e.execution_time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            completed_at = e.completed_at.as_str(),
            job_name = e.job_name.as_str(),
            "decoded event"
        );
    }
}

/// Which records a message selects and what it writes to them.
pub struct SelectionMade<'a>(pub &'a StampPlan);

impl SelectionMade<'_> {
    pub fn emit(&self) {
        let (selection, values) = (&self.0.selection, &self.0.values);
        debug!(
            partition_date = %selection.partition_date,
            created_before = %selection.created_before,
            below_execution = selection.execution_sequence,
            replace_same_execution = selection.replace_same_execution,
            count_left_behind = self.0.count_left_behind,
            updated_at = %values.updated_at,
            "selection"
        );
    }
}

/// A failed request that will be sent again after `delay`.
pub struct RequestRetried<'a> {
    pub error: &'a StoreError,
    /// The attempt that failed, the first being 1.
    pub attempt: u32,
    pub delay: Duration,
}

impl RequestRetried<'_> {
    pub fn emit(&self) {
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
pub struct RequestFailed<'a> {
    pub operation: &'static str,
    pub chain: &'a dyn Display,
}

impl RequestFailed<'_> {
    pub fn emit(&self) {
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
pub struct RequestsHeldBack;

impl RequestsHeldBack {
    pub fn emit() {
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
pub enum LimitChange {
    /// Halved: requests failed or timed out (throttling lowers the write
    /// rate instead, see [`WriteRateCut`]).
    Congested,
    /// One more: a round of successes since the last decrease.
    Recovered,
}

impl LimitChange {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Congested => "congested",
            Self::Recovered => "recovered",
        }
    }
}

/// The invocation's concurrency limit moved from `old` to `new`.
pub struct ConcurrencyLimitChanged {
    pub old: usize,
    pub new: usize,
    pub why: LimitChange,
}

impl ConcurrencyLimitChanged {
    /// Within `budget`: one line per direction per interval.
    pub fn emit(&self, budget: &LineBudget) {
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
pub struct LimitChangesHeldBack<'a> {
    pub budget: &'a LineBudget,
    pub limit: usize,
}

impl LimitChangesHeldBack<'_> {
    pub fn emit(&self) {
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

/// The write rate was cut after throttling.
pub struct WriteRateCut(pub Cut);

impl WriteRateCut {
    /// Within `budget`: one line per interval.
    pub fn emit(&self, budget: &LineBudget) {
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
pub struct WriteRateCutsHeldBack<'a> {
    pub budget: &'a LineBudget,
    pub rate: f64,
}

impl WriteRateCutsHeldBack<'_> {
    pub fn emit(&self) {
        for (_, held_back) in self.budget.drain() {
            debug!(
                held_back,
                writes_per_second = self.rate.round() as u64,
                "write rate cuts held back"
            );
        }
    }
}
