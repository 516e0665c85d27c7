//! The fan-out against an in-memory store.
#![cfg(test)]

use std::sync::Arc;
use std::sync::atomic::Ordering;

use metrics::SharedString;

use super::fake_store::{Capacity, FakeRecord, FakeStore};
use super::{FanOut, FanOutError};
use crate::domain::event::PartitionDate;
use crate::domain::failure::{ErrorClass, StopReason, StoreError};
use crate::domain::run::{IndexPosition, KeyPart, RunCounts};
use crate::domain::stamp::{KeySelection, StampPlan, StampValues};
use crate::ports::{BoxFuture, ChargebackStore, Checkpoints};
use crate::retry::{InvocationControl, RetryPolicy};
use crate::telemetry::metrics::name::{THROTTLED_REQUESTS, THROTTLED_WRITES};

fn record(date: &str, created_at: &str, execution: Option<u64>) -> FakeRecord {
    FakeRecord {
        partition_date: date.into(),
        created_at: created_at.into(),
        execution,
    }
}

fn day(n_before: usize, n_after: usize) -> Vec<(String, FakeRecord)> {
    let before = (0..n_before).map(|i| {
        (
            format!("cb-{i:04}"),
            record(
                "2025-11-20",
                &format!("2025-11-20T05:{:02}:00Z", i % 60),
                None,
            ),
        )
    });
    let after = (0..n_after).map(|i| {
        (
            format!("late-{i:04}"),
            record("2025-11-20", "2025-11-20T07:00:00.000Z", None),
        )
    });
    let other_day = std::iter::once((
        "other".to_owned(),
        record("2025-11-19", "2025-11-19T01:00:00Z", None),
    ));
    before.chain(after).chain(other_day).collect()
}

fn plan(execution_sequence: u64, last: bool) -> StampPlan {
    StampPlan {
        selection: KeySelection {
            partition_date: PartitionDate::parse("2025-11-20").unwrap(),
            created_before: "2025-11-20T06:30:01".into(),
            execution_sequence,
            replace_same_execution: false,
        },
        values: StampValues {
            s3_path: "s3://b/p".into(),
            consolidation_date: "2025-11-20T06:45:32+00:00".into(),
            execution_sequence,
            job_name: "job".into(),
            output_format: "csv",
            records_in_consolidation: 10,
            updated_at: "2025-11-20T07:00:00.000Z".into(),
            replace_same_execution: false,
        },
        count_left_behind: last,
    }
}

fn fan_out(store: FakeStore, concurrency: usize) -> FanOut<FakeStore> {
    FanOut::new(Arc::new(store), concurrency, Arc::default()).with_retry_policy(RetryPolicy {
        base_delay: std::time::Duration::from_millis(1),
        max_delay: std::time::Duration::from_millis(2),
        ..RetryPolicy::default()
    })
}

fn unbounded() -> Arc<InvocationControl> {
    Arc::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_selected_record_is_stamped_once_and_nothing_else() {
    let fan_out = fan_out(FakeStore::with_records(day(50, 5)), 8);
    let report = fan_out
        .stamp_partition(&plan(2, false), &unbounded())
        .await
        .unwrap();
    assert_eq!(
        (report.written, report.already_applied, report.left_behind),
        (50, 0, None)
    );
    let store = fan_out.store();
    assert_eq!(store.execution_of("cb-0049"), Some(2));
    assert_eq!(store.execution_of("late-0000"), None);
    assert_eq!(store.execution_of("other"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_pass_writes_nothing_and_counts_what_was_already_applied() {
    let fan_out = fan_out(FakeStore::with_records(day(20, 0)), 4);
    fan_out
        .stamp_partition(&plan(2, false), &unbounded())
        .await
        .unwrap();
    let again = fan_out
        .stamp_partition(&plan(2, false), &unbounded())
        .await
        .unwrap();
    assert_eq!((again.written, again.already_applied), (0, 20));
    let older = fan_out
        .stamp_partition(&plan(1, false), &unbounded())
        .await
        .unwrap();
    assert_eq!((older.written, older.already_applied), (0, 20));
    assert_eq!(fan_out.store().execution_of("cb-0000"), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_seen_stamped_on_read_are_counted_without_a_write() {
    let mut store = FakeStore::with_records(day(20, 0));
    store.sees_execution = true;
    let fan_out = fan_out(store, 4);
    fan_out
        .stamp_partition(&plan(2, false), &unbounded())
        .await
        .unwrap();
    fan_out.store().fail_on_any.store(true, Ordering::SeqCst);
    let again = fan_out
        .stamp_partition(&plan(2, false), &unbounded())
        .await
        .unwrap();
    assert_eq!((again.written, again.already_applied), (0, 20));
    assert_eq!(again.already_applied_on_read, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_key_streams_are_all_read() {
    let mut store = FakeStore::with_records(day(40, 3));
    store.streams = 4;
    let report = fan_out(store, 8)
        .stamp_partition(&plan(1, false), &unbounded())
        .await
        .unwrap();
    assert_eq!(report.written, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_in_flight_never_exceed_the_limit() {
    let mut store = FakeStore::with_records(day(200, 0));
    store.page_size = 50;
    let fan_out = fan_out(store, 5);
    fan_out
        .stamp_partition(&plan(1, false), &unbounded())
        .await
        .unwrap();
    let max = fan_out.store().max_in_flight.load(Ordering::SeqCst);
    assert!((1..=5).contains(&max), "max in flight {max}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_update_fails_the_message_and_stops_new_updates() {
    let mut store = FakeStore::with_records(day(300, 0));
    store.fail_on = Some("cb-0010".into());
    let fan_out = fan_out(store, 2);
    let error = fan_out
        .stamp_partition(&plan(1, false), &unbounded())
        .await
        .unwrap_err();
    assert!(
        matches!(error, FanOutError::Store { error: e, .. } if e.class == ErrorClass::Permanent && e.message.contains("after 1 attempt)"))
    );
    assert_eq!(
        fan_out.store().execution_of("cb-0299"),
        None,
        "work stopped early"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_execution_counts_records_left_behind() {
    let fan_out = fan_out(FakeStore::with_records(day(10, 7)), 4);
    let report = fan_out
        .stamp_partition(&plan(4, true), &unbounded())
        .await
        .unwrap();
    assert_eq!((report.written, report.left_behind), (10, Some(7)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_gone_before_its_update_is_counted_missing() {
    let mut store = FakeStore::with_records(day(5, 0));
    store.deleted_before_update = vec!["cb-0001".into()];
    let report = fan_out(store, 4)
        .stamp_partition(&plan(1, false), &unbounded())
        .await
        .unwrap();
    assert_eq!((report.written, report.missing), (4, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_request_resends_only_its_failed_statements() {
    let store = FakeStore {
        batch: 5,
        throttle_next: std::sync::atomic::AtomicUsize::new(3),
        ..FakeStore::with_records(day(23, 0))
    };
    let fan_out = fan_out(store, 4);
    let report = fan_out
        .stamp_partition(&plan(2, false), &unbounded())
        .await
        .unwrap();
    assert_eq!(report.written, 23);
    let store = fan_out.store();
    assert!((0..23).all(|i| store.execution_of(&format!("cb-{i:04}")) == Some(2)));
    // 23 records in requests of 5, and the 3 throttled updates again.
    assert_eq!(store.updates.load(Ordering::SeqCst), 26);
    assert!(store.requests.load(Ordering::SeqCst) >= 6);
}

/// The two throttling counters, as the EMF collector sees them.
#[derive(Default)]
struct ThrottleCounters {
    requests: Arc<metrics::atomics::AtomicU64>,
    writes: Arc<metrics::atomics::AtomicU64>,
}

impl metrics::Recorder for ThrottleCounters {
    fn describe_counter(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: SharedString) {}
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        match key.name() {
            THROTTLED_REQUESTS => metrics::Counter::from_arc(Arc::clone(&self.requests)),
            THROTTLED_WRITES => metrics::Counter::from_arc(Arc::clone(&self.writes)),
            _ => metrics::Counter::noop(),
        }
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

// One thread: the recorder is the thread's, and so must every request's task be.
#[tokio::test(flavor = "current_thread")]
async fn the_report_and_the_metrics_count_the_same_throttled_writes() {
    let counters = ThrottleCounters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let store = FakeStore {
        batch: 5,
        throttle_next: std::sync::atomic::AtomicUsize::new(3),
        ..FakeStore::with_records(day(23, 0))
    };
    // One request at a time: the 3 throttled statements are the first request's.
    let report = fan_out(store, 1)
        .stamp_partition(&plan(2, false), &unbounded())
        .await
        .unwrap();
    assert_eq!((report.written, report.throttled_writes), (23, 3));
    assert_eq!(counters.writes.load(Ordering::SeqCst), 3, "ThrottledWrites");
    assert_eq!(
        counters.requests.load(Ordering::SeqCst),
        1,
        "ThrottledRequests: one request with throttled writes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_refused_for_good_fails_its_fan_out() {
    let store = FakeStore {
        batch: 5,
        fail_on: Some("cb-0007".into()),
        ..FakeStore::with_records(day(23, 0))
    };
    let error = fan_out(store, 4)
        .stamp_partition(&plan(2, false), &unbounded())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, FanOutError::Store { error: e, .. } if e.class == ErrorClass::Permanent),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_the_deadline_no_update_starts() {
    let fan_out = fan_out(FakeStore::with_records(day(30, 0)), 4);
    let control = Arc::new(InvocationControl::new(
        Some(std::time::Instant::now() + std::time::Duration::from_secs(1)),
        std::time::Duration::from_secs(5),
    ));
    let error = fan_out
        .stamp_partition(&plan(1, false), &control)
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        FanOutError::Stopped { reason: StopReason::DeadlineNear, report } if report.written == 0
    ));
    assert_eq!(fan_out.store().execution_of("cb-0000"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_setup_failure_elsewhere_no_update_starts() {
    let fan_out = fan_out(FakeStore::with_records(day(30, 0)), 4);
    let control = unbounded();
    control.halt_on_setup_failure(StoreError::new(
        ErrorClass::Setup,
        "Query",
        "ResourceNotFoundException",
    ));
    let error = fan_out
        .stamp_partition(&plan(1, false), &control)
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        FanOutError::Stopped {
            reason: StopReason::SetupFailure(_),
            ..
        }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_updates_are_retried_and_counted_and_leave_the_concurrency_alone() {
    let store = FakeStore::with_records(day(30, 0));
    store.throttle_next.store(20, Ordering::SeqCst);
    let fan_out = fan_out(store, 16);
    let report = fan_out
        .stamp_partition(&plan(1, false), &unbounded())
        .await
        .unwrap();
    assert_eq!(report.written, 30, "nothing lost to throttling");
    assert_eq!(report.throttled_writes, 20);
    assert_eq!(
        fan_out.limiter().lowest_limit(),
        16,
        "throttling is paced by rate, not by concurrency"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_requests_lower_the_concurrency_limit() {
    let store = FakeStore::with_records(day(30, 0));
    store.fail_transient_next.store(3, Ordering::SeqCst);
    let fan_out = fan_out(store, 16);
    let report = fan_out
        .stamp_partition(&plan(1, false), &unbounded())
        .await
        .unwrap();
    assert_eq!(report.written, 30);
    assert!(fan_out.limiter().lowest_limit() < 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_under_a_capacity_limit_is_stamped_in_one_go_at_its_pace() {
    // Throttling on every request of the first wave and on and off
    // after: the fan-out never gives up while writes are admitted.
    let store = FakeStore {
        batch: 25,
        capacity: Some(Capacity::new(300.0)),
        ..FakeStore::with_records(day(900, 0))
    };
    let fan_out = fan_out(store, 64);
    let report = fan_out
        .stamp_partition(&plan(1, false), &unbounded())
        .await
        .unwrap();
    let store = fan_out.store();
    assert_eq!(report.written, 900);
    assert!((0..900).all(|i| store.execution_of(&format!("cb-{i:04}")) == Some(1)));
    assert_eq!(
        report.throttled_writes,
        store.refused.load(Ordering::SeqCst) as u64,
        "every refused write is counted"
    );
    assert!(
        fan_out.pacer().rate() <= 600.0,
        "{}",
        fan_out.pacer().rate()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_the_write_rate_ends_unfinished_at_the_deadline_with_the_work_done_counted() {
    let store = FakeStore {
        batch: 1,
        ..FakeStore::with_records(day(200, 0))
    };
    let fan_out = fan_out(store, 8).with_max_write_rate(Some(20));
    let control = Arc::new(InvocationControl::new(
        Some(std::time::Instant::now() + std::time::Duration::from_millis(1500)),
        std::time::Duration::from_secs(1),
    ));
    let error = fan_out
        .stamp_partition(&plan(1, false), &control)
        .await
        .unwrap_err();
    let FanOutError::Stopped {
        reason: StopReason::DeadlineNear,
        report,
    } = error
    else {
        panic!("not stopped by the deadline: {error:?}");
    };
    assert!((1..200).contains(&report.written), "{report:?}");
}

/// Where a fan-out's checkpoints go, in a test: every save, in order.
#[derive(Default)]
struct SavedMarks {
    resume: Option<IndexPosition>,
    saves: std::sync::Mutex<Vec<(IndexPosition, RunCounts, bool)>>,
}

impl Checkpoints for SavedMarks {
    fn resume_at(&self) -> Option<&IndexPosition> {
        self.resume.as_ref()
    }

    fn save(&self, position: IndexPosition, done: RunCounts, resumed: bool) -> BoxFuture<'_, ()> {
        self.saves.lock().unwrap().push((position, done, resumed));
        Box::pin(async {})
    }
}

fn at(position: &IndexPosition) -> usize {
    match &position.key["at"] {
        KeyPart::N(n) => n.parse().unwrap(),
        other => panic!("{other:?}"),
    }
}

fn resumable(records: Vec<(String, FakeRecord)>, page_size: usize) -> FakeStore {
    let mut store = FakeStore::with_records(records);
    store.resumable = true;
    store.page_size = page_size;
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_fan_out_saves_its_low_water_mark_and_the_next_delivery_resumes_after_it() {
    let mut store = resumable(day(300, 0), 10);
    store.fail_on = Some("cb-0150".into());
    let first = fan_out(store, 4);
    let saved = SavedMarks::default();
    let failed = first
        .stamp_tracked(&plan(1, false), &unbounded(), Some(&saved))
        .await;
    assert!(
        matches!(failed, Err(FanOutError::Store { .. })),
        "{failed:?}"
    );
    let (position, done, resumed) = saved.saves.lock().unwrap().last().cloned().expect("saved");
    let mark = at(&position);
    assert!(!resumed);
    // Every record before the mark is done, and counted; the failed key's
    // page is not before it.
    assert!((1..=150).contains(&mark), "mark {mark}");
    assert_eq!(done.selected(), mark as u64);
    for i in 0..mark {
        assert_eq!(first.store().execution_of(&format!("cb-{i:04}")), Some(1));
    }

    // The next delivery (the record fixed) starts after the mark.
    let records = first.store().records.lock().unwrap().clone();
    let second = fan_out(resumable(records.into_iter().collect(), 10), 4);
    let resume = SavedMarks {
        resume: Some(position),
        ..SavedMarks::default()
    };
    let report = second
        .stamp_tracked(&plan(1, false), &unbounded(), Some(&resume))
        .await
        .unwrap();
    assert!(report.resumed);
    assert_eq!(report.examined(), (300 - mark) as u64);
    assert_eq!(
        second.store().pages_read.load(Ordering::SeqCst),
        (300 - mark).div_ceil(10),
        "only the pages after the mark are read"
    );
    for i in 0..300 {
        assert_eq!(second.store().execution_of(&format!("cb-{i:04}")), Some(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_only_move_forward_and_count_exactly_the_pages_before_them() {
    let fan_out =
        fan_out(resumable(day(95, 0), 10), 8).with_progress_log(std::time::Duration::from_nanos(1));
    let saved = SavedMarks::default();
    fan_out
        .stamp_tracked(&plan(1, false), &unbounded(), Some(&saved))
        .await
        .unwrap();
    let saves = saved.saves.lock().unwrap();
    assert!(!saves.is_empty(), "saved while it ran");
    let mut last = 0;
    for (position, done, _) in saves.iter() {
        let mark = at(position);
        assert!(
            mark > last && mark.is_multiple_of(10),
            "{mark} after {last}"
        );
        assert_eq!(done.selected(), mark as u64);
        last = mark;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_the_store_refuses_falls_back_to_a_full_pass() {
    let store = resumable(day(30, 0), 10);
    store.refuse_start.store(true, Ordering::SeqCst);
    let fan_out = fan_out(store, 4);
    let resume = SavedMarks {
        resume: fan_out.store().position(&20),
        ..SavedMarks::default()
    };
    let report = fan_out
        .stamp_tracked(&plan(1, false), &unbounded(), Some(&resume))
        .await
        .unwrap();
    assert!(!report.resumed);
    assert_eq!(report.written, 30);
    assert_eq!(fan_out.store().pages_read.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_key_streams_neither_resume_nor_save_checkpoints() {
    let mut store = resumable(day(40, 0), 5);
    store.streams = 4;
    let fan_out = fan_out(store, 8).with_progress_log(std::time::Duration::from_nanos(1));
    let saved = SavedMarks {
        resume: Some(IndexPosition {
            created_at: "00000020".into(),
            key: std::collections::BTreeMap::from([("at".into(), KeyPart::N("20".into()))]),
        }),
        ..SavedMarks::default()
    };
    let report = fan_out
        .stamp_tracked(&plan(1, false), &unbounded(), Some(&saved))
        .await
        .unwrap();
    assert_eq!((report.written, report.resumed), (40, false));
    assert!(saved.saves.lock().unwrap().is_empty());
}
