//! The dead-letter queue: where poison messages are parked with their payload.

pub(crate) mod events;
pub(crate) mod sqs;
