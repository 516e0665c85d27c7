//! The capabilities the core needs from the outside world, as narrow traits.
//! Adapters (under `store/`) implement them; unit tests use fakes.

use std::future::Future;

use crate::domain::dead_letter::DeadLetter;
use crate::domain::event::PartitionDate;
use crate::domain::failure::{SinkError, StoreError};
use crate::domain::outcome::FailureNotice;
use crate::domain::run::{
    Checkpoint, Completion, IndexPosition, Recorded, Run, RunCounts, RunStart, TableIdentity,
};
use crate::domain::stamp::{KeySelection, StampResult, StampValues};

/// One page of keys to stamp and where the next one starts.
pub struct KeyPage<K, C> {
    pub keys: Vec<K>,
    /// Records the read itself showed to be at this execution or newer:
    /// counted as already applied, never written.
    pub already_applied: u64,
    pub next: Option<C>,
}

/// The chargebacks table, as the fan-out sees it.
///
/// Keys are read page by page from one or more independent streams (one for an
/// index query, several for a parallel scan), and each key is stamped with one
/// conditional update.
pub trait ChargebackStore: Send + Sync + 'static {
    /// A record's primary key, opaque to the core.
    type Key: Send + Sync + 'static;
    /// Where a stream's next page starts.
    type Cursor: Clone + Send + Sync + 'static;
    /// A stamp turned into the adapter's request form once per message.
    type PreparedStamp: Send + Sync + 'static;

    /// The table's name and the `TableId` DynamoDB gave it, which the run
    /// ledger keys its runs to.
    fn table_identity(&self) -> impl Future<Output = Result<TableIdentity, StoreError>> + Send;

    /// How many independent key streams a selection is read through.
    fn key_streams(&self) -> impl Future<Output = Result<u32, StoreError>> + Send;

    /// Where `cursor` stands in the date index, for a run's checkpoint;
    /// `None` when this store's cursors cannot resume a run (a scan).
    fn position(&self, _cursor: &Self::Cursor) -> Option<IndexPosition> {
        None
    }

    /// The cursor that resumes reading after `position`; `None` when this
    /// store cannot (a scan): the selection is then read from its start.
    fn cursor_at(&self, _position: &IndexPosition) -> Option<Self::Cursor> {
        None
    }

    fn key_page(
        &self,
        selection: &KeySelection,
        stream: u32,
        cursor: Option<Self::Cursor>,
    ) -> impl Future<Output = Result<KeyPage<Self::Key, Self::Cursor>, StoreError>> + Send;

    /// Turns a stamp into the adapter's request form, once per message.
    fn prepare_stamp(
        &self,
        values: &StampValues,
    ) -> impl Future<Output = Result<Self::PreparedStamp, StoreError>> + Send;

    /// Stamps one record if it exists and is not already at this execution or a newer one.
    fn stamp(
        &self,
        key: &Self::Key,
        stamp: &Self::PreparedStamp,
    ) -> impl Future<Output = Result<StampResult, StoreError>> + Send;

    /// How many records [`stamp_batch`](Self::stamp_batch) takes per request.
    fn batch_limit(&self) -> usize {
        1
    }

    /// Stamps up to [`batch_limit`](Self::batch_limit) records in one
    /// request: one result per key, in order. `Err` when the request as a
    /// whole failed (nothing is known of any key).
    fn stamp_batch(
        &self,
        keys: &[Self::Key],
        stamp: &Self::PreparedStamp,
    ) -> impl Future<Output = Result<Vec<Result<StampResult, StoreError>>, StoreError>> + Send {
        async move {
            let mut results = Vec::with_capacity(keys.len());
            for key in keys {
                results.push(self.stamp(key, stamp).await);
            }
            Ok(results)
        }
    }

    /// What [`stamp`](Self::stamp) would do, without writing: `Written` means
    /// "would be written" (for dry runs).
    fn check_stamp(
        &self,
        key: &Self::Key,
        stamp: &Self::PreparedStamp,
    ) -> impl Future<Output = Result<StampResult, StoreError>> + Send;

    /// How many records of `date` were created at or after `created_from`.
    fn count_created_from(
        &self,
        date: PartitionDate,
        created_from: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// A boxed future, for the rarely used ports held as trait objects.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where poison messages are parked, with their payload.
pub trait DeadLetterSink: Send + Sync {
    fn send<'a>(&'a self, letter: &'a DeadLetter) -> BoxFuture<'a, Result<(), SinkError>>;
}

/// Where one summary of an invocation's failures goes.
pub trait FailureNotifier: Send + Sync {
    fn publish<'a>(&'a self, notice: &'a FailureNotice) -> BoxFuture<'a, Result<(), SinkError>>;
}

/// Where an unfinished fan-out says how far it got: the run ledger's item of
/// its run. Saving never fails the fan-out.
pub trait Checkpoints: Send + Sync {
    /// The run's checkpoint, when a delivery resumes it: the fan-out reads
    /// the selection after it.
    fn resume_at(&self) -> Option<&IndexPosition>;

    /// Every selected record up to `position` is done, and `done` counts
    /// them, as far as this pass is concerned; `resumed`: this pass started
    /// after the run's previous checkpoint (whose counts come first).
    fn save(&self, position: IndexPosition, done: RunCounts, resumed: bool) -> BoxFuture<'_, ()>;
}

/// The run ledger: one item per (day, execution), written as a fan-out
/// starts and when it completes, read before one starts. Its errors are
/// never the invocation's: the caller stamps without it.
pub trait RunLedger: Send + Sync {
    /// Every run recorded for `date` (one strongly consistent read).
    fn runs_of_day(&self, date: PartitionDate) -> BoxFuture<'_, Result<Vec<Run>, StoreError>>;

    /// A fan-out of `run` starts: the run is created `in_progress`, or its
    /// deliveries counted; a completed run stays completed.
    fn start<'a>(&'a self, run: &'a RunStart) -> BoxFuture<'a, Result<(), StoreError>>;

    /// A fan-out of `run` finished every selected record with `counts`.
    fn complete<'a>(
        &'a self,
        run: &'a RunStart,
        counts: &'a RunCounts,
        rule: Completion,
    ) -> BoxFuture<'a, Result<Recorded, StoreError>>;

    /// An unfinished fan-out of `run` got this far: every selected record up
    /// to the checkpoint is done. Only forward (by `created_at`), only on an
    /// in-progress run of the same table and cutoff: `Ok(false)` when the
    /// ledger kept what it had. `replacing`: a checkpoint this pass could not
    /// start after (refused as a start key); while the ledger still holds
    /// it, this one replaces it even though it lies behind.
    fn save_checkpoint<'a>(
        &'a self,
        run: &'a RunStart,
        checkpoint: &'a Checkpoint,
        replacing: Option<&'a IndexPosition>,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Requests sent to the ledger so far, when the adapter counts them.
    fn requests_sent(&self) -> Option<u64> {
        None
    }
}
