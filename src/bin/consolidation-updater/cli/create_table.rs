//! `create-table`: the table contract on any endpoint, idempotently.

use std::process::ExitCode;
use std::time::Duration;

use super::{exit_code, with_setup_hint};
use consolidation_updater::app::{self, KeyReader, load_sdk_config};
use consolidation_updater::local::{
    Ensured, IndexProjection, TableShape, ensure_ledger_table, ensure_table,
};
use consolidation_updater::settings::Settings;

pub(super) async fn run(
    settings: &Settings,
    projection: IndexProjection,
    index_wait: Duration,
) -> anyhow::Result<ExitCode> {
    let sdk = load_sdk_config(settings.region.as_deref()).await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let table = settings.table_name.as_str();
    let index = settings.date_index.as_str();
    let shape = TableShape {
        index: Some(projection),
        ..TableShape::default()
    };
    let ensured = ensure_table(&client, table, index, shape, index_wait)
        .await
        .map_err(|e| anyhow::anyhow!(with_setup_hint(&e.to_string())))?;
    // The same store, and the same check, as the function's at cold start.
    let store = app::store(settings, &sdk, client.clone());
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
        KeyReader::Scan {
            index_not_ready: Some(ref status),
            ..
        } => format!(
            "index {index} being built ({status}): the function scans the table until a cold \
             start finds the index active"
        ),
        KeyReader::Scan {
            index_not_ready: None,
            ..
        } => format!("no index {index}: the function will scan"),
    };
    println!(
        "Table {table}: {what}; key {}{range}; {reader}",
        layout.hash_key
    );
    let index_pending = matches!(
        layout.reader,
        KeyReader::Scan {
            index_not_ready: Some(_),
            ..
        }
    );
    if let Some(ledger) = settings.ledger_table.as_deref() {
        let ensured = ensure_ledger_table(&client, ledger)
            .await
            .map_err(|e| anyhow::anyhow!(with_setup_hint(&e.to_string())))?;
        println!(
            "Run ledger {ledger}: {}; key partition_date + execution_sequence; TTL on expires_at",
            match ensured {
                Ensured::Created => "created",
                _ => "already there",
            }
        );
    }
    if index_pending && !index_wait.is_zero() {
        eprintln!(
            "consolidation-updater: the date index {index} of table {table} is not active after \
             waiting {} s; DynamoDB finishes building it on its own: run create-table again to \
             wait for it (--wait sets how long)",
            index_wait.as_secs()
        );
        return Ok(ExitCode::from(exit_code::FAILED));
    }
    Ok(ExitCode::from(exit_code::DONE))
}
