//! Writing a stamp: one conditional `UpdateItem` per record, prepared once
//! per message, and the dry run's check of what it would do (`GetItem`).

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ReturnConsumedCapacity, ReturnValuesOnConditionCheckFailure,
};

use super::batch_statement::partiql_update;
use super::classify::{classify, first_reason};
use super::events::{KeyText, RecordStamped};
use super::layout::{EXECUTION_ATTRIBUTE, TableLayout};
use super::{DynamoStore, ItemKey};
use crate::domain::failure::StoreError;
use crate::domain::stamp::{STATUS_COMPLETED, StampResult, StampValues};

/// `SET` of every stamped attribute.
const UPDATE_EXPRESSION: &str = "SET consolidation_status = :status, \
     consolidation_s3_path = :s3_path, consolidation_date = :consolidation_date, \
     consolidation_execution = :execution, consolidation_job_name = :job_name, \
     output_format = :output_format, records_in_consolidation = :records, \
     updated_at = :updated_at";
/// The record exists (never create one) and is not at this execution or newer.
const UPDATE_CONDITION: &str = "attribute_exists(#pk) AND \
     (attribute_not_exists(consolidation_execution) OR consolidation_execution < :execution)";
/// A forced backfill: the same, but records at this very execution are rewritten.
const REPLACE_CONDITION: &str = "attribute_exists(#pk) AND \
     (attribute_not_exists(consolidation_execution) OR consolidation_execution <= :execution)";

/// A prepared conditional update: expression values built once per message.
pub struct PreparedUpdate {
    /// The stamp it writes.
    pub(super) values: StampValues,
    expression_names: HashMap<String, String>,
    expression_values: HashMap<String, AttributeValue>,
    condition: &'static str,
    /// The same update as a PartiQL statement, for `BatchExecuteStatement`.
    pub(super) statement: String,
    /// Its parameters before the key's: the stamped values.
    pub(super) set_parameters: Vec<AttributeValue>,
    /// The key attributes, in the statement's `WHERE` order.
    pub(super) key_attributes: Vec<String>,
}

impl PreparedUpdate {
    /// `stamp` as an update of the records of `table`, laid out as `layout`.
    pub(super) fn new(table: &str, layout: &TableLayout, stamp: &StampValues) -> Self {
        let s = |v: &str| AttributeValue::S(v.to_owned());
        let n = |v: u64| AttributeValue::N(v.to_string());
        let key_attributes: Vec<String> = std::iter::once(layout.hash_key.clone())
            .chain(layout.range_key.clone())
            .collect();
        let set_parameters = vec![
            s(STATUS_COMPLETED),
            s(&stamp.s3_path),
            s(&stamp.consolidation_date),
            n(stamp.execution_sequence),
            s(&stamp.job_name),
            s(stamp.output_format),
            n(stamp.records_in_consolidation),
            s(&stamp.updated_at),
        ];
        Self {
            statement: partiql_update(table, &key_attributes, stamp.replace_same_execution),
            set_parameters,
            key_attributes,
            condition: if stamp.replace_same_execution {
                REPLACE_CONDITION
            } else {
                UPDATE_CONDITION
            },
            values: stamp.clone(),
            expression_names: HashMap::from([("#pk".to_owned(), layout.hash_key.clone())]),
            expression_values: HashMap::from([
                (":status".to_owned(), s(STATUS_COMPLETED)),
                (":s3_path".to_owned(), s(&stamp.s3_path)),
                (
                    ":consolidation_date".to_owned(),
                    s(&stamp.consolidation_date),
                ),
                (":execution".to_owned(), n(stamp.execution_sequence)),
                (":job_name".to_owned(), s(&stamp.job_name)),
                (":output_format".to_owned(), s(stamp.output_format)),
                (":records".to_owned(), n(stamp.records_in_consolidation)),
                (":updated_at".to_owned(), s(&stamp.updated_at)),
            ]),
        }
    }
}

impl DynamoStore {
    /// Stamps one record with a conditional `UpdateItem`.
    pub(super) async fn update_item(
        &self,
        key: &ItemKey,
        stamp: &PreparedUpdate,
    ) -> Result<StampResult, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key.clone()))
            .update_expression(UPDATE_EXPRESSION)
            .condition_expression(stamp.condition)
            .set_expression_attribute_names(Some(stamp.expression_names.clone()))
            .set_expression_attribute_values(Some(stamp.expression_values.clone()))
            // Tells "already at this execution or newer" from "gone" at no extra cost.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Indexes)
            .send()
            .await;
        let stamped = match result {
            Ok(output) => {
                self.usage.tally_capacity(output.consumed_capacity());
                StampResult::Written
            }
            Err(SdkError::ServiceError(service)) => match service.err() {
                UpdateItemError::ConditionalCheckFailedException(failed) => {
                    if failed.item().is_some_and(|item| !item.is_empty()) {
                        StampResult::AlreadyApplied
                    } else {
                        StampResult::Missing
                    }
                }
                other => {
                    let reason = throttling_reason(other);
                    return Err(classify("UpdateItem", SdkError::ServiceError(service))
                        .with_throttling_reason(reason));
                }
            },
            Err(other) => return Err(classify("UpdateItem", other)),
        };
        RecordStamped {
            operation: "UpdateItem",
            key: &KeyText(key),
            result: stamped,
        }
        .emit();
        Ok(stamped)
    }

    /// What [`update_item`](Self::update_item) would do, read with `GetItem`.
    pub(super) async fn check(
        &self,
        key: &ItemKey,
        stamp: &PreparedUpdate,
    ) -> Result<StampResult, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key.clone()))
            .projection_expression("#pk, #execution")
            .expression_attribute_names(
                "#pk",
                stamp
                    .expression_names
                    .get("#pk")
                    .cloned()
                    .unwrap_or_default(),
            )
            .expression_attribute_names("#execution", EXECUTION_ATTRIBUTE)
            .send()
            .await
            .map_err(|e| classify("GetItem", e))?;
        let Some(item) = output.item.filter(|i| !i.is_empty()) else {
            return Ok(StampResult::Missing);
        };
        let execution = item
            .get(EXECUTION_ATTRIBUTE)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<u64>().ok());
        Ok(if stamp.values.needs_stamp(execution) {
            StampResult::Written
        } else {
            StampResult::AlreadyApplied
        })
    }
}

/// Which limit a throttled `UpdateItem` hit, when DynamoDB says.
fn throttling_reason(error: &UpdateItemError) -> Option<String> {
    match error {
        UpdateItemError::ProvisionedThroughputExceededException(e) => {
            first_reason(e.throttling_reasons())
        }
        UpdateItemError::ThrottlingException(e) => first_reason(e.throttling_reasons()),
        UpdateItemError::RequestLimitExceeded(e) => first_reason(e.throttling_reasons()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::types::ThrottlingReason;
    use aws_sdk_dynamodb::types::error::{
        InternalServerError, ProvisionedThroughputExceededException, ThrottlingException,
    };

    use super::*;
    use crate::store::dynamodb::KeyReader;

    fn stamp(replace_same_execution: bool) -> StampValues {
        StampValues {
            s3_path: "s3://bucket/consolidated/day=20".into(),
            consolidation_date: "2025-11-20T06:45:32.123456+00:00".into(),
            execution_sequence: 2,
            job_name: "job".into(),
            output_format: "parquet",
            records_in_consolidation: 1_250_000,
            updated_at: "2025-11-20T07:00:01.500Z".into(),
            replace_same_execution,
        }
    }

    fn layout() -> TableLayout {
        TableLayout {
            table_id: "t".into(),
            hash_key: "chargeback_id".into(),
            range_key: Some("created_at".into()),
            reader: KeyReader::Index {
                projects_execution: true,
            },
        }
    }

    #[test]
    fn only_a_backfill_rewrites_records_at_the_same_execution() {
        let update = PreparedUpdate::new("chargebacks", &layout(), &stamp(false));
        assert_eq!(update.condition, UPDATE_CONDITION);
        assert!(
            update
                .condition
                .contains("consolidation_execution < :execution")
        );
        let backfill = PreparedUpdate::new("chargebacks", &layout(), &stamp(true));
        assert_eq!(backfill.condition, REPLACE_CONDITION);
        assert!(
            backfill
                .condition
                .contains("consolidation_execution <= :execution")
        );
        assert!(
            backfill
                .statement
                .contains("\"consolidation_execution\" <= ?")
        );
    }

    #[test]
    fn the_update_sets_every_stamped_value_and_conditions_on_the_partition_key() {
        let update = PreparedUpdate::new("chargebacks", &layout(), &stamp(false));
        assert_eq!(
            update.expression_names,
            HashMap::from([("#pk".to_owned(), "chargeback_id".to_owned())])
        );
        let value = |name: &str| update.expression_values[name].clone();
        assert_eq!(value(":status"), AttributeValue::S(STATUS_COMPLETED.into()));
        assert_eq!(value(":execution"), AttributeValue::N("2".into()));
        assert_eq!(value(":records"), AttributeValue::N("1250000".into()));
        assert_eq!(
            value(":updated_at"),
            AttributeValue::S("2025-11-20T07:00:01.500Z".into())
        );
        for name in update.expression_values.keys() {
            assert!(
                UPDATE_EXPRESSION.contains(name.as_str()),
                "{name} is set by the update"
            );
        }
        assert_eq!(update.expression_values.len(), 8);
        assert_eq!(update.key_attributes, ["chargeback_id", "created_at"]);
    }

    #[test]
    fn a_throttled_update_says_which_limit_it_hit() {
        let reason = || {
            ThrottlingReason::builder()
                .reason("TableWriteProvisionedThroughputExceeded")
                .build()
        };
        let provisioned = UpdateItemError::ProvisionedThroughputExceededException(
            ProvisionedThroughputExceededException::builder()
                .throttling_reasons(reason())
                .build(),
        );
        let throttled = UpdateItemError::ThrottlingException(
            ThrottlingException::builder()
                .throttling_reasons(reason())
                .build(),
        );
        for error in [&provisioned, &throttled] {
            assert_eq!(
                throttling_reason(error).as_deref(),
                Some("TableWriteProvisionedThroughputExceeded")
            );
        }
        let failed = UpdateItemError::InternalServerError(InternalServerError::builder().build());
        assert_eq!(throttling_reason(&failed), None);
    }
}
