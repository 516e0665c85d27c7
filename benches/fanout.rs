//! The fan-out benchmark: how fast the product stamps a day, at what cost,
//! and how close that is to what the server allows.
//!
//! For each write mode, index projection (`--index-projection`: keys-only,
//! what the README recommends, by default; include-execution on request) and
//! run-ledger setting (`--ledger`: off by default; on, or off,on side by
//! side) it seeds a fresh table with N records of one day on a
//! DynamoDB-compatible server running in its own process (a fresh embedded
//! engine per run, served by `consolidation-updater serve`, or DynamoDB
//! Local), then runs the real binary's `invoke` on a consolidation event for
//! that day: the real handler and DynamoDB adapter, in a process of their
//! own, whose CPU time and peak RSS the kernel reports when it exits. The
//! same event is
//! then delivered again (a redelivery), and the table dropped. With the
//! ledger on, a fresh ledger table per run (`ensure_ledger_table`, same
//! server) is named to the product by `LEDGER_TABLE_NAME`. On fresh records
//! of another table, a raw load generator of its own (hyper, hand-written
//! request bodies, none of the product's code) sends the same conditional
//! updates at saturating concurrency: the server's ceiling (per write mode
//! and projection). Last, cold start: process start to the first
//! runtime-API poll against a local stub.
//!
//! Per pass it reports wall time (process start included) and the
//! handler's own time (the batch summary line's `duration_ms`), the
//! message's outcome (applied, superseded), requests to the chargebacks
//! table and to the ledger, and write units twice: as the server reported
//! them, and computed by DynamoDB's rule from the product's counts (1 per
//! conditional write attempted, declined ones included; 1 more on an index
//! projecting `consolidation_execution` per stamp written), since DynamoDB
//! Local reports none for PartiQL and no server reports a declined
//! condition. With the ledger on it checks its targets, PASS/FAIL rows that
//! do not fail the bench: the first pass within 10% of the rate without the
//! ledger and at most 5 ledger requests; the redelivery superseded, at most
//! 5 requests in all, 0 write units on the chargebacks table, handled in
//! under 100 ms.
//!
//! Five further measurements replace those when asked for (run the bench
//! twice for both), on one index projection and, but for `--backlog`,
//! without the ledger:
//! - `--write-capacity`: the product through a proxy that plays a table of R
//!   writes/s (`tests/it/proxy.rs`, in a process of its own: this bench
//!   re-executed with `--serve-capacity-proxy`): the rate it reaches once the
//!   proxy's initial burst is spent, and how often it is throttled.
//! - `--max-write-rate`: the product told `MAX_WRITE_RATE=R` on the unlimited
//!   engine, the proxy only counting its writes: the rate it keeps.
//! - `--compare-binary`: another build of the product against this one,
//!   interleaved, on the unlimited engine.
//! - `--resume-after-deadline`, the deadline control (`resume.rs`), on a
//!   keys-only index: a delivery stopped about halfway by its deadline
//!   (`invoke --timeout`, `DEADLINE_SAFETY_MARGIN_MS=1000`), then the same
//!   event again without one; with the run ledger, whose checkpoint the
//!   second delivery should resume after, and without it (today's
//!   behaviour: a full second pass). Where the first stops is calibrated by
//!   an undeadlined pass over the same table just before (half its handler
//!   time), or given (`--resume-stop-after`). Per delivery: records written,
//!   declined, requests, index pages read (the product's DEBUG "key page
//!   read" lines), write units computed; the run's ledger item (checkpoint,
//!   counts) read with the SDK. PASS: the second delivery writes at most the
//!   records left after the checkpoint, one index page (2,000) and what may
//!   have been in flight at the stop (MAX_CONCURRENCY × the batch), and reads
//!   at most the index pages after the checkpoint plus one.
//! - `--backlog` (`backlog.rs`), on a keys-only index: one Lambda event
//!   holding executions 1 to 4 of one day (cutoffs a quarter, half, three
//!   quarters and all of the day), beside today's behaviour, the four as
//!   four invocations in order. PASS: the one batch costs at most 1.02 ×
//!   execution 4's selection in write units.
//!
//! `scripts/bench.sh` runs it; `cargo bench --bench fanout -- --help` lists
//! the options.

#[path = "fanout/backlog.rs"]
mod backlog;
#[path = "fanout/delivery.rs"]
mod delivery;
#[allow(dead_code)]
#[path = "../tests/it/proxy.rs"]
mod proxy;
#[path = "fanout/resume.rs"]
mod resume;
#[allow(dead_code)]
#[path = "../tests/it/runtime_api_stub.rs"]
mod runtime_api_stub;

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use axum::body::Bytes;
use axum::http::Request;
use chrono::{NaiveDate, TimeZone, Utc};
use clap::{Parser, ValueEnum};
use consolidation_updater::app::{load_sdk_config, local_client};
use consolidation_updater::local::{
    IndexProjection, SyntheticDay, TableShape, create_table, ensure_ledger_table, put_chargebacks,
};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use runtime_api_stub::{BINARY, Stub, lambda_command, start_stub, wait_for_within};

const REGION: &str = "sa-east-1";
const INDEX: &str = "partition_date-index";
const DAY: &str = "2025-11-20";
/// DynamoDB Local is slow and heavy: beyond this it measures its own limits.
const DYNAMODB_LOCAL_MAX_RECORDS: u64 = 200_000;
/// The product's exit statuses (`consolidation-updater --help`).
const EXIT_DONE: i32 = 0;
const EXIT_HANDED_BACK: i32 = 3;
/// Records of a capacity-limited run, and of one at a low rate, where more
/// would only make the run longer, not the rate better measured.
const CAPACITY_RECORDS: u64 = 20_000;
const LOW_RATE_RECORDS: u64 = 3_000;
const LOW_RATE: u64 = 100;
/// Targets of a capacity-limited run: the share of the capacity reached,
/// and the throttled writes allowed per stamped record.
const TARGET_REACHED_SHARE: f64 = 0.90;
const TARGET_THROTTLED_PER_RECORD: f64 = 0.05;
/// How far from MAX_WRITE_RATE the kept rate may be.
const TARGET_PACING_TOLERANCE: f64 = 0.05;
/// Targets of the run ledger: the first pass's rate with it, as a share of
/// the rate without it (within noise); the ledger requests of a first pass,
/// and the requests in total of a redelivery of a completed run; the
/// handler's time on that redelivery.
const TARGET_LEDGER_RATE_SHARE: f64 = 0.90;
const TARGET_LEDGER_REQUESTS: u64 = 5;
const TARGET_REDELIVERY_HANDLER_MS: u64 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ServerKind {
    /// The embedded engine, served by `consolidation-updater serve`.
    Embedded,
    /// DynamoDB Local at $DYNAMODB_LOCAL_ENDPOINT (`scripts/bench.sh` starts it).
    DynamodbLocal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    UpdateItem,
    BatchStatement,
}

impl Mode {
    fn env(self) -> &'static str {
        match self {
            Self::UpdateItem => "update-item",
            Self::BatchStatement => "batch-statement",
        }
    }
}

/// The date index's projection (`create-table --index-projection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Projection {
    /// Keys only, what the README recommends: a redelivery is declined
    /// record by record by the update's condition.
    KeysOnly,
    /// Keys plus `consolidation_execution`: a redelivery skips stamped
    /// records on read, and each stamp also rewrites the index entry.
    IncludeExecution,
}

impl Projection {
    fn index(self) -> IndexProjection {
        match self {
            Self::KeysOnly => IndexProjection::KeysOnly,
            Self::IncludeExecution => IndexProjection::IncludeExecution,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::KeysOnly => "keys-only",
            Self::IncludeExecution => "include-execution",
        }
    }
}

/// Whether the product runs with the run ledger (`LEDGER_TABLE_NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LedgerSetting {
    /// No `LEDGER_TABLE_NAME`: every delivery is stamped in full.
    Off,
    /// A fresh ledger table per run (`ensure_ledger_table`, on the same
    /// server), named to the product by `LEDGER_TABLE_NAME`.
    On,
}

impl LedgerSetting {
    fn label(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::On => "on",
        }
    }
}

#[derive(Debug, Parser)]
#[command(about = "Measures the fan-out against a local DynamoDB-compatible server")]
struct Args {
    /// Records of the day to stamp.
    #[arg(long, default_value_t = 200_000)]
    records: u64,
    #[arg(long, value_enum, default_value_t = ServerKind::Embedded)]
    server: ServerKind,
    /// Write modes to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Mode::UpdateItem, Mode::BatchStatement])]
    write_mode: Vec<Mode>,
    /// The date index's projection, one run each when both are listed
    /// (comma-separated). keys-only is what the README recommends; with
    /// include-execution a redelivery skips stamped records on read. The
    /// measurements that replace the ordinary ones take a single value.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Projection::KeysOnly])]
    index_projection: Vec<Projection>,
    /// The run ledger: off, on (a fresh ledger table per run, named to the
    /// product by LEDGER_TABLE_NAME), or off,on for both side by side. With
    /// it on, its targets are checked (PASS/FAIL; a FAIL does not fail the
    /// bench): first pass ≥ 0.90 × the rate without it (with off,on) and ≤ 5
    /// ledger requests; the redelivery superseded, ≤ 5 requests in all, 0
    /// write units on the chargebacks table, handled in < 100 ms. Off by
    /// default (off,on doubles the runs). Only for the first pass and
    /// redelivery measurements, and --backlog.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [LedgerSetting::Off])]
    ledger: Vec<LedgerSetting>,
    /// Fresh records for the raw ceiling [default: --records, so that both
    /// write to tables of the same size (the embedded engine slows as its
    /// table grows); at most 100000 on DynamoDB Local, which seeds slowly].
    #[arg(long)]
    ceiling_records: Option<u64>,
    /// Requests the raw load generator keeps in flight.
    #[arg(long, default_value_t = 128)]
    ceiling_concurrency: usize,
    /// MAX_CONCURRENCY of the product.
    #[arg(long, default_value_t = 64)]
    max_concurrency: usize,
    /// Cold starts to time (median reported; 0: skip).
    #[arg(long, default_value_t = 15)]
    cold_starts: usize,
    /// Run the first pass under this command, e.g. "perf record -g -o perf.data"
    /// (its numbers then include the profiler's).
    #[arg(long)]
    profile_with: Option<String>,
    /// Capacity-limited runs instead of the measurements above: for each
    /// rate (writes/s) and each --write-mode, the product through a proxy
    /// playing a table of that write capacity (a token bucket holding one
    /// second of it, at least 25). "default": 100,500,1000,2000,5000 for
    /// batch-statement and 100,500,1000,2000 for update-item. PASS: done,
    /// reached ≥ 0.90 × R once the burst is spent, ≤ 0.05 throttled writes
    /// per stamped record.
    #[arg(long, value_parser = Rates::parse, value_name = "R1,R2,...|default")]
    write_capacity: Option<Rates>,
    /// Records of each --write-capacity or --max-write-rate run [default:
    /// 20000; 3000 at 100 writes/s or less].
    #[arg(long)]
    capacity_records: Option<u64>,
    /// Runs with MAX_WRITE_RATE=R against the unlimited server, instead of
    /// the measurements above; a proxy only counts the writes. PASS: done,
    /// and the rate from the first write to the last within ±5% of R.
    #[arg(long, value_delimiter = ',', value_name = "R1,R2,...")]
    max_write_rate: Vec<u64>,
    /// Compare this build with another build of the product, instead of the
    /// measurements above: --repeats interleaved runs of each per
    /// --write-mode on --records fresh records, against the unlimited server.
    #[arg(long, value_name = "PATH")]
    compare_binary: Option<PathBuf>,
    /// Runs of each binary with --compare-binary.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// The deadline control, instead of the measurements above: per
    /// --write-mode, on a KEYS_ONLY index, N records of one day stamped by a
    /// delivery that its deadline stops about halfway (`invoke --timeout`,
    /// DEADLINE_SAFETY_MARGIN_MS=1000), then the same event delivered again
    /// without a deadline; with the run ledger (a fresh ledger table: the
    /// second delivery should resume after the first's checkpoint) and
    /// without it (today's behaviour: the second delivery reads and writes
    /// the whole day). PASS (with the ledger): the second delivery costs at
    /// most the records left after the checkpoint + one index page (2,000) +
    /// what may have been in flight at the stop (MAX_CONCURRENCY × 25 for
    /// batch-statement, × 1 for update-item) write units, and reads at most
    /// the index pages after the checkpoint + 1. Where it stops: see
    /// --resume-stop-after.
    #[arg(long)]
    resume_after_deadline: bool,
    /// With --resume-after-deadline: new work stops this many seconds into
    /// the first delivery (its --timeout is this plus the 1 s margin)
    /// [default: calibrated per run: half the handler time of an undeadlined
    /// pass of an earlier execution over the same table just before, which
    /// rewrites every record as the measured delivery does].
    #[arg(long, value_name = "SECONDS", value_parser = stop_after_seconds, requires = "resume_after_deadline")]
    resume_stop_after: Option<f64>,
    /// A backlog in one batch, instead of the measurements above: per
    /// --write-mode and --ledger, on a KEYS_ONLY index, N records of one day
    /// whose created_at spread over the day, and ONE Lambda event holding
    /// executions 1, 2, 3 and 4 of that day (cutoffs 06:00:00, 12:00:00,
    /// 18:00:00, 23:59:59: about a quarter, half, three quarters and all of
    /// the records), older ones first in their partitions; beside it today's
    /// behaviour, the four delivered as four invocations in order on a fresh
    /// table (about 2.5 × the day in write units). PASS: the one batch costs
    /// at most 1.02 × execution 4's selection in write units.
    #[arg(long)]
    backlog: bool,
    /// LOG_LEVEL of the product in --write-capacity and --max-write-rate runs.
    #[arg(long, default_value = "info")]
    product_log_level: String,
    /// Save each --write-capacity run's log (JSON lines) in this directory.
    #[arg(long, value_name = "DIR")]
    save_logs: Option<PathBuf>,
    /// Internal: serve the capacity proxy in front of --upstream at --rate
    /// writes/s (0: only count), print PROXY_ENDPOINT=… and serve until stdin closes.
    #[arg(long, hide = true, requires = "upstream")]
    serve_capacity_proxy: bool,
    #[arg(long, hide = true)]
    upstream: Option<String>,
    #[arg(long, hide = true, default_value_t = 0)]
    rate: u64,
    /// Accepted for `cargo bench`'s own flag.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Args {
    /// Whether one of the measurements that replace the ordinary ones was asked for.
    fn replaces_ordinary(&self) -> bool {
        self.write_capacity.is_some()
            || !self.max_write_rate.is_empty()
            || self.compare_binary.is_some()
            || self.resume_after_deadline
            || self.backlog
    }

    fn capacity_records(&self, rate: u64) -> u64 {
        self.capacity_records.unwrap_or(if rate <= LOW_RATE {
            LOW_RATE_RECORDS
        } else {
            CAPACITY_RECORDS
        })
    }
}

/// The write capacities of `--write-capacity`.
#[derive(Debug, Clone)]
enum Rates {
    /// Each write mode's own list.
    Default,
    Listed(Vec<u64>),
}

/// `--resume-stop-after`: seconds, more than 0, leaving the first
/// delivery's `--timeout` (this plus the margin) within Lambda's 900.
fn stop_after_seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds + resume::MARGIN.as_secs_f64() <= 900.0 => {
            Ok(seconds)
        }
        _ => Err(format!(
            "{text:?} is not a time to stop after: expected seconds, more than 0 and at most {}",
            900.0 - resume::MARGIN.as_secs_f64()
        )),
    }
}

impl Rates {
    fn parse(text: &str) -> Result<Self, String> {
        if text == "default" {
            return Ok(Self::Default);
        }
        let rates = text
            .split(',')
            .map(|r| match r.trim().parse::<u64>() {
                Ok(rate) if rate > 0 => Ok(rate),
                _ => Err(format!("not a positive number of writes/s: {r:?}")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::Listed(rates))
    }

    fn for_mode(&self, mode: Mode) -> Vec<u64> {
        match (self, mode) {
            (Self::Listed(rates), _) => rates.clone(),
            (Self::Default, Mode::BatchStatement) => vec![100, 500, 1000, 2000, 5000],
            (Self::Default, Mode::UpdateItem) => vec![100, 500, 1000, 2000],
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bench: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let work = async {
        match (args.serve_capacity_proxy, &args.upstream) {
            (true, Some(upstream)) => serve_capacity_proxy(upstream, args.rate).await,
            _ => run(args).await,
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (server, endpoint) = match args.server {
        ServerKind::Embedded => {
            let server = EmbeddedProcess::start().await?;
            let endpoint = server.endpoint.clone();
            (Some(server), endpoint)
        }
        ServerKind::DynamodbLocal => {
            ensure!(
                args.records <= DYNAMODB_LOCAL_MAX_RECORDS,
                "DynamoDB Local is benchmarked with at most {DYNAMODB_LOCAL_MAX_RECORDS} records"
            );
            let endpoint = std::env::var("DYNAMODB_LOCAL_ENDPOINT")
                .context("DYNAMODB_LOCAL_ENDPOINT is not set (scripts/bench.sh sets it)")?;
            (None, endpoint)
        }
    };
    let client = local_client(&load_sdk_config(Some(REGION)).await, &endpoint);
    if args.replaces_ordinary() {
        let others_than_backlog = args.write_capacity.is_some()
            || !args.max_write_rate.is_empty()
            || args.compare_binary.is_some()
            || args.resume_after_deadline;
        ensure!(
            args.ledger == [LedgerSetting::Off] || !others_than_backlog,
            "--ledger applies to the first pass and redelivery measurements and to --backlog \
             only, not to --write-capacity, --max-write-rate, --compare-binary or \
             --resume-after-deadline (which runs with and without the ledger by itself)"
        );
        ensure!(
            args.index_projection.len() == 1,
            "--write-capacity, --max-write-rate, --compare-binary, --resume-after-deadline and \
             --backlog take one --index-projection"
        );
        ensure!(
            !(args.resume_after_deadline || args.backlog)
                || args.index_projection[0] == Projection::KeysOnly,
            "--resume-after-deadline and --backlog are measured on a keys-only index"
        );
        println!(
            "server: {:?} at {endpoint}; index {}",
            args.server,
            args.index_projection[0].label()
        );
        if let Some(rates) = &args.write_capacity {
            capacity_limited_runs(&args, rates, &client, &endpoint).await?;
        }
        if !args.max_write_rate.is_empty() {
            paced_runs(&args, &client, &endpoint).await?;
        }
        if let Some(baseline) = &args.compare_binary {
            compare_binaries(&args, baseline, &client, &endpoint).await?;
        }
        if args.resume_after_deadline {
            resume::deadline_runs(&args, &client, &endpoint).await?;
        }
        if args.backlog {
            backlog::backlog_runs(&args, &client, &endpoint).await?;
        }
        drop(server);
        return Ok(());
    }
    let ceiling_records = args.ceiling_records.unwrap_or(match args.server {
        ServerKind::DynamodbLocal => args.records.min(100_000),
        ServerKind::Embedded => args.records,
    });
    println!(
        "server: {:?} at {endpoint}; {} records; MAX_CONCURRENCY {}; ceiling on {ceiling_records} fresh records at {} in flight; index {}; ledger {}",
        args.server,
        args.records,
        args.max_concurrency,
        args.ceiling_concurrency,
        labels(args.index_projection.iter().map(|p| p.label())),
        labels(args.ledger.iter().map(|l| l.label())),
    );
    if args.server == ServerKind::Embedded {
        println!("each run and each ceiling on a fresh embedded engine (cold start on the first)");
    }
    println!("{WRITE_UNITS_NOTE}");

    let (mut passed, mut checked) = (0, 0);
    for mode in &args.write_mode {
        for projection in distinct(&args.index_projection) {
            let mut runs = Vec::new();
            for ledger in distinct(&args.ledger) {
                let on = RunServer::for_run(args.server, &endpoint, &client).await?;
                runs.push(
                    measure_run(&args, &on.client, &on.endpoint, *mode, projection, ledger).await?,
                );
            }
            let on = RunServer::for_run(args.server, &endpoint, &client).await?;
            let ceiling_table = fresh_table(
                &on.client,
                &format!("ceiling-{}-{}", mode.env(), projection.label()),
                projection,
            )
            .await?;
            let ids = seed(&on.client, &ceiling_table, "2025-11-21", ceiling_records).await?;
            let ceiling = raw_ceiling(
                &on.endpoint,
                &ceiling_table,
                *mode,
                &ids,
                args.ceiling_concurrency,
            )
            .await?;
            drop_table(&on.client, &ceiling_table).await;
            drop(on);

            report(args.records, &runs, &ceiling);
            if runs.iter().any(|r| r.ledger == LedgerSetting::On) {
                let (p, c) = ledger_targets(&runs);
                passed += p;
                checked += c;
            }
        }
    }
    if checked > 0 {
        println!("\n{passed} of {checked} run-ledger targets PASS");
    }

    if args.cold_starts > 0 {
        // An empty table: the embedded engine counts a table's items to
        // describe it, which real DynamoDB does not do per request.
        let table = fresh_table(&client, "cold-start", args.index_projection[0]).await?;
        let samples = cold_starts(&endpoint, &table, args.cold_starts).await?;
        println!(
            "\ncold start (process start to the first runtime-API poll; DescribeTable on loopback \
             included, no TLS, static credentials and region as Lambda sets them): median {:.1} ms \
             over {} runs (min {:.1}, max {:.1})",
            samples[samples.len() / 2],
            samples.len(),
            samples[0],
            samples[samples.len() - 1]
        );
    }
    drop(server);
    Ok(())
}

/// The server of one run (or ceiling): with the embedded engine a fresh one,
/// since an engine that has held a table serves the next one slower (of two
/// runs of 50,000 records on one engine, the second took 30-40% longer,
/// whichever ran first); DynamoDB Local's own, shared, otherwise.
struct RunServer {
    endpoint: String,
    client: aws_sdk_dynamodb::Client,
    _embedded: Option<EmbeddedProcess>,
}

impl RunServer {
    async fn for_run(
        kind: ServerKind,
        endpoint: &str,
        client: &aws_sdk_dynamodb::Client,
    ) -> anyhow::Result<Self> {
        Ok(match kind {
            ServerKind::Embedded => {
                let embedded = EmbeddedProcess::start().await?;
                Self {
                    endpoint: embedded.endpoint.clone(),
                    client: local_client(&load_sdk_config(Some(REGION)).await, &embedded.endpoint),
                    _embedded: Some(embedded),
                }
            }
            ServerKind::DynamodbLocal => Self {
                endpoint: endpoint.to_owned(),
                client: client.clone(),
                _embedded: None,
            },
        })
    }
}

/// `consolidation-updater serve`: the embedded engine in a process of its own.
struct EmbeddedProcess {
    endpoint: String,
    _child: tokio::process::Child,
}

impl EmbeddedProcess {
    async fn start() -> anyhow::Result<Self> {
        let mut child = tokio::process::Command::new(BINARY)
            .arg("serve")
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .context("the embedded server did not start")??
            .ok_or_else(|| anyhow!("the embedded server said nothing"))?;
        let endpoint = line
            .strip_prefix("DYNAMODB_ENDPOINT=")
            .ok_or_else(|| anyhow!("unexpected first line: {line}"))?
            .to_owned();
        Ok(Self {
            endpoint,
            _child: child,
        })
    }
}

/// A table of the contract, its date index of `projection`.
async fn fresh_table(
    client: &aws_sdk_dynamodb::Client,
    prefix: &str,
    projection: Projection,
) -> anyhow::Result<String> {
    let name = format!("{prefix}-{}", std::process::id());
    let shape = TableShape {
        index: Some(projection.index()),
        ..TableShape::default()
    };
    create_table(client, &name, INDEX, shape).await?;
    Ok(name)
}

/// The values of a comma-separated option, each once, in the order given.
fn distinct<T: Copy + PartialEq>(values: &[T]) -> Vec<T> {
    let mut seen = Vec::new();
    for value in values {
        if !seen.contains(value) {
            seen.push(*value);
        }
    }
    seen
}

fn labels<'a>(values: impl Iterator<Item = &'a str>) -> String {
    values.collect::<Vec<_>>().join(",")
}

/// Seeds `count` records of `date`, all created before the execution time;
/// returns their ids.
async fn seed(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    date: &str,
    count: u64,
) -> anyhow::Result<Vec<String>> {
    let day = seeded_day(date, count)?;
    let ids = day.chargebacks().map(|c| c.chargeback_id).collect();
    put_chargebacks(client, table, day.chargebacks(), 16).await?;
    Ok(ids)
}

/// The records `seed` puts in: `count` of `date`, their `created_at` spread
/// over the whole day.
fn seeded_day(date: &str, count: u64) -> anyhow::Result<SyntheticDay> {
    let date: NaiveDate = date.parse()?;
    let end_of_day = Utc.from_utc_datetime(
        &date
            .and_hms_opt(23, 59, 59)
            .ok_or_else(|| anyhow!("time"))?,
    );
    Ok(SyntheticDay {
        date,
        execution_time: end_of_day,
        before_cutoff: count,
        after_cutoff: 0,
        other_dates: 0,
    })
}

/// The consolidation event of the day, as a Lambda MSK event file.
fn event_file(records: u64) -> anyhow::Result<PathBuf> {
    kafka_event_file(
        "event",
        &[EventAt {
            partition: 0,
            offset: 1,
            execution: 1,
            execution_time: "23:59:59",
            records,
        }],
    )
}

/// One consolidation event of the day `DAY` (execution `execution` of 4,
/// cut off at `execution_time` of the day), at a place in a Kafka topic.
#[derive(Debug, Clone, Copy)]
struct EventAt {
    partition: u32,
    offset: i64,
    execution: u64,
    /// `HH:MM:SS`.
    execution_time: &'static str,
    /// The event's `records_processed`.
    records: u64,
}

impl EventAt {
    /// The Kafka record's value: the event as the consolidation job sends it.
    fn value(&self) -> Value {
        let execution = self.execution;
        json!({
            "event_type": "consolidation_completed",
            "partition_date": DAY,
            "execution_sequence": execution,
            "total_executions": 4,
            "records_processed": self.records,
            "duplicates_removed": 0,
            "output_files": 4,
            "output_format": "parquet",
            "output_path": format!("s3://chargebacks-bucket/consolidated/{DAY}/run={execution}"),
            "execution_time": format!("{DAY}T{}", self.execution_time),
            "completed_at": format!("{DAY}T{}.500000+00:00", self.execution_time),
            "job_name": "poc-chargeback-dev-chargebacks-consolidation"
        })
    }
}

/// A Lambda MSK event holding `events` (each in its partition, in the
/// order given), written to a file of this process named after `name`.
fn kafka_event_file(name: &str, events: &[EventAt]) -> anyhow::Result<PathBuf> {
    use base64::Engine as _;
    let topic = "chargeback-consolidation-events";
    let mut records = serde_json::Map::new();
    for event in events {
        let value = base64::engine::general_purpose::STANDARD.encode(event.value().to_string());
        let record = json!({
            "topic": topic,
            "partition": event.partition,
            "offset": event.offset,
            "timestamp": 1_763_683_199_000_i64,
            "timestampType": "CREATE_TIME",
            "value": value,
            "headers": []
        });
        match records
            .entry(format!("{topic}-{}", event.partition))
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(partition) => partition.push(record),
            _ => bail!("not a partition's list"),
        }
    }
    let envelope = json!({
        "eventSource": "aws:kafka",
        "eventSourceArn": "arn:aws:kafka:sa-east-1:123456789012:cluster/bench/abc",
        "records": records
    });
    let path = std::env::temp_dir().join(format!("bench-{name}-{}.json", std::process::id()));
    std::fs::write(&path, envelope.to_string())?;
    Ok(path)
}

/// One run of the product, as the kernel and its own log saw it.
#[derive(Debug, Default)]
struct Pass {
    wall: Duration,
    user: Duration,
    system: Duration,
    peak_rss_kib: u64,
    /// The "applied" line's counts (0 when the message was superseded).
    written: u64,
    already_applied: u64,
    already_applied_on_read: u64,
    /// Requests to the chargebacks table (the usage line's `dynamodb_requests`).
    requests: u64,
    /// Requests to the run ledger (`ledger_requests`; `None` with the ledger off).
    ledger_requests: Option<u64>,
    table_write_units: f64,
    index_write_units: f64,
    /// The "message outcome" lines' `outcome`s (applied, superseded, ...).
    outcomes: Vec<String>,
    /// The batch summary line's `duration_ms`: the handler's own time, from
    /// the event in hand to its response, without process start.
    handler_ms: Option<u64>,
    /// Whether the ledger said "run completed" (this pass completed its run).
    run_completed: bool,
    /// The WARN and ERROR lines' messages (but the one about DLQ_URL).
    warnings: Vec<String>,
}

impl Pass {
    /// Requests to the chargebacks table and the ledger together.
    fn total_requests(&self) -> u64 {
        self.requests + self.ledger_requests.unwrap_or(0)
    }

    /// Conditional writes declined by their condition (attempted, billed,
    /// not written): already applied, less those skipped on read.
    fn declined(&self) -> u64 {
        self.already_applied
            .saturating_sub(self.already_applied_on_read)
    }

    /// Write units by DynamoDB's rule, from the product's counts: each
    /// attempted conditional write 1 (items under 1 KB), declined ones
    /// included; an index projecting `consolidation_execution` 1 more per
    /// stamp written. (Table, index.)
    fn computed_write_units(&self, projection: Projection) -> (u64, u64) {
        let index = match projection {
            Projection::KeysOnly => 0,
            Projection::IncludeExecution => self.written,
        };
        (self.written + self.declined(), index)
    }

    fn outcome(&self) -> String {
        if self.outcomes.is_empty() {
            "-".to_owned()
        } else {
            self.outcomes.join(",")
        }
    }

    fn superseded(&self) -> bool {
        !self.outcomes.is_empty() && self.outcomes.iter().all(|o| o == "superseded")
    }
}

/// What the write units columns mean.
const WRITE_UNITS_NOTE: &str = "write units: \"reported\" is what the server returned as \
    ConsumedCapacity, summed by the product (table + index; DynamoDB Local returns none for \
    PartiQL, and a declined conditional UpdateItem reports nothing); \"computed\" is DynamoDB's \
    billing rule applied to the product's counts: 1 per conditional write attempted (items \
    under 1 KB), declined ones included (= written + already applied - skipped on read), plus \
    1 on the index per stamp written when it projects consolidation_execution; a lower bound \
    when a request outlived its attempt timeout and was retried (the lost attempt may have \
    written too, and its retry is then counted as declined). Both count the chargebacks table \
    only, not the ledger's own writes.";

/// A fresh table (and ledger table, with the ledger on) of `--records`,
/// stamped by a first pass and then delivered the same event again.
struct Run {
    mode: Mode,
    projection: Projection,
    ledger: LedgerSetting,
    first: Pass,
    again: Pass,
}

async fn measure_run(
    args: &Args,
    client: &aws_sdk_dynamodb::Client,
    endpoint: &str,
    mode: Mode,
    projection: Projection,
    ledger: LedgerSetting,
) -> anyhow::Result<Run> {
    let tag = format!(
        "{}-{}-ledger-{}",
        mode.env(),
        projection.label(),
        ledger.label()
    );
    let table = fresh_table(client, &format!("bench-{tag}"), projection).await?;
    let started = Instant::now();
    seed(client, &table, DAY, args.records).await?;
    println!(
        "\n{}, index {}, ledger {}: seeded {} records in {:.1} s",
        mode.env(),
        projection.label(),
        ledger.label(),
        args.records,
        started.elapsed().as_secs_f64()
    );
    let ledger_table = match ledger {
        LedgerSetting::Off => None,
        LedgerSetting::On => {
            let name = format!("ledger-{tag}-{}", std::process::id());
            ensure_ledger_table(client, &name)
                .await
                .with_context(|| format!("creating the ledger table {name}"))?;
            Some(name)
        }
    };
    let event = event_file(args.records)?;
    let first = invoke(
        endpoint,
        &table,
        ledger_table.as_deref(),
        mode,
        args.max_concurrency,
        &event,
        args.profile_with.as_deref(),
    )
    .await?;
    progress("first pass", &first);
    // A request that outlives its attempt timeout is retried, and the
    // retry finds what the server applied meanwhile already applied:
    // every record is stamped either way.
    ensure!(
        first.written + first.already_applied == args.records,
        "the first pass (outcome {}) stamped {} and found {} already applied, of {} records",
        first.outcome(),
        first.written,
        first.already_applied,
        args.records
    );
    let again = invoke(
        endpoint,
        &table,
        ledger_table.as_deref(),
        mode,
        args.max_concurrency,
        &event,
        None,
    )
    .await?;
    progress("redelivery", &again);
    // One table's worth on the server at a time (DynamoDB Local serves
    // every run; each embedded engine only this one).
    drop_table(client, &table).await;
    if let Some(ledger_table) = &ledger_table {
        drop_table(client, ledger_table).await;
    }
    Ok(Run {
        mode,
        projection,
        ledger,
        first,
        again,
    })
}

/// A pass's line as soon as it ends (a long run's report comes after all
/// of its runs and the ceiling).
fn progress(name: &str, pass: &Pass) {
    println!(
        "  {name}: {}, {:.1} s ({} ms in the handler); written {}, already applied {}",
        pass.outcome(),
        pass.wall.as_secs_f64(),
        pass.handler_ms.map_or("-".to_owned(), |ms| ms.to_string()),
        pass.written,
        pass.already_applied
    );
}

/// Runs `consolidation-updater invoke` on `event`, with the run ledger in
/// `ledger_table` if any; fails unless it exits done.
async fn invoke(
    endpoint: &str,
    table: &str,
    ledger_table: Option<&str>,
    mode: Mode,
    max_concurrency: usize,
    event: &Path,
    profile_with: Option<&str>,
) -> anyhow::Result<Pass> {
    let run = Invoke {
        binary: Path::new(BINARY),
        endpoint,
        table,
        mode,
        max_concurrency,
        event,
        profile_with,
        timeout: None,
        env: ledger_table
            .map(|name| ("LEDGER_TABLE_NAME", name.to_owned()))
            .into_iter()
            .collect(),
    }
    .run()
    .await?;
    ensure!(
        run.exit == EXIT_DONE,
        "the run failed (exit status {}): {}",
        run.exit,
        run.log
    );
    run.pass()
}

/// How to run the product's `invoke` once.
struct Invoke<'a> {
    binary: &'a Path,
    endpoint: &'a str,
    table: &'a str,
    mode: Mode,
    max_concurrency: usize,
    event: &'a Path,
    profile_with: Option<&'a str>,
    /// `invoke --timeout`: the invocation's deadline, as Lambda's.
    timeout: Option<Duration>,
    /// Settings beyond the bench's own (LOG_LEVEL, MAX_WRITE_RATE).
    env: Vec<(&'static str, String)>,
}

/// A finished `invoke`: its exit status, times and log.
struct Finished {
    exit: i32,
    wall: Duration,
    usage: ChildUsage,
    log: String,
    lines: Vec<Value>,
}

impl Invoke<'_> {
    /// Runs it and waits for it with `wait4`, which returns the child's CPU
    /// time and peak RSS.
    async fn run(&self) -> anyhow::Result<Finished> {
        let started = Instant::now();
        let mut command = match self.profile_with {
            Some(profiler) => {
                let mut words = profiler.split_whitespace();
                let mut command = std::process::Command::new(
                    words.next().ok_or_else(|| anyhow!("empty profiler"))?,
                );
                command.args(words).arg(self.binary);
                command
            }
            None => std::process::Command::new(self.binary),
        };
        command.arg("invoke").arg("--event").arg(self.event);
        if let Some(timeout) = self.timeout {
            command
                .arg("--timeout")
                .arg(format!("{:.3}", timeout.as_secs_f64()));
        }
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_REGION", REGION)
            .env("AWS_ACCESS_KEY_ID", "local")
            .env("AWS_SECRET_ACCESS_KEY", "local")
            .env("AWS_ENDPOINT_URL_DYNAMODB", self.endpoint)
            .env("DYNAMODB_TABLE_NAME", self.table)
            .env("WRITE_MODE", self.mode.env())
            .env("MAX_CONCURRENCY", self.max_concurrency.to_string())
            .env("LOG_FORMAT", "json")
            .env("PROGRESS_LOG_INTERVAL_SECONDS", "900");
        for (name, value) in &self.env {
            command.env(name, value);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let pid = child.id();
        let mut stderr = child.stderr.ok_or_else(|| anyhow!("no stderr"))?;
        let log = tokio::task::spawn_blocking(move || {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut stderr, &mut text).map(|_| text)
        });
        let (usage, exit) = tokio::task::spawn_blocking(move || wait_for_exit(pid)).await??;
        let wall = started.elapsed();
        let log = log.await??;
        let lines = log
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        Ok(Finished {
            exit,
            wall,
            usage,
            log,
            lines,
        })
    }
}

impl Finished {
    fn said(&self, message: &str) -> Option<&Value> {
        self.lines.iter().find(|l| l["message"] == message)
    }

    /// What the run's "applied", outcome, summary and usage lines say (a
    /// run that stamped the day, or whose message was superseded).
    fn pass(&self) -> anyhow::Result<Pass> {
        let outcomes: Vec<String> = self
            .lines
            .iter()
            .filter(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("message outcome"))
            })
            .filter_map(|l| l["outcome"].as_str().map(str::to_owned))
            .collect();
        let applied = self.said("applied");
        let superseded = !outcomes.is_empty() && outcomes.iter().all(|o| o == "superseded");
        ensure!(
            applied.is_some() || superseded,
            "the run neither applied nor was superseded: {}",
            self.log
        );
        let count = |field: &str| applied.and_then(|a| a[field].as_u64()).unwrap_or(0);
        let usage_line = self
            .lines
            .iter()
            .find(|l| l.get("dynamodb_requests").is_some())
            .ok_or_else(|| anyhow!("no usage line: {}", self.log))?;
        let summary = self
            .lines
            .iter()
            .find(|l| l.get("messages_superseded").is_some());
        Ok(Pass {
            wall: self.wall,
            user: self.usage.user,
            system: self.usage.system,
            peak_rss_kib: usage_line["peak_rss_kib"].as_u64().unwrap_or(0),
            written: count("written"),
            already_applied: count("already_applied"),
            already_applied_on_read: count("already_applied_on_read"),
            requests: usage_line["dynamodb_requests"].as_u64().unwrap_or(0),
            ledger_requests: usage_line["ledger_requests"].as_u64(),
            table_write_units: usage_line["table_write_units"].as_f64().unwrap_or(0.0),
            index_write_units: usage_line["index_write_units"].as_f64().unwrap_or(0.0),
            outcomes,
            handler_ms: summary.and_then(|s| s["duration_ms"].as_u64()),
            run_completed: self.lines.iter().any(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("run completed"))
            }),
            warnings: self
                .lines
                .iter()
                .filter(|l| l["level"] == "WARN" || l["level"] == "ERROR")
                .map(|l| l["message"].as_str().unwrap_or_default().to_owned())
                // The bench sets no dead-letter queue, on purpose.
                .filter(|m| !m.starts_with("DLQ_URL is not set"))
                .collect(),
        })
    }

    /// "done", "handed back" or "failed (N)".
    fn outcome(&self) -> String {
        match self.exit {
            EXIT_DONE => "done".to_owned(),
            EXIT_HANDED_BACK => "handed back".to_owned(),
            other => format!("failed ({other})"),
        }
    }

    /// Why a message was handed back or the run failed: the product's own
    /// summary on stderr (not JSON), else the last warning or error line.
    fn why(&self) -> Option<String> {
        if self.exit == EXIT_DONE {
            return None;
        }
        let summary = self
            .log
            .lines()
            .rev()
            .find(|l| l.starts_with("consolidation-updater:"))
            .map(str::to_owned);
        summary.or_else(|| {
            self.lines
                .iter()
                .rev()
                .find(|l| l["level"] == "ERROR" || l["level"] == "WARN")
                .map(|l| l["message"].to_string())
        })
    }
}

struct ChildUsage {
    user: Duration,
    system: Duration,
}

fn duration(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

/// CPU time (user + system) this process has used so far: the raw load
/// generator's, since the servers run in processes of their own.
fn own_cpu() -> Duration {
    // SAFETY: plain FFI call; `usage` is a valid out-parameter for getrusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    duration(usage.ru_utime) + duration(usage.ru_stime)
}

/// Reaps the child and reads its CPU time and exit status. (Its peak RSS
/// comes from its own report: `ru_maxrss` survives `exec` and would show
/// this process's size.)
fn wait_for_exit(pid: u32) -> anyhow::Result<(ChildUsage, i32)> {
    let mut status = 0;
    // SAFETY: plain FFI call; `usage` is a valid out-parameter for wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe {
        libc::wait4(
            i32::try_from(pid).context("pid")?,
            &mut status,
            0,
            &mut usage,
        )
    };
    ensure!(
        reaped > 0,
        "wait4 failed: {}",
        std::io::Error::last_os_error()
    );
    ensure!(
        libc::WIFEXITED(status),
        "the run was killed (status {status})"
    );
    Ok((
        ChildUsage {
            user: duration(usage.ru_utime),
            system: duration(usage.ru_stime),
        },
        libc::WEXITSTATUS(status),
    ))
}

/// The server's ceiling for this kind of request: the same conditional
/// update on `ids` (fresh, unstamped), sent by a lean client of its own with
/// `concurrency` requests in flight.
async fn raw_ceiling(
    endpoint: &str,
    table: &str,
    mode: Mode,
    ids: &[String],
    concurrency: usize,
) -> anyhow::Result<Ceiling> {
    let client: HttpClient<HttpConnector, Full<Bytes>> = HttpClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build_http();
    let bodies: Vec<(&'static str, String)> = match mode {
        Mode::UpdateItem => ids
            .iter()
            .map(|id| ("DynamoDB_20120810.UpdateItem", update_item_body(table, id)))
            .collect(),
        Mode::BatchStatement => ids
            .chunks(25)
            .map(|chunk| {
                (
                    "DynamoDB_20120810.BatchExecuteStatement",
                    batch_statement_body(table, chunk),
                )
            })
            .collect(),
    };
    let next = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let bodies = Arc::new(bodies);
    let started = Instant::now();
    let cpu_before = own_cpu();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, bodies, next, failures) = (
            client.clone(),
            Arc::clone(&bodies),
            Arc::clone(&next),
            Arc::clone(&failures),
        );
        let endpoint = endpoint.to_owned();
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some((target, body)) = bodies.get(i) else {
                    return;
                };
                let request = Request::post(&endpoint)
                    .header("content-type", "application/x-amz-json-1.0")
                    .header("x-amz-target", *target)
                    .header("x-amz-date", "20251120T000000Z")
                    .header(
                        "authorization",
                        "AWS4-HMAC-SHA256 Credential=local/20251120/sa-east-1/dynamodb/aws4_request, \
                         SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=0",
                    )
                    .body(Full::new(Bytes::from(body.clone())));
                let ok = match request {
                    Ok(request) => match client.request(request).await {
                        Ok(response) => {
                            let fine = response.status().is_success();
                            let _ = response.into_body().collect().await;
                            fine
                        }
                        Err(_) => false,
                    },
                    Err(_) => false,
                };
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    let cpu = own_cpu().saturating_sub(cpu_before);
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("the raw load generator saw {failed} failed requests");
    }
    Ok(Ceiling {
        records_per_second: ids.len() as f64 / elapsed.as_secs_f64(),
        cpu_per_record_us: cpu.as_secs_f64() * 1e6 / ids.len() as f64,
    })
}

/// What the raw load generator reached, and the CPU it spent per record: the
/// floor under any client's cost for this request on this machine (no
/// signing, no response parsing beyond the status).
struct Ceiling {
    records_per_second: f64,
    cpu_per_record_us: f64,
}

/// The attributes every stamp sets, as DynamoDB JSON values.
fn stamp_values() -> Value {
    json!({
        ":status": {"S": "completed"},
        ":s3_path": {"S": format!("s3://chargebacks-bucket/consolidated/{DAY}/run=1")},
        ":consolidation_date": {"S": format!("{DAY}T23:59:59.500000+00:00")},
        ":execution": {"N": "1"},
        ":job_name": {"S": "poc-chargeback-dev-chargebacks-consolidation"},
        ":output_format": {"S": "parquet"},
        ":records": {"N": "1000"},
        ":updated_at": {"S": "2025-11-21T00:00:00.000Z"}
    })
}

fn update_item_body(table: &str, id: &str) -> String {
    json!({
        "TableName": table,
        "Key": {"chargeback_id": {"S": id}},
        "UpdateExpression": "SET consolidation_status = :status, consolidation_s3_path = :s3_path, \
            consolidation_date = :consolidation_date, consolidation_execution = :execution, \
            consolidation_job_name = :job_name, output_format = :output_format, \
            records_in_consolidation = :records, updated_at = :updated_at",
        "ConditionExpression": "attribute_exists(#pk) AND (attribute_not_exists(consolidation_execution) \
            OR consolidation_execution < :execution)",
        "ExpressionAttributeNames": {"#pk": "chargeback_id"},
        "ExpressionAttributeValues": stamp_values(),
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD"
    })
    .to_string()
}

fn batch_statement_body(table: &str, ids: &[String]) -> String {
    let values = stamp_values();
    let set: Vec<Value> = [
        ":status",
        ":s3_path",
        ":consolidation_date",
        ":execution",
        ":job_name",
        ":output_format",
        ":records",
        ":updated_at",
    ]
    .iter()
    .map(|name| values[*name].clone())
    .collect();
    let statement = format!(
        "UPDATE \"{table}\" SET \"consolidation_status\" = ? SET \"consolidation_s3_path\" = ? \
         SET \"consolidation_date\" = ? SET \"consolidation_execution\" = ? \
         SET \"consolidation_job_name\" = ? SET \"output_format\" = ? \
         SET \"records_in_consolidation\" = ? SET \"updated_at\" = ? \
         WHERE \"chargeback_id\" = ? AND (\"consolidation_execution\" IS MISSING \
         OR \"consolidation_execution\" < ?)"
    );
    let statements: Vec<Value> = ids
        .iter()
        .map(|id| {
            let mut parameters = set.clone();
            parameters.push(json!({"S": id}));
            parameters.push(json!({"N": "1"}));
            json!({
                "Statement": statement,
                "Parameters": parameters,
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD"
            })
        })
        .collect();
    json!({"Statements": statements}).to_string()
}

/// One write mode and projection: each run's rate against the ceiling and
/// its costs per record, then both passes of every run side by side.
fn report(records: u64, runs: &[Run], ceiling: &Ceiling) {
    let Some(head) = runs.first() else {
        return;
    };
    println!(
        "\n{}, index {}: ceiling {:.0} records/s (raw client CPU {:.1} µs/record)",
        head.mode.env(),
        head.projection.label(),
        ceiling.records_per_second,
        ceiling.cpu_per_record_us,
    );
    for run in runs {
        let rate = records as f64 / run.first.wall.as_secs_f64();
        println!(
            "  ledger {:<3} first pass:  {records} stamped in {:.2} s = {rate:.0} records/s; ratio to the ceiling {:.2}",
            run.ledger.label(),
            run.first.wall.as_secs_f64(),
            rate / ceiling.records_per_second
        );
        for (name, pass) in [("first pass", &run.first), ("redelivery", &run.again)] {
            let cpu = pass.user + pass.system;
            let per_record = |x: f64| x / records as f64;
            println!(
                "  ledger {:<3} {name:<11} CPU {:.2} s (user {:.2}, system {:.2}) = {:.1} µs/record; peak RSS {:.1} MiB; \
                 {:.3} requests/record (table + ledger); write units/record reported: {:.3} table + {:.3} index \
                 (written {}, already applied {}, of which skipped on read {})",
                run.ledger.label(),
                cpu.as_secs_f64(),
                pass.user.as_secs_f64(),
                pass.system.as_secs_f64(),
                per_record(cpu.as_secs_f64() * 1e6),
                pass.peak_rss_kib as f64 / 1024.0,
                per_record(pass.total_requests() as f64),
                per_record(pass.table_write_units),
                per_record(pass.index_write_units),
                pass.written,
                pass.already_applied,
                pass.already_applied_on_read,
            );
            for warning in &pass.warnings {
                println!(
                    "  ledger {:<3} {name:<11} WARN/ERROR: {}",
                    run.ledger.label(),
                    shorten(warning, 200)
                );
            }
        }
    }
    println!(
        "  {:<11} {:<17} {:<6} {:<10} {:>9} {:>10} {:>9} {:>9} {:>6} {:>9} {:>19} {:>19}",
        "pass",
        "index",
        "ledger",
        "outcome",
        "wall ms",
        "handler ms",
        "records/s",
        "requests",
        "ledger",
        "total",
        "WU reported tbl+idx",
        "WU computed tbl+idx"
    );
    for (name, pass_of) in [
        ("first pass", (|r: &Run| &r.first) as fn(&Run) -> &Pass),
        ("redelivery", |r: &Run| &r.again),
    ] {
        for run in runs {
            let pass = pass_of(run);
            let (table_units, index_units) = pass.computed_write_units(run.projection);
            println!(
                "  {name:<11} {:<17} {:<6} {:<10} {:>9.1} {:>10} {:>9.0} {:>9} {:>6} {:>9} {:>19} {:>19}",
                run.projection.label(),
                run.ledger.label(),
                pass.outcome(),
                pass.wall.as_secs_f64() * 1e3,
                pass.handler_ms.map_or("-".to_owned(), |ms| ms.to_string()),
                records as f64 / pass.wall.as_secs_f64(),
                pass.requests,
                pass.ledger_requests
                    .map_or("-".to_owned(), |n| n.to_string()),
                pass.total_requests(),
                format!(
                    "{:.0} + {:.0}",
                    pass.table_write_units, pass.index_write_units
                ),
                format!("{table_units} + {index_units}"),
            );
        }
    }
}

/// The run ledger's targets for one write mode and projection, one
/// PASS/FAIL row each (a FAIL does not fail the bench); returns (passed, checked).
fn ledger_targets(runs: &[Run]) -> (usize, usize) {
    let off = runs.iter().find(|r| r.ledger == LedgerSetting::Off);
    let Some(on) = runs.iter().find(|r| r.ledger == LedgerSetting::On) else {
        return (0, 0);
    };
    println!(
        "  targets, ledger on ({}, index {}):",
        on.mode.env(),
        on.projection.label()
    );
    let (mut passed, mut checked) = (0, 0);
    let mut row = |target: String, misses: Vec<String>| {
        checked += 1;
        println!("    {target:<100} {}", verdict(&misses, &mut passed));
    };
    let rate = |pass: &Pass| 1.0 / pass.wall.as_secs_f64();
    match off {
        Some(off) => {
            let ratio = rate(&on.first) / rate(&off.first);
            row(
                format!(
                    "first pass: rate with the ledger ≥ {TARGET_LEDGER_RATE_SHARE:.2} × without: {ratio:.3} ({:.2} s against {:.2} s)",
                    on.first.wall.as_secs_f64(),
                    off.first.wall.as_secs_f64()
                ),
                if ratio >= TARGET_LEDGER_RATE_SHARE {
                    Vec::new()
                } else {
                    vec!["slower".to_owned()]
                },
            );
        }
        None => println!(
            "    first pass: rate against the ledger off not measured (run --ledger off,on)"
        ),
    }
    let ledger_requests = |pass: &Pass| {
        pass.ledger_requests
            .map_or("not reported".to_owned(), |n| n.to_string())
    };
    row(
        format!(
            "first pass: ledger requests ≤ {TARGET_LEDGER_REQUESTS}: {} (outcome {}, run completed: {})",
            ledger_requests(&on.first),
            on.first.outcome(),
            if on.first.run_completed { "yes" } else { "no" }
        ),
        match on.first.ledger_requests {
            Some(n) if n <= TARGET_LEDGER_REQUESTS => Vec::new(),
            Some(_) => vec!["requests".to_owned()],
            None => vec!["not reported".to_owned()],
        },
    );
    let again = &on.again;
    row(
        format!(
            "redelivery: answered by the ledger: outcome {}",
            again.outcome()
        ),
        if again.superseded() {
            Vec::new()
        } else {
            vec!["not superseded".to_owned()]
        },
    );
    row(
        format!(
            "redelivery: requests in total ≤ {TARGET_LEDGER_REQUESTS}: {} ({} chargebacks table + {} ledger)",
            again.total_requests(),
            again.requests,
            ledger_requests(again)
        ),
        if again.total_requests() <= TARGET_LEDGER_REQUESTS && again.ledger_requests.is_some() {
            Vec::new()
        } else {
            vec!["requests".to_owned()]
        },
    );
    let (table_units, index_units) = again.computed_write_units(on.projection);
    let reported = again.table_write_units + again.index_write_units;
    row(
        format!(
            "redelivery: write units on the chargebacks table = 0: reported {reported:.0}, computed {}",
            table_units + index_units
        ),
        if reported == 0.0 && table_units + index_units == 0 {
            Vec::new()
        } else {
            vec!["writes".to_owned()]
        },
    );
    row(
        format!(
            "redelivery: handler time < {TARGET_REDELIVERY_HANDLER_MS} ms: {} (wall {:.1} ms, process start included)",
            again
                .handler_ms
                .map_or("not reported".to_owned(), |ms| format!("{ms} ms")),
            again.wall.as_secs_f64() * 1e3
        ),
        match again.handler_ms {
            Some(ms) if ms < TARGET_REDELIVERY_HANDLER_MS => Vec::new(),
            Some(_) => vec!["slow".to_owned()],
            None => vec!["not reported".to_owned()],
        },
    );
    (passed, checked)
}

/// Cold start, `runs` times: from spawning the binary as Lambda would to its
/// first poll of a local runtime-API stub (which never answers). Milliseconds, sorted.
async fn cold_starts(endpoint: &str, table: &str, runs: usize) -> anyhow::Result<Vec<f64>> {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        // No invocation to hand out: the stub only sees the polls.
        let stub = Stub::serving(Vec::new());
        let api = start_stub(stub.clone()).await?;
        let spawned = Instant::now();
        let mut child = lambda_command(&api, endpoint, table)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        wait_for_within(&stub, Duration::from_secs(10), |s| s.first_poll.is_some())
            .await
            .context("no poll within 10 s")?;
        let at = stub
            .seen
            .lock()
            .await
            .first_poll
            .ok_or_else(|| anyhow!("no first poll"))?;
        samples.push(at.duration_since(spawned).as_secs_f64() * 1e3);
        let _ = child.kill().await;
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples)
}

/// `--serve-capacity-proxy`: the proxy of the integration tests in front of
/// `upstream`, limited to `rate` writes/s (0: only counting), until the
/// bench closes this process's stdin (or dies).
async fn serve_capacity_proxy(upstream: &str, rate: u64) -> anyhow::Result<()> {
    let (proxy, endpoint) = proxy::FaultProxy::start(upstream).await?;
    proxy.write_capacity.store(rate, Ordering::SeqCst);
    println!("PROXY_ENDPOINT={endpoint}");
    std::io::Write::flush(&mut std::io::stdout())?;
    tokio::io::copy(&mut tokio::io::stdin(), &mut tokio::io::sink()).await?;
    Ok(())
}

/// The capacity proxy in a process of its own (this bench, re-executed).
struct ProxyProcess {
    endpoint: String,
    http: HttpClient<HttpConnector, Full<Bytes>>,
    // Killed when dropped; its stdin closing ends it too.
    _child: tokio::process::Child,
}

impl ProxyProcess {
    async fn start(upstream: &str, rate: u64) -> anyhow::Result<Self> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["--serve-capacity-proxy", "--upstream", upstream, "--rate"])
            .arg(rate.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .context("the capacity proxy did not start")??
            .ok_or_else(|| anyhow!("the capacity proxy said nothing"))?;
        let endpoint = line
            .strip_prefix("PROXY_ENDPOINT=")
            .ok_or_else(|| anyhow!("unexpected first line: {line}"))?
            .to_owned();
        Ok(Self {
            endpoint,
            http: HttpClient::builder(TokioExecutor::new()).build_http(),
            _child: child,
        })
    }

    async fn stats(&self) -> anyhow::Result<proxy::CapacityStats> {
        let request = Request::get(format!("{}{}", self.endpoint, proxy::STATS_PATH))
            .body(Full::new(Bytes::new()))?;
        let response = self.http.request(request).await?;
        ensure!(
            response.status().is_success(),
            "stats: {}",
            response.status()
        );
        let body = response.into_body().collect().await?.to_bytes();
        Ok(serde_json::from_slice(&body)?)
    }
}

/// Records of `table` carrying a stamp, counted on the server itself.
async fn count_stamped(client: &aws_sdk_dynamodb::Client, table: &str) -> anyhow::Result<u64> {
    let mut stamped = 0;
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .filter_expression("attribute_exists(consolidation_execution)")
            .select(aws_sdk_dynamodb::types::Select::Count)
            .set_exclusive_start_key(start)
            .send()
            .await?;
        stamped += u64::try_from(page.count()).unwrap_or(0);
        start = page.last_evaluated_key;
        if start.is_none() {
            return Ok(stamped);
        }
    }
}

/// Records of `table` stamped by `execution`, counted on the server itself.
/// A scan page of a large table can take DynamoDB Local longer than the
/// product's 5 s attempt timeout: this count waits up to a minute.
async fn count_at_execution(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    execution: u64,
) -> anyhow::Result<u64> {
    let patient = aws_sdk_dynamodb::Client::from_conf(
        client
            .config()
            .to_builder()
            .timeout_config(
                aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .build(),
            )
            .build(),
    );
    let mut counted = 0;
    let mut start = None;
    loop {
        let page = patient
            .scan()
            .table_name(table)
            .filter_expression("consolidation_execution = :execution")
            .expression_attribute_values(
                ":execution",
                aws_sdk_dynamodb::types::AttributeValue::N(execution.to_string()),
            )
            .select(aws_sdk_dynamodb::types::Select::Count)
            .set_exclusive_start_key(start)
            .send()
            .await
            .with_context(|| format!("counting the records at execution {execution} of {table}"))?;
        counted += u64::try_from(page.count()).unwrap_or(0);
        start = page.last_evaluated_key;
        if start.is_none() {
            return Ok(counted);
        }
    }
}

/// Drops a run's table, so that the server holds one table's worth at a time.
async fn drop_table(client: &aws_sdk_dynamodb::Client, table: &str) {
    if let Err(e) = client.delete_table().table_name(table).send().await {
        eprintln!("bench: could not delete {table}: {e}");
    }
}

/// `--write-capacity`: per write mode and rate, the product through the
/// capacity proxy, one row each.
async fn capacity_limited_runs(
    args: &Args,
    rates: &Rates,
    client: &aws_sdk_dynamodb::Client,
    endpoint: &str,
) -> anyhow::Result<()> {
    println!(
        "\ncapacity-limited runs: the product (MAX_CONCURRENCY {}) through a proxy playing a \
         table of R writes/s, bucket of max(R, 25) starting full; reached = (admitted − \
         bucket) / (last admitted − first admitted). PASS: done, reached ≥ {TARGET_REACHED_SHARE:.2} × R, \
         throttled writes per stamped record ≤ {TARGET_THROTTLED_PER_RECORD}",
        args.max_concurrency
    );
    println!(
        "  {:<16} {:>6}  {:<12} {:>13}  {:>7}  {:>9}  {:>6}  {:>10}  verdict",
        "mode", "R", "outcome", "stamped", "wall s", "reached/s", "/R", "thr/record"
    );
    let (mut passed, mut runs) = (0, 0);
    for mode in &args.write_mode {
        for rate in rates.for_mode(*mode) {
            let records = args.capacity_records(rate);
            let table = fresh_table(
                client,
                &format!("capacity-{}-{rate}", mode.env()),
                args.index_projection[0],
            )
            .await?;
            seed(client, &table, DAY, records).await?;
            let event = event_file(records)?;
            let proxy = ProxyProcess::start(endpoint, rate).await?;
            let run = Invoke {
                binary: Path::new(BINARY),
                endpoint: &proxy.endpoint,
                table: &table,
                mode: *mode,
                max_concurrency: args.max_concurrency,
                event: &event,
                profile_with: None,
                timeout: None,
                env: vec![("LOG_LEVEL", args.product_log_level.clone())],
            }
            .run()
            .await?;
            if let Some(dir) = &args.save_logs {
                std::fs::create_dir_all(dir)?;
                std::fs::write(dir.join(format!("{}-{rate}.log", mode.env())), &run.log)?;
            }
            let stats = proxy.stats().await?;
            drop(proxy);
            let stamped = count_stamped(client, &table).await?;
            drop_table(client, &table).await;

            let reached = stats.reached_rate();
            let share = reached.map(|r| r / rate as f64);
            let throttled_per_record = stats.throttled_writes as f64 / stamped.max(1) as f64;
            let mut misses = Vec::new();
            if run.exit != EXIT_DONE || stamped != records {
                misses.push(run.outcome());
            }
            match share {
                Some(share) if share >= TARGET_REACHED_SHARE => {}
                // Never refused yet slower than R: the server's own
                // ceiling on this machine held the product back, not the capacity.
                Some(_) if stats.throttled_writes == 0 => {
                    misses.push("rate; never throttled: the server's ceiling".to_owned());
                }
                Some(_) => misses.push("rate".to_owned()),
                None => misses.push("no rate (the burst covered every write)".to_owned()),
            }
            if throttled_per_record > TARGET_THROTTLED_PER_RECORD {
                misses.push("throttled".to_owned());
            }
            runs += 1;
            let verdict = verdict(&misses, &mut passed);
            println!(
                "  {:<16} {rate:>6}  {:<12} {:>13}  {:>7.1}  {:>9}  {:>6}  {:>10.3}  {verdict}",
                mode.env(),
                run.outcome(),
                format!("{stamped}/{records}"),
                run.wall.as_secs_f64(),
                reached.map_or("-".to_owned(), |r| format!("{r:.0}")),
                share.map_or("-".to_owned(), |s| format!("{s:.2}")),
                throttled_per_record,
            );
            println!(
                "  {:<16} proxy: {} writes admitted, {} throttled ({} requests) over {:.1} s",
                "",
                stats.admitted_writes,
                stats.throttled_writes,
                stats.throttled_requests,
                stats.admitted_span_seconds
            );
            if let Some(why) = run.why() {
                println!("  {:<16} {}", "", shorten(&why, 160));
            }
        }
    }
    println!("  {passed} of {runs} capacity-limited runs PASS");
    Ok(())
}

/// `--max-write-rate`: per write mode and rate, the product told to keep
/// MAX_WRITE_RATE against the unlimited server; a proxy counts its writes.
async fn paced_runs(
    args: &Args,
    client: &aws_sdk_dynamodb::Client,
    endpoint: &str,
) -> anyhow::Result<()> {
    println!(
        "\nMAX_WRITE_RATE runs against the unlimited server (a proxy only counts): kept = writes \
         / (last write − first write). PASS: done, kept within ±{:.0}% of R",
        TARGET_PACING_TOLERANCE * 100.0
    );
    println!(
        "  {:<16} {:>6}  {:<12} {:>13}  {:>7}  {:>9}  {:>6}  verdict",
        "mode", "R", "outcome", "stamped", "wall s", "kept/s", "/R"
    );
    let (mut passed, mut runs) = (0, 0);
    for mode in &args.write_mode {
        for &rate in &args.max_write_rate {
            let records = args.capacity_records(rate);
            let table = fresh_table(
                client,
                &format!("paced-{}-{rate}", mode.env()),
                args.index_projection[0],
            )
            .await?;
            seed(client, &table, DAY, records).await?;
            let event = event_file(records)?;
            let proxy = ProxyProcess::start(endpoint, 0).await?;
            let run = Invoke {
                binary: Path::new(BINARY),
                endpoint: &proxy.endpoint,
                table: &table,
                mode: *mode,
                max_concurrency: args.max_concurrency,
                event: &event,
                profile_with: None,
                timeout: None,
                env: vec![
                    ("LOG_LEVEL", args.product_log_level.clone()),
                    ("MAX_WRITE_RATE", rate.to_string()),
                ],
            }
            .run()
            .await?;
            let stats = proxy.stats().await?;
            drop(proxy);
            let stamped = count_stamped(client, &table).await?;
            drop_table(client, &table).await;

            let kept = stats.admitted_rate();
            let share = kept.map(|k| k / rate as f64);
            let mut misses = Vec::new();
            if run.exit != EXIT_DONE || stamped != records {
                misses.push(run.outcome());
            }
            if !share.is_some_and(|s| (s - 1.0).abs() <= TARGET_PACING_TOLERANCE) {
                misses.push("rate".to_owned());
            }
            runs += 1;
            let verdict = verdict(&misses, &mut passed);
            println!(
                "  {:<16} {rate:>6}  {:<12} {:>13}  {:>7.1}  {:>9}  {:>6}  {verdict}",
                mode.env(),
                run.outcome(),
                format!("{stamped}/{records}"),
                run.wall.as_secs_f64(),
                kept.map_or("-".to_owned(), |k| format!("{k:.0}")),
                share.map_or("-".to_owned(), |s| format!("{s:.2}")),
            );
            if let Some(why) = run.why() {
                println!("  {:<16} {}", "", shorten(&why, 160));
            }
        }
    }
    println!("  {passed} of {runs} MAX_WRITE_RATE runs PASS");
    Ok(())
}

/// `--compare-binary`: the other build and this one, interleaved, each on a
/// fresh table of `--records` against the unlimited server.
async fn compare_binaries(
    args: &Args,
    baseline: &Path,
    client: &aws_sdk_dynamodb::Client,
    endpoint: &str,
) -> anyhow::Result<()> {
    ensure!(
        baseline.is_file(),
        "--compare-binary {}: no such file",
        baseline.display()
    );
    ensure!(args.repeats > 0, "--repeats must be at least 1");
    println!(
        "\ncomparison: baseline {} against this build ({BINARY}), {} records, {} interleaved \
         runs each (ABBA order, a fresh embedded engine per run), MAX_CONCURRENCY {}",
        baseline.display(),
        args.records,
        args.repeats,
        args.max_concurrency
    );
    let event = event_file(args.records)?;
    let sdk = load_sdk_config(Some(REGION)).await;
    for mode in &args.write_mode {
        let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        let mut cpu_per_record: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for repeat in 1..=args.repeats {
            // ABBA: each binary goes first as often as second.
            let mut order = [("baseline", baseline), ("this build", Path::new(BINARY))];
            if repeat % 2 == 0 {
                order.reverse();
            }
            for (label, binary) in order {
                let which = usize::from(label != "baseline");
                // The embedded engine slows as its database grows: a fresh
                // one per run, so that no binary inherits the other's tables.
                let fresh = match args.server {
                    ServerKind::Embedded => Some(EmbeddedProcess::start().await?),
                    ServerKind::DynamodbLocal => None,
                };
                let endpoint = fresh.as_ref().map_or(endpoint, |s| s.endpoint.as_str());
                let fresh_client = fresh.as_ref().map(|s| local_client(&sdk, &s.endpoint));
                let client = fresh_client.as_ref().unwrap_or(client);
                let table = fresh_table(
                    client,
                    &format!("compare-{}-{which}", mode.env()),
                    args.index_projection[0],
                )
                .await?;
                seed(client, &table, DAY, args.records).await?;
                let run = Invoke {
                    binary,
                    endpoint,
                    table: &table,
                    mode: *mode,
                    max_concurrency: args.max_concurrency,
                    event: &event,
                    profile_with: None,
                    timeout: None,
                    env: Vec::new(),
                }
                .run()
                .await?;
                let stamped = count_stamped(client, &table).await?;
                drop_table(client, &table).await;
                let rate = args.records as f64 / run.wall.as_secs_f64();
                let cpu_us =
                    (run.usage.user + run.usage.system).as_secs_f64() * 1e6 / args.records as f64;
                let complete = run.exit == EXIT_DONE && stamped == args.records;
                println!(
                    "  {:<16} run {repeat} {label:<10}  {:>9.0} records/s, CPU {cpu_us:.1} µs/record  ({:.2} s, {}, {stamped}/{} stamped)",
                    mode.env(),
                    rate,
                    run.wall.as_secs_f64(),
                    run.outcome(),
                    args.records
                );
                if complete {
                    rates[which].push(rate);
                    cpu_per_record[which].push(cpu_us);
                } else {
                    println!("  {:<16} (not counted: the run did not stamp the day)", "");
                }
            }
        }
        match (median(&mut rates[0]), median(&mut rates[1])) {
            (Some(base), Some(this)) => println!(
                "  {:<16} median: baseline {base:.0}, this build {this:.0} records/s; ratio \
                 (this / baseline) {:.3}",
                mode.env(),
                this / base
            ),
            _ => println!("  {:<16} no median: a binary stamped no day", mode.env()),
        }
        if let (Some(base), Some(this)) = (
            median(&mut cpu_per_record[0]),
            median(&mut cpu_per_record[1]),
        ) {
            println!(
                "  {:<16} median CPU: baseline {base:.1}, this build {this:.1} µs/record; ratio {:.3}",
                mode.env(),
                this / base
            );
        }
    }
    Ok(())
}

/// PASS when nothing missed its target (counted in `passed`), else what did.
fn verdict(misses: &[String], passed: &mut usize) -> String {
    if misses.is_empty() {
        *passed += 1;
        "PASS".to_owned()
    } else {
        format!("FAIL ({})", misses.join(", "))
    }
}

fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[n / 2]),
        n => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}
