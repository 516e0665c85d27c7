//! The fan-out: one message's selection read page by page while the updates of
//! earlier pages are already in flight, under one limiter shared by the whole
//! invocation. Memory stays bounded whatever the partition size: at most a few
//! pages of keys and `MAX_CONCURRENCY` updates exist at once.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::field::Empty;
use tracing::{Instrument, Span, info, info_span, warn};

use crate::domain::failure::{ErrorClass, StopReason, StoreError};
use crate::domain::stamp::{KeySelection, StampPlan, StampReport, StampResult};
use crate::pacing::WritePacer;
use crate::ports::ChargebackStore;
use crate::retry::{AdaptiveLimiter, Decision, InvocationControl, RetryPolicy};
use crate::telemetry::events::{RequestRetried, RequestsHeldBack};
use crate::telemetry::xray;

/// Pages read ahead of the updates, per key stream. Two keep the updates fed
/// while the next page is fetched, without holding many keys in memory.
const PAGES_AHEAD_PER_STREAM: usize = 2;

/// Counters of every record examined by this process, for progress display.
#[derive(Debug, Default)]
pub struct Progress {
    pub written: AtomicU64,
    pub already_applied: AtomicU64,
    /// Update attempts that failed (and were retried, or ended the fan-out).
    pub failed_attempts: AtomicU64,
    /// Writes DynamoDB refused for capacity (each retried).
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

    fn expected(&self, records_processed: u64) -> Expected {
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

    fn record_failed_attempt(&self, error: &StoreError, writes: u64) {
        self.failed_attempts.fetch_add(1, Ordering::Relaxed);
        if error.class == ErrorClass::Throttled {
            self.throttled.fetch_add(writes, Ordering::Relaxed);
            let reason = error.throttling_reason.as_deref().unwrap_or("unknown");
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

    fn record_read(&self, already_applied: u64) {
        self.already_applied
            .fetch_add(already_applied, Ordering::Relaxed);
    }

    fn record(&self, result: StampResult) {
        match result {
            StampResult::Written => self.written.fetch_add(1, Ordering::Relaxed),
            StampResult::AlreadyApplied | StampResult::Missing => {
                self.already_applied.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// Why a message's fan-out did not complete.
#[derive(Debug, Clone)]
pub enum FanOutError {
    /// A store call failed for good (after our retry policy where it
    /// applies); `report` is what was done before.
    Store {
        error: StoreError,
        report: StampReport,
    },
    /// New work stopped (deadline near, or a setup failure elsewhere in the
    /// invocation) before every record was examined; `report` is what was done.
    Stopped {
        reason: StopReason,
        report: StampReport,
    },
}

/// Applies stamp plans to a store.
pub struct FanOut<S> {
    store: Arc<S>,
    limiter: Arc<AdaptiveLimiter>,
    pacer: Arc<WritePacer>,
    policy: RetryPolicy,
    progress: Arc<Progress>,
    /// How often a fan-out logs its progress; `None`: never.
    progress_log: Option<Duration>,
    /// Records per second of the last completed fan-out (f64 bits; 0: none yet).
    last_rate: AtomicU64,
    /// Check each record instead of writing it (`backfill --dry-run`).
    dry_run: bool,
}

impl<S: ChargebackStore> FanOut<S> {
    /// `max_concurrency` bounds the updates in flight across every message of
    /// the process, whichever partition they belong to; failing or slow
    /// requests lower it. Writes are paced by rate (see [`crate::pacing`]).
    pub fn new(store: Arc<S>, max_concurrency: usize, progress: Arc<Progress>) -> Self {
        Self {
            store,
            limiter: AdaptiveLimiter::new(max_concurrency),
            pacer: Arc::new(WritePacer::new(None)),
            policy: RetryPolicy::default(),
            progress,
            progress_log: None,
            last_rate: AtomicU64::new(0),
            dry_run: false,
        }
    }

    /// Records per second of the last fan-out that completed in this process.
    /// How many records a fan-out for an event of `records_processed`
    /// expects, and on what basis.
    pub fn expected(&self, records_processed: u64) -> Expected {
        self.progress.expected(records_processed)
    }

    pub fn last_rate(&self) -> Option<f64> {
        let rate = f64::from_bits(self.last_rate.load(Ordering::Relaxed));
        (rate > 0.0).then_some(rate)
    }

    /// Logs each fan-out's progress every `interval` while it runs.
    pub fn with_progress_log(mut self, interval: Duration) -> Self {
        self.progress_log = Some(interval);
        self
    }

    /// Counts what would change without writing: "written" then means "would be written".
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    /// `MAX_WRITE_RATE`: writes per second the pacing never exceeds.
    pub fn with_max_write_rate(mut self, ceiling: Option<u32>) -> Self {
        self.pacer = Arc::new(WritePacer::new(ceiling));
        self
    }

    pub fn pacer(&self) -> &Arc<WritePacer> {
        &self.pacer
    }

    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    pub fn limiter(&self) -> &Arc<AdaptiveLimiter> {
        &self.limiter
    }

    /// Stamps every record the plan selects. On the first request that fails
    /// for good, or when `control` says to stop, no new update starts; those in
    /// flight finish. Whatever was written stays written: the updates are
    /// conditional, so a retry of the same message skips it.
    pub async fn stamp_partition(
        &self,
        plan: &StampPlan,
        control: &Arc<InvocationControl>,
    ) -> Result<StampReport, FanOutError> {
        // One X-Ray subsegment per fan-out, never one per record: its counts
        // and, when it fails, the failure that stopped it.
        let span = info_span!(
            "fan-out",
            partition_date = %plan.selection.partition_date,
            execution_sequence = xray::number(plan.selection.execution_sequence),
            written = Empty,
            already_applied = Empty,
            failed_attempts = Empty,
            throttled = Empty,
            error_kind = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        );
        let live = Arc::new(Progress::default());
        let started = Instant::now();
        let work = self.stamp_in_span(plan, control, &live);
        let result = match self.progress_log {
            Some(interval) => {
                let expected = self.progress.expected(plan.values.records_in_consolidation);
                log_progress_while(work, interval, expected, &live, &self.pacer)
                    .instrument(span.clone())
                    .await
            }
            None => work.instrument(span.clone()).await,
        };
        // What the DEBUG line budget held back, so the totals are complete.
        RequestsHeldBack::emit();
        self.limiter.log_held_back_changes();
        self.pacer.log_held_back_cuts();
        let throttled = live.throttled.load(Ordering::Relaxed);
        if throttled > 0 {
            info!(
                throttled_writes = throttled,
                throttled_by_reason = live.throttled_by_reason(),
                paced_writes_per_second = self.pacer.rate().round() as u64,
                lowest_writes_per_second = self.pacer.lowest().map(|r| r.round() as u64),
                max_write_rate = self.pacer.ceiling(),
                "writes paced to the table's capacity: {throttled} throttled and retried"
            );
        }
        for (field, count) in [
            ("written", &live.written),
            ("already_applied", &live.already_applied),
            ("failed_attempts", &live.failed_attempts),
            ("throttled", &live.throttled),
        ] {
            span.record(field, xray::number(count.load(Ordering::Relaxed)));
        }
        // Judged on whole fan-outs of some size only: a tiny one says little.
        let examined = live.examined();
        if result.is_ok() && examined >= 1000 {
            let rate = examined as f64 / started.elapsed().as_secs_f64().max(1e-3);
            self.last_rate.store(rate.to_bits(), Ordering::Relaxed);
        }
        if let Err(FanOutError::Store { error, .. }) = &result {
            span.record("error_kind", error.class.kind());
            xray::record_failure(&span, &error.to_string());
        }
        result
    }

    async fn stamp_in_span(
        &self,
        plan: &StampPlan,
        control: &Arc<InvocationControl>,
        live: &Arc<Progress>,
    ) -> Result<StampReport, FanOutError> {
        let retried = |error| FanOutError::Store {
            error,
            report: StampReport::default(),
        };
        if let Some(reason) = control.stop_reason() {
            return Err(FanOutError::Stopped {
                reason,
                report: StampReport::default(),
            });
        }
        let stamp = Arc::new(
            self.policy
                .run(None, control, || self.store.prepare_stamp(&plan.values))
                .await
                .map_err(retried)?,
        );
        let streams = self
            .policy
            .run(None, control, || self.store.key_streams())
            .await
            .map_err(retried)?;
        let (pages_tx, mut pages) =
            mpsc::channel(PAGES_AHEAD_PER_STREAM * usize::try_from(streams).unwrap_or(1));
        let mut pagers = JoinSet::new();
        for stream in 0..streams {
            pagers.spawn(
                read_key_stream(
                    Arc::clone(&self.store),
                    plan.selection.clone(),
                    stream,
                    self.policy,
                    Arc::clone(control),
                    pages_tx.clone(),
                )
                .instrument(Span::current()),
            );
        }
        drop(pages_tx);

        // Keys go out in requests of `batch` (one per `UpdateItem`, up to 25
        // per `BatchExecuteStatement`), each holding one limiter permit.
        let batch = if self.dry_run {
            1
        } else {
            self.store.batch_limit().max(1)
        };
        let mut chunk = Vec::with_capacity(batch);
        let mut running = Running {
            updates: JoinSet::new(),
            report: StampReport::default(),
            failure: None,
            stopped: None,
        };
        let mut stopped = None;
        'pages: while let Some(page) = pages.recv().await {
            let (keys, already_applied) = match page {
                Ok(page) => page,
                Err(error) => {
                    running.failure = Some(error);
                    break;
                }
            };
            running.report.already_applied += already_applied;
            running.report.already_applied_on_read += already_applied;
            self.progress.record_read(already_applied);
            live.record_read(already_applied);
            for key in keys {
                chunk.push(key);
                if chunk.len() < batch {
                    continue;
                }
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(batch));
                if let Err(halt) = self.launch(full, &stamp, control, live, &mut running).await {
                    stopped = halt;
                    break 'pages;
                }
            }
        }
        drop(pages);
        // The last, partial request, unless the fan-out already halted.
        let halted = running.failure.is_some() || stopped.is_some();
        if !halted
            && !chunk.is_empty()
            && let Err(halt) = self
                .launch(chunk, &stamp, control, live, &mut running)
                .await
        {
            stopped = halt;
        }
        if running.failure.is_some() || stopped.is_some() {
            pagers.abort_all();
        }
        let Running {
            mut updates,
            mut report,
            mut failure,
            stopped: mut requests_stopped,
        } = running;
        while let Some(joined) = updates.join_next().await {
            self.tally(
                joined,
                &mut report,
                live,
                &mut failure,
                &mut requests_stopped,
            );
        }
        report.throttled_writes = live.throttled.load(Ordering::Relaxed);
        let stopped = stopped.or(requests_stopped);
        // A pager that ended abnormally closed its side of the channel like a
        // finished one: without this check its keys would be silently skipped.
        while let Some(joined) = pagers.join_next().await {
            if let Err(join_error) = joined
                && !join_error.is_cancelled()
            {
                failure.get_or_insert(StoreError::new(
                    ErrorClass::Transient,
                    "key read",
                    format!("a key reader ended abnormally: {join_error}"),
                ));
            }
        }
        if let Some(error) = failure {
            // A retryable failure cut short because new work stopped (the
            // deadline) is unfinished work, not a failure of the store.
            if error.class.severity() <= ErrorClass::Unreachable.severity()
                && let Some(reason) = control.stop_reason()
            {
                return Err(FanOutError::Stopped { reason, report });
            }
            return Err(FanOutError::Store { error, report });
        }
        if let Some(reason) = stopped {
            return Err(FanOutError::Stopped { reason, report });
        }
        if plan.count_left_behind {
            let selection = &plan.selection;
            let counted = self
                .policy
                .run(None, control, || {
                    self.store
                        .count_created_from(selection.partition_date, &selection.created_before)
                })
                .await;
            // Every record is stamped: a failed count must not undo that.
            match counted {
                Ok(left) => report.left_behind = Some(left),
                Err(problem) => warn!(
                    error = %problem,
                    "could not count the records created after the cutoff; the day is stamped"
                ),
            }
        }
        Ok(report)
    }

    /// Starts one request's worth of updates once the limiter allows.
    /// `Err` says no more should start: `Some` reason to stop, or `None`
    /// when a request failed for good (`running.failure` says which).
    async fn launch(
        &self,
        keys: Vec<S::Key>,
        stamp: &Arc<S::PreparedStamp>,
        control: &Arc<InvocationControl>,
        live: &Arc<Progress>,
        running: &mut Running,
    ) -> Result<(), Option<StopReason>> {
        let permit = match self.limiter.acquire().await {
            Ok(permit) => permit,
            Err(error) => {
                running.failure.get_or_insert(error);
                return Err(None);
            }
        };
        while let Some(joined) = running.updates.try_join_next() {
            self.tally(
                joined,
                &mut running.report,
                live,
                &mut running.failure,
                &mut running.stopped,
            );
        }
        if running.failure.is_some() {
            return Err(None);
        }
        if let Some(reason) = control.stop_reason().or_else(|| running.stopped.clone()) {
            return Err(Some(reason));
        }
        let store = Arc::clone(&self.store);
        let stamp = Arc::clone(stamp);
        let limiter = Arc::clone(&self.limiter);
        let pacer = Arc::clone(&self.pacer);
        let control = Arc::clone(control);
        let attempts = Arc::clone(live);
        let (policy, dry_run) = (self.policy, self.dry_run);
        running.updates.spawn(async move {
            let request = Request {
                store: &*store,
                stamp: &stamp,
                dry_run,
                attempts: &attempts,
                policy,
                limiter: &limiter,
                pacer: &pacer,
                control: &control,
            };
            let result = request.run_with_retries(keys).await;
            drop(permit);
            result
        });
        Ok(())
    }

    fn tally(
        &self,
        joined: Result<RequestDone, tokio::task::JoinError>,
        report: &mut StampReport,
        live: &Progress,
        failure: &mut Option<StoreError>,
        stopped: &mut Option<StopReason>,
    ) {
        match joined {
            Ok(RequestDone { results, end }) => {
                // Whatever was written counts, however the request ended.
                for result in results {
                    report.record(result);
                    self.progress.record(result);
                    live.record(result);
                }
                match end {
                    None => {}
                    Some(RequestEnd::Failed(error)) => {
                        failure.get_or_insert(error);
                    }
                    Some(RequestEnd::Stopped(reason)) => {
                        stopped.get_or_insert(reason);
                    }
                }
            }
            Err(join_error) => {
                failure.get_or_insert(StoreError::new(
                    ErrorClass::Transient,
                    "UpdateItem",
                    format!("update task ended abnormally: {join_error}"),
                ));
            }
        }
    }
}

/// The updates in flight for one fan-out, and what finished ones reported.
struct Running {
    updates: JoinSet<RequestDone>,
    report: StampReport,
    failure: Option<StoreError>,
    /// A request that stopped waiting for its turn (the deadline came).
    stopped: Option<StopReason>,
}

/// What one request did: its records' results, and why it ended early, if it did.
struct RequestDone {
    results: Vec<StampResult>,
    end: Option<RequestEnd>,
}

enum RequestEnd {
    /// A write failed for good.
    Failed(StoreError),
    /// New work stopped while some keys still waited for their turn or a retry.
    Stopped(StopReason),
}

/// One request's worth of keys to stamp (or, in a dry run, to check).
struct Request<'a, S: ChargebackStore> {
    store: &'a S,
    stamp: &'a S::PreparedStamp,
    dry_run: bool,
    attempts: &'a Progress,
    policy: RetryPolicy,
    limiter: &'a AdaptiveLimiter,
    pacer: &'a WritePacer,
    control: &'a InvocationControl,
}

/// What the store answered to one attempt of a request.
struct Answers {
    /// Writes the table took (written, or declined by their condition).
    admitted: u64,
    /// Writes refused for capacity.
    throttled: u64,
    /// The failure that decides what happens next, the worst if several.
    worst: Option<StoreError>,
}

impl<S: ChargebackStore> Request<'_, S> {
    /// Sends `keys`, each attempt paced by the invocation's write rate. After
    /// a partial failure only the keys whose statements failed are sent
    /// again. Throttled writes are retried for as long as the invocation
    /// makes progress (see [`WritePacer::stalled`]); other retryable
    /// failures by the retry policy; a key that failed for good fails the
    /// whole request, as a single update would.
    async fn run_with_retries(&self, keys: Vec<S::Key>) -> RequestDone {
        let mut pending = keys;
        let mut done = Vec::with_capacity(pending.len());
        let started = Instant::now();
        let (mut attempts, mut failed_attempts) = (0, 0);
        let end = loop {
            attempts += 1;
            let ticket = if self.dry_run {
                None
            } else {
                match self.pacer.admit(pending.len(), self.control).await {
                    Ok(ticket) => Some(ticket),
                    Err(reason) => break Some(RequestEnd::Stopped(reason)),
                }
            };
            let answers = self.attempt(&mut pending, &mut done).await;
            if let Some(ticket) = ticket {
                self.pacer
                    .on_answers(ticket, answers.admitted, answers.throttled);
            }
            if answers.throttled > 0 {
                crate::telemetry::metrics::throttled(answers.throttled);
            }
            let Some(error) = answers.worst else {
                self.limiter.on_success();
                if pending.is_empty() {
                    break None;
                }
                continue;
            };
            if error.class.is_congestion() {
                self.limiter.on_congestion();
            }
            // Paced writes wait out throttling while the invocation makes
            // progress; a dry run's reads are not paced and retry as reads do.
            let delay = if error.class == ErrorClass::Throttled && !self.dry_run {
                if self.pacer.stalled() {
                    break Some(RequestEnd::Failed(StoreError {
                        message: format!(
                            "{} (stalled: no write admitted for {} s)",
                            error.message,
                            crate::pacing::STALL_AFTER.as_secs()
                        ),
                        ..error
                    }));
                }
                // The pacing already slowed every write down: a short
                // jitter is enough, and a longer wait would hold a
                // concurrency permit idle.
                Some(self.policy.backoff(1, fastrand::f64()))
            } else {
                failed_attempts += 1;
                match self.policy.decide(
                    error.class,
                    failed_attempts,
                    started.elapsed(),
                    fastrand::f64(),
                ) {
                    Decision::RetryAfter(delay) => Some(delay),
                    Decision::GiveUp => None,
                }
            };
            let Some(delay) = delay else {
                break Some(RequestEnd::Failed(error.after_attempts(attempts)));
            };
            if let Some(reason) = self.control.stop_reason() {
                break Some(RequestEnd::Stopped(reason));
            }
            RequestRetried {
                error: &error,
                attempt: attempts,
                delay,
            }
            .emit();
            tokio::time::sleep(delay).await;
        };
        RequestDone { results: done, end }
    }

    /// Sends the `pending` keys once; leaves in `pending` those to send again.
    async fn attempt(&self, pending: &mut Vec<S::Key>, done: &mut Vec<StampResult>) -> Answers {
        let keys = std::mem::take(pending);
        let results = if self.dry_run {
            let mut results = Vec::with_capacity(keys.len());
            for key in &keys {
                results.push(self.store.check_stamp(key, self.stamp).await);
            }
            Ok(results)
        } else {
            self.store.stamp_batch(&keys, self.stamp).await
        };
        let results = match results {
            Ok(results) => results,
            Err(error) => {
                let writes = keys.len() as u64;
                self.attempts.record_failed_attempt(&error, writes);
                *pending = keys;
                let throttled = if error.class == ErrorClass::Throttled {
                    writes
                } else {
                    0
                };
                return Answers {
                    admitted: 0,
                    throttled,
                    worst: Some(error),
                };
            }
        };
        let mut answers = Answers {
            admitted: 0,
            throttled: 0,
            worst: None,
        };
        for (key, result) in keys.into_iter().zip(results) {
            match result {
                Ok(result) => {
                    answers.admitted += 1;
                    done.push(result);
                }
                Err(error) => {
                    self.attempts.record_failed_attempt(&error, 1);
                    if error.class == ErrorClass::Throttled {
                        answers.throttled += 1;
                    }
                    pending.push(key);
                    if answers
                        .worst
                        .as_ref()
                        .is_none_or(|w| error.class.severity() > w.class.severity())
                    {
                        answers.worst = Some(error);
                    }
                }
            }
        }
        answers
    }
}

/// Runs `work`, logging its progress at INFO every `interval` meanwhile. In
/// the same task, so the lines carry the fan-out's span and nothing outlives
/// it (a span still open when the response is posted would never be sent).
async fn log_progress_while<T>(
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

/// A page's keys to stamp, and how many records it showed already applied.
type KeysRead<K> = (Vec<K>, u64);

/// Reads one key stream to its end, or until the fan-out stops listening.
async fn read_key_stream<S: ChargebackStore>(
    store: Arc<S>,
    selection: KeySelection,
    stream: u32,
    policy: RetryPolicy,
    control: Arc<InvocationControl>,
    pages: mpsc::Sender<Result<KeysRead<S::Key>, StoreError>>,
) {
    let mut cursor: Option<S::Cursor> = None;
    loop {
        // One X-Ray subsegment per page read (retries included).
        let span = info_span!(
            "index page",
            stream,
            keys = Empty,
            already_applied = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        );
        let page = policy
            .run(None, &control, || {
                store.key_page(&selection, stream, cursor.clone())
            })
            .instrument(span.clone())
            .await;
        match &page {
            Ok(page) => {
                span.record("keys", xray::number(page.keys.len()));
                span.record("already_applied", xray::number(page.already_applied));
            }
            Err(error) => xray::record_failure(&span, &error.to_string()),
        }
        drop(span);
        match page {
            Ok(page) => {
                let worth_sending = !page.keys.is_empty() || page.already_applied > 0;
                if worth_sending
                    && pages
                        .send(Ok((page.keys, page.already_applied)))
                        .await
                        .is_err()
                {
                    return;
                }
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => return,
                }
            }
            Err(error) => {
                let _ = pages.send(Err(error)).await;
                return;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! An in-memory store behind the port, for unit tests of the core only.

    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::domain::event::PartitionDate;
    use crate::domain::stamp::StampValues;
    use crate::ports::KeyPage;

    #[derive(Debug, Clone)]
    pub struct FakeRecord {
        pub partition_date: String,
        pub created_at: String,
        pub execution: Option<u64>,
    }

    #[derive(Default)]
    pub struct FakeStore {
        pub records: Mutex<BTreeMap<String, FakeRecord>>,
        pub page_size: usize,
        pub streams: u32,
        /// Fail the update of this key.
        pub fail_on: Option<String>,
        /// Fail every update (to prove none is attempted).
        pub fail_on_any: std::sync::atomic::AtomicBool,
        /// Answer this many more updates with a throttling error.
        pub throttle_next: AtomicUsize,
        pub in_flight: AtomicUsize,
        pub max_in_flight: AtomicUsize,
        pub deleted_before_update: Vec<String>,
        /// Count stamped records on read instead of returning their keys.
        pub sees_execution: bool,
        /// Records per write request (1: one update each).
        pub batch: usize,
        /// Write requests, and the updates in them (retries included).
        pub requests: AtomicUsize,
        pub updates: AtomicUsize,
        /// Answer this many more updates with a transient error (a 500).
        pub fail_transient_next: AtomicUsize,
        /// Admit at most this many writes per second (a bucket holding one
        /// second of them), throttling the rest as DynamoDB does.
        pub capacity: Option<Mutex<Capacity>>,
        /// Writes refused by `capacity`.
        pub refused: AtomicUsize,
    }

    pub struct Capacity {
        pub per_second: f64,
        pub tokens: f64,
        pub at: std::time::Instant,
    }

    impl Capacity {
        pub fn new(per_second: f64) -> Mutex<Self> {
            Mutex::new(Self {
                per_second,
                tokens: per_second,
                at: std::time::Instant::now(),
            })
        }

        fn admit(&mut self) -> bool {
            let now = std::time::Instant::now();
            let elapsed = now.duration_since(self.at).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second);
            self.at = now;
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                true
            } else {
                false
            }
        }
    }

    impl FakeStore {
        pub fn with_records(records: impl IntoIterator<Item = (String, FakeRecord)>) -> Self {
            Self {
                records: Mutex::new(records.into_iter().collect()),
                page_size: 3,
                streams: 1,
                ..Self::default()
            }
        }

        pub fn execution_of(&self, id: &str) -> Option<u64> {
            self.records
                .lock()
                .unwrap()
                .get(id)
                .and_then(|r| r.execution)
        }
    }

    impl ChargebackStore for FakeStore {
        type Key = String;
        type Cursor = usize;
        type PreparedStamp = StampValues;

        async fn key_streams(&self) -> Result<u32, StoreError> {
            Ok(self.streams)
        }

        async fn key_page(
            &self,
            selection: &KeySelection,
            stream: u32,
            cursor: Option<usize>,
        ) -> Result<KeyPage<String, usize>, StoreError> {
            let date = selection.partition_date.to_string();
            let selected: Vec<String> = self
                .records
                .lock()
                .unwrap()
                .iter()
                .enumerate()
                .filter(|(i, _)| *i as u32 % self.streams == stream)
                .filter(|(_, (_, r))| {
                    r.partition_date == date
                        && r.created_at.as_str() < selection.created_before.as_str()
                })
                .map(|(_, (id, _))| id.clone())
                .collect();
            let start = cursor.unwrap_or(0);
            let end = (start + self.page_size).min(selected.len());
            let mut keys = selected[start..end].to_vec();
            let before = keys.len();
            if self.sees_execution {
                let records = self.records.lock().unwrap();
                keys.retain(|k| selection.needs_stamp(records[k].execution));
            }
            Ok(KeyPage {
                already_applied: (before - keys.len()) as u64,
                keys,
                next: (end < selected.len()).then_some(end),
            })
        }

        async fn prepare_stamp(&self, values: &StampValues) -> Result<StampValues, StoreError> {
            Ok(values.clone())
        }

        fn batch_limit(&self) -> usize {
            self.batch.max(1)
        }

        async fn stamp_batch(
            &self,
            keys: &[String],
            stamp: &StampValues,
        ) -> Result<Vec<Result<StampResult, StoreError>>, StoreError> {
            self.requests.fetch_add(1, Ordering::SeqCst);
            let mut results = Vec::with_capacity(keys.len());
            for key in keys {
                results.push(self.stamp(key, stamp).await);
            }
            Ok(results)
        }

        async fn stamp(
            &self,
            key: &String,
            stamp: &StampValues,
        ) -> Result<StampResult, StoreError> {
            self.updates.fetch_add(1, Ordering::SeqCst);
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::task::yield_now().await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if self
                .throttle_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(StoreError::new(
                    ErrorClass::Throttled,
                    "UpdateItem",
                    "slow down",
                ));
            }
            if let Some(capacity) = &self.capacity
                && !capacity.lock().unwrap().admit()
            {
                self.refused.fetch_add(1, Ordering::SeqCst);
                return Err(StoreError::new(
                    ErrorClass::Throttled,
                    "UpdateItem",
                    "ProvisionedThroughputExceededException",
                )
                .with_throttling_reason(Some("TableWriteProvisionedThroughputExceeded".into())));
            }
            if self
                .fail_transient_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(StoreError::new(
                    ErrorClass::Transient,
                    "UpdateItem",
                    "InternalServerError",
                ));
            }
            if self.fail_on.as_deref() == Some(key.as_str())
                || self.fail_on_any.load(Ordering::SeqCst)
            {
                return Err(StoreError::new(
                    ErrorClass::Permanent,
                    "UpdateItem",
                    "ValidationException",
                ));
            }
            if self.deleted_before_update.contains(key) {
                return Ok(StampResult::Missing);
            }
            let mut records = self.records.lock().unwrap();
            let Some(record) = records.get_mut(key) else {
                return Ok(StampResult::Missing);
            };
            if record
                .execution
                .is_some_and(|e| e >= stamp.execution_sequence)
            {
                return Ok(StampResult::AlreadyApplied);
            }
            record.execution = Some(stamp.execution_sequence);
            Ok(StampResult::Written)
        }

        async fn check_stamp(
            &self,
            key: &String,
            stamp: &StampValues,
        ) -> Result<StampResult, StoreError> {
            let records = self.records.lock().unwrap();
            Ok(match records.get(key) {
                None => StampResult::Missing,
                Some(r) if r.execution.is_some_and(|e| e >= stamp.execution_sequence) => {
                    StampResult::AlreadyApplied
                }
                Some(_) => StampResult::Written,
            })
        }

        async fn count_created_from(
            &self,
            date: PartitionDate,
            from: &str,
        ) -> Result<u64, StoreError> {
            let date = date.to_string();
            Ok(self
                .records
                .lock()
                .unwrap()
                .values()
                .filter(|r| r.partition_date == date && r.created_at.as_str() >= from)
                .count() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{Capacity, FakeRecord, FakeStore};
    use super::*;
    use crate::domain::event::PartitionDate;
    use crate::domain::stamp::StampValues;

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
    async fn waiting_for_the_write_rate_ends_unfinished_at_the_deadline_with_the_work_done_counted()
    {
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
}
