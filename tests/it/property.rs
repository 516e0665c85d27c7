//! A property test of the failure semantics, driving the real handler and
//! DynamoDB adapter on the embedded engine through the fault-injecting proxy.
//!
//! Property: after any sequence of deliveries of a set of events, with
//! duplicates, backlogs (several executions of a day in one batch),
//! reordering across partitions, server errors, outages and deadlines that
//! hand messages back for Lambda to deliver again, with and without a run
//! ledger (checkpoints, resumes), every record's consolidation attributes
//! end exactly as if each event had been applied once, in order of
//! execution (`updated_at` aside). And after every delivery, no message is
//! reported done (applied or superseded) whose effect is not in the table:
//! every record it selects is at its execution or newer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure};
use consolidation_updater::app::{
    BatchHandler, DynamoLedger, DynamoStore, FanOut, Invocation, Ledger, load_sdk_config,
    local_client,
};
use consolidation_updater::local::{Chargeback, TableShape, ensure_ledger_table};
use consolidation_updater::model::MessageOutcome;
use consolidation_updater::testing::{RetryPolicy, RunLedger};
use libtest_mimic::Trial;
use serde_json::Value;

use crate::Backends;
use crate::proxy::FaultProxy;
use crate::support::*;

pub fn tests(_: &Backends) -> Vec<Trial> {
    trials!("property"; deliveries_with_faults_end_as_if_each_event_applied_once_in_order)
}

/// Cases run; each is one random world, reproducible from its seed.
const CASES: u64 = 24;
/// Deliveries before a case gives up (Lambda would keep retrying).
const MAX_DELIVERIES: usize = 200;
const DATES: [&str; 2] = ["2025-11-20", "2025-11-21"];

struct Event {
    date: &'static str,
    sequence: u64,
    /// `created_at` below this is covered (the event's cutoff).
    cutoff: String,
    json: Value,
}

pub async fn deliveries_with_faults_end_as_if_each_event_applied_once_in_order()
-> anyhow::Result<()> {
    let mut seen = Seen::default();
    for seed in 0..CASES {
        one_case(seed, &mut seen)
            .await
            .map_err(|e| anyhow!("seed {seed}: {e:#}"))?;
    }
    eprintln!("property: {CASES} cases, {seen:?}");
    // The faults and backlogs must actually have bitten, or the property
    // says nothing.
    ensure!(
        seen.handed_back > CASES as usize,
        "only {} messages were handed back",
        seen.handed_back
    );
    ensure!(
        seen.superseded > 0 && seen.stopped_by_deadline > 0,
        "no backlog superseded or no deadline stop: {seen:?}"
    );
    Ok(())
}

/// What the cases went through, to prove the property was exercised.
#[derive(Debug, Default)]
struct Seen {
    deliveries: usize,
    handed_back: usize,
    superseded: usize,
    stopped_by_deadline: usize,
    resumed: usize,
}

/// Half the cases keep runs in a ledger (through the same faulty proxy).
async fn one_case(seed: u64, seen: &mut Seen) -> anyhow::Result<()> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    let records: Vec<Chargeback> = DATES
        .iter()
        .flat_map(|date| {
            (0..24).map(move |hour| {
                chargeback(
                    &format!("cb-{date}-{hour}"),
                    date,
                    &format!("{date}T{hour:02}:17:00.000Z"),
                )
            })
        })
        .collect();
    table.seed(records.clone().into_iter()).await?;

    // Each day gets 2 to 4 executions at increasing hours.
    let mut events = Vec::new();
    for date in DATES {
        let total = rng.u64(2..=4);
        let mut hour = 0;
        for sequence in 1..=total {
            hour = (hour + rng.u32(1..=8)).min(23);
            let execution_time = format!("{date}T{hour:02}:00:00");
            events.push(Event {
                date,
                sequence,
                cutoff: format!("{date}T{hour:02}:00:01"),
                json: consolidation(date, sequence, total, &execution_time),
            });
        }
    }

    // Each event is published to a random partition; partitions keep their order.
    let partitions = 3_i64;
    let mut logs: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    let mut order: Vec<usize> = (0..events.len()).collect();
    rng.shuffle(&mut order);
    for event in order {
        logs.entry(rng.i64(0..partitions)).or_default().push(event);
    }

    let (proxy, endpoint) = FaultProxy::start(&table.endpoint).await?;
    let client = local_client(&load_sdk_config(Some(REGION)).await, &endpoint);
    // Pages of 5 keys: a day is several pages, so checkpoints move.
    let store =
        Arc::new(DynamoStore::new(client.clone(), &table.name, INDEX).with_keys_per_page(5));
    let fast = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(4),
        ..RetryPolicy::default()
    };
    let margin = Duration::from_millis(20);
    let mut handler =
        BatchHandler::new(FanOut::new(store, 8, Arc::default()).with_retry_policy(fast))
            .with_deadline_margin(margin);
    if seed.is_multiple_of(2) {
        let ledger_table = format!("{}-ledger", table.name);
        ensure_ledger_table(&table.client, &ledger_table).await?;
        let ledger = Arc::new(DynamoLedger::new(&client, &ledger_table, 35));
        handler = handler.with_ledger(Ledger::new(ledger as Arc<dyn RunLedger>, &ledger_table));
    }
    let handler = Arc::new(handler);

    // Lambda's side: a committed offset per partition, batches from there.
    let mut committed: HashMap<i64, usize> = HashMap::new();
    let mut deliveries = 0;
    loop {
        let done = logs
            .iter()
            .all(|(p, log)| committed.get(p).copied().unwrap_or(0) >= log.len());
        if done {
            break;
        }
        ensure!(
            deliveries < MAX_DELIVERIES,
            "not done after {MAX_DELIVERIES} deliveries"
        );
        deliveries += 1;
        proxy.down.store(rng.u8(0..5) == 0, Ordering::SeqCst);
        proxy
            .server_errors_per_mille
            .store(rng.u64(0..300), Ordering::SeqCst);
        let mut messages = Vec::new();
        for (&partition, log) in &logs {
            let from = committed.get(&partition).copied().unwrap_or(0);
            // At-least-once: sometimes an already committed message comes again.
            let start = if from > 0 && rng.bool() {
                rng.usize(0..from)
            } else {
                from
            };
            let end = (from + rng.usize(1..=3)).min(log.len());
            for (offset, &event) in log.iter().enumerate().take(end).skip(start) {
                messages.push(Message::json(partition, offset as i64, &events[event].json));
            }
        }
        rng.shuffle(&mut messages);
        let mut invocation = Invocation::unbounded(format!("delivery-{deliveries}"));
        // Some deliveries run out of time part way.
        if rng.u8(0..4) == 0 {
            invocation.deadline =
                Some(Instant::now() + margin + Duration::from_millis(rng.u64(0..15)));
        }
        let outcome = handler.handle(kafka_event(&messages), &invocation).await?;
        seen.deliveries += 1;
        seen.handed_back += outcome.response().batch_item_failures.len();
        // Done means done: what every applied or superseded message selects
        // is at its execution or newer, now.
        let stamped = table_executions(&table).await?;
        for (id, ended) in &outcome.outcomes {
            match ended {
                MessageOutcome::Superseded { .. } => seen.superseded += 1,
                MessageOutcome::Unfinished { done, .. } => {
                    seen.stopped_by_deadline += 1;
                    seen.resumed += usize::from(done.resumed);
                    continue;
                }
                MessageOutcome::Applied(report) => seen.resumed += usize::from(report.resumed),
                _ => continue,
            }
            let message = messages
                .iter()
                .find(|m| {
                    format!("{TOPIC}-{}", m.partition) == id.partition && m.offset == id.offset
                })
                .ok_or_else(|| anyhow!("no message {id:?}"))?;
            let event = &events[logs[&message.partition][message.offset as usize]];
            for record in records
                .iter()
                .filter(|r| r.partition_date == event.date && r.created_at < event.cutoff)
            {
                let at = stamped.get(&record.chargeback_id).copied().flatten();
                ensure!(
                    at >= Some(event.sequence),
                    "delivery {deliveries}: {id:?} (execution {} of {}) reported {} but {} is at {at:?}",
                    event.sequence,
                    event.date,
                    ended.label(),
                    record.chargeback_id
                );
            }
        }
        let failed: HashMap<i64, i64> = outcome
            .response()
            .batch_item_failures
            .iter()
            .map(|f| {
                let partition = f
                    .item_identifier
                    .partition
                    .rsplit('-')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(-1);
                (partition, f.item_identifier.offset)
            })
            .fold(HashMap::new(), |mut first, (p, o)| {
                let entry = first.entry(p).or_insert(o);
                *entry = (*entry).min(o);
                first
            });
        for (&partition, log) in &logs {
            let from = committed.get(&partition).copied().unwrap_or(0);
            let end = messages
                .iter()
                .filter(|m| m.partition == partition)
                .map(|m| m.offset as usize + 1)
                .max()
                .unwrap_or(from)
                .min(log.len());
            let next = match failed.get(&partition) {
                Some(&offset) => (offset as usize).max(from),
                None => end.max(from),
            };
            committed.insert(partition, next);
        }
    }
    proxy.down.store(false, Ordering::SeqCst);

    for record in &records {
        let expected = events
            .iter()
            .filter(|e| e.date == record.partition_date && record.created_at < e.cutoff)
            .max_by_key(|e| e.sequence);
        let item = table
            .item(record)
            .await?
            .ok_or_else(|| anyhow!("{} vanished", record.chargeback_id))?;
        let attribute = |name: &str| item.get(name).cloned();
        match expected {
            None => ensure!(
                attribute("consolidation_execution").is_none(),
                "{} stamped by no event, yet has {:?}",
                record.chargeback_id,
                attribute("consolidation_execution")
            ),
            Some(event) => {
                let json = &event.json;
                let s = |name: &str| item.get(name).and_then(text).map(str::to_owned);
                let n = |name: &str| item.get(name).and_then(number);
                ensure!(
                    n("consolidation_execution") == Some(event.sequence),
                    "{}: execution {:?} expected {}",
                    record.chargeback_id,
                    n("consolidation_execution"),
                    event.sequence
                );
                ensure!(s("consolidation_s3_path").as_deref() == json["output_path"].as_str());
                ensure!(s("consolidation_date").as_deref() == json["completed_at"].as_str());
                ensure!(s("consolidation_job_name").as_deref() == json["job_name"].as_str());
                ensure!(s("output_format").as_deref() == json["output_format"].as_str());
                ensure!(n("records_in_consolidation") == json["records_processed"].as_u64());
                ensure!(s("consolidation_status").as_deref() == Some("completed"));
            }
        }
    }
    Ok(())
}

/// Every record's `consolidation_execution`, by id, in one scan.
async fn table_executions(table: &TestTable) -> anyhow::Result<HashMap<String, Option<u64>>> {
    let mut found = HashMap::new();
    let mut start = None;
    loop {
        let page = table
            .client
            .scan()
            .table_name(&table.name)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await?;
        for item in page.items() {
            if let Some(id) = item.get("chargeback_id").and_then(text) {
                found.insert(
                    id.to_owned(),
                    item.get("consolidation_execution").and_then(number),
                );
            }
        }
        match page.last_evaluated_key() {
            Some(key) if !key.is_empty() => start = Some(key.clone()),
            _ => return Ok(found),
        }
    }
}
