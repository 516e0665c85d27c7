//! `invoke`: one Lambda event file through the same handler as in Lambda.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::info;

use super::{batch_exit_code, local_request_id, peak_rss_kib, read_event, with_setup_hint};
use consolidation_updater::app::{self, Invocation};
use consolidation_updater::settings::Settings;

pub(super) async fn run(
    settings: &Settings,
    event: PathBuf,
    timeout: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let payload = read_event(&event)?;
    if let Some(timeout) = timeout.filter(|t| *t <= settings.deadline_margin) {
        eprintln!(
            "consolidation-updater: --timeout {} s is not longer than DEADLINE_SAFETY_MARGIN_MS \
             ({} ms): no new work will start and every message will be handed back, as in \
             Lambda; set DEADLINE_SAFETY_MARGIN_MS lower (at least 1000) to see part of the day \
             stamped",
            timeout.as_secs_f64(),
            settings.deadline_margin.as_millis()
        );
    }
    let (sdk, store) = app::connect(settings).await;
    let handler = Arc::new(app::handler(settings, &sdk, store, Arc::default()).await);
    let store = Arc::clone(handler.fan_out().store());
    let mut invocation = Invocation::unbounded(local_request_id());
    // Counted from here, as Lambda counts from the invocation's start.
    invocation.deadline = timeout.map(|t| Instant::now() + t);
    let outcome = handler.handle(payload, &invocation).await?;
    let units = store.reported_write_units();
    info!(
        peak_rss_kib = peak_rss_kib(),
        dynamodb_requests = store.requests_sent(),
        table_write_units = units.table,
        index_write_units = units.indexes,
        ledger_requests = handler.ledger().requests_sent(),
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
fn first_problem(outcome: &consolidation_updater::model::BatchOutcome) -> Option<String> {
    outcome
        .outcomes
        .iter()
        .filter(|(_, o)| o.hands_back())
        .find_map(|(_, o)| o.problem())
        .map(|(_, text)| with_setup_hint(&text))
}
