//! `--resume-after-deadline`, the deadline control: a day stamped by a
//! delivery that its deadline stops about halfway, then delivered again
//! without one, with the run ledger (the second delivery should resume after
//! the checkpoint the first saved) and without it (today's behaviour: the
//! second delivery reads the whole day and every record the first already
//! stamped costs a declined conditional write).
//!
//! Where the first delivery stops: `--resume-stop-after S`, or calibrated on
//! the run's own table just before, by a pass of execution 1 without a
//! deadline (and without the ledger); its handler time H says how long the
//! whole day takes on this server, on this table, at this moment, and the
//! measured deliveries are of execution 2, which rewrites every record (1 <
//! 2) exactly as a first pass would. New work then stops at H/2: `invoke
//! --timeout H/2 + 1 s` with `DEADLINE_SAFETY_MARGIN_MS=1000`, the deadline
//! counted, as in Lambda, from the handler's start. A pass over the same
//! table is a better predictor than a smaller calibration table (the
//! embedded engine slows as its table grows) and than any fixed rate (this
//! machine is shared); the first delivery's stop is reported as a share of
//! the day, so a stop away from the half shows.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, ensure};
use aws_sdk_dynamodb::types::AttributeValue;
use consolidation_updater::local::ensure_ledger_table;

use super::delivery::Delivery;
use super::{
    Args, BINARY, DAY, EventAt, Invoke, LedgerSetting, Mode, Projection, RunServer,
    count_at_execution, drop_table, fresh_table, kafka_event_file, seed, shorten, verdict,
};

/// `DEADLINE_SAFETY_MARGIN_MS` of the measured deliveries: the smallest
/// the product takes.
pub(super) const MARGIN: Duration = Duration::from_millis(1000);
/// The calibration pass's execution, and the measured deliveries'.
const CALIBRATION_EXECUTION: u64 = 1;
const EXECUTION: u64 = 2;
/// Keys per page of the date index (`KEYS_PER_PAGE` in
/// src/store/dynamodb/reads.rs).
const KEYS_PER_PAGE: u64 = 2_000;

/// One setting of the ledger: its table, the stop, both deliveries.
struct Scenario {
    ledger: LedgerSetting,
    /// The calibration pass, unless --resume-stop-after said when to stop.
    calibration: Option<Delivery>,
    /// `invoke --timeout` of the first delivery.
    timeout: Duration,
    first: Delivery,
    /// The run's ledger item after the first delivery, and after the second.
    after_first: Option<RunItem>,
    after_second: Option<RunItem>,
    second: Delivery,
    /// Records at the measured execution on the server after both.
    at_execution: u64,
}

/// The run's item in the ledger table, read with the SDK.
struct RunItem {
    status: String,
    checkpoint: bool,
    checkpoint_created_at: Option<String>,
    stamped: u64,
    already_applied: u64,
    gone: u64,
    deliveries: u64,
}

impl RunItem {
    /// The records the counts cover.
    fn done(&self) -> u64 {
        self.stamped + self.already_applied + self.gone
    }

    fn describe(&self) -> String {
        format!(
            "status {}, checkpoint {}, checkpoint_created_at {}, stamped {}, already_applied {}, \
             gone {} (together {}), deliveries {}",
            self.status,
            if self.checkpoint { "present" } else { "absent" },
            self.checkpoint_created_at.as_deref().unwrap_or("-"),
            self.stamped,
            self.already_applied,
            self.gone,
            self.done(),
            self.deliveries
        )
    }
}

/// Runs the deadline control for each --write-mode: with the ledger, then
/// without it, each on a fresh server (embedded) and table.
pub(super) async fn deadline_runs(
    args: &Args,
    client: &aws_sdk_dynamodb::Client,
    endpoint: &str,
) -> anyhow::Result<()> {
    println!(
        "\nresume after a deadline: {} records of one day, index keys-only, MAX_CONCURRENCY {}; \
         the first delivery (execution {EXECUTION}) stopped by `invoke --timeout` with \
         DEADLINE_SAFETY_MARGIN_MS={}, the second without a deadline; {}",
        args.records,
        args.max_concurrency,
        MARGIN.as_millis(),
        match args.resume_stop_after {
            Some(s) => format!("new work stops {s:.2} s into the first (--resume-stop-after)"),
            None => format!(
                "new work stops at half the handler time of a calibration pass (execution \
                 {CALIBRATION_EXECUTION}, no deadline, no ledger) over the same table just before"
            ),
        }
    );
    println!(
        "write units computed by DynamoDB's rule from the product's counts: 1 per conditional \
         write attempted (written + declined + gone); index pages: the product's DEBUG \
         \"key page read\" lines; requests: to the chargebacks table"
    );
    let (mut passed, mut checked) = (0, 0);
    for mode in &args.write_mode {
        let on = scenario(args, *mode, LedgerSetting::On, client, endpoint).await?;
        let off = scenario(args, *mode, LedgerSetting::Off, client, endpoint).await?;
        report(args, *mode, &on, &off);
        checked += 1;
        target(args, *mode, &on, &off, &mut passed);
    }
    println!("\n{passed} of {checked} resume targets PASS");
    Ok(())
}

/// Seeds a fresh table, calibrates the stop (unless told), and delivers the
/// event twice: first under a deadline, then without one.
async fn scenario(
    args: &Args,
    mode: Mode,
    ledger: LedgerSetting,
    client: &aws_sdk_dynamodb::Client,
    endpoint: &str,
) -> anyhow::Result<Scenario> {
    let server = RunServer::for_run(args.server, endpoint, client).await?;
    let tag = format!("resume-{}-ledger-{}", mode.env(), ledger.label());
    let table = fresh_table(&server.client, &tag, Projection::KeysOnly).await?;
    let started = Instant::now();
    seed(&server.client, &table, DAY, args.records)
        .await
        .with_context(|| format!("seeding {table}"))?;
    println!(
        "\n{}, ledger {}: seeded {} records in {:.1} s",
        mode.env(),
        ledger.label(),
        args.records,
        started.elapsed().as_secs_f64()
    );
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
    let event = |name: &str, execution| {
        kafka_event_file(
            name,
            &[EventAt {
                partition: 0,
                offset: 1,
                execution,
                execution_time: "23:59:59",
                records: args.records,
            }],
        )
    };
    let to = Destination {
        args,
        mode,
        server: &server,
        table: &table,
        ledger_table: ledger_table.as_deref(),
    };
    let (calibration, stop_after) = match args.resume_stop_after {
        Some(seconds) => (None, seconds),
        None => {
            let calibration = event("resume-calibration", CALIBRATION_EXECUTION)?;
            let pass = to.deliver(&calibration, None, false).await?;
            ensure!(
                pass.done() && pass.examined() == args.records,
                "the calibration pass (outcome {}) examined {} of {} records: {}",
                pass.outcome(),
                pass.examined(),
                args.records,
                pass.why.as_deref().unwrap_or("")
            );
            let handler_ms = pass
                .handler_ms
                .ok_or_else(|| anyhow!("the calibration pass reported no handler time"))?;
            println!(
                "  calibration (execution {CALIBRATION_EXECUTION}, no deadline): {} records in \
                 {handler_ms} ms in the handler ({:.1} s wall)",
                pass.examined(),
                pass.wall.as_secs_f64()
            );
            (Some(pass), handler_ms as f64 / 2e3)
        }
    };
    let timeout = Duration::from_secs_f64(stop_after) + MARGIN;
    ensure!(
        timeout <= Duration::from_secs(900),
        "the first delivery would need invoke --timeout {:.1} s, above Lambda's 900: fewer \
         --records, or --resume-stop-after",
        timeout.as_secs_f64()
    );
    let delivery = event("resume-delivery", EXECUTION)?;
    let first = to.deliver(&delivery, Some(timeout), true).await?;
    progress(
        &format!("first delivery (--timeout {:.3})", timeout.as_secs_f64()),
        &first,
    );
    let ledger_item = || async {
        match &ledger_table {
            Some(name) => read_run(&server.client, name, EXECUTION).await,
            None => Ok(None),
        }
    };
    let after_first = ledger_item().await?;
    let second = to.deliver(&delivery, None, true).await?;
    progress("second delivery (no deadline)", &second);
    let after_second = ledger_item().await?;
    let at_execution = count_at_execution(&server.client, &table, EXECUTION).await?;
    drop_table(&server.client, &table).await;
    if let Some(name) = &ledger_table {
        drop_table(&server.client, name).await;
    }
    Ok(Scenario {
        ledger,
        calibration,
        timeout,
        first,
        after_first,
        after_second,
        second,
        at_execution,
    })
}

/// Where the deliveries of one scenario go.
struct Destination<'a> {
    args: &'a Args,
    mode: Mode,
    server: &'a RunServer,
    table: &'a str,
    ledger_table: Option<&'a str>,
}

impl Destination<'_> {
    /// `invoke` on `event` at DEBUG (for the index pages), with the
    /// deadline `timeout` if any, and the ledger when `with_ledger` and
    /// the scenario has one.
    async fn deliver(
        &self,
        event: &Path,
        timeout: Option<Duration>,
        with_ledger: bool,
    ) -> anyhow::Result<Delivery> {
        let mut env = vec![
            ("LOG_LEVEL", "debug".to_owned()),
            ("DEADLINE_SAFETY_MARGIN_MS", MARGIN.as_millis().to_string()),
        ];
        if let (true, Some(name)) = (with_ledger, self.ledger_table) {
            env.push(("LEDGER_TABLE_NAME", name.to_owned()));
        }
        let run = Invoke {
            binary: Path::new(BINARY),
            endpoint: &self.server.endpoint,
            table: self.table,
            mode: self.mode,
            max_concurrency: self.args.max_concurrency,
            event,
            profile_with: None,
            timeout,
            env,
        }
        .run()
        .await?;
        Delivery::of(&run)
    }
}

/// A delivery's line as soon as it ends.
fn progress(name: &str, delivery: &Delivery) {
    println!(
        "  {name}: {} (exit {}), {:.1} s ({} ms in the handler); written {}, already applied {}, \
         {} index pages",
        delivery.outcome(),
        delivery.exit,
        delivery.wall.as_secs_f64(),
        delivery
            .handler_ms
            .map_or("-".to_owned(), |ms| ms.to_string()),
        delivery.written,
        delivery.already_applied,
        delivery.index_pages
    );
    for warning in &delivery.warnings {
        println!("    WARN/ERROR: {}", shorten(warning, 200));
    }
}

/// The run's ledger item, straight from the ledger table.
async fn read_run(
    client: &aws_sdk_dynamodb::Client,
    ledger_table: &str,
    execution: u64,
) -> anyhow::Result<Option<RunItem>> {
    let item = client
        .get_item()
        .table_name(ledger_table)
        .key("partition_date", AttributeValue::S(DAY.to_owned()))
        .key(
            "execution_sequence",
            AttributeValue::N(execution.to_string()),
        )
        .consistent_read(true)
        .send()
        .await
        .with_context(|| format!("reading run {DAY}/{execution} of {ledger_table}"))?
        .item;
    Ok(item.map(|item| {
        let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        let count = |name: &str| {
            item.get(name)
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        RunItem {
            status: text("status").unwrap_or_else(|| "-".to_owned()),
            checkpoint: item.contains_key("checkpoint"),
            checkpoint_created_at: text("checkpoint_created_at"),
            stamped: count("stamped"),
            already_applied: count("already_applied"),
            gone: count("gone"),
            deliveries: count("deliveries"),
        }
    }))
}

/// Records a request of `mode` holds: what may be in flight per permit.
fn batch(mode: Mode) -> u64 {
    match mode {
        Mode::BatchStatement => 25,
        Mode::UpdateItem => 1,
    }
}

/// Both settings' deliveries side by side, and what the ledger held.
fn report(args: &Args, mode: Mode, on: &Scenario, off: &Scenario) {
    let records = args.records;
    println!(
        "\nresume after a deadline: {}, index keys-only, {records} records, MAX_CONCURRENCY {}",
        mode.env(),
        args.max_concurrency
    );
    for scenario in [on, off] {
        let stop = scenario.timeout.saturating_sub(MARGIN).as_secs_f64();
        println!(
            "  ledger {:<3}: {}; invoke --timeout {:.3} s: new work stops {stop:.3} s into the handler",
            scenario.ledger.label(),
            match &scenario.calibration {
                Some(pass) => format!(
                    "calibration pass {} ms in the handler (wall {:.1} s, {} requests, {} write units)",
                    pass.handler_ms.unwrap_or(0),
                    pass.wall.as_secs_f64(),
                    pass.requests,
                    pass.write_units()
                ),
                None => "stop given by --resume-stop-after".to_owned(),
            },
            scenario.timeout.as_secs_f64()
        );
    }
    println!(
        "  {:<9} {:<6} {:<15} {:>4} {:>8} {:>10} {:>8} {:>8} {:>5} {:>8} {:>11} {:>10} {:>11} {:>11}",
        "delivery",
        "ledger",
        "outcome",
        "exit",
        "wall s",
        "handler ms",
        "written",
        "declined",
        "gone",
        "requests",
        "index pages",
        "ledger req",
        "WU computed",
        "WU reported"
    );
    for scenario in [on, off] {
        for (name, d) in [("1st", &scenario.first), ("2nd", &scenario.second)] {
            println!(
                "  {name:<9} {:<6} {:<15} {:>4} {:>8.1} {:>10} {:>8} {:>8} {:>5} {:>8} {:>11} {:>10} {:>11} {:>11.0}",
                scenario.ledger.label(),
                d.outcome(),
                d.exit,
                d.wall.as_secs_f64(),
                d.handler_ms.map_or("-".to_owned(), |ms| ms.to_string()),
                d.written,
                d.declined(),
                d.missing,
                d.requests,
                d.index_pages,
                d.ledger_requests.map_or("-".to_owned(), |n| n.to_string()),
                d.write_units(),
                d.reported_units
            );
        }
    }
    let share = |n: u64| 100.0 * n as f64 / records.max(1) as f64;
    for scenario in [on, off] {
        println!(
            "  ledger {:<3}: the 1st delivery examined {} records ({:.1}% of the day) before it was \
             handed back{}",
            scenario.ledger.label(),
            scenario.first.examined(),
            share(scenario.first.examined()),
            scenario
                .first
                .why
                .as_deref()
                .map_or(String::new(), |why| format!(": {}", shorten(why, 160)))
        );
        // Lambda ends an invocation at its deadline: whatever came after
        // (the checkpoint's save, the response) would not have happened.
        let deadline_ms = scenario.timeout.as_millis() as u64;
        if let Some(over) = scenario
            .first
            .handler_ms
            .and_then(|ms| ms.checked_sub(deadline_ms))
            .filter(|over| *over > 0)
        {
            println!(
                "  ledger {:<3}: the 1st delivery's handler ran {over} ms past its deadline                  ({deadline_ms} ms): Lambda would have ended the invocation there",
                scenario.ledger.label()
            );
        }
    }
    match &on.after_first {
        Some(item) => {
            println!(
                "  ledger on : the run's ledger item after the 1st delivery: {}",
                item.describe()
            );
            let beyond = on.first.examined().saturating_sub(item.done());
            println!(
                "  ledger on : the checkpoint covers {} records ({:.1}% of the day; the 1st \
                 delivery's DEBUG line said {}); the 1st examined {beyond} past it (requests in \
                 flight at the stop and the rest of pages not wholly done), the 2nd declined {}",
                item.done(),
                share(item.done()),
                on.first
                    .checkpoint_done
                    .map_or("no checkpoint saved".to_owned(), |n| format!("{n} done")),
                on.second.declined()
            );
        }
        None => println!("  ledger on : no run in the ledger after the 1st delivery"),
    }
    println!(
        "  ledger on : the 2nd delivery {} after the checkpoint; the run's ledger item after it: {}",
        if on.second.resumed {
            "said it resumed"
        } else {
            "did NOT say it resumed"
        },
        on.after_second
            .as_ref()
            .map_or("none".to_owned(), RunItem::describe)
    );
    for scenario in [on, off] {
        println!(
            "  ledger {:<3}: records at execution {EXECUTION} on the server after both: {} of {records}",
            scenario.ledger.label(),
            scenario.at_execution
        );
    }
}

/// The target, one PASS/FAIL row (counted in `passed`), with today's
/// behaviour beside it.
fn target(args: &Args, mode: Mode, on: &Scenario, off: &Scenario, passed: &mut usize) {
    let records = args.records;
    let in_flight = args.max_concurrency as u64 * batch(mode);
    let checkpoint = on.after_first.as_ref().filter(|item| item.checkpoint);
    let mut misses = Vec::new();
    if !on.first.handed_back() {
        misses.push(format!(
            "the 1st delivery was not stopped by its deadline ({}): a shorter --resume-stop-after",
            on.first.outcome()
        ));
    }
    if checkpoint.is_none() {
        misses.push("no checkpoint in the ledger after the 1st delivery".to_owned());
    }
    if !on.second.done() {
        misses.push(format!("the 2nd delivery ended {}", on.second.outcome()));
    }
    if on.at_execution != records {
        misses.push(format!(
            "{} of {records} records at execution {EXECUTION}",
            on.at_execution
        ));
    }
    let left = records.saturating_sub(checkpoint.map_or(0, RunItem::done));
    let write_bound = left + KEYS_PER_PAGE + in_flight;
    let page_bound = left.div_ceil(KEYS_PER_PAGE) + 1;
    let units = on.second.write_units();
    if units > write_bound {
        misses.push("writes".to_owned());
    }
    if on.second.index_pages > page_bound {
        misses.push("index reads".to_owned());
    }
    println!(
        "  target, ledger on ({}): the 2nd delivery writes ≤ left {left} + one page {KEYS_PER_PAGE} \
         + in flight ≤ {in_flight} (MAX_CONCURRENCY {} × {}) = {write_bound}: {units} write units; \
         index pages ≤ ⌈{left}/{KEYS_PER_PAGE}⌉ + 1 = {page_bound}: {}    {}",
        mode.env(),
        args.max_concurrency,
        batch(mode),
        on.second.index_pages,
        verdict(&misses, passed)
    );
    let left_today = records.saturating_sub(off.first.examined());
    println!(
        "  today's behaviour, ledger off ({}): {} records left after the 1st delivery; the 2nd \
         read {} index pages and cost {} write units ({} written, {} declined), against {} pages \
         and {} write units with the ledger",
        mode.env(),
        left_today,
        off.second.index_pages,
        off.second.write_units(),
        off.second.written,
        off.second.declined(),
        on.second.index_pages,
        units
    );
}
