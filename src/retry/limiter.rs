//! The invocation's adaptive bound on requests in flight (AIMD).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::events::{ConcurrencyLimitChanged, LimitChange, LimitChangesHeldBack};
use crate::domain::failure::{ErrorClass, StoreError};
use crate::telemetry::events::REPEATED_LINE_INTERVAL;
use crate::telemetry::line_budget::LineBudget;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
