//! What a failed DynamoDB call means, in the core's terms: an SDK error
//! becomes a [`StoreError`] of one [`ErrorClass`], decided from the kind of
//! failure, the service's error code and the HTTP status, never from text.

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::ThrottlingReason;

use crate::domain::failure::{ErrorClass, StoreError};
use crate::retry::events::RequestFailed;

/// Error codes DynamoDB uses for "too fast, try again later".
const THROTTLING_CODES: [&str; 3] = [
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
];
/// Error codes that say the setup is wrong, not the request.
const SETUP_CODES: [&str; 7] = [
    "ResourceNotFoundException",
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "MissingAuthenticationTokenException",
    "ExpiredTokenException",
    "IncompleteSignatureException",
];

/// Decides what a failed call means, from the error's type and code.
pub(crate) fn classify<E>(operation: &'static str, error: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let failure = Failure::of(&error);
    // The whole chain is for DEBUG; the error itself says the root cause in
    // one line (a credentials failure's chain is three long lines).
    RequestFailed {
        operation,
        chain: &DisplayErrorContext(&error),
    }
    .emit();
    StoreError::new(failure.class(), operation, root_cause(&error)).with_code(failure.code())
}

/// A failed call as far as its class goes: the kind of failure and, when
/// the service answered, its error code and HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure<'a> {
    /// The service answered with an error.
    Service { code: Option<&'a str>, status: u16 },
    /// An attempt took too long.
    Timeout,
    /// The answer could not be read.
    Response,
    /// The request was not sent; `unreachable` when no connection could be
    /// made at all (refused, no route, connect timeout).
    Dispatch { unreachable: bool },
    /// The request could not be built.
    Construction,
    /// A kind of failure the SDK does not name yet.
    Unknown,
}

impl<'a> Failure<'a> {
    fn of<E>(error: &'a SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata,
    {
        match error {
            SdkError::ServiceError(service) => Self::Service {
                code: service.err().code(),
                status: service.raw().status().as_u16(),
            },
            SdkError::TimeoutError(_) => Self::Timeout,
            SdkError::ResponseError(_) => Self::Response,
            SdkError::DispatchFailure(failure) => Self::Dispatch {
                unreachable: failure.is_io() || failure.is_timeout(),
            },
            SdkError::ConstructionFailure(_) => Self::Construction,
            _ => Self::Unknown,
        }
    }

    /// The service's error code, or the kind of failure when there was no answer.
    fn code(self) -> &'a str {
        match self {
            Self::Service { code, .. } => code.unwrap_or("unknown"),
            Self::Timeout => "TimeoutError",
            Self::Response => "ResponseError",
            Self::Dispatch { .. } => "DispatchFailure",
            Self::Construction => "ConstructionFailure",
            Self::Unknown => "unknown",
        }
    }

    fn class(self) -> ErrorClass {
        match self {
            Self::Timeout | Self::Response => ErrorClass::Transient,
            Self::Dispatch { unreachable: true } => ErrorClass::Unreachable,
            Self::Dispatch { unreachable: false } | Self::Construction => ErrorClass::Setup,
            Self::Service { code, status } => {
                let code = code.unwrap_or_default();
                if THROTTLING_CODES.contains(&code) {
                    ErrorClass::Throttled
                } else if (500..600).contains(&status) || code == "TransactionConflictException" {
                    ErrorClass::Transient
                } else if SETUP_CODES.contains(&code) {
                    ErrorClass::Setup
                } else {
                    ErrorClass::Permanent
                }
            }
            Self::Unknown => ErrorClass::Transient,
        }
    }
}

/// Which limit a throttling answer names (the newer API's
/// `ThrottlingReasons`: `TableWriteProvisionedThroughputExceeded` and the
/// like). Per-statement errors of a batch carry none.
pub(super) fn first_reason(reasons: &[ThrottlingReason]) -> Option<String> {
    reasons.iter().find_map(|r| r.reason()).map(str::to_owned)
}

/// One line for a failed call: the service's code and message, or the
/// innermost cause of a failure to send.
fn root_cause<E>(error: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if let SdkError::ServiceError(service) = error {
        let err = service.err();
        return format!(
            "{}: {}",
            err.code().unwrap_or("unknown error"),
            err.message().unwrap_or_default()
        );
    }
    let mut innermost: &(dyn std::error::Error + 'static) = error;
    let mut messages = vec![innermost.to_string()];
    while let Some(source) = innermost.source() {
        innermost = source;
        messages.push(source.to_string());
    }
    // The innermost cause, led by the outer kind when it says something the
    // cause does not ("dispatch failure", "timeout").
    let outer = messages.first().cloned().unwrap_or_default();
    let root = one_line(&messages.pop().unwrap_or_default());
    if outer == root {
        root
    } else {
        format!("{outer}: {root}")
    }
}

/// Some causes span lines, the credentials chain's above all ("no credentials
/// found in chain. Attempted:" and one line per provider): keep the first
/// line and name what each following line is about.
fn one_line(message: &str) -> String {
    let mut lines = message.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default();
    let rest: Vec<&str> = lines
        .map(|line| line.split_once(':').map_or(line, |(about, _)| about))
        .collect();
    if rest.is_empty() {
        return first.to_owned();
    }
    let first = first
        .trim_end_matches("Attempted:")
        .trim_end()
        .trim_end_matches('.');
    format!("{first} (tried {})", rest.join(", "))
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::error::{ConnectorError, ErrorMetadata};
    use aws_sdk_dynamodb::operation::update_item::UpdateItemError;

    use super::*;

    fn service(code: &str, status: u16) -> ErrorClass {
        Failure::Service {
            code: Some(code),
            status,
        }
        .class()
    }

    /// An `UpdateItem` failure as the SDK hands it over.
    fn answered(code: &str, message: &str, status: u16) -> SdkError<UpdateItemError> {
        let error = ErrorMetadata::builder().code(code).message(message).build();
        SdkError::service_error(
            UpdateItemError::generic(error),
            HttpResponse::new(status.try_into().unwrap(), "".into()),
        )
    }

    #[test]
    fn a_throttling_code_is_throttled_whatever_the_status() {
        for code in THROTTLING_CODES {
            assert_eq!(service(code, 400), ErrorClass::Throttled, "{code}");
            assert_eq!(service(code, 503), ErrorClass::Throttled, "{code}");
        }
    }

    #[test]
    fn a_server_error_or_a_transaction_conflict_is_transient() {
        assert_eq!(service("InternalServerError", 500), ErrorClass::Transient);
        assert_eq!(service("ServiceUnavailable", 503), ErrorClass::Transient);
        assert_eq!(
            service("ResourceNotFoundException", 500),
            ErrorClass::Transient
        );
        assert_eq!(
            service("TransactionConflictException", 400),
            ErrorClass::Transient
        );
        let no_code = Failure::Service {
            code: None,
            status: 502,
        };
        assert_eq!(
            (no_code.class(), no_code.code()),
            (ErrorClass::Transient, "unknown")
        );
    }

    #[test]
    fn a_missing_table_or_a_credentials_refusal_is_a_setup_failure() {
        for code in SETUP_CODES {
            assert_eq!(service(code, 400), ErrorClass::Setup, "{code}");
        }
    }

    #[test]
    fn any_other_refusal_is_permanent() {
        assert_eq!(service("ValidationException", 400), ErrorClass::Permanent);
        assert_eq!(
            service("ConditionalCheckFailedException", 400),
            ErrorClass::Permanent
        );
        let no_code = Failure::Service {
            code: None,
            status: 400,
        };
        assert_eq!(no_code.class(), ErrorClass::Permanent);
    }

    #[test]
    fn a_failure_to_connect_is_unreachable_and_any_other_failure_to_send_is_setup() {
        let refused = classify::<UpdateItemError>(
            "Query",
            SdkError::dispatch_failure(ConnectorError::io("connection refused".into())),
        );
        assert_eq!(refused.class, ErrorClass::Unreachable);
        assert_eq!(refused.code.as_deref(), Some("DispatchFailure"));
        assert_eq!(refused.message, "dispatch failure: connection refused");
        let connect_timeout = classify::<UpdateItemError>(
            "Query",
            SdkError::dispatch_failure(ConnectorError::timeout("connect timed out".into())),
        );
        assert_eq!(connect_timeout.class, ErrorClass::Unreachable);
        let user = classify::<UpdateItemError>(
            "Query",
            SdkError::dispatch_failure(ConnectorError::user("bad endpoint".into())),
        );
        assert_eq!(user.class, ErrorClass::Setup);
        let unbuilt =
            classify::<UpdateItemError>("Query", SdkError::construction_failure("no region"));
        assert_eq!(
            (unbuilt.class, unbuilt.code.as_deref()),
            (ErrorClass::Setup, Some("ConstructionFailure"))
        );
    }

    #[test]
    fn an_attempt_that_timed_out_is_transient() {
        let error = classify::<UpdateItemError>(
            "UpdateItem",
            SdkError::timeout_error("attempt timeout occurred after 5s"),
        );
        assert_eq!(error.class, ErrorClass::Transient);
        assert_eq!(error.code.as_deref(), Some("TimeoutError"));
        assert_eq!(
            error.message,
            "request has timed out: attempt timeout occurred after 5s"
        );
    }

    #[test]
    fn a_service_answer_is_classified_by_its_code_and_status_and_says_both_code_and_message() {
        let throttled = classify(
            "UpdateItem",
            answered("ThrottlingException", "slow down", 400),
        );
        assert_eq!(
            throttled,
            StoreError::new(
                ErrorClass::Throttled,
                "UpdateItem",
                "ThrottlingException: slow down"
            )
            .with_code("ThrottlingException")
        );
        let unavailable = classify("UpdateItem", answered("ServiceUnavailable", "later", 503));
        assert_eq!(unavailable.class, ErrorClass::Transient);
        let missing = classify(
            "DescribeTable",
            answered("ResourceNotFoundException", "no table", 400),
        );
        assert_eq!(
            (missing.class, missing.operation),
            (ErrorClass::Setup, "DescribeTable")
        );
        let invalid = classify("UpdateItem", answered("ValidationException", "bad", 400));
        assert_eq!(invalid.class, ErrorClass::Permanent);
    }

    #[test]
    fn the_first_throttling_reason_named_is_kept() {
        let reasons = [
            ThrottlingReason::builder().build(),
            ThrottlingReason::builder()
                .reason("TableWriteProvisionedThroughputExceeded")
                .build(),
            ThrottlingReason::builder()
                .reason("IndexWriteProvisionedThroughputExceeded")
                .build(),
        ];
        assert_eq!(
            first_reason(&reasons).as_deref(),
            Some("TableWriteProvisionedThroughputExceeded")
        );
        assert_eq!(first_reason(&[]), None);
    }

    #[test]
    fn a_cause_that_spans_lines_becomes_one() {
        let chain = "no credentials found in chain. Attempted:\n  Environment: the credential \
                     provider was not enabled: environment variable not set\n  Profile: the \
                     credential provider was not enabled\n  Ec2InstanceMetadata: IMDS disabled";
        assert_eq!(
            one_line(chain),
            "no credentials found in chain (tried Environment, Profile, Ec2InstanceMetadata)"
        );
        assert_eq!(one_line("connection refused"), "connection refused");
    }
}
