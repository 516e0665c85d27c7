//! The DynamoDB adapter: the only place that speaks `AttributeValue`.
//!
//! Keys come from the date index (`partition_date` + `created_at`) page by
//! page, or from a parallel scan when the table has no such index. Each record
//! gets one conditional `UpdateItem`, or (`WRITE_MODE=batch-statement`) one
//! conditional PartiQL `UPDATE` in a `BatchExecuteStatement` of up to 25.
//!
//! One job per file: the table's layout (`layout`), reading keys (`reads`),
//! writing a stamp and the dry run's check (`writes`), the PartiQL batch
//! (`batch_statement`), what a failure means (`classify`), what the store has
//! cost (`usage`), what it logs (`events`), and tables for local use
//! (`provision`).

mod batch_statement;
mod classify;
pub(crate) mod events;
mod layout;
mod ledger;
pub(crate) mod ledger_table;
mod position;
pub(crate) mod provision;
mod reads;
mod usage;
mod writes;

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use tokio::sync::OnceCell;
use tracing::warn;

pub(crate) use self::batch_statement::BATCH_STATEMENT_LIMIT;
pub(crate) use self::classify::classify;
pub use self::layout::KeyReader;
pub(crate) use self::layout::{
    CREATED_AT_ATTRIBUTE, EXECUTION_ATTRIBUTE, PARTITION_DATE_ATTRIBUTE, TableLayout,
};
pub use self::ledger::DynamoLedger;
use self::usage::Usage;
pub(crate) use self::usage::WriteUnits;
pub(crate) use self::writes::PreparedUpdate;
use crate::config::WriteMode;
use crate::domain::event::PartitionDate;
use crate::domain::failure::StoreError;
use crate::domain::run::{IndexPosition, TableIdentity};
use crate::domain::stamp::{KeySelection, StampResult, StampValues};
use crate::ports::{ChargebackStore, KeyPage};

/// A primary key, as DynamoDB wants it back.
pub(crate) type ItemKey = HashMap<String, AttributeValue>;

pub struct DynamoStore {
    client: Client,
    /// The client as given, without this store's request counter.
    given: Client,
    table: String,
    index: String,
    layout: OnceCell<TableLayout>,
    write_mode: WriteMode,
    /// Keys per page read (`Limit`).
    keys_per_page: i32,
    usage: Usage,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>, index: impl Into<String>) -> Self {
        let usage = Usage::default();
        Self {
            client: usage.counting(&client),
            given: client,
            table: table.into(),
            index: index.into(),
            layout: OnceCell::new(),
            write_mode: WriteMode::default(),
            keys_per_page: reads::KEYS_PER_PAGE,
            usage,
        }
    }

    /// Requests sent to DynamoDB so far, every attempt included.
    pub fn requests_sent(&self) -> u64 {
        self.usage.requests_sent()
    }

    pub fn with_write_mode(mut self, mode: WriteMode) -> Self {
        self.write_mode = mode;
        self
    }

    /// Reads pages of at most `keys` keys (default 2,000; at least 1): a
    /// run's checkpoint moves a page at a time.
    pub fn with_keys_per_page(mut self, keys: u16) -> Self {
        self.keys_per_page = i32::from(keys.max(1));
        self
    }

    /// Write capacity units DynamoDB reported consuming for our writes so far
    /// (`ReturnConsumedCapacity`): the table's and its secondary indexes'. A
    /// write its condition refused is billed too, but reported only by
    /// `BatchExecuteStatement`, not on `UpdateItem`'s error.
    pub fn reported_write_units(&self) -> WriteUnits {
        self.usage.write_units()
    }

    /// The run ledger table `table`, reached the way this store reaches
    /// the chargebacks table.
    pub fn ledger(&self, table: &str, ttl_days: u32) -> DynamoLedger {
        DynamoLedger::new(&self.given, table, ttl_days)
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
}

impl ChargebackStore for DynamoStore {
    type Key = ItemKey;
    type Cursor = ItemKey;
    type PreparedStamp = PreparedUpdate;

    async fn table_identity(&self) -> Result<TableIdentity, StoreError> {
        Ok(TableIdentity {
            name: self.table.clone(),
            id: self.layout().await?.table_id.clone(),
        })
    }

    async fn key_streams(&self) -> Result<u32, StoreError> {
        Ok(match self.layout().await?.reader {
            KeyReader::Index { .. } => 1,
            KeyReader::Scan { segments, .. } => segments,
        })
    }

    /// A date-index cursor only: a scan segment's cannot resume a run.
    fn position(&self, cursor: &ItemKey) -> Option<IndexPosition> {
        match self.layout.get()?.reader {
            KeyReader::Index { .. } => position::position_of(cursor),
            KeyReader::Scan { .. } => None,
        }
    }

    fn cursor_at(&self, position: &IndexPosition) -> Option<ItemKey> {
        match self.layout.get()?.reader {
            KeyReader::Index { .. } => Some(position::key_at(position)),
            KeyReader::Scan { .. } => None,
        }
    }

    async fn key_page(
        &self,
        selection: &KeySelection,
        stream: u32,
        cursor: Option<ItemKey>,
    ) -> Result<KeyPage<ItemKey, ItemKey>, StoreError> {
        self.page_of_keys(selection, stream, cursor).await
    }

    async fn prepare_stamp(&self, stamp: &StampValues) -> Result<PreparedUpdate, StoreError> {
        let layout = self.layout().await?;
        Ok(PreparedUpdate::new(&self.table, layout, stamp))
    }

    async fn stamp(
        &self,
        key: &ItemKey,
        stamp: &PreparedUpdate,
    ) -> Result<StampResult, StoreError> {
        self.update_item(key, stamp).await
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
                results.push(self.update_item(key, stamp).await);
            }
            return Ok(results);
        }
        self.execute_statements(keys, stamp).await
    }

    async fn check_stamp(
        &self,
        key: &ItemKey,
        stamp: &PreparedUpdate,
    ) -> Result<StampResult, StoreError> {
        self.check(key, stamp).await
    }

    async fn count_created_from(
        &self,
        date: PartitionDate,
        created_from: &str,
    ) -> Result<u64, StoreError> {
        self.count_from(date, created_from).await
    }
}
