//! The DynamoDB adapter: the only place that speaks `AttributeValue`.
//!
//! Keys come from the date index (`partition_date` + `created_at`) page by
//! page, or from a parallel scan when the table has no such index. Each record
//! gets one conditional `UpdateItem`, or (`WRITE_MODE=batch-statement`) one
//! conditional PartiQL `UPDATE` in a `BatchExecuteStatement` of up to 25.

pub mod provision;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_config::environment::region::EnvironmentVariableRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_config::retry::RetryConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::batch_execute_statement::BatchExecuteStatementError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, BatchStatementErrorCodeEnum, BatchStatementRequest, BatchStatementResponse,
    ConsumedCapacity, KeyType, ProjectionType, ReturnConsumedCapacity,
    ReturnValuesOnConditionCheckFailure, Select, ThrottlingReason,
};
use tokio::sync::OnceCell;
use tracing::{info, warn};

use crate::config::{DEFAULT_REGION, WriteMode};
use crate::domain::event::PartitionDate;
use crate::domain::failure::{ErrorClass, StoreError};
use crate::domain::stamp::{KeySelection, STATUS_COMPLETED, StampResult, StampValues};
use crate::ports::{ChargebackStore, KeyPage};
use crate::retry::events::RequestFailed;
use crate::telemetry::events::{CountPageRead, KeyPageRead, RecordStamped, TableLayoutFound};

/// The attribute that records which execution stamped a record last.
pub const EXECUTION_ATTRIBUTE: &str = "consolidation_execution";
pub const PARTITION_DATE_ATTRIBUTE: &str = "partition_date";
pub const CREATED_AT_ATTRIBUTE: &str = "created_at";

/// Segments of the fallback scan. A scan reads the whole table, so it is
/// split to finish in a reasonable time; more segments than this only add
/// pagers competing with the updates for the same limiter.
const SCAN_SEGMENTS: u32 = 8;

/// A connect that takes longer than this will not succeed (no VPC endpoint,
/// wrong security group): fail fast so the message is handed back promptly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// DynamoDB answers in milliseconds; an attempt this slow is retried.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

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
/// Keys per page read. DynamoDB would return up to 1 MB, some 10,000 keys,
/// each a map of a few attributes once decoded: the benchmark's peak RSS grew
/// with those pages. This many keep a page near a megabyte of memory for one
/// read request per 2,000 records.
const KEYS_PER_PAGE: i32 = 2_000;

/// Statements per `BatchExecuteStatement`, DynamoDB's limit.
pub const BATCH_STATEMENT_LIMIT: usize = 25;

/// The records a message selects: its day, created before the cutoff.
const SELECTION_KEY_CONDITION: &str = "#date = :date AND #created < :before";

/// Loads the AWS configuration the standard way (environment, profile,
/// container or instance credentials, `AWS_ENDPOINT_URL*`) with our timeouts.
/// The region is `region` when given (`AWS_REGION`), else `AWS_DEFAULT_REGION`
/// or the profile's, else [`DEFAULT_REGION`]; never an instance-metadata
/// probe, which would stall a laptop.
pub async fn load_sdk_config(region: Option<&str>) -> SdkConfig {
    let region = match region {
        Some(region) => RegionProviderChain::first_try(Region::new(region.to_owned())),
        None => RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
            .or_else(ProfileFileRegionProvider::new())
            .or_else(Region::new(DEFAULT_REGION)),
    };
    aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        )
        // Our own policy (crate::retry) retries; two layers would multiply attempts.
        .retry_config(RetryConfig::disabled())
        // Responses are a few hundred bytes, each attempt is bounded by
        // ATTEMPT_TIMEOUT: the per-request throughput monitor buys nothing.
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .load()
        .await
}

/// How the table is laid out, read once with `DescribeTable`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableLayout {
    pub hash_key: String,
    pub range_key: Option<String>,
    pub reader: KeyReader,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyReader {
    /// Query the date index; when it projects `consolidation_execution`,
    /// records already stamped are counted on read and never written.
    Index { projects_execution: bool },
    /// No date index: a parallel scan with the same selection as a filter
    /// (slow and costly), which also sees `consolidation_execution`.
    Scan { segments: u32 },
}

pub struct DynamoStore {
    client: Client,
    table: String,
    index: String,
    layout: OnceCell<TableLayout>,
    write_mode: WriteMode,
    /// Write capacity units DynamoDB reported for our writes, in thousandths:
    /// the table's, and its indexes'.
    table_write_milliunits: AtomicU64,
    index_write_milliunits: AtomicU64,
    /// Requests sent (every attempt counts).
    requests: Arc<AtomicU64>,
}

/// Counts each request the client transmits, retries included.
#[derive(Debug)]
struct RequestCounter(Arc<AtomicU64>);

impl aws_sdk_dynamodb::config::Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_sdk_dynamodb::config::RuntimeComponents,
        _config: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>, index: impl Into<String>) -> Self {
        let requests = Arc::new(AtomicU64::new(0));
        let client = Client::from_conf(
            client
                .config()
                .to_builder()
                .interceptor(RequestCounter(Arc::clone(&requests)))
                .build(),
        );
        Self {
            client,
            table: table.into(),
            index: index.into(),
            layout: OnceCell::new(),
            write_mode: WriteMode::default(),
            table_write_milliunits: AtomicU64::new(0),
            index_write_milliunits: AtomicU64::new(0),
            requests,
        }
    }

    /// Requests sent to DynamoDB so far, every attempt included.
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn with_write_mode(mut self, mode: WriteMode) -> Self {
        self.write_mode = mode;
        self
    }

    /// Write capacity units DynamoDB reported consuming for our writes so far
    /// (`ReturnConsumedCapacity`): the table's and its secondary indexes'. A
    /// write its condition refused is billed too, but reported only by
    /// `BatchExecuteStatement`, not on `UpdateItem`'s error.
    pub fn reported_write_units(&self) -> WriteUnits {
        let units = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64 / 1000.0;
        WriteUnits {
            table: units(&self.table_write_milliunits),
            indexes: units(&self.index_write_milliunits),
        }
    }

    fn tally_capacity<'a>(&self, consumed: impl IntoIterator<Item = &'a ConsumedCapacity>) {
        let milli = |units: f64| (units * 1000.0).round() as u64;
        for capacity in consumed {
            let indexes: f64 = capacity
                .global_secondary_indexes()
                .into_iter()
                .flat_map(|gsi| gsi.values())
                .chain(
                    capacity
                        .local_secondary_indexes()
                        .into_iter()
                        .flat_map(|lsi| lsi.values()),
                )
                .filter_map(|c| c.capacity_units)
                .sum();
            // Older servers give only the total.
            let table = capacity
                .table()
                .and_then(|t| t.capacity_units)
                .unwrap_or_else(|| capacity.capacity_units.unwrap_or(0.0) - indexes);
            self.table_write_milliunits
                .fetch_add(milli(table), Ordering::Relaxed);
            self.index_write_milliunits
                .fetch_add(milli(indexes), Ordering::Relaxed);
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Reads the table layout now, at cold start. If DynamoDB does not answer,
    /// the first message tries again, so an outage is handled per message and
    /// never becomes an init failure.
    pub async fn warm_up(&self) {
        if let Err(error) = self.layout().await {
            warn!(
                table = %self.table,
                error = %error,
                "could not describe the table at start-up; will retry on the first message"
            );
        }
    }

    /// The table layout, described once (a failure is not kept: the next
    /// caller describes again).
    pub async fn layout(&self) -> Result<&TableLayout, StoreError> {
        self.layout.get_or_try_init(|| self.describe()).await
    }

    async fn describe(&self) -> Result<TableLayout, StoreError> {
        let output = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| classify("DescribeTable", e))?;
        let table = output.table().ok_or_else(|| {
            StoreError::new(
                ErrorClass::Setup,
                "DescribeTable",
                "no table description returned",
            )
        })?;
        let key_named = |kind: KeyType| {
            table
                .key_schema()
                .iter()
                .find(|k| *k.key_type() == kind)
                .map(|k| k.attribute_name().to_owned())
        };
        let hash_key = key_named(KeyType::Hash).ok_or_else(|| {
            StoreError::new(
                ErrorClass::Setup,
                "DescribeTable",
                "the table has no partition key",
            )
        })?;
        let index = table
            .global_secondary_indexes()
            .iter()
            .find(|i| i.index_name() == Some(self.index.as_str()));
        let reader = match index {
            Some(index) => {
                let index_key = |kind: KeyType| {
                    index
                        .key_schema()
                        .iter()
                        .find(|k| *k.key_type() == kind)
                        .map(|k| k.attribute_name())
                };
                if index_key(KeyType::Hash) != Some(PARTITION_DATE_ATTRIBUTE)
                    || index_key(KeyType::Range) != Some(CREATED_AT_ATTRIBUTE)
                {
                    return Err(StoreError::new(
                        ErrorClass::Setup,
                        "DescribeTable",
                        format!(
                            "index {} must have hash key {PARTITION_DATE_ATTRIBUTE} and range key \
                             {CREATED_AT_ATTRIBUTE}; it has {:?} and {:?}",
                            self.index,
                            index_key(KeyType::Hash),
                            index_key(KeyType::Range)
                        ),
                    ));
                }
                let projection = index.projection();
                let projects_execution = match projection.and_then(|p| p.projection_type()) {
                    Some(ProjectionType::All) => true,
                    Some(ProjectionType::Include) => projection.is_some_and(|p| {
                        p.non_key_attributes()
                            .iter()
                            .any(|a| a == EXECUTION_ATTRIBUTE)
                    }),
                    _ => false,
                };
                info!(
                    table = %self.table,
                    index = %self.index,
                    projects_execution,
                    "reading keys from the date index"
                );
                KeyReader::Index { projects_execution }
            }
            None => {
                warn!(
                    table = %self.table,
                    index = %self.index,
                    "the table has no date index: falling back to a parallel Scan of the whole \
                     table for every message, which is slow and consumes read capacity for \
                     every record of every day; create the index (see the README's table contract)"
                );
                KeyReader::Scan {
                    segments: SCAN_SEGMENTS,
                }
            }
        };
        let layout = TableLayout {
            hash_key,
            range_key: key_named(KeyType::Range),
            reader,
        };
        let projection = index.and_then(|i| i.projection());
        TableLayoutFound {
            table: &self.table,
            hash_key: &layout.hash_key,
            range_key: layout.range_key.as_deref(),
            index: &self.index,
            reader: match layout.reader {
                KeyReader::Index { .. } => "index",
                KeyReader::Scan { .. } => "scan",
            },
            projection: projection
                .and_then(|p| p.projection_type())
                .map(ProjectionType::as_str),
            projected_attributes: projection
                .map(|p| p.non_key_attributes().join(","))
                .unwrap_or_default(),
            projects_execution: matches!(
                layout.reader,
                KeyReader::Index {
                    projects_execution: true
                } | KeyReader::Scan { .. }
            ),
            scan_segments: match layout.reader {
                KeyReader::Scan { segments } => Some(segments),
                KeyReader::Index { .. } => None,
            },
        }
        .emit();
        Ok(layout)
    }

    fn key_projection(layout: &TableLayout) -> (String, HashMap<String, String>) {
        let mut names = HashMap::from([("#pk".to_owned(), layout.hash_key.clone())]);
        match &layout.range_key {
            Some(range) => {
                names.insert("#sk".to_owned(), range.clone());
                ("#pk, #sk".to_owned(), names)
            }
            None => ("#pk".to_owned(), names),
        }
    }
}

/// A prepared conditional update: expression values built once per message.
pub struct PreparedUpdate {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
    condition: &'static str,
    execution: u64,
    replace_same_execution: bool,
    /// The same update as a PartiQL statement, for `BatchExecuteStatement`.
    statement: String,
    /// Its parameters before the key's: the stamped values.
    set_parameters: Vec<AttributeValue>,
    /// The key attributes, in the statement's `WHERE` order.
    key_attributes: Vec<String>,
}

/// Write capacity units, as `ReturnConsumedCapacity=INDEXES` splits them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WriteUnits {
    pub table: f64,
    pub indexes: f64,
}

/// A primary key, as DynamoDB wants it back.
pub type ItemKey = HashMap<String, AttributeValue>;

impl ChargebackStore for DynamoStore {
    type Key = ItemKey;
    type Cursor = ItemKey;
    type PreparedStamp = PreparedUpdate;

    async fn key_streams(&self) -> Result<u32, StoreError> {
        Ok(match self.layout().await?.reader {
            KeyReader::Index { .. } => 1,
            KeyReader::Scan { segments } => segments,
        })
    }

    async fn key_page(
        &self,
        selection: &KeySelection,
        stream: u32,
        cursor: Option<ItemKey>,
    ) -> Result<KeyPage<ItemKey, ItemKey>, StoreError> {
        let layout = self.layout().await?;
        let (mut projection, mut names) = Self::key_projection(layout);
        // Where the read can see `consolidation_execution`, records already at
        // this execution or newer are counted here and never written. A
        // FilterExpression would cost the same read units but hide the count.
        let sees_execution = match layout.reader {
            KeyReader::Index { projects_execution } => projects_execution,
            KeyReader::Scan { .. } => true,
        };
        if sees_execution {
            projection.push_str(", #execution");
            names.insert("#execution".into(), EXECUTION_ATTRIBUTE.into());
        }
        names.insert("#date".into(), PARTITION_DATE_ATTRIBUTE.into());
        names.insert("#created".into(), CREATED_AT_ATTRIBUTE.into());
        let values = HashMap::from([
            (
                ":date".to_owned(),
                AttributeValue::S(selection.partition_date.to_string()),
            ),
            (
                ":before".to_owned(),
                AttributeValue::S(selection.created_before.clone()),
            ),
        ]);
        let started = Instant::now();
        let (items, next) = match layout.reader {
            KeyReader::Index { .. } => {
                let output = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(&self.index)
                    .key_condition_expression(SELECTION_KEY_CONDITION)
                    .limit(KEYS_PER_PAGE)
                    .projection_expression(projection)
                    .set_expression_attribute_names(Some(names))
                    .set_expression_attribute_values(Some(values))
                    .set_exclusive_start_key(cursor)
                    .send()
                    .await
                    .map_err(|e| classify("Query", e))?;
                (output.items, output.last_evaluated_key)
            }
            KeyReader::Scan { segments } => {
                let output = self
                    .client
                    .scan()
                    .table_name(&self.table)
                    .segment(i32::try_from(stream).unwrap_or(0))
                    .total_segments(i32::try_from(segments).unwrap_or(1))
                    .filter_expression(SELECTION_KEY_CONDITION)
                    .limit(KEYS_PER_PAGE)
                    .projection_expression(projection)
                    .set_expression_attribute_names(Some(names))
                    .set_expression_attribute_values(Some(values))
                    .set_exclusive_start_key(cursor)
                    .send()
                    .await
                    .map_err(|e| classify("Scan", e))?;
                (output.items, output.last_evaluated_key)
            }
        };
        let duration = started.elapsed();
        let operation = match layout.reader {
            KeyReader::Index { .. } => "Query",
            KeyReader::Scan { .. } => "Scan",
        };
        let mut keys = items.unwrap_or_default();
        let before = keys.len();
        if sees_execution {
            keys.retain_mut(|item| {
                let stamped = item
                    .remove(EXECUTION_ATTRIBUTE)
                    .and_then(|v| v.as_n().ok().and_then(|n| n.parse::<u64>().ok()));
                let needs = selection.needs_stamp(stamped);
                if !needs {
                    RecordStamped {
                        operation,
                        key: &KeyText(item),
                        result: StampResult::AlreadyApplied,
                    }
                    .emit();
                }
                needs
            });
        }
        let next = next.filter(|k| !k.is_empty());
        let already_applied = (before - keys.len()) as u64;
        let (first, last, position) = (
            keys.first().map(KeyText),
            keys.last().map(KeyText),
            next.as_ref().map(KeyText),
        );
        KeyPageRead {
            operation,
            segment: matches!(layout.reader, KeyReader::Scan { .. }).then_some(stream),
            keys: keys.len(),
            already_applied_on_read: already_applied,
            first_key: first.as_ref().map(|k| k as _),
            last_key: last.as_ref().map(|k| k as _),
            duration,
            position: position.as_ref().map(|k| k as _),
        }
        .emit();
        Ok(KeyPage {
            already_applied,
            keys,
            next,
        })
    }

    async fn prepare_stamp(&self, stamp: &StampValues) -> Result<PreparedUpdate, StoreError> {
        let layout = self.layout().await?;
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
        Ok(PreparedUpdate {
            statement: partiql_update(&self.table, &key_attributes, stamp.replace_same_execution),
            set_parameters,
            key_attributes,
            condition: if stamp.replace_same_execution {
                REPLACE_CONDITION
            } else {
                UPDATE_CONDITION
            },
            execution: stamp.execution_sequence,
            replace_same_execution: stamp.replace_same_execution,
            names: HashMap::from([("#pk".to_owned(), layout.hash_key.clone())]),
            values: HashMap::from([
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
        })
    }

    async fn stamp(
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
            .set_expression_attribute_names(Some(stamp.names.clone()))
            .set_expression_attribute_values(Some(stamp.values.clone()))
            // Tells "already at this execution or newer" from "gone" at no extra cost.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Indexes)
            .send()
            .await;
        let stamped = match result {
            Ok(output) => {
                self.tally_capacity(output.consumed_capacity());
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
                    let reason = match other {
                        UpdateItemError::ProvisionedThroughputExceededException(e) => {
                            first_reason(e.throttling_reasons())
                        }
                        UpdateItemError::ThrottlingException(e) => {
                            first_reason(e.throttling_reasons())
                        }
                        UpdateItemError::RequestLimitExceeded(e) => {
                            first_reason(e.throttling_reasons())
                        }
                        _ => None,
                    };
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

    fn batch_limit(&self) -> usize {
        match self.write_mode {
            WriteMode::UpdateItem => 1,
            WriteMode::BatchStatement => BATCH_STATEMENT_LIMIT,
        }
    }

    async fn stamp_batch(
        &self,
        keys: &[ItemKey],
        stamp: &PreparedUpdate,
    ) -> Result<Vec<Result<StampResult, StoreError>>, StoreError> {
        if keys.len() <= 1 && self.write_mode == WriteMode::UpdateItem {
            let mut results = Vec::with_capacity(keys.len());
            for key in keys {
                results.push(self.stamp(key, stamp).await);
            }
            return Ok(results);
        }
        let statements = keys
            .iter()
            .map(|key| {
                let mut parameters = stamp.set_parameters.clone();
                for attribute in &stamp.key_attributes {
                    parameters.push(key.get(attribute).cloned().ok_or_else(|| {
                        StoreError::new(
                            ErrorClass::Permanent,
                            "BatchExecuteStatement",
                            format!("a key without its {attribute} attribute"),
                        )
                    })?);
                }
                parameters.push(AttributeValue::N(stamp.execution.to_string()));
                BatchStatementRequest::builder()
                    .statement(&stamp.statement)
                    .set_parameters(Some(parameters))
                    .return_values_on_condition_check_failure(
                        ReturnValuesOnConditionCheckFailure::AllOld,
                    )
                    .build()
                    .map_err(|e| {
                        StoreError::new(
                            ErrorClass::Permanent,
                            "BatchExecuteStatement",
                            e.to_string(),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output = self
            .client
            .batch_execute_statement()
            .set_statements(Some(statements))
            .return_consumed_capacity(ReturnConsumedCapacity::Indexes)
            .send()
            .await
            .map_err(|error| {
                let reason = match &error {
                    SdkError::ServiceError(service) => match service.err() {
                        BatchExecuteStatementError::ThrottlingException(e) => {
                            first_reason(e.throttling_reasons())
                        }
                        BatchExecuteStatementError::RequestLimitExceeded(e) => {
                            first_reason(e.throttling_reasons())
                        }
                        _ => None,
                    },
                    _ => None,
                };
                classify("BatchExecuteStatement", error).with_throttling_reason(reason)
            })?;
        self.tally_capacity(output.consumed_capacity());
        let responses = output.responses();
        if responses.len() != keys.len() {
            return Err(StoreError::new(
                ErrorClass::Transient,
                "BatchExecuteStatement",
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
                        operation: "BatchExecuteStatement",
                        key: &KeyText(key),
                        result: stamped,
                    }
                    .emit();
                }
                result
            })
            .collect())
    }

    async fn check_stamp(
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
            .expression_attribute_names("#pk", stamp.names.get("#pk").cloned().unwrap_or_default())
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
        let needs = execution.is_none_or(|e| {
            e < stamp.execution || (stamp.replace_same_execution && e == stamp.execution)
        });
        Ok(if needs {
            StampResult::Written
        } else {
            StampResult::AlreadyApplied
        })
    }

    async fn count_created_from(
        &self,
        date: PartitionDate,
        created_from: &str,
    ) -> Result<u64, StoreError> {
        let layout = self.layout().await?;
        let names = HashMap::from([
            ("#date".to_owned(), PARTITION_DATE_ATTRIBUTE.to_owned()),
            ("#created".to_owned(), CREATED_AT_ATTRIBUTE.to_owned()),
        ]);
        let values = HashMap::from([
            (":date".to_owned(), AttributeValue::S(date.to_string())),
            (
                ":from".to_owned(),
                AttributeValue::S(created_from.to_owned()),
            ),
        ]);
        let condition = "#date = :date AND #created >= :from";
        let mut total = 0_u64;
        let mut cursor = None;
        loop {
            let started = Instant::now();
            let (operation, count, next) = match layout.reader {
                KeyReader::Index { .. } => {
                    let output = self
                        .client
                        .query()
                        .table_name(&self.table)
                        .index_name(&self.index)
                        .key_condition_expression(condition)
                        .select(Select::Count)
                        .set_expression_attribute_names(Some(names.clone()))
                        .set_expression_attribute_values(Some(values.clone()))
                        .set_exclusive_start_key(cursor)
                        .send()
                        .await
                        .map_err(|e| classify("Query", e))?;
                    ("Query", output.count, output.last_evaluated_key)
                }
                KeyReader::Scan { .. } => {
                    let output = self
                        .client
                        .scan()
                        .table_name(&self.table)
                        .filter_expression(condition)
                        .select(Select::Count)
                        .set_expression_attribute_names(Some(names.clone()))
                        .set_expression_attribute_values(Some(values.clone()))
                        .set_exclusive_start_key(cursor)
                        .send()
                        .await
                        .map_err(|e| classify("Scan", e))?;
                    ("Scan", output.count, output.last_evaluated_key)
                }
            };
            let counted = u64::try_from(count).unwrap_or(0);
            total += counted;
            let next = next.filter(|k| !k.is_empty());
            let position = next.as_ref().map(KeyText);
            CountPageRead {
                operation,
                counted,
                duration: started.elapsed(),
                position: position.as_ref().map(|k| k as _),
            }
            .emit();
            match next {
                Some(next) => cursor = Some(next),
                None => return Ok(total),
            }
        }
    }
}

/// The conditional update as one PartiQL statement. Parameters: the eight
/// stamped values, the key attributes, the execution. An `UPDATE` of a key
/// that does not exist fails its condition and creates nothing, as
/// `attribute_exists` does for `UpdateItem`.
fn partiql_update(table: &str, key_attributes: &[String], replace_same_execution: bool) -> String {
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
        "BatchExecuteStatement",
        format!("{code}: {}", error.message().unwrap_or_default()),
    )
    .with_code(code))
}

/// Which limit a throttling answer names (the newer API's
/// `ThrottlingReasons`: `TableWriteProvisionedThroughputExceeded` and the
/// like). Per-statement errors of a batch carry none.
fn first_reason(reasons: &[ThrottlingReason]) -> Option<String> {
    reasons.iter().find_map(|r| r.reason()).map(str::to_owned)
}

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
pub fn classify<E>(operation: &'static str, error: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let code = match &error {
        SdkError::ServiceError(service) => service.err().code().unwrap_or("unknown"),
        SdkError::TimeoutError(_) => "TimeoutError",
        SdkError::ResponseError(_) => "ResponseError",
        SdkError::DispatchFailure(_) => "DispatchFailure",
        SdkError::ConstructionFailure(_) => "ConstructionFailure",
        _ => "unknown",
    }
    .to_owned();
    let class = match &error {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => ErrorClass::Transient,
        // No connection at all (refused, no route, connect timeout).
        SdkError::DispatchFailure(failure) if failure.is_io() || failure.is_timeout() => {
            ErrorClass::Unreachable
        }
        SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_) => ErrorClass::Setup,
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            if THROTTLING_CODES.contains(&code) {
                ErrorClass::Throttled
            } else if service.raw().status().is_server_error()
                || code == "TransactionConflictException"
            {
                ErrorClass::Transient
            } else if SETUP_CODES.contains(&code) {
                ErrorClass::Setup
            } else {
                ErrorClass::Permanent
            }
        }
        _ => ErrorClass::Transient,
    };
    // The whole chain is for DEBUG; the error itself says the root cause in
    // one line (a credentials failure's chain is three long lines).
    RequestFailed {
        operation,
        chain: &DisplayErrorContext(&error),
    }
    .emit();
    StoreError::new(class, operation, root_cause(&error)).with_code(code)
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

/// A key (or a read position) for a log line: its attributes by name,
/// `chargeback_id=cb-1, created_at=2025-11-20T01:00:00.000Z`.
struct KeyText<'a>(&'a ItemKey);

impl std::fmt::Display for KeyText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.0.keys().collect();
        names.sort();
        for (i, name) in names.into_iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match &self.0[name] {
                AttributeValue::S(text) => write!(f, "{name}={text}")?,
                AttributeValue::N(number) => write!(f, "{name}={number}")?,
                AttributeValue::B(bytes) => write!(f, "{name}=<{} bytes>", bytes.as_ref().len())?,
                other => write!(f, "{name}={other:?}")?,
            }
        }
        Ok(())
    }
}

/// A client for a local DynamoDB-compatible server (the embedded engine,
/// DynamoDB Local): the SDK configuration as loaded, with this endpoint and
/// static credentials, since a local server accepts any.
pub fn local_client(sdk: &SdkConfig, endpoint: &str) -> Client {
    let config = aws_sdk_dynamodb::config::Builder::from(sdk)
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "local", "local", None, None, "local",
        ))
        .build();
    Client::from_conf(config)
}

#[cfg(test)]
mod tests {
    use super::one_line;

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
