//! Adapters behind the core's ports.

pub mod dynamodb;
