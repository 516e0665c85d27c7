//! What happens when a store call fails: one retry policy (exponential
//! backoff with full jitter, bounded in attempts and time), an adaptive
//! limiter of requests in flight that backs off when requests fail or time
//! out, and the invocation's control that stops new work near the deadline
//! or after a setup failure. Throttled writes are paced, not limited here:
//! see [`crate::pacing`].

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::domain::failure::{ErrorClass, StopReason, StoreError};
use crate::telemetry::events::{
    ConcurrencyLimitChanged, LimitChange, LimitChangesHeldBack, REPEATED_LINE_INTERVAL,
    RequestRetried,
};
use crate::telemetry::line_budget::LineBudget;

/// Backoff and limits of our one retry policy (the SDK's own retries are off,
/// so that attempts are not multiplied by two layers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts for throttling and other transient errors, the first included.
    pub max_attempts: u32,
    /// Attempts while an endpoint is unreachable: brief, because nothing in
    /// this invocation can succeed if it stays so.
    pub unreachable_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// No retry starts after this much time has passed since the first attempt.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    /// DynamoDB's own guidance: start in the tens of milliseconds, double,
    /// cap at a couple of seconds.
    fn default() -> Self {
        Self {
            max_attempts: 8,
            unreachable_attempts: 3,
            base_delay: Duration::from_millis(25),
            max_delay: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(20),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    RetryAfter(Duration),
    GiveUp,
}

impl RetryPolicy {
    /// What to do after `attempts` failed attempts, the last with `class`,
    /// `elapsed` after the first began. `random` is uniform in [0, 1).
    pub fn decide(
        &self,
        class: ErrorClass,
        attempts: u32,
        elapsed: Duration,
        random: f64,
    ) -> Decision {
        let allowed = match class {
            ErrorClass::Throttled | ErrorClass::Transient => self.max_attempts,
            ErrorClass::Unreachable => self.unreachable_attempts,
            ErrorClass::Permanent | ErrorClass::Setup => 1,
        };
        if attempts >= allowed {
            return Decision::GiveUp;
        }
        let delay = self.backoff(attempts, random);
        if elapsed + delay > self.max_elapsed {
            Decision::GiveUp
        } else {
            Decision::RetryAfter(delay)
        }
    }

    /// The wait before the next attempt after `attempts` failed ones:
    /// exponential, capped, with full jitter (anywhere between zero and the
    /// ceiling). `random` is uniform in [0, 1).
    pub fn backoff(&self, attempts: u32, random: f64) -> Duration {
        let exponent = attempts.saturating_sub(1).min(20);
        let ceiling = self
            .base_delay
            .saturating_mul(1 << exponent)
            .min(self.max_delay);
        ceiling.mul_f64(random.clamp(0.0, 1.0))
    }

    /// Runs `call` until it succeeds, the policy gives up, or `control` says
    /// to stop. Failures that say the store is struggling (5xx, timeouts)
    /// are reported to `limiter`, success too.
    pub async fn run<T, F, Fut>(
        &self,
        limiter: Option<&AdaptiveLimiter>,
        control: &InvocationControl,
        mut call: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let error = match call().await {
                Ok(value) => {
                    if let Some(limiter) = limiter {
                        limiter.on_success();
                    }
                    return Ok(value);
                }
                Err(error) => error,
            };
            if error.class == ErrorClass::Throttled {
                crate::telemetry::metrics::throttled(0);
            }
            if let Some(limiter) = limiter
                && error.class.is_congestion()
            {
                limiter.on_congestion();
            }
            match self.decide(error.class, attempts, started.elapsed(), fastrand::f64()) {
                Decision::RetryAfter(delay) if control.stop_reason().is_none() => {
                    RequestRetried {
                        error: &error,
                        attempt: attempts,
                        delay,
                    }
                    .emit();
                    tokio::time::sleep(delay).await;
                }
                _ => return Err(error.after_attempts(attempts)),
            }
        }
    }
}

/// The invocation's bound on requests in flight, halved when requests fail
/// or time out (the store is struggling) and grown back by one per round of successes (additive increase,
/// multiplicative decrease), never above the configured maximum.
pub struct AdaptiveLimiter {
    semaphore: Arc<Semaphore>,
    max: usize,
    state: Mutex<LimitState>,
    /// DEBUG lines of its changes: a few per second, however many there are.
    change_lines: LineBudget,
}

struct LimitState {
    limit: usize,
    /// The lowest limit reached, for reports and tests.
    lowest: usize,
    /// Permits still in use that must be retired when released.
    debt: usize,
    successes: usize,
    last_decrease: Option<Instant>,
}

/// One burst of failures arrives together; it counts as one signal.
const DECREASE_INTERVAL: Duration = Duration::from_millis(100);
/// No increase this soon after a decrease: under sustained failures the
/// successes in between must not win back what the decrease took.
const INCREASE_COOLDOWN: Duration = Duration::from_millis(500);

impl AdaptiveLimiter {
    pub fn new(max: usize) -> Arc<Self> {
        let max = max.max(1);
        Arc::new(Self {
            semaphore: Arc::new(Semaphore::new(max)),
            max,
            state: Mutex::new(LimitState {
                limit: max,
                lowest: max,
                debt: 0,
                successes: 0,
                last_decrease: None,
            }),
            change_lines: LineBudget::new(REPEATED_LINE_INTERVAL),
        })
    }

    /// Waits for room for one more request.
    pub async fn acquire(self: &Arc<Self>) -> Result<LimiterPermit, StoreError> {
        let permit = Arc::clone(&self.semaphore)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::new(ErrorClass::Setup, "fan-out", "limiter closed"))?;
        Ok(LimiterPermit {
            permit: Some(permit),
            limiter: Arc::clone(self),
        })
    }

    pub fn current_limit(&self) -> usize {
        self.state.lock().map_or(self.max, |s| s.limit)
    }

    pub fn lowest_limit(&self) -> usize {
        self.state.lock().map_or(self.max, |s| s.lowest)
    }

    /// Requests failed or timed out: halve the limit (once per burst).
    pub fn on_congestion(&self) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if state
            .last_decrease
            .is_some_and(|at| at.elapsed() < DECREASE_INTERVAL)
        {
            return;
        }
        let old = state.limit;
        let new_limit = (state.limit / 2).max(1);
        let cut = state.limit - new_limit;
        state.limit = new_limit;
        state.lowest = state.lowest.min(new_limit);
        state.successes = 0;
        state.last_decrease = Some(Instant::now());
        let forgotten = self.semaphore.forget_permits(cut);
        state.debt += cut - forgotten;
        drop(state);
        if new_limit != old {
            self.changed(old, new_limit, LimitChange::Congested);
        }
    }

    pub fn on_success(&self) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if state.limit >= self.max
            || state
                .last_decrease
                .is_some_and(|at| at.elapsed() < INCREASE_COOLDOWN)
        {
            return;
        }
        state.successes += 1;
        if state.successes >= state.limit {
            state.successes = 0;
            state.limit += 1;
            if state.debt > 0 {
                state.debt -= 1;
            } else {
                self.semaphore.add_permits(1);
            }
            let new = state.limit;
            drop(state);
            self.changed(new - 1, new, LimitChange::Recovered);
        }
    }

    fn changed(&self, old: usize, new: usize, why: LimitChange) {
        ConcurrencyLimitChanged { old, new, why }.emit(&self.change_lines);
    }

    /// Says, at DEBUG, the changes whose lines were held back (at the end of
    /// a fan-out, so that the totals are complete).
    pub fn log_held_back_changes(&self) {
        LimitChangesHeldBack {
            budget: &self.change_lines,
            limit: self.current_limit(),
        }
        .emit();
    }
}

/// Room for one request; returned (or retired, after a decrease) when dropped.
pub struct LimiterPermit {
    permit: Option<OwnedSemaphorePermit>,
    limiter: Arc<AdaptiveLimiter>,
}

impl Drop for LimiterPermit {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        if let Ok(mut state) = self.limiter.state.lock()
            && state.debt > 0
        {
            state.debt -= 1;
            permit.forget();
        }
    }
}

/// One invocation's stop signals, shared by all its messages.
#[derive(Debug, Default)]
pub struct InvocationControl {
    deadline: Option<Instant>,
    stop_new_work_at: Option<Instant>,
    setup_failure: OnceLock<StoreError>,
}

impl InvocationControl {
    /// New work stops `margin` before `deadline` (none: no deadline, as in the CLI).
    pub fn new(deadline: Option<Instant>, margin: Duration) -> Self {
        Self {
            deadline,
            stop_new_work_at: deadline.map(|d| d.checked_sub(margin).unwrap_or(d)),
            setup_failure: OnceLock::new(),
        }
    }

    pub fn stop_reason(&self) -> Option<StopReason> {
        if let Some(why) = self.setup_failure.get() {
            return Some(StopReason::SetupFailure(why.clone()));
        }
        self.stop_new_work_at
            .is_some_and(|at| Instant::now() >= at)
            .then_some(StopReason::DeadlineNear)
    }

    /// Time until new work stops (the deadline less the margin), if there is a deadline.
    pub fn time_for_new_work(&self) -> Option<Duration> {
        self.stop_new_work_at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// Time until the invocation's deadline, if it has one.
    pub fn time_left(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Stops new work for the rest of the invocation; the first reason wins.
    pub fn halt_on_setup_failure(&self, why: StoreError) {
        let _ = self.setup_failure.set(why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_full_jitter_up_to_the_cap() {
        let policy = RetryPolicy::default();
        let at = |attempts, random| {
            policy.decide(ErrorClass::Throttled, attempts, Duration::ZERO, random)
        };
        assert_eq!(
            at(1, 0.5),
            Decision::RetryAfter(Duration::from_micros(12_500))
        );
        assert_eq!(at(3, 0.5), Decision::RetryAfter(Duration::from_millis(50)));
        assert_eq!(
            at(7, 1.0),
            Decision::RetryAfter(Duration::from_millis(1600))
        );
        let patient = RetryPolicy {
            max_attempts: 20,
            max_elapsed: Duration::from_secs(600),
            ..policy
        };
        assert_eq!(
            patient.decide(ErrorClass::Throttled, 12, Duration::ZERO, 1.0),
            Decision::RetryAfter(Duration::from_secs(2)),
            "capped"
        );
        assert_eq!(at(1, 0.0), Decision::RetryAfter(Duration::ZERO));
    }

    #[test]
    fn attempts_and_time_are_both_bounded() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.decide(ErrorClass::Transient, 8, Duration::ZERO, 0.5),
            Decision::GiveUp
        );
        assert_eq!(
            policy.decide(ErrorClass::Transient, 2, Duration::from_secs(20), 0.5),
            Decision::GiveUp
        );
        assert_eq!(
            policy.decide(ErrorClass::Unreachable, 3, Duration::ZERO, 0.5),
            Decision::GiveUp
        );
        assert!(matches!(
            policy.decide(ErrorClass::Unreachable, 2, Duration::ZERO, 0.5),
            Decision::RetryAfter(_)
        ));
    }

    #[test]
    fn permanent_and_setup_errors_are_never_retried() {
        let policy = RetryPolicy::default();
        for class in [ErrorClass::Permanent, ErrorClass::Setup] {
            assert_eq!(
                policy.decide(class, 1, Duration::ZERO, 0.5),
                Decision::GiveUp
            );
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            ..RetryPolicy::default()
        }
    }

    #[tokio::test]
    async fn run_retries_transient_errors_until_success() {
        let mut calls = 0;
        let result = fast()
            .run(None, &InvocationControl::default(), || {
                calls += 1;
                let outcome = if calls < 3 {
                    Err(StoreError::new(
                        ErrorClass::Throttled,
                        "UpdateItem",
                        "slow down",
                    ))
                } else {
                    Ok(calls)
                };
                async move { outcome }
            })
            .await;
        assert_eq!(result.unwrap(), 3);
    }

    #[tokio::test]
    async fn an_endpoint_that_stays_unreachable_becomes_a_setup_failure() {
        let mut calls = 0;
        let error = fast()
            .run(None, &InvocationControl::default(), || {
                calls += 1;
                async { Err::<(), _>(StoreError::new(ErrorClass::Unreachable, "Query", "refused")) }
            })
            .await
            .unwrap_err();
        assert_eq!((calls, error.class), (3, ErrorClass::Setup));
        assert!(
            error.message.contains("after 3 attempts"),
            "{}",
            error.message
        );
    }

    #[tokio::test]
    async fn a_stopped_invocation_retries_no_more() {
        let control = InvocationControl::default();
        control.halt_on_setup_failure(StoreError::new(ErrorClass::Setup, "Query", "table gone"));
        let mut calls = 0;
        let _ = fast()
            .run(None, &control, || {
                calls += 1;
                async { Err::<(), _>(StoreError::new(ErrorClass::Transient, "UpdateItem", "500")) }
            })
            .await;
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn congestion_halves_the_limit_and_successes_grow_it_back() {
        let limiter = AdaptiveLimiter::new(16);
        let held: Vec<_> = futures_permits(&limiter, 16).await;
        limiter.on_congestion();
        assert_eq!(limiter.current_limit(), 8);
        limiter.on_congestion();
        assert_eq!(limiter.current_limit(), 8, "one burst is one signal");
        drop(held);
        // After the decrease only 8 requests fit at once.
        let eight = futures_permits(&limiter, 8).await;
        assert!(limiter.semaphore.available_permits() == 0);
        drop(eight);
        for _ in 0..100 {
            limiter.on_success();
        }
        assert_eq!(
            limiter.current_limit(),
            8,
            "no increase right after a decrease"
        );
        tokio::time::sleep(INCREASE_COOLDOWN).await;
        for _ in 0..8 {
            limiter.on_success();
        }
        assert_eq!(limiter.current_limit(), 9);
        for _ in 0..200 {
            limiter.on_success();
        }
        assert_eq!(limiter.current_limit(), 16, "never above the maximum");
        assert_eq!(limiter.semaphore.available_permits(), 16);
    }

    async fn futures_permits(limiter: &Arc<AdaptiveLimiter>, n: usize) -> Vec<LimiterPermit> {
        let mut permits = Vec::new();
        for _ in 0..n {
            permits.push(limiter.acquire().await.unwrap());
        }
        permits
    }

    #[test]
    fn the_deadline_stops_new_work_a_margin_before_it() {
        let now = Instant::now();
        let far =
            InvocationControl::new(Some(now + Duration::from_secs(60)), Duration::from_secs(10));
        assert_eq!(far.stop_reason(), None);
        let near =
            InvocationControl::new(Some(now + Duration::from_secs(5)), Duration::from_secs(10));
        assert_eq!(near.stop_reason(), Some(StopReason::DeadlineNear));
        assert_eq!(
            InvocationControl::new(None, Duration::from_secs(10)).stop_reason(),
            None
        );
    }

    #[test]
    fn a_setup_failure_stops_everything_and_the_first_reason_wins() {
        let control = InvocationControl::default();
        let first = StoreError::new(ErrorClass::Setup, "Query", "ResourceNotFoundException");
        control.halt_on_setup_failure(first.clone());
        control.halt_on_setup_failure(StoreError::new(ErrorClass::Setup, "Query", "second"));
        assert_eq!(control.stop_reason(), Some(StopReason::SetupFailure(first)));
    }
}
