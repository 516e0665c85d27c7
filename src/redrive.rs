//! `consolidation-updater redrive`: replays dead-lettered messages through the
//! same decoding and stamping as a delivery, deleting each only once it has
//! been applied (or skipped as another event type).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::dead_letter::DeadLetter;
use crate::domain::event::decode_value;
use crate::domain::failure::SinkError;
use crate::domain::outcome::MessageOutcome;
use crate::handler::{BatchHandler, Invocation};
use crate::ports::ChargebackStore;
use crate::queue::sqs::DeadLetterReader;

/// How long a received message stays hidden from other readers: longer than
/// one replay takes, so no two redrives work on the same message.
const VISIBILITY: Duration = Duration::from_secs(300);

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RedriveSummary {
    pub examined: u64,
    /// Applied (or, in a dry run, would be) and deleted from the queue.
    pub redriven: u64,
    /// Left in the queue: which message, and why.
    pub still_failing: Vec<(String, String)>,
    /// Left in the queue unreplayed, because an earlier message of their
    /// partition is still failing and a FIFO queue keeps a partition's order.
    pub held_back: Vec<String>,
    /// FIFO message groups (partitions, as Lambda names them) this run
    /// stopped in: SQS hands out none of a group's later messages while an
    /// earlier one is in flight, so those were not even examined.
    pub stopped_groups: Vec<String>,
}

/// Replays up to `max` messages. A dry run decodes only: nothing is stamped,
/// nothing deleted, and every message is made visible again at the end.
///
/// A FIFO queue is replayed in order within each partition: at the first
/// message of a partition that still fails, the partition stops, and its
/// later messages stay in the queue behind it, untouched, for a later run.
pub async fn redrive<S: ChargebackStore>(
    reader: &DeadLetterReader,
    handler: &Arc<BatchHandler<S>>,
    max: Option<u64>,
    dry_run: bool,
) -> Result<RedriveSummary, SinkError> {
    let mut summary = RedriveSummary::default();
    let mut to_release = Vec::new();
    let limit = max.unwrap_or(u64::MAX);
    // A message seen twice means the queue has come round (a replay outlasted
    // the visibility timeout): everything left was examined already.
    let mut seen = HashSet::new();
    let mut stopped = HashSet::new();
    'receiving: while summary.examined < limit {
        let room = i32::try_from((limit - summary.examined).min(10)).unwrap_or(10);
        let batch = reader.receive(room, VISIBILITY).await?;
        if batch.is_empty() {
            break;
        }
        let mut batch = batch.into_iter();
        while let Some(parked) = batch.next() {
            if !seen.insert(parked.message_id.clone()) {
                to_release.push(parked.receipt_handle);
                to_release.extend(batch.map(|p| p.receipt_handle));
                break 'receiving;
            }
            summary.examined += 1;
            if parked.group.as_ref().is_some_and(|g| stopped.contains(g)) {
                summary.held_back.push(name_of(&parked.letter));
                to_release.push(parked.receipt_handle);
                continue;
            }
            match replay(&parked.letter, handler, dry_run).await {
                Ok(()) if dry_run => {
                    summary.redriven += 1;
                    to_release.push(parked.receipt_handle);
                }
                Ok(()) => {
                    reader.delete(&parked.receipt_handle).await?;
                    summary.redriven += 1;
                }
                Err(why) => {
                    summary.still_failing.push((name_of(&parked.letter), why));
                    to_release.push(parked.receipt_handle);
                    if let Some(group) = parked.group
                        && stopped.insert(group.clone())
                    {
                        summary.stopped_groups.push(group);
                    }
                }
            }
        }
    }
    // Only now: released earlier, a message would be received again in this run.
    for handle in to_release {
        reader.release(&handle).await?;
    }
    Ok(summary)
}

/// The message a parked body came from, as the summary names it.
fn name_of(letter: &Result<DeadLetter, String>) -> String {
    match letter {
        Ok(letter) => letter.message_id().to_string(),
        Err(_) => "(unreadable)".into(),
    }
}

/// Replays one parked message (in a dry run, only decodes it). `Err` says why
/// it stays in the queue.
async fn replay<S: ChargebackStore>(
    letter: &Result<DeadLetter, String>,
    handler: &Arc<BatchHandler<S>>,
    dry_run: bool,
) -> Result<(), String> {
    let letter = letter.as_ref().map_err(Clone::clone)?;
    if letter.value_truncated {
        return Err(
            "the value was truncated when it was dead-lettered; replay it from Kafka \
             (or the event source's on-failure destination)"
                .into(),
        );
    }
    if dry_run {
        return decode_value(letter.value.as_ref())
            .map(|_| ())
            .map_err(|problem| problem.to_string());
    }
    let invocation = Invocation::unbounded(format!("redrive-{}", letter.request_id));
    let outcome = handler
        .handle(letter.to_kafka_event(), &invocation)
        .await
        .map_err(|problem| problem.to_string())?;
    match outcome.outcomes.first().map(|(_, o)| o) {
        Some(
            MessageOutcome::Applied(_)
            | MessageOutcome::Skipped { .. }
            | MessageOutcome::Superseded { .. },
        ) => Ok(()),
        Some(other) => Err(other
            .problem()
            .map_or_else(|| other.label().to_owned(), |(_, text)| text)),
        None => Err("no outcome".into()),
    }
}
