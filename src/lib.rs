//! Consumes `consolidation_completed` events from Kafka and stamps every
//! chargeback of the consolidated day in DynamoDB, conditionally and idempotently.
//!
//! Layout: `domain` is the pure core (decoding, the stamp plan, outcomes and
//! the response); `ports` are the traits it needs; `fanout` drives a store
//! through them; `store` holds the DynamoDB adapter; `aws` configures the SDK
//! clients; `handler` is one invocation; `lambda` and `cli` are the two ways
//! to run it.

pub mod app;
pub mod aws;
pub mod config;
pub mod domain;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod fanout;
pub mod handler;

pub mod notify;
pub mod pacing;
pub mod ports;
pub mod queue;
pub mod redrive;
pub mod retry;
pub mod store;
pub mod synthetic;
pub mod telemetry;
