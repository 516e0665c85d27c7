//! What the dead-letter queue adapter tells operators, one type per event, so
//! that each can later become a typed telemetry event (a log line and a
//! metric together) without hunting for `debug!` calls.

use tracing::debug;

/// Cold start learnt the dead-letter queue's size limit and type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueDescribed<'a> {
    pub queue_url: &'a str,
    /// Bytes a message may have, attributes included.
    pub message_limit: usize,
    pub fifo: bool,
    /// `false` when the attributes could not be read and both values are
    /// assumed (SQS's default limit, FIFO from the `.fifo` name).
    pub from_attributes: bool,
}

impl QueueDescribed<'_> {
    pub(crate) fn emit(&self) {
        debug!(
            dlq_url = %self.queue_url,
            message_limit = self.message_limit,
            fifo = self.fifo,
            from_attributes = self.from_attributes,
            "dead-letter queue described"
        );
    }
}

/// The queue accepted one dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeadLetterSent<'a> {
    pub queue_url: &'a str,
    pub body_bytes: usize,
    /// The headers were left out or the value cut to fit the queue's limit.
    pub truncated: bool,
    /// The message group of a FIFO queue; `None` for a standard queue.
    pub fifo_group: Option<&'a str>,
}

impl DeadLetterSent<'_> {
    pub(crate) fn emit(&self) {
        debug!(
            dlq_url = %self.queue_url,
            body_bytes = self.body_bytes,
            truncated = self.truncated,
            fifo_group = self.fifo_group,
            "dead letter sent"
        );
    }
}
