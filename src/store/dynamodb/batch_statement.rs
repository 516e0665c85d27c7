//! `WRITE_MODE=batch-statement`: the conditional update as one PartiQL
//! `UPDATE` per record, up to 25 in a `BatchExecuteStatement`, and what each
//! statement of the answer says.

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::batch_execute_statement::BatchExecuteStatementError;
use aws_sdk_dynamodb::types::{
    AttributeValue, BatchStatementErrorCodeEnum, BatchStatementRequest, BatchStatementResponse,
    ReturnConsumedCapacity, ReturnValuesOnConditionCheckFailure,
};

use super::classify::{classify, first_reason};
use super::events::{KeyText, RecordStamped};
use super::layout::EXECUTION_ATTRIBUTE;
use super::writes::PreparedUpdate;
use super::{DynamoStore, ItemKey};
use crate::domain::failure::{ErrorClass, StoreError};
use crate::domain::stamp::StampResult;

/// Statements per `BatchExecuteStatement`, DynamoDB's limit.
pub(crate) const BATCH_STATEMENT_LIMIT: usize = 25;

const OPERATION: &str = "BatchExecuteStatement";

impl DynamoStore {
    /// Stamps `keys` with one statement each, in one request: one result
    /// per key, in order; `Err` when the request as a whole failed.
    pub(super) async fn execute_statements(
        &self,
        keys: &[ItemKey],
        stamp: &PreparedUpdate,
    ) -> Result<Vec<Result<StampResult, StoreError>>, StoreError> {
        let output = self
            .client
            .batch_execute_statement()
            .set_statements(Some(statements(keys, stamp)?))
            .return_consumed_capacity(ReturnConsumedCapacity::Indexes)
            .send()
            .await
            .map_err(|error| {
                let reason = match &error {
                    SdkError::ServiceError(service) => throttling_reason(service.err()),
                    _ => None,
                };
                classify(OPERATION, error).with_throttling_reason(reason)
            })?;
        self.usage.tally_capacity(output.consumed_capacity());
        statement_results(keys, output.responses())
    }
}

/// The conditional update as one PartiQL statement. Parameters: the eight
/// stamped values, the key attributes, the execution. An `UPDATE` of a key
/// that does not exist fails its condition and creates nothing, as
/// `attribute_exists` does for `UpdateItem`.
pub(super) fn partiql_update(
    table: &str,
    key_attributes: &[String],
    replace_same_execution: bool,
) -> String {
    let set = [
        "consolidation_status",
        "consolidation_s3_path",
        "consolidation_date",
        EXECUTION_ATTRIBUTE,
        "consolidation_job_name",
        "output_format",
        "records_in_consolidation",
        "updated_at",
    ]
    .map(|attribute| format!("SET \"{attribute}\" = ?"))
    .join(" ");
    let key = key_attributes
        .iter()
        .map(|attribute| format!("\"{attribute}\" = ?"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let newer = if replace_same_execution { "<=" } else { "<" };
    format!(
        "UPDATE \"{table}\" {set} WHERE {key} AND (\"{EXECUTION_ATTRIBUTE}\" IS MISSING \
         OR \"{EXECUTION_ATTRIBUTE}\" {newer} ?)"
    )
}

/// One statement per key, its parameters in the statement's order.
fn statements(
    keys: &[ItemKey],
    stamp: &PreparedUpdate,
) -> Result<Vec<BatchStatementRequest>, StoreError> {
    keys.iter()
        .map(|key| {
            let mut parameters = stamp.set_parameters.clone();
            for attribute in &stamp.key_attributes {
                parameters.push(key.get(attribute).cloned().ok_or_else(|| {
                    StoreError::new(
                        ErrorClass::Permanent,
                        OPERATION,
                        format!("a key without its {attribute} attribute"),
                    )
                })?);
            }
            parameters.push(AttributeValue::N(
                stamp.values.execution_sequence.to_string(),
            ));
            BatchStatementRequest::builder()
                .statement(&stamp.statement)
                .set_parameters(Some(parameters))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .build()
                .map_err(|e| StoreError::new(ErrorClass::Permanent, OPERATION, e.to_string()))
        })
        .collect()
}

/// Each key's result, from the response to its statement; `Err` when the
/// answer does not have one response per statement.
fn statement_results(
    keys: &[ItemKey],
    responses: &[BatchStatementResponse],
) -> Result<Vec<Result<StampResult, StoreError>>, StoreError> {
    if responses.len() != keys.len() {
        return Err(StoreError::new(
            ErrorClass::Transient,
            OPERATION,
            format!(
                "{} responses for {} statements",
                responses.len(),
                keys.len()
            ),
        ));
    }
    Ok(keys
        .iter()
        .zip(responses)
        .map(|(key, response)| {
            let result = statement_result(response);
            if let Ok(stamped) = result {
                RecordStamped {
                    operation: OPERATION,
                    key: &KeyText(key),
                    result: stamped,
                }
                .emit();
            }
            result
        })
        .collect())
}

/// What one statement of a batch did, or why it failed.
fn statement_result(response: &BatchStatementResponse) -> Result<StampResult, StoreError> {
    let Some(error) = response.error() else {
        return Ok(StampResult::Written);
    };
    let class = match error.code() {
        Some(BatchStatementErrorCodeEnum::ConditionalCheckFailed) => {
            return Ok(if error.item().is_some_and(|item| !item.is_empty()) {
                StampResult::AlreadyApplied
            } else {
                StampResult::Missing
            });
        }
        Some(
            BatchStatementErrorCodeEnum::ProvisionedThroughputExceeded
            | BatchStatementErrorCodeEnum::ThrottlingError
            | BatchStatementErrorCodeEnum::RequestLimitExceeded,
        ) => ErrorClass::Throttled,
        Some(
            BatchStatementErrorCodeEnum::InternalServerError
            | BatchStatementErrorCodeEnum::TransactionConflict,
        ) => ErrorClass::Transient,
        Some(
            BatchStatementErrorCodeEnum::ResourceNotFound
            | BatchStatementErrorCodeEnum::AccessDenied,
        ) => ErrorClass::Setup,
        _ => ErrorClass::Permanent,
    };
    let code = error.code().map_or("unknown", |c| c.as_str());
    Err(StoreError::new(
        class,
        OPERATION,
        format!("{code}: {}", error.message().unwrap_or_default()),
    )
    .with_code(code))
}

/// Which limit a throttled request hit, when DynamoDB says.
fn throttling_reason(error: &BatchExecuteStatementError) -> Option<String> {
    match error {
        BatchExecuteStatementError::ThrottlingException(e) => first_reason(e.throttling_reasons()),
        BatchExecuteStatementError::RequestLimitExceeded(e) => first_reason(e.throttling_reasons()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::types::error::{InternalServerError, RequestLimitExceeded};
    use aws_sdk_dynamodb::types::{BatchStatementError, ThrottlingReason};

    use super::*;
    use crate::domain::stamp::{STATUS_COMPLETED, StampValues};
    use crate::store::dynamodb::{KeyReader, TableLayout};

    fn key(id: &str) -> ItemKey {
        ItemKey::from([
            ("chargeback_id".to_owned(), AttributeValue::S(id.into())),
            (
                "created_at".to_owned(),
                AttributeValue::S("2025-11-20T01:00:00.000Z".into()),
            ),
        ])
    }

    fn prepared(replace_same_execution: bool) -> PreparedUpdate {
        let layout = TableLayout {
            table_id: "t".into(),
            hash_key: "chargeback_id".into(),
            range_key: Some("created_at".into()),
            reader: KeyReader::Index {
                projects_execution: false,
            },
        };
        let stamp = StampValues {
            s3_path: "s3://bucket/day=20".into(),
            consolidation_date: "2025-11-20T06:45:32Z".into(),
            execution_sequence: 3,
            job_name: "job".into(),
            output_format: "parquet",
            records_in_consolidation: 10,
            updated_at: "2025-11-20T07:00:01.500Z".into(),
            replace_same_execution,
        };
        PreparedUpdate::new("chargebacks", &layout, &stamp)
    }

    fn failed(code: BatchStatementErrorCodeEnum) -> BatchStatementResponse {
        BatchStatementResponse::builder()
            .error(
                BatchStatementError::builder()
                    .code(code)
                    .message("it went wrong")
                    .build(),
            )
            .build()
    }

    fn class_of(code: BatchStatementErrorCodeEnum) -> ErrorClass {
        statement_result(&failed(code)).unwrap_err().class
    }

    #[test]
    fn the_statement_updates_an_existing_record_below_this_execution_only() {
        let keys = ["chargeback_id".to_owned(), "created_at".to_owned()];
        assert_eq!(
            partiql_update("chargebacks", &keys, false),
            "UPDATE \"chargebacks\" SET \"consolidation_status\" = ? \
             SET \"consolidation_s3_path\" = ? SET \"consolidation_date\" = ? \
             SET \"consolidation_execution\" = ? SET \"consolidation_job_name\" = ? \
             SET \"output_format\" = ? SET \"records_in_consolidation\" = ? \
             SET \"updated_at\" = ? WHERE \"chargeback_id\" = ? AND \"created_at\" = ? \
             AND (\"consolidation_execution\" IS MISSING OR \"consolidation_execution\" < ?)"
        );
    }

    #[test]
    fn a_backfill_statement_rewrites_records_at_this_execution_too() {
        let statement = partiql_update("chargebacks", &["chargeback_id".to_owned()], true);
        assert!(statement.contains("WHERE \"chargeback_id\" = ? AND ("));
        assert!(statement.ends_with(
            "(\"consolidation_execution\" IS MISSING OR \"consolidation_execution\" <= ?)"
        ));
    }

    #[test]
    fn each_statement_takes_the_stamped_values_then_its_key_then_the_execution() {
        let stamp = prepared(false);
        let requests = statements(&[key("cb-1"), key("cb-2")], &stamp).unwrap();
        assert_eq!(requests.len(), 2);
        let parameters = requests[1].parameters();
        assert_eq!(
            parameters.len(),
            stamp.statement.matches('?').count(),
            "one parameter per placeholder"
        );
        assert_eq!(parameters[0], AttributeValue::S(STATUS_COMPLETED.into()));
        assert_eq!(parameters[3], AttributeValue::N("3".into()));
        assert_eq!(parameters[8], AttributeValue::S("cb-2".into()));
        assert_eq!(
            parameters[9],
            AttributeValue::S("2025-11-20T01:00:00.000Z".into())
        );
        assert_eq!(parameters[10], AttributeValue::N("3".into()));
        assert_eq!(requests[1].statement(), stamp.statement);
        assert_eq!(
            requests[1].return_values_on_condition_check_failure(),
            Some(&ReturnValuesOnConditionCheckFailure::AllOld)
        );
    }

    #[test]
    fn a_key_without_a_key_attribute_is_a_permanent_failure() {
        let mut partial = key("cb-1");
        partial.remove("created_at");
        let error = statements(&[key("cb-0"), partial], &prepared(false)).unwrap_err();
        assert_eq!(
            error,
            StoreError::new(
                ErrorClass::Permanent,
                OPERATION,
                "a key without its created_at attribute"
            )
        );
    }

    #[test]
    fn a_statement_without_an_error_was_written() {
        let response = BatchStatementResponse::builder()
            .table_name("chargebacks")
            .build();
        assert_eq!(statement_result(&response), Ok(StampResult::Written));
    }

    #[test]
    fn a_refused_condition_is_already_applied_when_the_record_exists_and_missing_when_not() {
        let exists = BatchStatementResponse::builder()
            .error(
                BatchStatementError::builder()
                    .code(BatchStatementErrorCodeEnum::ConditionalCheckFailed)
                    .item("consolidation_execution", AttributeValue::N("3".into()))
                    .build(),
            )
            .build();
        assert_eq!(statement_result(&exists), Ok(StampResult::AlreadyApplied));
        let gone = failed(BatchStatementErrorCodeEnum::ConditionalCheckFailed);
        assert_eq!(statement_result(&gone), Ok(StampResult::Missing));
    }

    #[test]
    fn a_throttled_statement_inside_a_200_is_classified_throttled() {
        let error = statement_result(&failed(
            BatchStatementErrorCodeEnum::ProvisionedThroughputExceeded,
        ))
        .unwrap_err();
        assert_eq!(
            error,
            StoreError::new(
                ErrorClass::Throttled,
                OPERATION,
                "ProvisionedThroughputExceeded: it went wrong"
            )
            .with_code("ProvisionedThroughputExceeded")
        );
        assert_eq!(
            class_of(BatchStatementErrorCodeEnum::ThrottlingError),
            ErrorClass::Throttled
        );
        assert_eq!(
            class_of(BatchStatementErrorCodeEnum::RequestLimitExceeded),
            ErrorClass::Throttled
        );
    }

    #[test]
    fn a_statement_that_failed_on_the_server_or_conflicted_is_transient() {
        assert_eq!(
            class_of(BatchStatementErrorCodeEnum::InternalServerError),
            ErrorClass::Transient
        );
        assert_eq!(
            class_of(BatchStatementErrorCodeEnum::TransactionConflict),
            ErrorClass::Transient
        );
    }

    #[test]
    fn a_statement_on_a_missing_table_or_denied_is_a_setup_failure() {
        assert_eq!(
            class_of(BatchStatementErrorCodeEnum::ResourceNotFound),
            ErrorClass::Setup
        );
        assert_eq!(
            class_of(BatchStatementErrorCodeEnum::AccessDenied),
            ErrorClass::Setup
        );
    }

    #[test]
    fn any_other_statement_error_is_permanent_and_keeps_its_code() {
        let error =
            statement_result(&failed(BatchStatementErrorCodeEnum::ValidationError)).unwrap_err();
        assert_eq!(error.class, ErrorClass::Permanent);
        assert_eq!(error.code.as_deref(), Some("ValidationError"));
        assert_eq!(error.message, "ValidationError: it went wrong");
        let no_code = BatchStatementResponse::builder()
            .error(BatchStatementError::builder().build())
            .build();
        let error = statement_result(&no_code).unwrap_err();
        assert_eq!(
            (error.class, error.code.as_deref(), error.message.as_str()),
            (ErrorClass::Permanent, Some("unknown"), "unknown: ")
        );
    }

    #[test]
    fn each_key_gets_the_result_of_its_own_statement() {
        let keys = [key("cb-1"), key("cb-2"), key("cb-3")];
        let responses = [
            BatchStatementResponse::builder().build(),
            failed(BatchStatementErrorCodeEnum::ThrottlingError),
            failed(BatchStatementErrorCodeEnum::ConditionalCheckFailed),
        ];
        let results = statement_results(&keys, &responses).unwrap();
        assert_eq!(results[0], Ok(StampResult::Written));
        assert_eq!(
            results[1].as_ref().map_err(|e| e.class),
            Err(ErrorClass::Throttled)
        );
        assert_eq!(results[2], Ok(StampResult::Missing));
    }

    #[test]
    fn fewer_responses_than_statements_fail_the_whole_request_as_transient() {
        let keys = [key("cb-1"), key("cb-2")];
        let error =
            statement_results(&keys, &[BatchStatementResponse::builder().build()]).unwrap_err();
        assert_eq!(
            error,
            StoreError::new(
                ErrorClass::Transient,
                OPERATION,
                "1 responses for 2 statements"
            )
        );
    }

    #[test]
    fn a_throttled_request_says_which_limit_it_hit() {
        let reason = ThrottlingReason::builder()
            .reason("TableWriteKeyRangeThroughputExceeded")
            .build();
        let limited = BatchExecuteStatementError::RequestLimitExceeded(
            RequestLimitExceeded::builder()
                .throttling_reasons(reason)
                .build(),
        );
        assert_eq!(
            throttling_reason(&limited).as_deref(),
            Some("TableWriteKeyRangeThroughputExceeded")
        );
        let failed =
            BatchExecuteStatementError::InternalServerError(InternalServerError::builder().build());
        assert_eq!(throttling_reason(&failed), None);
    }
}
