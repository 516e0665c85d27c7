//! Creating a chargebacks table that follows the table contract, and loading
//! records into it: for the demo, the tests and the benchmark, on local
//! DynamoDB-compatible servers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, KeySchemaElement, KeyType, Projection, ProjectionType, PutRequest,
    ScalarAttributeType, TableStatus, WriteRequest,
};
use tokio::task::JoinSet;
use tracing::info;

use super::layout::index_not_ready;
use super::{CREATED_AT_ATTRIBUTE, EXECUTION_ATTRIBUTE, PARTITION_DATE_ATTRIBUTE, classify};
use crate::domain::failure::{ErrorClass, StoreError};
use crate::synthetic::Chargeback;

pub(crate) const HASH_KEY: &str = "chargeback_id";
/// DynamoDB's limit of items per `BatchWriteItem`.
const BATCH_WRITE_LIMIT: usize = 25;

/// The date index's projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexProjection {
    KeysOnly,
    /// Keys plus `consolidation_execution`: stamped records can be skipped on read.
    IncludeExecution,
}

/// Which variant of the table contract to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableShape {
    /// `created_at` as the sort key (hash + range table), or hash only.
    pub created_at_sort_key: bool,
    /// The date index, or none (the store falls back to a scan).
    pub index: Option<IndexProjection>,
}

impl Default for TableShape {
    fn default() -> Self {
        Self {
            created_at_sort_key: false,
            index: Some(IndexProjection::KeysOnly),
        }
    }
}

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement, StoreError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(|e| StoreError::new(ErrorClass::Permanent, "CreateTable", e.to_string()))
}

fn string_attribute(name: &str) -> Result<AttributeDefinition, StoreError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| StoreError::new(ErrorClass::Permanent, "CreateTable", e.to_string()))
}

/// Creates the table (on-demand billing) and waits until it is active.
pub async fn create_table(
    client: &Client,
    table: &str,
    index_name: &str,
    shape: TableShape,
) -> Result<(), StoreError> {
    let mut request = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(HASH_KEY, KeyType::Hash)?)
        .attribute_definitions(string_attribute(HASH_KEY)?);
    let mut defined_created_at = false;
    if shape.created_at_sort_key {
        request = request
            .key_schema(key(CREATED_AT_ATTRIBUTE, KeyType::Range)?)
            .attribute_definitions(string_attribute(CREATED_AT_ATTRIBUTE)?);
        defined_created_at = true;
    }
    if let Some(projection) = shape.index {
        let index = date_index(index_name, projection)?;
        request = request
            .global_secondary_indexes(index)
            .attribute_definitions(string_attribute(PARTITION_DATE_ATTRIBUTE)?);
        if !defined_created_at {
            request = request.attribute_definitions(string_attribute(CREATED_AT_ATTRIBUTE)?);
        }
    }
    request
        .send()
        .await
        .map_err(|e| classify("CreateTable", e))?;
    wait_until_active(client, table, shape.index.map(|_| index_name)).await
}

/// What [`ensure_table`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    Created,
    /// The table was there already, with the date index.
    AlreadyThere,
    /// The table was there without the date index, which was added.
    IndexAdded,
}

/// The table's description, or `None` when there is no such table.
pub(super) async fn describe_if_exists(
    client: &Client,
    table: &str,
) -> Result<Option<aws_sdk_dynamodb::types::TableDescription>, StoreError> {
    match client.describe_table().table_name(table).send().await {
        Ok(output) => Ok(output.table),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            Ok(None)
        }
        Err(error) => Err(classify("DescribeTable", error)),
    }
}

/// Creates the chargebacks table and its date index per the table contract
/// unless they exist; safe to run again, and against a table created by
/// someone else (its own key schema and billing stay as they are). An index
/// of that name with another key schema is an error: it cannot be fixed in
/// place. A date index added to an existing table, or found being built, is
/// waited for up to `index_wait` (zero: not at all); the table's layout then
/// says whether it is active.
pub async fn ensure_table(
    client: &Client,
    table: &str,
    index_name: &str,
    shape: TableShape,
    index_wait: Duration,
) -> Result<Ensured, StoreError> {
    let Some(described) = describe_if_exists(client, table).await? else {
        return match create_table(client, table, index_name, shape).await {
            Ok(()) => Ok(Ensured::Created),
            // Created meanwhile by someone else: check it like any existing table.
            Err(error) if error.code.as_deref() == Some("ResourceInUseException") => {
                Box::pin(ensure_table(client, table, index_name, shape, index_wait)).await
            }
            Err(error) => Err(error),
        };
    };
    let index = described
        .global_secondary_indexes()
        .iter()
        .find(|i| i.index_name() == Some(index_name));
    match (index, shape.index) {
        (Some(index), _) => {
            let key_of = |kind: KeyType| {
                index
                    .key_schema()
                    .iter()
                    .find(|k| *k.key_type() == kind)
                    .map(|k| k.attribute_name().to_owned())
            };
            let keys = (key_of(KeyType::Hash), key_of(KeyType::Range));
            if keys
                != (
                    Some(PARTITION_DATE_ATTRIBUTE.to_owned()),
                    Some(CREATED_AT_ATTRIBUTE.to_owned()),
                )
            {
                return Err(StoreError::new(
                    ErrorClass::Setup,
                    "DescribeTable",
                    format!(
                        "table {table} has an index {index_name} keyed on {:?} and {:?}, not \
                         {PARTITION_DATE_ATTRIBUTE} and {CREATED_AT_ATTRIBUTE}; delete it or \
                         name another with CHARGEBACK_DATE_INDEX",
                        keys.0, keys.1
                    ),
                ));
            }
            if index_not_ready(index).is_some() {
                wait_for_index(client, table, index_name, index_wait).await?;
            }
            Ok(Ensured::AlreadyThere)
        }
        (None, None) => Ok(Ensured::AlreadyThere),
        (None, Some(projection)) => {
            add_index(client, table, index_name, projection, index_wait).await?;
            Ok(Ensured::IndexAdded)
        }
    }
}

fn projection_of(projection: IndexProjection) -> Projection {
    match projection {
        IndexProjection::KeysOnly => Projection::builder()
            .projection_type(ProjectionType::KeysOnly)
            .build(),
        IndexProjection::IncludeExecution => Projection::builder()
            .projection_type(ProjectionType::Include)
            .non_key_attributes(EXECUTION_ATTRIBUTE)
            .build(),
    }
}

fn date_index(
    index_name: &str,
    projection: IndexProjection,
) -> Result<GlobalSecondaryIndex, StoreError> {
    GlobalSecondaryIndex::builder()
        .index_name(index_name)
        .key_schema(key(PARTITION_DATE_ATTRIBUTE, KeyType::Hash)?)
        .key_schema(key(CREATED_AT_ATTRIBUTE, KeyType::Range)?)
        .projection(projection_of(projection))
        .build()
        .map_err(|e| StoreError::new(ErrorClass::Permanent, "CreateTable", e.to_string()))
}

/// Adds the date index to an existing table (on-demand tables need no
/// throughput for it) and waits up to `wait` for it to become active.
async fn add_index(
    client: &Client,
    table: &str,
    index_name: &str,
    projection: IndexProjection,
    wait: Duration,
) -> Result<(), StoreError> {
    let index = date_index(index_name, projection)?;
    let create = CreateGlobalSecondaryIndexAction::builder()
        .index_name(index.index_name())
        .set_key_schema(Some(index.key_schema().to_vec()))
        .set_projection(index.projection().cloned())
        .build()
        .map_err(|e| StoreError::new(ErrorClass::Permanent, "UpdateTable", e.to_string()))?;
    client
        .update_table()
        .table_name(table)
        .attribute_definitions(string_attribute(PARTITION_DATE_ATTRIBUTE)?)
        .attribute_definitions(string_attribute(CREATED_AT_ATTRIBUTE)?)
        .global_secondary_index_updates(
            GlobalSecondaryIndexUpdate::builder().create(create).build(),
        )
        .send()
        .await
        .map_err(|e| classify("UpdateTable", e))?;
    wait_for_index(client, table, index_name, wait).await
}

/// How long a new table may take to become active.
const TABLE_WAIT: Duration = Duration::from_secs(60);

/// How a wait polls `DescribeTable`: at once and often at first (local
/// servers answer within a second), then less often (it is a control-plane
/// call, and an index's backfill on a large table takes minutes to hours).
#[derive(Debug, Clone, Copy)]
struct Polling {
    first: Duration,
    longest: Duration,
    /// How often a wait still going says so (INFO).
    progress_every: Duration,
}

const POLLING: Polling = Polling {
    first: Duration::from_millis(100),
    longest: Duration::from_secs(5),
    progress_every: Duration::from_secs(15),
};

/// Asks `not_ready` until it answers `None` (ready) or `limit` has passed,
/// saying every `progress_every` what it still waits for. Returns the last
/// status when `limit` passed first.
async fn poll_until_ready<F, Fut>(
    polling: Polling,
    limit: Duration,
    what: &str,
    mut not_ready: F,
) -> Result<Option<String>, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<String>, StoreError>>,
{
    let started = Instant::now();
    let mut delay = polling.first;
    let mut next_progress = polling.progress_every;
    loop {
        let Some(status) = not_ready().await? else {
            return Ok(None);
        };
        let waited = started.elapsed();
        if waited >= limit {
            return Ok(Some(status));
        }
        if waited >= next_progress {
            info!(
                status = %status,
                waited_seconds = waited.as_secs(),
                limit_seconds = limit.as_secs(),
                "waiting for {what} to become active"
            );
            next_progress += polling.progress_every;
        }
        tokio::time::sleep(delay.min(limit - waited)).await;
        delay = (delay * 2).min(polling.longest);
    }
}

/// What keeps the table (and the named index) from being usable: `None`
/// once both are active.
async fn not_active(
    client: &Client,
    table: &str,
    index_name: Option<&str>,
) -> Result<Option<String>, StoreError> {
    let described = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| classify("DescribeTable", e))?;
    let Some(described) = described.table() else {
        return Ok(Some("not described".to_owned()));
    };
    if described.table_status() != Some(&TableStatus::Active) {
        let status = described
            .table_status()
            .map_or("no status", TableStatus::as_str);
        return Ok(Some(format!("table {status}")));
    }
    let Some(name) = index_name else {
        return Ok(None);
    };
    Ok(
        match described
            .global_secondary_indexes()
            .iter()
            .find(|i| i.index_name() == Some(name))
        {
            None => Some("index not listed yet".to_owned()),
            Some(index) => index_not_ready(index).map(|status| format!("index {status}")),
        },
    )
}

/// Waits until the table (and the named index) are active: up to a minute,
/// for a table just created (with its index, which then has nothing to
/// backfill).
pub(super) async fn wait_until_active(
    client: &Client,
    table: &str,
    index_name: Option<&str>,
) -> Result<(), StoreError> {
    let what = format!("table {table}");
    match poll_until_ready(POLLING, TABLE_WAIT, &what, || {
        not_active(client, table, index_name)
    })
    .await?
    {
        None => Ok(()),
        Some(status) => Err(StoreError::new(
            ErrorClass::Setup,
            "DescribeTable",
            format!("table {table} did not become active within a minute ({status})"),
        )),
    }
}

/// Waits up to `limit` for the date index of an existing table to become
/// active (DynamoDB builds it from the table's items first). Whether it did
/// is for the caller to read from the table's layout.
async fn wait_for_index(
    client: &Client,
    table: &str,
    index_name: &str,
    limit: Duration,
) -> Result<(), StoreError> {
    let what = format!("the date index {index_name} of table {table}");
    poll_until_ready(POLLING, limit, &what, || {
        not_active(client, table, Some(index_name))
    })
    .await
    .map(drop)
}

/// A chargeback as a DynamoDB item.
pub(crate) fn chargeback_item(
    chargeback: &Chargeback,
) -> HashMap<String, aws_sdk_dynamodb::types::AttributeValue> {
    use aws_sdk_dynamodb::types::AttributeValue::{N, S};
    HashMap::from([
        (HASH_KEY.to_owned(), S(chargeback.chargeback_id.clone())),
        (
            PARTITION_DATE_ATTRIBUTE.to_owned(),
            S(chargeback.partition_date.clone()),
        ),
        (
            CREATED_AT_ATTRIBUTE.to_owned(),
            S(chargeback.created_at.clone()),
        ),
        ("merchant_id".to_owned(), S(chargeback.merchant_id.clone())),
        (
            "amount_cents".to_owned(),
            N(chargeback.amount_cents.to_string()),
        ),
        ("currency".to_owned(), S(chargeback.currency.to_owned())),
        (
            "reason_code".to_owned(),
            S(chargeback.reason_code.to_owned()),
        ),
        ("status".to_owned(), S("open".to_owned())),
    ])
}

/// Writes chargebacks with `BatchWriteItem`, `concurrency` requests at a time,
/// resending whatever the server leaves unprocessed. Returns how many were written.
pub async fn put_chargebacks(
    client: &Client,
    table: &str,
    chargebacks: impl Iterator<Item = Chargeback>,
    concurrency: usize,
) -> Result<u64, StoreError> {
    let mut in_flight = JoinSet::new();
    let mut written = 0_u64;
    let mut batch = Vec::with_capacity(BATCH_WRITE_LIMIT);
    let mut chargebacks = chargebacks.peekable();
    while chargebacks.peek().is_some() || !batch.is_empty() {
        batch.extend(chargebacks.by_ref().take(BATCH_WRITE_LIMIT - batch.len()));
        let requests = std::mem::take(&mut batch)
            .iter()
            .map(|c| {
                PutRequest::builder()
                    .set_item(Some(chargeback_item(c)))
                    .build()
                    .map(|put| WriteRequest::builder().put_request(put).build())
                    .map_err(|e| {
                        StoreError::new(ErrorClass::Permanent, "BatchWriteItem", e.to_string())
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if in_flight.len() >= concurrency.max(1)
            && let Some(done) = in_flight.join_next().await
        {
            written += joined(done)?;
        }
        in_flight.spawn(write_batch(client.clone(), table.to_owned(), requests));
    }
    while let Some(done) = in_flight.join_next().await {
        written += joined(done)?;
    }
    Ok(written)
}

fn joined(
    done: Result<Result<u64, StoreError>, tokio::task::JoinError>,
) -> Result<u64, StoreError> {
    done.map_err(|e| StoreError::new(ErrorClass::Transient, "BatchWriteItem", e.to_string()))?
}

async fn write_batch(
    client: Client,
    table: String,
    mut requests: Vec<WriteRequest>,
) -> Result<u64, StoreError> {
    let total = requests.len() as u64;
    for attempt in 0..10_u32 {
        let output = client
            .batch_write_item()
            .request_items(table.clone(), requests)
            .send()
            .await
            .map_err(|e| classify("BatchWriteItem", e))?;
        requests = output
            .unprocessed_items
            .and_then(|mut left| left.remove(&table))
            .unwrap_or_default();
        if requests.is_empty() {
            return Ok(total);
        }
        tokio::time::sleep(Duration::from_millis(20 << attempt.min(6))).await;
    }
    Err(StoreError::new(
        ErrorClass::Transient,
        "BatchWriteItem",
        "items left unprocessed after 10 attempts",
    ))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    const QUICK: Polling = Polling {
        first: Duration::from_millis(1),
        longest: Duration::from_millis(4),
        progress_every: Duration::from_millis(10),
    };

    /// Answers "not ready" `times` times, then ready; counts the asks.
    fn ready_after(
        times: usize,
        asked: &Cell<usize>,
    ) -> impl FnMut() -> std::future::Ready<Result<Option<String>, StoreError>> + '_ {
        move || {
            asked.set(asked.get() + 1);
            std::future::ready(Ok(
                (asked.get() <= times).then(|| "index CREATING, backfilling".to_owned())
            ))
        }
    }

    #[tokio::test]
    async fn a_wait_asks_again_until_the_index_is_active() {
        let asked = Cell::new(0);
        let ask = ready_after(3, &asked);
        let last = poll_until_ready(QUICK, Duration::from_secs(5), "the index", ask)
            .await
            .unwrap();
        assert_eq!(last, None);
        assert_eq!(asked.get(), 4);
    }

    #[tokio::test]
    async fn a_wait_that_runs_out_returns_the_last_status() {
        let asked = Cell::new(0);
        let ask = ready_after(usize::MAX, &asked);
        let started = Instant::now();
        let limit = Duration::from_millis(30);
        let last = poll_until_ready(QUICK, limit, "the index", ask)
            .await
            .unwrap();
        assert_eq!(last.as_deref(), Some("index CREATING, backfilling"));
        assert!(started.elapsed() >= limit);
        // Asked again after each delay, not only once.
        assert!(asked.get() >= 2, "asked {} times", asked.get());
    }

    #[tokio::test]
    async fn a_zero_wait_asks_once() {
        let asked = Cell::new(0);
        let ask = ready_after(usize::MAX, &asked);
        let last = poll_until_ready(QUICK, Duration::ZERO, "the index", ask)
            .await
            .unwrap();
        assert!(last.is_some());
        assert_eq!(asked.get(), 1);
    }

    #[tokio::test]
    async fn a_failed_describe_ends_the_wait_with_its_error() {
        let error = poll_until_ready(QUICK, Duration::from_secs(5), "the index", || async {
            Err::<Option<String>, _>(StoreError::new(
                ErrorClass::Setup,
                "DescribeTable",
                "AccessDeniedException",
            ))
        })
        .await
        .unwrap_err();
        assert_eq!(error.operation, "DescribeTable");
    }
}
