//! `--backlog`: executions 1 to 4 of one day waiting in one batch (a
//! backlog after an outage). The newest should stamp the day once and the
//! others end superseded without a read or a write; today's behaviour, the
//! same four events stamped in turn, rewrites every record each newer
//! execution selects again (about 2.5 × the day with these cutoffs).
//!
//! `seed` spreads `created_at` over the whole day, so the cutoffs below
//! select about a quarter, a half, three quarters and all of the records;
//! the exact selections are counted from the same synthetic records.

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use chrono::{NaiveDateTime, TimeDelta};
use consolidation_updater::local::ensure_ledger_table;

use super::delivery::Delivery;
use super::{
    Args, DAY, EventAt, Invoke, LedgerSetting, Mode, Projection, RunServer, count_at_execution,
    drop_table, fresh_table, kafka_event_file, seed, seeded_day, shorten, verdict,
};

/// Each execution of the day, its cutoff (time of day), and its place in
/// the one batch: older executions first in offsets in both partitions.
const EXECUTIONS: [(u64, &str, u32, i64); 4] = [
    (1, "06:00:00", 0, 100),
    (2, "12:00:00", 1, 200),
    (3, "18:00:00", 0, 101),
    (4, "23:59:59", 1, 201),
];
/// The newest execution, which should stamp the day alone.
const NEWEST: u64 = 4;
/// Write units of the one batch allowed per record of the newest selection.
const TARGET_UNITS_PER_RECORD: f64 = 1.02;

/// One way of delivering the four events, on its own fresh table.
struct Delivered {
    /// Every `invoke` it took (one, or four in order).
    deliveries: Vec<Delivery>,
    /// Records at the newest execution on the server afterwards.
    at_newest: u64,
}

impl Delivered {
    fn sum(&self, of: impl Fn(&Delivery) -> u64) -> u64 {
        self.deliveries.iter().map(of).sum()
    }

    fn all_done(&self) -> bool {
        self.deliveries.iter().all(Delivery::done)
    }

    fn outcome(&self) -> String {
        self.deliveries
            .iter()
            .map(Delivery::outcome)
            .collect::<Vec<_>>()
            .join(" | ")
    }

    fn wall(&self) -> Duration {
        self.deliveries.iter().map(|d| d.wall).sum()
    }

    fn ledger_requests(&self) -> Option<u64> {
        self.deliveries
            .iter()
            .map(|d| d.ledger_requests)
            .sum::<Option<u64>>()
    }
}

/// Runs the backlog measurement for each --write-mode and --ledger.
pub(super) async fn backlog_runs(
    args: &Args,
    client: &aws_sdk_dynamodb::Client,
    endpoint: &str,
) -> anyhow::Result<()> {
    let selections = selections(args.records)?;
    let newest = selections[EXECUTIONS.len() - 1];
    println!(
        "\nbacklog: {} records of {DAY}; executions 1-4 cut off at {} select {} records \
         (together {}, {:.2} × execution {NEWEST}'s); one Lambda event holds all four (partition \
         0: executions 1, 3; partition 1: executions 2, 4; older first in offsets), beside \
         today's behaviour: the four as four invocations in order 1, 2, 3, 4, on a fresh table; \
         index keys-only, MAX_CONCURRENCY {}",
        args.records,
        EXECUTIONS.map(|e| e.1).join(", "),
        selections.map(|n| n.to_string()).join(", "),
        selections.iter().sum::<u64>(),
        selections.iter().sum::<u64>() as f64 / newest.max(1) as f64,
        args.max_concurrency
    );
    let mut rows = Vec::new();
    for mode in &args.write_mode {
        for ledger in super::distinct(&args.ledger) {
            let batch = deliver(args, *mode, ledger, true, &selections, client, endpoint).await?;
            let apart = deliver(args, *mode, ledger, false, &selections, client, endpoint).await?;
            rows.push((*mode, ledger, batch, apart));
        }
    }
    report(args, newest, &rows);
    Ok(())
}

/// Records of the seeded day each execution selects: `created_at` before
/// its cutoff's second plus one (the product's `created_before`).
fn selections(records: u64) -> anyhow::Result<[u64; 4]> {
    let before = EXECUTIONS.map(|(_, cutoff, _, _)| {
        NaiveDateTime::parse_from_str(&format!("{DAY}T{cutoff}"), "%Y-%m-%dT%H:%M:%S").map(|t| {
            (t + TimeDelta::seconds(1))
                .format("%Y-%m-%dT%H:%M:%S")
                .to_string()
        })
    });
    let mut counts = [0; 4];
    for chargeback in seeded_day(DAY, records)?.chargebacks() {
        for (count, before) in counts.iter_mut().zip(&before) {
            let before = before.as_ref().map_err(|e| anyhow!("cutoff: {e}"))?;
            if chargeback.created_at.as_str() < before.as_str() {
                *count += 1;
            }
        }
    }
    Ok(counts)
}

/// Seeds a fresh table and delivers the four events: in one `invoke`
/// (`one_batch`), or in four in order.
async fn deliver(
    args: &Args,
    mode: Mode,
    ledger: LedgerSetting,
    one_batch: bool,
    selections: &[u64; 4],
    client: &aws_sdk_dynamodb::Client,
    endpoint: &str,
) -> anyhow::Result<Delivered> {
    let server = RunServer::for_run(args.server, endpoint, client).await?;
    let how = if one_batch { "one-batch" } else { "four" };
    let tag = format!("backlog-{}-{how}-ledger-{}", mode.env(), ledger.label());
    let table = fresh_table(&server.client, &tag, Projection::KeysOnly).await?;
    seed(&server.client, &table, DAY, args.records)
        .await
        .with_context(|| format!("seeding {table}"))?;
    let ledger_table = match ledger {
        LedgerSetting::Off => None,
        LedgerSetting::On => {
            let name = format!("ledger-{tag}-{}", std::process::id());
            ensure_ledger_table(&server.client, &name)
                .await
                .with_context(|| format!("creating the ledger table {name}"))?;
            Some(name)
        }
    };
    let events: Vec<EventAt> = EXECUTIONS
        .iter()
        .zip(selections)
        .map(
            |(&(execution, cutoff, partition, offset), &records)| EventAt {
                partition,
                offset,
                execution,
                execution_time: cutoff,
                records,
            },
        )
        .collect();
    let files = if one_batch {
        // In offset order within each partition: older executions first.
        let mut ordered: Vec<EventAt> = Vec::new();
        for partition in [0, 1] {
            ordered.extend(events.iter().filter(|e| e.partition == partition).copied());
        }
        vec![kafka_event_file("backlog-batch", &ordered)?]
    } else {
        events
            .iter()
            .map(|e| kafka_event_file(&format!("backlog-execution-{}", e.execution), &[*e]))
            .collect::<anyhow::Result<_>>()?
    };
    let mut deliveries = Vec::new();
    for file in &files {
        let mut env = vec![("LOG_LEVEL", "debug".to_owned())];
        if let Some(name) = &ledger_table {
            env.push(("LEDGER_TABLE_NAME", name.clone()));
        }
        let run = Invoke {
            binary: std::path::Path::new(super::BINARY),
            endpoint: &server.endpoint,
            table: &table,
            mode,
            max_concurrency: args.max_concurrency,
            event: file,
            profile_with: None,
            timeout: None,
            env,
        }
        .run()
        .await?;
        let delivery = Delivery::of(&run)?;
        println!(
            "  {}, ledger {}, {}: {} (exit {}), {:.1} s; written {}, declined {}, {} requests",
            mode.env(),
            ledger.label(),
            if one_batch {
                "one batch".to_owned()
            } else {
                format!("invocation {} of 4", deliveries.len() + 1)
            },
            delivery.outcome(),
            delivery.exit,
            delivery.wall.as_secs_f64(),
            delivery.written,
            delivery.declined(),
            delivery.requests
        );
        for warning in &delivery.warnings {
            println!("    WARN/ERROR: {}", shorten(warning, 200));
        }
        deliveries.push(delivery);
    }
    let at_newest = count_at_execution(&server.client, &table, NEWEST).await?;
    drop_table(&server.client, &table).await;
    if let Some(name) = &ledger_table {
        drop_table(&server.client, name).await;
    }
    Ok(Delivered {
        deliveries,
        at_newest,
    })
}

/// One row per way of delivering, and the target of each one batch.
fn report(args: &Args, newest: u64, rows: &[(Mode, LedgerSetting, Delivered, Delivered)]) {
    println!(
        "\nbacklog: write units computed by DynamoDB's rule from the product's counts (1 per \
         conditional write attempted: written + declined + gone); requests to the chargebacks \
         table; execution {NEWEST} selects {newest} of {} records",
        args.records
    );
    println!(
        "  {:<16} {:<6} {:<22} {:<56} {:>8} {:>10} {:>8} {:>8} {:>8} {:>10} {:>11} {:>11} {:>8} {:>10}",
        "mode",
        "ledger",
        "delivered as",
        "outcomes",
        "wall s",
        "handler ms",
        "written",
        "declined",
        "requests",
        "ledger req",
        "index pages",
        "WU computed",
        "WU/sel4",
        "at exec 4"
    );
    for (mode, ledger, batch, apart) in rows {
        for (how, delivered) in [
            ("one batch (1 invoke)", batch),
            ("four invokes 1,2,3,4", apart),
        ] {
            let units = delivered.sum(Delivery::write_units);
            println!(
                "  {:<16} {:<6} {how:<22} {:<56} {:>8.1} {:>10} {:>8} {:>8} {:>8} {:>10} {:>11} {:>11} {:>8.3} {:>10}",
                mode.env(),
                ledger.label(),
                shorten(&delivered.outcome(), 56),
                delivered.wall().as_secs_f64(),
                delivered.sum(|d| d.handler_ms.unwrap_or(0)),
                delivered.sum(|d| d.written),
                delivered.sum(Delivery::declined),
                delivered.sum(|d| d.requests),
                delivered
                    .ledger_requests()
                    .map_or("-".to_owned(), |n| n.to_string()),
                delivered.sum(|d| d.index_pages),
                units,
                units as f64 / newest.max(1) as f64,
                delivered.at_newest
            );
        }
    }
    let (mut passed, mut checked) = (0, 0);
    for (mode, ledger, batch, apart) in rows {
        let units = batch.sum(Delivery::write_units);
        let bound = (TARGET_UNITS_PER_RECORD * newest as f64).floor() as u64;
        let mut misses = Vec::new();
        if !batch.all_done() {
            misses.push(format!("not done: {}", batch.outcome()));
        }
        if units > bound {
            misses.push("writes".to_owned());
        }
        if batch.at_newest != newest {
            misses.push(format!(
                "{} of {newest} records at execution {NEWEST}",
                batch.at_newest
            ));
        }
        checked += 1;
        println!(
            "  target, {}, ledger {}: one batch's write units ≤ {TARGET_UNITS_PER_RECORD} × {newest} \
             = {bound}: {units} ({:.3} ×; today, four invocations: {}, {:.3} ×)    {}",
            mode.env(),
            ledger.label(),
            units as f64 / newest.max(1) as f64,
            apart.sum(Delivery::write_units),
            apart.sum(Delivery::write_units) as f64 / newest.max(1) as f64,
            verdict(&misses, &mut passed)
        );
    }
    println!("\n{passed} of {checked} backlog targets PASS");
}
