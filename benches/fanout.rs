//! The fan-out benchmark: how fast the product stamps a day, at what cost,
//! and how close that is to what the server allows.
//!
//! For each write mode it seeds a fresh table with N records of one day on a
//! DynamoDB-compatible server running in its own process (the embedded
//! engine served by `consolidation-updater serve`, or DynamoDB Local), then
//! runs the real binary's `invoke` on a consolidation event for that day:
//! the real handler and DynamoDB adapter, in a process of their own, whose
//! CPU time and peak RSS the kernel reports when it exits. The same event is
//! then delivered again (a redelivery). On fresh records of another table, a
//! raw load generator of its own (hyper, hand-written request bodies, none of
//! the product's code) sends the same conditional updates at saturating
//! concurrency: the server's ceiling. Last, cold start: process start to the
//! first runtime-API poll against a local stub.
//!
//! `scripts/bench.sh` runs it; `cargo bench --bench fanout -- --help` lists
//! the options.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use axum::Router;
use axum::body::Bytes;
use axum::http::Request;
use axum::routing::get;
use chrono::{NaiveDate, TimeZone, Utc};
use clap::{Parser, ValueEnum};
use consolidation_updater::store::dynamodb::provision::{
    IndexProjection, TableShape, create_table, put_chargebacks,
};
use consolidation_updater::store::dynamodb::{load_sdk_config, local_client};
use consolidation_updater::synthetic::SyntheticDay;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

const BINARY: &str = env!("CARGO_BIN_EXE_consolidation-updater");
const REGION: &str = "sa-east-1";
const INDEX: &str = "partition_date-index";
const DAY: &str = "2025-11-20";
/// DynamoDB Local is slow and heavy: beyond this it measures its own limits.
const DYNAMODB_LOCAL_MAX_RECORDS: u64 = 200_000;

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
    /// Accepted for `cargo bench`'s own flag.
    #[arg(long, hide = true)]
    bench: bool,
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
    match runtime.block_on(run(args)) {
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
    let ceiling_records = args.ceiling_records.unwrap_or(match args.server {
        ServerKind::DynamodbLocal => args.records.min(100_000),
        ServerKind::Embedded => args.records,
    });
    println!(
        "server: {:?} at {endpoint}; {} records; MAX_CONCURRENCY {}; ceiling on {ceiling_records} fresh records at {} in flight",
        args.server, args.records, args.max_concurrency, args.ceiling_concurrency
    );

    for mode in &args.write_mode {
        let table = fresh_table(&client, &format!("bench-{}", mode.env())).await?;
        let started = Instant::now();
        seed(&client, &table, DAY, args.records).await?;
        println!(
            "\n{}: seeded {} records in {:.1} s",
            mode.env(),
            args.records,
            started.elapsed().as_secs_f64()
        );
        let event = event_file(args.records)?;
        let first = invoke(
            &endpoint,
            &table,
            *mode,
            args.max_concurrency,
            &event,
            args.profile_with.as_deref(),
        )
        .await?;
        // A request that outlives its attempt timeout is retried, and the
        // retry finds what the server applied meanwhile already applied:
        // every record is stamped either way.
        ensure!(
            first.written + first.already_applied == args.records,
            "the first pass stamped {} and found {} already applied, of {} records",
            first.written,
            first.already_applied,
            args.records
        );
        let again = invoke(&endpoint, &table, *mode, args.max_concurrency, &event, None).await?;

        let ceiling_table = fresh_table(&client, &format!("ceiling-{}", mode.env())).await?;
        let ids = seed(&client, &ceiling_table, "2025-11-21", ceiling_records).await?;
        let ceiling = raw_ceiling(
            &endpoint,
            &ceiling_table,
            *mode,
            &ids,
            args.ceiling_concurrency,
        )
        .await?;

        report(args.records, &first, &again, &ceiling);
    }

    if args.cold_starts > 0 {
        // An empty table: the embedded engine counts a table's items to
        // describe it, which real DynamoDB does not do per request.
        let table = fresh_table(&client, "cold-start").await?;
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

/// A table of the contract, its index projecting `consolidation_execution`
/// so that a redelivery can skip stamped records on read.
async fn fresh_table(client: &aws_sdk_dynamodb::Client, prefix: &str) -> anyhow::Result<String> {
    let name = format!("{prefix}-{}", std::process::id());
    let shape = TableShape {
        index: Some(IndexProjection::IncludeExecution),
        ..TableShape::default()
    };
    create_table(client, &name, INDEX, shape).await?;
    Ok(name)
}

/// Seeds `count` records of `date`, all created before the execution time;
/// returns their ids.
async fn seed(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    date: &str,
    count: u64,
) -> anyhow::Result<Vec<String>> {
    let date: NaiveDate = date.parse()?;
    let end_of_day = Utc.from_utc_datetime(
        &date
            .and_hms_opt(23, 59, 59)
            .ok_or_else(|| anyhow!("time"))?,
    );
    let day = SyntheticDay {
        date,
        execution_time: end_of_day,
        before_cutoff: count,
        after_cutoff: 0,
        other_dates: 0,
    };
    let ids = day.chargebacks().map(|c| c.chargeback_id).collect();
    put_chargebacks(client, table, day.chargebacks(), 16).await?;
    Ok(ids)
}

/// The consolidation event of the day, as a Lambda MSK event file.
fn event_file(records: u64) -> anyhow::Result<PathBuf> {
    let event = json!({
        "event_type": "consolidation_completed",
        "partition_date": DAY,
        "execution_sequence": 1,
        "total_executions": 4,
        "records_processed": records,
        "duplicates_removed": 0,
        "output_files": 4,
        "output_format": "parquet",
        "output_path": format!("s3://chargebacks-bucket/consolidated/{DAY}/run=1"),
        "execution_time": format!("{DAY}T23:59:59"),
        "completed_at": format!("{DAY}T23:59:59.500000+00:00"),
        "job_name": "poc-chargeback-dev-chargebacks-consolidation"
    });
    use base64::Engine as _;
    let value = base64::engine::general_purpose::STANDARD.encode(event.to_string());
    let envelope = json!({
        "eventSource": "aws:kafka",
        "eventSourceArn": "arn:aws:kafka:sa-east-1:123456789012:cluster/bench/abc",
        "records": {"chargeback-consolidation-events-0": [{
            "topic": "chargeback-consolidation-events",
            "partition": 0,
            "offset": 1,
            "timestamp": 1_763_683_199_000_i64,
            "timestampType": "CREATE_TIME",
            "value": value,
            "headers": []
        }]}
    });
    let path = std::env::temp_dir().join(format!("bench-event-{}.json", std::process::id()));
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
    written: u64,
    already_applied: u64,
    requests: u64,
    table_write_units: f64,
    index_write_units: f64,
}

/// Runs `consolidation-updater invoke` on `event` and waits for it with
/// `wait4`, which returns the child's CPU time and peak RSS.
async fn invoke(
    endpoint: &str,
    table: &str,
    mode: Mode,
    max_concurrency: usize,
    event: &Path,
    profile_with: Option<&str>,
) -> anyhow::Result<Pass> {
    let started = Instant::now();
    let mut command = match profile_with {
        Some(profiler) => {
            let mut words = profiler.split_whitespace();
            let mut command =
                std::process::Command::new(words.next().ok_or_else(|| anyhow!("empty profiler"))?);
            command.args(words).arg(BINARY);
            command
        }
        None => std::process::Command::new(BINARY),
    };
    let child = command
        .arg("invoke")
        .arg("--event")
        .arg(event)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("AWS_ENDPOINT_URL_DYNAMODB", endpoint)
        .env("DYNAMODB_TABLE_NAME", table)
        .env("WRITE_MODE", mode.env())
        .env("MAX_CONCURRENCY", max_concurrency.to_string())
        .env("LOG_FORMAT", "json")
        .env("PROGRESS_LOG_INTERVAL_SECONDS", "900")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut stderr = child.stderr.ok_or_else(|| anyhow!("no stderr"))?;
    let log = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut text).map(|_| text)
    });
    let usage = tokio::task::spawn_blocking(move || wait_for_exit(pid)).await??;
    let wall = started.elapsed();
    let log = log.await??;
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let find = |message: &str| lines.iter().find(|l| l["message"] == message);
    let applied = find("applied").ok_or_else(|| anyhow!("the run did not apply: {log}"))?;
    let usage_line = lines
        .iter()
        .find(|l| l.get("dynamodb_requests").is_some())
        .ok_or_else(|| anyhow!("no usage line: {log}"))?;
    Ok(Pass {
        wall,
        user: usage.user,
        system: usage.system,
        peak_rss_kib: usage_line["peak_rss_kib"].as_u64().unwrap_or(0),
        written: applied["written"].as_u64().unwrap_or(0),
        already_applied: applied["already_applied"].as_u64().unwrap_or(0),
        requests: usage_line["dynamodb_requests"].as_u64().unwrap_or(0),
        table_write_units: usage_line["table_write_units"].as_f64().unwrap_or(0.0),
        index_write_units: usage_line["index_write_units"].as_f64().unwrap_or(0.0),
    })
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

/// Reaps the child and reads its CPU time. (Its peak RSS comes from its own
/// report: `ru_maxrss` survives `exec` and would show this process's size.)
fn wait_for_exit(pid: u32) -> anyhow::Result<ChildUsage> {
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
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the run failed (status {status})"
    );
    Ok(ChildUsage {
        user: duration(usage.ru_utime),
        system: duration(usage.ru_stime),
    })
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

fn report(records: u64, first: &Pass, again: &Pass, ceiling: &Ceiling) {
    let rate = records as f64 / first.wall.as_secs_f64();
    println!(
        "  first pass:  {records} written in {:.2} s = {rate:.0} records/s; ceiling {:.0} records/s \
         (raw client CPU {:.1} µs/record); ratio {:.2}",
        first.wall.as_secs_f64(),
        ceiling.records_per_second,
        ceiling.cpu_per_record_us,
        rate / ceiling.records_per_second
    );
    for (name, pass) in [("first pass", first), ("redelivery", again)] {
        let cpu = pass.user + pass.system;
        let per_record = |x: f64| x / records as f64;
        println!(
            "  {name:<11} CPU {:.2} s (user {:.2}, system {:.2}) = {:.1} µs/record; peak RSS {:.1} MiB; \
             {:.3} requests/record; write units/record reported: {:.3} table + {:.3} index \
             (written {}, already applied {})",
            cpu.as_secs_f64(),
            pass.user.as_secs_f64(),
            pass.system.as_secs_f64(),
            per_record(cpu.as_secs_f64() * 1e6),
            pass.peak_rss_kib as f64 / 1024.0,
            per_record(pass.requests as f64),
            per_record(pass.table_write_units),
            per_record(pass.index_write_units),
            pass.written,
            pass.already_applied,
        );
    }
}

/// Cold start, `runs` times: from spawning the binary as Lambda would to its
/// first poll of a local runtime-API stub (which never answers). Milliseconds, sorted.
async fn cold_starts(endpoint: &str, table: &str, runs: usize) -> anyhow::Result<Vec<f64>> {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (polled_tx, polled) = tokio::sync::oneshot::channel::<Instant>();
        let polled_tx = Arc::new(std::sync::Mutex::new(Some(polled_tx)));
        let app = Router::new().route(
            "/2018-06-01/runtime/invocation/next",
            get(move || {
                let at = Instant::now();
                if let Some(tx) = polled_tx.lock().ok().and_then(|mut t| t.take()) {
                    let _ = tx.send(at);
                }
                std::future::pending::<&'static str>()
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let api = listener.local_addr()?.to_string();
        let stub = tokio::spawn(async move { axum::serve(listener, app).await });
        let spawned = Instant::now();
        let mut child = tokio::process::Command::new(BINARY)
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", &api)
            .env("AWS_LAMBDA_FUNCTION_NAME", "consolidation-updater")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_REGION", REGION)
            .env("AWS_ACCESS_KEY_ID", "local")
            .env("AWS_SECRET_ACCESS_KEY", "local")
            .env("AWS_SESSION_TOKEN", "local")
            .env("AWS_ENDPOINT_URL_DYNAMODB", endpoint)
            .env("DYNAMODB_TABLE_NAME", table)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let at = tokio::time::timeout(Duration::from_secs(10), polled)
            .await
            .context("no poll within 10 s")??;
        samples.push(at.duration_since(spawned).as_secs_f64() * 1e3);
        let _ = child.kill().await;
        stub.abort();
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples)
}
