//! Checkpointed resume and a backlog stamped once, against real servers: a
//! run stopped at its deadline leaves a checkpoint and the next delivery
//! reads only what lies after it; a checkpoint DynamoDB refuses as a start
//! key costs a full pass, never the message; checkpoints only move forward;
//! several executions of a day in one batch are stamped once, by the newest,
//! and if it cannot complete the others run as before.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure};
use aws_sdk_dynamodb::types::AttributeValue;
use consolidation_updater::app::{
    BatchHandler, DynamoLedger, DynamoStore, FanOut, Invocation, Ledger, load_sdk_config,
    local_client,
};
use consolidation_updater::local::{Chargeback, SyntheticDay};
use consolidation_updater::model::{
    BatchOutcome, Checkpoint, Completion, IndexPosition, KeyPart, MessageOutcome, RunStatus,
};
use consolidation_updater::testing::{ChargebackStore, DeadLetterSink, RunLedger};
use libtest_mimic::Trial;
use serde_json::Value;

use crate::ledger::{Tables, counts, only_outcome, raw_item, start_of};
use crate::proxy::FaultProxy;
use crate::scenarios::sample_day;
use crate::support::*;
use crate::{Backends, ServerTest};

pub fn tests(backends: &Backends) -> Vec<Trial> {
    const RESUME: &[(&str, ServerTest)] = server_tests![
        a_run_stopped_at_its_deadline_resumes_after_its_checkpoint,
        a_checkpoint_refused_as_a_start_key_means_a_full_pass,
        checkpoints_only_move_forward,
        a_backlog_is_stamped_once_by_the_newest_of_each_day,
        when_the_newest_cannot_complete_the_older_ones_run_alone,
    ];
    RESUME
        .iter()
        .flat_map(|(name, test)| backends.on_both_servers("resume", name, *test))
        .collect()
}

const CUTOFF: &str = "2025-11-20T06:30:00";

fn event_of(sequence: u64) -> Value {
    kafka_event(&[Message::json(
        0,
        0,
        &consolidation("2025-11-20", sequence, 4, CUTOFF),
    )])
}

/// A handler over `store` keeping its runs in `ledger`, writing at most
/// `rate` records a second, new work stopping 1 s before a deadline (the
/// least `DEADLINE_SAFETY_MARGIN_MS` allows).
fn handler(
    store: &Arc<DynamoStore>,
    tables: &Tables,
    ledger: &Arc<DynamoLedger>,
    rate: Option<u32>,
) -> Arc<BatchHandler<DynamoStore>> {
    Arc::new(handler_of(store, tables, ledger, rate))
}

fn handler_of(
    store: &Arc<DynamoStore>,
    tables: &Tables,
    ledger: &Arc<DynamoLedger>,
    rate: Option<u32>,
) -> BatchHandler<DynamoStore> {
    BatchHandler::new(FanOut::new(Arc::clone(store), 8, Arc::default()).with_max_write_rate(rate))
        .with_ledger(Ledger::new(
            Arc::clone(ledger) as Arc<dyn RunLedger>,
            &tables.ledger_table,
        ))
        .with_deadline_margin(Duration::from_secs(1))
}

/// Every record of `day` created before `before` is at `execution`.
async fn stamped_before(
    table: &TestTable,
    day: SyntheticDay,
    before: &str,
    execution: u64,
) -> anyhow::Result<()> {
    let records: Vec<Chargeback> = day
        .chargebacks()
        .filter(|c| c.partition_date == "2025-11-20" && c.created_at.as_str() < before)
        .collect();
    for record in records {
        let found = table.execution_of(&record).await?;
        ensure!(
            found == Some(execution),
            "{} ({}) is at {found:?}, expected {execution}",
            record.chargeback_id,
            record.created_at
        );
    }
    Ok(())
}

/// Stopped by its deadline part way, a run's ledger item holds a
/// checkpoint whose counts are exactly the records before it; the next
/// delivery examines only the records after it, and completes the run with
/// every selected record counted once.
pub async fn a_run_stopped_at_its_deadline_resumes_after_its_checkpoint(
    backend: Backend,
) -> anyhow::Result<()> {
    let tables = Tables::create(&backend).await?;
    let day_records = sample_day(400);
    let selected = day_records.before_cutoff;
    tables.chargebacks.seed(day_records.chargebacks()).await?;
    let store = Arc::new(tables.chargebacks.store().with_keys_per_page(40));
    let ledger = tables.ledger();

    // 360 records at 100 writes/s take 3.6 s: new work stops after 1.5 s.
    let mut first = Invocation::unbounded("r1");
    first.deadline = Some(Instant::now() + Duration::from_millis(2500));
    let stopped = handler(&store, &tables, &ledger, Some(100))
        .handle(event_of(2), &first)
        .await?;
    let MessageOutcome::Unfinished { done, .. } = only_outcome(&stopped)? else {
        return Err(anyhow!("first delivery: {stopped:?}"));
    };
    let run = tables.last_run().await?;
    ensure!(run.status == RunStatus::InProgress, "{run:?}");
    let checkpoint = run
        .checkpoint
        .clone()
        .ok_or_else(|| anyhow!("no checkpoint after {done:?}: {run:?}"))?;
    let before = run.counts.selected();
    ensure!(
        before > 0 && before < selected && before % 40 == 0,
        "the checkpoint counts whole pages of 40, some but not all: {before}"
    );
    ensure!(
        run.counts.stamped + run.counts.already_applied == before
            && before <= done.written + done.already_applied,
        "{run:?} after {done:?}"
    );
    let item = raw_item(&tables, 2).await?;
    ensure!(
        item.get("checkpoint_created_at")
            == Some(&AttributeValue::S(checkpoint.created_at.clone()))
            && matches!(item.get("checkpoint"), Some(AttributeValue::M(key)) if key.contains_key("chargeback_id")),
        "{item:?}"
    );
    stamped_before(
        &tables.chargebacks,
        sample_day(400),
        &checkpoint.created_at,
        2,
    )
    .await?;

    let resumed = handler(&store, &tables, &ledger, None)
        .handle(event_of(2), &Invocation::unbounded("r2"))
        .await?;
    let MessageOutcome::Applied(report) = only_outcome(&resumed)? else {
        return Err(anyhow!("second delivery: {resumed:?}"));
    };
    ensure!(report.resumed, "{report:?}");
    ensure!(
        report.examined() == selected - before,
        "examined {} after the checkpoint, expected {}",
        report.examined(),
        selected - before
    );
    let run = tables.last_run().await?;
    ensure!(
        run.status == RunStatus::Completed
            && run.counts.selected() == selected
            && run.checkpoint.is_none(),
        "{run:?}"
    );
    let item = raw_item(&tables, 2).await?;
    ensure!(
        !item.contains_key("checkpoint") && !item.contains_key("checkpoint_created_at"),
        "a completed run keeps no checkpoint: {item:?}"
    );
    stamped_before(
        &tables.chargebacks,
        sample_day(400),
        "2025-11-20T06:30:01",
        2,
    )
    .await
}

/// A position the index does not accept as a start key: the index's keys
/// without the table's (`chargeback_id`), as if the table had been
/// recreated with another key. Late in the day, so that a pass stopped
/// early lies behind it.
fn stale_position() -> IndexPosition {
    let created_at = "2025-11-20T06:25:00.000Z";
    IndexPosition {
        created_at: created_at.into(),
        key: BTreeMap::from([
            ("partition_date".into(), KeyPart::S("2025-11-20".into())),
            ("created_at".into(), KeyPart::S(created_at.into())),
        ]),
    }
}

/// A checkpoint the server refuses as `ExclusiveStartKey`
/// (ValidationException) is read from the start: the message is not
/// dead-lettered. The full pass, stopped by its deadline, puts its own
/// checkpoint in place of the refused one although it lies behind it, so
/// the next delivery resumes; the run counts the full pass alone.
pub async fn a_checkpoint_refused_as_a_start_key_means_a_full_pass(
    backend: Backend,
) -> anyhow::Result<()> {
    let tables = Tables::create(&backend).await?;
    let day_records = sample_day(400);
    let selected = day_records.before_cutoff;
    tables.chargebacks.seed(day_records.chargebacks()).await?;
    let store = Arc::new(tables.chargebacks.store().with_keys_per_page(40));
    let ledger = tables.ledger();
    let run = start_of(2, CUTOFF, &tables.store.table_identity().await?)?;
    ledger.start(&run).await?;
    let stale = Checkpoint {
        position: stale_position(),
        counts: counts(40),
    };
    ensure!(ledger.save_checkpoint(&run, &stale, None).await?, "saved");

    let sink = Arc::new(RecordingSink::default());
    let with_sink = |rate| {
        Arc::new(
            handler_of(&store, &tables, &ledger, rate)
                .with_dead_letters(Arc::clone(&sink) as Arc<dyn DeadLetterSink>),
        )
    };
    // 360 records at 100 writes/s take 3.6 s: new work stops after 1.5 s.
    let mut first = Invocation::unbounded("r1");
    first.deadline = Some(Instant::now() + Duration::from_millis(2500));
    let stopped = with_sink(Some(100)).handle(event_of(2), &first).await?;
    let MessageOutcome::Unfinished { done, .. } = only_outcome(&stopped)? else {
        return Err(anyhow!("first delivery: {stopped:?}"));
    };
    ensure!(sink.count() == 0, "nothing dead-lettered");
    ensure!(!done.resumed, "the refused start read from the beginning");
    let run = tables.last_run().await?;
    let checkpoint = run
        .checkpoint
        .clone()
        .ok_or_else(|| anyhow!("no checkpoint after {done:?}: {run:?}"))?;
    let before = run.counts.selected();
    ensure!(
        checkpoint.created_at < stale.position.created_at
            && checkpoint.key.contains_key("partition_date")
            && before > 0
            && before < selected
            && before % 40 == 0,
        "the full pass's checkpoint (whole pages, behind the refused one) replaced it: {run:?}"
    );

    let resumed = with_sink(None)
        .handle(event_of(2), &Invocation::unbounded("r2"))
        .await?;
    let MessageOutcome::Applied(report) = only_outcome(&resumed)? else {
        return Err(anyhow!("second delivery: {resumed:?}"));
    };
    ensure!(sink.count() == 0, "nothing dead-lettered");
    ensure!(
        report.resumed && report.examined() == selected - before,
        "resumed after the full pass's checkpoint: {report:?}"
    );
    let run = tables.last_run().await?;
    ensure!(
        run.status == RunStatus::Completed && run.counts.selected() == selected,
        "the full pass alone is counted: {run:?}"
    );
    stamped_before(
        &tables.chargebacks,
        sample_day(400),
        "2025-11-20T06:30:01",
        2,
    )
    .await
}

fn position_at(created_at: &str) -> IndexPosition {
    IndexPosition {
        created_at: created_at.into(),
        key: BTreeMap::from([
            (
                "chargeback_id".into(),
                KeyPart::S(format!("cb-{created_at}")),
            ),
            ("partition_date".into(), KeyPart::S("2025-11-20".into())),
            ("created_at".into(), KeyPart::S(created_at.into())),
        ]),
    }
}

/// Through the ledger table: a checkpoint moves forward or stays (an equal
/// `created_at` is forward: the index's order among equals is not
/// documented), never back; only on an in-progress run of the same cutoff;
/// a completion removes it.
pub async fn checkpoints_only_move_forward(backend: Backend) -> anyhow::Result<()> {
    let tables = Tables::create(&backend).await?;
    let ledger = tables.ledger();
    let ours = tables.store.table_identity().await?;
    let run = start_of(2, CUTOFF, &ours)?;
    ledger.start(&run).await?;
    let at = |created_at: &str, stamped| Checkpoint {
        position: position_at(created_at),
        counts: counts(stamped),
    };
    let refused = position_at("2025-11-20T05:00:00.000Z");
    let other = position_at("2025-11-20T04:30:00.000Z");
    // (checkpoint, counts, the one it may replace, whether it is taken)
    let moves = [
        ("2025-11-20T03:00:00.000Z", 30, None, true),
        ("2025-11-20T02:00:00.000Z", 20, None, false),
        ("2025-11-20T03:00:00.000Z", 31, None, true),
        ("2025-11-20T05:00:00.000Z", 50, None, true),
        // Behind, in place of a checkpoint the item no longer holds: refused.
        ("2025-11-20T01:00:00.000Z", 10, Some(&other), false),
        // Behind, in place of the one it holds (refused as a start key): taken.
        ("2025-11-20T01:00:00.000Z", 10, Some(&refused), true),
        ("2025-11-20T00:30:00.000Z", 5, Some(&refused), false),
        ("2025-11-20T04:00:00.000Z", 40, Some(&refused), true),
    ];
    for (created_at, stamped, replacing, expected) in moves {
        let moved = ledger
            .save_checkpoint(&run, &at(created_at, stamped), replacing)
            .await?;
        ensure!(
            moved == expected,
            "{created_at} replacing {replacing:?}: moved {moved}"
        );
    }
    let other_cutoff = start_of(2, "2025-11-20T06:31:00", &ours)?;
    ensure!(
        !ledger
            .save_checkpoint(&other_cutoff, &at("2025-11-20T05:00:00.000Z", 50), None)
            .await?,
        "another cutoff's checkpoint is refused"
    );
    let stored = tables.last_run().await?;
    ensure!(
        stored.checkpoint == Some(position_at("2025-11-20T04:00:00.000Z"))
            && stored.counts.stamped == 40,
        "{stored:?}"
    );
    ledger
        .complete(&run, &counts(90), Completion::Forward)
        .await?;
    ensure!(
        !ledger
            .save_checkpoint(&run, &at("2025-11-20T05:00:00.000Z", 50), None)
            .await?,
        "a completed run takes no checkpoint"
    );
    let item = raw_item(&tables, 2).await?;
    ensure!(
        !item.contains_key("checkpoint")
            && item.get("stamped") == Some(&AttributeValue::N("90".into())),
        "{item:?}"
    );
    Ok(())
}

/// Two days, each with a backlog spread over two partitions, the older
/// executions first in offset order (the example, extended):
/// partition 0 = [X1, Y5, X3], partition 1 = [Y3, X4, X2]. Each day is
/// stamped once, by its newest execution; the others end superseded without
/// a request to either table; nothing waits on anything forever.
pub async fn a_backlog_is_stamped_once_by_the_newest_of_each_day(
    backend: Backend,
) -> anyhow::Result<()> {
    let tables = Tables::create(&backend).await?;
    let day_records = sample_day(200);
    let x_selected = day_records.before_cutoff;
    tables.chargebacks.seed(day_records.chargebacks()).await?;
    let y_records: Vec<Chargeback> = (0..20)
        .map(|i| {
            chargeback(
                &format!("y-{i:02}"),
                "2025-11-21",
                &format!("2025-11-21T0{}:10:00Z", i % 9),
            )
        })
        .collect();
    tables
        .chargebacks
        .seed(y_records.clone().into_iter())
        .await?;
    let x =
        |sequence, at: &str| consolidation("2025-11-20", sequence, 4, &format!("2025-11-20T{at}"));
    let y =
        |sequence, at: &str| consolidation("2025-11-21", sequence, 5, &format!("2025-11-21T{at}"));
    let batch = kafka_event(&[
        Message::json(0, 10, &x(1, "02:00:00")),
        Message::json(0, 11, &y(5, "23:00:00")),
        Message::json(0, 12, &x(3, "05:00:00")),
        Message::json(1, 20, &y(3, "12:00:00")),
        Message::json(1, 21, &x(4, "06:30:00")),
        Message::json(1, 22, &x(2, "04:00:00")),
    ]);
    let store = Arc::new(tables.chargebacks.store());
    let ledger = tables.ledger();
    let handler = handler(&store, &tables, &ledger, None);
    let outcome = handler.handle(batch, &Invocation::unbounded("r1")).await?;

    let by_offset: BTreeMap<i64, &MessageOutcome> = outcome
        .outcomes
        .iter()
        .map(|(id, o)| (id.offset, o))
        .collect();
    for (offset, by) in [(10, 4), (12, 4), (22, 4), (20, 5)] {
        ensure!(
            matches!(by_offset.get(&offset), Some(MessageOutcome::Superseded { by_execution }) if *by_execution == by),
            "offset {offset}: {:?}",
            by_offset.get(&offset)
        );
    }
    let written = |offset| match by_offset.get(&offset) {
        Some(MessageOutcome::Applied(report)) => Ok(report.written + report.already_applied),
        other => Err(anyhow!("offset {offset}: {other:?}")),
    };
    ensure!(written(21)? == x_selected, "X4 stamps its day once");
    // Y's day: our 20 records and the sample day's spill onto its next date.
    let y_selected = written(11)?;
    ensure!(y_selected >= 20, "Y5 stamps its day once: {outcome:?}");
    ensure!(outcome.response().batch_item_failures.is_empty());
    // Per leader: one read of its day's runs, a start, a completion.
    ensure!(
        ledger.requests_sent() == Some(6),
        "ledger requests {:?}: followers cost none",
        ledger.requests_sent()
    );
    let summary = outcome.summary();
    ensure!(
        summary.chargebacks_updated == x_selected + y_selected && summary.messages_superseded == 4,
        "{summary:?}"
    );
    stamped_before(
        &tables.chargebacks,
        sample_day(200),
        "2025-11-20T06:30:01",
        4,
    )
    .await?;
    for record in &y_records {
        ensure!(tables.chargebacks.execution_of(record).await? == Some(5));
    }
    Ok(())
}

/// The newest event of a day is rejected for good (dead-lettered): the
/// older ones of the batch then run as if alone, and the day ends at the
/// newest of them, as without the plan.
pub async fn when_the_newest_cannot_complete_the_older_ones_run_alone(
    backend: Backend,
) -> anyhow::Result<()> {
    let table = TestTable::create(&backend, Default::default()).await?;
    let day_records = sample_day(100);
    let selected = day_records.before_cutoff;
    table.seed(day_records.chargebacks()).await?;
    let (proxy, endpoint) = FaultProxy::start(&table.endpoint).await?;
    // Only execution 4's writes name its output path.
    if let Ok(mut needle) = proxy.reject_updates_containing.lock() {
        *needle = Some("run=4".into());
    }
    let client = local_client(&load_sdk_config(Some(REGION)).await, &endpoint);
    let (handler, sink) = handler_on_store(
        DynamoStore::new(client, &table.name, INDEX).with_write_mode(table.write_mode),
    );
    let batch = kafka_event(&[
        Message::json(
            0,
            0,
            &consolidation("2025-11-20", 2, 4, "2025-11-20T05:00:00"),
        ),
        Message::json(1, 0, &consolidation("2025-11-20", 3, 4, CUTOFF)),
        Message::json(1, 1, &consolidation("2025-11-20", 4, 4, CUTOFF)),
    ]);
    let outcome: BatchOutcome = handler.handle(batch, &Invocation::unbounded("r1")).await?;
    let labels: Vec<(String, i64, &str)> = outcome
        .outcomes
        .iter()
        .map(|(id, o)| (id.partition.clone(), id.offset, o.label()))
        .collect();
    ensure!(
        labels
            == [
                (format!("{TOPIC}-0"), 0, "applied"),
                (format!("{TOPIC}-1"), 0, "applied"),
                (format!("{TOPIC}-1"), 1, "dead_lettered"),
            ],
        "{labels:?}"
    );
    ensure!(sink.count() == 1);
    let stamped_by_3 = match &outcome.outcomes[1].1 {
        MessageOutcome::Applied(report) => report.written + report.already_applied,
        other => return Err(anyhow!("{other:?}")),
    };
    ensure!(
        stamped_by_3 == selected,
        "execution 3 stamped its whole selection"
    );
    stamped_before(&table, sample_day(100), "2025-11-20T06:30:01", 3).await
}

fn handler_on_store(store: DynamoStore) -> (Arc<BatchHandler<DynamoStore>>, Arc<RecordingSink>) {
    let sink = Arc::new(RecordingSink::default());
    let handler = BatchHandler::new(FanOut::new(Arc::new(store), 8, Arc::default()))
        .with_dead_letters(Arc::clone(&sink) as Arc<dyn DeadLetterSink>);
    (Arc::new(handler), sink)
}
