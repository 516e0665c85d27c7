//! Per-message outcomes, the ordering rule within a Kafka partition, and the
//! one place that turns outcomes into the Lambda response.

use std::future::Future;

use super::event::DecodeError;
use super::kafka::{BatchItemFailure, KafkaBatchResponse, KafkaMessage, MessageId, PartitionBatch};
use super::stamp::StampReport;
use crate::ports::StoreError;

/// How one message ended.
#[derive(Debug, Clone)]
pub enum MessageOutcome {
    /// Every selected record is at this execution or newer.
    Applied(StampReport),
    /// Another event type: not ours.
    Skipped { event_type: String },
    /// The message can never be applied; until the dead-letter queue exists it
    /// is handed back so that it is not lost.
    Invalid(DecodeError),
    /// The store failed after retries: handed back to Lambda for a retry.
    Failed(StoreError),
    /// Not attempted: an earlier message of the same partition was handed back,
    /// and Kafka partitions are applied in offset order.
    Blocked { behind: i64 },
}

impl MessageOutcome {
    /// Whether Lambda must deliver this message again.
    pub fn hands_back(&self) -> bool {
        matches!(
            self,
            Self::Invalid(_) | Self::Failed(_) | Self::Blocked { .. }
        )
    }

    pub fn label(&self) -> &'static str {
        match self {
            Self::Applied(_) => "applied",
            Self::Skipped { .. } => "skipped",
            Self::Invalid(_) => "invalid",
            Self::Failed(_) => "failed",
            Self::Blocked { .. } => "blocked",
        }
    }
}

/// Runs a partition's messages in offset order. Once one is handed back, the
/// rest are not attempted: Lambda resumes the partition from the first failure.
pub async fn run_in_offset_order<F, Fut>(
    batch: PartitionBatch,
    mut process: F,
) -> Vec<(MessageId, MessageOutcome)>
where
    F: FnMut(KafkaMessage) -> Fut,
    Fut: Future<Output = MessageOutcome>,
{
    let mut outcomes = Vec::with_capacity(batch.messages.len());
    let mut stopped_at = None;
    for message in batch.messages {
        let id = message.id.clone();
        let outcome = match stopped_at {
            Some(behind) => MessageOutcome::Blocked { behind },
            None => process(message).await,
        };
        if stopped_at.is_none() && outcome.hands_back() {
            stopped_at = Some(id.offset);
        }
        outcomes.push((id, outcome));
    }
    outcomes
}

/// Counts for the run summary and the seed's `METRICS:` line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchSummary {
    /// Consolidation messages fully applied.
    pub messages_processed: u64,
    pub messages_skipped: u64,
    /// Every message handed back (invalid, failed, or blocked behind one).
    pub messages_failed: u64,
    /// Records actually written.
    pub chargebacks_updated: u64,
    pub chargebacks_already_applied: u64,
    pub chargebacks_missing: u64,
    /// Records no later run will stamp, from the day's last execution.
    pub chargebacks_left_behind: u64,
}

impl BatchSummary {
    /// The line the runbook's CloudWatch Logs Insights query parses.
    pub fn metrics_line(&self) -> String {
        format!(
            "METRICS: messages_processed={}, messages_failed={}, chargebacks_updated={}",
            self.messages_processed, self.messages_failed, self.chargebacks_updated
        )
    }
}

/// The outcomes of every message in one invocation.
#[derive(Debug, Clone, Default)]
pub struct BatchOutcome {
    pub outcomes: Vec<(MessageId, MessageOutcome)>,
}

impl BatchOutcome {
    pub fn response(&self) -> KafkaBatchResponse {
        KafkaBatchResponse {
            batch_item_failures: self
                .outcomes
                .iter()
                .filter(|(_, outcome)| outcome.hands_back())
                .map(|(id, _)| BatchItemFailure::from(id))
                .collect(),
        }
    }

    pub fn summary(&self) -> BatchSummary {
        let mut summary = BatchSummary::default();
        for (_, outcome) in &self.outcomes {
            match outcome {
                MessageOutcome::Applied(report) => {
                    summary.messages_processed += 1;
                    summary.chargebacks_updated += report.written;
                    summary.chargebacks_already_applied += report.already_applied;
                    summary.chargebacks_missing += report.missing;
                    summary.chargebacks_left_behind += report.left_behind.unwrap_or(0);
                }
                MessageOutcome::Skipped { .. } => summary.messages_skipped += 1,
                MessageOutcome::Invalid(_)
                | MessageOutcome::Failed(_)
                | MessageOutcome::Blocked { .. } => summary.messages_failed += 1,
            }
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::ErrorClass;

    fn message(offset: i64) -> KafkaMessage {
        KafkaMessage {
            id: MessageId {
                partition: "t-0".into(),
                offset,
            },
            topic: "t".into(),
            partition: Some(0),
            timestamp: None,
            timestamp_type: None,
            key: None,
            value: None,
            headers: Vec::new(),
        }
    }

    fn applied(written: u64) -> MessageOutcome {
        MessageOutcome::Applied(StampReport {
            written,
            ..StampReport::default()
        })
    }

    fn failed() -> MessageOutcome {
        MessageOutcome::Failed(StoreError::new(
            ErrorClass::Transient,
            "UpdateItem",
            "throttled",
        ))
    }

    fn batch(offsets: &[i64]) -> PartitionBatch {
        PartitionBatch {
            partition: "t-0".into(),
            messages: offsets.iter().copied().map(message).collect(),
        }
    }

    #[tokio::test]
    async fn after_a_handed_back_message_the_rest_of_its_partition_is_not_attempted() {
        let mut attempted = Vec::new();
        let outcomes = run_in_offset_order(batch(&[10, 11, 12, 13]), |m| {
            attempted.push(m.id.offset);
            let outcome = if m.id.offset == 11 {
                failed()
            } else {
                applied(1)
            };
            async move { outcome }
        })
        .await;
        assert_eq!(attempted, [10, 11]);
        let labels: Vec<_> = outcomes
            .iter()
            .map(|(id, o)| (id.offset, o.label()))
            .collect();
        assert_eq!(
            labels,
            [
                (10, "applied"),
                (11, "failed"),
                (12, "blocked"),
                (13, "blocked")
            ]
        );
        assert!(matches!(
            outcomes[3].1,
            MessageOutcome::Blocked { behind: 11 }
        ));
    }

    #[tokio::test]
    async fn an_invalid_message_also_stops_its_partition() {
        let outcomes = run_in_offset_order(batch(&[1, 2]), |_| async {
            MessageOutcome::Invalid(DecodeError::MissingValue)
        })
        .await;
        assert_eq!(outcomes[1].1.label(), "blocked");
    }

    #[tokio::test]
    async fn skipped_messages_do_not_stop_their_partition() {
        let outcomes = run_in_offset_order(batch(&[1, 2]), |m| async move {
            if m.id.offset == 1 {
                MessageOutcome::Skipped {
                    event_type: "other".into(),
                }
            } else {
                applied(3)
            }
        })
        .await;
        assert_eq!(outcomes[1].1.label(), "applied");
    }

    #[test]
    fn the_response_lists_exactly_the_handed_back_messages() {
        let id = |offset| MessageId {
            partition: "t-0".into(),
            offset,
        };
        let outcome = BatchOutcome {
            outcomes: vec![
                (id(1), applied(5)),
                (
                    id(2),
                    MessageOutcome::Skipped {
                        event_type: "x".into(),
                    },
                ),
                (id(3), MessageOutcome::Invalid(DecodeError::EmptyJobName)),
                (id(4), failed()),
                (id(5), MessageOutcome::Blocked { behind: 3 }),
            ],
        };
        let listed: Vec<i64> = outcome
            .response()
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.offset)
            .collect();
        assert_eq!(listed, [3, 4, 5]);
        let summary = outcome.summary();
        assert_eq!(
            (
                summary.messages_processed,
                summary.messages_skipped,
                summary.messages_failed,
                summary.chargebacks_updated
            ),
            (1, 1, 3, 5)
        );
        assert_eq!(
            summary.metrics_line(),
            "METRICS: messages_processed=1, messages_failed=3, chargebacks_updated=5"
        );
    }

    #[test]
    fn an_all_good_batch_answers_with_an_empty_list() {
        let outcome = BatchOutcome {
            outcomes: vec![(
                MessageId {
                    partition: "t-0".into(),
                    offset: 1,
                },
                applied(0),
            )],
        };
        assert!(outcome.response().batch_item_failures.is_empty());
    }
}
