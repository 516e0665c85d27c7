//! What a fan-out has done so far: the counts of records examined and of
//! failed and throttled attempts, the progress line logged while it runs, and
//! the throttling summary said when it ends.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::info;

use super::events::WritesThrottled;
use crate::domain::stamp::StampResult;
use crate::pacing::WritePacer;

/// Counters of every record examined by this process, for progress display.
#[derive(Debug, Default)]
pub struct Progress {
    pub written: AtomicU64,
    pub already_applied: AtomicU64,
    /// Update attempts that failed (and were retried, or ended the fan-out).
    pub failed_attempts: AtomicU64,
    /// Writes DynamoDB refused for capacity (each retried): the same count
    /// as the `ThrottledWrites` metric, from the same [`WritesThrottled`].
    pub throttled: AtomicU64,
    /// Of those, how many per reason DynamoDB gave ("unknown": none given).
    throttled_by_reason: Mutex<BTreeMap<String, u64>>,
    /// The selection's size when the caller knows it (the demo, which seeded
    /// the day); 0: unknown, and progress is judged against the event's
    /// `records_processed`.
    known_selection: AtomicU64,
}

/// What a progress estimate is measured against, named in every line that
/// gives one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub records: u64,
    pub basis: &'static str,
}

impl Progress {
    /// Tells the progress log how many records the selection holds, so its
    /// estimate is measured against them instead of the event's count.
    pub fn expect_selection_of(&self, records: u64) {
        self.known_selection.store(records, Ordering::Relaxed);
    }

    pub(super) fn expected(&self, records_processed: u64) -> Expected {
        match self.known_selection.load(Ordering::Relaxed) {
            0 => Expected {
                records: records_processed,
                basis: "records_processed of the event",
            },
            records => Expected {
                records,
                basis: "records known to be selected",
            },
        }
    }

    pub fn examined(&self) -> u64 {
        self.written.load(Ordering::Relaxed) + self.already_applied.load(Ordering::Relaxed)
    }

    /// One failed attempt: a whole request's, or one statement's of a batch.
    pub(super) fn record_failed_attempt(&self) {
        self.failed_attempts.fetch_add(1, Ordering::Relaxed);
    }

    /// One throttled answer's writes, by its reason.
    pub(super) fn record_throttled(&self, throttled: &WritesThrottled) {
        let writes = throttled.writes;
        self.throttled.fetch_add(writes, Ordering::Relaxed);
        let reason = throttled.reason_or_unknown();
        let mut by_reason = self
            .throttled_by_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match by_reason.get_mut(reason) {
            Some(count) => *count += writes,
            None => {
                by_reason.insert(reason.to_owned(), writes);
            }
        }
    }

    /// Throttled writes per reason, as `reason=count` words (`unknown`:
    /// DynamoDB gave no reason, as for a statement of a batch).
    pub fn throttled_by_reason(&self) -> String {
        self.throttled_by_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(reason, count)| format!("{reason}={count}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub(super) fn record_read(&self, already_applied: u64) {
        self.already_applied
            .fetch_add(already_applied, Ordering::Relaxed);
    }

    pub(super) fn record(&self, result: StampResult) {
        match result {
            StampResult::Written => self.written.fetch_add(1, Ordering::Relaxed),
            StampResult::AlreadyApplied | StampResult::Missing => {
                self.already_applied.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// Runs `work`, logging its progress at INFO every `interval` meanwhile. In
/// the same task, so the lines carry the fan-out's span and nothing outlives
/// it (a span still open when the response is posted would never be sent).
pub(super) async fn log_progress_while<T>(
    work: impl Future<Output = T>,
    interval: Duration,
    expected: Expected,
    counts: &Progress,
    pacer: &WritePacer,
) -> T {
    let started = Instant::now();
    let mut ticks = tokio::time::interval_at((started + interval).into(), interval);
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = ticks.tick() => log_progress(started, expected, counts, pacer),
        }
    }
}

fn log_progress(started: Instant, expected: Expected, counts: &Progress, pacer: &WritePacer) {
    let done = counts.examined();
    let seconds = started.elapsed().as_secs_f64();
    let rate = done as f64 / seconds.max(1e-3);
    let Expected { records, basis } = expected;
    // An estimate only while the basis still holds: the event's count is the
    // consolidated output, and records created since its run are stamped too.
    let left = records.checked_sub(done).filter(|left| *left > 0);
    let eta_seconds = left
        .filter(|_| rate >= 1.0)
        .map(|left| (left as f64 / rate).round() as u64);
    let message = match left {
        Some(_) => format!(
            "fan-out progress: {done} records, {rate:.0}/s; about {records} expected ({basis})"
        ),
        None => format!(
            "fan-out progress: {done} records, {rate:.0}/s; past the {records} expected ({basis}), no estimate"
        ),
    };
    info!(
        stamped = done,
        written = counts.written.load(Ordering::Relaxed),
        already_applied = counts.already_applied.load(Ordering::Relaxed),
        expected_records = records,
        expected_basis = basis,
        records_per_second = rate.round() as u64,
        paced_writes_per_second = pacer.rate().round() as u64,
        throttled_writes = counts.throttled.load(Ordering::Relaxed),
        eta_seconds,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "{message}"
    );
}

/// Says at INFO, when a fan-out ends, how many of its writes were throttled
/// and what the pacing made of it; nothing when none was.
pub(super) fn log_throttling(counts: &Progress, pacer: &WritePacer) {
    let throttled = counts.throttled.load(Ordering::Relaxed);
    if throttled > 0 {
        info!(
            throttled_writes = throttled,
            throttled_by_reason = counts.throttled_by_reason(),
            paced_writes_per_second = pacer.rate().round() as u64,
            lowest_writes_per_second = pacer.lowest().map(|r| r.round() as u64),
            max_write_rate = pacer.ceiling(),
            "writes paced to the table's capacity: {throttled} throttled and retried"
        );
    }
}
