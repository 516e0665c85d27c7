//! The fan-out: one message's selection read page by page while the updates of
//! earlier pages are already in flight, under one limiter shared by the whole
//! invocation. Memory stays bounded whatever the partition size: at most a few
//! pages of keys and `MAX_CONCURRENCY` updates exist at once.
//!
//! `paging` reads the keys, `requests` runs one request with its retries,
//! `running` keeps the requests in flight and judges how the fan-out ended,
//! `progress` counts and reports; this module starts and joins them.

mod checkpoint;
pub(crate) mod events;
mod paging;
mod progress;
mod requests;
mod running;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::field::Empty;
use tracing::{Instrument, Span, info, info_span, warn};

use crate::domain::failure::{StopReason, StoreError};
use crate::domain::run::IndexPosition;
use crate::domain::stamp::{StampPlan, StampReport};
use crate::pacing::WritePacer;
use crate::ports::{ChargebackStore, Checkpoints};
use crate::retry::events::RequestsHeldBack;
use crate::retry::{AdaptiveLimiter, InvocationControl, RetryPolicy};
use crate::telemetry::xray;
use checkpoint::PageNumber;
use paging::{KeysRead, Pages, StartAt};
pub(crate) use progress::Expected;
pub use progress::Progress;
use requests::Request;
use running::{Running, Unfinished};

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

/// What a fan-out knows of its checkpoints while it runs.
struct Marking<'a> {
    checkpoints: Option<&'a dyn Checkpoints>,
    /// The fan-out started after the run's checkpoint (and the store took it).
    resumed: bool,
    refused: Arc<AtomicBool>,
    last_saved: Instant,
}

impl Marking<'_> {
    fn resumed(&self) -> bool {
        self.resumed && !self.refused.load(Ordering::Relaxed)
    }
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

    /// How many records a fan-out for an event of `records_processed`
    /// expects, and on what basis.
    pub fn expected(&self, records_processed: u64) -> Expected {
        self.progress.expected(records_processed)
    }

    /// Records per second of the last fan-out that completed in this process.
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
        self.stamp_tracked(plan, control, None).await
    }

    /// [`stamp_partition`](Self::stamp_partition) for a run of the ledger:
    /// resumed after its checkpoint, saving new ones when it stops early and
    /// at most once per progress-log interval while it runs.
    pub async fn stamp_tracked(
        &self,
        plan: &StampPlan,
        control: &Arc<InvocationControl>,
        checkpoints: Option<&dyn Checkpoints>,
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
        let work = self.stamp_in_span(plan, control, &live, checkpoints);
        let result = match self.progress_log {
            Some(interval) => {
                let expected = self.progress.expected(plan.values.records_in_consolidation);
                progress::log_progress_while(work, interval, expected, &live, &self.pacer)
                    .instrument(span.clone())
                    .await
            }
            None => work.instrument(span.clone()).await,
        };
        // What the DEBUG line budget held back, so the totals are complete.
        RequestsHeldBack::emit();
        self.limiter.log_held_back_changes();
        self.pacer.log_held_back_cuts();
        progress::log_throttling(&live, &self.pacer);
        record_in_span(&span, &live, &result);
        // Judged on whole fan-outs of some size only: a tiny one says little.
        let examined = live.examined();
        if result.is_ok() && examined >= 1000 {
            let rate = examined as f64 / started.elapsed().as_secs_f64().max(1e-3);
            self.last_rate.store(rate.to_bits(), Ordering::Relaxed);
        }
        result
    }

    /// The fan-out's steps: prepare, read the pages while their keys are
    /// stamped, wait for what is in flight, then judge and count.
    async fn stamp_in_span(
        &self,
        plan: &StampPlan,
        control: &Arc<InvocationControl>,
        live: &Arc<Progress>,
        checkpoints: Option<&dyn Checkpoints>,
    ) -> Result<StampReport, FanOutError> {
        if let Some(reason) = control.stop_reason() {
            return Err(FanOutError::Stopped {
                reason,
                report: StampReport::default(),
            });
        }
        let (stamp, streams) = self.prepare(plan, control).await?;
        let start = self.start_at(checkpoints.and_then(|c| c.resume_at()), streams);
        let mut marking = Marking {
            // A mark over pages of several interleaved streams (a parallel
            // scan) would say nothing: those fan-outs save none.
            checkpoints: checkpoints.filter(|_| streams == 1),
            resumed: start.is_some(),
            refused: Arc::new(AtomicBool::new(false)),
            last_saved: Instant::now(),
        };
        let start = start.map(|cursor| StartAt {
            cursor,
            refused: Arc::clone(&marking.refused),
        });
        let (pages, mut readers) = paging::start_key_readers(
            &self.store,
            &plan.selection,
            streams,
            self.policy,
            control,
            start,
        );
        let mut running = Running::default();
        let halted = self
            .stamp_pages(pages, &stamp, control, live, &mut running, &mut marking)
            .await;
        if running.failure.is_some() || halted.is_some() {
            readers.abort_all();
            while let Some(joined) = running.updates.try_join_next() {
                running.tally(joined, &self.progress, live);
            }
            // The mark as of the stop is already a valid checkpoint: saved
            // now, before waiting for the requests in flight, which can
            // outlast the deadline (each attempt may take seconds).
            self.save_checkpoint(&mut running, &mut marking, control, true)
                .await;
        }
        running.wait_for_all(&self.progress, live).await;
        running.report.throttled_writes = live.throttled.load(Ordering::Relaxed);
        running.report.resumed = marking.resumed();
        if let Some(error) = paging::join_key_readers(readers).await {
            running.failure.get_or_insert(error);
        }
        if let Some(unfinished) = Unfinished::judge(
            running.failure.take(),
            halted.or(running.stopped.take()),
            control,
        ) {
            // How far it got, for the next delivery to resume from.
            self.save_checkpoint(&mut running, &mut marking, control, true)
                .await;
            return Err(unfinished.with_report(running.report));
        }
        let mut report = running.report;
        if plan.count_left_behind {
            report.left_behind = self.count_left_behind(plan, control).await;
        }
        Ok(report)
    }

    /// The cursor a resumed run starts at: its checkpoint, when the store
    /// reads the selection as one stream it can resume (not a scan).
    fn start_at(&self, resume_at: Option<&IndexPosition>, streams: u32) -> Option<S::Cursor> {
        let position = resume_at?;
        let cursor = (streams == 1)
            .then(|| self.store.cursor_at(position))
            .flatten();
        if cursor.is_none() {
            info!(
                checkpoint_created_at = %position.created_at,
                "the run's checkpoint cannot be used by this table's reads (no date index); \
                 reading the day from its start"
            );
        }
        cursor
    }

    /// Saves the fan-out's mark if it moved: `now` when it stops early,
    /// else once the progress-log interval has passed since the last save.
    /// Bounded by the time the invocation has left.
    async fn save_checkpoint(
        &self,
        running: &mut Running<S::Cursor>,
        marking: &mut Marking<'_>,
        control: &InvocationControl,
        now: bool,
    ) {
        let Some(checkpoints) = marking.checkpoints else {
            return;
        };
        let due = now
            || self
                .progress_log
                .is_some_and(|interval| marking.last_saved.elapsed() >= interval);
        if !due || !running.marks.take_moved() {
            return;
        }
        let Some((cursor, done)) = running.marks.mark() else {
            return;
        };
        let Some(position) = self.store.position(cursor) else {
            return;
        };
        marking.last_saved = Instant::now();
        let save = checkpoints.save(position, done, marking.resumed());
        match control.time_left() {
            Some(left) => {
                if tokio::time::timeout(left, save).await.is_err() {
                    warn!("the checkpoint was not saved before the invocation's deadline");
                }
            }
            None => save.await,
        }
    }

    /// What every request needs: the stamp prepared for the store, and the
    /// number of key streams to read.
    async fn prepare(
        &self,
        plan: &StampPlan,
        control: &InvocationControl,
    ) -> Result<(Arc<S::PreparedStamp>, u32), FanOutError> {
        let failed = |error| FanOutError::Store {
            error,
            report: StampReport::default(),
        };
        let stamp = self
            .policy
            .run(None, control, || self.store.prepare_stamp(&plan.values))
            .await
            .map_err(failed)?;
        let streams = self
            .policy
            .run(None, control, || self.store.key_streams())
            .await
            .map_err(failed)?;
        Ok((Arc::new(stamp), streams))
    }

    /// Sends the keys of each page as it comes, in requests of `batch` (one
    /// per `UpdateItem`, up to 25 per `BatchExecuteStatement`) that never
    /// mix pages, each holding one limiter permit, until the pages end or no
    /// request may start. Returns why new work stopped, if it did; a failure
    /// is in `running`.
    async fn stamp_pages(
        &self,
        mut pages: Pages<S>,
        stamp: &Arc<S::PreparedStamp>,
        control: &Arc<InvocationControl>,
        live: &Arc<Progress>,
        running: &mut Running<S::Cursor>,
        marking: &mut Marking<'_>,
    ) -> Option<StopReason> {
        let batch = if self.dry_run {
            1
        } else {
            self.store.batch_limit().max(1)
        };
        while let Some(page) = pages.recv().await {
            let KeysRead {
                keys,
                already_applied,
                next,
            } = match page {
                Ok(page) => page,
                Err(error) => {
                    running.failure.get_or_insert(error);
                    return None;
                }
            };
            running.report.already_applied += already_applied;
            running.report.already_applied_on_read += already_applied;
            self.progress.record_read(already_applied);
            live.record_read(already_applied);
            let page = running.marks.page_read(already_applied, next);
            let mut keys = keys.into_iter().peekable();
            while keys.peek().is_some() {
                let request: Vec<S::Key> = keys.by_ref().take(batch).collect();
                if let Err(halt) = self
                    .launch(request, page, stamp, control, live, running)
                    .await
                {
                    return halt;
                }
            }
            running.marks.page_dispatched(page);
            self.save_checkpoint(running, marking, control, false).await;
        }
        None
    }

    /// Starts one request's worth of updates (keys of `page`) once the
    /// limiter allows. `Err` says no more should start: `Some` reason to
    /// stop, or `None` when a request failed for good (`running.failure`
    /// says which).
    async fn launch(
        &self,
        keys: Vec<S::Key>,
        page: PageNumber,
        stamp: &Arc<S::PreparedStamp>,
        control: &Arc<InvocationControl>,
        live: &Arc<Progress>,
        running: &mut Running<S::Cursor>,
    ) -> Result<(), Option<StopReason>> {
        let permit = match self.limiter.acquire().await {
            Ok(permit) => permit,
            Err(error) => {
                running.failure.get_or_insert(error);
                return Err(None);
            }
        };
        while let Some(joined) = running.updates.try_join_next() {
            running.tally(joined, &self.progress, live);
        }
        if running.failure.is_some() {
            return Err(None);
        }
        if let Some(reason) = control.stop_reason().or_else(|| running.stopped.clone()) {
            return Err(Some(reason));
        }
        running.marks.request_started(page);
        let store = Arc::clone(&self.store);
        let stamp = Arc::clone(stamp);
        let limiter = Arc::clone(&self.limiter);
        let pacer = Arc::clone(&self.pacer);
        let control = Arc::clone(control);
        let counts = Arc::clone(live);
        let (policy, dry_run) = (self.policy, self.dry_run);
        running.updates.spawn(async move {
            let request = Request {
                store: &*store,
                stamp: &stamp,
                dry_run,
                counts: &counts,
                policy,
                limiter: &limiter,
                pacer: &pacer,
                control: &control,
            };
            let result = request.run_with_retries(keys).await;
            drop(permit);
            (page, result)
        });
        Ok(())
    }

    /// The records created after the cutoff, counted by the day's last
    /// execution. Every record is stamped: a failed count must not undo that.
    async fn count_left_behind(
        &self,
        plan: &StampPlan,
        control: &InvocationControl,
    ) -> Option<u64> {
        let selection = &plan.selection;
        let counted = self
            .policy
            .run(None, control, || {
                self.store
                    .count_created_from(selection.partition_date, &selection.created_before)
            })
            .await;
        match counted {
            Ok(left) => Some(left),
            Err(problem) => {
                warn!(
                    error = %problem,
                    "could not count the records created after the cutoff; the day is stamped"
                );
                None
            }
        }
    }
}

/// The fan-out's subsegment gets its counts and, when it failed, its failure.
fn record_in_span(span: &Span, live: &Progress, result: &Result<StampReport, FanOutError>) {
    for (field, count) in [
        ("written", &live.written),
        ("already_applied", &live.already_applied),
        ("failed_attempts", &live.failed_attempts),
        ("throttled", &live.throttled),
    ] {
        span.record(field, xray::number(count.load(Ordering::Relaxed)));
    }
    if let Err(FanOutError::Store { error, .. }) = result {
        span.record("error_kind", error.class.kind());
        xray::record_failure(span, &error.to_string());
    }
}

#[cfg(test)]
pub(crate) mod fake_store;
#[cfg(test)]
mod tests;
