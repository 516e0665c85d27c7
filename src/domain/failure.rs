//! The failure vocabulary: what can go wrong outside the core, said in the
//! core's terms, and the one decision of what each failure means for a
//! message. Adapters build these values; the handler only asks them.

use std::time::Duration;

use thiserror::Error;

/// What kind of failure a store call ended with, decided by the adapter
/// from the error itself (its code), never from its text by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// DynamoDB asked us to slow down: back-pressure, paced and retried.
    Throttled,
    /// 5xx, timeouts, a dropped connection: the same request may succeed later.
    Transient,
    /// No connection could be made: retried briefly, then a setup failure.
    Unreachable,
    /// The request itself is wrong (e.g. a validation error): retrying it is pointless.
    Permanent,
    /// The data is fine but the setup is not (missing table, no permission,
    /// endpoint unreachable for good): nothing in this invocation can succeed.
    Setup,
}

/// What a failure means for the message it happened to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Hand the message back to Lambda: a later delivery may succeed.
    HandBack,
    /// Park it in the dead-letter queue: every delivery would fail the same
    /// way, and it must not block its partition (handed back only when it
    /// cannot be parked).
    DeadLetter,
    /// Hand it back and start no new work in this invocation: the setup is
    /// wrong, not the data, so nothing is dead-lettered for it.
    HaltInvocation,
}

impl ErrorClass {
    /// The class's one name, everywhere: the `error_kind` of logs, the
    /// dead-letter body and its message attribute, the failure notice.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Throttled => "store_throttled",
            Self::Transient => "store_transient",
            Self::Unreachable => "store_unreachable",
            Self::Permanent => "store_permanent",
            Self::Setup => SETUP_FAILURE,
        }
    }

    /// What a message whose fan-out ended with this class becomes.
    pub fn disposition(self) -> Disposition {
        match self {
            Self::Throttled | Self::Transient | Self::Unreachable => Disposition::HandBack,
            Self::Permanent => Disposition::DeadLetter,
            Self::Setup => Disposition::HaltInvocation,
        }
    }

    /// Whether the store is struggling (errors, timeouts): fewer requests
    /// in flight help. Throttling is not: it is paced by rate.
    pub fn is_congestion(self) -> bool {
        matches!(self, Self::Transient)
    }

    /// Which of several failures decides a request's fate: one that cannot
    /// be retried outranks one that can.
    pub fn severity(self) -> u8 {
        match self {
            Self::Throttled => 0,
            Self::Transient => 1,
            Self::Unreachable => 2,
            Self::Permanent => 3,
            Self::Setup => 4,
        }
    }
}

/// The name of a setup failure, whether it ended the message that met it
/// or stopped the others of the invocation.
const SETUP_FAILURE: &str = "setup_failure";
/// The name of work stopped by the invocation's deadline.
const DEADLINE_NEAR: &str = "deadline_near";

/// A store call that failed, classified by the adapter.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{operation} failed ({kind}): {message}", kind = self.class.kind())]
pub struct StoreError {
    pub class: ErrorClass,
    pub operation: &'static str,
    pub message: String,
    /// The service's error code (`ProvisionedThroughputExceededException`),
    /// or the kind of failure when there was no answer (`TimeoutError`).
    pub code: Option<String>,
    /// Which limit a throttling answer says was hit
    /// (`TableWriteProvisionedThroughputExceeded`), when DynamoDB says so.
    pub throttling_reason: Option<String>,
}

impl StoreError {
    pub fn new(class: ErrorClass, operation: &'static str, message: impl Into<String>) -> Self {
        Self {
            class,
            operation,
            message: message.into(),
            code: None,
            throttling_reason: None,
        }
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub fn with_throttling_reason(mut self, reason: Option<String>) -> Self {
        self.throttling_reason = reason;
        self
    }

    /// The failure a call ends with after `attempts`, saying how many it
    /// took. An endpoint still unreachable is a setup failure by then.
    pub fn after_attempts(self, attempts: u32) -> Self {
        Self {
            class: match self.class {
                ErrorClass::Unreachable => ErrorClass::Setup,
                other => other,
            },
            message: match attempts {
                1 => format!("{} (after 1 attempt)", self.message),
                _ => format!("{} (after {attempts} attempts)", self.message),
            },
            ..self
        }
    }
}

/// Why new work stops before a message is done.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StopReason {
    /// Too close to the invocation's deadline to start more.
    #[error("the invocation's deadline is near")]
    DeadlineNear,
    /// A setup problem (missing table, no permission, endpoint unreachable)
    /// met by some message: nothing in this invocation can succeed.
    #[error("setup problem: {0}")]
    SetupFailure(StoreError),
}

impl StopReason {
    /// The reason's one name (see [`ErrorClass::kind`]).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::DeadlineNear => DEADLINE_NEAR,
            Self::SetupFailure(_) => SETUP_FAILURE,
        }
    }
}

/// A delivery to a queue or topic that did not happen.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SinkError {
    /// There is nowhere to deliver to.
    #[error("no {what} is configured ({variable})")]
    NotConfigured {
        what: &'static str,
        variable: &'static str,
    },
    /// The service answered with an error.
    #[error("{operation} failed: {message}")]
    Refused {
        operation: &'static str,
        message: String,
    },
    /// What was to be sent could not be encoded (nothing was sent).
    #[error("could not encode the {what}: {message}")]
    Unencodable { what: &'static str, message: String },
    /// No answer within the time the invocation could give it.
    #[error("{operation} did not answer within {waited:?}")]
    TimedOut {
        operation: &'static str,
        waited: Duration,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLASSES: [ErrorClass; 5] = [
        ErrorClass::Throttled,
        ErrorClass::Transient,
        ErrorClass::Unreachable,
        ErrorClass::Permanent,
        ErrorClass::Setup,
    ];

    #[test]
    fn only_a_permanent_failure_dead_letters_and_only_a_setup_failure_halts() {
        let dispositions: Vec<_> = CLASSES.iter().map(|c| c.disposition()).collect();
        assert_eq!(
            dispositions,
            [
                Disposition::HandBack,
                Disposition::HandBack,
                Disposition::HandBack,
                Disposition::DeadLetter,
                Disposition::HaltInvocation,
            ]
        );
    }

    #[test]
    fn each_class_has_one_name_and_a_setup_failure_is_named_alike_wherever_it_is_met() {
        let kinds: Vec<_> = CLASSES.iter().map(|c| c.kind()).collect();
        assert_eq!(
            kinds,
            [
                "store_throttled",
                "store_transient",
                "store_unreachable",
                "store_permanent",
                "setup_failure",
            ]
        );
        let setup = StoreError::new(ErrorClass::Setup, "Query", "no table");
        assert_eq!(
            StopReason::SetupFailure(setup).kind(),
            ErrorClass::Setup.kind()
        );
        assert_eq!(StopReason::DeadlineNear.kind(), "deadline_near");
    }

    #[test]
    fn an_endpoint_still_unreachable_after_its_attempts_is_a_setup_failure() {
        let error = StoreError::new(ErrorClass::Unreachable, "Query", "connection refused")
            .after_attempts(3);
        assert_eq!(error.class, ErrorClass::Setup);
        assert_eq!(error.message, "connection refused (after 3 attempts)");
        let once = StoreError::new(ErrorClass::Permanent, "UpdateItem", "bad").after_attempts(1);
        assert_eq!(
            (once.class, once.message.as_str()),
            (ErrorClass::Permanent, "bad (after 1 attempt)")
        );
    }

    #[test]
    fn a_store_error_says_its_operation_kind_and_message() {
        let error = StoreError::new(ErrorClass::Transient, "UpdateItem", "503");
        assert_eq!(
            error.to_string(),
            "UpdateItem failed (store_transient): 503"
        );
    }
}
