//! Consumes `consolidation_completed` events from Kafka and stamps every
//! chargeback of the consolidated day in DynamoDB, conditionally and
//! idempotently.
//!
//! The modules are private; what the library offers is re-exported below,
//! grouped by who needs it. The binary (`src/bin/consolidation-updater`)
//! runs Lambda and the commands from [`app`], [`settings`],
//! [`observability`] and [`model`]; the demo adds [`local`]; tests, the
//! benchmark and the fuzz target also reach into [`testing`].
//! `ARCHITECTURE.md` has the module map.

#![warn(unreachable_pub)]

mod aws;
mod config;
mod domain;
#[cfg(feature = "embedded")]
mod embedded;
mod fanout;
mod handler;
mod ledger;
mod notify;
mod pacing;
mod ports;
mod queue;
mod redrive;
mod retry;
mod store;
mod synthetic;
mod telemetry;
mod wiring;

/// Building and running the function: the composition root (one place
/// builds the store, the fan-out and the handler for Lambda and for every
/// command) and the parts a command drives.
pub mod app {
    pub use crate::aws::{load_sdk_config, local_client, sqs_client};
    pub use crate::fanout::{FanOut, FanOutError, Progress};
    pub use crate::handler::{BatchHandler, Invocation};
    pub use crate::ledger::{Ledger, RunDecision, Verdict};
    pub use crate::queue::sqs::DeadLetterReader;
    pub use crate::redrive::{RedriveSummary, redrive};
    pub use crate::retry::InvocationControl;
    pub use crate::store::dynamodb::{DynamoLedger, DynamoStore, KeyReader};
    pub use crate::wiring::{connect, fan_out, handler, ledger, redrive_handler, store};
}

/// The settings, read from the environment once.
pub mod settings {
    pub use crate::config::{ConfigErrors, FunctionIdentity, LogFormat, Settings, WriteMode};
}

/// Logs, metrics and traces: installed once per process.
pub mod observability {
    pub use crate::telemetry::metrics::{MetricsEmitter, invocation_started};
    pub use crate::telemetry::xray::{XrayTracer, trace_root};
    pub use crate::telemetry::{Sink, init};
}

/// The core's values a caller sees: events, outcomes, failures.
pub mod model {
    pub use crate::domain::dead_letter::{DeadLetter, Poison};
    pub use crate::domain::event::{
        ConsolidationEvent, DecodeError, DecodedValue, EventParts, PartitionDate, decode_value,
    };
    pub use crate::domain::failure::{ErrorClass, SinkError, StopReason, StoreError};
    pub use crate::domain::kafka::{EnvelopeError, decode_envelope};
    pub use crate::domain::outcome::{BatchOutcome, BatchSummary, FailureNotice, MessageOutcome};
    pub use crate::domain::run::{
        Checkpoint, Completion, IndexPosition, KeyPart, Recorded, Run, RunCounts, RunStart,
        RunStatus, TableIdentity,
    };
    pub use crate::domain::stamp::{StampPlan, StampReport, StampResult, StampValues};
}

/// A table on a local engine: its contract, seeded with generated chargebacks.
pub mod local {
    #[cfg(feature = "embedded")]
    pub use crate::embedded::EmbeddedServer;
    pub use crate::store::dynamodb::ledger_table::ensure_ledger_table;
    pub use crate::store::dynamodb::provision::{
        Ensured, IndexProjection, TableShape, create_table, ensure_table, put_chargebacks,
    };
    pub use crate::synthetic::{Chargeback, SyntheticDay};
}

/// For the integration tests, the benchmark and the fuzz target only: the
/// ports (to put fakes and real adapters side by side), the adapters built
/// by hand, and the decoders' fuzz entry. Not a stable API.
pub mod testing {
    pub use crate::domain::exercise_decoders;
    pub use crate::notify::sns::SnsNotifier;
    pub use crate::ports::{
        BoxFuture, ChargebackStore, Checkpoints, DeadLetterSink, FailureNotifier, RunLedger,
    };
    pub use crate::queue::sqs::{DEFAULT_MESSAGE_LIMIT, SqsDeadLetters};
    pub use crate::retry::RetryPolicy;
}
