//! A property test of the failure semantics, driving the real handler and
//! DynamoDB adapter on the embedded engine through the fault-injecting proxy.
//!
//! Property: after any sequence of deliveries of a set of events, with
//! duplicates, reordering across partitions, server errors and outages that
//! hand messages back for Lambda to deliver again, every record's
//! consolidation attributes end exactly as if each event had been applied
//! once, in order of execution (`updated_at` aside).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{anyhow, ensure};
use consolidation_updater::app::{
    BatchHandler, DynamoStore, FanOut, Invocation, load_sdk_config, local_client,
};
use consolidation_updater::local::{Chargeback, TableShape};
use consolidation_updater::testing::RetryPolicy;
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
    let mut handed_back = 0;
    let mut deliveries = 0;
    for seed in 0..CASES {
        let (delivered, back) = one_case(seed)
            .await
            .map_err(|e| anyhow!("seed {seed}: {e:#}"))?;
        deliveries += delivered;
        handed_back += back;
    }
    eprintln!(
        "property: {CASES} cases, {deliveries} deliveries, {handed_back} messages handed back and redelivered"
    );
    // The faults must actually have bitten, or the property says nothing.
    ensure!(
        handed_back > CASES as usize,
        "only {handed_back} messages were handed back"
    );
    Ok(())
}

/// Returns how many deliveries the case took and how many messages were handed back.
async fn one_case(seed: u64) -> anyhow::Result<(usize, usize)> {
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
    let store = Arc::new(DynamoStore::new(client, &table.name, INDEX));
    let fast = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(4),
        ..RetryPolicy::default()
    };
    let handler = Arc::new(BatchHandler::new(
        FanOut::new(store, 8, Arc::default()).with_retry_policy(fast),
    ));

    // Lambda's side: a committed offset per partition, batches from there.
    let mut committed: HashMap<i64, usize> = HashMap::new();
    let mut deliveries = 0;
    let mut handed_back = 0;
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
        let outcome = handler
            .handle(
                kafka_event(&messages),
                &Invocation::unbounded(format!("delivery-{deliveries}")),
            )
            .await?;
        handed_back += outcome.response().batch_item_failures.len();
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
    Ok((deliveries, handed_back))
}
