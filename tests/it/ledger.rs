//! The run ledger against real servers: a completed run answers a
//! redelivery with one read, a run's state only moves forward, a recreated
//! table inherits nothing, and a ledger that fails never stops stamping.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context as _, anyhow, ensure};
use aws_sdk_dynamodb::types::AttributeValue;
use consolidation_updater::app::{
    BatchHandler, DynamoLedger, DynamoStore, FanOut, Invocation, Ledger, load_sdk_config,
    local_client,
};
use consolidation_updater::local::{TableShape, create_table, ensure_ledger_table};
use consolidation_updater::model::{
    BatchOutcome, Completion, ConsolidationEvent, DecodedValue, MessageOutcome, PartitionDate,
    Recorded, Run, RunCounts, RunStart, RunStatus, TableIdentity, decode_value,
};
use consolidation_updater::testing::{ChargebackStore, RunLedger};
use libtest_mimic::Trial;
use serde_json::Value;

use crate::dead_letters::{create_queue, local_sdk, parked_letter, queue_depth};
use crate::proxy::FaultProxy;
use crate::scenarios::sample_day;
use crate::support::*;
use crate::{Backends, ServerTest};

pub fn tests(backends: &Backends) -> Vec<Trial> {
    const LEDGER: &[(&str, ServerTest)] = server_tests![
        a_completed_run_answers_its_redelivery_with_one_read,
        a_run_only_moves_forward,
        a_recreated_table_inherits_no_runs,
        a_ledger_that_fails_never_stops_stamping,
    ];
    let mut trials: Vec<Trial> = LEDGER
        .iter()
        .flat_map(|(name, test)| backends.on_both_servers("ledger", name, *test))
        .collect();
    trials.push(backends.on_moto(
        "moto::ledger::redrive_deletes_a_letter_whose_run_is_completed",
        redrive_deletes_a_letter_whose_run_is_completed,
    ));
    trials
}

/// A chargebacks table with its ledger table beside it on the same server.
pub(crate) struct Tables {
    pub(crate) chargebacks: TestTable,
    pub(crate) ledger_table: String,
    pub(crate) store: Arc<DynamoStore>,
}

impl Tables {
    pub(crate) async fn create(backend: &Backend) -> anyhow::Result<Self> {
        let chargebacks = TestTable::create(backend, TableShape::default()).await?;
        let ledger_table = format!("{}-ledger", chargebacks.name);
        ensure_ledger_table(&chargebacks.client, &ledger_table).await?;
        let store = Arc::new(chargebacks.store());
        Ok(Self {
            chargebacks,
            ledger_table,
            store,
        })
    }

    pub(crate) fn ledger(&self) -> Arc<DynamoLedger> {
        Arc::new(DynamoLedger::new(
            &self.chargebacks.client,
            &self.ledger_table,
            35,
        ))
    }

    /// A handler over the shared store, keeping runs in `ledger`.
    fn handler(&self, ledger: Arc<DynamoLedger>) -> Arc<BatchHandler<DynamoStore>> {
        Arc::new(
            BatchHandler::new(FanOut::new(Arc::clone(&self.store), 16, Arc::default()))
                .with_ledger(Ledger::new(ledger, &self.ledger_table)),
        )
    }

    pub(crate) async fn runs(&self) -> anyhow::Result<Vec<Run>> {
        let mut runs = self.ledger().runs(day()).await?;
        runs.sort_by_key(|r| r.execution_sequence);
        Ok(runs)
    }

    /// The day's run of the highest execution.
    pub(crate) async fn last_run(&self) -> anyhow::Result<Run> {
        self.runs()
            .await?
            .pop()
            .ok_or_else(|| anyhow::anyhow!("no run"))
    }
}

pub(crate) fn day() -> PartitionDate {
    PartitionDate::parse("2025-11-20").unwrap_or_else(|_| unreachable!("a valid date"))
}

fn event_of(sequence: u64, execution_time: &str) -> Value {
    kafka_event(&[Message::json(
        0,
        i64::try_from(sequence).unwrap_or(0),
        &consolidation("2025-11-20", sequence, 4, execution_time),
    )])
}

async fn handle(
    handler: &Arc<BatchHandler<DynamoStore>>,
    event: Value,
    request_id: &str,
) -> anyhow::Result<BatchOutcome> {
    Ok(handler
        .handle(event, &Invocation::unbounded(request_id))
        .await?)
}

pub(crate) fn only_outcome(outcome: &BatchOutcome) -> anyhow::Result<&MessageOutcome> {
    match outcome.outcomes.as_slice() {
        [(_, one)] => Ok(one),
        all => Err(anyhow!("expected one outcome, got {all:?}")),
    }
}

/// Delivered again after its run completed, a message costs one ledger read:
/// no request to the chargebacks table (no index read, no write). An older
/// execution is answered too; a newer one is stamped.
pub async fn a_completed_run_answers_its_redelivery_with_one_read(
    backend: Backend,
) -> anyhow::Result<()> {
    let tables = Tables::create(&backend).await?;
    let day_records = sample_day(300);
    tables.chargebacks.seed(day_records.chargebacks()).await?;
    let ledger = tables.ledger();
    let handler = tables.handler(Arc::clone(&ledger));

    let first = handle(&handler, event_of(2, "2025-11-20T06:30:00"), "r1").await?;
    let MessageOutcome::Applied(report) = only_outcome(&first)? else {
        return Err(anyhow!("first delivery: {first:?}"));
    };
    // (On a cold server a timed-out first attempt may have been applied:
    // its retry then finds the record already stamped.)
    ensure!(
        report.written + report.already_applied == day_records.before_cutoff,
        "{report:?}"
    );
    let runs = tables.runs().await?;
    let [run] = runs.as_slice() else {
        return Err(anyhow!("one run expected: {runs:?}"));
    };
    let identity = tables.store.table_identity().await?;
    ensure!(
        run.status == RunStatus::Completed
            && run.execution_sequence == 2
            && run.total_executions == Some(4)
            && run.table == identity
            && run.counts.stamped == report.written
            && run.counts.already_applied == report.already_applied
            && run.records_processed == Some(1002)
            && run.duplicates_removed == Some(3)
            && run.deliveries == 1
            && run.started_at.is_some()
            && run.finished_at >= run.started_at,
        "{run:?}"
    );
    // The TTL attribute: epoch seconds, 35 days on.
    let expires_at = raw_item(&tables, 2)
        .await?
        .get("expires_at")
        .and_then(number)
        .context("expires_at")?;
    let in_35_days = chrono::Utc::now().timestamp() as u64 + 35 * 86_400;
    ensure!(
        expires_at.abs_diff(in_35_days) < 600,
        "expires_at {expires_at}, expected about {in_35_days}"
    );

    for (sequence, cutoff) in [(2, "2025-11-20T06:30:00"), (1, "2025-11-20T03:00:00")] {
        let table_requests = tables.store.requests_sent();
        let ledger_requests = ledger.requests_sent().unwrap_or(0);
        let again = handle(&handler, event_of(sequence, cutoff), "r2").await?;
        ensure!(
            matches!(
                only_outcome(&again)?,
                MessageOutcome::Superseded { by_execution: 2 }
            ),
            "execution {sequence}: {again:?}"
        );
        ensure!(again.response().batch_item_failures.is_empty());
        ensure!(again.summary().messages_superseded == 1);
        ensure!(
            tables.store.requests_sent() == table_requests,
            "the chargebacks table was asked {} times",
            tables.store.requests_sent() - table_requests
        );
        ensure!(ledger.requests_sent().unwrap_or(0) == ledger_requests + 1);
    }
    ensure!(
        tables.runs().await?[0].deliveries == 1,
        "an answer is no delivery"
    );

    // A newer execution with a later cutoff is stamped, and recorded.
    let newer = handle(&handler, event_of(3, "2025-11-20T12:00:00"), "r3").await?;
    ensure!(
        matches!(only_outcome(&newer)?, MessageOutcome::Applied(_)),
        "{newer:?}"
    );
    let some_record = day_records
        .chargebacks()
        .next()
        .context("a record of the day")?;
    ensure!(tables.chargebacks.execution_of(&some_record).await? == Some(3));
    let statuses: Vec<_> = tables
        .runs()
        .await?
        .iter()
        .map(|r| (r.execution_sequence, r.status))
        .collect();
    ensure!(
        statuses == [(2, RunStatus::Completed), (3, RunStatus::Completed)],
        "{statuses:?}"
    );
    Ok(())
}

pub(crate) async fn raw_item(
    tables: &Tables,
    sequence: u64,
) -> anyhow::Result<std::collections::HashMap<String, AttributeValue>> {
    tables
        .chargebacks
        .client
        .get_item()
        .table_name(&tables.ledger_table)
        .key("partition_date", AttributeValue::S("2025-11-20".into()))
        .key(
            "execution_sequence",
            AttributeValue::N(sequence.to_string()),
        )
        .consistent_read(true)
        .send()
        .await?
        .item
        .context("no ledger item")
}

pub(crate) fn start_of(
    sequence: u64,
    execution_time: &str,
    table: &TableIdentity,
) -> anyhow::Result<RunStart> {
    let value = consolidation("2025-11-20", sequence, 4, execution_time);
    let encoded = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        value.to_string(),
    );
    let decoded = decode_value(Some(&Value::from(encoded)))?;
    let DecodedValue::Consolidation(event) = decoded else {
        return Err(anyhow!("not a consolidation event"));
    };
    Ok(RunStart::for_event(
        &event as &ConsolidationEvent,
        table.clone(),
    ))
}

pub(crate) fn counts(stamped: u64) -> RunCounts {
    RunCounts {
        stamped,
        ..RunCounts::default()
    }
}

/// Through the ledger table itself: concurrent deliveries of one run count
/// as deliveries and complete it once, keeping the first completion's
/// counts; `completed` never goes back; a later cutoff or `--force` moves
/// it on; another table's run is replaced, not continued.
pub async fn a_run_only_moves_forward(backend: Backend) -> anyhow::Result<()> {
    let tables = Tables::create(&backend).await?;
    let ledger = tables.ledger();
    let ours = tables.store.table_identity().await?;
    let run = start_of(2, "2025-11-20T06:30:00", &ours)?;

    let (a, b) = tokio::join!(ledger.start(&run), ledger.start(&run));
    a?;
    b?;
    let (ten, twenty) = (counts(10), counts(20));
    let (first, second) = tokio::join!(
        ledger.complete(&run, &ten, Completion::Forward),
        ledger.complete(&run, &twenty, Completion::Forward),
    );
    let recorded = [first?, second?];
    ensure!(
        recorded
            .iter()
            .filter(|r| **r == Recorded::Completed)
            .count()
            == 1,
        "{recorded:?}"
    );
    let winner = if recorded[0] == Recorded::Completed {
        10
    } else {
        20
    };
    let stored = &tables.runs().await?[0];
    ensure!(
        (stored.status, stored.counts.stamped, stored.deliveries)
            == (RunStatus::Completed, winner, 2),
        "{stored:?}"
    );

    // Started again: still completed, one more delivery.
    ledger.start(&run).await?;
    let stored = &tables.runs().await?[0];
    ensure!(
        (stored.status, stored.deliveries) == (RunStatus::Completed, 3),
        "{stored:?}"
    );
    // The same cutoff completes nothing again, unless forced.
    ensure!(
        ledger
            .complete(&run, &counts(30), Completion::Forward)
            .await?
            == Recorded::AlreadyCompleted
    );
    ensure!(
        ledger
            .complete(&run, &counts(40), Completion::Force)
            .await?
            == Recorded::Completed
    );
    ensure!(tables.runs().await?[0].counts.stamped == 40);
    // An earlier cutoff never replaces a later one, forced or not.
    let earlier = start_of(2, "2025-11-20T05:00:00", &ours)?;
    ensure!(
        ledger
            .complete(&earlier, &counts(50), Completion::Force)
            .await?
            == Recorded::AlreadyCompleted
    );
    // A later cutoff of the same execution moves the run on.
    let later = start_of(2, "2025-11-20T09:00:00", &ours)?;
    ensure!(
        ledger
            .complete(&later, &counts(60), Completion::Forward)
            .await?
            == Recorded::Completed
    );
    let stored = &tables.runs().await?[0];
    ensure!(
        stored.counts.stamped == 60
            && stored.execution_time.map(|t| t.to_rfc3339())
                == Some("2025-11-20T09:00:00+00:00".into()),
        "{stored:?}"
    );

    // Another table of the same name (recreated): its run starts afresh.
    let other = TableIdentity {
        name: ours.name.clone(),
        id: format!("{}-recreated", ours.id),
    };
    let theirs = start_of(2, "2025-11-20T06:30:00", &other)?;
    ensure!(
        ledger
            .complete(&theirs, &counts(1), Completion::Force)
            .await?
            == Recorded::AlreadyCompleted,
        "no completion of a run never started for this table"
    );
    ledger.start(&theirs).await?;
    let stored = &tables.runs().await?[0];
    ensure!(
        (stored.status, stored.deliveries, &stored.table) == (RunStatus::InProgress, 1, &other),
        "{stored:?}"
    );
    Ok(())
}

/// A chargebacks table deleted and created again under the same name has a
/// new `TableId`: the old table's completed run does not answer for it.
pub async fn a_recreated_table_inherits_no_runs(backend: Backend) -> anyhow::Result<()> {
    let tables = Tables::create(&backend).await?;
    let day_records = sample_day(50);
    tables.chargebacks.seed(day_records.chargebacks()).await?;
    let first = handle(
        &tables.handler(tables.ledger()),
        event_of(2, "2025-11-20T06:30:00"),
        "r1",
    )
    .await?;
    ensure!(
        matches!(only_outcome(&first)?, MessageOutcome::Applied(_)),
        "{first:?}"
    );
    let before = tables.store.table_identity().await?;

    let client = &tables.chargebacks.client;
    let name = &tables.chargebacks.name;
    client.delete_table().table_name(name).send().await?;
    create_table(client, name, INDEX, tables.chargebacks.shape).await?;
    tables.chargebacks.seed(day_records.chargebacks()).await?;
    // A new process: the table described afresh.
    let store = Arc::new(tables.chargebacks.store());
    let after = store.table_identity().await?;
    ensure!(
        after.id != before.id,
        "same TableId after recreation: {after:?}"
    );
    let handler = Arc::new(
        BatchHandler::new(FanOut::new(store, 16, Arc::default()))
            .with_ledger(Ledger::new(tables.ledger(), &tables.ledger_table)),
    );
    let again = handle(&handler, event_of(2, "2025-11-20T06:30:00"), "r2").await?;
    let MessageOutcome::Applied(report) = only_outcome(&again)? else {
        return Err(anyhow!("the recreated table was not stamped: {again:?}"));
    };
    ensure!(report.written == day_records.before_cutoff, "{report:?}");
    let run = &tables.runs().await?[0];
    ensure!(
        run.table == after && run.status == RunStatus::Completed && run.deliveries == 1,
        "{run:?}"
    );
    Ok(())
}

/// Missing, unreachable or refusing (AccessDenied), the ledger never stops
/// a message: it is stamped in full, and the invocation stops asking the
/// ledger after its first failure.
pub async fn a_ledger_that_fails_never_stops_stamping(backend: Backend) -> anyhow::Result<()> {
    let tables = Tables::create(&backend).await?;
    let day_records = sample_day(40);
    tables.chargebacks.seed(day_records.chargebacks()).await?;
    let sdk = load_sdk_config(Some(REGION)).await;
    let (proxy, proxied) = FaultProxy::start(&tables.chargebacks.endpoint).await?;
    *proxy
        .deny_requests_containing
        .lock()
        .map_err(|_| anyhow!("lock"))? = Some(tables.ledger_table.clone());
    let ledgers = [
        (
            "missing",
            DynamoLedger::new(&tables.chargebacks.client, "no-such-ledger-table", 35),
        ),
        (
            "unreachable",
            DynamoLedger::new(
                &local_client(&sdk, "http://127.0.0.1:9"),
                &tables.ledger_table,
                35,
            ),
        ),
        (
            "denied",
            DynamoLedger::new(&local_client(&sdk, &proxied), &tables.ledger_table, 35),
        ),
    ];
    for (sequence, (why, ledger)) in (1..).zip(ledgers) {
        let ledger = Arc::new(ledger);
        let handler = tables.handler(Arc::clone(&ledger));
        // Two messages of one partition (so, one after the other) in one invocation.
        let event = kafka_event(&[
            Message::json(
                0,
                1,
                &consolidation("2025-11-20", sequence, 4, "2025-11-20T06:30:00"),
            ),
            Message::json(
                0,
                2,
                &consolidation("2025-11-21", sequence, 4, "2025-11-21T06:30:00"),
            ),
        ]);
        let outcome = handle(&handler, event, &format!("r-{why}")).await?;
        let summary = outcome.summary();
        ensure!(
            summary.messages_processed == 2 && summary.messages_retried == 0,
            "{why}: {outcome:?}"
        );
        let record = day_records.chargebacks().next().context("a record")?;
        ensure!(
            tables.chargebacks.execution_of(&record).await? == Some(sequence),
            "{why}: not stamped"
        );
        // Asked once in the invocation (with the SDK's own retries), then left alone.
        let requests = ledger.requests_sent().unwrap_or(0);
        ensure!(
            (1..=3).contains(&requests),
            "{why}: {requests} ledger requests"
        );
    }
    ensure!(
        proxy.denied.load(Ordering::SeqCst) >= 1,
        "the proxy refused nothing"
    );
    ensure!(
        tables.runs().await?.is_empty(),
        "a failing ledger recorded runs"
    );
    Ok(())
}

/// `redrive` deletes a dead letter whose run the ledger has completed.
pub async fn redrive_deletes_a_letter_whose_run_is_completed(moto: String) -> anyhow::Result<()> {
    let tables = Tables::create(&Backend::embedded()).await?;
    tables
        .chargebacks
        .seed(sample_day(20).chargebacks())
        .await?;
    let handler = tables.handler(tables.ledger());
    let value = consolidation("2025-11-20", 2, 4, "2025-11-20T06:30:00");
    let applied = handle(&handler, event_of(2, "2025-11-20T06:30:00"), "r1").await?;
    ensure!(applied.summary().messages_processed == 1, "{applied:?}");

    let sqs = aws_sdk_sqs::Client::new(&local_sdk(&moto));
    let url = create_queue(&sqs, &[]).await?;
    let encoded = Value::from(base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        value.to_string(),
    ));
    sqs.send_message()
        .queue_url(&url)
        .message_body(parked_letter(7, encoded)?)
        .send()
        .await?;
    let reader = consolidation_updater::app::DeadLetterReader::new(sqs.clone(), &url);
    let before = tables.store.requests_sent();
    let summary = consolidation_updater::app::redrive(&reader, &handler, None, false).await?;
    ensure!(
        (summary.examined, summary.redriven) == (1, 1) && summary.still_failing.is_empty(),
        "{summary:?}"
    );
    ensure!(
        tables.store.requests_sent() == before,
        "the day was read or written again"
    );
    ensure!(
        queue_depth(&sqs, &url).await? == 0,
        "the letter is still queued"
    );
    Ok(())
}
