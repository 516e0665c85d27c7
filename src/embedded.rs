//! The embedded default: a DynamoDB-compatible engine (`dynoxide-rs`,
//! SQLite-backed) served over HTTP on loopback inside this process, so that the
//! real SDK adapter talks to it exactly as it talks to DynamoDB.

use std::path::Path;

use thiserror::Error;
use tokio::sync::oneshot;

#[derive(Debug, Error)]
pub enum EmbeddedError {
    #[error("cannot open the embedded database: {0}")]
    Database(String),
    #[error("cannot listen on loopback: {0}")]
    Listen(#[from] std::io::Error),
}

/// A running embedded engine; stops when dropped.
pub struct EmbeddedServer {
    endpoint: String,
    shutdown: Option<oneshot::Sender<()>>,
}

impl EmbeddedServer {
    /// Starts the engine, in memory or on a SQLite file, on a free loopback port.
    pub async fn start(file: Option<&Path>) -> Result<Self, EmbeddedError> {
        Self::start_on(file, 0).await
    }

    /// The same on `port` (0: any free one).
    pub async fn start_on(file: Option<&Path>, port: u16) -> Result<Self, EmbeddedError> {
        let database = match file {
            Some(path) => dynoxide::Database::new(&path.to_string_lossy()),
            None => dynoxide::Database::memory(),
        }
        .map_err(|e| EmbeddedError::Database(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let (shutdown, stopped) = oneshot::channel::<()>();
        tokio::spawn(dynoxide::server::serve_with_shutdown(
            listener,
            database,
            async {
                let _ = stopped.await;
            },
        ));
        Ok(Self {
            endpoint,
            shutdown: Some(shutdown),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}
