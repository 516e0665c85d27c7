//! Failure notifications: one summary per invocation that had failures.

pub(crate) mod sns;
