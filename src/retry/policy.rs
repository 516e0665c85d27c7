//! The one retry policy: exponential backoff with full jitter, bounded in
//! attempts and time (the SDK's own retries are off, so that attempts are not
//! multiplied by two layers).

use std::future::Future;
use std::time::{Duration, Instant};

use super::control::InvocationControl;
use super::events::RequestRetried;
use super::limiter::AdaptiveLimiter;
use crate::domain::failure::{ErrorClass, StoreError};

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
}
