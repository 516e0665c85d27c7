//! The command line: the same handler as in Lambda, run from a laptop.
//! Logs go to stderr, results to stdout.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use serde_json::Value;
use tracing::info;

use crate::app;
use crate::aws::{self, load_sdk_config};
use crate::config::{LogFormat, Settings};
use crate::fanout::FanOut;
use crate::handler::{BatchHandler, Invocation};
use crate::queue::sqs::DeadLetterReader;
use crate::store::dynamodb::provision::{Ensured, IndexProjection, TableShape, ensure_table};
use crate::store::dynamodb::{DynamoStore, KeyReader};
use crate::telemetry::xray::XrayTracer;
use crate::telemetry::{self, Sink};

/// What the process's exit status says, for scripts.
pub mod exit_code {
    /// Every message done: applied, skipped (another event type) or dead-lettered.
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
  0  done: every message applied, skipped (another event type) or dead-lettered
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
    Backfill(BackfillArgs),
    /// Create the chargebacks table and its date index per the table contract.
    ///
    /// The table is DYNAMODB_TABLE_NAME, the index CHARGEBACK_DATE_INDEX, on
    /// the DynamoDB the environment configures (e.g. AWS_ENDPOINT_URL_DYNAMODB
    /// for DynamoDB Local). Safe to run again: an existing table is checked,
    /// and given the date index if it lacks it.
    CreateTable {
        /// The date index's projection.
        #[arg(long, value_enum, default_value_t = ProjectionArg::KeysOnly)]
        index_projection: ProjectionArg,
    },
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

/// A count of zero or more.
fn count(value: &str) -> Result<u64, String> {
    value
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("{value:?} is not a count: expected a whole number of 0 or more"))
}

#[derive(Debug, clap::Args)]
struct BackfillArgs {
    /// The day to stamp, YYYY-MM-DD.
    #[arg(long)]
    partition_date: String,
    /// The execution sequence to stamp with.
    #[arg(long, value_parser = positive_count, allow_negative_numbers = true)]
    execution: u64,
    /// The day's total executions.
    #[arg(long, value_parser = positive_count, allow_negative_numbers = true)]
    total: u64,
    /// Where the consolidated files are (s3://bucket/prefix).
    #[arg(long)]
    output_path: String,
    /// csv, parquet or json.
    #[arg(long)]
    format: String,
    /// The Glue job's name.
    #[arg(long)]
    job_name: String,
    /// When the run completed (ISO-8601; UTC without an offset) [default: now].
    #[arg(long)]
    completed_at: Option<String>,
    /// Only records created up to this time (ISO-8601, UTC without an offset)
    /// [default: the end of the day: every record of it].
    #[arg(long)]
    execution_time: Option<String>,
    /// `records_in_consolidation` to write (0 when unknown).
    #[arg(long, default_value_t = 0, value_parser = count, allow_negative_numbers = true)]
    records_processed: u64,
    /// Count what would change; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Rewrite records already at this execution too (a rerun with the same
    /// sequence but a new path); a newer execution is still never regressed.
    #[arg(long)]
    force: bool,
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
    telemetry::init(
        settings.log_level,
        settings.log_format.unwrap_or(LogFormat::Text),
        Sink::Stderr,
        settings.function.as_ref(),
        tracer.as_ref(),
    );
    let result = match cli.command {
        Command::Invoke { event } => invoke(&settings, event).await,
        Command::Redrive {
            queue_url,
            max,
            dry_run,
        } => redrive(&settings, &queue_url, max, dry_run).await,
        Command::Backfill(args) => backfill(&settings, args).await,
        Command::CreateTable { index_projection } => {
            create_table(&settings, index_projection.into()).await
        }
        #[cfg(feature = "embedded")]
        Command::Demo(args) => demo::run(&settings, args).await,
        #[cfg(feature = "embedded")]
        Command::Serve { db, port } => serve(db, port.unwrap_or(0)).await,
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
fn batch_exit_code(summary: &crate::domain::outcome::BatchSummary) -> ExitCode {
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

async fn invoke(settings: &Settings, event: PathBuf) -> anyhow::Result<ExitCode> {
    let payload = read_event(&event)?;
    let (sdk, store) = connect_store(settings).await;
    let handler = Arc::new(app::handler(settings, &sdk, store, Arc::default()).await);
    let store = Arc::clone(handler.fan_out().store());
    let outcome = handler
        .handle(payload, &Invocation::unbounded(local_request_id()))
        .await?;
    let units = store.reported_write_units();
    info!(
        peak_rss_kib = peak_rss_kib(),
        dynamodb_requests = store.requests_sent(),
        table_write_units = units.table,
        index_write_units = units.indexes,
        "DynamoDB usage: {} requests; write units reported: {} on the table, {} on its indexes",
        store.requests_sent(),
        units.table,
        units.indexes
    );
    println!("{}", serde_json::to_string(&outcome.response())?);
    let summary = outcome.summary();
    if summary.messages_retried > 0 {
        eprintln!(
            "consolidation-updater: {} of {} messages handed back for a retry{}",
            summary.messages_retried,
            outcome.outcomes.len(),
            first_problem(&outcome).map_or_else(String::new, |why| format!(": {why}")),
        );
    }
    Ok(batch_exit_code(&summary))
}

/// The first handed-back message's problem, with what to set when it is a
/// missing credential, endpoint or region.
fn first_problem(outcome: &crate::domain::outcome::BatchOutcome) -> Option<String> {
    outcome
        .outcomes
        .iter()
        .filter(|(_, o)| o.hands_back())
        .find_map(|(_, o)| o.problem())
        .map(|(_, text)| with_setup_hint(&text))
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

/// Serves the embedded engine until Ctrl-C or SIGTERM; the first stdout line
/// is `DYNAMODB_ENDPOINT=http://127.0.0.1:PORT`.
#[cfg(feature = "embedded")]
async fn serve(db: Option<PathBuf>, port: u16) -> anyhow::Result<ExitCode> {
    let server = crate::embedded::EmbeddedServer::start_on(db.as_deref(), port).await?;
    println!("DYNAMODB_ENDPOINT={}", server.endpoint());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    drop(server);
    Ok(ExitCode::SUCCESS)
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

/// The store the settings name, described once.
async fn connect_store(settings: &Settings) -> (aws_config::SdkConfig, Arc<DynamoStore>) {
    let sdk = load_sdk_config(settings.region.as_deref()).await;
    let store = Arc::new(app::store(settings, &sdk));
    store.warm_up().await;
    (sdk, store)
}

async fn redrive(
    settings: &Settings,
    queue_url: &str,
    max: Option<u64>,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let (sdk, store) = connect_store(settings).await;
    // No dead-letter queue here: a message that fails again stays where it is
    // instead of being parked a second time.
    let handler = Arc::new(BatchHandler::new(
        FanOut::new(store, settings.max_concurrency, Arc::default())
            .with_max_write_rate(settings.max_write_rate),
    ));
    let reader = DeadLetterReader::new(aws::sqs_client(&sdk), queue_url);
    let summary = crate::redrive::redrive(&reader, &handler, max, dry_run).await?;
    let verb = if dry_run {
        "would be redriven"
    } else {
        "redriven"
    };
    println!(
        "Examined {} dead-lettered messages: {} {verb}, {} still failing",
        summary.examined,
        summary.redriven,
        summary.still_failing.len()
    );
    for (message, why) in &summary.still_failing {
        println!("  still failing: {message}: {why}");
    }
    for message in &summary.held_back {
        println!("  held back: {message}: an earlier message of its partition is still failing");
    }
    for group in &summary.stopped_groups {
        println!(
            "  FIFO: partition {group} stopped at a still-failing message; its later messages \
             stay in the queue, unexamined, until that one is fixed or deleted"
        );
    }
    if dry_run && reader.is_fifo() {
        println!(
            "  FIFO: a dry run deletes nothing, and SQS hands out a partition's later messages \
             only once its earlier ones are deleted: at most one batch (10) of each partition \
             was examined"
        );
    }
    let left_in_queue = summary.still_failing.len() + summary.held_back.len();
    if left_in_queue == 0 && summary.stopped_groups.is_empty() {
        Ok(ExitCode::from(exit_code::DONE))
    } else {
        Ok(ExitCode::from(exit_code::HANDED_BACK))
    }
}

/// `create-table`: the table contract on any endpoint, idempotently.
async fn create_table(
    settings: &Settings,
    projection: IndexProjection,
) -> anyhow::Result<ExitCode> {
    let sdk = load_sdk_config(settings.region.as_deref()).await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let table = settings.table_name.as_str();
    let index = settings.date_index.as_str();
    let shape = TableShape {
        index: Some(projection),
        ..TableShape::default()
    };
    let ensured = ensure_table(&client, table, index, shape)
        .await
        .map_err(|e| anyhow::anyhow!(with_setup_hint(&e.to_string())))?;
    // The same check the function makes at cold start.
    let store = DynamoStore::new(client, table, index);
    let layout = store
        .layout()
        .await
        .map_err(|e| anyhow::anyhow!(with_setup_hint(&e.to_string())))?;
    let what = match ensured {
        Ensured::Created => "created",
        Ensured::AlreadyThere => "already there",
        Ensured::IndexAdded => "already there; date index added",
    };
    let range = layout
        .range_key
        .as_deref()
        .map_or_else(String::new, |key| format!(" + {key}"));
    let reader = match layout.reader {
        KeyReader::Index {
            projects_execution: true,
        } => {
            format!("index {index} (partition_date + created_at, projects consolidation_execution)")
        }
        KeyReader::Index {
            projects_execution: false,
        } => format!("index {index} (partition_date + created_at, keys only)"),
        KeyReader::Scan { .. } => format!("no index {index}: the function will scan"),
    };
    println!(
        "Table {table}: {what}; key {}{range}; {reader}",
        layout.hash_key
    );
    Ok(ExitCode::from(exit_code::DONE))
}

async fn backfill(settings: &Settings, args: BackfillArgs) -> anyhow::Result<ExitCode> {
    let completed_at = args.completed_at.clone().unwrap_or_else(|| {
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
    });
    let execution_time = args
        .execution_time
        .clone()
        .unwrap_or_else(|| format!("{}T23:59:59", args.partition_date));
    // The same validation as an event from the Glue job.
    let event = serde_json::json!({
        "event_type": crate::domain::event::CONSOLIDATION_COMPLETED,
        "partition_date": args.partition_date,
        "execution_sequence": args.execution,
        "total_executions": args.total,
        "records_processed": args.records_processed,
        "duplicates_removed": 0,
        "output_files": 0,
        "output_format": args.format,
        "output_path": args.output_path,
        "execution_time": execution_time,
        "completed_at": completed_at,
        "job_name": args.job_name,
    });
    let event = match crate::domain::event::decode_json(&event.to_string()) {
        Ok(crate::domain::event::DecodedValue::Consolidation(event)) => event,
        Ok(_) => anyhow::bail!("not a consolidation event"),
        Err(problem) => anyhow::bail!("invalid backfill: {problem}"),
    };
    let mut plan = crate::domain::stamp::StampPlan::for_event(&event, chrono::Utc::now());
    if args.force {
        plan = plan.replacing_same_execution();
    }
    let (_, store) = connect_store(settings).await;
    let mut fan_out = FanOut::new(store, settings.max_concurrency, Arc::default())
        .with_max_write_rate(settings.max_write_rate);
    if args.dry_run {
        fan_out = fan_out.dry_run();
    }
    let control = Arc::new(crate::retry::InvocationControl::default());
    let report = match fan_out.stamp_partition(&plan, &control).await {
        Ok(report) => report,
        Err(crate::fanout::FanOutError::Store { error, .. }) => {
            anyhow::bail!("backfill failed: {error}")
        }
        Err(crate::fanout::FanOutError::Stopped { reason, .. }) => {
            anyhow::bail!("backfill stopped: {reason}")
        }
    };
    let verb = if args.dry_run {
        "would be stamped"
    } else {
        "stamped"
    };
    println!(
        "{} of {} created before {}: {} {verb}, {} already at execution {} or newer{}, {} gone",
        report.examined(),
        event.partition_date,
        plan.selection.created_before,
        report.written,
        report.already_applied,
        event.execution.sequence(),
        if args.force {
            " (other than this one)"
        } else {
            ""
        },
        report.missing,
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "embedded")]
pub mod demo {
    //! `consolidation-updater demo`: the whole job on a fresh machine.

    use std::io::IsTerminal;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    use anyhow::{Context as _, bail};
    use chrono::Utc;
    use clap::Args;

    use super::*;
    use crate::aws::local_client;
    use crate::domain::event::{ConsolidationEvent, DecodedValue, decode_value};
    use crate::domain::kafka::decode_envelope;
    use crate::domain::outcome::MessageOutcome;
    use crate::embedded::EmbeddedServer;
    use crate::fanout::Progress;
    use crate::ports::ChargebackStore;
    use crate::store::dynamodb::provision::{create_table, put_chargebacks};
    use crate::synthetic::SyntheticDay;

    /// The seed's sample event, shipped in the binary so the demo runs from anywhere.
    const SAMPLE_EVENT: &str = include_str!("../events/sample-msk-event.json");
    /// Concurrent `BatchWriteItem` requests while seeding.
    const SEED_CONCURRENCY: usize = 16;

    #[derive(Debug, Args)]
    pub struct DemoArgs {
        /// The Lambda Kafka event to run [default: the seed's sample, events/sample-msk-event.json].
        #[arg(long)]
        event: Option<PathBuf>,
        /// Chargebacks of the event's day to seed (90% before the execution time,
        /// 10% after), plus 5% more on the neighbouring days.
        #[arg(long, default_value_t = 100_000, value_parser = positive_count, allow_negative_numbers = true)]
        records: u64,
        /// Keep the engine's data in this SQLite file instead of in memory.
        #[arg(long, conflicts_with = "endpoint")]
        db: Option<PathBuf>,
        /// Use this DynamoDB-compatible server (e.g. DynamoDB Local at
        /// http://127.0.0.1:8000) instead of the embedded engine.
        #[arg(long)]
        endpoint: Option<String>,
        /// Simulate a Lambda deadline: the first delivery stops starting work
        /// after this many milliseconds and hands the message back; the demo
        /// then delivers it again and reports what the retry cost.
        #[arg(long, value_parser = positive_count, allow_negative_numbers = true)]
        interrupt_after_ms: Option<u64>,
        /// The date index's projection, when the demo creates the table.
        #[arg(long, value_enum, default_value_t = ProjectionArg::KeysOnly)]
        index_projection: ProjectionArg,
    }

    pub async fn run(settings: &Settings, args: DemoArgs) -> anyhow::Result<ExitCode> {
        let payload = match &args.event {
            Some(path) => read_event(path)?,
            None => serde_json::from_str(SAMPLE_EVENT).context("the bundled sample event")?,
        };
        let event = first_consolidation_event(&payload)?;

        // Kept alive until the end of the run when used.
        let server = match &args.endpoint {
            Some(_) => None,
            None => Some(EmbeddedServer::start(args.db.as_deref()).await?),
        };
        let endpoint = match (&server, &args.endpoint) {
            (Some(server), _) => server.endpoint().to_owned(),
            (None, Some(endpoint)) => endpoint.clone(),
            (None, None) => bail!("no DynamoDB endpoint"),
        };
        let sdk = load_sdk_config(settings.region.as_deref()).await;
        let client = local_client(&sdk, &endpoint);
        let table = settings.table_name.as_str();
        match &server {
            Some(_) => println!("Embedded DynamoDB-compatible engine at {endpoint}"),
            None => println!("DynamoDB-compatible server at {endpoint}"),
        }

        let day = SyntheticDay::around(
            event.execution_time,
            event.partition_date.date(),
            args.records,
        );
        let exists = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .is_ok();
        // A table that holds anything is not ours to add a synthetic day to.
        let empty = !exists
            || client
                .scan()
                .table_name(table)
                .limit(1)
                .send()
                .await
                .map(|page| page.count() == 0)
                .unwrap_or(false);
        if !exists {
            let shape = TableShape {
                index: Some(args.index_projection.into()),
                ..TableShape::default()
            };
            create_table(&client, table, &settings.date_index, shape).await?;
        }
        if empty {
            let seeding = Instant::now();
            let seeded =
                put_chargebacks(&client, table, day.chargebacks(), SEED_CONCURRENCY).await?;
            println!(
                "Seeded {seeded} {} in {:.1} s: {} of {} created up to {}, {} after it, {} on other days",
                plural(seeded, "chargeback", "chargebacks"),
                seeding.elapsed().as_secs_f64(),
                day.before_cutoff,
                event.partition_date,
                event.execution_time.format("%H:%M:%S"),
                day.after_cutoff,
                day.other_dates,
            );
        } else {
            println!(
                "Table {table} in {} already holds chargebacks: not seeding it again",
                db_name(&args)
            );
        }

        crate::telemetry::events::SettingsInEffect {
            settings,
            region: sdk.region().map(|r| r.as_ref()),
        }
        .emit();
        let store = Arc::new(
            DynamoStore::new(client, table, &settings.date_index)
                .with_write_mode(settings.write_mode),
        );
        store.warm_up().await;
        let progress = Arc::new(Progress::default());
        if empty {
            // The day the demo seeded, not the event's count of another day's output.
            progress.expect_selection_of(day.before_cutoff);
        }
        let handler =
            Arc::new(app::handler(settings, &sdk, Arc::clone(&store), Arc::clone(&progress)).await);
        let bar = progress_bar(day.before_cutoff);
        let ticker = bar.clone().map(|bar| {
            let progress = Arc::clone(&progress);
            tokio::spawn(async move {
                loop {
                    bar.set_position(progress.examined());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        });

        if let Some(ms) = args.interrupt_after_ms {
            let first = Instant::now();
            let invocation = Invocation {
                deadline: Some(first + settings.deadline_margin + Duration::from_millis(ms)),
                ..Invocation::unbounded(local_request_id())
            };
            let interrupted = handler.handle(payload.clone(), &invocation).await?;
            let written_first = progress.written.load(Ordering::Relaxed);
            println!(
                "First delivery: stopped after {:.2} s with {written_first} written; response {}",
                first.elapsed().as_secs_f64(),
                serde_json::to_string(&interrupted.response())?
            );
        }
        let examined_before = progress.examined();
        let started = Instant::now();
        let outcome = handler
            .handle(payload, &Invocation::unbounded(local_request_id()))
            .await?;
        let elapsed = started.elapsed();
        if args.interrupt_after_ms.is_some()
            && let Some((_, MessageOutcome::Applied(report))) = outcome.outcomes.first()
        {
            let declined_by_condition = report.already_applied - report.already_applied_on_read;
            println!(
                "Redelivery: {} written, {} already applied ({} seen on read, {declined_by_condition} \
                 declined by the update's condition) in {:.2} s; write units spent: {} \
                 (a failed condition costs one, like a write)",
                report.written,
                report.already_applied,
                report.already_applied_on_read,
                elapsed.as_secs_f64(),
                report.written + declined_by_condition,
            );
        }

        if let Some(ticker) = ticker {
            ticker.abort();
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }

        let summary = outcome.summary();
        let written = progress.written.load(Ordering::Relaxed);
        let examined = progress.examined() - examined_before;
        let left = store
            .count_created_from(
                event.partition_date,
                &crate::domain::stamp::StampPlan::for_event(&event, Utc::now())
                    .selection
                    .created_before,
            )
            .await?;
        let seconds = elapsed.as_secs_f64();
        println!(
            "Stamped {written} {} of {} (execution {} of {}) in {seconds:.2} s: {:.0} records/s",
            plural(written, "chargeback", "chargebacks"),
            event.partition_date,
            event.execution.sequence(),
            event.execution.total(),
            examined as f64 / seconds.max(1e-9),
        );
        println!(
            "  already at this execution or a newer one: {}",
            summary.chargebacks_already_applied
        );
        let after = event.execution_time.format("%Y-%m-%dT%H:%M:%S");
        if event.execution.is_last() {
            println!(
                "  created after {after}, the day's last execution: {left}, which no later run will stamp"
            );
        } else {
            println!("  created after {after}, left for the next execution: {left}");
        }
        println!(
            "  messages: {} applied, {} skipped, {} dead-lettered, {} handed back",
            summary.messages_processed,
            summary.messages_skipped,
            summary.messages_dead_lettered,
            summary.messages_retried
        );
        println!("Response: {}", serde_json::to_string(&outcome.response())?);
        Ok(batch_exit_code(&summary))
    }

    /// The singular only for exactly one.
    fn plural<'a>(count: u64, one: &'a str, many: &'a str) -> &'a str {
        if count == 1 { one } else { many }
    }

    fn db_name(args: &DemoArgs) -> String {
        match (&args.db, &args.endpoint) {
            (Some(path), _) => path.display().to_string(),
            (None, Some(endpoint)) => endpoint.clone(),
            (None, None) => "memory".into(),
        }
    }

    /// The demo seeds the day of the event's first consolidation message.
    fn first_consolidation_event(payload: &Value) -> anyhow::Result<ConsolidationEvent> {
        let partitions = decode_envelope(payload.clone())?;
        for message in partitions.iter().flat_map(|p| &p.messages) {
            if let Ok(DecodedValue::Consolidation(event)) = decode_value(message.value.as_ref()) {
                return Ok(event);
            }
        }
        bail!("the event holds no valid consolidation_completed message to seed a day around")
    }

    fn progress_bar(length: u64) -> Option<indicatif::ProgressBar> {
        if !std::io::stdout().is_terminal() {
            return None;
        }
        // On stdout, with the results; stderr carries the logs.
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(length),
            indicatif::ProgressDrawTarget::stdout(),
        );
        let style = indicatif::ProgressStyle::with_template(
            "{spinner} stamping [{bar:40}] {human_pos}/{human_len} ({percent}%) eta {eta}",
        )
        .map(|s| s.progress_chars("=> "));
        if let Ok(style) = style {
            bar.set_style(style);
        }
        Some(bar)
    }
}
