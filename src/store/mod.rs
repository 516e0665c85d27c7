//! Adapters behind the core's ports.

pub(crate) mod dynamodb;
