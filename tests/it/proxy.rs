//! A small fault-injecting HTTP proxy in front of a real DynamoDB-compatible
//! server. It answers a share of update requests (`UpdateItem`, and
//! `BatchExecuteStatement` as a whole) with DynamoDB's
//! throttling error while throttling is on, and records how many requests
//! were in flight through it, so tests observe the client's behaviour from
//! the outside.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

const THROTTLED_BODY: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API."}"#;

const VALIDATION_BODY: &str = r#"{"__type":"com.amazon.coral.validate#ValidationException","message":"Item size to update has exceeded the maximum allowed size"}"#;
const SERVER_ERROR_BODY: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"Internal server error"}"#;

/// What the proxy saw of one `UpdateItem`: how many requests were in flight
/// when it arrived, and whether throttling was on.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub in_flight: usize,
    pub throttling: bool,
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
    pub throttling: AtomicBool,
    in_flight: AtomicUsize,
    updates_seen: AtomicU64,
    pub throttled: AtomicU64,
    samples: Mutex<Vec<Sample>>,
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
            throttling: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            updates_seen: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            samples: Mutex::default(),
            throttled_bodies: Mutex::default(),
        });
        let app = Router::new()
            .fallback(forward)
            .with_state(Arc::clone(&proxy));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok((proxy, endpoint))
    }

    pub fn updates_seen(&self) -> u64 {
        self.updates_seen.load(Ordering::SeqCst)
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Decrements the in-flight count however the request ends.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn forward(State(proxy): State<Arc<FaultProxy>>, request: Request) -> Response {
    let in_flight = proxy.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _guard = InFlight(&proxy.in_flight);
    let (parts, body) = request.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return status(StatusCode::BAD_REQUEST, "unreadable body");
    };
    let is_update = parts.headers.get("x-amz-target").is_some_and(|t| {
        t.as_bytes().ends_with(b".UpdateItem") || t.as_bytes().ends_with(b".BatchExecuteStatement")
    });
    let server_error = || {
        let mut response = status(StatusCode::INTERNAL_SERVER_ERROR, SERVER_ERROR_BODY);
        response.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("application/x-amz-json-1.0"),
        );
        response
    };
    if proxy.down.load(Ordering::SeqCst) {
        return server_error();
    }
    let rejected = proxy
        .reject_updates_containing
        .lock()
        .ok()
        .and_then(|r| r.clone())
        .is_some_and(|needle| String::from_utf8_lossy(&body).contains(&needle));
    if is_update && rejected {
        let mut response = status(StatusCode::BAD_REQUEST, VALIDATION_BODY);
        response.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("application/x-amz-json-1.0"),
        );
        return response;
    }
    if is_update && fastrand::u64(0..1000) < proxy.server_errors_per_mille.load(Ordering::SeqCst) {
        return server_error();
    }
    if is_update {
        let n = proxy.updates_seen.fetch_add(1, Ordering::SeqCst) + 1;
        let throttling = proxy.throttling.load(Ordering::SeqCst);
        if let Ok(mut samples) = proxy.samples.lock() {
            samples.push(Sample {
                in_flight,
                throttling,
            });
        }
        let one_in = proxy.throttle_one_in.load(Ordering::SeqCst);
        if throttling && one_in > 0 && n % one_in == 0 {
            let fresh = proxy
                .throttled_bodies
                .lock()
                .map(|mut seen| seen.insert(body.clone()))
                .unwrap_or(false);
            if fresh {
                proxy.throttled.fetch_add(1, Ordering::SeqCst);
                let mut response = status(StatusCode::BAD_REQUEST, THROTTLED_BODY);
                response.headers_mut().insert(
                    "content-type",
                    HeaderValue::from_static("application/x-amz-json-1.0"),
                );
                return response;
            }
            if let Ok(mut seen) = proxy.throttled_bodies.lock() {
                seen.remove(&body);
            }
        }
    }
    let delay = proxy.update_delay_ms.load(Ordering::SeqCst);
    if is_update && delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("{}{path}", proxy.upstream).parse::<axum::http::Uri>() else {
        return status(StatusCode::BAD_GATEWAY, "bad upstream");
    };
    let mut upstream = axum::http::Request::builder().method(parts.method).uri(uri);
    for (name, value) in &parts.headers {
        if name != "host" {
            upstream = upstream.header(name, value);
        }
    }
    let Ok(upstream) = upstream.body(Full::new(body)) else {
        return status(StatusCode::BAD_GATEWAY, "bad request");
    };
    match proxy.client.request(upstream).await {
        Ok(answer) => {
            let (parts, body) = answer.into_parts();
            match body.collect().await {
                Ok(bytes) => Response::from_parts(parts, Body::from(bytes.to_bytes())),
                Err(_) => status(StatusCode::BAD_GATEWAY, "upstream body"),
            }
        }
        Err(_) => status(StatusCode::BAD_GATEWAY, "upstream unreachable"),
    }
}

fn status(code: StatusCode, text: &'static str) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = code;
    response
}
