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
//! - `/regex/` patterns are compiled by the `regex` crate, limited to the
//!   common subset of regex flavours ([`query::insights_regex`]).
//!
//! Where the documentation is silent the evaluator picks the strict reading
//! and says so at the spot (a comparison with an absent field is false,
//! grouping by an absent field is refused, ...); the runbook's queries avoid
//! depending on those cases.
//!
//! One job a file: [`runbook`] reads the queries out of the runbook, [`query`]
//! parses the query language, [`eval`] runs a parsed query over log events,
//! [`logs`] runs the binary as Lambda does and turns its stdout into the
//! events of a log group; [`rules`] checks the evaluator on hand-made events.
//! The tests are here.

mod eval;
mod logs;
mod query;
mod rules;
mod runbook;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, anyhow, ensure};
use consolidation_updater::local::{TableShape, ensure_ledger_table};
use consolidation_updater::model::DeadLetter;
use libtest_mimic::Trial;
use serde_json::{Value, json};

use self::logs::{LogGroup, refused_start, run_environment};
use self::runbook::Runbook;
use crate::Backends;
use crate::dead_letters::local_sdk;
use crate::support::*;

pub fn tests(backends: &Backends) -> Vec<Trial> {
    let mut trials = trials!("insights"; runbook_queries_count_what_the_binary_logged);
    trials.push(backends.on_moto(
        "moto::insights::the_dead_letter_query_finds_each_parked_message",
        the_dead_letter_query_finds_each_parked_message,
    ));
    trials
}

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
    let runbook = Runbook::load()?;
    let names = runbook.names();
    ensure!(
        names == RUNBOOK_QUERIES.into_iter().collect(),
        "the runbook's queries {names:?} are not the ones this test checks {RUNBOOK_QUERIES:?}"
    );
    rules::evaluator_follows_the_documented_rules()?;

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
    // Lambda delivers partition 1 again from the first offset handed back;
    // partition 0 brings the day's first run, late: the run ledger has the
    // day's second run completed, which covers it (superseded).
    let warm = kafka_event(&[
        poison(),
        blocked(),
        Message::json(
            0,
            12,
            &consolidation("2025-11-20", 1, 4, "2025-11-20T03:00:00"),
        ),
    ]);
    let missing_table = kafka_event(&[Message::json(
        3,
        40,
        &consolidation("2025-11-23", 1, 2, "2025-11-23T06:30:00"),
    )]);

    // A keeps a run ledger.
    let ledger = format!("{}-runs", table.name);
    ensure_ledger_table(&table.client, &ledger).await?;
    let a = run_environment(
        &table.endpoint,
        &table.name,
        vec![("req-cold".into(), cold), ("req-warm".into(), warm)],
        &[("LEDGER_TABLE_NAME", &ledger)],
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
    let run = |name: &str| runbook.run(&group, name);
    let dump = || group.dump();

    // Processing summary: the seed's three sums, and the other counts.
    let summary = run("Processing summary")?;
    let totals = summary.totals(&[
        "processed",
        "failed",
        "updated",
        "skipped",
        "superseded",
        "dead_lettered",
        "handed_back",
        "invocations",
    ])?;
    ensure!(
        totals == [2.0, 5.0, 5.0, 1.0, 1.0, 0.0, 5.0, 3.0],
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
        "runs_completed",
        "runs_superseded",
        "invocations",
    ])?;
    ensure!(
        // Runs completed: 2025-11-20's second and 2025-11-22's fourth (A).
        emf == [2.0, 5.0, 5.0, 0.0, 5.0, 0.0, 2.0, 2.0, 1.0, 3.0],
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

    // The poison twice and the missing table, each under its one name.
    let kinds = run("Errors by kind")?;
    ensure!(
        kinds.sum_by("error_kind", "lines")?
            == BTreeMap::from([("not_json".into(), 2.0), ("setup_failure".into(), 1.0)]),
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
        messages.len() == 5
            && messages[..3]
                == [
                    "message received",
                    "stamping the day's chargebacks",
                    "applied"
                ]
            && messages[3].starts_with("run completed: execution 2 of 2025-11-20, 3 selected")
            && messages[4] == "message outcome: applied",
        "story of {STORY_ID}: {messages:?}"
    );
    ensure!(story.rows[2].num("written") == Some(3.0));
    ensure!(story.rows[3].num("stamped") == Some(3.0));
    ensure!(story.rows[4].text("outcome").as_deref() == Some("applied"));
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
            // error_kind: the two poison ERROR lines, the setup problem's
            // ERROR line and the outcome lines of the three messages that did
            // not apply; every outcome line (9) has handed_back.
            == [group.events.len() as f64, 6.0, 9.0],
        "count(field) counts only lines that have it: {:?}",
        counted.rows
    );
    let not_handed_back = group.run("filter handed_back = 0 | stats count(*) as n")?;
    ensure!(
        not_handed_back.totals(&["n"])? == [4.0],
        "handed_back = 0 matches only outcome lines (2 applied, 1 skipped, 1 superseded)"
    );
    let as_text = group.run("filter handed_back = \"true\"")?;
    ensure!(as_text.rows.is_empty(), "booleans are 1 and 0, not text");
    Ok(())
}

/// With `DLQ_URL` at a moto queue, the dead-letter query finds exactly the
/// parked messages, with their kinds, and agrees with the queue and the metrics.
pub async fn the_dead_letter_query_finds_each_parked_message(moto: String) -> anyhow::Result<()> {
    let runbook = Runbook::load()?;
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
    let run = |name: &str| runbook.run(&group, name);

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
