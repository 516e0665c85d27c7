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
                    checkpoint: None,
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
            entry.checkpoint = None;
            Ok(Recorded::Completed)
        })
    }

    fn save_checkpoint<'a>(
        &'a self,
        run: &'a RunStart,
        checkpoint: &'a Checkpoint,
        replacing: Option<&'a IndexPosition>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            self.failure()?;
            let mut runs = self.runs.lock().unwrap();
            let Some(entry) = runs.get_mut(&(run.partition_date, run.execution_sequence)) else {
                return Ok(false);
            };
            let forward = entry.checkpoint.as_ref().is_none_or(|c| {
                c.created_at <= checkpoint.position.created_at
                    || replacing.is_some_and(|refused| refused.created_at == c.created_at)
            });
            if entry.status != RunStatus::InProgress || !forward {
                return Ok(false);
            }
            entry.checkpoint = Some(checkpoint.position.clone());
            entry.counts = checkpoint.counts;
            Ok(true)
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
    assert!(matches!(first, RunDecision::Tracked { .. }), "{first:?}");
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
    assert!(matches!(newer, RunDecision::Tracked { .. }), "{newer:?}");
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
        assert!(
            matches!(decision, RunDecision::Tracked { .. }),
            "{decision:?}"
        );
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
    assert!(matches!(forced, RunDecision::Tracked { .. }), "{forced:?}");
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
    assert!(
        matches!(decision, RunDecision::Tracked { .. }),
        "{decision:?}"
    );
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

fn position(created_at: &str) -> IndexPosition {
    IndexPosition {
        created_at: created_at.into(),
        key: std::collections::BTreeMap::from([(
            "chargeback_id".into(),
            crate::domain::run::KeyPart::S(format!("cb-{created_at}")),
        )]),
    }
}

fn counts(stamped: u64, already_applied: u64) -> RunCounts {
    RunCounts {
        stamped,
        already_applied,
        ..RunCounts::default()
    }
}

#[tokio::test]
async fn an_unfinished_run_resumes_after_its_checkpoint_and_counts_what_lay_before_it() {
    let (port, ledger) = ledger();
    let store = FakeStore::default();
    let first = ledger
        .before_fan_out(&store, &event(2), Verdict::Respect, "r1")
        .await;
    let saved = ledger.checkpoints(&first, "r1").expect("a tracked run");
    assert!(saved.resume_at().is_none(), "nothing to resume yet");
    saved
        .save(position("2025-11-20T01:00:00"), counts(5, 1), false)
        .await;
    // Never backwards, by created_at.
    saved
        .save(position("2025-11-20T00:30:00"), counts(2, 0), false)
        .await;
    let run = port.run(2).expect("recorded");
    assert_eq!(run.checkpoint, Some(position("2025-11-20T01:00:00")));
    assert_eq!(run.counts, counts(5, 1));

    // The next delivery resumes there; its own checkpoints and its
    // completion add what lay before.
    let second = ledger
        .before_fan_out(&store, &event(2), Verdict::Respect, "r2")
        .await;
    let resumed = ledger.checkpoints(&second, "r2").expect("a tracked run");
    assert_eq!(resumed.resume_at(), Some(&position("2025-11-20T01:00:00")));
    resumed
        .save(position("2025-11-20T02:00:00"), counts(3, 0), true)
        .await;
    assert_eq!(port.run(2).map(|r| r.counts), Some(counts(8, 1)));
    let rest = StampReport {
        written: 4,
        already_applied: 2,
        resumed: true,
        ..StampReport::default()
    };
    ledger
        .completed(&second, &rest, Completion::Forward, "r2")
        .await;
    let run = port.run(2).expect("recorded");
    assert_eq!(
        (run.status, run.counts),
        (RunStatus::Completed, counts(9, 3))
    );
    assert_eq!(run.checkpoint, None);
}

#[tokio::test]
async fn a_checkpoint_the_store_refused_counts_the_full_pass_alone() {
    let (port, ledger) = ledger();
    let store = FakeStore::default();
    let first = ledger
        .before_fan_out(&store, &event(2), Verdict::Respect, "r1")
        .await;
    if let Some(saved) = ledger.checkpoints(&first, "r1") {
        saved
            .save(position("2025-11-20T01:00:00"), counts(5, 0), false)
            .await;
    }
    let second = ledger
        .before_fan_out(&store, &event(2), Verdict::Respect, "r2")
        .await;
    // The fan-out read from the start (not resumed): its counts are all.
    let full = StampReport {
        written: 1,
        already_applied: 5,
        resumed: false,
        ..StampReport::default()
    };
    ledger
        .completed(&second, &full, Completion::Forward, "r2")
        .await;
    assert_eq!(port.run(2).map(|r| r.counts), Some(counts(1, 5)));
}

/// A pass that could not start after the run's checkpoint puts its own in
/// place of it, though it lies behind; a pass that did start there never
/// moves it back.
#[tokio::test]
async fn a_pass_whose_start_was_refused_replaces_the_refused_checkpoint() {
    let (port, ledger) = ledger();
    let store = FakeStore::default();
    let first = ledger
        .before_fan_out(&store, &event(2), Verdict::Respect, "r1")
        .await;
    if let Some(saved) = ledger.checkpoints(&first, "r1") {
        saved
            .save(position("2025-11-20T05:00:00"), counts(50, 0), false)
            .await;
    }
    let second = ledger
        .before_fan_out(&store, &event(2), Verdict::Respect, "r2")
        .await;
    let pass = ledger.checkpoints(&second, "r2").expect("a tracked run");
    // Resumed after it: a checkpoint behind it is not taken.
    pass.save(position("2025-11-20T01:00:00"), counts(10, 0), true)
        .await;
    assert_eq!(
        port.run(2).and_then(|r| r.checkpoint),
        Some(position("2025-11-20T05:00:00"))
    );
    // Refused as a start key (not resumed): this pass's replaces it, and
    // counts alone.
    pass.save(position("2025-11-20T01:00:00"), counts(10, 0), false)
        .await;
    let run = port.run(2).expect("recorded");
    assert_eq!(
        (run.checkpoint, run.counts),
        (Some(position("2025-11-20T01:00:00")), counts(10, 0))
    );
    // From then on, forward only.
    pass.save(position("2025-11-20T00:30:00"), counts(5, 0), false)
        .await;
    pass.save(position("2025-11-20T02:00:00"), counts(20, 0), false)
        .await;
    assert_eq!(
        port.run(2).and_then(|r| r.checkpoint),
        Some(position("2025-11-20T02:00:00"))
    );
}

#[tokio::test]
async fn forcing_or_another_cutoff_does_not_resume() {
    let (_, ledger) = ledger();
    let store = FakeStore::default();
    let first = ledger
        .before_fan_out(&store, &event(2), Verdict::Respect, "r1")
        .await;
    if let Some(saved) = ledger.checkpoints(&first, "r1") {
        saved
            .save(position("2025-11-20T01:00:00"), counts(5, 0), false)
            .await;
    }
    let forced = ledger
        .before_fan_out(&store, &event(2), Verdict::Ignore, "r2")
        .await;
    assert!(matches!(forced, RunDecision::Tracked { resume: None, .. }));
    let mut later_cutoff = event(2);
    later_cutoff.execution_time += chrono::Duration::minutes(5);
    let other = ledger
        .before_fan_out(&store, &later_cutoff, Verdict::Respect, "r3")
        .await;
    assert!(matches!(other, RunDecision::Tracked { resume: None, .. }));
}
