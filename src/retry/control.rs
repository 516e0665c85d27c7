//! One invocation's stop signals: new work stops a margin before the
//! deadline, or for good after a setup failure anywhere in the invocation.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::domain::failure::{StopReason, StoreError};

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
    use crate::domain::failure::ErrorClass;

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
