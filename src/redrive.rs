//! `consolidation-updater redrive`: replays dead-lettered messages through the
//! same decoding and stamping as a delivery, deleting each only once it has
//! been applied (or skipped as another event type).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::event::decode_value;
use crate::domain::outcome::MessageOutcome;
use crate::handler::{BatchHandler, Invocation};
use crate::ports::{ChargebackStore, SinkError};
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
}

/// Replays up to `max` messages. A dry run decodes only: nothing is stamped,
/// nothing deleted, and every message is made visible again at the end.
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
            let letter = match parked.letter {
                Ok(letter) => letter,
                Err(why) => {
                    summary.still_failing.push(("(unreadable)".into(), why));
                    to_release.push(parked.receipt_handle);
                    continue;
                }
            };
            let name = letter.message_id().to_string();
            if letter.value_truncated {
                summary.still_failing.push((
                    name,
                    "the value was truncated when it was dead-lettered; replay it from Kafka \
                     (or the event source's on-failure destination)"
                        .into(),
                ));
                to_release.push(parked.receipt_handle);
                continue;
            }
            if dry_run {
                match decode_value(letter.value.as_ref()) {
                    Ok(_) => summary.redriven += 1,
                    Err(problem) => summary.still_failing.push((name, problem.to_string())),
                }
                to_release.push(parked.receipt_handle);
                continue;
            }
            let invocation = Invocation::unbounded(format!("redrive-{}", letter.request_id));
            let outcome = match handler.handle(letter.to_kafka_event(), &invocation).await {
                Ok(outcome) => outcome,
                Err(problem) => {
                    summary.still_failing.push((name, problem.to_string()));
                    to_release.push(parked.receipt_handle);
                    continue;
                }
            };
            match outcome.outcomes.first().map(|(_, o)| o) {
                Some(MessageOutcome::Applied(_) | MessageOutcome::Skipped { .. }) => {
                    reader.delete(&parked.receipt_handle).await?;
                    summary.redriven += 1;
                }
                Some(other) => {
                    let why = other
                        .problem()
                        .map_or_else(|| other.label().to_owned(), |(_, text)| text);
                    summary.still_failing.push((name, why));
                    to_release.push(parked.receipt_handle);
                }
                None => {
                    summary.still_failing.push((name, "no outcome".into()));
                    to_release.push(parked.receipt_handle);
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
