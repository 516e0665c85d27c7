//! Creating the run ledger's table per its contract: `partition_date` (S) +
//! `execution_sequence` (N), on-demand, TTL on `expires_at`. For the demo,
//! `create-table` and the tests; Terraform creates it in AWS.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TimeToLiveSpecification, TimeToLiveStatus,
};

use super::classify;
use super::provision::{Ensured, describe_if_exists, wait_until_active};
use crate::domain::failure::{ErrorClass, StoreError};

pub(crate) const LEDGER_HASH_KEY: &str = "partition_date";
pub(crate) const LEDGER_RANGE_KEY: &str = "execution_sequence";
/// The TTL attribute: epoch seconds after which DynamoDB deletes the run.
pub(crate) const LEDGER_TTL_ATTRIBUTE: &str = "expires_at";

/// Creates the ledger table unless it exists (an existing one must have the
/// contract's keys), and turns its TTL on unless it is on.
pub async fn ensure_ledger_table(client: &Client, table: &str) -> Result<Ensured, StoreError> {
    let ensured = match describe_if_exists(client, table).await? {
        Some(described) => {
            let key_named = |kind: KeyType| {
                described
                    .key_schema()
                    .iter()
                    .find(|k| *k.key_type() == kind)
                    .map(|k| k.attribute_name().to_owned())
            };
            let keys = (key_named(KeyType::Hash), key_named(KeyType::Range));
            if keys.0.as_deref() != Some(LEDGER_HASH_KEY)
                || keys.1.as_deref() != Some(LEDGER_RANGE_KEY)
            {
                return Err(StoreError::new(
                    ErrorClass::Setup,
                    "DescribeTable",
                    format!(
                        "table {table} is keyed on {:?} and {:?}, not the run ledger's \
                         {LEDGER_HASH_KEY} and {LEDGER_RANGE_KEY}: name another with \
                         LEDGER_TABLE_NAME",
                        keys.0, keys.1
                    ),
                ));
            }
            Ensured::AlreadyThere
        }
        None => match create(client, table).await {
            Ok(()) => Ensured::Created,
            Err(error) if error.code.as_deref() == Some("ResourceInUseException") => {
                wait_until_active(client, table, None).await?;
                Ensured::AlreadyThere
            }
            Err(error) => return Err(error),
        },
    };
    ensure_ttl(client, table).await?;
    Ok(ensured)
}

async fn create(client: &Client, table: &str) -> Result<(), StoreError> {
    let invalid = |e: aws_sdk_dynamodb::error::BuildError| {
        StoreError::new(ErrorClass::Permanent, "CreateTable", e.to_string())
    };
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(invalid)
    };
    let attribute = |name: &str, kind| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
            .map_err(invalid)
    };
    client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(LEDGER_HASH_KEY, KeyType::Hash)?)
        .key_schema(key(LEDGER_RANGE_KEY, KeyType::Range)?)
        .attribute_definitions(attribute(LEDGER_HASH_KEY, ScalarAttributeType::S)?)
        .attribute_definitions(attribute(LEDGER_RANGE_KEY, ScalarAttributeType::N)?)
        .send()
        .await
        .map_err(|e| classify("CreateTable", e))?;
    wait_until_active(client, table, None).await
}

/// TTL on `expires_at`, unless it is on (or being turned on) already.
async fn ensure_ttl(client: &Client, table: &str) -> Result<(), StoreError> {
    let described = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| classify("DescribeTimeToLive", e))?;
    let status = described
        .time_to_live_description()
        .and_then(|d| d.time_to_live_status());
    if matches!(
        status,
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
    ) {
        return Ok(());
    }
    let specification = TimeToLiveSpecification::builder()
        .attribute_name(LEDGER_TTL_ATTRIBUTE)
        .enabled(true)
        .build()
        .map_err(|e| StoreError::new(ErrorClass::Permanent, "UpdateTimeToLive", e.to_string()))?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(specification)
        .send()
        .await
        .map_err(|e| classify("UpdateTimeToLive", e))?;
    Ok(())
}
