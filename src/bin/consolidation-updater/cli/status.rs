//! `status`: which runs of a day the run ledger holds, and which days are done.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use chrono::{Duration, Utc};
use serde_json::json;

use super::{exit_code, with_setup_hint};
use consolidation_updater::app::{self, DynamoLedger};
use consolidation_updater::model::{PartitionDate, Run, RunStatus};
use consolidation_updater::settings::Settings;

/// The most days `--since` reads (one query each): the longest TTL.
const MAX_DAYS: i64 = 3650;

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("days").required(true))]
pub(super) struct StatusArgs {
    /// The day whose runs to show, YYYY-MM-DD.
    #[arg(long, group = "days", value_parser = day)]
    partition_date: Option<PartitionDate>,
    /// Every day from this one to today (UTC), YYYY-MM-DD: one line each.
    #[arg(long, group = "days", value_parser = day)]
    since: Option<PartitionDate>,
    /// One JSON document on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

pub(super) async fn run(settings: &Settings, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let Some(ledger_table) = settings.ledger_table.as_deref() else {
        eprintln!(
            "consolidation-updater: status reads the run ledger: set LEDGER_TABLE_NAME to its \
             table (the function's LEDGER_TABLE_NAME)"
        );
        return Ok(ExitCode::from(exit_code::USAGE));
    };
    let days = match (args.partition_date, args.since) {
        (Some(day), _) => vec![day],
        (None, Some(since)) => days_since(since)?,
        (None, None) => bail!("give --partition-date or --since"),
    };
    let sdk = app::load_sdk_config(settings.region.as_deref()).await;
    let store = app::store(settings, &sdk, aws_sdk_dynamodb::Client::new(&sdk));
    let ledger = store.ledger(ledger_table, settings.ledger_ttl_days);
    // Runs of another table (the chargebacks table recreated) are marked.
    let current = store.layout().await.ok().map(|l| l.table_id.clone());
    let mut found = Vec::with_capacity(days.len());
    for day in days {
        let runs = read_day(&ledger, day).await?;
        found.push((day, runs));
    }
    let mut out = String::new();
    if args.json {
        let days: Vec<_> = found
            .iter()
            .map(|(day, runs)| json!({ "partition_date": day, "runs": runs }))
            .collect();
        let document = json!({
            "ledger_table": ledger_table,
            "chargebacks_table": { "name": settings.table_name, "id": current },
            "days": days,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&document)?)?;
    } else if args.since.is_some() {
        for (day, runs) in &found {
            writeln!(out, "{}", day_line(*day, runs))?;
        }
    } else {
        for (day, runs) in &found {
            print_day(
                &mut out,
                *day,
                runs,
                &settings.table_name,
                current.as_deref(),
            )?;
        }
    }
    // A reader that stops early (`| head`) is not an error.
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::from(exit_code::DONE)),
    }
}

/// A day as the events name it.
fn day(value: &str) -> Result<PartitionDate, String> {
    PartitionDate::parse(value).map_err(|_| format!("{value:?} is not a day: expected YYYY-MM-DD"))
}

fn days_since(first: PartitionDate) -> anyhow::Result<Vec<PartitionDate>> {
    let today = Utc::now().date_naive();
    let span = (today - first.date()).num_days();
    if span < 0 {
        bail!("--since {first} is after today ({today}, UTC)");
    }
    if span >= MAX_DAYS {
        bail!("--since {first} is more than {MAX_DAYS} days ago");
    }
    (0..=span)
        .map(|n| {
            let day = (first.date() + Duration::days(n))
                .format("%Y-%m-%d")
                .to_string();
            PartitionDate::parse(&day).map_err(|e| anyhow::anyhow!("{day}: {e}"))
        })
        .collect()
}

async fn read_day(ledger: &DynamoLedger, day: PartitionDate) -> anyhow::Result<Vec<Run>> {
    let mut runs = ledger.runs(day).await.map_err(|e| {
        let hint = if e.code.as_deref() == Some("ResourceNotFoundException") {
            format!(
                "{e} (the ledger table {} does not exist at this endpoint: create it with \
                 `consolidation-updater create-table` and LEDGER_TABLE_NAME set)",
                ledger.table_name()
            )
        } else {
            with_setup_hint(&e.to_string())
        };
        anyhow::anyhow!(hint)
    });
    if let Ok(runs) = &mut runs {
        runs.sort_by_key(|r| r.execution_sequence);
    }
    runs.with_context(|| format!("reading the runs of {day}"))
}

/// `--since`: one line per day, whether it is done.
fn day_line(day: PartitionDate, runs: &[Run]) -> String {
    if runs.is_empty() {
        return format!("{day}  no runs");
    }
    let list = |status: RunStatus| {
        let executions: Vec<String> = runs
            .iter()
            .filter(|r| r.status == status)
            .map(execution_label)
            .collect();
        if executions.is_empty() {
            "none".to_owned()
        } else {
            executions.join(", ")
        }
    };
    let last_done = runs
        .iter()
        .filter(|r| r.status == RunStatus::Completed)
        .max_by_key(|r| r.execution_sequence);
    let whole_day = last_done.is_some_and(|r| r.total_executions == Some(r.execution_sequence));
    format!(
        "{day}  {}  completed: {}  in progress: {}",
        if whole_day { "done " } else { "open " },
        list(RunStatus::Completed),
        list(RunStatus::InProgress)
    )
}

fn execution_label(run: &Run) -> String {
    match run.total_executions {
        Some(total) => format!("{} of {total}", run.execution_sequence),
        None => run.execution_sequence.to_string(),
    }
}

/// `--partition-date`: each run, its counts beside the producer's.
fn print_day(
    out: &mut String,
    day: PartitionDate,
    runs: &[Run],
    table: &str,
    current: Option<&str>,
) -> std::fmt::Result {
    if runs.is_empty() {
        return writeln!(out, "{day}: no runs in the ledger");
    }
    writeln!(
        out,
        "{day}: {} run{}",
        runs.len(),
        if runs.len() == 1 { "" } else { "s" }
    )?;
    writeln!(
        out,
        "  {:<9} {:<11} {:>9} {:>9} {:>9} {:>7} {:>9} {:>10} {:>10} {:>6} {:>10}  table",
        "execution",
        "status",
        "selected",
        "stamped",
        "already",
        "gone",
        "processed",
        "difference",
        "duplicates",
        "deliv.",
        "duration"
    )?;
    for run in runs {
        let completed = run.status == RunStatus::Completed;
        // In progress with a checkpoint: the counts of the records before it.
        let resumes_after = run
            .checkpoint
            .as_ref()
            .filter(|_| !completed)
            .map(|c| format!("  resumes after created_at {}", c.created_at));
        let counted = |n: u64| {
            if completed || resumes_after.is_some() {
                n.to_string()
            } else {
                "-".into()
            }
        };
        let difference = match (completed, run.records_processed) {
            (true, Some(processed)) => {
                format!(
                    "{:+}",
                    i128::from(run.counts.selected()) - i128::from(processed)
                )
            }
            _ => "-".into(),
        };
        let optional = |n: Option<u64>| n.map_or_else(|| "-".into(), |n| n.to_string());
        let duration = run.duration().map_or_else(
            || "-".into(),
            |d| format!("{:.1} s", d.num_milliseconds() as f64 / 1000.0),
        );
        let whose = if current.is_some_and(|id| id != run.table.id) {
            " (another table of that name: not this one's run)"
        } else {
            ""
        };
        let name = if run.table.name.is_empty() {
            table
        } else {
            &run.table.name
        };
        writeln!(
            out,
            "  {:<9} {:<11} {:>9} {:>9} {:>9} {:>7} {:>9} {:>10} {:>10} {:>6} {:>10}  {name}{whose}{}",
            execution_label(run),
            run.status.as_str(),
            counted(run.counts.selected()),
            counted(run.counts.stamped),
            counted(run.counts.already_applied),
            counted(run.counts.gone),
            optional(run.records_processed),
            difference,
            optional(run.duplicates_removed),
            run.deliveries,
            duration,
            resumes_after.as_deref().unwrap_or_default(),
        )?;
    }
    writeln!(
        out,
        "  selected = stamped + already + gone (in progress: up to its checkpoint); processed \
         and duplicates are the event's records_processed and duplicates_removed; difference \
         = selected - processed"
    )
}
