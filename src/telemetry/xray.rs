//! X-Ray tracing. Our spans (the invocation, each message, each fan-out,
//! each index page, the SQS and SNS calls) become OpenTelemetry spans and
//! are sent, as each one ends, as X-Ray subsegments to the daemon at
//! `AWS_XRAY_DAEMON_ADDRESS`. In Lambda they hang under the function's own
//! segment, named by the invocation's `Lambda-Runtime-Trace-Id`; outside
//! Lambda (only when asked) the invocation is a segment of a trace of its own.
//!
//! Never one span per record update: a million subsegments would cost more
//! than the work. Failed updates are counted, and the first failure that
//! stops a fan-out is its subsegment's fault.

use std::io;

use opentelemetry::Context;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_aws::trace::XrayIdGenerator;
use opentelemetry_aws::trace::xray_propagator::span_context_from_str;
use opentelemetry_aws::xray_exporter::SegmentTranslator;
use opentelemetry_aws::xray_exporter::XrayExporter;
use opentelemetry_aws::xray_exporter::daemon_client::XrayDaemonClient;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use tracing::{Level, Span, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;

use crate::config::XrayDaemon;

/// Span fields that become X-Ray annotations (indexed, searchable with
/// filter expressions such as `annotation.partition_date = "2025-11-20"`).
pub(crate) const ANNOTATED_FIELDS: [&str; 5] = [
    "partition_date",
    "execution_sequence",
    "correlation_id",
    "request_id",
    "outcome",
];

/// Span fields kept as subsegment metadata (not searchable).
const METADATA_FIELDS: [&str; 12] = [
    "topic",
    "partition",
    "offset",
    "cold_start",
    "written",
    "already_applied",
    "missing",
    "failed_attempts",
    "throttled",
    "keys",
    "stream",
    "error_kind",
];

/// The tracer behind the layer; flushed after every invocation.
pub struct XrayTracer {
    provider: SdkTracerProvider,
}

impl XrayTracer {
    /// Spans go to the daemon at `daemon`. `in_lambda`: spans are sampled as
    /// Lambda's trace header says (nothing is sent when it says no); outside
    /// Lambda every invocation starts a sampled trace of its own.
    pub fn connect(daemon: XrayDaemon, in_lambda: bool) -> io::Result<Self> {
        let translator = SegmentTranslator::new()
            .with_indexed_attrs(ANNOTATED_FIELDS.map(String::from))
            .with_metadata_attrs(METADATA_FIELDS.map(String::from));
        let exporter =
            XrayExporter::new(XrayDaemonClient::new(daemon.0)?).with_translator(translator);
        let root = if in_lambda {
            // A span without Lambda's parent would be a stray trace.
            Sampler::AlwaysOff
        } else {
            Sampler::AlwaysOn
        };
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(root)))
            .with_id_generator(XrayIdGenerator::default())
            .with_resource(Resource::builder_empty().build())
            // Each span is one UDP datagram sent as it ends: nothing is left
            // buffered when Lambda freezes the process after the response.
            .with_simple_exporter(exporter)
            .build();
        Ok(Self { provider })
    }

    /// The layer that turns our spans into subsegments. Only our crate's
    /// spans (not the SDK's or the runtime's), and of events only errors,
    /// which mark their span as a fault.
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let ours = |target: &str| target.starts_with(env!("CARGO_CRATE_NAME"));
        tracing_opentelemetry::layer()
            .with_tracer::<SdkTracer>(self.provider.tracer(env!("CARGO_PKG_NAME")))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_target(false)
            .with_level(false)
            .with_filter(filter_fn(move |meta| {
                ours(meta.target()) && (meta.is_span() || *meta.level() == Level::ERROR)
            }))
    }

    /// Sends whatever is still buffered; with the simple processor, nothing
    /// is: a safety net at the end of each invocation.
    pub fn flush(&self) {
        let _ = self.provider.force_flush();
    }
}

/// A span for one call to another AWS service: an X-Ray subsegment named
/// after the service, in the `aws` namespace.
pub(crate) fn aws_call(service: &'static str, operation: &'static str) -> Span {
    tracing::info_span!(
        "aws call",
        otel.kind = "client",
        rpc.system = "aws-api",
        rpc.service = service,
        rpc.method = operation,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    )
}

/// A count as a span field. The OpenTelemetry bridge records only signed
/// integers as numbers (an unsigned one would become a string).
pub(crate) fn number(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// Events of this target only reach X-Ray (the log layer leaves them out):
/// they say why a subsegment failed.
pub(crate) const CAUSE_TARGET: &str = concat!(env!("CARGO_CRATE_NAME"), "::xray_cause");

/// Marks `span`'s subsegment as failed, with why (its `cause`).
pub(crate) fn record_failure(span: &Span, why: &str) {
    span.record("otel.status_code", "error");
    span.record("otel.status_description", why);
    // A message-less event with an `error` field is an exception to the bridge.
    tracing::error!(target: CAUSE_TARGET, parent: span, error = %why);
}

/// Makes `span` (not yet entered) a child of the segment Lambda's trace
/// header names. A header that does not parse leaves it a root.
pub(crate) fn continue_trace(span: &Span, header: &str) {
    if let Some(parent) = span_context_from_str(header) {
        let _ = span.set_parent(Context::new().with_remote_span_context(parent));
    }
}

/// The trace id in Lambda's `Root=1-...;Parent=...;Sampled=1` header.
pub fn trace_root(header: &str) -> Option<&str> {
    header
        .split(';')
        .find_map(|part| part.trim().strip_prefix("Root="))
        .filter(|root| !root.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_read_from_lambdas_trace_header() {
        let header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
        assert_eq!(
            trace_root(header),
            Some("1-5759e988-bd862e3fe1be46a994272793")
        );
        assert_eq!(trace_root("Parent=53995c3f42cd8ad8;Sampled=1"), None);
        assert_eq!(trace_root("Root=;Sampled=1"), None);
    }
}
