//! `serve`: the embedded engine on a port, for other tools.

use std::path::PathBuf;
use std::process::ExitCode;

/// Serves the embedded engine until Ctrl-C or SIGTERM; the first stdout line
/// is `DYNAMODB_ENDPOINT=http://127.0.0.1:PORT`.
pub(super) async fn run(db: Option<PathBuf>, port: u16) -> anyhow::Result<ExitCode> {
    let server =
        consolidation_updater::local::EmbeddedServer::start_on(db.as_deref(), port).await?;
    println!("DYNAMODB_ENDPOINT={}", server.endpoint());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    drop(server);
    Ok(ExitCode::SUCCESS)
}
