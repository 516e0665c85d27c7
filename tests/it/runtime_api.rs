//! The real binary for one invocation against the runtime-API stub
//! ([`crate::runtime_api_stub`], re-exported here): what the tests of the
//! binary, its logs, metrics and traces share.

use serde_json::Value;

pub use crate::runtime_api_stub::*;
use crate::support::*;

/// Runs the Lambda binary for one invocation of the sample event on `table`,
/// holding one chargeback (`cb-1`) created before the sample's cutoff.
/// Returns the posted response, stdout and stderr.
pub async fn one_lambda_invocation(
    table: &TestTable,
) -> anyhow::Result<(Option<Value>, String, String)> {
    one_lambda_invocation_of(std::path::Path::new(BINARY), table).await
}

/// [`one_lambda_invocation`] of another build of the binary.
pub async fn one_lambda_invocation_of(
    binary: &std::path::Path,
    table: &TestTable,
) -> anyhow::Result<(Option<Value>, String, String)> {
    one_lambda_invocation_with(binary, table, sample_event()).await
}

/// [`one_lambda_invocation_of`] with another event.
pub async fn one_lambda_invocation_with(
    binary: &std::path::Path,
    table: &TestTable,
    event: Value,
) -> anyhow::Result<(Option<Value>, String, String)> {
    table
        .seed(std::iter::once(chargeback(
            "cb-1",
            "2025-11-20",
            "2025-11-20T06:00:00.000Z",
        )))
        .await?;
    let stub = Stub::new(event);
    let api = start_stub(stub.clone()).await?;
    let child = lambda_command_of(binary, &api, &table.endpoint, &table.name).spawn()?;
    wait_for(&stub, |s| s.response.is_some()).await?;
    let (stdout, stderr) = stop(child).await?;
    let response = stub.seen.lock().await.response.clone();
    Ok((response, stdout, stderr))
}
