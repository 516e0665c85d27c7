//! The dead-letter queue: where poison messages are parked with their payload.

pub mod events;
pub mod sqs;
