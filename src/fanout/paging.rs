//! Reading the keys to stamp: one task per key stream of the store, each
//! reading its pages in turn (retried by the policy) and handing them to the
//! fan-out through a channel that holds a few pages ahead of the updates.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::field::Empty;
use tracing::{Instrument, Span, info_span};

use crate::domain::failure::{ErrorClass, StoreError};
use crate::domain::stamp::KeySelection;
use crate::ports::ChargebackStore;
use crate::retry::{InvocationControl, RetryPolicy};
use crate::telemetry::xray;

/// Pages read ahead of the updates, per key stream. Two keep the updates fed
/// while the next page is fetched, without holding many keys in memory.
const PAGES_AHEAD_PER_STREAM: usize = 2;

/// A page's keys to stamp, and how many records it showed already applied.
pub(super) type KeysRead<K> = (Vec<K>, u64);

/// What a key reader hands over: a page, or the failure that ended it.
pub(super) type PageRead<K> = Result<KeysRead<K>, StoreError>;

/// Starts one reader per key stream. The channel closes when every reader
/// has finished; dropping it stops them at their next page.
pub(super) fn start_key_readers<S: ChargebackStore>(
    store: &Arc<S>,
    selection: &KeySelection,
    streams: u32,
    policy: RetryPolicy,
    control: &Arc<InvocationControl>,
) -> (mpsc::Receiver<PageRead<S::Key>>, JoinSet<()>) {
    let (pages_tx, pages) =
        mpsc::channel(PAGES_AHEAD_PER_STREAM * usize::try_from(streams).unwrap_or(1));
    let mut readers = JoinSet::new();
    for stream in 0..streams {
        readers.spawn(
            read_key_stream(
                Arc::clone(store),
                selection.clone(),
                stream,
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
async fn read_key_stream<S: ChargebackStore>(
    store: Arc<S>,
    selection: KeySelection,
    stream: u32,
    policy: RetryPolicy,
    control: Arc<InvocationControl>,
    pages: mpsc::Sender<PageRead<S::Key>>,
) {
    let mut cursor: Option<S::Cursor> = None;
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
        match page {
            Ok(page) => {
                let worth_sending = !page.keys.is_empty() || page.already_applied > 0;
                if worth_sending
                    && pages
                        .send(Ok((page.keys, page.already_applied)))
                        .await
                        .is_err()
                {
                    return;
                }
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => return,
                }
            }
            Err(error) => {
                let _ = pages.send(Err(error)).await;
                return;
            }
        }
    }
}
