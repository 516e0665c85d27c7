//! What happens when a store call fails: one retry policy (exponential
//! backoff with full jitter, bounded in attempts and time, [`policy`]), an
//! adaptive limiter of requests in flight that backs off when requests fail
//! or time out ([`limiter`]), and the invocation's control that stops new
//! work near the deadline or after a setup failure ([`control`]). Throttled
//! writes are paced, not limited here: see the `pacing` module.

pub mod control;
pub mod events;
pub mod limiter;
pub mod policy;

pub use control::InvocationControl;
pub use limiter::{AdaptiveLimiter, LimiterPermit};
pub use policy::{Decision, RetryPolicy};
