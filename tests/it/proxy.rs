//! A small fault-injecting HTTP proxy in front of a real DynamoDB-compatible
//! server, so tests (and the benchmark) observe the client from the outside.
//!
//! It plays the two ways DynamoDB refuses writes. An `UpdateItem` is refused
//! whole: a 400 `ProvisionedThroughputExceededException` naming the table
//! in its `ThrottlingReasons`. A `BatchExecuteStatement` is refused per
//! statement: the admitted statements go upstream as a request of their own,
//! and the answer is a 200 whose refused entries carry a
//! `ProvisionedThroughputExceeded` error, in the original order. Writes are
//! refused either by the fault knobs (`throttle_one_in` while `throttling`)
//! or, with `write_capacity` set, by a token bucket like a table's
//! provisioned write capacity. Reads are never limited.
//!
//! The upstream servers (the embedded engine, DynamoDB Local) check that a
//! request is signed but never verify the signature, so a re-bodied request
//! still passes.
//!
//! The bucket and the splitting of a batch are plain types and functions
//! ([`WriteBucket`], [`WriteLedger`], [`BatchRequest`],
//! [`merge_batch_answer`]), tested without HTTP.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// `GET` here answers the proxy's [`CapacityStats`] as JSON (DynamoDB's own
/// requests are all `POST /`).
pub const STATS_PATH: &str = "/__capacity_stats";

/// The smallest bucket: one whole `BatchExecuteStatement`, so that a low
/// rate still admits a full batch after a second's pause.
pub const MIN_BUCKET: u64 = 25;

const THROTTLED_MESSAGE: &str = "The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API.";
const STATEMENT_THROTTLED_MESSAGE: &str =
    "The level of configured provisioned throughput for the table was exceeded.";
const VALIDATION_BODY: &str = r#"{"__type":"com.amazon.coral.validate#ValidationException","message":"Item size to update has exceeded the maximum allowed size"}"#;
const SERVER_ERROR_BODY: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"Internal server error"}"#;
const ACCESS_DENIED_BODY: &str = r#"{"__type":"com.amazon.coral.service#AccessDeniedException","message":"User: arn:aws:sts::123456789012:assumed-role/updater/fn is not authorized to perform this action on this resource because no identity-based policy allows it"}"#;
const AMZ_JSON: &str = "application/x-amz-json-1.0";

/// A table's write capacity as a token bucket: `rate` writes a second,
/// holding one second of them (at least [`MIN_BUCKET`]), full at the start.
#[derive(Debug, Clone)]
pub struct WriteBucket {
    rate: u64,
    capacity: u64,
    tokens: f64,
    refilled_at: Instant,
}

/// Tokens a bucket of `rate` writes/s holds when full (0: no bucket).
pub fn bucket_capacity(rate: u64) -> u64 {
    if rate == 0 { 0 } else { rate.max(MIN_BUCKET) }
}

impl WriteBucket {
    pub fn new(rate: u64, now: Instant) -> Self {
        let capacity = bucket_capacity(rate);
        Self {
            rate,
            capacity,
            tokens: capacity as f64,
            refilled_at: now,
        }
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        self.tokens =
            (self.tokens + elapsed.as_secs_f64() * self.rate as f64).min(self.capacity as f64);
        self.refilled_at = self.refilled_at.max(now);
    }

    /// Of `wanted` writes asked together, how many (the first ones) whole
    /// tokens cover at `now`; those tokens are spent.
    pub fn admit(&mut self, wanted: u64, now: Instant) -> u64 {
        self.refill(now);
        let admitted = (self.tokens.floor() as u64).min(wanted);
        self.tokens -= admitted as f64;
        admitted
    }

    /// Leaves exactly `tokens` (at most a full bucket) at `now`.
    pub fn hold(&mut self, tokens: u64, now: Instant) {
        self.refill(now);
        self.tokens = tokens.min(self.capacity) as f64;
    }
}

/// Every write the proxy let through or refused, and the bucket in force.
#[derive(Debug, Default)]
pub struct WriteLedger {
    bucket: Option<WriteBucket>,
    admitted: u64,
    throttled: u64,
    throttled_requests: u64,
    first_admitted: Option<Instant>,
    last_admitted: Option<Instant>,
}

impl WriteLedger {
    /// The bucket for `rate` (0: none); a new, full one when the rate changed.
    fn bucket(&mut self, rate: u64, now: Instant) -> Option<&mut WriteBucket> {
        if rate == 0 {
            self.bucket = None;
            return None;
        }
        if self.bucket.as_ref().is_none_or(|b| b.rate() != rate) {
            self.bucket = Some(WriteBucket::new(rate, now));
        }
        self.bucket.as_mut()
    }

    /// A request of `wanted` writes at `now` under `rate` writes/s (0:
    /// unlimited): how many of its first writes are admitted.
    pub fn admit(&mut self, rate: u64, wanted: u64, now: Instant) -> u64 {
        let admitted = match self.bucket(rate, now) {
            Some(bucket) => bucket.admit(wanted, now),
            None => wanted,
        };
        self.count(wanted, admitted, now);
        admitted
    }

    /// A request of `wanted` writes refused whole (the fault knobs).
    pub fn refuse(&mut self, wanted: u64, now: Instant) {
        self.count(wanted, 0, now);
    }

    fn count(&mut self, wanted: u64, admitted: u64, now: Instant) {
        if admitted > 0 {
            self.admitted += admitted;
            self.first_admitted.get_or_insert(now);
            self.last_admitted = Some(now);
        }
        let throttled = wanted.saturating_sub(admitted);
        if throttled > 0 {
            self.throttled += throttled;
            self.throttled_requests += 1;
        }
    }

    /// Leaves exactly `tokens` in the bucket of `rate` now: a known start.
    pub fn hold_tokens(&mut self, rate: u64, tokens: u64, now: Instant) {
        if let Some(bucket) = self.bucket(rate, now) {
            bucket.hold(tokens, now);
        }
    }

    pub fn stats(&self, rate: u64) -> CapacityStats {
        let span = match (self.first_admitted, self.last_admitted) {
            (Some(first), Some(last)) => last.saturating_duration_since(first),
            _ => Duration::ZERO,
        };
        CapacityStats {
            write_capacity: rate,
            bucket_capacity: bucket_capacity(rate),
            admitted_writes: self.admitted,
            throttled_writes: self.throttled,
            throttled_requests: self.throttled_requests,
            admitted_span_seconds: span.as_secs_f64(),
        }
    }
}

/// What the proxy admitted and refused so far, as [`STATS_PATH`] serves it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CapacityStats {
    /// Writes/s in force (0: unlimited, only counted).
    pub write_capacity: u64,
    /// Tokens of the full bucket: the burst a caller gets for free.
    pub bucket_capacity: u64,
    /// Statements and `UpdateItem`s forwarded upstream.
    pub admitted_writes: u64,
    /// Statements and `UpdateItem`s refused as throttled.
    pub throttled_writes: u64,
    /// Requests with at least one write refused.
    pub throttled_requests: u64,
    /// From the first admitted write to the last.
    pub admitted_span_seconds: f64,
}

impl CapacityStats {
    /// The write rate reached once the initial burst is spent:
    /// (admitted − bucket) / (last admitted − first admitted). `None` when
    /// the burst covered every write, so no rate was ever imposed.
    pub fn reached_rate(&self) -> Option<f64> {
        let beyond_burst = self.admitted_writes.saturating_sub(self.bucket_capacity);
        (beyond_burst > 0 && self.admitted_span_seconds > 0.0)
            .then(|| beyond_burst as f64 / self.admitted_span_seconds)
    }

    /// Admitted writes over the span from the first to the last, burst
    /// included: the rate a client paced itself to, without a bucket.
    pub fn admitted_rate(&self) -> Option<f64> {
        (self.admitted_writes > 0 && self.admitted_span_seconds > 0.0)
            .then(|| self.admitted_writes as f64 / self.admitted_span_seconds)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a JSON object")]
    NotAnObject,
    #[error("no Statements array")]
    NoStatements,
    #[error("no Responses array")]
    NoResponses,
    #[error("{got} responses to {expected} statements")]
    ResponseCount { expected: usize, got: usize },
}

/// A `BatchExecuteStatement` request: its statements, and every other
/// field as sent (`ReturnConsumedCapacity`, …).
#[derive(Debug, Clone)]
pub struct BatchRequest {
    fields: Map<String, Value>,
    statements: Vec<Value>,
}

impl BatchRequest {
    pub fn parse(body: &[u8]) -> Result<Self, BatchError> {
        let Value::Object(mut fields) = serde_json::from_slice(body)? else {
            return Err(BatchError::NotAnObject);
        };
        let Some(Value::Array(statements)) = fields.remove("Statements") else {
            return Err(BatchError::NoStatements);
        };
        Ok(Self { fields, statements })
    }

    pub fn len(&self) -> usize {
        self.statements.len()
    }

    /// The same request carrying only its first `admitted` statements.
    pub fn body_with_first(&self, admitted: usize) -> Bytes {
        let mut fields = self.fields.clone();
        let kept = &self.statements[..admitted.min(self.statements.len())];
        fields.insert("Statements".to_owned(), Value::Array(kept.to_vec()));
        Bytes::from(Value::Object(fields).to_string())
    }
}

/// A statement's entry when the table refused it: DynamoDB's per-statement
/// throttling error (no throttling reasons at this level).
pub fn statement_throttled() -> Value {
    json!({"Error": {"Code": "ProvisionedThroughputExceeded", "Message": STATEMENT_THROTTLED_MESSAGE}})
}

/// The answer to a batch of `total` statements of which the first
/// `admitted` went upstream and got `upstream` (`None`: nothing went): the
/// upstream's entries, then one throttling error per refused statement.
/// The upstream's other fields (`ConsumedCapacity`) are kept.
pub fn merge_batch_answer(
    upstream: Option<&[u8]>,
    admitted: usize,
    total: usize,
) -> Result<Bytes, BatchError> {
    let (mut answer, mut responses) = match upstream {
        None => (Map::new(), Vec::new()),
        Some(body) => {
            let Value::Object(mut answer) = serde_json::from_slice(body)? else {
                return Err(BatchError::NotAnObject);
            };
            let Some(Value::Array(responses)) = answer.remove("Responses") else {
                return Err(BatchError::NoResponses);
            };
            (answer, responses)
        }
    };
    if responses.len() != admitted {
        return Err(BatchError::ResponseCount {
            expected: admitted,
            got: responses.len(),
        });
    }
    responses.extend(std::iter::repeat_n(
        statement_throttled(),
        total.saturating_sub(admitted),
    ));
    answer.insert("Responses".to_owned(), Value::Array(responses));
    Ok(Bytes::from(Value::Object(answer).to_string()))
}

/// The 400 body of a refused `UpdateItem` on `table`, with the
/// `ThrottlingReasons` the newer API adds.
pub fn update_throttled_body(table: &str) -> String {
    json!({
        "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
        "message": THROTTLED_MESSAGE,
        "ThrottlingReasons": [{
            "reason": "TableWriteProvisionedThroughputExceeded",
            "resource": format!("arn:aws:dynamodb:us-east-1:000000000000:table/{table}")
        }]
    })
    .to_string()
}

pub struct FaultProxy {
    upstream: String,
    client: Client<HttpConnector, Full<Bytes>>,
    /// Throttle one in `throttle_one_in` update requests while on (0: none).
    pub throttle_one_in: AtomicU64,
    /// Answer this share (per mille) of update requests with a 500.
    pub server_errors_per_mille: AtomicU64,
    /// Answer every request with a 500 (DynamoDB down).
    pub down: AtomicBool,
    /// Hold each update this long before forwarding it (a slow table).
    pub update_delay_ms: AtomicU64,
    /// Reject, as DynamoDB does an invalid request, every update whose body contains this.
    pub reject_updates_containing: Mutex<Option<String>>,
    /// Refuse with AccessDenied every request whose body contains this (a
    /// role with no permission on one table).
    pub deny_requests_containing: Mutex<Option<String>>,
    /// Requests refused so.
    pub denied: AtomicU64,
    pub throttling: AtomicBool,
    /// The table's write capacity, writes/s (0: unlimited).
    pub write_capacity: AtomicU64,
    updates_seen: AtomicU64,
    /// Update requests with at least one write refused.
    pub throttled: AtomicU64,
    ledger: Mutex<WriteLedger>,
    /// Bodies just throttled: their next attempt passes, so no record can be
    /// throttled on every attempt (the test is about backing off, not about
    /// exhausting retries).
    throttled_bodies: Mutex<HashSet<Bytes>>,
}

impl FaultProxy {
    /// Starts the proxy on loopback in front of `upstream`; returns it and its endpoint.
    pub async fn start(upstream: &str) -> anyhow::Result<(Arc<Self>, String)> {
        let proxy = Arc::new(Self {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            throttle_one_in: AtomicU64::new(0),
            server_errors_per_mille: AtomicU64::new(0),
            down: AtomicBool::new(false),
            update_delay_ms: AtomicU64::new(0),
            reject_updates_containing: Mutex::default(),
            deny_requests_containing: Mutex::default(),
            denied: AtomicU64::new(0),
            throttling: AtomicBool::new(false),
            write_capacity: AtomicU64::new(0),
            updates_seen: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            ledger: Mutex::default(),
            throttled_bodies: Mutex::default(),
        });
        let app = Router::new()
            .route(STATS_PATH, get(serve_stats))
            .fallback(forward)
            .with_state(Arc::clone(&proxy));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok((proxy, endpoint))
    }

    pub fn capacity_stats(&self) -> CapacityStats {
        let rate = self.write_capacity.load(Ordering::SeqCst);
        self.ledger
            .lock()
            .map(|ledger| ledger.stats(rate))
            .unwrap_or_else(|_| WriteLedger::default().stats(rate))
    }

    /// Writes/s reached with the initial burst discounted; see
    /// [`CapacityStats::reached_rate`].
    pub fn reached_write_rate(&self) -> Option<f64> {
        self.capacity_stats().reached_rate()
    }

    pub fn admitted_writes(&self) -> u64 {
        self.capacity_stats().admitted_writes
    }

    /// Statements and `UpdateItem`s refused as throttled.
    pub fn throttled_writes(&self) -> u64 {
        self.capacity_stats().throttled_writes
    }

    /// Leaves exactly `tokens` in the write-capacity bucket now.
    pub fn hold_write_tokens(&self, tokens: u64) {
        let rate = self.write_capacity.load(Ordering::SeqCst);
        if let Ok(mut ledger) = self.ledger.lock() {
            ledger.hold_tokens(rate, tokens, Instant::now());
        }
    }

    fn admit(&self, wanted: u64) -> u64 {
        let rate = self.write_capacity.load(Ordering::SeqCst);
        self.ledger
            .lock()
            .map(|mut ledger| ledger.admit(rate, wanted, Instant::now()))
            .unwrap_or(wanted)
    }

    fn refuse(&self, wanted: u64) {
        if let Ok(mut ledger) = self.ledger.lock() {
            ledger.refuse(wanted, Instant::now());
        }
    }

    /// The fault knobs' throttling: one update request in `throttle_one_in`
    /// while on, except a body refused just before.
    fn fault_throttles(&self, seen: u64, body: &Bytes) -> bool {
        let one_in = self.throttle_one_in.load(Ordering::SeqCst);
        if !(self.throttling.load(Ordering::SeqCst) && one_in > 0 && seen.is_multiple_of(one_in)) {
            return false;
        }
        let Ok(mut just_throttled) = self.throttled_bodies.lock() else {
            return false;
        };
        if just_throttled.insert(body.clone()) {
            return true;
        }
        just_throttled.remove(body);
        false
    }
}

async fn serve_stats(State(proxy): State<Arc<FaultProxy>>) -> Json<CapacityStats> {
    Json(proxy.capacity_stats())
}

/// Which request it is, by its `x-amz-target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    UpdateItem,
    BatchExecuteStatement,
    /// Reads and everything else: never limited.
    Other,
}

impl Operation {
    fn of(headers: &HeaderMap) -> Self {
        match headers.get("x-amz-target").map(HeaderValue::as_bytes) {
            Some(t) if t.ends_with(b".UpdateItem") => Self::UpdateItem,
            Some(t) if t.ends_with(b".BatchExecuteStatement") => Self::BatchExecuteStatement,
            _ => Self::Other,
        }
    }
}

async fn forward(State(proxy): State<Arc<FaultProxy>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return status(StatusCode::BAD_REQUEST, "unreadable body");
    };
    let operation = Operation::of(&parts.headers);
    let is_update = operation != Operation::Other;
    if proxy.down.load(Ordering::SeqCst) {
        return amz_json(StatusCode::INTERNAL_SERVER_ERROR, SERVER_ERROR_BODY.into());
    }
    let denied = proxy
        .deny_requests_containing
        .lock()
        .ok()
        .and_then(|d| d.clone())
        .is_some_and(|needle| String::from_utf8_lossy(&body).contains(&needle));
    if denied {
        proxy.denied.fetch_add(1, Ordering::SeqCst);
        return amz_json(StatusCode::BAD_REQUEST, ACCESS_DENIED_BODY.into());
    }
    let rejected = proxy
        .reject_updates_containing
        .lock()
        .ok()
        .and_then(|r| r.clone())
        .is_some_and(|needle| String::from_utf8_lossy(&body).contains(&needle));
    if is_update && rejected {
        return amz_json(StatusCode::BAD_REQUEST, VALIDATION_BODY.into());
    }
    if is_update && fastrand::u64(0..1000) < proxy.server_errors_per_mille.load(Ordering::SeqCst) {
        return amz_json(StatusCode::INTERNAL_SERVER_ERROR, SERVER_ERROR_BODY.into());
    }
    // A batch that does not parse goes upstream as it is, to be refused there.
    let batch = match operation {
        Operation::BatchExecuteStatement => BatchRequest::parse(&body).ok(),
        _ => None,
    };
    let wanted = match operation {
        Operation::UpdateItem => 1,
        Operation::BatchExecuteStatement => batch.as_ref().map_or(0, |b| b.len() as u64),
        Operation::Other => 0,
    };
    let mut admitted = wanted;
    if is_update {
        let seen = proxy.updates_seen.fetch_add(1, Ordering::SeqCst) + 1;
        if proxy.fault_throttles(seen, &body) {
            proxy.refuse(wanted);
            admitted = 0;
        } else {
            admitted = proxy.admit(wanted);
        }
        if admitted < wanted {
            proxy.throttled.fetch_add(1, Ordering::SeqCst);
        }
        if admitted == 0 && wanted > 0 {
            return throttled_answer(operation, &body, batch.as_ref());
        }
    }
    let delay = proxy.update_delay_ms.load(Ordering::SeqCst);
    if is_update && delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    // Only a batch can be admitted in part: its admitted statements go alone.
    let split = batch.filter(|_| admitted < wanted);
    let body = match &split {
        Some(batch) => batch.body_with_first(admitted as usize),
        None => body,
    };
    let (parts, answer) = match send_upstream(&proxy, parts, body).await {
        Ok(answer) => answer,
        Err(response) => return response,
    };
    match split {
        Some(batch) if parts.status == StatusCode::OK => {
            match merge_batch_answer(Some(&answer), admitted as usize, batch.len()) {
                Ok(merged) => {
                    let mut response = Response::from_parts(parts, Body::from(merged));
                    response.headers_mut().remove("x-amz-crc32");
                    response.headers_mut().remove("content-length");
                    response
                }
                Err(e) => status(
                    StatusCode::BAD_GATEWAY,
                    format!("upstream batch answer: {e}"),
                ),
            }
        }
        // The whole request failed upstream: its answer stands for all of it.
        _ => Response::from_parts(parts, Body::from(answer)),
    }
}

/// The answer to an update none of whose writes was admitted.
fn throttled_answer(operation: Operation, body: &[u8], batch: Option<&BatchRequest>) -> Response {
    match (operation, batch) {
        (Operation::BatchExecuteStatement, Some(batch)) => {
            match merge_batch_answer(None, 0, batch.len()) {
                Ok(answer) => amz_json(StatusCode::OK, answer),
                Err(e) => status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        _ => {
            let table = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v["TableName"].as_str().map(str::to_owned))
                .unwrap_or_default();
            amz_json(
                StatusCode::BAD_REQUEST,
                update_throttled_body(&table).into(),
            )
        }
    }
}

/// Sends the request on with `body` (its length recomputed; the signature,
/// which no upstream verifies, left as it was).
async fn send_upstream(
    proxy: &FaultProxy,
    parts: axum::http::request::Parts,
    body: Bytes,
) -> Result<(axum::http::response::Parts, Bytes), Response> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("{}{path}", proxy.upstream).parse::<axum::http::Uri>() else {
        return Err(status(StatusCode::BAD_GATEWAY, "bad upstream"));
    };
    let mut upstream = axum::http::Request::builder().method(parts.method).uri(uri);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            upstream = upstream.header(name, value);
        }
    }
    let Ok(upstream) = upstream.body(Full::new(body)) else {
        return Err(status(StatusCode::BAD_GATEWAY, "bad request"));
    };
    let Ok(answer) = proxy.client.request(upstream).await else {
        return Err(status(StatusCode::BAD_GATEWAY, "upstream unreachable"));
    };
    let (parts, body) = answer.into_parts();
    match body.collect().await {
        Ok(bytes) => Ok((parts, bytes.to_bytes())),
        Err(_) => Err(status(StatusCode::BAD_GATEWAY, "upstream body")),
    }
}

fn amz_json(code: StatusCode, body: Bytes) -> Response {
    let mut response = status(code, body);
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static(AMZ_JSON));
    response
}

fn status(code: StatusCode, text: impl Into<Body>) -> Response {
    let mut response = Response::new(text.into());
    *response.status_mut() = code;
    response
}
