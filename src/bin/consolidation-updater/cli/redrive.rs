//! `redrive`: dead-lettered messages through the handler again.

use std::process::ExitCode;
use std::sync::Arc;

use super::exit_code;
use consolidation_updater::app::{self, DeadLetterReader};

use consolidation_updater::settings::Settings;

pub(super) async fn run(
    settings: &Settings,
    queue_url: &str,
    max: Option<u64>,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let (sdk, store) = app::connect(settings).await;
    let handler = Arc::new(app::redrive_handler(settings, store));
    let reader = DeadLetterReader::new(app::sqs_client(&sdk), queue_url);
    let summary = consolidation_updater::app::redrive(&reader, &handler, max, dry_run).await?;
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
