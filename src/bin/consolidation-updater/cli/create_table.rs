//! `create-table`: the table contract on any endpoint, idempotently.

use std::process::ExitCode;

use super::{exit_code, with_setup_hint};
use consolidation_updater::app::{self, KeyReader, load_sdk_config};
use consolidation_updater::local::{
    Ensured, IndexProjection, TableShape, ensure_ledger_table, ensure_table,
};
use consolidation_updater::settings::Settings;

pub(super) async fn run(
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
        KeyReader::Scan { .. } => format!("no index {index}: the function will scan"),
    };
    println!(
        "Table {table}: {what}; key {}{range}; {reader}",
        layout.hash_key
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
    Ok(ExitCode::from(exit_code::DONE))
}
