//! What `LOG_LEVEL=DEBUG` and `TRACE` add, as typed events: one struct per
//! thing that happens, whose `emit()` writes one line of structured fields
//! (the message is a constant, so lines are counted and queried by it). The
//! call site is one line; a later metric or typed-event sink goes in `emit`.
//!
//! Volume, by design:
//! - DEBUG grows with pages, never with records: two lines at cold start
//!   ([`SettingsInEffect`], the store's `TableLayoutFound`), two per message
//!   ([`EventDecoded`], [`SelectionMade`]), one per page read (the store's
//!   `KeyPageRead`, `CountPageRead`).
//! - Failures, retries, limit changes and rate cuts multiply under faults,
//!   so they have a budget ([`LineBudget`](super::line_budget::LineBudget));
//!   their events live next to what emits them (`retry::events`,
//!   `pacing::events`).
//! - TRACE adds the store's `RecordStamped`, one line per record written or
//!   declined.
//!
//! Events that belong to one component live next to it (`handler::events`,
//! `fanout::events`, `retry::events`, `pacing::events`,
//! `store::dynamodb::events`, `queue::events`); this file keeps those that
//! belong to none.

use std::time::Duration;

use chrono::SecondsFormat;
use tracing::debug;

use crate::config::{LogFormat, Settings, WriteMode};
use crate::domain::event::ConsolidationEvent;
use crate::domain::stamp::StampPlan;

/// How often a line of one kind may be written while faults repeat it.
pub(crate) const REPEATED_LINE_INTERVAL: Duration = Duration::from_secs(1);

/// Milliseconds with two decimals: local reads take well under one.
pub(crate) fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 100_000.0).round() / 100.0
}

/// Cold start: the settings the function runs with. None of them is a
/// secret (credentials come from the SDK's chain and are never logged).
pub(crate) struct SettingsInEffect<'a> {
    pub settings: &'a Settings,
    /// The region the SDK resolved (`AWS_REGION`, the profile's, or the default).
    pub region: Option<&'a str>,
}

impl SettingsInEffect<'_> {
    pub(crate) fn emit(&self) {
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
            ledger_table = s.ledger_table.as_deref(),
            ledger_ttl_days = s.ledger_ttl_days,
            "settings in effect"
        );
    }
}

/// A message's value, decoded and validated.
pub(crate) struct EventDecoded<'a>(pub &'a ConsolidationEvent);

impl EventDecoded<'_> {
    pub(crate) fn emit(&self) {
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
pub(crate) struct SelectionMade<'a>(pub &'a StampPlan);

impl SelectionMade<'_> {
    pub(crate) fn emit(&self) {
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
