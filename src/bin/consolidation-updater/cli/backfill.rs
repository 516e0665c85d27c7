//! `backfill`: one day stamped as if its consolidation event had arrived.

use std::process::ExitCode;
use std::sync::Arc;

use super::{count, positive_count};
use consolidation_updater::app::{self, Ledger, RunDecision, Verdict};
use consolidation_updater::model::{Completion, ConsolidationEvent, EventParts, StampPlan};
use consolidation_updater::settings::Settings;

#[derive(Debug, clap::Args)]
pub(super) struct BackfillArgs {
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
    /// sequence but a new path), even if the run ledger has the run
    /// completed; a newer execution is still never regressed.
    #[arg(long)]
    force: bool,
}

pub(super) async fn run(settings: &Settings, args: BackfillArgs) -> anyhow::Result<ExitCode> {
    let completed_at = args.completed_at.clone().unwrap_or_else(|| {
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
    });
    let execution_time = args
        .execution_time
        .clone()
        .unwrap_or_else(|| format!("{}T23:59:59", args.partition_date));
    // The same validation as an event from the Glue job.
    let event = ConsolidationEvent::from_parts(EventParts {
        partition_date: &args.partition_date,
        execution_sequence: i128::from(args.execution),
        total_executions: i128::from(args.total),
        records_processed: args.records_processed,
        duplicates_removed: 0,
        output_files: 0,
        output_format: &args.format,
        output_path: &args.output_path,
        execution_time: &execution_time,
        completed_at: &completed_at,
        job_name: &args.job_name,
    })
    .map_err(|problem| anyhow::anyhow!("invalid backfill: {problem}"))?;
    let mut plan = StampPlan::for_event(&event, chrono::Utc::now());
    if args.force {
        plan = plan.replacing_same_execution();
    }
    let (_, store) = app::connect(settings).await;
    // A dry run writes nothing, the ledger included.
    let ledger = if args.dry_run {
        Ledger::off()
    } else {
        app::ledger(settings, &store)
    };
    let request_id = format!("backfill-{}", std::process::id());
    let (verdict, completion) = if args.force {
        (Verdict::Ignore, Completion::Force)
    } else {
        (Verdict::Respect, Completion::Forward)
    };
    let run = ledger
        .before_fan_out(store.as_ref(), &event, verdict, &request_id)
        .await;
    if let RunDecision::Superseded(by) = &run {
        println!(
            "{} is already done: the run ledger has execution {} completed with a cutoff at or after {}; nothing stamped (--force stamps anyway)",
            event.partition_date, by.execution_sequence, plan.selection.created_before
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut fan_out = app::fan_out(settings, Arc::clone(&store), Arc::default());
    if args.dry_run {
        fan_out = fan_out.dry_run();
    }
    let control = Arc::new(consolidation_updater::app::InvocationControl::default());
    let checkpoints = ledger.checkpoints(&run, &request_id);
    let stamped = fan_out
        .stamp_tracked(&plan, &control, checkpoints.as_ref().map(|c| c as _))
        .await;
    let report = match stamped {
        Ok(report) => {
            ledger
                .completed(&run, &report, completion, &request_id)
                .await;
            report
        }
        Err(consolidation_updater::app::FanOutError::Store { error, .. }) => {
            anyhow::bail!("backfill failed: {error}")
        }
        Err(consolidation_updater::app::FanOutError::Stopped { reason, .. }) => {
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
    if report.resumed {
        println!(
            "(resumed after the run's checkpoint in the ledger: the records before it were done by an earlier delivery and are not counted above)"
        );
    }
    Ok(ExitCode::SUCCESS)
}
