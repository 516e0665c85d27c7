//! The command line: the same handler as in Lambda, run from a laptop.
//! Logs go to stderr, results to stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use serde_json::Value;

mod backfill;
mod create_table;
#[cfg(feature = "embedded")]
mod demo;
mod invoke;
mod redrive;
#[cfg(feature = "embedded")]
mod serve;
mod status;

use consolidation_updater::local::IndexProjection;
use consolidation_updater::observability::{self, Sink, XrayTracer};
use consolidation_updater::settings::{LogFormat, Settings};

/// What the process's exit status says, for scripts.
pub mod exit_code {
    /// Every message done: applied, superseded (a newer event of its day in
    /// the batch, or the run ledger, has its day done), skipped (another
    /// event type) or dead-lettered.
    pub const DONE: u8 = 0;
    /// The run failed: the event file is not a Kafka event, the command could
    /// not do its work (e.g. a table that does not follow the contract).
    pub const FAILED: u8 = 1;
    /// A usage error or an invalid setting (an environment variable).
    pub const USAGE: u8 = 2;
    /// Some messages were handed back for Lambda to deliver again (no
    /// credentials, endpoint unreachable, table missing, a poison message that
    /// could not be dead-lettered, the deadline), or, for `redrive`, some
    /// dead-lettered messages are still failing and stay in the queue.
    pub const HANDED_BACK: u8 = 3;
}

const EXIT_CODES_HELP: &str = "\
Exit status:
  0  done: every message applied, superseded (its run already completed, per the
     run ledger), skipped (another event type) or dead-lettered
  1  failed: the run could not do its work (e.g. the event file is not a Kafka event)
  2  usage error or invalid setting (every invalid environment variable is named)
  3  some messages were handed back for a retry (invoke, demo), or some
     dead-lettered messages are still failing and stay in the queue (redrive)";

#[derive(Debug, Parser)]
#[command(name = "consolidation-updater", version, about, after_help = EXIT_CODES_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the handler once on a Lambda Kafka event file, against the DynamoDB
    /// the environment configures (AWS_ENDPOINT_URL_DYNAMODB, profile, region),
    /// and print the response JSON.
    Invoke {
        /// A Lambda Kafka event (MSK or self-managed), e.g. events/sample-msk-event.json.
        #[arg(long)]
        event: PathBuf,
        /// Give the invocation a deadline this many seconds after it starts,
        /// as Lambda's function timeout does (up to 900; fractions allowed):
        /// new work stops DEADLINE_SAFETY_MARGIN_MS before it, unfinished
        /// messages are handed back, and a run of the ledger saves its
        /// checkpoint. Without it the invocation has no deadline.
        #[arg(long, value_parser = timeout_seconds, value_name = "SECONDS")]
        timeout: Option<std::time::Duration>,
    },
    /// Replay dead-lettered messages from the SQS queue through the same
    /// decoding and stamping; delete each only after it succeeded.
    Redrive {
        /// The dead-letter queue's URL (DLQ_URL of the function).
        #[arg(long)]
        queue_url: String,
        /// Stop after this many messages.
        #[arg(long, value_parser = positive_count, allow_negative_numbers = true)]
        max: Option<u64>,
        /// Decode only: stamp nothing, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Stamp a day by hand through the same code (e.g. after a Glue rerun).
    Backfill(backfill::BackfillArgs),
    /// Create the chargebacks table and its date index per the table contract,
    /// and the run ledger's table when LEDGER_TABLE_NAME names one.
    ///
    /// The table is DYNAMODB_TABLE_NAME, the index CHARGEBACK_DATE_INDEX, on
    /// the DynamoDB the environment configures (e.g. AWS_ENDPOINT_URL_DYNAMODB
    /// for DynamoDB Local). Safe to run again: an existing table is checked,
    /// and given the date index if it lacks it.
    ///
    /// DynamoDB builds an index added to an existing table from the table's
    /// items (minutes to hours on a large table); until it is active the
    /// function scans the table instead. Exits 1 if it is still being built
    /// after --wait (it finishes on its own: run create-table again to wait).
    CreateTable {
        /// The date index's projection.
        #[arg(long, value_enum, default_value_t = ProjectionArg::KeysOnly)]
        index_projection: ProjectionArg,
        /// How long to wait for a date index being built to become active;
        /// 0 = do not wait.
        #[arg(long, value_parser = count, value_name = "SECONDS", default_value_t = 600)]
        wait: u64,
    },
    /// Show the runs of a day the run ledger (LEDGER_TABLE_NAME) holds: each
    /// execution's status and counts beside the event's; or, with --since,
    /// one line per day.
    Status(status::StatusArgs),
    /// Run an event end to end on the embedded DynamoDB-compatible engine:
    /// create the table, seed a synthetic day, stamp it, report.
    #[cfg(feature = "embedded")]
    Demo(crate::cli::demo::DemoArgs),
    /// Serve the embedded DynamoDB-compatible engine on loopback until
    /// interrupted (for the benchmark, or to point other tools at).
    #[cfg(feature = "embedded")]
    Serve {
        /// Keep the data in this SQLite file [default: in memory].
        #[arg(long)]
        db: Option<PathBuf>,
        /// Port on 127.0.0.1 [default: any free one].
        #[arg(long)]
        port: Option<u16>,
    },
}

/// The date index's projection, for the commands that create the table.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ProjectionArg {
    /// Keys only: a redelivery is declined record by record by the update's condition.
    KeysOnly,
    /// Keys plus `consolidation_execution`: a redelivery skips stamped records on read.
    IncludeExecution,
}

impl From<ProjectionArg> for IndexProjection {
    fn from(projection: ProjectionArg) -> Self {
        match projection {
            ProjectionArg::KeysOnly => Self::KeysOnly,
            ProjectionArg::IncludeExecution => Self::IncludeExecution,
        }
    }
}

/// A count of at least 1. Also reached by values such as `-5`, which clap
/// would otherwise take for an unknown option.
fn positive_count(value: &str) -> Result<u64, String> {
    match value.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "{value:?} is not a positive count: expected a whole number of at least 1"
        )),
    }
}

/// A function timeout: more than 0 and at most Lambda's 900 seconds.
fn timeout_seconds(value: &str) -> Result<std::time::Duration, String> {
    match value.trim().parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds <= 900.0 => {
            Ok(std::time::Duration::from_secs_f64(seconds))
        }
        _ => Err(format!(
            "{value:?} is not a timeout: expected seconds, more than 0 and at most 900 (e.g. 2.5)"
        )),
    }
}

/// A count of zero or more.
fn count(value: &str) -> Result<u64, String> {
    value
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("{value:?} is not a count: expected a whole number of 0 or more"))
}

pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(problem) => {
            eprintln!("consolidation-updater: {problem}");
            return ExitCode::from(exit_code::USAGE);
        }
    };
    // Only with XRAY_TRACING=on: each invocation is then a trace of its own.
    let tracer = settings
        .xray
        .and_then(|daemon| XrayTracer::connect(daemon, false).ok());
    observability::init(
        settings.log_level,
        settings.log_format.unwrap_or(LogFormat::Text),
        Sink::Stderr,
        settings.function.as_ref(),
        tracer.as_ref(),
    );
    let result = match cli.command {
        Command::Invoke { event, timeout } => invoke::run(&settings, event, timeout).await,
        Command::Redrive {
            queue_url,
            max,
            dry_run,
        } => redrive::run(&settings, &queue_url, max, dry_run).await,
        Command::Backfill(args) => backfill::run(&settings, args).await,
        Command::Status(args) => status::run(&settings, args).await,
        Command::CreateTable {
            index_projection,
            wait,
        } => {
            create_table::run(
                &settings,
                index_projection.into(),
                std::time::Duration::from_secs(wait),
            )
            .await
        }
        #[cfg(feature = "embedded")]
        Command::Demo(args) => demo::run(&settings, args).await,
        #[cfg(feature = "embedded")]
        Command::Serve { db, port } => serve::run(db, port.unwrap_or(0)).await,
    };
    match result {
        Ok(code) => code,
        Err(problem) => {
            // One line, the cause last; the whole chain is in the DEBUG log.
            tracing::debug!(error = ?problem, "the command failed");
            eprintln!("consolidation-updater: {problem:#}");
            ExitCode::from(exit_code::FAILED)
        }
    }
}

/// Exit status of a handled batch: handed-back messages are not success.
fn batch_exit_code(summary: &consolidation_updater::model::BatchSummary) -> ExitCode {
    if summary.messages_retried > 0 {
        ExitCode::from(exit_code::HANDED_BACK)
    } else {
        ExitCode::from(exit_code::DONE)
    }
}

/// Reads a Lambda event file as JSON.
fn read_event(path: &PathBuf) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the event file {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// A request id for a run outside Lambda, so its log lines can be found together.
fn local_request_id() -> String {
    format!(
        "local-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    )
}

/// Appends how to fix the common setup problems of a first run on a laptop.
fn with_setup_hint(problem: &str) -> String {
    let lower = problem.to_ascii_lowercase();
    let hint = if lower.contains("credential") || lower.contains("imds") {
        Some(
            "no AWS credentials found: set AWS_PROFILE (or AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY); for a local server any values do, with \
             AWS_ENDPOINT_URL_DYNAMODB naming it",
        )
    } else if lower.contains("connection refused")
        || lower.contains("dns error")
        || lower.contains("unreachable")
    {
        Some(
            "the DynamoDB endpoint cannot be reached: check AWS_ENDPOINT_URL_DYNAMODB (or \
             AWS_REGION for AWS) and that the server is running",
        )
    } else if lower.contains("resourcenotfound") {
        Some(
            "the table does not exist at this endpoint: check DYNAMODB_TABLE_NAME, or create \
             it with `consolidation-updater create-table`",
        )
    } else {
        None
    };
    match hint {
        Some(hint) => format!("{problem} ({hint})"),
        None => problem.to_owned(),
    }
}

/// This process's peak resident set (Linux `VmHWM`), for the benchmark.
/// Not `getrusage`: its maximum survives `exec`, so a child would report
/// its parent's size at the fork.
fn peak_rss_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
