//! A stub of Lambda's runtime API on loopback, and the real binary started
//! against it as Lambda starts a custom runtime. Shared by the integration
//! tests (one invocation, or several in one execution environment) and the
//! benchmark (cold start: no invocation at all, only the first poll); it uses
//! nothing of the test crate, so `benches/fanout.rs` includes it by path.

use std::convert::Infallible;
use std::path::Path as FilePath;
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

pub const BINARY: &str = env!("CARGO_BIN_EXE_consolidation-updater");
/// The request id of [`Stub::new`]'s one invocation.
pub const REQUEST_ID: &str = "8476a536-e9f4-11e8-9739-2dfe598c3fcd";
/// The id of the segment Lambda opens for the function, as the stub names it.
pub const FACADE_SEGMENT: &str = "53995c3f42cd8ad8";
/// The function's region: in its ARN, and its `AWS_REGION`.
const REGION: &str = "sa-east-1";

/// An X-Ray trace id: `1-`, the epoch seconds in hex, `-`, 96 random bits.
pub fn fresh_trace_id() -> String {
    format!(
        "1-{:08x}-{:024x}",
        chrono::Utc::now().timestamp(),
        fastrand::u128(..) >> 32
    )
}

/// One invocation the stub hands out.
#[derive(Clone)]
pub struct Invocation {
    pub request_id: String,
    pub event: Value,
    /// Its `Lambda-Runtime-Trace-Id` header.
    pub trace_header: String,
}

impl Invocation {
    /// An invocation in a sampled trace of its own, of today (X-Ray refuses
    /// trace ids older than 30 days).
    pub fn new(request_id: impl Into<String>, event: Value) -> Self {
        Self {
            request_id: request_id.into(),
            event,
            trace_header: format!(
                "Root={};Parent={FACADE_SEGMENT};Sampled=1",
                fresh_trace_id()
            ),
        }
    }
}

/// What the stub saw, in order.
#[derive(Default)]
pub struct Seen {
    pub first_poll: Option<Instant>,
    pub polls: usize,
    /// Every response posted: (request id, body, `null` when not JSON).
    pub responses: Vec<(String, Value)>,
    /// The body of the last response posted, when it was JSON.
    pub response: Option<Value>,
    pub invocation_error: Option<Value>,
    /// The `Lambda-Runtime-Function-Error-Type` header and the body.
    pub init_error: Option<(Option<String>, Value)>,
}

#[derive(Clone)]
pub struct Stub {
    /// Handed out one per poll, in order; a poll after the last waits until
    /// the process is stopped.
    pub invocations: Vec<Invocation>,
    pub seen: Arc<Mutex<Seen>>,
    pub changed: Arc<Notify>,
}

impl Stub {
    /// A stub that hands out `event` once, as [`REQUEST_ID`].
    pub fn new(event: Value) -> Self {
        Self::serving(vec![Invocation::new(REQUEST_ID, event)])
    }

    /// A stub that hands out `invocations` one after the other (none: it only
    /// sees the polls).
    pub fn serving(invocations: Vec<Invocation>) -> Self {
        Self {
            invocations,
            seen: Arc::default(),
            changed: Arc::default(),
        }
    }
}

async fn next(State(stub): State<Stub>) -> impl IntoResponse {
    let polls = {
        let mut seen = stub.seen.lock().await;
        seen.first_poll.get_or_insert_with(Instant::now);
        seen.polls += 1;
        seen.polls
    };
    stub.changed.notify_waiters();
    let Some(invocation) = stub.invocations.get(polls - 1) else {
        // Nothing more to deliver: the poll waits until the process is stopped.
        let never: Infallible = std::future::pending().await;
        match never {}
    };
    let deadline = chrono::Utc::now().timestamp_millis() + 60_000;
    (
        [
            (
                "Lambda-Runtime-Aws-Request-Id",
                invocation.request_id.clone(),
            ),
            ("Lambda-Runtime-Deadline-Ms", deadline.to_string()),
            (
                "Lambda-Runtime-Invoked-Function-Arn",
                format!("arn:aws:lambda:{REGION}:123456789012:function:consolidation-updater"),
            ),
            ("Lambda-Runtime-Trace-Id", invocation.trace_header.clone()),
        ],
        invocation.event.to_string(),
    )
}

async fn response(State(stub): State<Stub>, Path(id): Path<String>, body: String) -> StatusCode {
    let parsed = serde_json::from_str(&body).ok();
    {
        let mut seen = stub.seen.lock().await;
        seen.responses
            .push((id, parsed.clone().unwrap_or(Value::Null)));
        seen.response = parsed;
    }
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
    lambda_command_of(FilePath::new(BINARY), runtime_api, dynamodb, table)
}

/// [`lambda_command`] for another build of the binary (the packaged bootstrap).
pub fn lambda_command_of(
    binary: &FilePath,
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

/// Waits up to 30 s until what the stub saw satisfies `what`.
pub async fn wait_for(stub: &Stub, what: impl Fn(&Seen) -> bool) -> anyhow::Result<()> {
    wait_for_within(stub, Duration::from_secs(30), what).await
}

/// [`wait_for`], up to `limit`.
pub async fn wait_for_within(
    stub: &Stub,
    limit: Duration,
    what: impl Fn(&Seen) -> bool,
) -> anyhow::Result<()> {
    tokio::time::timeout(limit, async {
        loop {
            let changed = stub.changed.notified();
            if what(&*stub.seen.lock().await) {
                return;
            }
            changed.await;
        }
    })
    .await
    .map_err(|_| anyhow!("the runtime did not get there within {limit:?}"))
}

/// Kills the process; returns its stdout and stderr.
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
