//! Reading the keys to stamp: one task per key stream of the store, each
//! reading its pages in turn (retried by the policy) and handing them to the
//! fan-out through a channel that holds a few pages ahead of the updates.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::field::Empty;
use tracing::{Instrument, Span, info_span, warn};

use crate::domain::failure::{ErrorClass, StoreError};
use crate::domain::stamp::KeySelection;
use crate::ports::ChargebackStore;
use crate::retry::{InvocationControl, RetryPolicy};
use crate::telemetry::xray;

/// Pages read ahead of the updates, per key stream. Two keep the updates fed
/// while the next page is fetched, without holding many keys in memory.
const PAGES_AHEAD_PER_STREAM: usize = 2;

/// A page's keys to stamp, how many records it showed already applied, and
/// where reading resumes after it (`None`: its stream's last page).
pub(super) struct KeysRead<K, C> {
    pub(super) keys: Vec<K>,
    pub(super) already_applied: u64,
    pub(super) next: Option<C>,
}

/// What a key reader hands over: a page, or the failure that ended it.
pub(super) type PageRead<K, C> = Result<KeysRead<K, C>, StoreError>;

/// The pages the readers hand over, in the order they are read.
pub(super) type Pages<S> =
    mpsc::Receiver<PageRead<<S as ChargebackStore>::Key, <S as ChargebackStore>::Cursor>>;

/// Where the one key stream of a resumed run starts, and whether the store
/// refused it (then the stream starts over from the beginning).
pub(super) struct StartAt<C> {
    pub(super) cursor: C,
    pub(super) refused: Arc<AtomicBool>,
}

/// Starts one reader per key stream (the first at `start`, when a run is
/// resumed). The channel closes when every reader has finished; dropping it
/// stops them at their next page.
pub(super) fn start_key_readers<S: ChargebackStore>(
    store: &Arc<S>,
    selection: &KeySelection,
    streams: u32,
    policy: RetryPolicy,
    control: &Arc<InvocationControl>,
    mut start: Option<StartAt<S::Cursor>>,
) -> (Pages<S>, JoinSet<()>) {
    let (pages_tx, pages) =
        mpsc::channel(PAGES_AHEAD_PER_STREAM * usize::try_from(streams).unwrap_or(1));
    let mut readers = JoinSet::new();
    for stream in 0..streams {
        readers.spawn(
            read_key_stream(
                Arc::clone(store),
                selection.clone(),
                stream,
                start.take(),
                policy,
                Arc::clone(control),
                pages_tx.clone(),
            )
            .instrument(Span::current()),
        );
    }
    (pages, readers)
}

/// Waits for every reader to end. A reader that ended abnormally closed its
/// side of the channel like a finished one: without this check its keys
/// would be silently skipped. Aborted readers are not a failure.
pub(super) async fn join_key_readers(mut readers: JoinSet<()>) -> Option<StoreError> {
    let mut failure = None;
    while let Some(joined) = readers.join_next().await {
        if let Err(join_error) = joined
            && !join_error.is_cancelled()
        {
            failure.get_or_insert(StoreError::new(
                ErrorClass::Transient,
                "key read",
                format!("a key reader ended abnormally: {join_error}"),
            ));
        }
    }
    failure
}

/// Reads one key stream to its end, or until the fan-out stops listening.
/// A resumed stream whose start the store refuses for good (DynamoDB says
/// `ValidationException` of a start key from an index that changed) starts
/// over: a full pass costs writes, never the message.
async fn read_key_stream<S: ChargebackStore>(
    store: Arc<S>,
    selection: KeySelection,
    stream: u32,
    start: Option<StartAt<S::Cursor>>,
    policy: RetryPolicy,
    control: Arc<InvocationControl>,
    pages: mpsc::Sender<PageRead<S::Key, S::Cursor>>,
) {
    let mut refused = start.as_ref().map(|s| Arc::clone(&s.refused));
    let mut cursor: Option<S::Cursor> = start.map(|s| s.cursor);
    loop {
        // One X-Ray subsegment per page read (retries included).
        let span = info_span!(
            "index page",
            stream,
            keys = Empty,
            already_applied = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        );
        let page = policy
            .run(None, &control, || {
                store.key_page(&selection, stream, cursor.clone())
            })
            .instrument(span.clone())
            .await;
        match &page {
            Ok(page) => {
                span.record("keys", xray::number(page.keys.len()));
                span.record("already_applied", xray::number(page.already_applied));
            }
            Err(error) => xray::record_failure(&span, &error.to_string()),
        }
        drop(span);
        // Only the first read can refuse the start.
        let first_of_resumed = refused.take();
        match page {
            Ok(page) => {
                let last = page.next.is_none();
                cursor.clone_from(&page.next);
                let read = KeysRead {
                    keys: page.keys,
                    already_applied: page.already_applied,
                    next: page.next,
                };
                if pages.send(Ok(read)).await.is_err() || last {
                    return;
                }
            }
            Err(error) if error.class == ErrorClass::Permanent && first_of_resumed.is_some() => {
                warn!(
                    error_kind = error.class.kind(),
                    operation = error.operation,
                    error = %error.message,
                    "the run's checkpoint was refused as a start key (the index changed since, \
                     or the key is stale); reading the day from its start instead"
                );
                if let Some(refused) = first_of_resumed {
                    refused.store(true, Ordering::Relaxed);
                }
                cursor = None;
            }
            Err(error) => {
                let _ = pages.send(Err(error)).await;
                return;
            }
        }
    }
}
