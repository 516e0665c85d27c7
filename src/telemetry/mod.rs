//! Logging. In Lambda every stdout line is one JSON object: timestamp, level,
//! message, then the fields of every enclosing span (request id, then the
//! message's topic, partition, offset, correlation id, ...) flattened to the
//! top level so that CloudWatch Logs Insights can query them directly.
//! In Lambda every line also names the function and its version; the
//! invocation span adds `cold_start` and the X-Ray trace id.
//! On a laptop, human-readable lines go to stderr (or JSON with `LOG_FORMAT=json`).

use std::io::Write;

use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{FunctionIdentity, LogFormat};
use xray::XrayTracer;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Stdout,
    Stderr,
}

/// Installs the global subscriber. Our own code logs at `level`; libraries
/// (the SDK, hyper, the runtime) only from WARN up, so DEBUG stays readable.
/// JSON lines carry `function`'s name and version when there is one; with a
/// `tracer`, our spans also go to X-Ray.
pub fn init(
    level: LevelFilter,
    format: LogFormat,
    sink: Sink,
    function: Option<&FunctionIdentity>,
    tracer: Option<&XrayTracer>,
) {
    let filter = Targets::new()
        .with_target(env!("CARGO_CRATE_NAME"), level)
        .with_target(xray::CAUSE_TARGET, LevelFilter::OFF)
        .with_default(level.min(LevelFilter::WARN));
    let result = match format {
        LogFormat::Json => {
            let mut every_line = Map::new();
            if let Some(function) = function {
                every_line.insert("function_name".into(), Value::from(function.name.as_str()));
                every_line.insert(
                    "function_version".into(),
                    Value::from(function.version.as_str()),
                );
            }
            tracing_subscriber::registry()
                .with(JsonLines { sink, every_line }.with_filter(filter))
                .with(tracer.map(XrayTracer::layer))
                .try_init()
        }
        LogFormat::Text => {
            let text = tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_ansi(
                    sink == Sink::Stderr && std::io::IsTerminal::is_terminal(&std::io::stderr()),
                );
            match sink {
                Sink::Stdout => tracing_subscriber::registry()
                    .with(text.with_writer(std::io::stdout).with_filter(filter))
                    .with(tracer.map(XrayTracer::layer))
                    .try_init(),
                Sink::Stderr => tracing_subscriber::registry()
                    .with(text.with_writer(std::io::stderr).with_filter(filter))
                    .with(tracer.map(XrayTracer::layer))
                    .try_init(),
            }
        }
    };
    // Already installed (a second call in one process): keep the first.
    drop(result);
}

/// The fields of one span, kept in its extensions.
struct SpanFields(Map<String, Value>);

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl JsonVisitor<'_> {
    fn insert(&mut self, field: &Field, value: Value) {
        // `otel.*` fields steer the X-Ray layer; they are not log content.
        if !field.name().starts_with("otel.") {
            self.0.insert(field.name().to_owned(), value);
        }
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.insert(field, Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.insert(field, Value::from(format!("{value:?}")));
    }
}

/// A layer writing one JSON object per event.
struct JsonLines {
    sink: Sink,
    /// Fields of the process, on every line.
    every_line: Map<String, Value>,
}

impl<S> Layer<S> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        attrs.record(&mut JsonVisitor(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<SpanFields>()
        {
            values.record(&mut JsonVisitor(&mut fields.0));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let metadata = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::from(Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)),
        );
        line.insert("level".into(), Value::from(metadata.level().as_str()));
        line.insert("message".into(), Value::from(""));
        line.extend(self.every_line.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    line.extend(fields.0.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        let mut fields = Map::new();
        event.record(&mut JsonVisitor(&mut fields));
        line.extend(fields);
        line.insert("target".into(), Value::from(metadata.target()));
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        // One write per line, so concurrent tasks never interleave within a line.
        let _ = match self.sink {
            Sink::Stdout => std::io::stdout().lock().write_all(&bytes),
            Sink::Stderr => std::io::stderr().lock().write_all(&bytes),
        };
    }
}
pub mod metrics;
pub mod xray;
