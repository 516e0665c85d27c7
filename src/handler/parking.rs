//! Poison messages parked in the dead-letter queue, within the time the
//! invocation has left; a message that cannot be parked is handed back.

use chrono::{SecondsFormat, Utc};
use tracing::{Instrument, error};

use super::events::NotParked;
use super::{BatchHandler, SEND_LIMIT};
use crate::domain::dead_letter::{DeadLetter, Poison};
use crate::domain::event::DecodeError;
use crate::domain::failure::SinkError;
use crate::domain::kafka::KafkaMessage;
use crate::domain::outcome::MessageOutcome;
use crate::ports::ChargebackStore;
use crate::retry::InvocationControl;
use crate::telemetry::xray;

impl<S: ChargebackStore> BatchHandler<S> {
    /// Parks a poison message in the dead-letter queue, within the time the
    /// invocation has left. `Err` says why it could not be parked: the caller
    /// then hands the message back instead, never dropping it.
    pub(super) async fn park(
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

    pub(super) async fn dead_letter_invalid(
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
