//! One invocation: decode the envelope, run each Kafka partition's messages in
//! offset order (partitions concurrently), park poison messages in the
//! dead-letter queue, and turn the outcomes into the response. The same code
//! runs in Lambda, in `invoke`, in `redrive` and in the demo.
//!
//! `message` is one message's story, `parking` the dead-letter queue's side
//! of it, `events` what the handler says about both.

mod backlog;
mod events;
mod message;
mod parking;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinSet;
use tracing::{Instrument, Span, error, info, info_span, warn};

use crate::config::DEFAULT_DEADLINE_MARGIN;
use crate::domain::failure::{ErrorClass, StoreError};
use crate::domain::kafka::{EnvelopeError, EventSource, MessageId, decode_envelope};
use crate::domain::outcome::{BatchOutcome, MessageOutcome, run_partition};
use crate::domain::stamp::StampReport;
use crate::fanout::FanOut;
use crate::ledger::Ledger;
use crate::ports::{ChargebackStore, DeadLetterSink, FailureNotifier};
use crate::retry::InvocationControl;
use crate::telemetry::xray;
use backlog::Backlog;
use events::BatchFinished;

pub struct BatchHandler<S> {
    fan_out: FanOut<S>,
    ledger: Ledger,
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
            ledger: Ledger::off(),
            dead_letters: None,
            notifier: None,
            deadline_margin: DEFAULT_DEADLINE_MARGIN,
        }
    }

    /// Consults and keeps the run ledger around each fan-out.
    pub fn with_ledger(mut self, ledger: Ledger) -> Self {
        self.ledger = ledger;
        self
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

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
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

        // Several events of one day: the newest runs first, the others wait
        // for it (side effects out of offset order; the response keeps it).
        let backlog = Arc::new(Backlog::plan(&partitions));

        // Which messages each partition task holds, so that even a task that
        // ends abnormally cannot lose them: they are handed back.
        let mut held = HashMap::new();
        let mut running = JoinSet::new();
        for batch in partitions {
            let ids: Vec<MessageId> = batch.messages.iter().map(|m| m.id.clone()).collect();
            let handler = Arc::clone(self);
            let control = Arc::clone(&control);
            let backlog_of_task = Arc::clone(&backlog);
            let request_id = invocation.request_id.clone();
            let task = running.spawn(
                async move {
                    let backlog = backlog_of_task;
                    run_partition(
                        batch,
                        |id| backlog.follows(id),
                        |message| handler.process(message, &control, &request_id, &backlog),
                        |message, behind| {
                            backlog.release([&message.id]);
                            message::log_blocked(message, behind);
                        },
                        message::log_relisted,
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
                Ok((task, outcomes)) => {
                    backlog.release(held.get(&task).into_iter().flatten());
                    outcome.outcomes.extend(outcomes);
                }
                Err(join_error) => {
                    error!(error = %join_error, "a partition task ended abnormally; handing its messages back");
                    let ids = held.remove(&join_error.id()).unwrap_or_default();
                    backlog.release(&ids);
                    outcome
                        .outcomes
                        .extend(ids.into_iter().map(|id| (id, lost_task_outcome())));
                }
            }
        }
        outcome.outcomes.sort_by(|a, b| a.0.cmp(&b.0));

        let summary = outcome.summary();
        BatchFinished {
            summary: &summary,
            duration: started.elapsed(),
        }
        .emit();
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
