//! The runbook's CloudWatch Logs Insights queries (`docs/operations.md`), run
//! over what the real binary writes to stdout in Lambda mode.
//!
//! Each query is taken from the runbook by its `####` heading (the fenced
//! block with the `insights` info string that follows it), so the runbook and
//! this test cannot drift apart. It is run by a small evaluator of the part of
//! the Logs Insights query language the runbook uses, following the rules AWS
//! documents; anything else (another command, function, operator or regex
//! construct) is an error rather than a guess, so the runbook cannot use
//! syntax this test does not check. Rules and where they come from:
//!
//! - Query syntax, `like` / `=~` (substring with quotes, regex with slashes,
//!   both case-sensitive, `(?i)` for case-insensitive), `ispresent`,
//!   `count(*)` vs `count(field)`, `sum`, `count_distinct`, `sort`, `limit`,
//!   `as` aliases, `#` comments:
//!   <https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/CWL_QuerySyntax.html>
//!   and <https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/CWL_QuerySyntax-Filter.html>
//! - `stats ... by`, `bin()` and its units:
//!   <https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/CWL_QuerySyntax-Stats.html>
//! - `parse` in glob mode (one alias per `*`; an event that does not match
//!   stays in the results without the extracted fields):
//!   <https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/CWL_QuerySyntax-Parse.html>
//! - Discovered fields: `@message` is the raw event, `@timestamp`,
//!   `@logStream`; JSON fields by name, nested ones with `.`, array items by
//!   index, at most 100 fields per JSON event:
//!   <https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/CWL_AnalyzeLogData-discoverable-fields.html>
//! - JSON booleans are discovered as 1 and 0 (seen by AWS's own Powertools
//!   maintainers): <https://github.com/aws-powertools/powertools-lambda-dotnet/issues/667>
//!
//! Where the documentation is silent the evaluator picks the strict reading
//! and says so at the spot (a comparison with an absent field is false,
//! grouping by an absent field is refused, ...); the runbook's queries avoid
//! depending on those cases.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail, ensure};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use consolidation_updater::domain::dead_letter::DeadLetter;
use consolidation_updater::store::dynamodb::provision::TableShape;
use serde_json::{Value, json};
use tokio::sync::{Mutex, Notify};

use crate::dead_letters::local_sdk;
use crate::runtime_api::{FACADE_SEGMENT, fresh_trace_id, lambda_command, stop};
use crate::support::*;

const RUNBOOK: &str = include_str!("../../docs/operations.md");

// ---------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------

/// The queries of the runbook, by heading. Each one is checked below; a query
/// added to the runbook without a check fails here.
const RUNBOOK_QUERIES: [&str; 11] = [
    "Processing summary",
    "Metrics documents",
    "Error analysis",
    "Errors by kind",
    "Update failures",
    "Start-up failures",
    "One message's story",
    "Hand-backs",
    "Persisting hand-backs",
    "Dead-lettered messages",
    "Fan-out progress",
];

const STORY_ID: &str = "poc-chargeback-dev-chargebacks-consolidation:2025-11-20:2";
const BAD_JSON: &str = "{oops";

/// Three execution environments (three log streams) of one function:
/// A is invoked twice (cold, then warm with Lambda's redelivery of what A
/// handed back), B runs against a table that does not exist, C refuses a
/// setting and is never invoked. No `DLQ_URL`, so the poison is handed back.
pub async fn runbook_queries_count_what_the_binary_logged() -> anyhow::Result<()> {
    let queries = runbook_queries()?;
    let names: BTreeSet<&str> = queries.keys().map(String::as_str).collect();
    ensure!(
        names == RUNBOOK_QUERIES.into_iter().collect(),
        "the runbook's queries {names:?} are not the ones this test checks {RUNBOOK_QUERIES:?}"
    );
    evaluator_follows_the_documented_rules()?;

    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    table
        .seed(
            [
                chargeback("cb-20-a", "2025-11-20", "2025-11-20T01:00:00.000Z"),
                chargeback("cb-20-b", "2025-11-20", "2025-11-20T02:00:00.000Z"),
                chargeback("cb-20-c", "2025-11-20", "2025-11-20T06:30:00.999Z"),
                chargeback("cb-20-late", "2025-11-20", "2025-11-20T07:00:00.000Z"),
                chargeback("cb-21-a", "2025-11-21", "2025-11-21T01:00:00.000Z"),
                chargeback("cb-22-a", "2025-11-22", "2025-11-22T01:00:00.000Z"),
                chargeback("cb-22-b", "2025-11-22", "2025-11-22T03:00:00.000Z"),
                chargeback("cb-22-late", "2025-11-22", "2025-11-22T20:00:00.000Z"),
            ]
            .into_iter(),
        )
        .await?;
    let poison = || Message {
        partition: 1,
        offset: 5,
        value: BAD_JSON.into(),
    };
    let blocked = || {
        Message::json(
            1,
            6,
            &consolidation("2025-11-21", 1, 4, "2025-11-21T06:30:00"),
        )
    };
    let cold = kafka_event(&[
        // Writes cb-20-a, -b, -c (created before 06:30:01); cb-20-late is the next run's.
        Message::json(
            0,
            10,
            &consolidation("2025-11-20", 2, 4, "2025-11-20T06:30:00"),
        ),
        Message::json(
            0,
            11,
            &json!({"event_type": "file_uploaded", "partition_date": "2025-11-20"}),
        ),
        poison(),
        blocked(),
        // The day's last run: writes cb-22-a and -b, and warns about cb-22-late.
        Message::json(
            2,
            3,
            &consolidation("2025-11-22", 4, 4, "2025-11-22T06:30:00"),
        ),
    ]);
    // Lambda delivers partition 1 again from the first offset handed back.
    let warm = kafka_event(&[poison(), blocked()]);
    let missing_table = kafka_event(&[Message::json(
        3,
        40,
        &consolidation("2025-11-23", 1, 2, "2025-11-23T06:30:00"),
    )]);

    let a = run_environment(
        &table.endpoint,
        &table.name,
        vec![("req-cold".into(), cold), ("req-warm".into(), warm)],
        &[],
    )
    .await
    .context("environment A")?;
    let b = run_environment(
        &table.endpoint,
        "chargebacks-that-do-not-exist",
        vec![("req-missing-table".into(), missing_table)],
        &[],
    )
    .await
    .context("environment B")?;
    let c = refused_start(&table).await.context("environment C")?;

    let handed_back = |response: &Value| -> Vec<(String, i64)> {
        response["batchItemFailures"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|i| {
                        (
                            i["itemIdentifier"]["partition"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                            i["itemIdentifier"]["offset"].as_i64().unwrap_or(-1),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let p = |n: i64| format!("{TOPIC}-{n}");
    for (request_id, response) in &a.responses {
        ensure!(
            handed_back(response) == [(p(1), 5), (p(1), 6)],
            "{request_id}: {response}"
        );
    }
    ensure!(
        handed_back(&b.responses[0].1) == [(p(3), 40)],
        "{:?}",
        b.responses
    );
    ensure!(table.execution_of(&chargeback("cb-20-a", "", "")).await? == Some(2));
    ensure!(
        table
            .execution_of(&chargeback("cb-21-a", "", ""))
            .await?
            .is_none()
    );

    let group = LogGroup::from_streams(&[
        ("2026/11/29/[$LATEST]0a0a0a0a0a0a0a0a", &a.stdout),
        ("2026/11/29/[$LATEST]0b0b0b0b0b0b0b0b", &b.stdout),
        ("2026/11/29/[$LATEST]0c0c0c0c0c0c0c0c", &c),
    ])?;
    let run = |name: &str| -> anyhow::Result<Results> {
        let text = queries
            .get(name)
            .ok_or_else(|| anyhow!("no query {name:?} in the runbook"))?;
        group
            .run(text)
            .with_context(|| format!("runbook query {name:?}"))
    };
    let dump = || group.dump();

    // Processing summary: the seed's three sums, and the other counts.
    let summary = run("Processing summary")?;
    let totals = summary.totals(&[
        "processed",
        "failed",
        "updated",
        "skipped",
        "dead_lettered",
        "handed_back",
        "invocations",
    ])?;
    ensure!(
        totals == [2.0, 5.0, 5.0, 1.0, 0.0, 5.0, 3.0],
        "processing summary {totals:?}\n{}",
        dump()
    );
    summary.ensure_hourly_bins()?;

    // The EMF documents say the same, and count the cold starts.
    let metrics = run("Metrics documents")?;
    let emf = metrics.totals(&[
        "processed",
        "failed",
        "updated",
        "dead_lettered",
        "handed_back",
        "throttled",
        "cold_starts",
        "invocations",
    ])?;
    ensure!(
        emf == [2.0, 5.0, 5.0, 0.0, 5.0, 0.0, 2.0, 3.0],
        "metrics documents {emf:?}"
    );
    metrics.ensure_hourly_bins()?;

    // Error analysis: ERROR = the poison twice, the missing table, the refused
    // setting; WARN = DLQ_URL unset (A, B), the day's last run leaving a
    // record behind (A), the table not described at start-up (B); and, on a
    // machine slow enough, DynamoDB not answering within the start-up wait.
    let errors = run("Error analysis")?;
    let by_level = errors.sum_by("level", "lines")?;
    let slow = group.raw_lines_whose_message_starts_with("DescribeTable did not answer") as f64;
    ensure!(
        by_level == BTreeMap::from([("ERROR".into(), 4.0), ("WARN".into(), 4.0 + slow)]),
        "error analysis {by_level:?}\n{}",
        dump()
    );
    errors.ensure_hourly_bins()?;

    let kinds = run("Errors by kind")?;
    ensure!(
        kinds.sum_by("error_kind", "lines")? == BTreeMap::from([("not_json".into(), 2.0)]),
        "errors by kind {:?}",
        kinds.rows
    );

    let failures = run("Update failures")?;
    ensure!(
        failures.rows.len() == 1,
        "update failures {:?}",
        failures.rows
    );
    let failure = &failures.rows[0];
    ensure!(
        failure.text("partition") == Some(p(3)) && failure.num("offset") == Some(40.0),
        "{failure:?}"
    );
    ensure!(
        failure
            .text("error")
            .is_some_and(|e| e.contains("ResourceNotFound"))
            && failure
                .text("@logStream")
                .is_some_and(|s| s.ends_with("0b0b0b0b0b0b0b0b")),
        "{failure:?}"
    );

    let refused = run("Start-up failures")?;
    ensure!(
        refused.rows.len() == 1
            && refused.rows[0].text("variable").as_deref() == Some("MAX_CONCURRENCY"),
        "start-up failures {:?}",
        refused.rows
    );

    // One message's story, received to outcome, in order.
    let story = run("One message's story")?;
    let messages: Vec<String> = story
        .rows
        .iter()
        .map(|r| r.text("message").unwrap_or_default())
        .collect();
    ensure!(
        messages
            == [
                "message received",
                "stamping the day's chargebacks",
                "applied",
                "message outcome: applied",
            ],
        "story of {STORY_ID}: {messages:?}"
    );
    ensure!(story.rows[2].num("written") == Some(3.0));
    ensure!(story.rows[3].text("outcome").as_deref() == Some("applied"));
    ensure!(
        story
            .rows
            .iter()
            .all(|r| r.text("request_id").as_deref() == Some("req-cold"))
    );
    story.ensure_sorted_by_time()?;
    ensure!(
        story.columns.first().map(String::as_str) == Some("@timestamp"),
        "{:?}",
        story.columns
    );

    // Hand-backs: every delivery of each message handed back, with why.
    let hand_backs = run("Hand-backs")?;
    let rows: Vec<(String, String, i64, String)> = hand_backs
        .rows
        .iter()
        .map(|r| {
            (
                r.text("request_id").unwrap_or_default(),
                r.text("partition").unwrap_or_default(),
                r.num("offset").unwrap_or(-1.0) as i64,
                r.text("outcome").unwrap_or_default(),
            )
        })
        .collect();
    let expected = [
        ("req-cold", p(1), 5, "invalid"),
        ("req-cold", p(1), 6, "blocked"),
        ("req-warm", p(1), 5, "invalid"),
        ("req-warm", p(1), 6, "blocked"),
        ("req-missing-table", p(3), 40, "failed"),
    ]
    .map(|(r, p, o, w)| (r.to_owned(), p, o, w.to_owned()));
    ensure!(
        rows.iter().collect::<BTreeSet<_>>() == expected.iter().collect(),
        "hand-backs {rows:?}"
    );
    hand_backs.ensure_sorted_by_time()?;

    let persisting = run("Persisting hand-backs")?;
    let counts: BTreeMap<(String, i64), (f64, f64)> = persisting
        .rows
        .iter()
        .map(|r| {
            (
                (
                    r.text("partition").unwrap_or_default(),
                    r.num("offset").unwrap_or(-1.0) as i64,
                ),
                (
                    r.num("deliveries").unwrap_or(0.0),
                    r.num("invocations").unwrap_or(0.0),
                ),
            )
        })
        .collect();
    ensure!(
        counts
            == BTreeMap::from([
                ((p(1), 5), (2.0, 2.0)),
                ((p(1), 6), (2.0, 2.0)),
                ((p(3), 40), (1.0, 1.0)),
            ]),
        "persisting hand-backs {counts:?}"
    );
    ensure!(
        persisting.rows.last().and_then(|r| r.num("deliveries")) == Some(1.0),
        "sorted by deliveries, most first: {:?}",
        persisting.rows
    );

    // Nothing dead-lettered without a queue.
    let parked = run("Dead-lettered messages")?;
    ensure!(parked.rows.is_empty(), "dead-lettered {:?}", parked.rows);

    // Progress lines depend on speed (a fan-out of three records ends long
    // before the first tick): the query finds exactly the ones written.
    let progress = run("Fan-out progress")?;
    ensure!(
        progress.rows.len() == group.raw_lines_whose_message_starts_with("fan-out progress: "),
        "fan-out progress {:?}",
        progress.rows
    );

    // The seed's glob over @message, and why the runbook reads fields instead.
    let seed = group.run(
        "filter message like \"METRICS: \" \
         | parse @message \"messages_processed=*, messages_failed=*, chargebacks_updated=*\" \
           as processed, failed, updated \
         | display processed, failed, updated",
    )?;
    ensure!(seed.rows.len() == 3);
    for row in &seed.rows {
        let updated = row.text("updated").unwrap_or_default();
        ensure!(
            updated.contains("\",\"") && updated.ends_with('}'),
            "the last * takes the rest of the JSON line: {updated}"
        );
        ensure!(row.num("processed").is_some() && row.num("failed").is_some());
    }
    let on_the_field = group.run(
        "filter message like \"METRICS: \" \
         | parse message \"messages_processed=*, messages_failed=*, chargebacks_updated=*\" \
           as processed, failed, updated \
         | stats sum(processed) as processed, sum(failed) as failed, sum(updated) as updated",
    )?;
    ensure!(
        on_the_field.totals(&["processed", "failed", "updated"])? == [2.0, 5.0, 5.0],
        "the glob on the message field alone: {:?}",
        on_the_field.rows
    );

    // Lambda's own START/END/REPORT lines were in the group all along.
    let platform = group
        .run("filter @message like /^(START|END|REPORT) RequestId: / | stats count(*) as n")?;
    ensure!(platform.totals(&["n"])? == [9.0], "{:?}", platform.rows);

    // Rules checked on the real lines.
    let case = group.run("filter message like \"metrics: \" | stats count(*) as n")?;
    ensure!(
        case.rows.is_empty() || case.totals(&["n"])? == [0.0],
        "like is case-sensitive"
    );
    let insensitive = group.run("filter message like /(?i)^metrics: / | stats count(*) as n")?;
    ensure!(insensitive.totals(&["n"])? == [3.0]);
    let counted = group.run(
        "stats count(*) as lines, count(error_kind) as with_kind, count(handed_back) as outcomes",
    )?;
    ensure!(
        counted.totals(&["lines", "with_kind", "outcomes"])?
            // error_kind: the two ERROR lines and the outcome lines of the
            // three messages that did not apply; every outcome line has handed_back.
            == [group.events.len() as f64, 5.0, 8.0],
        "count(field) counts only lines that have it: {:?}",
        counted.rows
    );
    let not_handed_back = group.run("filter handed_back = 0 | stats count(*) as n")?;
    ensure!(
        not_handed_back.totals(&["n"])? == [3.0],
        "handed_back = 0 matches only outcome lines (2 applied, 1 skipped)"
    );
    let as_text = group.run("filter handed_back = \"true\"")?;
    ensure!(as_text.rows.is_empty(), "booleans are 1 and 0, not text");
    Ok(())
}

/// With `DLQ_URL` at a moto queue, the dead-letter query finds exactly the
/// parked messages, with their kinds, and agrees with the queue and the metrics.
pub async fn the_dead_letter_query_finds_each_parked_message(moto: String) -> anyhow::Result<()> {
    let queries = runbook_queries()?;
    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    table
        .seed(
            [
                chargeback("cb-20-a", "2025-11-20", "2025-11-20T01:00:00.000Z"),
                chargeback("cb-21-a", "2025-11-21", "2025-11-21T01:00:00.000Z"),
            ]
            .into_iter(),
        )
        .await?;
    let sqs = aws_sdk_sqs::Client::new(&local_sdk(&moto));
    let queue_url = sqs
        .create_queue()
        .queue_name(format!(
            "insights-dlq-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_micros()
        ))
        .send()
        .await?
        .queue_url
        .ok_or_else(|| anyhow!("moto returned no queue url"))?;

    let good = consolidation("2025-11-20", 1, 4, "2025-11-20T06:30:00");
    let mut wrong_date = good.clone();
    wrong_date["partition_date"] = json!("2025-02-30");
    let mut wrong_format = good.clone();
    wrong_format["output_format"] = json!("xml");
    let mut event = kafka_event(&[
        Message::json(0, 20, &good),
        Message {
            partition: 0,
            offset: 21,
            value: BAD_JSON.into(),
        },
        Message::json(0, 22, &wrong_date),
        Message::json(0, 23, &wrong_format),
        Message::json(1, 7, &json!({})),
        Message::json(
            1,
            8,
            &consolidation("2025-11-21", 2, 4, "2025-11-21T06:30:00"),
        ),
    ]);
    // Not base64 at all: the record's value exactly as a broken producer's.
    event["records"][format!("{TOPIC}-1")][0]["value"] = json!("***");
    let expected: BTreeSet<(String, i64, String)> = [
        (0, 21, "not_json"),
        (0, 22, "invalid_partition_date"),
        (0, 23, "unsupported_output_format"),
        (1, 7, "not_base64"),
    ]
    .into_iter()
    .map(|(p, o, k)| (format!("{TOPIC}-{p}"), o, k.to_owned()))
    .collect();

    let env = run_environment(
        &table.endpoint,
        &table.name,
        vec![("req-dlq".into(), event)],
        &[("DLQ_URL", &queue_url), ("AWS_ENDPOINT_URL_SQS", &moto)],
    )
    .await?;
    ensure!(
        env.responses[0].1 == json!({"batchItemFailures": []}),
        "nothing handed back: {:?}",
        env.responses
    );
    let group = LogGroup::from_streams(&[("2026/11/29/[$LATEST]0d0d0d0d0d0d0d0d", &env.stdout)])?;
    let run = |name: &str| -> anyhow::Result<Results> {
        let text = queries
            .get(name)
            .ok_or_else(|| anyhow!("no query {name:?} in the runbook"))?;
        group
            .run(text)
            .with_context(|| format!("runbook query {name:?}"))
    };

    let parked = run("Dead-lettered messages")?;
    let found: BTreeSet<(String, i64, String)> = parked
        .rows
        .iter()
        .map(|r| {
            (
                r.text("partition").unwrap_or_default(),
                r.num("offset").unwrap_or(-1.0) as i64,
                r.text("error_kind").unwrap_or_default(),
            )
        })
        .collect();
    ensure!(
        parked.rows.len() == expected.len() && found == expected,
        "dead-lettered {:?}\n{}",
        parked.rows,
        group.dump()
    );
    ensure!(
        parked
            .rows
            .iter()
            .all(|r| r.text("request_id").as_deref() == Some("req-dlq")),
        "{:?}",
        parked.rows
    );
    parked.ensure_sorted_by_time()?;

    // The queue holds exactly those messages.
    let mut in_queue = BTreeSet::new();
    loop {
        let batch = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .send()
            .await?
            .messages
            .unwrap_or_default();
        if batch.is_empty() {
            break;
        }
        for message in batch {
            let letter: DeadLetter = serde_json::from_str(message.body().unwrap_or_default())?;
            in_queue.insert((letter.batch_partition, letter.offset, letter.error_kind));
            if let Some(handle) = message.receipt_handle() {
                sqs.delete_message()
                    .queue_url(&queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await?;
            }
        }
    }
    ensure!(in_queue == expected, "in the queue: {in_queue:?}");

    // ... and the counts agree: log lines, METRICS line, EMF document.
    let outcomes = group.run("filter outcome = \"dead_lettered\" | stats count(*) as n")?;
    ensure!(outcomes.totals(&["n"])? == [4.0]);
    let summary = run("Processing summary")?;
    ensure!(
        summary.totals(&["processed", "dead_lettered", "failed", "handed_back"])?
            == [2.0, 4.0, 4.0, 0.0],
        "{:?}",
        summary.rows
    );
    let metrics = run("Metrics documents")?;
    ensure!(
        metrics.totals(&["processed", "dead_lettered", "failed", "handed_back"])?
            == [2.0, 4.0, 4.0, 0.0],
        "{:?}",
        metrics.rows
    );
    let kinds = run("Errors by kind")?;
    ensure!(
        kinds.sum_by("error_kind", "lines")?
            == expected
                .iter()
                .map(|(_, _, kind)| (kind.clone(), 1.0))
                .collect(),
        "{:?}",
        kinds.rows
    );
    ensure!(run("Hand-backs")?.rows.is_empty());
    Ok(())
}

/// Rules of the evaluator on hand-made events and patterns, next to the
/// runbook's checks on real ones.
fn evaluator_follows_the_documented_rules() -> anyhow::Result<()> {
    let group = LogGroup::from_lines(
        "test",
        &[
            r#"{"timestamp":"2026-01-01T10:00:00.000Z","level":"INFO","message":"Alpha beta","n":2,"flag":true,"nested":{"a":{"b":"deep"}},"list":[{"id":"x"},{"id":"y"}]}"#,
            r#"{"timestamp":"2026-01-01T10:59:59.999Z","level":"INFO","message":"alpha","n":"3","flag":false}"#,
            r#"{"timestamp":"2026-01-01T11:00:00.000Z","level":"WARN","message":"gamma"}"#,
            "plain text line, not JSON",
        ],
    )?;
    let n = |query: &str| -> anyhow::Result<usize> { Ok(group.run(query)?.rows.len()) };
    ensure!(
        n("filter message like \"alpha\"")? == 1,
        "case-sensitive substring"
    );
    ensure!(n("filter message like /^alpha$/")? == 1, "anchored regex");
    ensure!(n("filter message =~ /(?i)ALPHA/")? == 2, "(?i)");
    ensure!(
        n("filter message like \"lph\"")? == 2,
        "substring, not word"
    );
    ensure!(
        n("filter nested.a.b = \"deep\" and list.1.id = \"y\"")? == 1,
        "flattened"
    );
    ensure!(
        n("filter flag = 1")? == 1 && n("filter flag = 0")? == 1,
        "booleans"
    );
    ensure!(
        n("filter n > 2")? == 1,
        "a numeric string compares as a number"
    );
    ensure!(
        n("filter n = 9 or not ispresent(n)")? == 2,
        "absent: false, not: true"
    );
    ensure!(n("filter level in [\"WARN\", \"ERROR\"]")? == 1);
    ensure!(
        n("filter @message like \"plain text\"")? == 1,
        "@message is the raw line"
    );
    let sums = group.run("stats count(*) as all, count(n) as with_n, sum(n) as total")?;
    ensure!(sums.totals(&["all", "with_n", "total"])? == [4.0, 2.0, 5.0]);
    let bins = group.run("filter ispresent(level) | stats count(*) as c by bin(1h)")?;
    let per_bin: Vec<(String, f64)> = bins
        .rows
        .iter()
        .map(|r| {
            (
                r.text("bin(1h)").unwrap_or_default(),
                r.num("c").unwrap_or(0.0),
            )
        })
        .collect();
    ensure!(
        per_bin
            == [
                ("2026-01-01 10:00:00.000".to_owned(), 2.0),
                ("2026-01-01 11:00:00.000".to_owned(), 1.0)
            ],
        "{per_bin:?}"
    );
    ensure!(
        group.run("stats count(*) by level").is_err(),
        "grouping by a field some events lack is refused"
    );
    ensure!(group.run("filter message like /a{2,/").is_err());
    ensure!(
        group.run("dedup message").is_err(),
        "unknown commands are refused"
    );
    let parsed = group.run("parse message \"* beta\" as first | filter ispresent(first)")?;
    ensure!(parsed.rows.len() == 1 && parsed.rows[0].text("first").as_deref() == Some("Alpha"));
    let kept = group.run("parse message \"nothing * here\" as x | stats count(*) as c")?;
    ensure!(
        kept.totals(&["c"])? == [4.0],
        "events that do not match a parse stay"
    );

    for (pattern, text, expected) in [
        ("a.c", "xabcx", true),
        ("^a.c$", "xabcx", false),
        ("colou?r", "color", true),
        ("^(ab)+$", "ababab", true),
        ("^(ab)+$", "ababa", false),
        ("^a{2,3}$", "aaaa", false),
        ("^a{2,3}$", "aaa", true),
        ("[0-9]+ms", "took 12ms", true),
        ("[^a-z]", "abc", false),
        ("\\d\\s\\w", "1 x", true),
        ("^(START|END) RequestId", "END RequestId: x", true),
        ("^x.*?y$", "xaaay", true),
        ("a\\.b", "axb", false),
        ("; dead-lettered$", "refused; dead-lettered", true),
    ] {
        let regex = Regex::new(pattern).map_err(|e| anyhow!("{pattern}: {e}"))?;
        ensure!(
            regex.is_match(text) == expected,
            "/{pattern}/ on {text:?} should be {expected}"
        );
    }
    for bad in ["(ab", "a)", "*a", "\\b", "[a-", "(?=a)"] {
        ensure!(Regex::new(bad).is_err(), "/{bad}/ must be refused");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Running the binary as Lambda runs it: one process per execution
// environment, fed any number of invocations by a runtime-API stub.
// ---------------------------------------------------------------------------

struct Environment {
    /// (request id, response body) per invocation, in order.
    responses: Vec<(String, Value)>,
    stdout: String,
}

#[derive(Default)]
struct Invocations {
    pending: VecDeque<(String, Value)>,
    responses: Vec<(String, Value)>,
}

#[derive(Clone, Default)]
struct RuntimeApi {
    invocations: Arc<Mutex<Invocations>>,
    changed: Arc<Notify>,
}

async fn next_invocation(State(api): State<RuntimeApi>) -> impl IntoResponse {
    let next = api.invocations.lock().await.pending.pop_front();
    let Some((request_id, event)) = next else {
        // Nothing more to deliver: the poll waits until the process is stopped.
        std::future::pending::<()>().await;
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    };
    let deadline = chrono::Utc::now().timestamp_millis() + 60_000;
    Ok((
        [
            ("Lambda-Runtime-Aws-Request-Id", request_id),
            ("Lambda-Runtime-Deadline-Ms", deadline.to_string()),
            (
                "Lambda-Runtime-Invoked-Function-Arn",
                "arn:aws:lambda:sa-east-1:123456789012:function:consolidation-updater".to_owned(),
            ),
            (
                "Lambda-Runtime-Trace-Id",
                format!(
                    "Root={};Parent={FACADE_SEGMENT};Sampled=1",
                    fresh_trace_id()
                ),
            ),
        ],
        event.to_string(),
    ))
}

async fn invocation_response(
    State(api): State<RuntimeApi>,
    Path(request_id): Path<String>,
    body: String,
) -> StatusCode {
    let body = serde_json::from_str(&body).unwrap_or(Value::Null);
    api.invocations
        .lock()
        .await
        .responses
        .push((request_id, body));
    api.changed.notify_waiters();
    StatusCode::ACCEPTED
}

async fn start_runtime_api(api: RuntimeApi) -> anyhow::Result<String> {
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next_invocation))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(invocation_response),
        )
        .route(
            "/2018-06-01/runtime/init/error",
            post(|| async { StatusCode::ACCEPTED }),
        )
        .with_state(api);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let address = listener.local_addr()?.to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(address)
}

/// Starts the binary, delivers `invocations` one after the other, and stops it
/// once every one is answered.
async fn run_environment(
    dynamodb: &str,
    table: &str,
    invocations: Vec<(String, Value)>,
    env: &[(&str, &str)],
) -> anyhow::Result<Environment> {
    let expected = invocations.len();
    let api = RuntimeApi::default();
    api.invocations.lock().await.pending.extend(invocations);
    let address = start_runtime_api(api.clone()).await?;
    let mut command = lambda_command(&address, dynamodb, table);
    command.envs(env.iter().copied());
    let child = command.spawn()?;
    let answered = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let changed = api.changed.notified();
            if api.invocations.lock().await.responses.len() == expected {
                return;
            }
            changed.await;
        }
    })
    .await;
    let (stdout, stderr) = stop(child).await?;
    answered.map_err(|_| anyhow!("not every invocation was answered within 60 s: {stderr}"))?;
    let responses = api.invocations.lock().await.responses.clone();
    Ok(Environment { responses, stdout })
}

/// An environment whose start-up fails on a setting: its stdout.
async fn refused_start(table: &TestTable) -> anyhow::Result<String> {
    let address = start_runtime_api(RuntimeApi::default()).await?;
    let mut command = lambda_command(&address, &table.endpoint, &table.name);
    command.env("MAX_CONCURRENCY", "lots").stdin(Stdio::null());
    let output = tokio::time::timeout(Duration::from_secs(30), command.output()).await??;
    ensure!(!output.status.success(), "the start-up must fail");
    Ok(String::from_utf8(output.stdout)?)
}

// ---------------------------------------------------------------------------
// The runbook's queries.
// ---------------------------------------------------------------------------

/// Each ```insights block of the runbook, by the `####` heading before it.
fn runbook_queries() -> anyhow::Result<BTreeMap<String, String>> {
    let mut queries = BTreeMap::new();
    let mut heading: Option<String> = None;
    let mut lines = RUNBOOK.lines();
    while let Some(line) = lines.next() {
        if let Some(fence) = line.trim_start().strip_prefix("```") {
            let mut body = String::new();
            loop {
                let inner = lines
                    .next()
                    .ok_or_else(|| anyhow!("a code block that never ends"))?;
                if inner.trim_start().starts_with("```") {
                    break;
                }
                body.push_str(inner);
                body.push('\n');
            }
            if fence.trim() == "insights" {
                let name = heading
                    .take()
                    .ok_or_else(|| anyhow!("an insights block without a #### heading:\n{body}"))?;
                ensure!(
                    queries.insert(name.clone(), body).is_none(),
                    "two queries named {name:?}"
                );
            }
        } else if let Some(name) = line.strip_prefix("#### ") {
            heading = Some(name.trim().to_owned());
        } else if line.starts_with('#') {
            heading = None;
        }
    }
    Ok(queries)
}

// ---------------------------------------------------------------------------
// Log events as Logs Insights sees them.
// ---------------------------------------------------------------------------

/// A field's value. JSON numbers (and booleans, as 1 and 0) are numbers;
/// everything else is text.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Num(f64),
    Text(String),
}

impl Val {
    /// Text that reads as a number counts as one in arithmetic and ordering
    /// (the seed's `sum()` over `parse`d text relies on it).
    fn number(&self) -> Option<f64> {
        match self {
            Val::Num(n) => Some(*n),
            Val::Text(t) => t.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        }
    }

    fn text(&self) -> String {
        match self {
            Val::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => format!("{}", *n as i64),
            Val::Num(n) => n.to_string(),
            Val::Text(t) => t.clone(),
        }
    }
}

/// One log event: its discovered fields, `@`-fields included.
#[derive(Debug, Clone, Default)]
struct Event(BTreeMap<String, Val>);

impl Event {
    fn get(&self, field: &str) -> Option<&Val> {
        self.0.get(field)
    }

    fn num(&self, field: &str) -> Option<f64> {
        self.get(field).and_then(Val::number)
    }

    fn text(&self, field: &str) -> Option<String> {
        self.get(field).map(Val::text)
    }
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
struct LogGroup {
    events: Vec<Event>,
}

impl LogGroup {
    /// Each stream's stdout, with the `START`/`END`/`REPORT` lines Lambda adds
    /// around each invocation (in its default text log format).
    fn from_streams(streams: &[(&str, &str)]) -> anyhow::Result<Self> {
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

    fn from_lines(stream: &str, lines: &[&str]) -> anyhow::Result<Self> {
        let mut events = Vec::with_capacity(lines.len());
        let mut previous = 0;
        for line in lines {
            let event = discover(line, stream, previous)?;
            previous = event.num("@timestamp").unwrap_or(0.0) as i64;
            events.push(event);
        }
        Ok(Self { events })
    }

    fn run(&self, query: &str) -> anyhow::Result<Results> {
        Query::parse(query)?.run(&self.events)
    }

    fn raw_lines_whose_message_starts_with(&self, prefix: &str) -> usize {
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

    fn dump(&self) -> String {
        self.events
            .iter()
            .filter_map(|e| e.text("@message"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A query's result: rows of named values, and the columns to show.
#[derive(Debug)]
struct Results {
    columns: Vec<String>,
    rows: Vec<Event>,
}

impl Results {
    /// The sum of each column over every row (every `bin()` of a summary).
    fn totals(&self, columns: &[&str]) -> anyhow::Result<Vec<f64>> {
        columns
            .iter()
            .map(|c| {
                self.rows.iter().try_fold(0.0, |sum, row| {
                    row.num(c)
                        .map(|n| sum + n)
                        .ok_or_else(|| anyhow!("no number in column {c} of {row:?}"))
                })
            })
            .collect()
    }

    /// `value` summed per distinct `key` (over every `bin()`).
    fn sum_by(&self, key: &str, value: &str) -> anyhow::Result<BTreeMap<String, f64>> {
        let mut sums = BTreeMap::new();
        for row in &self.rows {
            let k = row
                .text(key)
                .ok_or_else(|| anyhow!("no {key} in {row:?}"))?;
            let v = row
                .num(value)
                .ok_or_else(|| anyhow!("no {value} in {row:?}"))?;
            *sums.entry(k).or_insert(0.0) += v;
        }
        Ok(sums)
    }

    fn ensure_hourly_bins(&self) -> anyhow::Result<()> {
        for row in &self.rows {
            let bin = row.text("bin(1h)").unwrap_or_default();
            ensure!(bin.ends_with(":00:00.000"), "not an hour: {bin:?}");
        }
        Ok(())
    }

    fn ensure_sorted_by_time(&self) -> anyhow::Result<()> {
        let times: Vec<f64> = self
            .rows
            .iter()
            .map(|r| r.num("@timestamp").unwrap_or(f64::NAN))
            .collect();
        ensure!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "not in time order: {times:?}"
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The query language subset.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// A field name, keyword, function name or period (`1h`); backticked
    /// names arrive here without their backticks.
    Word(String),
    Text(String),
    Regex(String),
    Number(f64),
    Symbol(&'static str),
    Pipe,
}

fn tokenize(query: &str) -> anyhow::Result<Vec<Token>> {
    let chars: Vec<char> = query.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    // Other characters need backticks, as the documentation says.
    let is_word = |c: char| c.is_alphanumeric() || matches!(c, '_' | '@' | '.');
    while i < chars.len() {
        let c = chars[i];
        match c {
            _ if c.is_whitespace() => i += 1,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '|' => {
                tokens.push(Token::Pipe);
                i += 1;
            }
            '"' | '\'' => {
                let mut text = String::new();
                i += 1;
                loop {
                    let ch = *chars.get(i).ok_or_else(|| anyhow!("unterminated string"))?;
                    i += 1;
                    match ch {
                        '\\' => {
                            text.push(*chars.get(i).ok_or_else(|| anyhow!("dangling \\"))?);
                            i += 1;
                        }
                        _ if ch == c => break,
                        _ => text.push(ch),
                    }
                }
                tokens.push(Token::Text(text));
            }
            '/' => {
                // Kept as written (escapes included) for the regex parser.
                let mut pattern = String::new();
                i += 1;
                loop {
                    let ch = *chars.get(i).ok_or_else(|| anyhow!("unterminated regex"))?;
                    i += 1;
                    match ch {
                        '\\' => {
                            pattern.push('\\');
                            pattern.push(*chars.get(i).ok_or_else(|| anyhow!("dangling \\"))?);
                            i += 1;
                        }
                        '/' => break,
                        _ => pattern.push(ch),
                    }
                }
                tokens.push(Token::Regex(pattern));
            }
            '`' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&ch| ch == '`')
                    .ok_or_else(|| anyhow!("unterminated backtick"))?;
                tokens.push(Token::Word(chars[i + 1..i + 1 + end].iter().collect()));
                i += end + 2;
            }
            _ if c.is_ascii_digit() => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                if i < chars.len() && chars[i].is_alphabetic() {
                    while i < chars.len() && chars[i].is_alphabetic() {
                        i += 1;
                    }
                    tokens.push(Token::Word(chars[start..i].iter().collect()));
                } else {
                    let text: String = chars[start..i].iter().collect();
                    tokens.push(Token::Number(text.parse()?));
                }
            }
            _ if c.is_alphabetic() || c == '@' || c == '_' => {
                let start = i;
                while i < chars.len() && is_word(chars[i]) {
                    i += 1;
                }
                tokens.push(Token::Word(chars[start..i].iter().collect()));
            }
            _ => {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                let symbol = ["!=", "<=", ">=", "=~"]
                    .into_iter()
                    .find(|s| *s == two)
                    .or_else(|| {
                        ["(", ")", ",", "[", "]", "=", "<", ">", "*"]
                            .into_iter()
                            .find(|s| s.starts_with(c))
                    })
                    .ok_or_else(|| anyhow!("unexpected {c:?} in the query"))?;
                tokens.push(Token::Symbol(symbol));
                i += symbol.len();
            }
        }
    }
    Ok(tokens)
}

#[derive(Debug)]
enum Operand {
    Field(String),
    Literal(Val),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Comparison {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug)]
enum Match {
    Substring(String),
    Pattern(Regex),
}

#[derive(Debug)]
enum Condition {
    Or(Box<Condition>, Box<Condition>),
    And(Box<Condition>, Box<Condition>),
    Not(Box<Condition>),
    IsPresent(String),
    Compare(Operand, Comparison, Operand),
    Like(Operand, Match),
    In(Operand, Vec<Operand>),
}

#[derive(Debug)]
enum Aggregate {
    /// `count(*)` / `count()` when `None`.
    Count(Option<String>),
    CountDistinct(String),
    Sum(String),
    Min(String),
    Max(String),
}

#[derive(Debug)]
enum GroupKey {
    Field(String),
    /// `bin(period)`, in milliseconds.
    Bin(i64),
}

#[derive(Debug)]
enum Command {
    Fields(Vec<String>),
    Display(Vec<String>),
    Filter(Condition),
    Parse {
        field: String,
        literals: Vec<String>,
        names: Vec<String>,
    },
    Stats {
        aggregates: Vec<(Aggregate, String)>,
        by: Vec<(GroupKey, String)>,
    },
    Sort(Vec<(String, bool)>),
    Limit(usize),
}

struct Query(Vec<Command>);

/// The tokens of one command, consumed front to back.
struct Tokens {
    tokens: Vec<Token>,
    at: usize,
}

impl Tokens {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> anyhow::Result<Token> {
        let token = self
            .tokens
            .get(self.at)
            .cloned()
            .ok_or_else(|| anyhow!("the command ends too soon"))?;
        self.at += 1;
        Ok(token)
    }

    fn is_word(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w == word)
    }

    fn eat_word(&mut self, word: &str) -> bool {
        let found = self.is_word(word);
        if found {
            self.at += 1;
        }
        found
    }

    fn eat_symbol(&mut self, symbol: &str) -> bool {
        let found = matches!(self.peek(), Some(Token::Symbol(s)) if *s == symbol);
        if found {
            self.at += 1;
        }
        found
    }

    fn expect_symbol(&mut self, symbol: &str) -> anyhow::Result<()> {
        if self.eat_symbol(symbol) {
            Ok(())
        } else {
            bail!("expected {symbol:?}, found {:?}", self.peek())
        }
    }

    fn field(&mut self) -> anyhow::Result<String> {
        match self.next()? {
            Token::Word(w) if !is_keyword(&w) => Ok(w),
            other => bail!("expected a field name, found {other:?}"),
        }
    }

    fn done(&self) -> anyhow::Result<()> {
        match self.peek() {
            None => Ok(()),
            Some(extra) => bail!("unexpected {extra:?}"),
        }
    }
}

fn is_keyword(word: &str) -> bool {
    matches!(
        word,
        "and" | "or" | "not" | "like" | "in" | "as" | "by" | "asc" | "desc"
    )
}

impl Query {
    fn parse(text: &str) -> anyhow::Result<Self> {
        let mut commands = Vec::new();
        for tokens in tokenize(text)?.split(|t| *t == Token::Pipe) {
            let mut tokens = Tokens {
                tokens: tokens.to_vec(),
                at: 0,
            };
            let Token::Word(name) = tokens.next()? else {
                bail!("a command must start with its name");
            };
            let command = match name.as_str() {
                "fields" => Command::Fields(field_list(&mut tokens)?),
                "display" => Command::Display(field_list(&mut tokens)?),
                "filter" => Command::Filter(condition(&mut tokens)?),
                "parse" => parse_command(&mut tokens)?,
                "stats" => stats_command(&mut tokens)?,
                "sort" => {
                    let mut keys = Vec::new();
                    loop {
                        let field = tokens.field()?;
                        // The documentation always names the order; so must we.
                        let descending = if tokens.eat_word("desc") {
                            true
                        } else if tokens.eat_word("asc") {
                            false
                        } else {
                            bail!("sort {field}: say asc or desc")
                        };
                        keys.push((field, descending));
                        if !tokens.eat_symbol(",") {
                            break;
                        }
                    }
                    Command::Sort(keys)
                }
                "limit" => match tokens.next()? {
                    Token::Number(n) if n >= 1.0 && n.fract() == 0.0 => Command::Limit(n as usize),
                    other => bail!("limit needs a whole number, found {other:?}"),
                },
                other => bail!("the evaluator does not know the command {other:?}"),
            };
            tokens.done().with_context(|| format!("in `{name}`"))?;
            commands.push(command);
        }
        Ok(Self(commands))
    }

    fn run(&self, events: &[Event]) -> anyhow::Result<Results> {
        let mut rows: Vec<Event> = events.to_vec();
        let mut columns: Option<Vec<String>> = None;
        for command in &self.0 {
            match command {
                // `fields` chooses what is shown; later commands still see
                // every field (the documentation's own examples filter on
                // fields they do not list).
                Command::Fields(names) | Command::Display(names) => columns = Some(names.clone()),
                Command::Filter(condition) => rows.retain(|row| condition.holds(row)),
                Command::Parse {
                    field,
                    literals,
                    names,
                } => {
                    for row in &mut rows {
                        let captures = row.text(field).and_then(|t| glob_captures(literals, &t));
                        for (name, value) in names.iter().zip(captures.unwrap_or_default()) {
                            row.0.insert(name.clone(), Val::Text(value));
                        }
                    }
                }
                Command::Stats { aggregates, by } => {
                    rows = stats(&rows, aggregates, by)?;
                    columns = Some(
                        by.iter()
                            .map(|(_, name)| name.clone())
                            .chain(aggregates.iter().map(|(_, name)| name.clone()))
                            .collect(),
                    );
                }
                Command::Sort(keys) => sort(&mut rows, keys)?,
                Command::Limit(n) => rows.truncate(*n),
            }
        }
        let columns = columns.unwrap_or_else(|| vec!["@timestamp".into(), "@message".into()]);
        Ok(Results { columns, rows })
    }
}

fn field_list(tokens: &mut Tokens) -> anyhow::Result<Vec<String>> {
    let mut names = vec![tokens.field()?];
    while tokens.eat_symbol(",") {
        names.push(tokens.field()?);
    }
    Ok(names)
}

/// `parse [field] "glob" as a, b, ...` (regex mode is not implemented).
fn parse_command(tokens: &mut Tokens) -> anyhow::Result<Command> {
    let field = match tokens.peek() {
        Some(Token::Word(_)) => tokens.field()?,
        _ => "@message".into(),
    };
    let Token::Text(glob) = tokens.next()? else {
        bail!("parse: only glob patterns (in quotes) are implemented");
    };
    ensure!(tokens.eat_word("as"), "parse: as expected");
    let names = field_list(tokens)?;
    let literals: Vec<String> = glob.split('*').map(str::to_owned).collect();
    ensure!(
        literals.len() - 1 == names.len(),
        "parse: {} wildcards but {} names",
        literals.len() - 1,
        names.len()
    );
    Ok(Command::Parse {
        field,
        literals,
        names,
    })
}

/// A glob's captures: the first literal where it first occurs, then each `*`
/// up to the next occurrence of the literal after it; a trailing `*` takes
/// the rest of the text (the documentation's `latency := *` example captures
/// the number at the end of the line, so it cannot be lazy).
fn glob_captures(literals: &[String], text: &str) -> Option<Vec<String>> {
    let (first, rest) = literals.split_first()?;
    let mut at = text.find(first.as_str())? + first.len();
    let mut captures = Vec::new();
    for (i, literal) in rest.iter().enumerate() {
        if i == rest.len() - 1 && literal.is_empty() {
            captures.push(text[at..].to_owned());
            at = text.len();
        } else {
            let found = text[at..].find(literal.as_str())? + at;
            captures.push(text[at..found].to_owned());
            at = found + literal.len();
        }
    }
    Some(captures)
}

fn stats_command(tokens: &mut Tokens) -> anyhow::Result<Command> {
    let mut aggregates = Vec::new();
    loop {
        let Token::Word(function) = tokens.next()? else {
            bail!("stats: an aggregation function expected");
        };
        tokens.expect_symbol("(")?;
        // `count(*)` and `count()` alike.
        let argument =
            if tokens.eat_symbol("*") || matches!(tokens.peek(), Some(Token::Symbol(")"))) {
                None
            } else {
                Some(tokens.field()?)
            };
        tokens.expect_symbol(")")?;
        let shown = format!("{function}({})", argument.as_deref().unwrap_or("*"));
        let needs = |argument: Option<String>| {
            argument.ok_or_else(|| anyhow!("{function}() needs a field"))
        };
        let aggregate = match function.as_str() {
            "count" => Aggregate::Count(argument),
            "count_distinct" => Aggregate::CountDistinct(needs(argument)?),
            "sum" => Aggregate::Sum(needs(argument)?),
            "min" => Aggregate::Min(needs(argument)?),
            "max" => Aggregate::Max(needs(argument)?),
            other => bail!("the evaluator does not know the function {other}()"),
        };
        let name = if tokens.eat_word("as") {
            tokens.field()?
        } else {
            shown
        };
        aggregates.push((aggregate, name));
        if !tokens.eat_symbol(",") {
            break;
        }
    }
    let mut by = Vec::new();
    if tokens.eat_word("by") {
        loop {
            let field = tokens.field()?;
            if field == "bin" && tokens.eat_symbol("(") {
                let Token::Word(period) = tokens.next()? else {
                    bail!("bin() needs a period such as 1h");
                };
                tokens.expect_symbol(")")?;
                by.push((GroupKey::Bin(period_ms(&period)?), format!("bin({period})")));
            } else {
                by.push((GroupKey::Field(field.clone()), field));
            }
            if !tokens.eat_symbol(",") {
                break;
            }
        }
    }
    Ok(Command::Stats { aggregates, by })
}

/// `bin()` periods of fixed length (months, quarters and years are not).
fn period_ms(period: &str) -> anyhow::Result<i64> {
    let digits = period
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| anyhow!("bin({period}): no unit"))?;
    let count: i64 = period[..digits].parse()?;
    let unit = match &period[digits..] {
        "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        "w" | "week" | "weeks" => 7 * 86_400_000,
        other => bail!("bin(): the unit {other:?} is not implemented"),
    };
    ensure!(count > 0, "bin(): a zero period");
    Ok(count * unit)
}

/// `a or b`, `a and b`, `not a`, parentheses, comparisons, `like`, `=~`,
/// `in [...]`, `ispresent(f)`; `and` binds tighter than `or`.
fn condition(tokens: &mut Tokens) -> anyhow::Result<Condition> {
    let mut left = conjunction(tokens)?;
    while tokens.eat_word("or") {
        left = Condition::Or(Box::new(left), Box::new(conjunction(tokens)?));
    }
    Ok(left)
}

fn conjunction(tokens: &mut Tokens) -> anyhow::Result<Condition> {
    let mut left = negation(tokens)?;
    while tokens.eat_word("and") {
        left = Condition::And(Box::new(left), Box::new(negation(tokens)?));
    }
    Ok(left)
}

fn negation(tokens: &mut Tokens) -> anyhow::Result<Condition> {
    if tokens.eat_word("not") {
        return Ok(Condition::Not(Box::new(negation(tokens)?)));
    }
    if tokens.eat_symbol("(") {
        let inner = condition(tokens)?;
        tokens.expect_symbol(")")?;
        return Ok(inner);
    }
    if tokens.is_word("ispresent") {
        tokens.next()?;
        tokens.expect_symbol("(")?;
        let field = tokens.field()?;
        tokens.expect_symbol(")")?;
        return Ok(Condition::IsPresent(field));
    }
    let left = operand(tokens)?;
    if tokens.eat_word("like") || tokens.eat_symbol("=~") {
        return Ok(Condition::Like(left, pattern(tokens)?));
    }
    if tokens.is_word("not") {
        tokens.next()?;
        ensure!(tokens.eat_word("like"), "not like expected");
        return Ok(Condition::Not(Box::new(Condition::Like(
            left,
            pattern(tokens)?,
        ))));
    }
    if tokens.eat_word("in") {
        tokens.expect_symbol("[")?;
        let mut items = vec![operand(tokens)?];
        while tokens.eat_symbol(",") {
            items.push(operand(tokens)?);
        }
        tokens.expect_symbol("]")?;
        return Ok(Condition::In(left, items));
    }
    let comparison = match tokens.next()? {
        Token::Symbol("=") => Comparison::Eq,
        Token::Symbol("!=") => Comparison::Ne,
        Token::Symbol("<") => Comparison::Lt,
        Token::Symbol("<=") => Comparison::Le,
        Token::Symbol(">") => Comparison::Gt,
        Token::Symbol(">=") => Comparison::Ge,
        other => bail!("a comparison expected, found {other:?}"),
    };
    Ok(Condition::Compare(left, comparison, operand(tokens)?))
}

fn operand(tokens: &mut Tokens) -> anyhow::Result<Operand> {
    Ok(match tokens.next()? {
        Token::Word(w) if !is_keyword(&w) => Operand::Field(w),
        Token::Text(t) => Operand::Literal(Val::Text(t)),
        Token::Number(n) => Operand::Literal(Val::Num(n)),
        other => bail!("a field or a value expected, found {other:?}"),
    })
}

fn pattern(tokens: &mut Tokens) -> anyhow::Result<Match> {
    Ok(match tokens.next()? {
        Token::Text(t) => Match::Substring(t),
        Token::Regex(r) => Match::Pattern(Regex::new(&r).map_err(|e| anyhow!("/{r}/: {e}"))?),
        other => bail!("like needs \"text\" or /regex/, found {other:?}"),
    })
}

impl Operand {
    fn value<'a>(&'a self, event: &'a Event) -> Option<&'a Val> {
        match self {
            Operand::Field(name) => event.get(name),
            Operand::Literal(value) => Some(value),
        }
    }
}

/// Numbers compare as numbers (text that reads as a number too); other text
/// compares exactly, case-sensitive, and only for (in)equality: the
/// documentation does not say how text orders, so `<` on text is false.
fn compare(left: &Val, comparison: Comparison, right: &Val) -> bool {
    match (left.number(), right.number()) {
        (Some(a), Some(b)) => match comparison {
            Comparison::Eq => a == b,
            Comparison::Ne => a != b,
            Comparison::Lt => a < b,
            Comparison::Le => a <= b,
            Comparison::Gt => a > b,
            Comparison::Ge => a >= b,
        },
        _ => match comparison {
            Comparison::Eq => left.text() == right.text(),
            Comparison::Ne => left.text() != right.text(),
            _ => false,
        },
    }
}

impl Condition {
    /// A condition on a field the event does not have is false (so `!=` too);
    /// `not` turns that into true.
    fn holds(&self, event: &Event) -> bool {
        match self {
            Condition::Or(a, b) => a.holds(event) || b.holds(event),
            Condition::And(a, b) => a.holds(event) && b.holds(event),
            Condition::Not(inner) => !inner.holds(event),
            Condition::IsPresent(field) => event.get(field).is_some(),
            Condition::Compare(a, comparison, b) => match (a.value(event), b.value(event)) {
                (Some(x), Some(y)) => compare(x, *comparison, y),
                _ => false,
            },
            Condition::Like(operand, matcher) => operand.value(event).is_some_and(|v| {
                let text = v.text();
                match matcher {
                    Match::Substring(s) => text.contains(s.as_str()),
                    Match::Pattern(regex) => regex.is_match(&text),
                }
            }),
            Condition::In(operand, items) => operand.value(event).is_some_and(|v| {
                items.iter().any(|item| {
                    item.value(event)
                        .is_some_and(|w| compare(v, Comparison::Eq, w))
                })
            }),
        }
    }
}

/// Groups in the order they first appear. Grouping by a field an event lacks
/// is refused: the documentation does not say where such events go.
fn stats(
    rows: &[Event],
    aggregates: &[(Aggregate, String)],
    by: &[(GroupKey, String)],
) -> anyhow::Result<Vec<Event>> {
    let mut groups: Vec<(Vec<Val>, Vec<&Event>)> = Vec::new();
    let mut index: HashMap<Vec<String>, usize> = HashMap::new();
    for row in rows {
        let mut key = Vec::with_capacity(by.len());
        for (group, name) in by {
            key.push(match group {
                GroupKey::Field(field) => row.get(field).cloned().ok_or_else(|| {
                    anyhow!("stats by {name}: an event without it (filter with ispresent first)")
                })?,
                GroupKey::Bin(period) => {
                    let at = row.num("@timestamp").unwrap_or(0.0) as i64;
                    let start = at.div_euclid(*period) * period;
                    let time = chrono::DateTime::from_timestamp_millis(start)
                        .ok_or_else(|| anyhow!("bad timestamp {start}"))?;
                    Val::Text(time.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
                }
            });
        }
        let text_key: Vec<String> = key.iter().map(Val::text).collect();
        let at = *index.entry(text_key).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[at].1.push(row);
    }
    let mut out = Vec::with_capacity(groups.len());
    for (key, members) in groups {
        let mut row = Event::default();
        for ((_, name), value) in by.iter().zip(key) {
            row.0.insert(name.clone(), value);
        }
        for (aggregate, name) in aggregates {
            let numbers =
                |field: &str| -> Vec<f64> { members.iter().filter_map(|m| m.num(field)).collect() };
            // Values that are absent (or not numbers) take no part; with none
            // at all the result is absent too.
            let value = match aggregate {
                Aggregate::Count(None) => Some(members.len() as f64),
                Aggregate::Count(Some(field)) => {
                    Some(members.iter().filter(|m| m.get(field).is_some()).count() as f64)
                }
                Aggregate::CountDistinct(field) => Some(
                    members
                        .iter()
                        .filter_map(|m| m.text(field))
                        .collect::<BTreeSet<_>>()
                        .len() as f64,
                ),
                Aggregate::Sum(field) => {
                    let values = numbers(field);
                    (!values.is_empty()).then(|| values.iter().sum())
                }
                Aggregate::Min(field) => numbers(field).into_iter().reduce(f64::min),
                Aggregate::Max(field) => numbers(field).into_iter().reduce(f64::max),
            };
            if let Some(value) = value {
                row.0.insert(name.clone(), Val::Num(value));
            }
        }
        out.push(row);
    }
    Ok(out)
}

/// A stable sort; a row without the key is refused (where Insights puts them
/// is not documented).
fn sort(rows: &mut [Event], keys: &[(String, bool)]) -> anyhow::Result<()> {
    for row in rows.iter() {
        for (key, _) in keys {
            ensure!(row.get(key).is_some(), "sort by {key}: a row without it");
        }
    }
    rows.sort_by(|a, b| {
        keys.iter()
            .map(|(key, descending)| {
                let (x, y) = (a.get(key), b.get(key));
                let order = match (x.and_then(Val::number), y.and_then(Val::number)) {
                    (Some(p), Some(q)) => p.total_cmp(&q),
                    _ => x.map(Val::text).cmp(&y.map(Val::text)),
                };
                if *descending { order.reverse() } else { order }
            })
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    Ok(())
}

// ---------------------------------------------------------------------------
// Regular expressions: the common subset of regex flavours (literals, `.`,
// classes with ranges and `\d \w \s`, groups, `|`, `* + ? {m,n}` greedy or
// lazy, `^ $`, a leading `(?i)`), by backtracking. Anything else is refused.
// Matching is a search (the pattern may match anywhere), as in `like /x/`.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Node {
    Char(char),
    Any,
    Class(Vec<(char, char)>, bool),
    Start,
    End,
    Alternatives(Vec<Vec<Node>>),
    Repeat(Box<Repetition>),
}

#[derive(Debug, Clone)]
struct Repetition {
    node: Node,
    min: usize,
    max: Option<usize>,
    lazy: bool,
}

#[derive(Debug)]
struct Regex {
    root: Node,
    case_insensitive: bool,
}

type Continuation<'a> = &'a dyn Fn(usize) -> bool;

impl Regex {
    fn new(pattern: &str) -> Result<Self, String> {
        let (case_insensitive, body) = match pattern.strip_prefix("(?i)") {
            Some(rest) => (true, rest),
            None => (false, pattern),
        };
        let mut parser = RegexParser {
            chars: body.chars().collect(),
            at: 0,
        };
        let root = parser.alternatives()?;
        if parser.at != parser.chars.len() {
            return Err(format!("unexpected ')' at {}", parser.at));
        }
        Ok(Self {
            root,
            case_insensitive,
        })
    }

    fn is_match(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        (0..=chars.len()).any(|start| self.node(&self.root, &chars, start, &|_| true))
    }

    fn same(&self, a: char, b: char) -> bool {
        a == b || (self.case_insensitive && a.to_lowercase().eq(b.to_lowercase()))
    }

    fn in_class(&self, c: char, ranges: &[(char, char)]) -> bool {
        let hit = |c: char| ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c));
        hit(c)
            || (self.case_insensitive && (c.to_lowercase().any(hit) || c.to_uppercase().any(hit)))
    }

    fn sequence(&self, nodes: &[Node], text: &[char], at: usize, then: Continuation) -> bool {
        match nodes.split_first() {
            None => then(at),
            Some((first, rest)) => self.node(first, text, at, &|next| {
                self.sequence(rest, text, next, then)
            }),
        }
    }

    fn node(&self, node: &Node, text: &[char], at: usize, then: Continuation) -> bool {
        match node {
            Node::Char(c) => text.get(at).is_some_and(|t| self.same(*t, *c)) && then(at + 1),
            Node::Any => text.get(at).is_some_and(|t| *t != '\n') && then(at + 1),
            Node::Class(ranges, negated) => {
                text.get(at)
                    .is_some_and(|t| self.in_class(*t, ranges) != *negated)
                    && then(at + 1)
            }
            Node::Start => at == 0 && then(at),
            Node::End => at == text.len() && then(at),
            Node::Alternatives(options) => options
                .iter()
                .any(|option| self.sequence(option, text, at, then)),
            Node::Repeat(repetition) => self.repeat(repetition, 0, text, at, then),
        }
    }

    fn repeat(
        &self,
        r: &Repetition,
        done: usize,
        text: &[char],
        at: usize,
        then: Continuation,
    ) -> bool {
        let stop = || done >= r.min && then(at);
        // An iteration that matches nothing past the minimum would loop forever.
        let more = || {
            r.max.is_none_or(|max| done < max)
                && self.node(&r.node, text, at, &|next| {
                    (next > at || done < r.min) && self.repeat(r, done + 1, text, next, then)
                })
        };
        // Greedy tries one more iteration first; lazy tries stopping first.
        let (first, second): (&dyn Fn() -> bool, &dyn Fn() -> bool) = if r.lazy {
            (&stop, &more)
        } else {
            (&more, &stop)
        };
        first() || second()
    }
}

struct RegexParser {
    chars: Vec<char>,
    at: usize,
}

impl RegexParser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn next(&mut self) -> Result<char, String> {
        let c = self.peek().ok_or("the pattern ends too soon")?;
        self.at += 1;
        Ok(c)
    }

    fn alternatives(&mut self) -> Result<Node, String> {
        let mut options = vec![self.sequence()?];
        while self.peek() == Some('|') {
            self.at += 1;
            options.push(self.sequence()?);
        }
        Ok(Node::Alternatives(options))
    }

    fn sequence(&mut self) -> Result<Vec<Node>, String> {
        let mut nodes = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom()?;
            nodes.push(self.quantified(atom)?);
        }
        Ok(nodes)
    }

    fn atom(&mut self) -> Result<Node, String> {
        Ok(match self.next()? {
            '.' => Node::Any,
            '^' => Node::Start,
            '$' => Node::End,
            '(' => {
                if self.peek() == Some('?') {
                    self.at += 1;
                    if self.next()? != ':' {
                        return Err("only (?:...) groups and a leading (?i) are supported".into());
                    }
                }
                let inner = self.alternatives()?;
                if self.next()? != ')' {
                    return Err("missing ')'".into());
                }
                inner
            }
            '[' => self.class()?,
            '\\' => self.escape()?,
            c @ ('*' | '+' | '?' | '{') => return Err(format!("nothing to repeat before {c:?}")),
            c => Node::Char(c),
        })
    }

    fn escape(&mut self) -> Result<Node, String> {
        let c = self.next()?;
        Ok(match c {
            'd' | 'w' | 's' => Node::Class(shorthand(c), false),
            'D' | 'W' | 'S' => Node::Class(shorthand(c.to_ascii_lowercase()), true),
            'n' => Node::Char('\n'),
            't' => Node::Char('\t'),
            'r' => Node::Char('\r'),
            c if c.is_ascii_punctuation() => Node::Char(c),
            c => return Err(format!("the escape \\{c} is not supported")),
        })
    }

    fn class(&mut self) -> Result<Node, String> {
        let negated = self.peek() == Some('^');
        if negated {
            self.at += 1;
        }
        let mut ranges = Vec::new();
        let mut first = true;
        loop {
            let c = self.next()?;
            if c == ']' && !first {
                break;
            }
            first = false;
            let low = if c == '\\' {
                match self.next()? {
                    s @ ('d' | 'w' | 's') => {
                        ranges.extend(shorthand(s));
                        continue;
                    }
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    p if p.is_ascii_punctuation() => p,
                    other => return Err(format!("the escape \\{other} is not supported in [...]")),
                }
            } else {
                c
            };
            if self.peek() == Some('-') && self.chars.get(self.at + 1).is_some_and(|n| *n != ']') {
                self.at += 1;
                let high = self.next()?;
                if high == '\\' || high < low {
                    return Err(format!("bad range {low}-{high}"));
                }
                ranges.push((low, high));
            } else {
                ranges.push((low, low));
            }
        }
        Ok(Node::Class(ranges, negated))
    }

    fn quantified(&mut self, node: Node) -> Result<Node, String> {
        let (min, max) = match self.peek() {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            Some('{') => {
                self.at += 1;
                let number = |p: &mut Self| -> Option<usize> {
                    let start = p.at;
                    while p.peek().is_some_and(|c| c.is_ascii_digit()) {
                        p.at += 1;
                    }
                    p.chars[start..p.at].iter().collect::<String>().parse().ok()
                };
                let min = number(self).ok_or("a repetition needs a number")?;
                let max = if self.peek() == Some(',') {
                    self.at += 1;
                    number(self)
                } else {
                    Some(min)
                };
                if self.next()? != '}' || max.is_some_and(|m| m < min) {
                    return Err("a bad {m,n} repetition".into());
                }
                self.at -= 1;
                (min, max)
            }
            _ => return Ok(node),
        };
        self.at += 1;
        let lazy = self.peek() == Some('?');
        if lazy {
            self.at += 1;
        }
        Ok(Node::Repeat(Box::new(Repetition {
            node,
            min,
            max,
            lazy,
        })))
    }
}

fn shorthand(c: char) -> Vec<(char, char)> {
    match c {
        'd' => vec![('0', '9')],
        'w' => vec![('a', 'z'), ('A', 'Z'), ('0', '9'), ('_', '_')],
        _ => vec![
            (' ', ' '),
            ('\t', '\t'),
            ('\n', '\n'),
            ('\r', '\r'),
            ('\u{b}', '\u{c}'),
        ],
    }
}
