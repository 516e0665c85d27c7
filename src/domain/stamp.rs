//! What a consolidation event means for the table: which records to stamp,
//! with which values, and how the results are counted.

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

use super::event::{ConsolidationEvent, PartitionDate, floor_to_second};

/// The value every stamped record gets in `consolidation_status`.
pub(crate) const STATUS_COMPLETED: &str = "completed";

/// The records of one day created before a cutoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySelection {
    pub partition_date: PartitionDate,
    /// `created_at` must sort strictly before this text. It is the execution
    /// time floored to the second plus one second, without a suffix, so that
    /// `...T06:30:00Z`, `...T06:30:00.999Z` and `...T06:30:00+00:00` are all in
    /// and `...T06:30:01Z` is out.
    pub created_before: String,
    /// Records already at this execution or a newer one need no write; a
    /// store that can see `consolidation_execution` on the read side may skip them.
    pub execution_sequence: u64,
    /// A forced backfill rewrites records at this very execution too (never newer ones).
    pub replace_same_execution: bool,
}

/// The attributes one conditional update sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StampValues {
    pub s3_path: String,
    /// `completed_at` exactly as the job wrote it.
    pub consolidation_date: String,
    pub execution_sequence: u64,
    pub job_name: String,
    pub output_format: &'static str,
    pub records_in_consolidation: u64,
    /// ISO-8601 UTC, taken when the message's fan-out starts.
    pub updated_at: String,
    /// See [`KeySelection::replace_same_execution`].
    pub replace_same_execution: bool,
}

/// Everything needed to apply one consolidation event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StampPlan {
    pub selection: KeySelection,
    pub values: StampValues,
    /// On the day's last run, records created after the cutoff are counted and
    /// reported: no later run will stamp them.
    pub count_left_behind: bool,
}

impl KeySelection {
    /// Whether a record stamped by `execution` still needs this stamp.
    pub fn needs_stamp(&self, execution: Option<u64>) -> bool {
        needs_stamp(
            execution,
            self.execution_sequence,
            self.replace_same_execution,
        )
    }
}

impl StampValues {
    /// Whether a record stamped by `execution` still needs these values: the
    /// rule of [`KeySelection::needs_stamp`], for a store that checks one
    /// record without its selection (a dry run).
    pub fn needs_stamp(&self, execution: Option<u64>) -> bool {
        needs_stamp(
            execution,
            self.execution_sequence,
            self.replace_same_execution,
        )
    }
}

/// A record stamped by `stamped` needs the stamp of `execution` when it has
/// none or an older one, or this very one when it is replaced.
fn needs_stamp(stamped: Option<u64>, execution: u64, replace_same_execution: bool) -> bool {
    stamped.is_none_or(|e| e < execution || (replace_same_execution && e == execution))
}

impl StampPlan {
    /// A forced backfill: records at this same execution are rewritten too.
    pub fn replacing_same_execution(mut self) -> Self {
        self.selection.replace_same_execution = true;
        self.values.replace_same_execution = true;
        self
    }

    pub fn for_event(event: &ConsolidationEvent, now: DateTime<Utc>) -> Self {
        Self {
            selection: KeySelection {
                partition_date: event.partition_date,
                created_before: created_before(event.execution_time),
                execution_sequence: event.execution.sequence(),
                replace_same_execution: false,
            },
            values: StampValues {
                s3_path: event.output_path.as_str().to_owned(),
                consolidation_date: event.completed_at.as_str().to_owned(),
                execution_sequence: event.execution.sequence(),
                job_name: event.job_name.as_str().to_owned(),
                output_format: event.output_format.as_str(),
                records_in_consolidation: event.records_processed,
                updated_at: now.to_rfc3339_opts(SecondsFormat::Millis, true),
                replace_same_execution: false,
            },
            count_left_behind: event.execution.is_last(),
        }
    }
}

fn created_before(execution_time: DateTime<Utc>) -> String {
    let floor = floor_to_second(execution_time);
    // Decoding admits four-digit years only, far from chrono's limits.
    floor
        .checked_add_signed(TimeDelta::seconds(1))
        .unwrap_or(floor)
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// What one conditional update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StampResult {
    Written,
    /// The record is already at this execution or a newer one: nothing written.
    AlreadyApplied,
    /// The record disappeared between the read and the update: never created.
    Missing,
}

/// The tally of one message's fan-out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StampReport {
    pub written: u64,
    pub already_applied: u64,
    /// Of `already_applied`, those the read showed stamped: no write attempted.
    pub already_applied_on_read: u64,
    pub missing: u64,
    /// Counted on the day's last execution only.
    pub left_behind: Option<u64>,
    /// Writes DynamoDB refused for capacity and that were sent again.
    pub throttled_writes: u64,
    /// The fan-out started after its run's checkpoint: the records before
    /// it, done by earlier deliveries, are not read or counted here.
    pub resumed: bool,
}

impl StampReport {
    pub fn record(&mut self, result: StampResult) {
        match result {
            StampResult::Written => self.written += 1,
            StampResult::AlreadyApplied => self.already_applied += 1,
            StampResult::Missing => self.missing += 1,
        }
    }

    pub fn examined(&self) -> u64 {
        self.written + self.already_applied + self.missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{DecodedValue, decode_json};
    use serde_json::json;

    fn event(execution_time: &str, sequence: u64) -> ConsolidationEvent {
        let text = json!({
            "event_type": "consolidation_completed",
            "partition_date": "2025-11-20",
            "execution_sequence": sequence,
            "total_executions": 4,
            "records_processed": 1250000,
            "duplicates_removed": 150,
            "output_files": 10,
            "output_format": "parquet",
            "output_path": "s3://bucket/consolidated/day=20",
            "execution_time": execution_time,
            "completed_at": "2025-11-20T06:45:32.123456+00:00",
            "job_name": "job"
        });
        match decode_json(&text.to_string()) {
            Ok(DecodedValue::Consolidation(e)) => e,
            other => panic!("{other:?}"),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-11-20T07:00:01.5Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn the_plan_carries_every_stamped_attribute() {
        let plan = StampPlan::for_event(&event("2025-11-20T06:30:00", 2), now());
        assert_eq!(
            plan.values,
            StampValues {
                s3_path: "s3://bucket/consolidated/day=20".into(),
                consolidation_date: "2025-11-20T06:45:32.123456+00:00".into(),
                execution_sequence: 2,
                job_name: "job".into(),
                output_format: "parquet",
                records_in_consolidation: 1_250_000,
                updated_at: "2025-11-20T07:00:01.500Z".into(),
                replace_same_execution: false,
            }
        );
        assert!(!plan.count_left_behind);
        assert!(StampPlan::for_event(&event("2025-11-20T06:30:00", 4), now()).count_left_behind);
    }

    #[test]
    fn the_cutoff_is_the_execution_second_plus_one() {
        let plan = StampPlan::for_event(&event("2025-11-20T06:30:00.750", 2), now());
        assert_eq!(plan.selection.created_before, "2025-11-20T06:30:01");
        assert_eq!(plan.selection.partition_date.to_string(), "2025-11-20");
        assert_eq!(plan.selection.execution_sequence, 2);
    }

    #[test]
    fn the_cutoff_of_an_execution_time_with_an_offset_is_in_utc() {
        let plan = StampPlan::for_event(&event("2025-11-20T23:59:59-03:00", 2), now());
        assert_eq!(plan.selection.created_before, "2025-11-21T03:00:00");
    }

    #[test]
    fn created_at_compares_against_the_cutoff_whatever_its_suffix() {
        let cutoff = StampPlan::for_event(&event("2025-11-20T06:30:00", 2), now())
            .selection
            .created_before;
        for included in [
            "2025-11-20T06:30:00Z",
            "2025-11-20T06:30:00.999Z",
            "2025-11-20T06:30:00+00:00",
            "2025-11-20T06:29:59.123456Z",
            "2025-11-20T00:00:00Z",
        ] {
            assert!(included < cutoff.as_str(), "{included} should be stamped");
        }
        for excluded in [
            "2025-11-20T06:30:01Z",
            "2025-11-20T06:30:01.000Z",
            "2025-11-20T06:30:01+00:00",
        ] {
            assert!(
                excluded >= cutoff.as_str(),
                "{excluded} is for the next run"
            );
        }
    }

    #[test]
    fn only_records_below_this_execution_need_the_stamp_and_a_backfill_adds_this_one() {
        let plan = StampPlan::for_event(&event("2025-11-20T06:30:00", 2), now());
        let stamped = [None, Some(1), Some(2), Some(3)];
        let needs = |plan: &StampPlan| {
            stamped.map(|s| (plan.selection.needs_stamp(s), plan.values.needs_stamp(s)))
        };
        assert_eq!(
            needs(&plan),
            [(true, true), (true, true), (false, false), (false, false)]
        );
        assert_eq!(
            needs(&plan.replacing_same_execution()),
            [(true, true), (true, true), (true, true), (false, false)]
        );
    }

    #[test]
    fn a_report_counts_each_result_separately() {
        let mut report = StampReport::default();
        for result in [
            StampResult::Written,
            StampResult::Written,
            StampResult::AlreadyApplied,
            StampResult::Missing,
        ] {
            report.record(result);
        }
        assert_eq!(
            (report.written, report.already_applied, report.missing),
            (2, 1, 1)
        );
        assert_eq!(report.examined(), 4);
    }
}
