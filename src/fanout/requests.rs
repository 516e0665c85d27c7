//! One request's run: its keys sent through the write pacing, with the keys
//! that failed sent again until they are done, fail for good, or new work
//! stops.

use std::time::{Duration, Instant};

use super::events::WritesThrottled;
use super::progress::Progress;
use crate::domain::failure::{ErrorClass, StopReason, StoreError};
use crate::domain::stamp::StampResult;
use crate::pacing::{STALL_AFTER, WritePacer};
use crate::ports::ChargebackStore;
use crate::retry::events::RequestRetried;
use crate::retry::{AdaptiveLimiter, Decision, InvocationControl, RetryPolicy};

/// What one request did: its records' results, and why it ended early, if it did.
pub(super) struct RequestDone {
    pub(super) results: Vec<StampResult>,
    pub(super) end: Option<RequestEnd>,
}

pub(super) enum RequestEnd {
    /// A write failed for good.
    Failed(StoreError),
    /// New work stopped while some keys still waited for their turn or a retry.
    Stopped(StopReason),
}

/// One request's worth of keys to stamp (or, in a dry run, to check).
pub(super) struct Request<'a, S: ChargebackStore> {
    pub(super) store: &'a S,
    pub(super) stamp: &'a S::PreparedStamp,
    pub(super) dry_run: bool,
    /// The fan-out's own counts of failed and throttled attempts.
    pub(super) counts: &'a Progress,
    pub(super) policy: RetryPolicy,
    pub(super) limiter: &'a AdaptiveLimiter,
    pub(super) pacer: &'a WritePacer,
    pub(super) control: &'a InvocationControl,
}

/// What the store answered to one attempt of a request.
struct Answers {
    /// Writes the table took (written, or declined by their condition).
    admitted: u64,
    /// Writes refused for capacity.
    throttled: u64,
    /// The reason DynamoDB gave for refusing them: the first one's (one
    /// answer never mixes reasons: a refused request has one, the
    /// statements of a batch none).
    throttling_reason: Option<String>,
    /// The failure that decides what happens next, the worst if several.
    worst: Option<StoreError>,
}

impl Answers {
    fn throttled(&self) -> Option<WritesThrottled<'_>> {
        (self.throttled > 0).then_some(WritesThrottled {
            writes: self.throttled,
            reason: self.throttling_reason.as_deref(),
        })
    }

    fn count_throttled(&mut self, error: &StoreError, writes: u64) {
        if error.class != ErrorClass::Throttled {
            return;
        }
        if self.throttled == 0 {
            self.throttling_reason.clone_from(&error.throttling_reason);
        }
        self.throttled += writes;
    }
}

impl<S: ChargebackStore> Request<'_, S> {
    /// Sends `keys`, each attempt paced by the invocation's write rate. After
    /// a partial failure only the keys whose statements failed are sent
    /// again. Throttled writes are retried for as long as the invocation
    /// makes progress (see [`WritePacer::stalled`]); other retryable
    /// failures by the retry policy; a key that failed for good fails the
    /// whole request, as a single update would.
    pub(super) async fn run_with_retries(&self, keys: Vec<S::Key>) -> RequestDone {
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
            if let Some(throttled) = answers.throttled() {
                self.count_throttled(throttled);
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
            let paced_throttle = error.class == ErrorClass::Throttled && !self.dry_run;
            if paced_throttle && self.pacer.stalled() {
                break Some(RequestEnd::Failed(stalled(error)));
            }
            let delay = if paced_throttle {
                // The pacing already slowed every write down: a short
                // jitter is enough, and a longer wait would hold a
                // concurrency permit idle.
                Some(self.policy.backoff(1, fastrand::f64()))
            } else {
                failed_attempts += 1;
                self.policy_delay(&error, failed_attempts, started)
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

    /// The retry policy's wait after `failed_attempts` failures other than
    /// a paced throttle; `None`: give up.
    fn policy_delay(
        &self,
        error: &StoreError,
        failed_attempts: u32,
        started: Instant,
    ) -> Option<Duration> {
        match self.policy.decide(
            error.class,
            failed_attempts,
            started.elapsed(),
            fastrand::f64(),
        ) {
            Decision::RetryAfter(delay) => Some(delay),
            Decision::GiveUp => None,
        }
    }

    /// One throttled answer, counted once: the fan-out's progress and the
    /// metrics count the same writes, from the same event.
    fn count_throttled(&self, throttled: WritesThrottled) {
        self.counts.record_throttled(&throttled);
        throttled.emit();
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
        let mut answers = Answers {
            admitted: 0,
            throttled: 0,
            throttling_reason: None,
            worst: None,
        };
        let results = match results {
            Ok(results) => results,
            Err(error) => {
                self.counts.record_failed_attempt();
                answers.count_throttled(&error, keys.len() as u64);
                answers.worst = Some(error);
                *pending = keys;
                return answers;
            }
        };
        for (key, result) in keys.into_iter().zip(results) {
            match result {
                Ok(result) => {
                    answers.admitted += 1;
                    done.push(result);
                }
                Err(error) => {
                    self.counts.record_failed_attempt();
                    answers.count_throttled(&error, 1);
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

/// A throttled write that gives up: no write of the invocation was admitted
/// for [`STALL_AFTER`].
fn stalled(error: StoreError) -> StoreError {
    StoreError {
        message: format!(
            "{} (stalled: no write admitted for {} s)",
            error.message,
            STALL_AFTER.as_secs()
        ),
        ..error
    }
}
