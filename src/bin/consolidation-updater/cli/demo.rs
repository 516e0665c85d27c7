//! `consolidation-updater demo`: the whole job on a fresh machine.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::Utc;
use clap::Args;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use serde_json::Value;

use super::{ProjectionArg, batch_exit_code, local_request_id, positive_count, read_event};
use consolidation_updater::app::{self, Invocation, Progress, load_sdk_config, local_client};
use consolidation_updater::local::{
    EmbeddedServer, SyntheticDay, TableShape, create_table, ensure_ledger_table, put_chargebacks,
};
use consolidation_updater::model::{
    ConsolidationEvent, DecodedValue, MessageOutcome, decode_envelope, decode_value,
};
use consolidation_updater::settings::Settings;
use consolidation_updater::testing::ChargebackStore;

/// The seed's sample event, shipped in the binary so the demo runs from anywhere.
const SAMPLE_EVENT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/events/sample-msk-event.json"
));
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
    /// No run ledger: a delivery of a day already stamped is then declined
    /// record by record by the update's condition (with a KEYS_ONLY index, a
    /// write unit each) instead of answered from the ledger.
    #[arg(long)]
    no_ledger: bool,
    /// The date index's projection, when the demo creates the table.
    #[arg(long, value_enum, default_value_t = ProjectionArg::KeysOnly)]
    index_projection: ProjectionArg,
}

pub async fn run(settings: &Settings, args: DemoArgs) -> anyhow::Result<ExitCode> {
    // A run ledger unless --no-ledger: LEDGER_TABLE_NAME's, or its own.
    let mut settings = settings.clone();
    let ledger_table = if args.no_ledger {
        settings.ledger_table = None;
        None
    } else {
        Some(
            settings
                .ledger_table
                .get_or_insert_with(|| format!("{}-run-ledger", settings.table_name))
                .clone(),
        )
    };
    let settings = &settings;
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
    if let Some(ledger_table) = &ledger_table {
        ensure_ledger_table(&client, ledger_table).await?;
    }
    if empty {
        let seeding = Instant::now();
        let seeded = put_chargebacks(&client, table, day.chargebacks(), SEED_CONCURRENCY).await?;
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

    let store = Arc::new(app::store(settings, &sdk, client));
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
        .handle(payload.clone(), &Invocation::unbounded(local_request_id()))
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
            &consolidation_updater::model::StampPlan::for_event(&event, Utc::now())
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
        "  messages: {} applied, {} superseded, {} skipped, {} dead-lettered, {} handed back",
        summary.messages_processed,
        summary.messages_superseded,
        summary.messages_skipped,
        summary.messages_dead_lettered,
        summary.messages_retried
    );
    println!("Response: {}", serde_json::to_string(&outcome.response())?);
    if let Some(ledger_table) = &ledger_table
        && summary.messages_processed > 0
        && summary.messages_retried == 0
        && let Some(line) = redeliver(&handler, &store, &payload, ledger_table).await?
    {
        println!("{line}");
    }
    Ok(batch_exit_code(&summary))
}

/// Delivers the event once more, as Kafka may: a day the run ledger has
/// completed is answered from it. What it cost, for the report.
async fn redeliver(
    handler: &Arc<app::BatchHandler<app::DynamoStore>>,
    store: &app::DynamoStore,
    payload: &Value,
    ledger_table: &str,
) -> anyhow::Result<Option<String>> {
    let ledger_before = handler.ledger().requests_sent().unwrap_or(0);
    let table_before = store.requests_sent();
    let started = Instant::now();
    let again = handler
        .handle(payload.clone(), &Invocation::unbounded(local_request_id()))
        .await?;
    let elapsed = started.elapsed();
    let ledger_requests = handler.ledger().requests_sent().unwrap_or(0) - ledger_before;
    let table_requests = store.requests_sent() - table_before;
    Ok(match again.outcomes.first() {
        Some((_, MessageOutcome::Superseded { by_execution })) => Some(format!(
            "Delivered again: answered from the run ledger ({ledger_table}: execution {by_execution} completed) in {:.1} ms with {ledger_requests} ledger {} and {table_requests} to the chargebacks table",
            elapsed.as_secs_f64() * 1000.0,
            plural(ledger_requests, "request", "requests"),
        )),
        Some((_, other)) => Some(format!(
            "Delivered again: {} (the run ledger did not answer it; see the log)",
            other.label()
        )),
        None => None,
    })
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
