//! The function's logs as Logs Insights sees them: the real binary run as
//! Lambda runs it (one process per execution environment, fed any number of
//! invocations by the runtime-API stub), and its stdout turned into the
//! events of a log group, with the fields Insights discovers.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, anyhow, ensure};
use serde_json::Value;

use super::eval::{Event, Results, Val};
use super::query::Query;
use crate::runtime_api_stub::{
    Invocation, Stub, lambda_command, start_stub, stop, wait_for_within,
};
use crate::support::TestTable;

/// What one execution environment answered and wrote.
pub(super) struct Environment {
    /// (request id, response body) per invocation, in order.
    pub(super) responses: Vec<(String, Value)>,
    pub(super) stdout: String,
}

/// Starts the binary, delivers `invocations` (request id, event) one after
/// the other, and stops it once every one is answered.
pub(super) async fn run_environment(
    dynamodb: &str,
    table: &str,
    invocations: Vec<(String, Value)>,
    env: &[(&str, &str)],
) -> anyhow::Result<Environment> {
    let expected = invocations.len();
    let stub = Stub::serving(
        invocations
            .into_iter()
            .map(|(request_id, event)| Invocation::new(request_id, event))
            .collect(),
    );
    let address = start_stub(stub.clone()).await?;
    let mut command = lambda_command(&address, dynamodb, table);
    command.envs(env.iter().copied());
    let child = command.spawn()?;
    let answered = wait_for_within(&stub, Duration::from_secs(60), |seen| {
        seen.responses.len() == expected
    })
    .await;
    let (stdout, stderr) = stop(child).await?;
    answered.map_err(|_| anyhow!("not every invocation was answered within 60 s: {stderr}"))?;
    let responses = stub.seen.lock().await.responses.clone();
    Ok(Environment { responses, stdout })
}

/// An environment whose start-up fails on a setting: its stdout.
pub(super) async fn refused_start(table: &TestTable) -> anyhow::Result<String> {
    let address = start_stub(Stub::serving(Vec::new())).await?;
    let mut command = lambda_command(&address, &table.endpoint, &table.name);
    command.env("MAX_CONCURRENCY", "lots").stdin(Stdio::null());
    let output = tokio::time::timeout(Duration::from_secs(30), command.output()).await??;
    ensure!(!output.status.success(), "the start-up must fail");
    Ok(String::from_utf8(output.stdout)?)
}

/// Insights discovers at most this many fields of a JSON event (see the
/// module's sources); past it, which ones it keeps is not documented, so a
/// line with more fails the test instead.
const MAX_DISCOVERED_FIELDS: usize = 100;

/// Lambda writes an event's `@timestamp` as it captures the line; the line's
/// own `timestamp` (or the EMF document's) stands in for it here.
fn discover(line: &str, stream: &str, previous_ms: i64) -> anyhow::Result<Event> {
    let mut fields = BTreeMap::new();
    let mut at = previous_ms;
    if let Ok(object @ Value::Object(_)) = serde_json::from_str::<Value>(line) {
        flatten("", &object, &mut fields);
        ensure!(
            fields.len() <= MAX_DISCOVERED_FIELDS,
            "{} fields in one line, more than Insights discovers: {line}",
            fields.len()
        );
        if let Some(ms) = object
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis())
            .or_else(|| object.get("_aws")?.get("Timestamp")?.as_i64())
        {
            at = ms;
        }
    }
    fields.insert("@message".into(), Val::Text(line.to_owned()));
    fields.insert("@timestamp".into(), Val::Num(at as f64));
    fields.insert("@logStream".into(), Val::Text(stream.to_owned()));
    Ok(Event(fields))
}

fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Val>) {
    let name = |key: &str| {
        if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}.{key}")
        }
    };
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                flatten(&name(key), inner, out);
            }
        }
        Value::Array(items) => {
            for (index, inner) in items.iter().enumerate() {
                flatten(&name(&index.to_string()), inner, out);
            }
        }
        Value::String(text) => {
            out.insert(prefix.to_owned(), Val::Text(text.clone()));
        }
        Value::Number(number) => {
            if let Some(n) = number.as_f64() {
                out.insert(prefix.to_owned(), Val::Num(n));
            }
        }
        Value::Bool(flag) => {
            out.insert(prefix.to_owned(), Val::Num(if *flag { 1.0 } else { 0.0 }));
        }
        Value::Null => {}
    }
}

/// The events of one log group, in the order they were written per stream.
pub(super) struct LogGroup {
    pub(super) events: Vec<Event>,
}

impl LogGroup {
    /// Each stream's stdout, with the `START`/`END`/`REPORT` lines Lambda adds
    /// around each invocation (in its default text log format).
    pub(super) fn from_streams(streams: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut events = Vec::new();
        for (stream, stdout) in streams {
            let mut lines = Vec::new();
            let mut started = BTreeSet::new();
            for line in stdout.lines() {
                let parsed: Value = serde_json::from_str(line)
                    .with_context(|| format!("a stdout line that is not JSON: {line}"))?;
                let request_id = parsed["request_id"].as_str().map(str::to_owned);
                if let Some(id) = &request_id
                    && started.insert(id.clone())
                {
                    lines.push(format!("START RequestId: {id} Version: $LATEST"));
                }
                lines.push(line.to_owned());
                if let (Some(id), Some(_)) = (&request_id, parsed.get("_aws")) {
                    lines.push(format!("END RequestId: {id}"));
                    lines.push(format!(
                        "REPORT RequestId: {id}\tDuration: 3.10 ms\tBilled Duration: 4 ms\t\
                         Memory Size: 256 MB\tMax Memory Used: 21 MB"
                    ));
                }
            }
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            events.extend(Self::from_lines(stream, &lines)?.events);
        }
        Ok(Self { events })
    }

    pub(super) fn from_lines(stream: &str, lines: &[&str]) -> anyhow::Result<Self> {
        let mut events = Vec::with_capacity(lines.len());
        let mut previous = 0;
        for line in lines {
            let event = discover(line, stream, previous)?;
            previous = event.num("@timestamp").unwrap_or(0.0) as i64;
            events.push(event);
        }
        Ok(Self { events })
    }

    pub(super) fn run(&self, query: &str) -> anyhow::Result<Results> {
        Query::parse(query)?.run(&self.events)
    }

    pub(super) fn raw_lines_whose_message_starts_with(&self, prefix: &str) -> usize {
        self.events
            .iter()
            .filter(|e| {
                serde_json::from_str::<Value>(&e.text("@message").unwrap_or_default())
                    .ok()
                    .and_then(|v| v["message"].as_str().map(|m| m.starts_with(prefix)))
                    .unwrap_or(false)
            })
            .count()
    }

    pub(super) fn dump(&self) -> String {
        self.events
            .iter()
            .filter_map(|e| e.text("@message"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
