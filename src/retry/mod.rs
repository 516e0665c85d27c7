//! What happens when a store call fails: one retry policy (exponential
//! backoff with full jitter, bounded in attempts and time, [`policy`]), an
//! adaptive limiter of requests in flight that backs off when requests fail
//! or time out ([`limiter`]), and the invocation's control that stops new
//! work near the deadline or after a setup failure ([`control`]). Throttled
//! writes are paced, not limited here: see the `pacing` module.

pub(crate) mod control;
pub(crate) mod events;
pub(crate) mod limiter;
pub(crate) mod policy;

pub use control::InvocationControl;
pub(crate) use limiter::AdaptiveLimiter;
pub(crate) use policy::Decision;
pub use policy::RetryPolicy;
