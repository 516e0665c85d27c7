//! What operators see of the real binary: EMF metrics, X-Ray subsegments
//! and the log lines that tell each message's story. The binary runs as
//! Lambda runs it, against the runtime-API stub; what it writes to stdout
//! (and, for traces, to a UDP socket standing in for the X-Ray daemon) is
//! checked from the outside.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail, ensure};
use consolidation_updater::local::TableShape;
use libtest_mimic::Trial;
use serde_json::{Value, json};
use tokio::net::UdpSocket;

use crate::Backends;
use crate::proxy::FaultProxy;
use crate::runtime_api::*;
use crate::support::*;

pub fn tests(backends: &Backends) -> Vec<Trial> {
    let mut trials = trials!("observability";
        metrics_follow_the_emf_specification_and_agree_with_the_metrics_line,
        subsegments_continue_lambdas_trace_one_per_message_fan_out_and_page,
        nothing_is_traced_when_lambda_does_not_sample,
        a_messages_story_is_found_by_its_correlation_id,
        throttled_requests_are_counted_in_the_metrics,
    );
    trials.push(backends.on_moto(
        "moto::observability::dead_letter_and_notice_calls_are_traced_and_counted",
        dead_letter_and_notice_calls_are_traced_and_counted,
    ));
    trials
}

const NAMESPACE: &str = "POC-Chargeback/ConsolidationUpdater";

/// What one run of the binary left behind.
struct Run {
    response: Option<Value>,
    lines: Vec<Value>,
    stdout: String,
}

impl Run {
    /// The EMF documents (lines with an `_aws` member).
    fn metric_documents(&self) -> Vec<&Value> {
        self.lines
            .iter()
            .filter(|l| l.get("_aws").is_some())
            .collect()
    }

    fn log_lines(&self) -> impl Iterator<Item = &Value> {
        self.lines.iter().filter(|l| l.get("_aws").is_none())
    }
}

/// Runs the binary for one invocation of `stub`'s event against DynamoDB at
/// `dynamodb` (table `table`), with `env` on top of Lambda's environment.
async fn run_lambda(
    stub: Stub,
    dynamodb: &str,
    table: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<Run> {
    let api = start_stub(stub.clone()).await?;
    let mut command = lambda_command(&api, dynamodb, table);
    command.envs(env.iter().copied());
    let child = command.spawn()?;
    let answered = wait_for(&stub, |s| s.response.is_some()).await;
    let (stdout, stderr) = stop(child).await?;
    answered.with_context(|| format!("stdout: {stdout}\nstderr: {stderr}"))?;
    let lines = stdout
        .lines()
        .map(|line| serde_json::from_str(line).with_context(|| format!("not JSON: {line}")))
        .collect::<anyhow::Result<_>>()?;
    let response = stub.seen.lock().await.response.clone();
    Ok(Run {
        response,
        lines,
        stdout,
    })
}

fn offsets_handed_back(response: &Option<Value>) -> Vec<(String, i64)> {
    let mut listed: Vec<(String, i64)> = response
        .as_ref()
        .and_then(|r| r["batchItemFailures"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|f| {
            let id = &f["itemIdentifier"];
            Some((id["partition"].as_str()?.to_owned(), id["offset"].as_i64()?))
        })
        .collect();
    listed.sort();
    listed
}

/// Seeds `count` chargebacks of `date` created early that day.
async fn seed_day(table: &TestTable, prefix: &str, date: &str, count: usize) -> anyhow::Result<()> {
    table
        .seed((0..count).map(|i| {
            chargeback(
                &format!("{prefix}-{i:04}"),
                date,
                &format!("{date}T01:00:00.000Z"),
            )
        }))
        .await?;
    Ok(())
}

/// A message whose value is not JSON: poison.
fn poison_at(partition: i64, offset: i64) -> Message {
    Message {
        partition,
        offset,
        value: "not json".into(),
    }
}

/// The batch the metric test knows the counts of: one message applied
/// (3 records), one poison handed back (no dead-letter queue), the message
/// behind it blocked, one of another event type skipped.
fn known_mix() -> Value {
    kafka_event(&[
        Message::json(
            0,
            10,
            &consolidation("2025-11-20", 2, 4, "2025-11-20T06:30:00"),
        ),
        poison_at(1, 5),
        Message::json(
            1,
            6,
            &consolidation("2025-11-20", 3, 4, "2025-11-20T12:30:00"),
        ),
        Message::json(
            2,
            1,
            &json!({"event_type": "chargeback_created", "chargeback_id": "x"}),
        ),
    ])
}

pub async fn metrics_follow_the_emf_specification_and_agree_with_the_metrics_line()
-> anyhow::Result<()> {
    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    seed_day(&table, "cb", "2025-11-20", 3).await?;
    let run = run_lambda(Stub::new(known_mix()), &table.endpoint, &table.name, &[]).await?;
    ensure!(
        offsets_handed_back(&run.response)
            == [(format!("{TOPIC}-1"), 5), (format!("{TOPIC}-1"), 6)],
        "response {:?}",
        run.response
    );

    let documents = run.metric_documents();
    ensure!(
        documents.len() == 1,
        "one EMF document per invocation, got {}: {}",
        documents.len(),
        run.stdout
    );
    let document = documents[0];
    check_emf(document)?;

    let directive = &document["_aws"]["CloudWatchMetrics"][0];
    ensure!(directive["Namespace"] == NAMESPACE, "{directive}");
    ensure!(
        directive["Dimensions"] == json!([["FunctionName"]]),
        "one dimension set, the function name only: {directive}"
    );
    ensure!(document["FunctionName"] == "consolidation-updater");
    ensure!(document["request_id"] == REQUEST_ID, "{document}");
    let units: BTreeMap<&str, &str> = directive["Metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| Some((m["Name"].as_str()?, m["Unit"].as_str()?)))
        .collect();
    let expected = [
        ("MessagesProcessed", 1),
        ("MessagesFailed", 2),
        ("ChargebacksUpdated", 3),
        ("MessagesSkipped", 1),
        ("MessagesDeadLettered", 0),
        ("MessagesRetried", 2),
        ("ChargebacksAlreadyApplied", 0),
        ("ThrottledRequests", 0),
        ("ThrottledWrites", 0),
        ("ColdStart", 1),
    ];
    for (name, value) in expected {
        ensure!(
            document[name] == value,
            "{name}: expected {value}, got {} in {document}",
            document[name]
        );
        ensure!(units.get(name) == Some(&"Count"), "{name} unit: {units:?}");
    }
    ensure!(units.get("FanOutDuration") == Some(&"Milliseconds"));
    let durations = document["FanOutDuration"]
        .as_array()
        .ok_or_else(|| anyhow!("FanOutDuration is one value per fan-out: {document}"))?;
    ensure!(
        durations.len() == 1 && durations[0].as_f64().is_some_and(|ms| ms > 0.0),
        "one fan-out ran: {durations:?}"
    );

    // The seed's METRICS line shows the same numbers.
    let summary = run
        .log_lines()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("METRICS: "))
        })
        .ok_or_else(|| anyhow!("no METRICS line: {}", run.stdout))?;
    let message = summary["message"].as_str().unwrap_or_default();
    for (field, metric) in [
        ("messages_processed", "MessagesProcessed"),
        ("messages_failed", "MessagesFailed"),
        ("chargebacks_updated", "ChargebacksUpdated"),
    ] {
        ensure!(
            message.contains(&format!("{field}={}", document[metric])),
            "{message} vs {metric}={}",
            document[metric]
        );
        ensure!(summary[field] == document[metric], "{summary}");
    }
    for (field, metric) in [
        ("messages_skipped", "MessagesSkipped"),
        ("messages_dead_lettered", "MessagesDeadLettered"),
        ("messages_retried", "MessagesRetried"),
        ("chargebacks_already_applied", "ChargebacksAlreadyApplied"),
    ] {
        ensure!(summary[field] == document[metric], "{field}: {summary}");
    }

    // The checks can fail: a document missing a metric's value, or with a
    // unit CloudWatch does not know, is refused.
    let mut missing_value = document.clone();
    if let Some(root) = missing_value.as_object_mut() {
        root.remove("MessagesProcessed");
    }
    ensure!(check_emf(&missing_value).is_err());
    let mut bad_unit = document.clone();
    bad_unit["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] = json!("Widgets");
    ensure!(check_emf(&bad_unit).is_err());
    Ok(())
}

/// Checks an EMF document against the specification: its JSON schema
/// (structure, units, at most 100 metrics per directive), then what a schema
/// cannot say: every metric and dimension a directive names is a member of
/// the root, metric values are numbers (or at most 100 of them), dimension
/// values are strings.
fn check_emf(document: &Value) -> anyhow::Result<()> {
    let mut schemas = boon::Schemas::new();
    let emf = boon::Compiler::new()
        .compile(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/emf.schema.json"
            ),
            &mut schemas,
        )
        .map_err(|e| anyhow!("the schema itself: {e:#}"))?;
    if let Err(errors) = schemas.validate(document, emf) {
        bail!("not EMF: {errors:#} in {document}");
    }
    let directives = document["_aws"]["CloudWatchMetrics"]
        .as_array()
        .ok_or_else(|| anyhow!("no directives"))?;
    for directive in directives {
        for metric in directive["Metrics"].as_array().into_iter().flatten() {
            let name = metric["Name"].as_str().unwrap_or_default();
            match document.get(name) {
                Some(Value::Number(_)) => {}
                Some(Value::Array(values))
                    if values.len() <= 100 && values.iter().all(Value::is_number) => {}
                other => bail!("metric {name} has no numeric value in the root: {other:?}"),
            }
        }
        for set in directive["Dimensions"].as_array().into_iter().flatten() {
            for dimension in set.as_array().into_iter().flatten() {
                let name = dimension.as_str().unwrap_or_default();
                ensure!(
                    document.get(name).is_some_and(Value::is_string),
                    "dimension {name} has no string value in the root"
                );
            }
        }
    }
    Ok(())
}

/// A UDP socket standing in for the X-Ray daemon.
struct Daemon {
    socket: UdpSocket,
}

impl Daemon {
    async fn start() -> anyhow::Result<(Self, String)> {
        let socket = UdpSocket::bind(("127.0.0.1", 0)).await?;
        let address = socket.local_addr()?.to_string();
        Ok((Self { socket }, address))
    }

    /// Every segment document received until the socket stays quiet for a
    /// moment (spans are sent as they end, before the response is posted).
    async fn documents(&self) -> anyhow::Result<Vec<Value>> {
        let mut documents = Vec::new();
        let mut buffer = vec![0; 65_536];
        while let Ok(received) =
            tokio::time::timeout(Duration::from_millis(500), self.socket.recv(&mut buffer)).await
        {
            let datagram = std::str::from_utf8(&buffer[..received?])?;
            let (header, body) = datagram
                .split_once('\n')
                .ok_or_else(|| anyhow!("no header line: {datagram}"))?;
            let header: Value = serde_json::from_str(header)?;
            ensure!(
                header == json!({"format": "json", "version": 1}),
                "{header}"
            );
            documents.push(serde_json::from_str(body)?);
        }
        Ok(documents)
    }
}

/// A subsegment's metadata value, flat or under a namespace.
fn metadata<'a>(document: &'a Value, key: &str) -> Option<&'a Value> {
    let metadata = document.get("metadata")?;
    metadata
        .get(key)
        .or_else(|| metadata.as_object()?.values().find_map(|ns| ns.get(key)))
}

pub async fn subsegments_continue_lambdas_trace_one_per_message_fan_out_and_page()
-> anyhow::Result<()> {
    const RECORDS: usize = 40;
    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    seed_day(&table, "cb", "2025-11-20", RECORDS).await?;
    seed_day(&table, "cb-rejected", "2025-11-21", 1).await?;
    // DynamoDB refuses, for good, any update of the 21st's record.
    let (proxy, dynamodb) = FaultProxy::start(&table.endpoint).await?;
    *proxy
        .reject_updates_containing
        .lock()
        .map_err(|_| anyhow!("poisoned"))? = Some("cb-rejected".into());
    let (daemon, address) = Daemon::start().await?;
    let stub = Stub::new(kafka_event(&[
        Message::json(
            0,
            10,
            &consolidation("2025-11-20", 2, 4, "2025-11-20T06:30:00"),
        ),
        poison_at(1, 5),
        Message::json(
            2,
            1,
            &consolidation("2025-11-21", 1, 4, "2025-11-21T06:30:00"),
        ),
    ]));
    let root = stub.invocations[0]
        .trace_header
        .split(';')
        .find_map(|p| p.strip_prefix("Root="))
        .unwrap_or_default()
        .to_owned();
    let run = run_lambda(
        stub,
        &dynamodb,
        &table.name,
        &[("AWS_XRAY_DAEMON_ADDRESS", &address)],
    )
    .await?;
    ensure!(
        offsets_handed_back(&run.response)
            == [(format!("{TOPIC}-1"), 5), (format!("{TOPIC}-2"), 1)],
        "{:?}",
        run.response
    );
    let documents = daemon.documents().await?;
    let named =
        |name: &str| -> Vec<&Value> { documents.iter().filter(|d| d["name"] == name).collect() };

    for document in &documents {
        ensure!(document["type"] == "subsegment", "{document}");
        ensure!(document["trace_id"] == root.as_str(), "{document}");
        ensure!(
            document["start_time"].is_number() && document["end_time"].is_number(),
            "{document}"
        );
    }
    let invocation = named("invocation");
    ensure!(invocation.len() == 1, "one invocation: {documents:#?}");
    let invocation = invocation[0];
    ensure!(
        invocation["parent_id"] == FACADE_SEGMENT,
        "under Lambda's segment: {invocation}"
    );
    ensure!(invocation["annotations"]["request_id"] == REQUEST_ID);

    let messages = named("message");
    ensure!(messages.len() == 3, "one per message: {messages:#?}");
    ensure!(messages.iter().all(|m| m["parent_id"] == invocation["id"]));
    let poison = messages
        .iter()
        .find(|m| metadata(m, "partition").is_some_and(|p| p == &json!(format!("{TOPIC}-1"))))
        .ok_or_else(|| anyhow!("no subsegment for the poison: {messages:#?}"))?;
    ensure!(
        poison["fault"] == true || poison["error"] == true,
        "the poison's subsegment is marked failed: {poison}"
    );

    let fan_outs = named("fan-out");
    ensure!(fan_outs.len() == 2, "one per fan-out: {fan_outs:#?}");
    for fan_out in &fan_outs {
        ensure!(
            messages.iter().any(|m| m["id"] == fan_out["parent_id"]),
            "a fan-out hangs under its message: {fan_out}"
        );
        ensure!(
            fan_out["annotations"]["execution_sequence"].is_number(),
            "{fan_out}"
        );
    }
    let applied = fan_outs
        .iter()
        .find(|f| f["annotations"]["partition_date"] == "2025-11-20")
        .ok_or_else(|| anyhow!("no fan-out for the 20th: {fan_outs:#?}"))?;
    ensure!(applied["annotations"]["execution_sequence"] == 2);
    ensure!(
        metadata(applied, "written") == Some(&json!(RECORDS)),
        "{applied}"
    );
    ensure!(applied.get("fault").is_none_or(|f| f == false), "{applied}");
    let rejected = fan_outs
        .iter()
        .find(|f| f["annotations"]["partition_date"] == "2025-11-21")
        .ok_or_else(|| anyhow!("no fan-out for the 21st: {fan_outs:#?}"))?;
    ensure!(
        rejected["fault"] == true,
        "the failed update is the fan-out's fault: {rejected}"
    );
    ensure!(
        rejected.to_string().contains("ValidationException")
            || rejected.to_string().contains("maximum allowed size"),
        "the failure is said: {rejected}"
    );

    let pages = named("index page");
    ensure!(
        pages.len() >= 2,
        "at least one page per fan-out: {pages:#?}"
    );
    ensure!(
        pages
            .iter()
            .all(|p| fan_outs.iter().any(|f| f["id"] == p["parent_id"])),
        "pages hang under their fan-out"
    );
    ensure!(
        documents.len() < RECORDS,
        "never one subsegment per record: {} documents",
        documents.len()
    );
    let known = ["invocation", "message", "fan-out", "index page"];
    ensure!(
        documents
            .iter()
            .all(|d| known.iter().any(|name| d["name"] == *name)),
        "only our spans, not the SDK's or the runtime's: {documents:#?}"
    );
    ensure!(
        run.log_lines()
            .filter(|l| l.get("request_id").is_some())
            .all(|l| l["xray_trace_id"] == root.as_str()),
        "every invocation line carries the trace id"
    );
    Ok(())
}

pub async fn nothing_is_traced_when_lambda_does_not_sample() -> anyhow::Result<()> {
    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    seed_day(&table, "cb", "2025-11-20", 2).await?;
    let (daemon, address) = Daemon::start().await?;
    let mut stub = Stub::new(sample_event());
    let invocation = &mut stub.invocations[0];
    invocation.trace_header = invocation.trace_header.replace("Sampled=1", "Sampled=0");
    let run = run_lambda(
        stub,
        &table.endpoint,
        &table.name,
        &[("AWS_XRAY_DAEMON_ADDRESS", &address)],
    )
    .await?;
    ensure!(run.response == Some(json!({"batchItemFailures": []})));
    let documents = daemon.documents().await?;
    ensure!(documents.is_empty(), "sent: {documents:#?}");
    Ok(())
}

pub async fn a_messages_story_is_found_by_its_correlation_id() -> anyhow::Result<()> {
    const RECORDS: usize = 100;
    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    seed_day(&table, "cb", "2025-11-20", RECORDS).await?;
    // Slow updates, so that the fan-out lasts a few progress intervals.
    let (proxy, dynamodb) = FaultProxy::start(&table.endpoint).await?;
    proxy.update_delay_ms.store(40, Ordering::SeqCst);
    let event = consolidation("2025-11-20", 2, 4, "2025-11-20T06:30:00");
    let stub = Stub::new(kafka_event(&[
        Message::json(0, 10, &event),
        Message::json(
            1,
            3,
            &consolidation("2025-11-19", 1, 4, "2025-11-19T06:30:00"),
        ),
    ]));
    let run = run_lambda(
        stub,
        &dynamodb,
        &table.name,
        &[
            // One update per request, two at a time: a fan-out of seconds.
            ("WRITE_MODE", "update-item"),
            ("MAX_CONCURRENCY", "2"),
            ("PROGRESS_LOG_INTERVAL_SECONDS", "1"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "7"),
        ],
    )
    .await?;
    ensure!(run.response == Some(json!({"batchItemFailures": []})));

    for line in run.log_lines() {
        ensure!(line["function_name"] == "consolidation-updater", "{line}");
        ensure!(line["function_version"] == "7", "{line}");
    }
    let correlation_id = "poc-chargeback-dev-chargebacks-consolidation:2025-11-20:2";
    let story: Vec<&Value> = run
        .log_lines()
        .filter(|l| l["correlation_id"] == correlation_id)
        .collect();
    let said: Vec<&str> = story.iter().filter_map(|l| l["message"].as_str()).collect();
    ensure!(
        said.first() == Some(&"message received"),
        "the story starts at receipt: {said:#?}"
    );
    ensure!(
        said.last() == Some(&"message outcome: applied"),
        "and ends with the outcome: {said:#?}"
    );
    ensure!(said.contains(&"stamping the day's chargebacks") && said.contains(&"applied"));
    // The forecast: the stub's deadline is a minute away, the event counts 1002.
    let stamping = story
        .iter()
        .find(|l| l["message"] == "stamping the day's chargebacks")
        .ok_or_else(|| anyhow!("no stamping line"))?;
    let left_ms = stamping["time_left_ms"].as_u64().unwrap_or(0);
    ensure!(
        (1..=60_000).contains(&left_ms),
        "time left before new work stops: {stamping}"
    );
    let needed = (1002.0 * 1000.0 / left_ms as f64).ceil() as u64;
    ensure!(
        stamping["needed_records_per_second"]
            .as_u64()
            .is_some_and(|n| n.abs_diff(needed) <= 1),
        "needs about {needed}/s: {stamping}"
    );
    for line in &story {
        ensure!(line["request_id"] == REQUEST_ID, "{line}");
        ensure!(line["cold_start"] == true, "{line}");
        ensure!(line["partition"] == format!("{TOPIC}-0").as_str(), "{line}");
        ensure!(line["xray_trace_id"].is_string(), "{line}");
    }
    let progress: Vec<&&Value> = story
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("fan-out progress"))
        })
        .collect();
    ensure!(
        !progress.is_empty(),
        "a fan-out longer than the interval logs its progress: {said:#?}"
    );
    for line in &progress {
        ensure!(line["level"] == "INFO");
        let stamped = line["stamped"].as_u64().unwrap_or(u64::MAX);
        ensure!(stamped <= RECORDS as u64, "{line}");
        ensure!(
            line["expected_records"] == 1002,
            "the event's count: {line}"
        );
        ensure!(line["records_per_second"].is_u64(), "{line}");
    }
    ensure!(
        progress.iter().any(|l| l["eta_seconds"].is_u64()),
        "an estimate of the time left once something is done: {progress:#?}"
    );
    // The other message's lines never carry this one's id.
    let other: Vec<&Value> = run
        .log_lines()
        .filter(|l| l["partition"] == format!("{TOPIC}-1").as_str())
        .collect();
    ensure!(!other.is_empty());
    ensure!(other.iter().all(|l| l["correlation_id"] != correlation_id));
    Ok(())
}

pub async fn throttled_requests_are_counted_in_the_metrics() -> anyhow::Result<()> {
    // A table of 50 writes/s and 400 records in the default (batch) mode:
    // throttled statements inside successful batch answers.
    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    seed_day(&table, "cb", "2025-11-20", 400).await?;
    let (proxy, dynamodb) = FaultProxy::start(&table.endpoint).await?;
    proxy.write_capacity.store(50, Ordering::SeqCst);
    let run = run_lambda(Stub::new(sample_event()), &dynamodb, &table.name, &[]).await?;
    ensure!(run.response == Some(json!({"batchItemFailures": []})));
    let (requests, writes) = (
        proxy.throttled.load(Ordering::SeqCst),
        proxy.throttled_writes(),
    );
    ensure!(writes > 0, "the proxy throttled nothing");
    let documents = run.metric_documents();
    ensure!(documents.len() == 1);
    ensure!(
        documents[0]["ThrottledRequests"] == requests && documents[0]["ThrottledWrites"] == writes,
        "the proxy throttled {writes} writes in {requests} requests: {}",
        documents[0]
    );
    ensure!(documents[0]["ChargebacksUpdated"] == 400);
    Ok(())
}

/// With a dead-letter queue and a failure topic (moto): the poison is
/// parked, the SQS and SNS calls are subsegments of their own, and the
/// metrics count a dead-letter, not a hand-back.
pub async fn dead_letter_and_notice_calls_are_traced_and_counted(
    moto: String,
) -> anyhow::Result<()> {
    use crate::dead_letters::{create_queue, local_sdk, unique};

    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    seed_day(&table, "cb", "2025-11-20", 2).await?;
    let sdk = local_sdk(&moto);
    let dlq = create_queue(&aws_sdk_sqs::Client::new(&sdk), &[]).await?;
    let topic = aws_sdk_sns::Client::new(&sdk)
        .create_topic()
        .name(unique("failures"))
        .send()
        .await?
        .topic_arn
        .ok_or_else(|| anyhow!("no topic arn"))?;
    let (daemon, address) = Daemon::start().await?;
    let run = run_lambda(
        Stub::new(kafka_event(&[
            Message::json(
                0,
                10,
                &consolidation("2025-11-20", 2, 4, "2025-11-20T06:30:00"),
            ),
            poison_at(1, 5),
        ])),
        &table.endpoint,
        &table.name,
        &[
            ("AWS_XRAY_DAEMON_ADDRESS", &address),
            ("DLQ_URL", &dlq),
            ("FAILURE_TOPIC_ARN", &topic),
            ("AWS_ENDPOINT_URL_SQS", &moto),
            ("AWS_ENDPOINT_URL_SNS", &moto),
        ],
    )
    .await?;
    ensure!(
        run.response == Some(json!({"batchItemFailures": []})),
        "the poison is parked, not handed back: {:?}",
        run.response
    );
    let metrics = run.metric_documents();
    ensure!(metrics.len() == 1);
    for (name, value) in [
        ("MessagesProcessed", 1),
        ("MessagesDeadLettered", 1),
        ("MessagesRetried", 0),
        ("MessagesFailed", 1),
    ] {
        ensure!(metrics[0][name] == value, "{name}: {}", metrics[0]);
    }

    let documents = daemon.documents().await?;
    let calls: Vec<&Value> = documents
        .iter()
        .filter(|d| d["namespace"] == "aws")
        .collect();
    let named = |service: &str| calls.iter().copied().find(|d| d["name"] == service);
    let send = named("SQS").ok_or_else(|| anyhow!("no SQS subsegment: {documents:#?}"))?;
    let publish = named("SNS").ok_or_else(|| anyhow!("no SNS subsegment: {documents:#?}"))?;
    let poison = documents
        .iter()
        .find(|d| d["name"] == "message" && d["id"] == send["parent_id"])
        .ok_or_else(|| anyhow!("the send hangs under the poison's message: {send}"))?;
    ensure!(
        poison["annotations"]["outcome"] == "dead_lettered",
        "{poison}"
    );
    let invocation = documents
        .iter()
        .find(|d| d["name"] == "invocation")
        .ok_or_else(|| anyhow!("no invocation"))?;
    ensure!(
        publish["parent_id"] == invocation["id"],
        "one notice per invocation: {publish}"
    );
    for call in [send, publish] {
        ensure!(call.get("fault").is_none_or(|f| f == false), "{call}");
    }
    Ok(())
}
