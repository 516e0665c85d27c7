//! One invocation: decode the envelope, run each Kafka partition's messages in
//! offset order (partitions concurrently), park poison messages in the
//! dead-letter queue, and turn the outcomes into the response. The same code
//! runs in Lambda, in `invoke`, in `redrive` and in the demo.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use serde_json::Value;
use tokio::task::JoinSet;
use tracing::field::Empty;
use tracing::{Instrument, Span, error, info, info_span, warn};

use crate::config::DEFAULT_DEADLINE_MARGIN;
use crate::domain::dead_letter::{DeadLetter, Poison};
use crate::domain::event::{DecodeError, DecodedValue, decode_value};
use crate::domain::failure::{Disposition, ErrorClass, SinkError, StoreError};
use crate::domain::forecast::Forecast;
use crate::domain::kafka::{EnvelopeError, EventSource, KafkaMessage, MessageId, decode_envelope};
use crate::domain::outcome::{BatchOutcome, MessageOutcome, run_in_offset_order};
use crate::domain::stamp::{StampPlan, StampReport};
use crate::fanout::{FanOut, FanOutError};
use crate::ports::{ChargebackStore, DeadLetterSink, FailureNotifier};
use crate::retry::InvocationControl;
use crate::telemetry;
use crate::telemetry::events::{EventDecoded, SelectionMade};
use crate::telemetry::xray;

pub struct BatchHandler<S> {
    fan_out: FanOut<S>,
    dead_letters: Option<Arc<dyn DeadLetterSink>>,
    notifier: Option<Arc<dyn FailureNotifier>>,
    deadline_margin: Duration,
}

/// What one invocation knows about itself.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    /// When Lambda stops the invocation; `None` outside Lambda.
    pub deadline: Option<Instant>,
    /// The first invocation of this execution environment.
    pub cold_start: bool,
    /// Lambda's X-Ray trace header (`Root=1-...;Parent=...;Sampled=1`).
    pub trace_header: Option<String>,
}

impl Invocation {
    /// An invocation with no deadline (the CLI).
    pub fn unbounded(request_id: impl Into<String>) -> Self {
        Self {
            request_id: request_id.into(),
            deadline: None,
            cold_start: false,
            trace_header: None,
        }
    }
}

impl<S: ChargebackStore> BatchHandler<S> {
    pub fn new(fan_out: FanOut<S>) -> Self {
        Self {
            fan_out,
            dead_letters: None,
            notifier: None,
            deadline_margin: DEFAULT_DEADLINE_MARGIN,
        }
    }

    pub fn with_dead_letters(mut self, sink: Arc<dyn DeadLetterSink>) -> Self {
        self.dead_letters = Some(sink);
        self
    }

    pub fn with_notifier(mut self, notifier: Arc<dyn FailureNotifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    pub fn with_deadline_margin(mut self, margin: Duration) -> Self {
        self.deadline_margin = margin;
        self
    }

    pub fn fan_out(&self) -> &FanOut<S> {
        &self.fan_out
    }

    /// Handles one Lambda Kafka event. Only a payload that is not a Kafka
    /// event at all is an error; every message gets its own outcome.
    pub async fn handle(
        self: &Arc<Self>,
        payload: Value,
        invocation: &Invocation,
    ) -> Result<BatchOutcome, EnvelopeError> {
        let trace_header = invocation.trace_header.as_deref();
        let span = info_span!(
            "invocation",
            request_id = %invocation.request_id,
            cold_start = invocation.cold_start,
            xray_trace_id = trace_header.and_then(xray::trace_root),
            // Under Lambda's segment a subsegment; on its own, a segment.
            otel.kind = if trace_header.is_some() { "internal" } else { "server" },
        );
        if let Some(header) = trace_header {
            xray::continue_trace(&span, header);
        }
        self.handle_in_span(payload, invocation)
            .instrument(span)
            .await
    }

    async fn handle_in_span(
        self: &Arc<Self>,
        payload: Value,
        invocation: &Invocation,
    ) -> Result<BatchOutcome, EnvelopeError> {
        let started = Instant::now();
        let source = EventSource::of(&payload);
        let partitions =
            decode_envelope(payload).inspect_err(|e| error!(error = %e, "invocation failed"))?;
        match source {
            EventSource::Missing => {
                warn!("the event has no eventSource; processing its records as a Kafka event")
            }
            EventSource::Unexpected(event_source) => warn!(
                %event_source,
                "unexpected eventSource (expected \"aws:kafka\", \"SelfManagedKafka\" or \"aws:SelfManagedKafka\"); processing its records as a Kafka event"
            ),
            EventSource::Msk | EventSource::SelfManagedKafka => {}
        }
        let messages: usize = partitions.iter().map(|p| p.messages.len()).sum();
        info!(partitions = partitions.len(), messages, "batch received");
        let control = Arc::new(InvocationControl::new(
            invocation.deadline,
            self.deadline_margin,
        ));
        self.fan_out.pacer().begin_invocation();

        // Which messages each partition task holds, so that even a task that
        // ends abnormally cannot lose them: they are handed back.
        let mut held = HashMap::new();
        let mut running = JoinSet::new();
        for batch in partitions {
            let ids: Vec<MessageId> = batch.messages.iter().map(|m| m.id.clone()).collect();
            let handler = Arc::clone(self);
            let control = Arc::clone(&control);
            let request_id = invocation.request_id.clone();
            let task = running.spawn(
                async move {
                    run_in_offset_order(
                        batch,
                        |message| handler.process(message, &control, &request_id),
                        log_blocked,
                    )
                    .await
                }
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
        telemetry::metrics::batch_finished(&summary);
        info!(
            messages_processed = summary.messages_processed,
            messages_skipped = summary.messages_skipped,
            messages_dead_lettered = summary.messages_dead_lettered,
            messages_retried = summary.messages_retried,
            messages_failed = summary.messages_failed,
            chargebacks_updated = summary.chargebacks_updated,
            chargebacks_already_applied = summary.chargebacks_already_applied,
            chargebacks_missing = summary.chargebacks_missing,
            chargebacks_left_behind = summary.chargebacks_left_behind,
            duration_ms = started.elapsed().as_millis() as u64,
            "{}",
            summary.metrics_line()
        );
        self.notify(&outcome, &invocation.request_id).await;
        Ok(outcome)
    }

    /// One notification per invocation with failures; never fatal.
    async fn notify(&self, outcome: &BatchOutcome, request_id: &str) {
        let (Some(notifier), Some(notice)) = (&self.notifier, outcome.failure_notice(request_id))
        else {
            return;
        };
        let span = xray::aws_call("SNS", "Publish");
        let published = tokio::time::timeout(SEND_LIMIT, notifier.publish(&notice))
            .instrument(span.clone())
            .await;
        if !matches!(published, Ok(Ok(()))) {
            xray::record_failure(&span, "the failure notification was not published");
        }
        match published {
            Ok(Ok(())) => info!(
                dead_lettered = notice.dead_lettered,
                handed_back = notice.handed_back,
                "failure notification published"
            ),
            Ok(Err(problem)) => {
                error!(error = %problem, "could not publish the failure notification")
            }
            Err(_) => error!("the failure notification was not published within {SEND_LIMIT:?}"),
        }
    }

    /// One message, from received to outcome, in a span that carries its
    /// coordinates and correlation id.
    async fn process(
        &self,
        message: KafkaMessage,
        control: &Arc<InvocationControl>,
        request_id: &str,
    ) -> MessageOutcome {
        let span = message_span(&message);
        async {
            let outcome = self
                .process_in_span(message, control, request_id, &span)
                .await;
            // The last line of every message's story, whatever happened.
            span.record("outcome", outcome.label());
            info!(
                outcome = outcome.label(),
                handed_back = outcome.hands_back(),
                error_kind = outcome.error_kind(),
                "message outcome: {}",
                outcome.label()
            );
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
        if let Some(reason) = control.stop_reason() {
            warn!(reason = %reason, "not started, handed back: {reason}");
            return MessageOutcome::Unfinished {
                reason,
                done: StampReport::default(),
            };
        }

        let plan = StampPlan::for_event(&event, Utc::now());
        SelectionMade(&plan).emit();
        let time_left = control.time_for_new_work();
        let expected = self.fan_out.expected(event.records_processed);
        let pacer = self.fan_out.pacer();
        let ceiling = pacer.ceiling();
        let forecast = Forecast::new(
            expected.records,
            time_left,
            self.fan_out.last_rate(),
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
            last_records_per_second = self.fan_out.last_rate().map(|r| r.round() as u64),
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
        let started = Instant::now();
        let stamped = self.fan_out.stamp_partition(&plan, control).await;
        telemetry::metrics::fan_out_finished(started.elapsed());
        match stamped {
            Ok(report) => {
                let seconds = started.elapsed().as_secs_f64();
                info!(
                    written = report.written,
                    already_applied = report.already_applied,
                    already_applied_on_read = report.already_applied_on_read,
                    missing = report.missing,
                    throttled_writes = report.throttled_writes,
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
            Err(FanOutError::Stopped { reason, report }) => {
                warn!(
                    reason = %reason,
                    written = report.written,
                    already_applied = report.already_applied,
                    throttled_writes = report.throttled_writes,
                    "stopped before done, handed back: {reason}; the retry skips what is already stamped"
                );
                MessageOutcome::Unfinished {
                    reason,
                    done: report,
                }
            }
            Err(FanOutError::Store {
                error: failure,
                report,
            }) => match failure.class.disposition() {
                Disposition::HaltInvocation => {
                    control.halt_on_setup_failure(failure.clone());
                    error!(
                        error_kind = failure.class.kind(),
                        operation = failure.operation,
                        error = %failure.message,
                        "setup problem, not a data problem: no new work starts in this \
                         invocation and every unfinished message is handed back (none is dead-lettered)"
                    );
                    MessageOutcome::Failed {
                        error: failure,
                        done: report,
                    }
                }
                Disposition::DeadLetter => {
                    // The same request would fail on every delivery: park the
                    // message rather than block its partition forever.
                    let poison = Poison::from(&failure);
                    match self.park(&message, &poison, request_id, control).await {
                        Ok(()) => {
                            error!(
                                error_kind = poison.kind.as_str(),
                                operation = failure.operation,
                                error = %failure.message,
                                "DynamoDB rejects this message's update for good; dead-lettered"
                            );
                            MessageOutcome::DeadLettered(poison)
                        }
                        Err(why) => {
                            error!(
                                error_kind = poison.kind.as_str(),
                                operation = failure.operation,
                                error = %failure.message,
                                "DynamoDB rejects this message's update for good; handed back \
                                 because {}",
                                NotParked(&why)
                            );
                            MessageOutcome::Failed {
                                error: failure,
                                done: report,
                            }
                        }
                    }
                }
                Disposition::HandBack => {
                    error!(
                        error_kind = failure.class.kind(),
                        operation = failure.operation,
                        error = %failure.message,
                        written = report.written,
                        throttled_writes = report.throttled_writes,
                        "stamping failed; handing the message back for a retry"
                    );
                    MessageOutcome::Failed {
                        error: failure,
                        done: report,
                    }
                }
            },
        }
    }

    /// Parks a poison message in the dead-letter queue, within the time the
    /// invocation has left. `Err` says why it could not be parked: the caller
    /// then hands the message back instead, never dropping it.
    async fn park(
        &self,
        message: &KafkaMessage,
        poison: &Poison,
        request_id: &str,
        control: &InvocationControl,
    ) -> Result<(), SinkError> {
        let Some(sink) = &self.dead_letters else {
            return Err(SinkError::NotConfigured {
                what: "dead-letter queue",
                variable: "DLQ_URL",
            });
        };
        let failed_at = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        let letter = DeadLetter::new(message, poison, request_id, &failed_at);
        let allowed = control
            .time_left()
            .map_or(SEND_LIMIT, |left| left.min(SEND_LIMIT));
        let span = xray::aws_call("SQS", "SendMessage");
        let sent = match tokio::time::timeout(allowed, sink.send(&letter))
            .instrument(span.clone())
            .await
        {
            Ok(sent) => sent,
            Err(_) => Err(SinkError::TimedOut {
                operation: "SendMessage",
                waited: allowed,
            }),
        };
        if let Err(why) = &sent {
            xray::record_failure(&span, &NotParked(why).to_string());
        }
        sent
    }

    async fn dead_letter_invalid(
        &self,
        message: &KafkaMessage,
        problem: DecodeError,
        request_id: &str,
        control: &InvocationControl,
    ) -> MessageOutcome {
        let poison = Poison::from(&problem);
        match self.park(message, &poison, request_id, control).await {
            Ok(()) => {
                error!(error_kind = problem.kind(), error = %problem, "invalid message, dead-lettered: {problem}");
                MessageOutcome::DeadLettered(poison)
            }
            Err(why) => {
                error!(
                    error_kind = problem.kind(),
                    error = %problem,
                    "invalid message, handed back because {}: {problem}",
                    NotParked(&why)
                );
                MessageOutcome::Invalid {
                    problem,
                    not_dead_lettered: why,
                }
            }
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
fn log_blocked(message: &KafkaMessage, behind: i64) {
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

/// Why a message could not be parked, as its handed-back line says it.
struct NotParked<'a>(&'a SinkError);

impl std::fmt::Display for NotParked<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            SinkError::NotConfigured { .. } | SinkError::Unencodable { .. } => {
                write!(f, "{}", self.0)
            }
            SinkError::Refused { .. } => write!(f, "the dead-letter queue refused it: {}", self.0),
            SinkError::TimedOut { waited, .. } => {
                write!(f, "the dead-letter queue did not answer within {waited:?}")
            }
        }
    }
}

/// The longest a dead-letter send or a notification may take, deadline aside.
const SEND_LIMIT: Duration = Duration::from_secs(10);

/// An outcome for a message whose partition task never reported one.
fn lost_task_outcome() -> MessageOutcome {
    MessageOutcome::Failed {
        error: StoreError::new(
            ErrorClass::Transient,
            "fan-out",
            "the partition task ended abnormally",
        ),
        done: StampReport::default(),
    }
}
