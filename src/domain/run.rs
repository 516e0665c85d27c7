//! The run ledger as the core sees it: one run per (day, execution), the
//! rule that makes a completed run answer an event without a fan-out, and
//! what a run records.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::event::{ConsolidationEvent, PartitionDate};
use super::stamp::StampReport;

/// Where a run stands. It only moves forward: `in_progress`, then `completed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// A fan-out started and has not finished every selected record yet.
    InProgress,
    /// A fan-out finished with every selected record written, already
    /// applied or gone.
    Completed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "in_progress" => Some(Self::InProgress),
            "completed" => Some(Self::Completed),
            _ => None,
        }
    }
}

/// The chargebacks table a run is about: its name, and the `TableId`
/// DynamoDB gives each table when it is created, so that a recreated or
/// restored table (same name, new id) never inherits another table's runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableIdentity {
    pub name: String,
    pub id: String,
}

/// What a run counted, from the delivery that completed it (or, while in
/// progress, nothing yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RunCounts {
    /// Records this run wrote.
    pub stamped: u64,
    /// Records already at this execution or a newer one.
    pub already_applied: u64,
    /// Selected records deleted before their update.
    pub gone: u64,
    /// Records of the day created after the execution's cutoff, counted on
    /// the day's last execution only (no later run stamps them).
    pub left_for_next: Option<u64>,
}

impl RunCounts {
    /// Every record the run selected: stamped, already applied or gone.
    pub fn selected(&self) -> u64 {
        self.stamped + self.already_applied + self.gone
    }
}

impl RunCounts {
    /// These counts, then `later`'s: a run resumed after a checkpoint counts
    /// what lay before it, then what the resumed pass did.
    pub fn then(&self, later: &Self) -> Self {
        Self {
            stamped: self.stamped + later.stamped,
            already_applied: self.already_applied + later.already_applied,
            gone: self.gone + later.gone,
            left_for_next: later.left_for_next,
        }
    }
}

impl From<&StampReport> for RunCounts {
    fn from(report: &StampReport) -> Self {
        Self {
            stamped: report.written,
            already_applied: report.already_applied,
            gone: report.missing,
            left_for_next: report.left_behind,
        }
    }
}

/// One run of the ledger: a (day, execution) and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    pub partition_date: PartitionDate,
    pub execution_sequence: u64,
    pub total_executions: Option<u64>,
    pub status: RunStatus,
    pub table: TableIdentity,
    pub job_name: Option<String>,
    pub output_path: Option<String>,
    pub completed_at: Option<String>,
    /// The cutoff of the event this run was (last) completed for.
    #[serde(serialize_with = "ledger_times")]
    pub execution_time: Option<DateTime<Utc>>,
    /// The producer's counts, as the event carried them.
    pub records_processed: Option<u64>,
    pub duplicates_removed: Option<u64>,
    pub counts: RunCounts,
    /// Fan-outs started for this run (a delivery answered from the ledger
    /// is not one).
    pub deliveries: u64,
    #[serde(serialize_with = "ledger_times")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "ledger_times")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "ledger_times")]
    pub updated_at: Option<DateTime<Utc>>,
    /// While in progress: where a resumed delivery starts (`counts` are
    /// those of the records up to it).
    pub checkpoint: Option<IndexPosition>,
}

impl Run {
    /// Whether this run, completed, already did everything `event` asks of
    /// `table`: same table, an execution at least as new, and a cutoff at
    /// least as late (so every record the event selects was selected and
    /// stamped at this run's execution or newer).
    pub fn covers(&self, event: &ConsolidationEvent, table: &TableIdentity) -> bool {
        self.status == RunStatus::Completed
            && self.table.id == table.id
            && self.execution_sequence >= event.execution.sequence()
            && self
                .execution_time
                .is_some_and(|cutoff| cutoff >= event.execution_time)
    }

    /// Where a delivery of `event` resumes this run: an in-progress run of
    /// the same table and cutoff with a checkpoint, and what lies before it.
    pub fn resume_point(
        &self,
        event: &ConsolidationEvent,
        table: &TableIdentity,
    ) -> Option<Checkpoint> {
        let resumable = self.status == RunStatus::InProgress
            && self.table.id == table.id
            && self.execution_sequence == event.execution.sequence()
            && self.execution_time == Some(event.execution_time);
        let position = self.checkpoint.clone().filter(|_| resumable)?;
        Some(Checkpoint {
            position,
            counts: RunCounts {
                left_for_next: None,
                ..self.counts
            },
        })
    }

    /// From started to finished, when both are known.
    pub fn duration(&self) -> Option<chrono::Duration> {
        Some(self.finished_at? - self.started_at?)
    }
}

/// The completed run that answers `event` for `table`, if any: the newest
/// execution among those that cover it.
pub(crate) fn superseding_run<'a>(
    runs: &'a [Run],
    event: &ConsolidationEvent,
    table: &TableIdentity,
) -> Option<&'a Run> {
    runs.iter()
        .filter(|run| run.covers(event, table))
        .max_by_key(|run| run.execution_sequence)
}

/// One part of a key, typed as DynamoDB types key attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum KeyPart {
    S(String),
    N(String),
    B(Vec<u8>),
}

/// A position in the date index: the key of one entry (the last of a page
/// whose records, and every earlier page's, are done) and its `created_at`.
/// The index's order among equal `created_at` values is not documented, so
/// positions are compared on `created_at` only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexPosition {
    pub created_at: String,
    pub key: BTreeMap<String, KeyPart>,
}

/// How far an unfinished run got: every selected record up to `position`
/// is done (written, already applied or gone), and `counts` counted them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub position: IndexPosition,
    pub counts: RunCounts,
}

/// What the ledger records when a fan-out for `event` starts, and again
/// (with its counts) when it completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStart {
    pub partition_date: PartitionDate,
    pub execution_sequence: u64,
    pub total_executions: u64,
    pub table: TableIdentity,
    pub job_name: String,
    pub output_path: String,
    pub completed_at: String,
    pub execution_time: DateTime<Utc>,
    pub records_processed: u64,
    pub duplicates_removed: u64,
}

impl RunStart {
    pub fn for_event(event: &ConsolidationEvent, table: TableIdentity) -> Self {
        Self {
            partition_date: event.partition_date,
            execution_sequence: event.execution.sequence(),
            total_executions: event.execution.total(),
            table,
            job_name: event.job_name.as_str().to_owned(),
            output_path: event.output_path.as_str().to_owned(),
            completed_at: event.completed_at.as_str().to_owned(),
            execution_time: event.execution_time,
            records_processed: event.records_processed,
            duplicates_removed: event.duplicates_removed,
        }
    }
}

/// Which completed runs a completion may overwrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// An in-progress run, or a completed one with an earlier cutoff: the
    /// first delivery to complete a run keeps its counts.
    Forward,
    /// Also a completed run with the same cutoff (`backfill --force`
    /// records its run); never one with a later cutoff.
    Force,
}

/// Whether a completion was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// This delivery completed the run.
    Completed,
    /// Another delivery completed it first (or the run now belongs to
    /// another table): the ledger keeps what it has.
    AlreadyCompleted,
}

/// A timestamp as the ledger writes it: UTC, fixed width (microseconds), so
/// that text order is time order.
pub(crate) fn ledger_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// An optional time as [`ledger_time`] writes it, for `status --json`.
fn ledger_times<S: serde::Serializer>(
    at: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serializer.serialize_str(&ledger_time(*at)),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{DecodedValue, decode_json};
    use serde_json::json;

    fn event(sequence: u64, execution_time: &str) -> ConsolidationEvent {
        let value = json!({
            "event_type": "consolidation_completed",
            "partition_date": "2025-11-20",
            "execution_sequence": sequence,
            "total_executions": 4,
            "records_processed": 100,
            "duplicates_removed": 2,
            "output_files": 1,
            "output_format": "parquet",
            "output_path": "s3://bucket/out",
            "execution_time": execution_time,
            "completed_at": "2025-11-20T07:00:00",
            "job_name": "job",
        });
        match decode_json(&value.to_string()) {
            Ok(DecodedValue::Consolidation(event)) => event,
            other => panic!("not a consolidation event: {other:?}"),
        }
    }

    fn table(id: &str) -> TableIdentity {
        TableIdentity {
            name: "chargebacks".into(),
            id: id.into(),
        }
    }

    fn run(sequence: u64, execution_time: &str, status: RunStatus, table_id: &str) -> Run {
        let event = event(sequence, execution_time);
        let start = RunStart::for_event(&event, table(table_id));
        Run {
            partition_date: start.partition_date,
            execution_sequence: sequence,
            total_executions: Some(4),
            status,
            table: start.table,
            job_name: None,
            output_path: None,
            completed_at: None,
            execution_time: Some(start.execution_time),
            records_processed: None,
            duplicates_removed: None,
            counts: RunCounts::default(),
            deliveries: 1,
            started_at: None,
            finished_at: None,
            updated_at: None,
            checkpoint: None,
        }
    }

    #[test]
    fn a_completed_run_of_the_same_table_answers_itself_and_older_executions() {
        let done = [run(2, "2025-11-20T12:00:00", RunStatus::Completed, "t1")];
        let t1 = table("t1");
        for (sequence, cutoff) in [(2, "2025-11-20T12:00:00"), (1, "2025-11-20T06:00:00")] {
            let answered = superseding_run(&done, &event(sequence, cutoff), &t1);
            assert_eq!(answered.map(|r| r.execution_sequence), Some(2));
        }
    }

    #[test]
    fn nothing_else_answers_an_event() {
        let t1 = table("t1");
        let newer_event = event(3, "2025-11-20T18:00:00");
        // A newer execution, a later cutoff, an unfinished run, another table.
        let cases = [
            (
                run(2, "2025-11-20T12:00:00", RunStatus::Completed, "t1"),
                event(3, "2025-11-20T12:00:00"),
            ),
            (
                run(3, "2025-11-20T12:00:00", RunStatus::Completed, "t1"),
                newer_event.clone(),
            ),
            (
                run(3, "2025-11-20T18:00:00", RunStatus::InProgress, "t1"),
                newer_event.clone(),
            ),
            (
                run(3, "2025-11-20T18:00:00", RunStatus::Completed, "t0"),
                newer_event,
            ),
        ];
        for (run, event) in cases {
            assert!(
                superseding_run(std::slice::from_ref(&run), &event, &t1).is_none(),
                "{run:?} must not answer {event:?}"
            );
        }
    }

    #[test]
    fn the_newest_covering_run_is_named() {
        let runs = [
            run(2, "2025-11-20T12:00:00", RunStatus::Completed, "t1"),
            run(4, "2025-11-20T23:00:00", RunStatus::Completed, "t1"),
            run(3, "2025-11-20T18:00:00", RunStatus::Completed, "t1"),
        ];
        let answered = superseding_run(&runs, &event(2, "2025-11-20T12:00:00"), &table("t1"));
        assert_eq!(answered.map(|r| r.execution_sequence), Some(4));
    }

    fn position(created_at: &str) -> IndexPosition {
        IndexPosition {
            created_at: created_at.into(),
            key: BTreeMap::from([("chargeback_id".into(), KeyPart::S("cb-1".into()))]),
        }
    }

    #[test]
    fn only_an_in_progress_run_of_the_same_table_and_cutoff_resumes() {
        let t1 = table("t1");
        let at = "2025-11-20T12:00:00";
        let mut open = run(2, at, RunStatus::InProgress, "t1");
        open.counts = RunCounts {
            stamped: 10,
            already_applied: 2,
            gone: 1,
            left_for_next: Some(9),
        };
        assert_eq!(open.resume_point(&event(2, at), &t1), None, "no checkpoint");
        open.checkpoint = Some(position("2025-11-20T03:00:00.000Z"));
        let resume = open.resume_point(&event(2, at), &t1);
        assert_eq!(
            resume,
            Some(Checkpoint {
                position: position("2025-11-20T03:00:00.000Z"),
                counts: RunCounts {
                    stamped: 10,
                    already_applied: 2,
                    gone: 1,
                    left_for_next: None,
                },
            })
        );
        let refused = [
            (
                open.clone(),
                event(2, "2025-11-20T12:30:00"),
                "another cutoff",
            ),
            (open.clone(), event(3, at), "another execution"),
            (
                Run {
                    status: RunStatus::Completed,
                    ..open.clone()
                },
                event(2, at),
                "completed",
            ),
            (
                Run {
                    table: table("t0"),
                    ..open.clone()
                },
                event(2, at),
                "another table",
            ),
        ];
        for (run, event, why) in refused {
            assert_eq!(run.resume_point(&event, &t1), None, "{why}");
        }
    }

    #[test]
    fn a_resumed_run_counts_what_lay_before_its_checkpoint_then_the_rest() {
        let before = RunCounts {
            stamped: 10,
            already_applied: 2,
            gone: 1,
            left_for_next: None,
        };
        let rest = RunCounts {
            stamped: 5,
            already_applied: 1,
            gone: 0,
            left_for_next: Some(3),
        };
        assert_eq!(
            before.then(&rest),
            RunCounts {
                stamped: 15,
                already_applied: 3,
                gone: 1,
                left_for_next: Some(3),
            }
        );
    }

    #[test]
    fn ledger_times_sort_as_text_in_time_order() {
        let early = "2025-11-20T06:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let later = early + chrono::Duration::microseconds(1);
        assert_eq!(ledger_time(early), "2025-11-20T06:00:00.000000Z");
        assert!(ledger_time(early) < ledger_time(later));
    }

    #[test]
    fn counts_come_from_the_report() {
        let report = StampReport {
            written: 5,
            already_applied: 3,
            missing: 1,
            left_behind: Some(7),
            ..StampReport::default()
        };
        let counts = RunCounts::from(&report);
        assert_eq!(
            (counts.stamped, counts.already_applied, counts.gone),
            (5, 3, 1)
        );
        assert_eq!((counts.selected(), counts.left_for_next), (9, Some(7)));
    }
}
