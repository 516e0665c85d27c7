//! What `LOG_LEVEL=DEBUG` and `TRACE` add, as typed events: one struct per
//! thing that happens, whose `emit()` writes one line of structured fields
//! (the message is a constant, so lines are counted and queried by it). The
//! call site is one line; a later metric or typed-event sink goes in `emit`.
//!
//! Volume, by design:
//! - DEBUG grows with pages, never with records: two lines at cold start
//!   ([`SettingsInEffect`], [`TableLayoutFound`]), two per message
//!   ([`EventDecoded`], [`SelectionMade`]), one per page read
//!   ([`KeyPageRead`], [`CountPageRead`]).
//! - Failures, retries, limit changes and rate cuts multiply under faults,
//!   so they have a budget ([`LineBudget`](super::line_budget::LineBudget));
//!   their events live next to what emits them (`retry::events`,
//!   `pacing::events`).
//! - TRACE adds [`RecordStamped`], one line per record written or declined.

use std::fmt::Display;
use std::time::Duration;

use chrono::SecondsFormat;
use tracing::{debug, trace};

use crate::config::{LogFormat, Settings, WriteMode};
use crate::domain::event::ConsolidationEvent;
use crate::domain::stamp::{StampPlan, StampResult};

/// How often a line of one kind may be written while faults repeat it.
pub const REPEATED_LINE_INTERVAL: Duration = Duration::from_secs(1);

/// Milliseconds with two decimals: local reads take well under one.
pub fn millis(duration: Duration) -> f64 {
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

/// How the keys of a day will be read: what `DescribeTable` found.
pub struct TableLayoutFound<'a> {
    pub table: &'a str,
    pub hash_key: &'a str,
    pub range_key: Option<&'a str>,
    pub index: &'a str,
    /// `index` (the date index) or `scan` (no such index).
    pub reader: &'static str,
    /// The index's projection type (`KEYS_ONLY`, `INCLUDE`, `ALL`).
    pub projection: Option<&'a str>,
    /// The non-key attributes an `INCLUDE` projection names, comma-separated.
    pub projected_attributes: String,
    /// Whether the read sees `consolidation_execution`.
    pub projects_execution: bool,
    pub scan_segments: Option<u32>,
}

impl TableLayoutFound<'_> {
    pub fn emit(&self) {
        debug!(
            table = self.table,
            hash_key = self.hash_key,
            range_key = self.range_key,
            index = self.index,
            key_reader = self.reader,
            index_projection = self.projection,
            index_projected_attributes = self.projected_attributes.as_str(),
            projects_execution = self.projects_execution,
            scan_segments = self.scan_segments,
            "table layout"
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

/// One page of keys read from the index (`Query`) or a scan segment
/// (`Scan`). The keys themselves would be thousands per line: the count,
/// the first and the last say which stretch of the index it was.
pub struct KeyPageRead<'a> {
    pub operation: &'static str,
    pub segment: Option<u32>,
    /// Keys to stamp.
    pub keys: usize,
    /// Records the read showed already at this execution or newer.
    pub already_applied_on_read: u64,
    pub first_key: Option<&'a dyn Display>,
    pub last_key: Option<&'a dyn Display>,
    pub duration: Duration,
    /// Where the next page starts (`LastEvaluatedKey`); `None`: the last page.
    pub position: Option<&'a dyn Display>,
}

impl KeyPageRead<'_> {
    pub fn emit(&self) {
        debug!(
            operation = self.operation,
            segment = self.segment,
            keys = self.keys,
            already_applied_on_read = self.already_applied_on_read,
            first_key = self.first_key.map(tracing::field::display),
            last_key = self.last_key.map(tracing::field::display),
            read_ms = millis(self.duration),
            position = self.position.map(tracing::field::display),
            last_page = self.position.is_none(),
            "key page read"
        );
    }
}

/// One page of the count of records created after the cutoff.
pub struct CountPageRead<'a> {
    pub operation: &'static str,
    pub counted: u64,
    pub duration: Duration,
    pub position: Option<&'a dyn Display>,
}

impl CountPageRead<'_> {
    pub fn emit(&self) {
        debug!(
            operation = self.operation,
            counted = self.counted,
            read_ms = millis(self.duration),
            position = self.position.map(tracing::field::display),
            last_page = self.position.is_none(),
            "count page read"
        );
    }
}

/// TRACE: what happened to one record (written, or declined by the update's
/// condition or on read).
pub struct RecordStamped<'a> {
    pub operation: &'static str,
    pub key: &'a dyn Display,
    pub result: StampResult,
}

impl RecordStamped<'_> {
    pub fn emit(&self) {
        let result = match self.result {
            StampResult::Written => "written",
            StampResult::AlreadyApplied => "already_applied",
            StampResult::Missing => "missing",
        };
        if self.result == StampResult::Written {
            trace!(operation = self.operation, key = %self.key, result, "record written");
        } else {
            trace!(operation = self.operation, key = %self.key, result, "record declined");
        }
    }
}
