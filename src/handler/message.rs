//! One message's story, from received to outcome: decode it, skip it, park
//! it, or stamp its day, in a span that carries its coordinates.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use tracing::field::Empty;
use tracing::{Instrument, Span, error, info, info_span, warn};

use super::BatchHandler;
use super::backlog::{Backlog, Follower, LeaderEnd};
use super::events::{FanOutFinished, MessageFinished, NotParked};
use crate::domain::dead_letter::Poison;
use crate::domain::event::{ConsolidationEvent, DecodeError, DecodedValue, decode_value};
use crate::domain::failure::{Disposition, StoreError};
use crate::domain::forecast::Forecast;
use crate::domain::kafka::{KafkaMessage, MessageId};
use crate::domain::outcome::MessageOutcome;
use crate::domain::run::Completion;
use crate::domain::stamp::{StampPlan, StampReport};
use crate::fanout::FanOutError;
use crate::ledger::{RunDecision, Verdict};
use crate::ports::ChargebackStore;
use crate::retry::InvocationControl;
use crate::telemetry::events::{EventDecoded, SelectionMade};
use crate::telemetry::xray;

impl<S: ChargebackStore> BatchHandler<S> {
    /// One message, from received to outcome, in a span that carries its
    /// coordinates and correlation id.
    pub(super) async fn process(
        &self,
        message: KafkaMessage,
        control: &Arc<InvocationControl>,
        request_id: &str,
        backlog: &Backlog,
    ) -> MessageOutcome {
        let span = message_span(&message);
        let id = message.id.clone();
        let follower = backlog.follower(&id);
        async {
            let outcome = self
                .process_in_span(message, control, request_id, follower, &span)
                .await;
            backlog.finished(&id, &outcome);
            // The last line of every message's story, whatever happened.
            span.record("outcome", outcome.label());
            MessageFinished(&outcome).emit();
            outcome
        }
        .instrument(span.clone())
        .await
    }

    async fn process_in_span(
        &self,
        message: KafkaMessage,
        control: &Arc<InvocationControl>,
        request_id: &str,
        follower: Option<Follower>,
        span: &Span,
    ) -> MessageOutcome {
        let decoded = decode_value(message.value.as_ref());
        span.record("correlation_id", correlation_id(&message, &decoded));
        info!("message received");
        let event = match decoded {
            Err(problem) => {
                return self
                    .dead_letter_invalid(&message, problem, request_id, control)
                    .await;
            }
            Ok(DecodedValue::OtherEventType(event_type)) => {
                info!(event_type = %event_type, "skipped: not a consolidation_completed event");
                return MessageOutcome::Skipped { event_type };
            }
            Ok(DecodedValue::Consolidation(event)) => event,
        };
        EventDecoded(&event).emit();
        span.record("partition_date", event.partition_date.to_string());
        span.record(
            "execution_sequence",
            xray::number(event.execution.sequence()),
        );
        if let Some(follower) = follower {
            let leader = follower.leader.clone();
            match follower.leader_end().await {
                LeaderEnd::Completed { by_execution } => {
                    info!(
                        superseded_by_execution = by_execution,
                        leader_partition = %leader.partition,
                        leader_offset = leader.offset,
                        "already done: the newer event of this day at {}@{} in this batch \
                         completed (execution {by_execution}); nothing read or written for \
                         execution {}",
                        leader.partition,
                        leader.offset,
                        event.execution.sequence()
                    );
                    return MessageOutcome::Superseded { by_execution };
                }
                LeaderEnd::NotCompleted => info!(
                    leader_partition = %leader.partition,
                    leader_offset = leader.offset,
                    "the newer event of this day at {}@{} in this batch did not complete; \
                     stamping this one as if it were alone",
                    leader.partition,
                    leader.offset
                ),
            }
        }
        if let Some(reason) = control.stop_reason() {
            warn!(reason = %reason, "not started, handed back: {reason}");
            return MessageOutcome::Unfinished {
                reason,
                done: StampReport::default(),
            };
        }
        let run = self
            .ledger
            .before_fan_out(
                self.fan_out.store().as_ref(),
                &event,
                Verdict::Respect,
                request_id,
            )
            .await;
        if let RunDecision::Superseded(by) = &run {
            return MessageOutcome::Superseded {
                by_execution: by.execution_sequence,
            };
        }
        let plan = StampPlan::for_event(&event, Utc::now());
        SelectionMade(&plan).emit();
        self.forecast(&event, &plan, control);
        let started = Instant::now();
        let checkpoints = self.ledger.checkpoints(&run, request_id);
        let stamped = self
            .fan_out
            .stamp_tracked(&plan, control, checkpoints.as_ref().map(|c| c as _))
            .await;
        FanOutFinished {
            result: &stamped,
            plan: &plan,
            duration: started.elapsed(),
        }
        .emit();
        match stamped {
            Ok(report) => {
                self.ledger
                    .completed(&run, &report, Completion::Forward, request_id)
                    .await;
                MessageOutcome::Applied(report)
            }
            Err(FanOutError::Stopped { reason, report }) => MessageOutcome::Unfinished {
                reason,
                done: report,
            },
            Err(FanOutError::Store { error, report }) => {
                self.store_failed(&message, error, report, request_id, control)
                    .await
            }
        }
    }

    /// Says, before a fan-out starts, whether it can finish in the time the
    /// invocation has left, judged from the event's own count.
    fn forecast(&self, event: &ConsolidationEvent, plan: &StampPlan, control: &InvocationControl) {
        let time_left = control.time_for_new_work();
        let expected = self.fan_out.expected(event.records_processed);
        let pacer = self.fan_out.pacer();
        let ceiling = pacer.ceiling();
        let last_rate = self.fan_out.last_rate();
        let forecast = Forecast::new(
            expected.records,
            time_left,
            last_rate,
            ceiling.map(f64::from),
        );
        info!(
            total_executions = event.execution.total(),
            records_processed = event.records_processed,
            expected_records = expected.records,
            expected_basis = expected.basis,
            created_before = %plan.selection.created_before,
            output_path = %event.output_path.as_str(),
            time_left_ms = time_left.map(|t| t.as_millis() as u64),
            needed_records_per_second = forecast.needed_rate.map(|r| r.ceil() as u64),
            last_records_per_second = last_rate.map(|r| r.round() as u64),
            expected_to_finish = forecast.expected_to_finish,
            paced_writes_per_second = pacer.rate().round() as u64,
            max_write_rate = ceiling,
            "stamping the day's chargebacks"
        );
        if let (true, Some(ceiling), Some(left)) = (forecast.over_ceiling, ceiling, time_left) {
            let needs = (expected.records as f64 / f64::from(ceiling)).ceil() as u64;
            warn!(
                "at MAX_WRITE_RATE={ceiling} writes/s these {} records need {needs} s, more than \
                 the {} s this invocation has left; it will be handed back part done and \
                 resumed by the next delivery",
                expected.records,
                left.as_secs()
            );
        } else if forecast.expected_to_finish == Some(false) {
            warn!(
                "at the last fan-out's rate this one will not finish in this invocation; \
                 it will be handed back part done and resumed by the next delivery"
            );
        }
    }

    /// A fan-out the store ended: what its failure means for the message
    /// ([`Disposition`]) decides; `done` is what was stamped before it.
    async fn store_failed(
        &self,
        message: &KafkaMessage,
        failure: StoreError,
        done: StampReport,
        request_id: &str,
        control: &InvocationControl,
    ) -> MessageOutcome {
        match failure.class.disposition() {
            Disposition::HaltInvocation => {
                control.halt_on_setup_failure(failure.clone());
                error!(
                    error_kind = failure.class.kind(),
                    operation = failure.operation,
                    error = %failure.message,
                    "setup problem, not a data problem: no new work starts in this \
                     invocation and every unfinished message is handed back (none is dead-lettered)"
                );
            }
            Disposition::DeadLetter => {
                // The same request would fail on every delivery: park the
                // message rather than block its partition forever.
                let poison = Poison::from(&failure);
                match self.park(message, &poison, request_id, control).await {
                    Ok(()) => {
                        error!(
                            error_kind = poison.kind.as_str(),
                            operation = failure.operation,
                            error = %failure.message,
                            "DynamoDB rejects this message's update for good; dead-lettered"
                        );
                        return MessageOutcome::DeadLettered(poison);
                    }
                    Err(why) => error!(
                        error_kind = poison.kind.as_str(),
                        operation = failure.operation,
                        error = %failure.message,
                        "DynamoDB rejects this message's update for good; handed back because {}",
                        NotParked(&why)
                    ),
                }
            }
            Disposition::HandBack => error!(
                error_kind = failure.class.kind(),
                operation = failure.operation,
                error = %failure.message,
                written = done.written,
                throttled_writes = done.throttled_writes,
                "stamping failed; handing the message back for a retry"
            ),
        }
        MessageOutcome::Failed {
            error: failure,
            done,
        }
    }
}

/// The span of one message's story: its coordinates, then what decoding tells.
fn message_span(message: &KafkaMessage) -> Span {
    info_span!(
        "message",
        topic = %message.topic,
        partition = %message.id.partition,
        offset = message.id.offset,
        correlation_id = Empty,
        partition_date = Empty,
        execution_sequence = Empty,
        outcome = Empty,
    )
}

/// The producer's correlation header; else one derived from the event, so a
/// redelivery of the same event gets the same id; else the coordinates.
fn correlation_id(message: &KafkaMessage, decoded: &Result<DecodedValue, DecodeError>) -> String {
    message
        .correlation_header()
        .unwrap_or_else(|| match decoded {
            Ok(DecodedValue::Consolidation(event)) => event.derived_correlation_id(),
            _ => format!("{}@{}", message.id.partition, message.id.offset),
        })
}

/// A message not attempted because an earlier one of its partition was
/// handed back still gets its story: received, and handed back behind which.
pub(super) fn log_blocked(message: &KafkaMessage, behind: i64) {
    let span = message_span(message);
    span.record(
        "correlation_id",
        correlation_id(message, &decode_value(message.value.as_ref())),
    );
    let _entered = span.enter();
    info!("message received");
    span.record("outcome", "blocked");
    info!(
        handed_back = true,
        behind, "message outcome: blocked behind offset {behind}, handed back in offset order"
    );
}

/// A message that ran out of offset order (it did not wait for a follower
/// before it) is listed all the same, behind the follower that was handed
/// back: Lambda resumes a partition from its first listed message.
pub(super) fn log_relisted(id: &MessageId, ended: &MessageOutcome, behind: i64) {
    info!(
        partition = %id.partition,
        offset = id.offset,
        outcome = "blocked",
        ran_as = ended.label(),
        handed_back = true,
        behind,
        "message {}@{} listed for redelivery behind offset {behind}, which ran after it and was \
         handed back; it ended {} and its redelivery finds it done",
        id.partition,
        id.offset,
        ended.label()
    );
}
