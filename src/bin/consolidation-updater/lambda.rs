//! The Lambda custom runtime (`provided.al2023`): configuration and clients
//! are built once at cold start and borrowed by every invocation.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use lambda_runtime::{Context, Diagnostic, LambdaEvent, service_fn};
use lambda_runtime_api_client::body::Body;
use serde_json::{Value, json};
use tracing::level_filters::LevelFilter;
use tracing::{error, info, warn};

use consolidation_updater::app::{self, Invocation, load_sdk_config};
use consolidation_updater::model::EnvelopeError;
use consolidation_updater::observability::{self, MetricsEmitter, Sink, XrayTracer};
use consolidation_updater::settings::{ConfigErrors, FunctionIdentity, LogFormat, Settings};

/// How long cold start waits for `DescribeTable`. Past it, the first message
/// describes the table instead: a slow DynamoDB never fails the init.
const WARM_UP_LIMIT: Duration = Duration::from_secs(2);

/// An invocation whose payload is not a Kafka event at all, as Lambda
/// reports it.
#[derive(Debug)]
struct NotAKafkaEvent(EnvelopeError);

impl From<NotAKafkaEvent> for Diagnostic {
    fn from(NotAKafkaEvent(error): NotAKafkaEvent) -> Self {
        Diagnostic {
            error_type: "InvalidKafkaEvent".into(),
            error_message: error.to_string(),
        }
    }
}

/// Runs the function until Lambda stops it.
pub async fn main() -> ExitCode {
    let started = Instant::now();
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(problem) => {
            let function = FunctionIdentity::from_env();
            observability::init(
                LevelFilter::INFO,
                LogFormat::Json,
                Sink::Stdout,
                function.as_ref(),
                None,
            );
            // Every variable at fault, comma-separated: one field for the runbook's query.
            let variable = problem.variables().join(",");
            error!(%variable, error = %problem, "the function cannot start: {problem}");
            report_init_error(&problem).await;
            return ExitCode::FAILURE;
        }
    };
    // Every stdout line must be one JSON object in Lambda: LOG_FORMAT is for the CLI.
    let function = settings
        .function
        .clone()
        .unwrap_or_else(FunctionIdentity::unnamed);
    let tracer = settings
        .xray
        .map(|daemon| XrayTracer::connect(daemon, true).map_err(|e| (daemon, e)));
    observability::init(
        settings.log_level,
        LogFormat::Json,
        Sink::Stdout,
        Some(&function),
        tracer.as_ref().and_then(|t| t.as_ref().ok()),
    );
    if settings.log_format == Some(LogFormat::Text) {
        warn!("LOG_FORMAT=text is ignored in Lambda, where every log line is JSON");
    }
    let tracer = match tracer {
        Some(Ok(tracer)) => Some(Arc::new(tracer)),
        Some(Err((daemon, e))) => {
            warn!(error = %e, daemon = %daemon.0, "X-Ray tracing is off: no socket for the daemon");
            None
        }
        None => None,
    };
    match run(settings, function, tracer, started).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            error!(error = %problem, "the runtime stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    settings: Settings,
    function: FunctionIdentity,
    tracer: Option<Arc<XrayTracer>>,
    started: Instant,
) -> Result<(), lambda_runtime::Error> {
    let metrics = match MetricsEmitter::install(&settings.metrics_namespace, &function) {
        Ok(emitter) => Some(Arc::new(emitter)),
        Err(problem) => {
            warn!(error = %problem, "metrics are off: the EMF recorder could not be installed");
            None
        }
    };
    let sdk = load_sdk_config(settings.region.as_deref()).await;
    let store = Arc::new(app::store(
        &settings,
        &sdk,
        aws_sdk_dynamodb::Client::new(&sdk),
    ));
    if tokio::time::timeout(WARM_UP_LIMIT, store.warm_up())
        .await
        .is_err()
    {
        warn!(
            table = %settings.table_name,
            "DescribeTable did not answer within {WARM_UP_LIMIT:?} at start-up; the first message will retry it"
        );
    }
    let handler = Arc::new(app::handler(&settings, &sdk, store, Arc::default()).await);
    info!(
        table = %settings.table_name,
        index = %settings.date_index,
        region = sdk.region().map(|r| r.as_ref()).unwrap_or_default(),
        max_concurrency = settings.max_concurrency,
        init_ms = started.elapsed().as_millis() as u64,
        "ready for invocations"
    );
    let cold = Arc::new(AtomicBool::new(true));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let handler = Arc::clone(&handler);
        let metrics = metrics.clone();
        let tracer = tracer.clone();
        let cold_start = cold.swap(false, Ordering::Relaxed);
        async move {
            let invocation = Invocation {
                request_id: event.context.request_id.clone(),
                deadline: deadline_instant(&event.context),
                cold_start,
                trace_header: event.context.xray_trace_id.clone(),
            };
            observability::invocation_started(cold_start);
            let handled = handler.handle(event.payload, &invocation).await;
            if let Some(tracer) = tracer {
                tracer.flush();
            }
            if let Some(metrics) = metrics {
                let flushed = metrics.flush(
                    &invocation.request_id,
                    invocation
                        .trace_header
                        .as_deref()
                        .and_then(observability::trace_root),
                    std::io::stdout().lock(),
                );
                if let Err(e) = flushed {
                    error!(error = %e, "could not write the invocation's metrics");
                }
            }
            handled
                .map(|outcome| outcome.response())
                .map_err(NotAKafkaEvent)
        }
    }))
    .await
}

/// The invocation's deadline as an `Instant` (none when Lambda gives none);
/// one already past is now.
fn deadline_instant(context: &Context) -> Option<Instant> {
    if context.deadline == 0 {
        return None;
    }
    let left = context
        .deadline()
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Some(Instant::now() + left)
}

/// Tells Lambda why the init failed, so the console and the logs show the
/// variable at fault instead of a bare "Runtime exited".
async fn report_init_error(problem: &ConfigErrors) {
    const ERROR_TYPE: &str = "Runtime.InvalidConfiguration";
    let body = json!({"errorType": ERROR_TYPE, "errorMessage": problem.to_string()}).to_string();
    let request = lambda_runtime_api_client::build_request()
        .method("POST")
        .uri("/2018-06-01/runtime/init/error")
        .header("Lambda-Runtime-Function-Error-Type", ERROR_TYPE)
        .header("Content-Type", "application/json")
        .body(Body::from(body));
    let sent = match (
        lambda_runtime_api_client::Client::builder().build(),
        request,
    ) {
        (Ok(client), Ok(request)) => client
            .call(request)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        (Err(e), _) => Err(e.to_string()),
        (_, Err(e)) => Err(e.to_string()),
    };
    if let Err(e) = sent {
        error!(error = %e, "could not report the init error to the runtime API");
    }
}
