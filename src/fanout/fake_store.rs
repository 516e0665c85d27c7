//! An in-memory store behind the port, for the fan-out's unit tests only.
#![cfg(test)]

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::domain::event::PartitionDate;
use crate::domain::failure::{ErrorClass, StoreError};
use crate::domain::run::{IndexPosition, KeyPart, TableIdentity};
use crate::domain::stamp::{KeySelection, StampResult, StampValues};
use crate::ports::{ChargebackStore, KeyPage};

#[derive(Debug, Clone)]
pub(crate) struct FakeRecord {
    pub partition_date: String,
    pub created_at: String,
    pub execution: Option<u64>,
}

#[derive(Default)]
pub(crate) struct FakeStore {
    pub records: Mutex<BTreeMap<String, FakeRecord>>,
    pub page_size: usize,
    pub streams: u32,
    /// Fail the update of this key.
    pub fail_on: Option<String>,
    /// Fail every update (to prove none is attempted).
    pub fail_on_any: std::sync::atomic::AtomicBool,
    /// Answer this many more updates with a throttling error.
    pub throttle_next: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub deleted_before_update: Vec<String>,
    /// Count stamped records on read instead of returning their keys.
    pub sees_execution: bool,
    /// Records per write request (1: one update each).
    pub batch: usize,
    /// Write requests, and the updates in them (retries included).
    pub requests: AtomicUsize,
    pub updates: AtomicUsize,
    /// Answer this many more updates with a transient error (a 500).
    pub fail_transient_next: AtomicUsize,
    /// Admit at most this many writes per second (a bucket holding one
    /// second of them), throttling the rest as DynamoDB does.
    pub capacity: Option<Mutex<Capacity>>,
    /// Writes refused by `capacity`.
    pub refused: AtomicUsize,
    /// Cursors are positions a run can resume from (as a date index's are).
    pub resumable: bool,
    /// Refuse the next read that starts at a cursor, as DynamoDB refuses a
    /// start key from an index that changed.
    pub refuse_start: std::sync::atomic::AtomicBool,
    /// Key pages read.
    pub pages_read: AtomicUsize,
}

pub(crate) struct Capacity {
    pub per_second: f64,
    pub tokens: f64,
    pub at: std::time::Instant,
}

impl Capacity {
    pub(crate) fn new(per_second: f64) -> Mutex<Self> {
        Mutex::new(Self {
            per_second,
            tokens: per_second,
            at: std::time::Instant::now(),
        })
    }

    fn admit(&mut self) -> bool {
        let now = std::time::Instant::now();
        let elapsed = now.duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl FakeStore {
    pub(crate) fn with_records(records: impl IntoIterator<Item = (String, FakeRecord)>) -> Self {
        Self {
            records: Mutex::new(records.into_iter().collect()),
            page_size: 3,
            streams: 1,
            ..Self::default()
        }
    }

    pub(crate) fn execution_of(&self, id: &str) -> Option<u64> {
        self.records
            .lock()
            .unwrap()
            .get(id)
            .and_then(|r| r.execution)
    }
}

impl ChargebackStore for FakeStore {
    type Key = String;
    type Cursor = usize;
    type PreparedStamp = StampValues;

    async fn key_streams(&self) -> Result<u32, StoreError> {
        Ok(self.streams)
    }

    fn position(&self, cursor: &usize) -> Option<IndexPosition> {
        self.resumable.then(|| IndexPosition {
            created_at: format!("{cursor:08}"),
            key: BTreeMap::from([("at".to_owned(), KeyPart::N(cursor.to_string()))]),
        })
    }

    fn cursor_at(&self, position: &IndexPosition) -> Option<usize> {
        match position.key.get("at") {
            Some(KeyPart::N(at)) if self.resumable => at.parse().ok(),
            _ => None,
        }
    }

    async fn key_page(
        &self,
        selection: &KeySelection,
        stream: u32,
        cursor: Option<usize>,
    ) -> Result<KeyPage<String, usize>, StoreError> {
        if cursor.is_some() && self.refuse_start.swap(false, Ordering::Relaxed) {
            return Err(StoreError::new(
                ErrorClass::Permanent,
                "Query",
                "ValidationException: The provided starting key is invalid",
            ));
        }
        self.pages_read.fetch_add(1, Ordering::Relaxed);
        let date = selection.partition_date.to_string();
        let selected: Vec<String> = self
            .records
            .lock()
            .unwrap()
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as u32 % self.streams == stream)
            .filter(|(_, (_, r))| {
                r.partition_date == date
                    && r.created_at.as_str() < selection.created_before.as_str()
            })
            .map(|(_, (id, _))| id.clone())
            .collect();
        let start = cursor.unwrap_or(0);
        let end = (start + self.page_size).min(selected.len());
        let mut keys = selected[start..end].to_vec();
        let before = keys.len();
        if self.sees_execution {
            let records = self.records.lock().unwrap();
            keys.retain(|k| selection.needs_stamp(records[k].execution));
        }
        Ok(KeyPage {
            already_applied: (before - keys.len()) as u64,
            keys,
            next: (end < selected.len()).then_some(end),
        })
    }

    async fn prepare_stamp(&self, values: &StampValues) -> Result<StampValues, StoreError> {
        Ok(values.clone())
    }

    fn batch_limit(&self) -> usize {
        self.batch.max(1)
    }

    async fn stamp_batch(
        &self,
        keys: &[String],
        stamp: &StampValues,
    ) -> Result<Vec<Result<StampResult, StoreError>>, StoreError> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let mut results = Vec::with_capacity(keys.len());
        for key in keys {
            results.push(self.stamp(key, stamp).await);
        }
        Ok(results)
    }

    async fn stamp(&self, key: &String, stamp: &StampValues) -> Result<StampResult, StoreError> {
        self.updates.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::task::yield_now().await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self
            .throttle_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::new(
                ErrorClass::Throttled,
                "UpdateItem",
                "slow down",
            ));
        }
        if let Some(capacity) = &self.capacity
            && !capacity.lock().unwrap().admit()
        {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::new(
                ErrorClass::Throttled,
                "UpdateItem",
                "ProvisionedThroughputExceededException",
            )
            .with_throttling_reason(Some("TableWriteProvisionedThroughputExceeded".into())));
        }
        if self
            .fail_transient_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::new(
                ErrorClass::Transient,
                "UpdateItem",
                "InternalServerError",
            ));
        }
        if self.fail_on.as_deref() == Some(key.as_str()) || self.fail_on_any.load(Ordering::SeqCst)
        {
            return Err(StoreError::new(
                ErrorClass::Permanent,
                "UpdateItem",
                "ValidationException",
            ));
        }
        if self.deleted_before_update.contains(key) {
            return Ok(StampResult::Missing);
        }
        let mut records = self.records.lock().unwrap();
        let Some(record) = records.get_mut(key) else {
            return Ok(StampResult::Missing);
        };
        if record
            .execution
            .is_some_and(|e| e >= stamp.execution_sequence)
        {
            return Ok(StampResult::AlreadyApplied);
        }
        record.execution = Some(stamp.execution_sequence);
        Ok(StampResult::Written)
    }

    async fn check_stamp(
        &self,
        key: &String,
        stamp: &StampValues,
    ) -> Result<StampResult, StoreError> {
        let records = self.records.lock().unwrap();
        Ok(match records.get(key) {
            None => StampResult::Missing,
            Some(r) if r.execution.is_some_and(|e| e >= stamp.execution_sequence) => {
                StampResult::AlreadyApplied
            }
            Some(_) => StampResult::Written,
        })
    }

    async fn table_identity(&self) -> Result<TableIdentity, StoreError> {
        Ok(TableIdentity {
            name: "fake".into(),
            id: "fake-table-id".into(),
        })
    }

    async fn count_created_from(&self, date: PartitionDate, from: &str) -> Result<u64, StoreError> {
        let date = date.to_string();
        Ok(self
            .records
            .lock()
            .unwrap()
            .values()
            .filter(|r| r.partition_date == date && r.created_at.as_str() >= from)
            .count() as u64)
    }
}
