//! What `LOG_LEVEL=DEBUG` and `TRACE` add to the real binary's output, and
//! how much: DEBUG grows with pages read (never with records), TRACE with
//! records, retries and limit changes stay bounded by time under
//! throttling, and INFO is the same whatever the level. Lines are counted by
//! level and message on the binary's stdout, as CloudWatch would get them.

use std::collections::{BTreeMap, BTreeSet};

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, ensure};
use consolidation_updater::local::{IndexProjection, TableShape};
use libtest_mimic::Trial;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::task::JoinHandle;

use crate::Backends;
use crate::proxy::FaultProxy;
use crate::runtime_api::*;
use crate::support::*;

pub fn tests(_: &Backends) -> Vec<Trial> {
    trials!("debug_level";
        debug_grows_with_pages_and_trace_with_records_while_info_stays_the_same,
        under_throttling_retry_and_rate_lines_stay_bounded_and_count_every_retry,
        each_debug_and_trace_event_appears_when_its_situation_occurs,
        the_demo_shows_the_engines_expected_client_errors_only_at_trace,
    )
}

const DATE: &str = "2025-11-20";
const EXECUTION_TIME: &str = "2025-11-20T06:30:00";
/// The fan-out the bounds are measured on.
const RECORDS: usize = 20_000;
/// Keys per page the adapter asks for (`KEYS_PER_PAGE` in the adapter).
const KEYS_PER_PAGE: usize = 2_000;
/// Present in the environment, never in the logs.
const SECRET: &str = "s3cr3t-never-logged-9f2c";

/// What one run of the binary as Lambda wrote.
struct Run {
    lines: Vec<Value>,
    stdout: String,
    elapsed: Duration,
}

impl Run {
    /// Log lines (not the EMF document).
    fn log_lines(&self) -> impl Iterator<Item = &Value> {
        self.lines.iter().filter(|l| l.get("_aws").is_none())
    }

    fn at_level(&self, level: &str) -> Vec<&Value> {
        self.log_lines().filter(|l| l["level"] == level).collect()
    }

    fn said(&self, message: &str) -> Vec<&Value> {
        self.log_lines()
            .filter(|l| l["message"] == message)
            .collect()
    }

    /// Lines per level.
    fn by_level(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for line in self.log_lines() {
            *counts
                .entry(line["level"].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
        }
        counts
    }

    /// Lines per message at `level`.
    fn messages_at(&self, level: &str) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for line in self.at_level(level) {
            *counts
                .entry(line["message"].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
        }
        counts
    }

    /// The INFO, WARN and ERROR lines as content: level, message and field
    /// names, in order (values such as timestamps and durations differ
    /// from run to run).
    fn info_content(&self) -> Vec<(String, String, BTreeSet<String>)> {
        self.log_lines()
            .filter(|l| {
                ["INFO", "WARN", "ERROR"]
                    .iter()
                    .any(|level| l["level"] == *level)
            })
            .map(|l| {
                (
                    l["level"].as_str().unwrap_or_default().to_owned(),
                    l["message"].as_str().unwrap_or_default().to_owned(),
                    l.as_object()
                        .map(|o| o.keys().cloned().collect())
                        .unwrap_or_default(),
                )
            })
            .collect()
    }

    fn sum(&self, message: &str, field: &str) -> u64 {
        self.said(message)
            .iter()
            .map(|l| l[field].as_u64().unwrap_or(0))
            .sum()
    }
}

/// Reads a child's pipe to its end, meanwhile: a TRACE run writes megabytes,
/// more than a pipe holds.
fn drain(pipe: Option<impl AsyncRead + Unpin + Send + 'static>) -> JoinHandle<String> {
    tokio::spawn(async move {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text).await;
        }
        text
    })
}

/// Runs the binary as Lambda for one invocation of `event` against DynamoDB
/// at `dynamodb`, with `env` on top of Lambda's environment.
async fn run_lambda(
    event: Value,
    dynamodb: &str,
    table: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<Run> {
    let stub = Stub::new(event);
    let api = start_stub(stub.clone()).await?;
    let mut command = lambda_command(&api, dynamodb, table);
    command.envs(env.iter().copied());
    let started = Instant::now();
    let mut child = command.spawn()?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let answered = tokio::time::timeout(Duration::from_secs(240), async {
        loop {
            let changed = stub.changed.notified();
            if stub.seen.lock().await.response.is_some() {
                return;
            }
            changed.await;
        }
    })
    .await;
    let elapsed = started.elapsed();
    let _ = child.start_kill();
    let _ = child.wait().await;
    let (stdout, stderr) = (stdout.await?, stderr.await?);
    answered.map_err(|_| anyhow!("no response within 240 s; stderr: {stderr}"))?;
    let response = stub.seen.lock().await.response.clone();
    ensure!(
        response == Some(json!({"batchItemFailures": []})),
        "response {response:?}; stderr: {stderr}"
    );
    let lines = stdout
        .lines()
        .map(|line| serde_json::from_str(line).with_context(|| format!("not JSON: {line}")))
        .collect::<anyhow::Result<_>>()?;
    Ok(Run {
        lines,
        stdout,
        elapsed,
    })
}

fn event(sequence: u64, total: u64) -> Value {
    kafka_event(&[Message::json(
        0,
        10 + sequence as i64,
        &consolidation(DATE, sequence, total, EXECUTION_TIME),
    )])
}

/// `count` chargebacks of the day, all created before the cutoff.
async fn seed_day(table: &TestTable, count: usize) -> anyhow::Result<()> {
    table
        .seed((0..count).map(|i| {
            chargeback(
                &format!("cb-{i:05}"),
                DATE,
                &format!(
                    "{DATE}T0{}:{:02}:{:02}.000Z",
                    i / 3600 % 6,
                    i / 60 % 60,
                    i % 60
                ),
            )
        }))
        .await?;
    Ok(())
}

/// The bound test. One message, 20,000 records, fault-free, three times
/// (a newer execution each time, so that every run writes every record):
/// - INFO, DEBUG and TRACE print the same INFO lines;
/// - DEBUG adds exactly 2 lines at cold start, 2 for the message and one per
///   page read: at most 2 + 2 + (records / 2,000 + 1) = 15 here;
/// - TRACE adds exactly one line per record written.
pub async fn debug_grows_with_pages_and_trace_with_records_while_info_stays_the_same()
-> anyhow::Result<()> {
    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    seed_day(&table, RECORDS).await?;
    // No progress lines: their number depends on the machine's speed.
    let quiet = ("PROGRESS_LOG_INTERVAL_SECONDS", "900");
    let mut runs = Vec::new();
    for (sequence, level) in [(1, "INFO"), (2, "DEBUG"), (3, "TRACE")] {
        let run = run_lambda(
            event(sequence, 4),
            &table.endpoint,
            &table.name,
            &[quiet, ("LOG_LEVEL", level)],
        )
        .await?;
        ensure!(
            run.said("applied").first().map(|l| &l["written"]) == Some(&json!(RECORDS)),
            "{level}: every record written: {:?}",
            run.said("applied")
        );
        eprintln!(
            "{RECORDS} records at LOG_LEVEL={level}: lines by level {:?} in {:.1} s",
            run.by_level(),
            run.elapsed.as_secs_f64()
        );
        runs.push(run);
    }
    let [info, debug, trace] = &runs[..] else {
        unreachable!("three runs")
    };

    ensure!(
        info.at_level("DEBUG").is_empty() && info.at_level("TRACE").is_empty(),
        "INFO adds nothing: {:?}",
        info.by_level()
    );
    ensure!(
        debug.info_content() == info.info_content() && trace.info_content() == info.info_content(),
        "the INFO lines are the same at every level:\nINFO {:#?}\nDEBUG {:#?}\nTRACE {:#?}",
        info.info_content(),
        debug.info_content(),
        trace.info_content()
    );

    let pages = debug.said("key page read").len();
    let bound = 2 + 2 + (RECORDS / KEYS_PER_PAGE + 1);
    ensure!(
        debug.sum("key page read", "keys") == RECORDS as u64,
        "the pages hold every key once"
    );
    ensure!(
        (RECORDS / KEYS_PER_PAGE..=RECORDS / KEYS_PER_PAGE + 1).contains(&pages),
        "{pages} pages of up to {KEYS_PER_PAGE} keys"
    );
    let expected: BTreeMap<String, usize> = [
        ("settings in effect", 1),
        ("table layout", 1),
        ("decoded event", 1),
        ("selection", 1),
        ("key page read", pages),
    ]
    .into_iter()
    .map(|(m, n)| (m.to_owned(), n))
    .collect();
    ensure!(
        debug.messages_at("DEBUG") == expected,
        "DEBUG lines of a fault-free run: {:?}",
        debug.messages_at("DEBUG")
    );
    let debug_lines = debug.at_level("DEBUG").len();
    ensure!(
        debug_lines <= bound,
        "{debug_lines} DEBUG lines, bound {bound}"
    );
    ensure!(debug.at_level("TRACE").is_empty());

    ensure!(
        trace.messages_at("DEBUG") == expected,
        "TRACE keeps DEBUG's lines: {:?}",
        trace.messages_at("DEBUG")
    );
    ensure!(
        trace.messages_at("TRACE") == BTreeMap::from([("record written".to_owned(), RECORDS)]),
        "one TRACE line per record: {:?}",
        trace.messages_at("TRACE")
    );
    let keys: BTreeSet<&str> = trace
        .said("record written")
        .iter()
        .filter_map(|l| l["key"].as_str())
        .collect();
    ensure!(
        keys.len() == RECORDS,
        "each record once: {} keys",
        keys.len()
    );
    Ok(())
}

/// A 20,000-record fan-out at DEBUG behind a table of 1,500 writes/s, which
/// throttles statements of batches as DynamoDB does. Without a budget there
/// would be one retry line per throttled request; with it, per operation at
/// most one `request retried` line per second of the run (plus one summary
/// per fan-out), and at most one `write rate cut` line per second (plus one
/// summary). Every retry is still counted: the lines' `held_back` fields add
/// up to the requests the proxy throttled. The concurrency limit is not
/// touched by throttling.
pub async fn under_throttling_retry_and_rate_lines_stay_bounded_and_count_every_retry()
-> anyhow::Result<()> {
    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    seed_day(&table, RECORDS).await?;
    let (proxy, dynamodb) = FaultProxy::start(&table.endpoint).await?;
    proxy.write_capacity.store(1_500, Ordering::SeqCst);
    let run = run_lambda(
        event(2, 4),
        &dynamodb,
        &table.name,
        &[
            ("LOG_LEVEL", "DEBUG"),
            ("PROGRESS_LOG_INTERVAL_SECONDS", "900"),
        ],
    )
    .await?;
    let throttled = proxy.throttled.load(Ordering::SeqCst);
    ensure!(throttled > 0, "the proxy throttled nothing");
    ensure!(
        run.said("applied").first().map(|l| &l["written"]) == Some(&json!(RECORDS)),
        "nothing lost to throttling"
    );
    let seconds = run.elapsed.as_secs_f64().ceil() as usize;
    let per_second = seconds + 1;

    let failed = run.said("request failed");
    let retried = run.said("request retried");
    let retry_summaries = run.said("retries held back");
    let operations: BTreeSet<&str> = retried
        .iter()
        .filter_map(|l| l["operation"].as_str())
        .collect();
    ensure!(!retried.is_empty(), "retries are logged: {}", run.stdout);
    ensure!(
        failed.is_empty(),
        "statements are throttled inside answers that succeed: {failed:?}"
    );
    for line in &retried {
        ensure!(line["error_kind"] == "store_throttled", "{line}");
        ensure!(
            line["error_code"] == "ProvisionedThroughputExceeded",
            "{line}"
        );
        ensure!(line["attempt"].as_u64().is_some_and(|a| a >= 1), "{line}");
        ensure!(line["delay_ms"].is_number(), "{line}");
        ensure!(line["held_back"].is_u64(), "{line}");
    }
    for operation in &operations {
        let lines = retried
            .iter()
            .filter(|l| l["operation"] == *operation)
            .count();
        ensure!(
            lines <= per_second,
            "{lines} retry lines of {operation} in a {seconds} s run"
        );
    }
    ensure!(
        retry_summaries.len() <= operations.len(),
        "one summary per operation: {retry_summaries:?}"
    );
    let accounted = retried.len() as u64
        + run.sum("request retried", "held_back")
        + run.sum("retries held back", "held_back");
    ensure!(
        accounted == throttled,
        "every retry is counted: {accounted} in the lines, {throttled} throttled by the proxy"
    );

    let cuts = run.said("write rate cut: DynamoDB throttled writes");
    let cut_summaries = run.said("write rate cuts held back");
    ensure!(!cuts.is_empty(), "the rate's cuts are logged");
    ensure!(
        cuts.len() <= per_second,
        "{} cut lines in {seconds} s",
        cuts.len()
    );
    ensure!(cut_summaries.len() <= 1, "{cut_summaries:?}");
    for line in &cuts {
        let (old, new) = (
            line["old_writes_per_second"].as_u64().unwrap_or(0),
            line["new_writes_per_second"].as_u64().unwrap_or(0),
        );
        ensure!(
            new < old && new * 4 + 1 >= old,
            "a cut, at most to a quarter: {line}"
        );
        ensure!(line["admitted_share"].is_number(), "{line}");
    }
    ensure!(
        run.said("concurrency limit changed").is_empty(),
        "throttling leaves the concurrency limit alone"
    );
    let writes = proxy.throttled_writes();
    let paced = run.said(&format!(
        "writes paced to the table's capacity: {writes} throttled and retried"
    ));
    ensure!(
        paced.len() == 1
            && paced[0]["throttled_writes"] == writes
            && paced[0]["throttled_by_reason"] == format!("unknown={writes}"),
        "one INFO line counts the throttled writes by reason (none given per statement): {paced:?}"
    );

    // The rest of DEBUG still grows with pages only.
    let pages = run.said("key page read").len();
    ensure!(pages <= RECORDS / KEYS_PER_PAGE + 1, "{pages} pages");
    let debug_lines = run.at_level("DEBUG").len();
    // Cold start, the message, the pages; retry lines per operation and cut
    // lines, each at most one a second, and their summaries.
    let bound = 2 + 2 + pages + per_second * (operations.len() + 1) + operations.len() + 1;
    ensure!(
        debug_lines <= bound,
        "{debug_lines} DEBUG lines, bound {bound}"
    );
    eprintln!(
        "{RECORDS} records at 1,500 writes/s at DEBUG ({seconds} s): lines by level {:?}; \
         {throttled} requests throttled, said in {} retry lines + {} summaries; \
         {} cut lines + {} summaries",
        run.by_level(),
        retried.len(),
        retry_summaries.len(),
        cuts.len(),
        cut_summaries.len(),
    );
    Ok(())
}

/// Each DEBUG and TRACE event, in the situation that makes it: the cold
/// start's settings (no secret; the CLI's too) and table layout, a message's decoded event
/// and selection, scan and index pages, the count of records left behind
/// on the last execution, records written, declined by the update's
/// condition (both write modes) and declined on read.
pub async fn each_debug_and_trace_event_appears_when_its_situation_occurs() -> anyhow::Result<()> {
    const SEEDED: usize = 30;
    const LATE: usize = 5;
    // A table without the date index: keys come from a parallel scan.
    let scanned = TestTable::create(
        &Backend::embedded(),
        TableShape {
            index: None,
            ..TableShape::default()
        },
    )
    .await?;
    seed_day(&scanned, SEEDED).await?;
    scanned
        .seed((0..LATE).map(|i| chargeback(&format!("late-{i}"), DATE, "2025-11-20T23:00:00.000Z")))
        .await?;
    let secret = ("AWS_SECRET_ACCESS_KEY", SECRET);
    let trace = ("LOG_LEVEL", "trace");
    let one_by_one = ("WRITE_MODE", "update-item");
    let last = run_lambda(
        event(4, 4),
        &scanned.endpoint,
        &scanned.name,
        &[secret, trace, one_by_one],
    )
    .await?;
    ensure!(
        !last.stdout.contains(SECRET),
        "a secret reached the logs: {}",
        last.stdout
    );
    let one = |run: &Run, message: &str| -> anyhow::Result<Value> {
        let lines = run.said(message);
        ensure!(
            lines.len() == 1,
            "one {message:?} line: {lines:#?} among {:?}; {:?}",
            run.messages_at("DEBUG"),
            run.by_level()
        );
        Ok(lines[0].clone())
    };
    let settings = one(&last, "settings in effect")?;
    for (field, value) in [
        ("table", json!(scanned.name)),
        ("region", json!(REGION)),
        ("log_level", json!("trace")),
        ("date_index", json!(INDEX)),
        ("max_concurrency", json!(64)),
        ("write_mode", json!("update-item")),
        ("deadline_margin_ms", json!(10_000)),
        ("progress_interval_seconds", json!(10)),
        (
            "metrics_namespace",
            json!("POC-Chargeback/ConsolidationUpdater"),
        ),
    ] {
        ensure!(settings[field] == value, "{field}: {settings}");
    }
    ensure!(settings["level"] == "DEBUG" && settings.get("dlq_url").is_none());
    let layout = one(&last, "table layout")?;
    for (field, value) in [
        ("hash_key", json!("chargeback_id")),
        ("key_reader", json!("scan")),
        ("scan_segments", json!(8)),
        ("projects_execution", json!(true)),
        ("index", json!(INDEX)),
    ] {
        ensure!(layout[field] == value, "{field}: {layout}");
    }
    let decoded = one(&last, "decoded event")?;
    let sent = consolidation(DATE, 4, 4, EXECUTION_TIME);
    for field in [
        "partition_date",
        "execution_sequence",
        "total_executions",
        "records_processed",
        "duplicates_removed",
        "output_files",
        "output_format",
        "output_path",
        "completed_at",
        "job_name",
        "event_type",
    ] {
        ensure!(
            decoded[field] == sent[field],
            "{field}: {decoded} vs {sent}"
        );
    }
    ensure!(
        decoded["execution_time"] == "2025-11-20T06:30:00Z",
        "{decoded}"
    );
    let selection = one(&last, "selection")?;
    ensure!(
        selection["created_before"] == "2025-11-20T06:30:01",
        "{selection}"
    );
    ensure!(selection["below_execution"] == 4 && selection["count_left_behind"] == true);
    let pages = last.said("key page read");
    ensure!(pages.iter().all(|p| p["operation"] == "Scan"), "{pages:#?}");
    let segments: BTreeSet<u64> = pages
        .iter()
        .filter(|p| p["last_page"] == true)
        .filter_map(|p| p["segment"].as_u64())
        .collect();
    ensure!(
        segments == (0..8).collect(),
        "each segment read to its end: {pages:#?}"
    );
    ensure!(last.sum("key page read", "keys") == SEEDED as u64);
    ensure!(
        last.sum("count page read", "counted") == LATE as u64,
        "the count of records left behind, page by page: {:#?}",
        last.said("count page read")
    );
    let written = last.said("record written");
    ensure!(written.len() == SEEDED, "{}", written.len());
    ensure!(
        written.iter().all(|l| l["operation"] == "UpdateItem"
            && l["result"] == "written"
            && l["key"]
                .as_str()
                .is_some_and(|k| k.starts_with("chargeback_id=cb-"))),
        "{written:#?}"
    );
    ensure!(last.said("request retried").is_empty());

    // Delivered again: the scan sees every record stamped, nothing is written.
    let again = run_lambda(
        event(4, 4),
        &scanned.endpoint,
        &scanned.name,
        &[trace, one_by_one],
    )
    .await?;
    let declined = again.said("record declined");
    ensure!(
        declined.len() == SEEDED
            && declined
                .iter()
                .all(|l| l["operation"] == "Scan" && l["result"] == "already_applied"),
        "declined on read: {declined:#?}"
    );
    ensure!(again.sum("key page read", "already_applied_on_read") == SEEDED as u64);
    ensure!(again.said("record written").is_empty());

    // The CLI says its settings too.
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/events/sample-msk-event.json");
    let invoked = Command::new(BINARY)
        .args(["invoke", "--event", sample])
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_ENDPOINT_URL_DYNAMODB", &scanned.endpoint)
        .env("DYNAMODB_TABLE_NAME", &scanned.name)
        .env("LOG_FORMAT", "json")
        .env("LOG_LEVEL", "DEBUG")
        .output()
        .await?;
    let logged = String::from_utf8_lossy(&invoked.stderr);
    ensure!(invoked.status.success(), "{logged}");
    let settings: Vec<Value> = logged
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "settings in effect")
        .collect();
    ensure!(
        settings.len() == 1 && settings[0]["table"] == scanned.name.as_str(),
        "invoke says its settings once: {logged}"
    );
    ensure!(
        !logged.contains(SECRET),
        "a secret reached the logs: {logged}"
    );

    // With a keys-only index, a redelivery is declined by the update's
    // condition, in both write modes.
    let indexed = TestTable::create(
        &Backend::embedded(),
        TableShape {
            index: Some(IndexProjection::KeysOnly),
            ..TableShape::default()
        },
    )
    .await?;
    seed_day(&indexed, SEEDED).await?;
    run_lambda(event(2, 4), &indexed.endpoint, &indexed.name, &[]).await?;
    for (mode, operation) in [
        ("update-item", "UpdateItem"),
        ("batch-statement", "BatchExecuteStatement"),
    ] {
        let run = run_lambda(
            event(2, 4),
            &indexed.endpoint,
            &indexed.name,
            &[trace, ("WRITE_MODE", mode)],
        )
        .await?;
        let layout = one(&run, "table layout")?;
        ensure!(
            layout["key_reader"] == "index"
                && layout["index_projection"] == "KEYS_ONLY"
                && layout["projects_execution"] == false,
            "{layout}"
        );
        let page = one(&run, "key page read")?;
        ensure!(
            page["operation"] == "Query"
                && page["keys"] == SEEDED
                && page["first_key"] == "chargeback_id=cb-00000"
                && page["last_key"] == format!("chargeback_id=cb-{:05}", SEEDED - 1).as_str()
                && page["last_page"] == true
                && page["read_ms"].is_number(),
            "{page}"
        );
        let declined = run.said("record declined");
        ensure!(
            declined.len() == SEEDED
                && declined
                    .iter()
                    .all(|l| l["operation"] == operation && l["result"] == "already_applied"),
            "{mode}: {declined:#?}"
        );
    }
    Ok(())
}

/// The demo runs the embedded engine in the same process, whose own log
/// says WARN for every client error it answers: the demo's "is the table
/// there?" and, on a second run, each declined condition. None of them is
/// printed at the default level (nor at DEBUG); at TRACE they are.
pub async fn the_demo_shows_the_engines_expected_client_errors_only_at_trace() -> anyhow::Result<()>
{
    let db = std::env::temp_dir().join(format!(
        "consolidation-updater-demo-{}-{}.sqlite",
        std::process::id(),
        fastrand::u64(..)
    ));
    let demo = |level: &'static str| {
        let db = db.clone();
        async move {
            let output = Command::new(BINARY)
                // No run ledger: the second run must meet the stamped records.
                .args(["demo", "--no-ledger", "--records", "200", "--db"])
                .arg(&db)
                .env_remove("AWS_LAMBDA_RUNTIME_API")
                .env("AWS_REGION", REGION)
                .env("WRITE_MODE", "update-item")
                .env("LOG_LEVEL", level)
                .output()
                .await?;
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            ensure!(output.status.success(), "{stdout}\n{stderr}");
            anyhow::Ok((stdout, stderr))
        }
    };
    let result = async {
        // A new table (the engine answers DescribeTable with a 400 first)...
        let (first, first_log) = demo("INFO").await?;
        ensure!(first.contains("180 of 2025-11-20 created up to"), "{first}");
        // ...then every record declined by the update's condition (400 each).
        let (second, second_log) = demo("DEBUG").await?;
        ensure!(second.contains("not seeding it again"), "{second}");
        ensure!(
            second.contains("already at this execution or a newer one: 180"),
            "{second}"
        );
        for log in [&first_log, &second_log] {
            ensure!(
                !log.contains("error response"),
                "the engine's expected answers look like failures: {log}"
            );
        }
        let (_, traced) = demo("TRACE").await?;
        let engine_lines = traced
            .lines()
            .filter(|l| l.contains("error response") && l.contains("UpdateItem"))
            .count();
        ensure!(
            engine_lines == 180,
            "at TRACE the engine's answers are there, one per declined record: {engine_lines}"
        );
        Ok(())
    }
    .await;
    let _ = std::fs::remove_file(&db);
    result
}
