//! Per-message outcomes, the ordering rule within a Kafka partition, and the
//! one place that turns outcomes into the Lambda response.

use std::collections::BTreeMap;
use std::future::Future;

use serde::Serialize;

use super::dead_letter::Poison;
use super::event::DecodeError;
use super::failure::{SinkError, StopReason, StoreError};
use super::kafka::{BatchItemFailure, KafkaBatchResponse, KafkaMessage, MessageId, PartitionBatch};
use super::stamp::StampReport;

/// How one message ended.
#[derive(Debug, Clone)]
pub enum MessageOutcome {
    /// Every selected record is at this execution or newer.
    Applied(StampReport),
    /// Another event type: not ours.
    Skipped { event_type: String },
    /// A completed run already did everything this event asks (same table,
    /// an execution and a cutoff at least as new): a run of the run ledger,
    /// or a newer event of the same day earlier in this batch's plan. No
    /// fan-out, nothing read from the day or written.
    Superseded { by_execution: u64 },
    /// The message can never be applied; it is parked in the dead-letter
    /// queue with its payload and counts as handled.
    DeadLettered(Poison),
    /// The message can never be applied, but could not be dead-lettered (no
    /// queue configured, or the send failed): handed back so it is not lost.
    Invalid {
        problem: DecodeError,
        not_dead_lettered: SinkError,
    },
    /// The store failed for good: handed back to Lambda for a retry.
    /// `done`: what was stamped before.
    Failed {
        error: StoreError,
        done: StampReport,
    },
    /// New work stopped before this message was done (deadline near, or a
    /// setup failure): handed back; the retry skips what is already stamped.
    Unfinished {
        reason: StopReason,
        done: StampReport,
    },
    /// Handed back because an earlier message of the same partition was
    /// (Lambda resumes a partition from its first listed message): not
    /// attempted, or, rarely, run out of offset order before the earlier one
    /// failed, in which case its redelivery finds it done.
    Blocked { behind: i64 },
}

impl MessageOutcome {
    /// Whether Lambda must deliver this message again.
    pub fn hands_back(&self) -> bool {
        matches!(
            self,
            Self::Invalid { .. }
                | Self::Failed { .. }
                | Self::Unfinished { .. }
                | Self::Blocked { .. }
        )
    }

    /// What went wrong, for the outcome's log line: the poison's kind, the
    /// store failure's class, or why the work stopped.
    pub fn error_kind(&self) -> Option<&str> {
        match self {
            Self::Applied(_)
            | Self::Skipped { .. }
            | Self::Superseded { .. }
            | Self::Blocked { .. } => None,
            Self::DeadLettered(poison) => Some(&poison.kind),
            Self::Invalid { problem, .. } => Some(problem.kind()),
            Self::Failed { error, .. } => Some(error.class.kind()),
            Self::Unfinished { reason, .. } => Some(reason.kind()),
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Self::Applied(_) => "applied",
            Self::Skipped { .. } => "skipped",
            Self::Superseded { .. } => "superseded",
            Self::DeadLettered(_) => "dead_lettered",
            Self::Invalid { .. } => "invalid",
            Self::Failed { .. } => "failed",
            Self::Unfinished { .. } => "unfinished",
            Self::Blocked { .. } => "blocked",
        }
    }

    /// The kind and text of what went wrong, for notifications.
    pub fn problem(&self) -> Option<(String, String)> {
        match self {
            Self::Applied(_)
            | Self::Skipped { .. }
            | Self::Superseded { .. }
            | Self::Blocked { .. } => None,
            Self::DeadLettered(poison) => Some((poison.kind.clone(), poison.message.clone())),
            Self::Invalid {
                problem,
                not_dead_lettered,
            } => Some((
                problem.kind().to_owned(),
                format!("{problem} (not dead-lettered: {not_dead_lettered})"),
            )),
            Self::Failed { error, .. } => Some((error.class.kind().to_owned(), error.to_string())),
            Self::Unfinished { reason, .. } => Some((reason.kind().to_owned(), reason.to_string())),
        }
    }
}

/// Runs a partition's messages: first, in offset order, every message that
/// does not follow another of the batch (see [`super::backlog`]); then, in
/// offset order, the followers, which wait for their leaders and so must not
/// hold up the rest of their partition (the leader may sit behind it in
/// another partition). Once a message is handed back, no message at a later
/// offset starts (`blocked` is told of each, and the offset it is behind),
/// and every later one is listed too: Lambda resumes a partition from its
/// first listed message, so one that already ran out of offset order is
/// listed anyway (`relisted` is told) and its redelivery finds it done.
pub(crate) async fn run_partition<F, Fut>(
    batch: PartitionBatch,
    follows: impl Fn(&MessageId) -> bool,
    mut process: F,
    mut blocked: impl FnMut(&KafkaMessage, i64),
    mut relisted: impl FnMut(&MessageId, &MessageOutcome, i64),
) -> Vec<(MessageId, MessageOutcome)>
where
    F: FnMut(KafkaMessage) -> Fut,
    Fut: Future<Output = MessageOutcome>,
{
    let mut outcomes = Vec::with_capacity(batch.messages.len());
    let (first, then): (Vec<_>, Vec<_>) = batch.messages.into_iter().partition(|m| !follows(&m.id));
    let mut stopped_at: Option<i64> = None;
    for message in first.into_iter().chain(then) {
        let id = message.id.clone();
        let outcome = match stopped_at {
            Some(behind) if behind < id.offset => {
                blocked(&message, behind);
                MessageOutcome::Blocked { behind }
            }
            _ => process(message).await,
        };
        if outcome.hands_back() {
            stopped_at = Some(stopped_at.map_or(id.offset, |s| s.min(id.offset)));
        }
        outcomes.push((id, outcome));
    }
    outcomes.sort_by_key(|(id, _)| id.offset);
    if let Some(first_listed) = stopped_at {
        for (id, outcome) in &mut outcomes {
            if id.offset > first_listed && !outcome.hands_back() {
                relisted(id, outcome, first_listed);
                *outcome = MessageOutcome::Blocked {
                    behind: first_listed,
                };
            }
        }
    }
    outcomes
}

/// Counts for the run summary and the seed's `METRICS:` line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchSummary {
    /// Consolidation messages fully applied.
    pub messages_processed: u64,
    pub messages_skipped: u64,
    /// Consolidation messages a completed run of the ledger answered.
    pub messages_superseded: u64,
    pub messages_dead_lettered: u64,
    /// Messages handed back to Lambda (listed in `batchItemFailures`).
    pub messages_retried: u64,
    /// Dead-lettered plus handed back.
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
                MessageOutcome::Superseded { .. } => summary.messages_superseded += 1,
                MessageOutcome::DeadLettered(_) => summary.messages_dead_lettered += 1,
                // Handed back, but what it wrote is written: counted too.
                MessageOutcome::Failed { done, .. } | MessageOutcome::Unfinished { done, .. } => {
                    summary.messages_retried += 1;
                    summary.chargebacks_updated += done.written;
                    summary.chargebacks_already_applied += done.already_applied;
                    summary.chargebacks_missing += done.missing;
                }
                MessageOutcome::Invalid { .. } | MessageOutcome::Blocked { .. } => {
                    summary.messages_retried += 1
                }
            }
        }
        summary.messages_failed = summary.messages_dead_lettered + summary.messages_retried;
        summary
    }

    /// One notice for the invocation, when anything was dead-lettered or handed back.
    pub fn failure_notice(&self, request_id: &str) -> Option<FailureNotice> {
        let summary = self.summary();
        if summary.messages_failed == 0 {
            return None;
        }
        let mut notice = FailureNotice {
            request_id: request_id.to_owned(),
            dead_lettered: summary.messages_dead_lettered,
            handed_back: summary.messages_retried,
            superseded: summary.messages_superseded,
            messages: BTreeMap::new(),
            first_error_by_kind: BTreeMap::new(),
        };
        for (id, outcome) in &self.outcomes {
            if !(outcome.hands_back() || matches!(outcome, MessageOutcome::DeadLettered(_))) {
                continue;
            }
            notice
                .messages
                .entry(id.partition.clone())
                .or_default()
                .push(NoticeEntry {
                    offset: id.offset,
                    outcome: outcome.label(),
                });
            if let Some((kind, text)) = outcome.problem() {
                notice.first_error_by_kind.entry(kind).or_insert(text);
            }
        }
        Some(notice)
    }
}

/// The one notification an invocation with failures publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureNotice {
    pub request_id: String,
    pub dead_lettered: u64,
    pub handed_back: u64,
    /// Messages of the invocation a completed run of the ledger answered
    /// (done, not failures: for context).
    pub superseded: u64,
    /// Per partition, the offsets and how each ended.
    pub messages: BTreeMap<String, Vec<NoticeEntry>>,
    pub first_error_by_kind: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NoticeEntry {
    pub offset: i64,
    pub outcome: &'static str,
}

impl FailureNotice {
    /// An SNS subject: under 100 characters, ASCII.
    pub fn subject(&self) -> String {
        format!(
            "consolidation-updater: {} dead-lettered, {} handed back",
            self.dead_lettered, self.handed_back
        )
    }

    pub fn body(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::failure::ErrorClass;

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
            raw_headers: None,
        }
    }

    fn applied(written: u64) -> MessageOutcome {
        MessageOutcome::Applied(StampReport {
            written,
            ..StampReport::default()
        })
    }

    fn failed() -> MessageOutcome {
        MessageOutcome::Failed {
            error: StoreError::new(ErrorClass::Transient, "UpdateItem", "throttled"),
            done: StampReport::default(),
        }
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
        let mut told_blocked = Vec::new();
        let outcomes = run_partition(
            batch(&[10, 11, 12, 13]),
            |_| false,
            |m| {
                attempted.push(m.id.offset);
                let outcome = if m.id.offset == 11 {
                    failed()
                } else {
                    applied(1)
                };
                async move { outcome }
            },
            |m, behind| told_blocked.push((m.id.offset, behind)),
            |_, _, _| panic!("nothing ran out of order"),
        )
        .await;
        assert_eq!(attempted, [10, 11]);
        assert_eq!(told_blocked, [(12, 11), (13, 11)]);
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
        let outcomes = run_partition(
            batch(&[1, 2]),
            |_| false,
            |_| async {
                MessageOutcome::Invalid {
                    problem: DecodeError::MissingValue,
                    not_dead_lettered: SinkError::NotConfigured {
                        what: "dead-letter queue",
                        variable: "DLQ_URL",
                    },
                }
            },
            |_, _| {},
            |_, _, _| {},
        )
        .await;
        assert_eq!(outcomes[1].1.label(), "blocked");
    }

    #[tokio::test]
    async fn skipped_messages_do_not_stop_their_partition() {
        let outcomes = run_partition(
            batch(&[1, 2]),
            |_| false,
            |m| async move {
                if m.id.offset == 1 {
                    MessageOutcome::Skipped {
                        event_type: "other".into(),
                    }
                } else {
                    applied(3)
                }
            },
            |_, _| {},
            |_, _, _| {},
        )
        .await;
        assert_eq!(outcomes[1].1.label(), "applied");
    }

    #[tokio::test]
    async fn followers_run_after_the_rest_of_their_partition_in_offset_order() {
        let mut attempted = Vec::new();
        let outcomes = run_partition(
            batch(&[1, 2, 3, 4]),
            |id| id.offset == 1 || id.offset == 3,
            |m| {
                attempted.push(m.id.offset);
                async { applied(1) }
            },
            |_, _| panic!("nothing handed back"),
            |_, _, _| panic!("nothing handed back"),
        )
        .await;
        assert_eq!(attempted, [2, 4, 1, 3]);
        let offsets: Vec<_> = outcomes.iter().map(|(id, _)| id.offset).collect();
        assert_eq!(offsets, [1, 2, 3, 4], "outcomes come back in offset order");
    }

    #[tokio::test]
    async fn a_follower_handed_back_lists_every_later_message_even_those_done() {
        let mut relisted = Vec::new();
        let mut blocked = Vec::new();
        let outcomes = run_partition(
            batch(&[1, 2, 3, 4]),
            |id| id.offset == 2,
            |m| {
                let outcome = match m.id.offset {
                    2 | 4 => failed(),
                    _ => applied(1),
                };
                async move { outcome }
            },
            |m, behind| blocked.push((m.id.offset, behind)),
            |id, outcome, behind| relisted.push((id.offset, outcome.label(), behind)),
        )
        .await;
        // 1 and 3 ran, 4 failed; then the follower 2 failed: 3 ran out of
        // order and is listed behind it, 4 was already listed.
        assert!(blocked.is_empty());
        assert_eq!(relisted, [(3, "applied", 2)]);
        let labels: Vec<_> = outcomes
            .iter()
            .map(|(id, o)| (id.offset, o.label()))
            .collect();
        assert_eq!(
            labels,
            [(1, "applied"), (2, "failed"), (3, "blocked"), (4, "failed")]
        );
        let listed: Vec<i64> = BatchOutcome { outcomes }
            .response()
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.offset)
            .collect();
        assert_eq!(listed, [2, 3, 4]);
    }

    #[tokio::test]
    async fn after_a_handed_back_message_a_later_follower_is_blocked_not_run() {
        let mut attempted = Vec::new();
        let outcomes = run_partition(
            batch(&[1, 2, 3]),
            |id| id.offset == 3,
            |m| {
                attempted.push(m.id.offset);
                let outcome = if m.id.offset == 1 {
                    failed()
                } else {
                    applied(1)
                };
                async move { outcome }
            },
            |_, _| {},
            |_, _, _| {},
        )
        .await;
        assert_eq!(attempted, [1]);
        assert_eq!(outcomes[2].1.label(), "blocked");
    }

    #[test]
    fn a_superseded_message_is_done_and_counted_apart() {
        let id = |offset| MessageId {
            partition: "t-0".into(),
            offset,
        };
        let superseded = MessageOutcome::Superseded { by_execution: 4 };
        assert!(!superseded.hands_back());
        assert_eq!(
            (superseded.label(), superseded.error_kind()),
            ("superseded", None)
        );
        let outcome = BatchOutcome {
            outcomes: vec![(id(1), superseded), (id(2), failed())],
        };
        let summary = outcome.summary();
        assert_eq!(
            (
                summary.messages_superseded,
                summary.messages_processed,
                summary.messages_failed
            ),
            (1, 0, 1)
        );
        assert_eq!(listed(&outcome), [2]);
        let notice = outcome.failure_notice("r").expect("a failure to tell");
        assert_eq!((notice.superseded, notice.handed_back), (1, 1));
        // The notice lists what failed, not what is done.
        assert_eq!(notice.messages["t-0"].len(), 1);
    }

    fn listed(outcome: &BatchOutcome) -> Vec<i64> {
        outcome
            .response()
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.offset)
            .collect()
    }

    #[test]
    fn what_a_handed_back_message_wrote_is_counted() {
        let id = |partition: &str, offset| MessageId {
            partition: partition.into(),
            offset,
        };
        let done = StampReport {
            written: 1_800,
            already_applied: 7,
            ..StampReport::default()
        };
        let outcome = BatchOutcome {
            outcomes: vec![
                (
                    id("t-0", 1),
                    MessageOutcome::Failed {
                        error: StoreError::new(ErrorClass::Throttled, "UpdateItem", "stalled"),
                        done,
                    },
                ),
                (
                    id("t-1", 1),
                    MessageOutcome::Unfinished {
                        reason: StopReason::DeadlineNear,
                        done,
                    },
                ),
            ],
        };
        let summary = outcome.summary();
        assert_eq!(
            (
                summary.messages_retried,
                summary.chargebacks_updated,
                summary.chargebacks_already_applied
            ),
            (2, 3_600, 14)
        );
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
                (
                    id(3),
                    MessageOutcome::Invalid {
                        problem: DecodeError::EmptyJobName,
                        not_dead_lettered: SinkError::NotConfigured {
                            what: "dead-letter queue",
                            variable: "DLQ_URL",
                        },
                    },
                ),
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

    #[test]
    fn a_dead_lettered_message_is_handled_but_counts_as_failed() {
        let id = |offset| MessageId {
            partition: "t-0".into(),
            offset,
        };
        let outcome = BatchOutcome {
            outcomes: vec![
                (
                    id(1),
                    MessageOutcome::DeadLettered(Poison::from(&DecodeError::EmptyJobName)),
                ),
                (id(2), applied(4)),
            ],
        };
        assert!(outcome.response().batch_item_failures.is_empty());
        let summary = outcome.summary();
        assert_eq!(
            (
                summary.messages_dead_lettered,
                summary.messages_retried,
                summary.messages_failed,
                summary.messages_processed
            ),
            (1, 0, 1, 1)
        );
    }

    #[test]
    fn one_failure_notice_names_partitions_offsets_and_the_first_error_of_each_kind() {
        let id = |partition: &str, offset| MessageId {
            partition: partition.into(),
            offset,
        };
        let outcome = BatchOutcome {
            outcomes: vec![
                (
                    id("t-0", 1),
                    MessageOutcome::DeadLettered(Poison::from(&DecodeError::EmptyJobName)),
                ),
                (
                    id("t-0", 2),
                    MessageOutcome::DeadLettered(Poison::from(&DecodeError::EmptyJobName)),
                ),
                (id("t-0", 3), applied(1)),
                (id("t-1", 7), failed()),
                (id("t-1", 8), MessageOutcome::Blocked { behind: 7 }),
                (
                    id("t-2", 9),
                    MessageOutcome::Unfinished {
                        reason: StopReason::DeadlineNear,
                        done: StampReport::default(),
                    },
                ),
            ],
        };
        let notice = outcome.failure_notice("req-9").unwrap();
        assert_eq!((notice.dead_lettered, notice.handed_back), (2, 3));
        assert_eq!(
            notice.messages["t-0"]
                .iter()
                .map(|e| e.offset)
                .collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(notice.messages["t-1"][1].outcome, "blocked");
        assert_eq!(notice.messages["t-2"][0].outcome, "unfinished");
        assert_eq!(
            notice.first_error_by_kind.keys().collect::<Vec<_>>(),
            ["deadline_near", "empty_job_name", "store_transient"]
        );
        assert_eq!(
            notice.subject(),
            "consolidation-updater: 2 dead-lettered, 3 handed back"
        );
        let body: serde_json::Value = serde_json::from_str(&notice.body().unwrap()).unwrap();
        assert_eq!(body["request_id"], "req-9");
        assert!(
            BatchOutcome {
                outcomes: vec![(id("t-0", 3), applied(1))]
            }
            .failure_notice("r")
            .is_none()
        );
    }
}
