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
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
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
    let filter = LogFilter::new(level);
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

/// The embedded engine's crate (`dynoxide-rs`), as its log lines name it.
const ENGINE_TARGET: &str = "dynoxide";

/// Which lines are written. Our crate at the configured level, libraries
/// from WARN up, X-Ray's failure causes never. The embedded engine logs
/// every error it answers at WARN, and its client errors (4xx) are answers
/// we expect: the demo's "is the table there yet?", or a declined condition,
/// one per record already stamped. Those are written only at TRACE, where
/// each record's fate is logged anyway (at DEBUG they would make its volume
/// grow with records); the engine's 5xx and other warnings always are.
struct LogFilter {
    targets: Targets,
    engine_client_errors: bool,
}

impl LogFilter {
    fn new(level: LevelFilter) -> Self {
        Self {
            targets: Targets::new()
                .with_target(env!("CARGO_CRATE_NAME"), level)
                .with_target(xray::CAUSE_TARGET, LevelFilter::OFF)
                .with_default(level.min(LevelFilter::WARN)),
            engine_client_errors: level >= LevelFilter::TRACE,
        }
    }

    fn is_engine(metadata: &Metadata<'_>) -> bool {
        metadata.target().starts_with(ENGINE_TARGET) && *metadata.level() == Level::WARN
    }
}

impl<S> Filter<S> for LogFilter {
    fn enabled(&self, metadata: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        Filter::<S>::enabled(&self.targets, metadata, cx)
    }

    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        let interest = Filter::<S>::callsite_enabled(&self.targets, metadata);
        // The engine's warnings are judged by their fields, one by one.
        if Self::is_engine(metadata) && interest.is_always() {
            Interest::sometimes()
        } else {
            interest
        }
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        if self.engine_client_errors || !Self::is_engine(event.metadata()) {
            return true;
        }
        let mut status = StatusField(None);
        event.record(&mut status);
        !status.0.is_some_and(|s| s.starts_with('4'))
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Filter::<S>::max_level_hint(&self.targets)
    }
}

/// The `status` field of an engine line (`400 Bad Request`).
struct StatusField(Option<String>);

impl Visit for StatusField {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "status" {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "status" {
            self.0 = Some(format!("{value:?}"));
        }
    }
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
pub(crate) mod events;
pub(crate) mod line_budget;
pub(crate) mod metrics;
pub(crate) mod xray;

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer into a shared buffer.
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What the text lines show of `emit` at `level`.
    fn written_at(level: LevelFilter, emit: fn()) -> String {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buffer);
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || Capture(Arc::clone(&sink)))
            .with_filter(LogFilter::new(level));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), emit);
        let bytes = buffer.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    /// The embedded engine's own lines, as `dynoxide::server` writes them.
    fn engine_answers() {
        tracing::warn!(target: "dynoxide::server", operation = "DescribeTable", status = %"400 Bad Request", "error response");
        tracing::warn!(target: "dynoxide::server", operation = "UpdateItem", status = %"500 Internal Server Error", "error response");
        tracing::warn!(target: "dynoxide::storage", "database is locked");
        tracing::debug!(target: "dynoxide::server", operation = "Query", "request");
    }

    #[test]
    fn the_engines_client_errors_are_written_only_at_trace() {
        for level in [LevelFilter::INFO, LevelFilter::DEBUG] {
            let written = written_at(level, engine_answers);
            assert!(!written.contains("400 Bad Request"), "{level}: {written}");
            assert!(
                written.contains("500 Internal Server Error"),
                "a server error is a real one: {written}"
            );
            assert!(written.contains("database is locked"), "{written}");
            assert!(!written.contains("request"), "a library's DEBUG: {written}");
        }
        let written = written_at(LevelFilter::TRACE, engine_answers);
        assert!(written.contains("400 Bad Request"), "{written}");
        assert_eq!(
            written_at(LevelFilter::ERROR, engine_answers),
            "",
            "WARN lines are below ERROR"
        );
    }

    #[test]
    fn our_debug_events_are_written_at_debug_only() {
        fn emit() {
            tracing::debug!("a debug line of ours");
            tracing::trace!("a trace line of ours");
        }
        assert_eq!(written_at(LevelFilter::INFO, emit), "");
        let debug = written_at(LevelFilter::DEBUG, emit);
        assert!(debug.contains("a debug line") && !debug.contains("a trace line"));
        assert!(written_at(LevelFilter::TRACE, emit).contains("a trace line"));
    }
}
