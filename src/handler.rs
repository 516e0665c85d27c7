//! One invocation: decode the envelope, run each Kafka partition's messages in
//! offset order (partitions concurrently), and turn the outcomes into the
//! response. The same code runs in Lambda, in `invoke` and in the demo.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde_json::Value;
use tokio::task::JoinSet;
use tracing::field::Empty;
use tracing::{Instrument, Span, error, info, info_span, warn};

use crate::domain::event::{DecodedValue, decode_value};
use crate::domain::kafka::{EnvelopeError, KafkaMessage, MessageId, decode_envelope};
use crate::domain::outcome::{BatchOutcome, MessageOutcome, run_in_offset_order};
use crate::domain::stamp::StampPlan;
use crate::fanout::FanOut;
use crate::ports::{ChargebackStore, ErrorClass, StoreError};

pub struct BatchHandler<S> {
    fan_out: FanOut<S>,
}

impl<S: ChargebackStore> BatchHandler<S> {
    pub fn new(fan_out: FanOut<S>) -> Self {
        Self { fan_out }
    }

    pub fn fan_out(&self) -> &FanOut<S> {
        &self.fan_out
    }

    /// Handles one Lambda Kafka event. Only a payload that is not a Kafka
    /// event at all is an error; every message gets its own outcome.
    pub async fn handle(
        self: &Arc<Self>,
        payload: Value,
        request_id: &str,
    ) -> Result<BatchOutcome, EnvelopeError> {
        let span = info_span!("invocation", request_id = %request_id);
        self.handle_in_span(payload).instrument(span).await
    }

    async fn handle_in_span(
        self: &Arc<Self>,
        payload: Value,
    ) -> Result<BatchOutcome, EnvelopeError> {
        let started = Instant::now();
        let partitions =
            decode_envelope(payload).inspect_err(|e| error!(error = %e, "invocation failed"))?;
        let messages: usize = partitions.iter().map(|p| p.messages.len()).sum();
        info!(partitions = partitions.len(), messages, "batch received");

        // Which messages each partition task holds, so that even a task that
        // ends abnormally cannot lose them: they are handed back.
        let mut held = HashMap::new();
        let mut running = JoinSet::new();
        for batch in partitions {
            let ids: Vec<MessageId> = batch.messages.iter().map(|m| m.id.clone()).collect();
            let handler = Arc::clone(self);
            let task = running.spawn(
                async move { run_in_offset_order(batch, |message| handler.process(message)).await }
                    .instrument(Span::current()),
            );
            held.insert(task.id(), ids);
        }
        let mut outcome = BatchOutcome::default();
        while let Some(joined) = running.join_next_with_id().await {
            match joined {
                Ok((_, outcomes)) => outcome.outcomes.extend(outcomes),
                Err(join_error) => {
                    error!(error = %join_error, "a partition task ended abnormally; handing its messages back");
                    let ids = held.remove(&join_error.id()).unwrap_or_default();
                    outcome
                        .outcomes
                        .extend(ids.into_iter().map(|id| (id, lost_task_outcome())));
                }
            }
        }
        outcome.outcomes.sort_by(|a, b| a.0.cmp(&b.0));

        let summary = outcome.summary();
        info!(
            messages_processed = summary.messages_processed,
            messages_skipped = summary.messages_skipped,
            messages_failed = summary.messages_failed,
            chargebacks_updated = summary.chargebacks_updated,
            chargebacks_already_applied = summary.chargebacks_already_applied,
            chargebacks_missing = summary.chargebacks_missing,
            chargebacks_left_behind = summary.chargebacks_left_behind,
            duration_ms = started.elapsed().as_millis() as u64,
            "{}",
            summary.metrics_line()
        );
        Ok(outcome)
    }

    /// One message, from received to outcome, in a span that carries its
    /// coordinates and correlation id.
    async fn process(&self, message: KafkaMessage) -> MessageOutcome {
        let span = info_span!(
            "message",
            topic = %message.topic,
            partition = %message.id.partition,
            offset = message.id.offset,
            correlation_id = Empty,
            partition_date = Empty,
            execution_sequence = Empty,
        );
        self.process_in_span(message, &span)
            .instrument(span.clone())
            .await
    }

    async fn process_in_span(&self, message: KafkaMessage, span: &Span) -> MessageOutcome {
        let decoded = decode_value(message.value.as_ref());
        let correlation_id = message
            .correlation_header()
            .unwrap_or_else(|| match &decoded {
                Ok(DecodedValue::Consolidation(event)) => event.derived_correlation_id(),
                _ => format!("{}@{}", message.id.partition, message.id.offset),
            });
        span.record("correlation_id", correlation_id.as_str());
        info!("message received");
        let event = match decoded {
            Err(problem) => {
                error!(
                    error_kind = problem.kind(),
                    error = %problem,
                    "invalid message, handed back (no dead-letter queue yet): {problem}"
                );
                return MessageOutcome::Invalid(problem);
            }
            Ok(DecodedValue::OtherEventType(event_type)) => {
                info!(event_type = %event_type, "skipped: not a consolidation_completed event");
                return MessageOutcome::Skipped { event_type };
            }
            Ok(DecodedValue::Consolidation(event)) => event,
        };
        span.record("partition_date", event.partition_date.to_string());
        span.record("execution_sequence", event.execution.sequence());

        let plan = StampPlan::for_event(&event, Utc::now());
        info!(
            total_executions = event.execution.total(),
            records_processed = event.records_processed,
            created_before = %plan.selection.created_before,
            output_path = %event.output_path.as_str(),
            "stamping the day's chargebacks"
        );
        let started = Instant::now();
        match self.fan_out.stamp_partition(&plan).await {
            Ok(report) => {
                let seconds = started.elapsed().as_secs_f64();
                info!(
                    written = report.written,
                    already_applied = report.already_applied,
                    missing = report.missing,
                    duration_ms = (seconds * 1000.0) as u64,
                    records_per_second = (report.examined() as f64 / seconds.max(1e-9)) as u64,
                    "applied"
                );
                if let Some(left) = report.left_behind.filter(|n| *n > 0) {
                    warn!(
                        left_behind = left,
                        created_from = %plan.selection.created_before,
                        "last execution of the day: {left} records were created after the \
                         execution time and no later run will stamp them"
                    );
                }
                MessageOutcome::Applied(report)
            }
            Err(failure) => {
                error!(
                    error_class = ?failure.class,
                    operation = failure.operation,
                    error = %failure.message,
                    "stamping failed; handing the message back for a retry"
                );
                MessageOutcome::Failed(failure)
            }
        }
    }
}

/// An outcome for a message whose partition task never reported one.
fn lost_task_outcome() -> MessageOutcome {
    MessageOutcome::Failed(StoreError::new(
        ErrorClass::Transient,
        "fan-out",
        "the partition task ended abnormally",
    ))
}
