//! Behaviour of the real handler and DynamoDB adapter, run once per backend
//! (the embedded engine and DynamoDB Local), each test on its own table.

use std::collections::BTreeMap;

use anyhow::{anyhow, ensure};
use chrono::{DateTime, NaiveDate, Utc};
use consolidation_updater::local::{Chargeback, IndexProjection, SyntheticDay, TableShape};
use consolidation_updater::model::{MessageOutcome, StampResult, StampValues};
use consolidation_updater::settings::WriteMode;
use consolidation_updater::testing::ChargebackStore;
use libtest_mimic::Trial;
use serde_json::json;

use crate::support::*;
use crate::{Backends, ServerTest};

/// Every scenario on both servers, with both write paths.
pub fn tests(backends: &Backends) -> Vec<Trial> {
    const SCENARIOS: &[(&str, ServerTest)] = server_tests![
        the_sample_event_stamps_every_record_created_up_to_the_execution_time,
        a_redelivered_event_writes_nothing,
        an_older_execution_arriving_after_a_newer_one_changes_nothing,
        a_hash_and_range_table_is_stamped_like_a_hash_only_one,
        a_table_without_the_date_index_falls_back_to_a_scan,
        the_last_execution_reports_records_created_after_it,
        a_batch_of_100_messages_over_several_partitions_and_dates,
        a_missing_record_is_never_created,
        the_read_side_skips_stamped_records_when_the_index_projects_the_execution,
    ];
    SCENARIOS
        .iter()
        .flat_map(|(name, scenario)| everywhere(backends, name, *scenario))
        .collect()
}

/// `scenario` on each server with each write path; each name says its write
/// path (`embedded::update_item::{name}`, ...), so neither reads as the default.
pub fn everywhere(backends: &Backends, name: &str, scenario: ServerTest) -> Vec<Trial> {
    let mut trials = Vec::new();
    for (mode, write_mode) in [
        ("update_item", WriteMode::UpdateItem),
        ("batch_statement", WriteMode::BatchStatement),
    ] {
        trials.push(crate::test(
            format!("embedded::{mode}::{name}"),
            move || scenario(Backend::embedded().writing_with(write_mode)),
        ));
        trials.push(backends.on_dynamodb_local(
            write_mode,
            format!("dynamodb_local::{mode}::{name}"),
            scenario,
        ));
    }
    trials
}

pub fn sample_day(total: u64) -> SyntheticDay {
    let execution_time = DateTime::parse_from_rfc3339("2025-11-20T06:30:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default();
    let date = NaiveDate::from_ymd_opt(2025, 11, 20).unwrap_or_default();
    SyntheticDay::around(execution_time, date, total)
}

/// A fresh table of `shape` holding a sample day of `total` records, stamped
/// once by the sample event (checked): the starting point of several scenarios.
async fn a_stamped_sample_day(
    backend: &Backend,
    shape: TableShape,
    total: u64,
) -> anyhow::Result<(TestTable, SyntheticDay)> {
    let table = TestTable::create(backend, shape).await?;
    let day = sample_day(total);
    table.seed(day.chargebacks()).await?;
    let first = table.invoke(sample_event()).await?.summary();
    ensure!(
        first.chargebacks_updated == day.before_cutoff,
        "first pass updated {} of {}",
        first.chargebacks_updated,
        day.before_cutoff
    );
    Ok((table, day))
}

/// Records right at the cutoff, with each `created_at` suffix the contract allows.
fn edge_records() -> (Vec<Chargeback>, Vec<Chargeback>) {
    let included = vec![
        chargeback("edge-in-ms", "2025-11-20", "2025-11-20T06:30:00.999Z"),
        chargeback("edge-in-offset", "2025-11-20", "2025-11-20T06:30:00+00:00"),
        chargeback("edge-in-z", "2025-11-20", "2025-11-20T06:30:00Z"),
    ];
    let excluded = vec![
        chargeback("edge-out-z", "2025-11-20", "2025-11-20T06:30:01Z"),
        chargeback("edge-out-offset", "2025-11-20", "2025-11-20T06:30:01+00:00"),
    ];
    (included, excluded)
}

async fn the_sample_event_stamps_every_record_created_up_to_the_execution_time(
    backend: Backend,
) -> anyhow::Result<()> {
    let table = TestTable::create(&backend, TableShape::default()).await?;
    let day = sample_day(400);
    let (included, excluded) = edge_records();
    table
        .seed(
            day.chargebacks()
                .chain(included.clone())
                .chain(excluded.clone()),
        )
        .await?;

    let before = Utc::now();
    let outcome = table.invoke(sample_event()).await?;
    let summary = outcome.summary();

    ensure!(
        outcome.response().batch_item_failures.is_empty(),
        "{:?}",
        outcome.response()
    );
    ensure!(summary.messages_processed == 1);
    // Every selected record once. (On a DynamoDB Local whose JVM is still
    // cold, a timed-out attempt can have been applied: its retry then finds
    // the record stamped, as the README says; the table was fresh.)
    ensure!(
        summary.chargebacks_updated + summary.chargebacks_already_applied
            == day.before_cutoff + included.len() as u64,
        "updated {} and found {} already applied of {}",
        summary.chargebacks_updated,
        summary.chargebacks_already_applied,
        day.before_cutoff + 3
    );
    ensure!(summary.chargebacks_missing == 0);

    let records: Vec<Chargeback> = day.chargebacks().collect();
    let stamped = records
        .iter()
        .find(|c| c.partition_date == "2025-11-20" && c.created_at.as_str() < "2025-11-20T06:30:01")
        .ok_or_else(|| anyhow!("no record before the cutoff"))?;
    let item = table
        .item(stamped)
        .await?
        .ok_or_else(|| anyhow!("stamped record vanished"))?;
    let s = |name: &str| item.get(name).and_then(text).map(str::to_owned);
    let n = |name: &str| item.get(name).and_then(number);
    ensure!(s("consolidation_status").as_deref() == Some("completed"));
    ensure!(
        s("consolidation_s3_path").as_deref()
            == Some("s3://bucket/consolidated/chargebacks/year=2025/month=11/day=20")
    );
    ensure!(s("consolidation_date").as_deref() == Some("2025-11-20T06:45:32.123456+00:00"));
    ensure!(n("consolidation_execution") == Some(2));
    ensure!(
        s("consolidation_job_name").as_deref()
            == Some("poc-chargeback-dev-chargebacks-consolidation")
    );
    ensure!(s("output_format").as_deref() == Some("csv"));
    ensure!(n("records_in_consolidation") == Some(1_250_000));
    let updated_at = s("updated_at").ok_or_else(|| anyhow!("no updated_at"))?;
    let updated_at = DateTime::parse_from_rfc3339(&updated_at)?.with_timezone(&Utc);
    ensure!(updated_at >= before - chrono::TimeDelta::seconds(1) && updated_at <= Utc::now());
    ensure!(
        s("merchant_id").as_deref() == Some(stamped.merchant_id.as_str()),
        "other attributes kept"
    );

    for edge in &included {
        ensure!(
            table.execution_of(edge).await? == Some(2),
            "{} should be stamped",
            edge.chargeback_id
        );
    }
    for edge in &excluded {
        ensure!(
            table.execution_of(edge).await?.is_none(),
            "{} is for the next run",
            edge.chargeback_id
        );
    }
    let late = records
        .iter()
        .find(|c| {
            c.partition_date == "2025-11-20" && c.created_at.as_str() >= "2025-11-20T06:30:01"
        })
        .ok_or_else(|| anyhow!("no late record"))?;
    ensure!(table.execution_of(late).await?.is_none());
    let other_day = records
        .iter()
        .find(|c| c.partition_date != "2025-11-20")
        .ok_or_else(|| anyhow!("no other-day record"))?;
    let untouched = table
        .item(other_day)
        .await?
        .ok_or_else(|| anyhow!("vanished"))?;
    ensure!(
        !untouched.contains_key("consolidation_status") && !untouched.contains_key("updated_at")
    );
    Ok(())
}

async fn a_redelivered_event_writes_nothing(backend: Backend) -> anyhow::Result<()> {
    let (table, day) = a_stamped_sample_day(&backend, TableShape::default(), 100).await?;
    let probe = day
        .chargebacks()
        .next()
        .ok_or_else(|| anyhow!("empty day"))?;
    let stamped_at = table
        .item(&probe)
        .await?
        .and_then(|i| i.get("updated_at").cloned());

    let again = table.invoke(sample_event()).await?;
    let summary = again.summary();
    ensure!(again.response().batch_item_failures.is_empty());
    ensure!(summary.messages_processed == 1);
    ensure!(
        summary.chargebacks_updated == 0,
        "redelivery wrote {}",
        summary.chargebacks_updated
    );
    ensure!(summary.chargebacks_already_applied == day.before_cutoff);
    let after = table
        .item(&probe)
        .await?
        .and_then(|i| i.get("updated_at").cloned());
    ensure!(
        stamped_at.is_some() && after == stamped_at,
        "updated_at moved: {stamped_at:?} -> {after:?}"
    );
    Ok(())
}

async fn an_older_execution_arriving_after_a_newer_one_changes_nothing(
    backend: Backend,
) -> anyhow::Result<()> {
    let table = TestTable::create(&backend, TableShape::default()).await?;
    let records = vec![
        chargeback("cb-1", "2025-11-20", "2025-11-20T01:00:00.000Z"),
        chargeback("cb-2", "2025-11-20", "2025-11-20T02:00:00.000Z"),
    ];
    table.seed(records.clone().into_iter()).await?;
    let newer = consolidation("2025-11-20", 3, 4, "2025-11-20T12:00:00");
    let older = consolidation("2025-11-20", 2, 4, "2025-11-20T06:30:00");
    table
        .invoke(kafka_event(&[Message::json(0, 1, &newer)]))
        .await?;
    let late = table
        .invoke(kafka_event(&[Message::json(0, 2, &older)]))
        .await?
        .summary();
    ensure!(late.messages_processed == 1 && late.chargebacks_updated == 0);
    ensure!(late.chargebacks_already_applied == 2);
    for record in &records {
        let item = table
            .item(record)
            .await?
            .ok_or_else(|| anyhow!("vanished"))?;
        ensure!(item.get("consolidation_execution").and_then(number) == Some(3));
        ensure!(
            item.get("consolidation_s3_path").and_then(text)
                == Some("s3://chargebacks-bucket/consolidated/2025-11-20/run=3")
        );
    }
    Ok(())
}

async fn a_hash_and_range_table_is_stamped_like_a_hash_only_one(
    backend: Backend,
) -> anyhow::Result<()> {
    let shape = TableShape {
        created_at_sort_key: true,
        ..TableShape::default()
    };
    let (table, day) = a_stamped_sample_day(&backend, shape, 120).await?;
    let again = table.invoke(sample_event()).await?.summary();
    ensure!(
        again.chargebacks_updated == 0 && again.chargebacks_already_applied == day.before_cutoff
    );
    let first = day
        .chargebacks()
        .next()
        .ok_or_else(|| anyhow!("empty day"))?;
    ensure!(table.execution_of(&first).await? == Some(2));
    Ok(())
}

async fn a_table_without_the_date_index_falls_back_to_a_scan(
    backend: Backend,
) -> anyhow::Result<()> {
    let shape = TableShape {
        index: None,
        ..TableShape::default()
    };
    let (table, day) = a_stamped_sample_day(&backend, shape, 200).await?;
    // The scan sees `consolidation_execution`: a redelivery counts every
    // record as already applied without attempting a write.
    let again = table.invoke(sample_event()).await?;
    match &again.outcomes[0].1 {
        MessageOutcome::Applied(report) => ensure!(
            report.written == 0 && report.already_applied_on_read == day.before_cutoff,
            "{report:?}"
        ),
        other => anyhow::bail!("expected applied, got {other:?}"),
    }
    let records: Vec<Chargeback> = day.chargebacks().collect();
    let other_day = records
        .iter()
        .find(|c| c.partition_date != "2025-11-20")
        .ok_or_else(|| anyhow!("none"))?;
    ensure!(table.execution_of(other_day).await?.is_none());
    Ok(())
}

async fn the_last_execution_reports_records_created_after_it(
    backend: Backend,
) -> anyhow::Result<()> {
    let table = TestTable::create(&backend, TableShape::default()).await?;
    let day = sample_day(100);
    let (included, excluded) = edge_records();
    table
        .seed(day.chargebacks().chain(included).chain(excluded.clone()))
        .await?;
    let last = consolidation("2025-11-20", 4, 4, "2025-11-20T06:30:00");
    let outcome = table
        .invoke(kafka_event(&[Message::json(0, 7, &last)]))
        .await?;
    let summary = outcome.summary();
    let expected_left = day.after_cutoff + excluded.len() as u64;
    ensure!(
        summary.chargebacks_left_behind == expected_left,
        "left behind {} expected {expected_left}",
        summary.chargebacks_left_behind
    );
    match &outcome.outcomes[0].1 {
        MessageOutcome::Applied(report) => ensure!(report.left_behind == Some(expected_left)),
        other => anyhow::bail!("expected applied, got {other:?}"),
    }
    // A run that is not the last does not count.
    let earlier = consolidation("2025-11-20", 3, 4, "2025-11-20T06:30:00");
    let summary = table
        .invoke(kafka_event(&[Message::json(0, 8, &earlier)]))
        .await?
        .summary();
    ensure!(summary.chargebacks_left_behind == 0);
    Ok(())
}

async fn a_batch_of_100_messages_over_several_partitions_and_dates(
    backend: Backend,
) -> anyhow::Result<()> {
    const DATES: [&str; 4] = ["2025-11-18", "2025-11-19", "2025-11-20", "2025-11-21"];
    const PER_DATE: usize = 15;
    let table = TestTable::create(&backend, TableShape::default()).await?;
    let records: Vec<Chargeback> = DATES
        .iter()
        .flat_map(|date| {
            (0..PER_DATE).map(move |i| {
                chargeback(
                    &format!("cb-{date}-{i}"),
                    date,
                    &format!("{date}T0{}:00:00.000Z", i % 6),
                )
            })
        })
        .collect();
    table.seed(records.clone().into_iter()).await?;

    // 4 partitions x 25 messages. Partition 1 holds a message of another
    // event type (skipped); partition 3 turns bad at offset 20, so it stops there.
    let mut messages = Vec::new();
    let mut expected_execution: BTreeMap<&str, u64> = BTreeMap::new();
    for partition in 0..4_i64 {
        for i in 0..25_i64 {
            let offset = 1000 + i;
            let date = DATES[((partition + i) % 4) as usize];
            let sequence = (((partition * 7 + i * 3) % 4) + 1) as u64;
            if partition == 1 && i == 5 {
                messages.push(Message::json(
                    partition,
                    offset,
                    &json!({"event_type": "consolidation_started", "partition_date": date}),
                ));
                continue;
            }
            if partition == 3 && i == 20 {
                messages.push(Message {
                    partition,
                    offset,
                    value: "{not json".into(),
                });
                continue;
            }
            let event = consolidation(date, sequence, 4, &format!("{date}T12:00:00"));
            messages.push(Message::json(partition, offset, &event));
            if !(partition == 3 && i > 20) {
                let best = expected_execution.entry(date).or_default();
                *best = (*best).max(sequence);
            }
        }
    }
    ensure!(messages.len() == 100);
    let outcome = table.invoke(kafka_event(&messages)).await?;
    let summary = outcome.summary();

    let listed: Vec<(String, i64)> = outcome
        .response()
        .batch_item_failures
        .into_iter()
        .map(|f| (f.item_identifier.partition, f.item_identifier.offset))
        .collect();
    let expected_listed: Vec<(String, i64)> =
        (1020..1025).map(|o| (format!("{TOPIC}-3"), o)).collect();
    ensure!(listed == expected_listed, "listed {listed:?}");
    ensure!(summary.messages_skipped == 1);
    ensure!(summary.messages_failed == 5);
    // Each day's newest event in the batch is stamped; the older ones it
    // covers end superseded without a fan-out.
    ensure!(
        summary.messages_processed + summary.messages_superseded == 94
            && summary.messages_superseded > 0,
        "{summary:?}"
    );
    for record in &records {
        let expected = expected_execution
            .get(record.partition_date.as_str())
            .copied();
        let actual = table.execution_of(record).await?;
        ensure!(
            actual == expected,
            "{}: {actual:?} expected {expected:?}",
            record.chargeback_id
        );
    }
    Ok(())
}

async fn a_missing_record_is_never_created(backend: Backend) -> anyhow::Result<()> {
    let table = TestTable::create(&backend, TableShape::default()).await?;
    let store = table.store();
    let stamp = store
        .prepare_stamp(&StampValues {
            s3_path: "s3://b/p".into(),
            consolidation_date: "2025-11-20T06:45:32+00:00".into(),
            execution_sequence: 1,
            job_name: "job".into(),
            output_format: "csv",
            records_in_consolidation: 1,
            updated_at: "2025-11-20T07:00:00.000Z".into(),
            replace_same_execution: false,
        })
        .await?;
    let ghost = chargeback("ghost", "2025-11-20", "2025-11-20T01:00:00Z");
    let key = std::collections::HashMap::from([(
        "chargeback_id".to_owned(),
        aws_sdk_dynamodb::types::AttributeValue::S(ghost.chargeback_id.clone()),
    )]);
    let result = store.stamp(&key, &stamp).await?;
    ensure!(result == StampResult::Missing, "got {result:?}");
    ensure!(
        table.item(&ghost).await?.is_none(),
        "the update created the record"
    );
    Ok(())
}

async fn the_read_side_skips_stamped_records_when_the_index_projects_the_execution(
    backend: Backend,
) -> anyhow::Result<()> {
    let shape = TableShape {
        index: Some(IndexProjection::IncludeExecution),
        ..TableShape::default()
    };
    let (table, day) = a_stamped_sample_day(&backend, shape, 100).await?;
    let again = table.invoke(sample_event()).await?;
    let report = match &again.outcomes[0].1 {
        MessageOutcome::Applied(report) => *report,
        other => anyhow::bail!("expected applied, got {other:?}"),
    };
    ensure!(
        report.written == 0
            && report.already_applied == day.before_cutoff
            && report.already_applied_on_read == day.before_cutoff,
        "stamped records were not recognised on read: {report:?}"
    );
    let newer = consolidation("2025-11-20", 3, 4, "2025-11-20T06:30:00");
    let next = table
        .invoke(kafka_event(&[Message::json(0, 1, &newer)]))
        .await?
        .summary();
    ensure!(
        next.chargebacks_updated == day.before_cutoff,
        "newer run updated {}",
        next.chargebacks_updated
    );
    Ok(())
}
