//! A stub of Lambda's runtime API on loopback, and the real binary started
//! against it as Lambda starts a custom runtime: what the tests of the
//! binary, its logs, metrics and traces share.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, Notify};

use crate::support::*;

pub const BINARY: &str = env!("CARGO_BIN_EXE_consolidation-updater");
pub const REQUEST_ID: &str = "8476a536-e9f4-11e8-9739-2dfe598c3fcd";

/// What the stub saw, in order.
#[derive(Default)]
pub struct Seen {
    pub first_poll: Option<Instant>,
    pub polls: usize,
    pub response: Option<Value>,
    pub invocation_error: Option<Value>,
    pub init_error: Option<(Option<String>, Value)>,
}

#[derive(Clone)]
pub struct Stub {
    pub event: Value,
    /// The `Lambda-Runtime-Trace-Id` header of the invocation.
    pub trace_header: String,
    pub seen: Arc<Mutex<Seen>>,
    pub changed: Arc<Notify>,
}

/// The id of the segment Lambda opens for the function, as the stub names it.
pub const FACADE_SEGMENT: &str = "53995c3f42cd8ad8";

impl Stub {
    /// A stub that hands out `event` once, in a sampled trace of today (X-Ray
    /// refuses trace ids older than 30 days).
    pub fn new(event: Value) -> Self {
        Self {
            event,
            trace_header: format!(
                "Root={};Parent={FACADE_SEGMENT};Sampled=1",
                fresh_trace_id()
            ),
            seen: Arc::default(),
            changed: Arc::default(),
        }
    }
}

/// An X-Ray trace id: `1-`, the epoch seconds in hex, `-`, 96 random bits.
pub fn fresh_trace_id() -> String {
    format!(
        "1-{:08x}-{:024x}",
        chrono::Utc::now().timestamp(),
        fastrand::u128(..) >> 32
    )
}

async fn next(State(stub): State<Stub>) -> impl IntoResponse {
    let first = {
        let mut seen = stub.seen.lock().await;
        seen.first_poll.get_or_insert_with(Instant::now);
        seen.polls += 1;
        seen.polls == 1
    };
    stub.changed.notify_waiters();
    if !first {
        // One invocation per test: later polls wait until the process is killed.
        std::future::pending::<()>().await;
    }
    let deadline = chrono::Utc::now().timestamp_millis() + 60_000;
    (
        [
            ("Lambda-Runtime-Aws-Request-Id", REQUEST_ID.to_owned()),
            ("Lambda-Runtime-Deadline-Ms", deadline.to_string()),
            (
                "Lambda-Runtime-Invoked-Function-Arn",
                "arn:aws:lambda:sa-east-1:123456789012:function:consolidation-updater".to_owned(),
            ),
            ("Lambda-Runtime-Trace-Id", stub.trace_header.clone()),
        ],
        stub.event.to_string(),
    )
}

async fn response(State(stub): State<Stub>, Path(_id): Path<String>, body: String) -> StatusCode {
    stub.seen.lock().await.response = serde_json::from_str(&body).ok();
    stub.changed.notify_waiters();
    StatusCode::ACCEPTED
}

async fn invocation_error(
    State(stub): State<Stub>,
    Path(_id): Path<String>,
    body: String,
) -> StatusCode {
    stub.seen.lock().await.invocation_error = serde_json::from_str(&body).ok();
    stub.changed.notify_waiters();
    StatusCode::ACCEPTED
}

async fn init_error(State(stub): State<Stub>, headers: HeaderMap, body: String) -> StatusCode {
    let error_type = headers
        .get("Lambda-Runtime-Function-Error-Type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    stub.seen.lock().await.init_error =
        Some((error_type, serde_json::from_str(&body).unwrap_or_default()));
    stub.changed.notify_waiters();
    StatusCode::ACCEPTED
}

/// Starts the stub on loopback; returns its `host:port`.
pub async fn start_stub(stub: Stub) -> anyhow::Result<String> {
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/error",
            post(invocation_error),
        )
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(stub);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let address = listener.local_addr()?.to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(address)
}

/// Lambda's environment for a custom runtime, with static credentials as Lambda
/// provides them (so the SDK probes nothing).
pub fn lambda_command(runtime_api: &str, dynamodb: &str, table: &str) -> Command {
    lambda_command_of(std::path::Path::new(BINARY), runtime_api, dynamodb, table)
}

/// [`lambda_command`] for another build of the binary (the packaged bootstrap).
pub fn lambda_command_of(
    binary: &std::path::Path,
    runtime_api: &str,
    dynamodb: &str,
    table: &str,
) -> Command {
    let mut command = Command::new(binary);
    command
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "consolidation-updater")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("AWS_SESSION_TOKEN", "local")
        .env("AWS_ENDPOINT_URL_DYNAMODB", dynamodb)
        .env("DYNAMODB_TABLE_NAME", table)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

pub async fn wait_for(stub: &Stub, what: impl Fn(&Seen) -> bool) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let changed = stub.changed.notified();
            if what(&*stub.seen.lock().await) {
                return;
            }
            changed.await;
        }
    })
    .await
    .map_err(|_| anyhow!("the runtime did not get there within 30 s"))
}

pub async fn stop(mut child: Child) -> anyhow::Result<(String, String)> {
    let _ = child.start_kill();
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout).await?;
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut stderr).await?;
    }
    let _ = child.wait().await;
    Ok((stdout, stderr))
}

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
