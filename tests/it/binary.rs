//! The real binary: as a Lambda custom runtime against a runtime-API stub,
//! and as the `invoke` CLI. DynamoDB is the embedded engine on loopback.

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, ensure};
use consolidation_updater::local::TableShape;
use libtest_mimic::Trial;
use serde_json::Value;
use tokio::process::Command;

use crate::Backends;
use crate::runtime_api::*;
use crate::support::*;

pub fn tests(_: &Backends) -> Vec<Trial> {
    trials!("binary";
        the_runtime_polls_handles_a_kafka_event_and_posts_the_response,
        a_table_without_the_date_index_is_warned_about_once_at_cold_start,
        a_payload_that_is_not_a_kafka_event_fails_the_invocation,
        every_event_source_fixture_is_stamped_by_the_runtime,
        an_invalid_setting_is_reported_to_the_init_error_endpoint,
        cold_start_is_measured_to_the_first_poll,
        the_invoke_command_prints_the_response_and_logs_to_stderr,
        an_unreachable_dynamodb_hands_every_message_back,
        backfill_stamps_a_day_by_hand_and_force_never_regresses_a_newer_execution,
    )
}

pub async fn the_runtime_polls_handles_a_kafka_event_and_posts_the_response() -> anyhow::Result<()>
{
    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    let (response, stdout, stderr) = one_lambda_invocation(&table).await?;
    ensure!(
        response == Some(serde_json::json!({"batchItemFailures": []})),
        "response {response:?}; stderr: {stderr}"
    );
    ensure!(
        table
            .execution_of(&chargeback("cb-1", "2025-11-20", ""))
            .await?
            == Some(2)
    );

    // Every stdout line is one JSON object with timestamp, level and message.
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).with_context(|| format!("not JSON: {line}")))
        .collect::<anyhow::Result<_>>()?;
    ensure!(!lines.is_empty(), "no log output");
    // Log lines, that is; the metrics document has a shape of its own.
    for line in lines.iter().filter(|l| l.get("_aws").is_none()) {
        for field in ["timestamp", "level", "message"] {
            ensure!(line.get(field).is_some(), "no {field} in {line}");
        }
    }
    ensure!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("DLQ_URL is not set"))),
        "a WARN at cold start says DLQ_URL is unset: {stdout}"
    );
    let in_invocation: Vec<&Value> = lines
        .iter()
        .filter(|l| l.get("request_id").is_some())
        .collect();
    ensure!(in_invocation.iter().all(|l| l["request_id"] == REQUEST_ID));
    let applied = lines
        .iter()
        .find(|l| l["message"] == "applied")
        .ok_or_else(|| anyhow!("no 'applied' line in {stdout}"))?;
    for field in [
        "request_id",
        "topic",
        "partition",
        "offset",
        "partition_date",
        "execution_sequence",
        "correlation_id",
    ] {
        ensure!(applied.get(field).is_some(), "no {field} in {applied}");
    }
    ensure!(
        applied["correlation_id"] == "poc-chargeback-dev-chargebacks-consolidation:2025-11-20:2"
    );
    let metrics = lines
        .iter()
        .filter_map(|l| l["message"].as_str())
        .filter(|m| {
            m.contains("METRICS: messages_processed=1, messages_failed=0, chargebacks_updated=1")
        })
        .count();
    ensure!(
        metrics == 1,
        "expected one METRICS line, found {metrics}: {stdout}"
    );
    Ok(())
}

pub async fn a_table_without_the_date_index_is_warned_about_once_at_cold_start()
-> anyhow::Result<()> {
    let shape = TableShape {
        index: None,
        ..TableShape::default()
    };
    let table = TestTable::create(&Backend::embedded(), shape).await?;
    let (response, stdout, stderr) = one_lambda_invocation(&table).await?;
    ensure!(
        response == Some(serde_json::json!({"batchItemFailures": []})),
        "response {response:?}; stderr: {stderr}"
    );
    let lines: Vec<Value> = stdout
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let warnings: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            l["level"] == "WARN"
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("no date index") && m.contains("slow"))
        })
        .map(|(i, _)| i)
        .collect();
    ensure!(
        warnings.len() == 1,
        "expected one WARN, got {warnings:?}: {stdout}"
    );
    let ready = lines
        .iter()
        .position(|l| l["message"] == "ready for invocations")
        .ok_or_else(|| anyhow!("no ready line"))?;
    ensure!(
        warnings[0] < ready,
        "the WARN comes at cold start, before the first invocation"
    );
    ensure!(
        table
            .execution_of(&chargeback("cb-1", "2025-11-20", ""))
            .await?
            == Some(2)
    );
    Ok(())
}

/// Each fixture under `events/`, whatever its `eventSource` says, is stamped
/// by the real runtime; only an unexpected or missing source is warned about,
/// once.
pub async fn every_event_source_fixture_is_stamped_by_the_runtime() -> anyhow::Result<()> {
    for (fixture, execution, warned) in [
        ("sample-msk-event.json", 2, false),
        ("self-managed-kafka-event.json", 4, false),
        ("self-managed-kafka-aws-prefix-event.json", 3, false),
        ("unexpected-event-source-event.json", 2, true),
        ("no-event-source-event.json", 2, true),
    ] {
        let path = format!("{}/events/{fixture}", env!("CARGO_MANIFEST_DIR"));
        let event: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
        let (response, stdout, stderr) =
            one_lambda_invocation_with(std::path::Path::new(BINARY), &table, event).await?;
        ensure!(
            response == Some(serde_json::json!({"batchItemFailures": []})),
            "{fixture}: response {response:?}; stderr: {stderr}"
        );
        ensure!(
            table
                .execution_of(&chargeback("cb-1", "2025-11-20", ""))
                .await?
                == Some(execution),
            "{fixture}: the record is stamped with execution {execution}"
        );
        let warnings = stdout
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|l| {
                l["level"] == "WARN"
                    && l["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("eventSource"))
            })
            .count();
        ensure!(
            warnings == usize::from(warned),
            "{fixture}: {warnings} WARN lines about the event source: {stdout}"
        );
    }
    Ok(())
}

pub async fn a_payload_that_is_not_a_kafka_event_fails_the_invocation() -> anyhow::Result<()> {
    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    let stub =
        Stub::new(serde_json::json!({"Records": [{"eventSource": "aws:sqs", "body": "{}"}]}));
    let api = start_stub(stub.clone()).await?;
    let child = lambda_command(&api, &table.endpoint, &table.name).spawn()?;
    wait_for(&stub, |s| s.invocation_error.is_some()).await?;
    stop(child).await?;
    let error = stub
        .seen
        .lock()
        .await
        .invocation_error
        .clone()
        .unwrap_or_default();
    ensure!(error["errorType"] == "InvalidKafkaEvent", "{error}");
    ensure!(
        error["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("not a Lambda Kafka event")),
        "{error}"
    );
    Ok(())
}

pub async fn an_invalid_setting_is_reported_to_the_init_error_endpoint() -> anyhow::Result<()> {
    let stub = Stub::new(sample_event());
    let api = start_stub(stub.clone()).await?;
    let mut command = lambda_command(&api, "http://127.0.0.1:9", "chargebacks");
    command.env("MAX_CONCURRENCY", "lots");
    let output = tokio::time::timeout(Duration::from_secs(30), command.output()).await??;
    ensure!(!output.status.success(), "the process should exit non-zero");
    let seen = stub.seen.lock().await;
    let (error_type, body) = seen
        .init_error
        .clone()
        .ok_or_else(|| anyhow!("no init error posted"))?;
    ensure!(error_type.as_deref() == Some("Runtime.InvalidConfiguration"));
    ensure!(
        body["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("MAX_CONCURRENCY")),
        "{body}"
    );
    ensure!(
        seen.polls == 0,
        "it must not poll for events after a failed init"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        stdout.contains("MAX_CONCURRENCY"),
        "the log names the variable: {stdout}"
    );
    Ok(())
}

/// Cold start: process start to the first runtime-API poll, with the table
/// described at init. Printed (median of several runs), not asserted: speed is
/// measured, not tested.
pub async fn cold_start_is_measured_to_the_first_poll() -> anyhow::Result<()> {
    const RUNS: usize = 7;
    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    let mut samples = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let stub = Stub::new(sample_event());
        let api = start_stub(stub.clone()).await?;
        let spawned = Instant::now();
        let child = lambda_command(&api, &table.endpoint, &table.name).spawn()?;
        wait_for(&stub, |s| s.first_poll.is_some()).await?;
        let first_poll = stub
            .seen
            .lock()
            .await
            .first_poll
            .ok_or_else(|| anyhow!("no poll"))?;
        samples.push(first_poll.duration_since(spawned));
        stop(child).await?;
    }
    samples.sort();
    let median = samples[RUNS / 2];
    eprintln!(
        "cold start (process start to first runtime-API poll, DescribeTable included, local, no TLS): \
         median {:.1} ms over {RUNS} runs (min {:.1} ms, max {:.1} ms)",
        median.as_secs_f64() * 1e3,
        samples[0].as_secs_f64() * 1e3,
        samples[RUNS - 1].as_secs_f64() * 1e3
    );
    Ok(())
}

pub async fn the_invoke_command_prints_the_response_and_logs_to_stderr() -> anyhow::Result<()> {
    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    table
        .seed(std::iter::once(chargeback(
            "cb-9",
            "2025-11-20",
            "2025-11-20T18:00:00.000Z",
        )))
        .await?;
    let event = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/events/self-managed-kafka-event.json"
    );
    let output = Command::new(BINARY)
        .args(["invoke", "--event", event])
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("AWS_ENDPOINT_URL_DYNAMODB", &table.endpoint)
        .env("DYNAMODB_TABLE_NAME", &table.name)
        .env("LOG_FORMAT", "json")
        .output()
        .await?;
    let stdout = String::from_utf8(output.stdout)?;
    let stderr = String::from_utf8(output.stderr)?;
    ensure!(output.status.success(), "{stderr}");
    let response: Value =
        serde_json::from_str(stdout.trim()).with_context(|| format!("stdout: {stdout}"))?;
    ensure!(
        response == serde_json::json!({"batchItemFailures": []}),
        "{response}"
    );
    ensure!(
        table
            .execution_of(&chargeback("cb-9", "2025-11-20", ""))
            .await?
            == Some(4)
    );
    ensure!(
        stderr.contains("\"correlation_id\":\"glue-run-7f3a\""),
        "the header's correlation id (signed bytes) is used: {stderr}"
    );
    Ok(())
}

/// With DynamoDB unreachable every message is handed back, promptly, and the
/// invocation itself still answers.
pub async fn an_unreachable_dynamodb_hands_every_message_back() -> anyhow::Result<()> {
    let closed = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let endpoint = format!("http://{}", closed.local_addr()?);
    drop(closed);
    let sdk = consolidation_updater::app::load_sdk_config(Some(REGION)).await;
    let client = consolidation_updater::app::local_client(&sdk, &endpoint);
    let (handler, parked) = handler_on(client, "chargebacks");
    let messages = good_messages([(0, 10), (0, 11), (1, 20), (1, 21)]);
    let started = Instant::now();
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        handler.handle(
            kafka_event(&messages),
            &consolidation_updater::app::Invocation::unbounded("unreachable"),
        ),
    )
    .await??;
    let elapsed = started.elapsed();
    let listed = listed_offsets(&outcome);
    ensure!(listed == [10, 11, 20, 21], "listed {listed:?}");
    ensure!(
        outcome.summary().messages_dead_lettered == 0 && parked.count() == 0,
        "nothing dead-lettered"
    );
    ensure!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    eprintln!(
        "unreachable DynamoDB: 4 messages handed back in {:.2} s",
        elapsed.as_secs_f64()
    );
    Ok(())
}

/// Runs `consolidation-updater ARGS` against `table`; returns stdout.
async fn cli(table: &TestTable, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(BINARY)
        .args(args)
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("AWS_ENDPOINT_URL_DYNAMODB", &table.endpoint)
        .env("DYNAMODB_TABLE_NAME", &table.name)
        .output()
        .await?;
    let stdout = String::from_utf8(output.stdout)?;
    ensure!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout)
}

pub async fn backfill_stamps_a_day_by_hand_and_force_never_regresses_a_newer_execution()
-> anyhow::Result<()> {
    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    let early = chargeback("cb-a", "2025-11-20", "2025-11-20T01:00:00.000Z");
    let late = chargeback("cb-b", "2025-11-20", "2025-11-20T23:00:00.000Z");
    let newer = chargeback("cb-c", "2025-11-20", "2025-11-20T00:30:00.000Z");
    let other_day = chargeback("cb-d", "2025-11-21", "2025-11-21T01:00:00.000Z");
    table
        .seed(
            [
                early.clone(),
                late.clone(),
                newer.clone(),
                other_day.clone(),
            ]
            .into_iter(),
        )
        .await?;
    // cb-c is already at execution 4 of the day, from the last run.
    let last = consolidation("2025-11-20", 4, 4, "2025-11-20T00:45:00");
    table
        .invoke(kafka_event(&[Message::json(0, 1, &last)]))
        .await?;
    ensure!(table.execution_of(&newer).await? == Some(4));

    let base = [
        "backfill",
        "--partition-date",
        "2025-11-20",
        "--execution",
        "3",
        "--total",
        "4",
        "--output-path",
        "s3://bucket/rerun/day=20",
        "--format",
        "parquet",
        "--job-name",
        "manual",
    ];
    let dry = cli(&table, &[&base[..], &["--dry-run"]].concat()).await?;
    ensure!(
        dry.contains("2 would be stamped") && dry.contains("1 already"),
        "{dry}"
    );
    ensure!(
        table.execution_of(&early).await?.is_none(),
        "a dry run writes nothing"
    );

    let real = cli(&table, &base).await?;
    ensure!(real.contains("2 stamped"), "{real}");
    ensure!(table.execution_of(&early).await? == Some(3));
    ensure!(
        table.execution_of(&late).await? == Some(3),
        "the whole day by default"
    );
    ensure!(
        table.execution_of(&newer).await? == Some(4),
        "never regressed"
    );
    ensure!(table.execution_of(&other_day).await?.is_none());

    let again = cli(&table, &base).await?;
    ensure!(again.contains("0 stamped"), "{again}");
    let mut forced_args = base.to_vec();
    forced_args[8] = "s3://bucket/rerun-2/day=20";
    forced_args.push("--force");
    let forced = cli(&table, &forced_args).await?;
    ensure!(forced.contains("2 stamped"), "{forced}");
    let item = table
        .item(&early)
        .await?
        .ok_or_else(|| anyhow!("vanished"))?;
    ensure!(item.get("consolidation_s3_path").and_then(text) == Some("s3://bucket/rerun-2/day=20"));
    ensure!(
        table.execution_of(&newer).await? == Some(4),
        "force never regresses a newer execution"
    );

    let invalid = Command::new(BINARY)
        .args([
            "backfill",
            "--partition-date",
            "2025-02-30",
            "--execution",
            "1",
            "--total",
            "1",
            "--output-path",
            "s3://b/p",
            "--format",
            "csv",
            "--job-name",
            "j",
        ])
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .output()
        .await?;
    ensure!(!invalid.status.success());
    ensure!(String::from_utf8_lossy(&invalid.stderr).contains("partition_date"));
    Ok(())
}
