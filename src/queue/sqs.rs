//! The SQS dead-letter queue: sending poison messages (behind the
//! [`DeadLetterSink`] port) and reading them back for `redrive`. Standard and
//! FIFO queues alike: in a FIFO queue each partition's parked messages are a
//! message group, so they keep their order.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};
use tracing::warn;

use super::events::{DeadLetterSent, QueueDescribed};
use crate::domain::dead_letter::DeadLetter;
use crate::domain::failure::SinkError;
use crate::domain::fifo::FifoPlacement;
use crate::ports::{BoxFuture, DeadLetterSink};

/// SQS's historical default and minimum of the maximum message size; used
/// when the queue's own limit cannot be read.
pub const DEFAULT_MESSAGE_LIMIT: usize = 262_144;
/// Room for the message attributes, which count towards the limit.
const ATTRIBUTES_RESERVE: usize = 1024;
/// How long start-up waits for the queue's attributes.
const ATTRIBUTES_WAIT: Duration = Duration::from_secs(2);

/// SQS requires a FIFO queue's name to end in `.fifo` and allows no dot in
/// a standard queue's, so the URL alone tells them apart when the queue's
/// attributes cannot be read.
fn is_fifo_url(queue_url: &str) -> bool {
    queue_url.ends_with(".fifo")
}

pub struct SqsDeadLetters {
    client: Client,
    queue_url: String,
    /// The queue's maximum message size, read once at start-up.
    message_limit: usize,
    /// A FIFO queue needs a message group and a deduplication id on every send.
    fifo: bool,
}

impl SqsDeadLetters {
    /// Reads the queue's size limit and whether it is FIFO (briefly; on
    /// failure the SQS default limit applies and the name says FIFO or not).
    pub async fn connect(client: Client, queue_url: impl Into<String>) -> Self {
        let queue_url = queue_url.into();
        let asked = client
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(QueueAttributeName::MaximumMessageSize)
            .attribute_names(QueueAttributeName::FifoQueue)
            .send();
        let attributes = match tokio::time::timeout(ATTRIBUTES_WAIT, asked).await {
            Ok(Ok(output)) => Some(output.attributes.unwrap_or_default()),
            Ok(Err(error)) => {
                warn!(queue_url = %queue_url, error = %DisplayErrorContext(&error),
                    "cannot read the dead-letter queue's attributes; assuming its size limit is {DEFAULT_MESSAGE_LIMIT} bytes");
                None
            }
            Err(_) => {
                warn!(queue_url = %queue_url,
                    "the dead-letter queue did not answer within {ATTRIBUTES_WAIT:?}; assuming its size limit is {DEFAULT_MESSAGE_LIMIT} bytes");
                None
            }
        };
        let read = |name: &QueueAttributeName| attributes.as_ref().and_then(|a| a.get(name));
        let message_limit = read(&QueueAttributeName::MaximumMessageSize)
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MESSAGE_LIMIT);
        // SQS names `FifoQueue` only for FIFO queues: absent means standard,
        // which the name then agrees with.
        let fifo = read(&QueueAttributeName::FifoQueue)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| is_fifo_url(&queue_url));
        QueueDescribed {
            queue_url: &queue_url,
            message_limit,
            fifo,
            from_attributes: attributes.is_some(),
        }
        .emit();
        Self {
            client,
            queue_url,
            message_limit,
            fifo,
        }
    }

    pub fn message_limit(&self) -> usize {
        self.message_limit
    }

    pub fn is_fifo(&self) -> bool {
        self.fifo
    }
}

fn string_attribute(value: &str) -> Result<MessageAttributeValue, SinkError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| SinkError::Refused {
            operation: "SendMessage",
            message: e.to_string(),
        })
}

impl DeadLetterSink for SqsDeadLetters {
    fn send<'a>(&'a self, letter: &'a DeadLetter) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let body = letter
                .fit_body(self.message_limit.saturating_sub(ATTRIBUTES_RESERVE))
                .map_err(|e| SinkError::Unencodable {
                    what: "dead letter",
                    message: e.to_string(),
                })?;
            let body_bytes = body.text.len();
            let placement = self
                .fifo
                .then(|| FifoPlacement::of_message(&letter.message_id()));
            self.client
                .send_message()
                .queue_url(&self.queue_url)
                .message_body(body.text)
                .message_attributes("error_kind", string_attribute(&letter.error_kind)?)
                .message_attributes("topic", string_attribute(&letter.topic)?)
                .set_message_group_id(placement.as_ref().map(|p| p.group.to_string()))
                .set_message_deduplication_id(
                    placement.as_ref().map(|p| p.deduplication.to_string()),
                )
                .send()
                .await
                .map_err(|e| SinkError::Refused {
                    operation: "SendMessage",
                    message: DisplayErrorContext(&e).to_string(),
                })?;
            DeadLetterSent {
                queue_url: &self.queue_url,
                body_bytes,
                truncated: body.truncated,
                fifo_group: placement.as_ref().map(|p| p.group.as_str()),
            }
            .emit();
            Ok(())
        })
    }
}

/// A dead-lettered message read back from the queue.
pub struct Parked {
    /// SQS's id of the message: the same on every receive.
    pub message_id: String,
    pub receipt_handle: String,
    /// Its message group in a FIFO queue (its partition); `None` in a
    /// standard queue, which keeps no order.
    pub group: Option<String>,
    /// The dead letter, or why the body is not one.
    pub letter: Result<DeadLetter, String>,
}

/// Reads and deletes dead-lettered messages, for `redrive`.
///
/// In a FIFO queue a received message that is neither deleted nor visible
/// again holds back the rest of its group: SQS hands out none of the group's
/// later messages until then.
pub struct DeadLetterReader {
    client: Client,
    queue_url: String,
    fifo: bool,
}

impl DeadLetterReader {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        let queue_url = queue_url.into();
        Self {
            client,
            fifo: is_fifo_url(&queue_url),
            queue_url,
        }
    }

    pub fn is_fifo(&self) -> bool {
        self.fifo
    }

    /// Up to `max` (at most 10) messages, hidden from other readers for
    /// `visibility`; an empty list when the queue has none.
    pub async fn receive(&self, max: i32, visibility: Duration) -> Result<Vec<Parked>, SinkError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, 10))
            .visibility_timeout(i32::try_from(visibility.as_secs()).unwrap_or(60))
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .send()
            .await
            .map_err(|e| SinkError::Refused {
                operation: "ReceiveMessage",
                message: DisplayErrorContext(&e).to_string(),
            })?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let receipt_handle = m.receipt_handle?;
                let message_id = m.message_id.unwrap_or_default();
                let group = self.fifo.then(|| group_of(m.attributes.as_ref())).flatten();
                let letter = m
                    .body
                    .ok_or_else(|| "the message has no body".to_owned())
                    .and_then(|body| {
                        serde_json::from_str::<DeadLetter>(&body)
                            .map_err(|e| format!("the body is not a dead letter: {e}"))
                    });
                Some(Parked {
                    message_id,
                    receipt_handle,
                    group,
                    letter,
                })
            })
            .collect())
    }

    pub async fn delete(&self, receipt_handle: &str) -> Result<(), SinkError> {
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| SinkError::Refused {
                operation: "DeleteMessage",
                message: DisplayErrorContext(&e).to_string(),
            })
    }

    /// Makes a message visible again at once (a dry run leaves the queue as it was).
    pub async fn release(&self, receipt_handle: &str) -> Result<(), SinkError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(0)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| SinkError::Refused {
                operation: "ChangeMessageVisibility",
                message: DisplayErrorContext(&e).to_string(),
            })
    }
}

fn group_of(attributes: Option<&HashMap<MessageSystemAttributeName, String>>) -> Option<String> {
    attributes?
        .get(&MessageSystemAttributeName::MessageGroupId)
        .cloned()
}
