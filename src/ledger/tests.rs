//! The ledger's rules over an in-memory port; the DynamoDB table itself is
//! tested against real servers (tests/it/ledger.rs).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::domain::event::{DecodedValue, PartitionDate, decode_json};
use crate::domain::run::RunStatus;
use crate::fanout::fake_store::FakeStore;
use crate::ports::BoxFuture;

/// Runs by (day, execution), as a table would hold them.
#[derive(Default)]
struct MemoryLedger {
    runs: Mutex<BTreeMap<(PartitionDate, u64), Run>>,
    /// Answer every call with this error.
    failing: Mutex<Option<StoreError>>,
    calls: AtomicUsize,
}

impl MemoryLedger {
    fn failure(&self) -> Result<(), StoreError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        match self.failing.lock().unwrap().clone() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn run(&self, execution: u64) -> Option<Run> {
        self.runs
            .lock()
            .unwrap()
            .values()
            .find(|r| r.execution_sequence == execution)
            .cloned()
    }
}

impl RunLedger for MemoryLedger {
    fn runs_of_day(&self, date: PartitionDate) -> BoxFuture<'_, Result<Vec<Run>, StoreError>> {
        Box::pin(async move {
            self.failure()?;
            let runs = self.runs.lock().unwrap();
            Ok(runs
                .values()
                .filter(|r| r.partition_date == date)
                .cloned()
                .collect())
        })
    }

    fn start<'a>(&'a self, run: &'a RunStart) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.failure()?;
            let mut runs = self.runs.lock().unwrap();
            let entry = runs
                .entry((run.partition_date, run.execution_sequence))
                .or_insert_with(|| Run {
                    partition_date: run.partition_date,
                    execution_sequence: run.execution_sequence,
                    total_executions: Some(run.total_executions),
                    status: RunStatus::InProgress,
                    table: run.table.clone(),
                    job_name: None,
                    output_path: None,
                    completed_at: None,
                    execution_time: Some(run.execution_time),
                    records_processed: None,
                    duplicates_removed: None,
                    counts: RunCounts::default(),
                    deliveries: 0,
                    started_at: None,
                    finished_at: None,
                    updated_at: None,
                });
            entry.deliveries += 1;
            Ok(())
        })
    }

    fn complete<'a>(
        &'a self,
        run: &'a RunStart,
        counts: &'a RunCounts,
        _rule: Completion,
    ) -> BoxFuture<'a, Result<Recorded, StoreError>> {
        Box::pin(async move {
            self.failure()?;
            let mut runs = self.runs.lock().unwrap();
            let Some(entry) = runs.get_mut(&(run.partition_date, run.execution_sequence)) else {
                return Ok(Recorded::AlreadyCompleted);
            };
            if entry.status == RunStatus::Completed {
                return Ok(Recorded::AlreadyCompleted);
            }
            entry.status = RunStatus::Completed;
            entry.counts = *counts;
            Ok(Recorded::Completed)
        })
    }
}

fn event(sequence: u64) -> ConsolidationEvent {
    let value = serde_json::json!({
        "event_type": "consolidation_completed",
        "partition_date": "2025-11-20",
        "execution_sequence": sequence,
        "total_executions": 4,
        "records_processed": 10,
        "duplicates_removed": 0,
        "output_files": 1,
        "output_format": "parquet",
        "output_path": "s3://bucket/out",
        "execution_time": format!("2025-11-20T0{sequence}:00:00"),
        "completed_at": "2025-11-20T23:00:00",
        "job_name": "job",
    });
    match decode_json(&value.to_string()) {
        Ok(DecodedValue::Consolidation(event)) => event,
        other => panic!("not a consolidation event: {other:?}"),
    }
}

fn ledger() -> (Arc<MemoryLedger>, Ledger) {
    let port = Arc::new(MemoryLedger::default());
    let ledger = Ledger::new(Arc::clone(&port) as Arc<dyn RunLedger>, "runs");
    (port, ledger)
}

fn report(written: u64) -> StampReport {
    StampReport {
        written,
        ..StampReport::default()
    }
}

#[tokio::test]
async fn a_completed_run_answers_its_redelivery_and_older_executions() {
    let (port, ledger) = ledger();
    let store = FakeStore::default();
    let first = ledger
        .before_fan_out(&store, &event(2), Verdict::Respect, "r1")
        .await;
    assert!(matches!(first, RunDecision::Tracked(_)), "{first:?}");
    ledger
        .completed(&first, &report(7), Completion::Forward, "r1")
        .await;
    let run = port.run(2).expect("recorded");
    assert_eq!(
        (run.status, run.counts.stamped, run.deliveries),
        (RunStatus::Completed, 7, 1)
    );

    for older_or_same in [2, 1] {
        let again = ledger
            .before_fan_out(&store, &event(older_or_same), Verdict::Respect, "r2")
            .await;
        match again {
            RunDecision::Superseded(by) => assert_eq!(by.execution_sequence, 2),
            other => panic!("execution {older_or_same}: {other:?}"),
        }
    }
    // A newer execution is stamped.
    let newer = ledger
        .before_fan_out(&store, &event(3), Verdict::Respect, "r2")
        .await;
    assert!(matches!(newer, RunDecision::Tracked(_)), "{newer:?}");
    assert_eq!(
        port.run(2).map(|r| r.deliveries),
        Some(1),
        "no delivery counted for an answer"
    );
}

#[tokio::test]
async fn an_unfinished_run_is_stamped_again_and_its_deliveries_counted() {
    let (port, ledger) = ledger();
    let store = FakeStore::default();
    for request in ["r1", "r2"] {
        let decision = ledger
            .before_fan_out(&store, &event(1), Verdict::Respect, request)
            .await;
        assert!(matches!(decision, RunDecision::Tracked(_)), "{decision:?}");
    }
    let run = port.run(1).expect("recorded");
    assert_eq!((run.status, run.deliveries), (RunStatus::InProgress, 2));
}

#[tokio::test]
async fn forcing_ignores_the_verdict_but_records_the_run() {
    let (port, ledger) = ledger();
    let store = FakeStore::default();
    let first = ledger
        .before_fan_out(&store, &event(1), Verdict::Respect, "r1")
        .await;
    ledger
        .completed(&first, &report(1), Completion::Forward, "r1")
        .await;
    let calls = port.calls.load(Ordering::Relaxed);
    let forced = ledger
        .before_fan_out(&store, &event(1), Verdict::Ignore, "r2")
        .await;
    assert!(matches!(forced, RunDecision::Tracked(_)), "{forced:?}");
    // The start only: no read of the day's runs.
    assert_eq!(port.calls.load(Ordering::Relaxed), calls + 1);
    assert_eq!(port.run(1).map(|r| r.deliveries), Some(2));
}

#[tokio::test]
async fn a_failing_ledger_is_left_alone_for_the_rest_of_the_invocation() {
    let (port, ledger) = ledger();
    let store = FakeStore::default();
    *port.failing.lock().unwrap() = Some(StoreError::new(
        ErrorClass::Setup,
        "Query",
        "AccessDeniedException: not authorized",
    ));
    for _ in 0..3 {
        let decision = ledger
            .before_fan_out(&store, &event(1), Verdict::Respect, "r1")
            .await;
        assert!(matches!(decision, RunDecision::Untracked), "{decision:?}");
    }
    assert_eq!(port.calls.load(Ordering::Relaxed), 1, "asked once in r1");
    // The next invocation asks again, and finds it working.
    *port.failing.lock().unwrap() = None;
    let decision = ledger
        .before_fan_out(&store, &event(1), Verdict::Respect, "r2")
        .await;
    assert!(matches!(decision, RunDecision::Tracked(_)), "{decision:?}");
}

#[tokio::test]
async fn a_failed_start_leaves_nothing_to_complete() {
    let (port, ledger) = ledger();
    let store = FakeStore::default();
    *port.failing.lock().unwrap() = Some(StoreError::new(
        ErrorClass::Throttled,
        "UpdateItem",
        "throttled",
    ));
    let decision = ledger
        .before_fan_out(&store, &event(1), Verdict::Ignore, "r1")
        .await;
    assert!(matches!(decision, RunDecision::Untracked));
    *port.failing.lock().unwrap() = None;
    ledger
        .completed(&decision, &report(3), Completion::Forward, "r1")
        .await;
    assert!(port.run(1).is_none());
}

#[tokio::test]
async fn no_ledger_means_no_decision() {
    let ledger = Ledger::off();
    let decision = ledger
        .before_fan_out(&FakeStore::default(), &event(1), Verdict::Respect, "r1")
        .await;
    assert!(matches!(decision, RunDecision::Untracked));
    assert!(!ledger.is_on());
}
