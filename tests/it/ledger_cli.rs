//! The run ledger from the command line: `create-table` makes it, `invoke`
//! keeps it, `status` shows it, `backfill` respects it unless forced, and
//! a ledger that cannot be used is said once per invocation.

use anyhow::{Context as _, ensure};
use consolidation_updater::local::{TableShape, put_chargebacks};
use libtest_mimic::Trial;
use serde_json::Value;
use tokio::process::Command;

use crate::Backends;
use crate::cli::cli_command;
use crate::dead_letters::unique;
use crate::scenarios::sample_day;
use crate::support::*;

pub fn tests(_: &Backends) -> Vec<Trial> {
    trials!("ledger_cli";
        create_table_invoke_status_and_backfill_keep_one_ledger,
        a_ledger_that_cannot_be_used_is_said_once_per_invocation,
        invoke_with_a_timeout_leaves_a_checkpoint_and_the_next_invoke_resumes,
    )
}

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/events/sample-msk-event.json");
/// The sample event's own counts.
const SAMPLE_RECORDS_PROCESSED: i64 = 1_250_000;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `command`; its stdout when it exits with `code`.
async fn expect_exit(command: &mut Command, code: i32) -> anyhow::Result<(String, String)> {
    let output = command.output().await?;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    ensure!(
        output.status.code() == Some(code),
        "exit {:?}, expected {code}: {stdout}{stderr}",
        output.status.code()
    );
    Ok((stdout, stderr))
}

pub async fn create_table_invoke_status_and_backfill_keep_one_ledger() -> anyhow::Result<()> {
    // Only for its server: the tables are made by `create-table`.
    let server = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    let table = unique("chargebacks-cli");
    let ledger = format!("{table}-runs");
    let with_ledger = || {
        let mut command = cli_command(&server.endpoint, &table);
        command.env("LEDGER_TABLE_NAME", &ledger);
        command
    };

    let (created, _) = expect_exit(with_ledger().arg("create-table"), 0).await?;
    ensure!(
        created.contains(&format!("Run ledger {ledger}: created")),
        "{created}"
    );
    let (again, _) = expect_exit(with_ledger().arg("create-table"), 0).await?;
    ensure!(
        again.contains(&format!("Run ledger {ledger}: already there")),
        "{again}"
    );
    let day = sample_day(100);
    put_chargebacks(&server.client, &table, day.chargebacks(), 8).await?;

    expect_exit(with_ledger().args(["invoke", "--event", SAMPLE]), 0).await?;
    let (_, log) = expect_exit(with_ledger().args(["invoke", "--event", SAMPLE]), 0).await?;
    ensure!(log.contains("message outcome: superseded"), "{log}");

    let (shown, _) = expect_exit(
        with_ledger().args(["status", "--partition-date", "2025-11-20"]),
        0,
    )
    .await?;
    let row = shown
        .lines()
        .find(|l| l.trim_start().starts_with("2 of 4"))
        .with_context(|| format!("no row for execution 2: {shown}"))?;
    let difference = format!("{:+}", day.before_cutoff as i64 - SAMPLE_RECORDS_PROCESSED);
    for expected in [
        "completed",
        &day.before_cutoff.to_string(),
        "1250000",
        &difference,
        "150",
        &table,
    ] {
        ensure!(row.contains(expected), "{expected:?} missing: {row}");
    }

    let (json, _) = expect_exit(
        with_ledger().args(["status", "--partition-date", "2025-11-20", "--json"]),
        0,
    )
    .await?;
    let document: Value = serde_json::from_str(&json).with_context(|| json.clone())?;
    let run = &document["days"][0]["runs"][0];
    ensure!(
        run["status"] == "completed"
            && run["execution_sequence"] == 2
            && run["counts"]["stamped"] == day.before_cutoff
            && run["records_processed"] == SAMPLE_RECORDS_PROCESSED
            && run["deliveries"] == 1
            && run["table"]["id"] == document["chargebacks_table"]["id"],
        "{document}"
    );

    let (days, _) = expect_exit(with_ledger().args(["status", "--since", "2025-11-19"]), 0).await?;
    ensure!(days.lines().next() == Some("2025-11-19  no runs"), "{days}");
    let line = days
        .lines()
        .find(|l| l.starts_with("2025-11-20"))
        .with_context(|| days.clone())?;
    ensure!(
        line.contains("open")
            && line.contains("completed: 2 of 4")
            && line.contains("in progress: none"),
        "{line}"
    );

    // backfill of the same run: answered by the ledger, unless forced.
    let backfill = [
        "backfill",
        "--partition-date",
        "2025-11-20",
        "--execution",
        "2",
        "--total",
        "4",
        "--output-path",
        "s3://bucket/rerun",
        "--format",
        "csv",
        "--job-name",
        "rerun",
        "--execution-time",
        "2025-11-20T06:30:00",
    ];
    let (answered, _) = expect_exit(with_ledger().args(backfill), 0).await?;
    ensure!(answered.contains("is already done"), "{answered}");
    let (forced, _) = expect_exit(with_ledger().args(backfill).arg("--force"), 0).await?;
    ensure!(
        forced.contains(&format!("{} stamped", day.before_cutoff)),
        "{forced}"
    );
    let (json, _) = expect_exit(
        with_ledger().args(["status", "--partition-date", "2025-11-20", "--json"]),
        0,
    )
    .await?;
    let document: Value = serde_json::from_str(&json)?;
    let run = &document["days"][0]["runs"][0];
    ensure!(
        run["deliveries"] == 2 && run["job_name"] == "rerun",
        "the forced run is recorded: {run}"
    );

    // Wrong or missing input: usage errors.
    let (_, why) = expect_exit(
        cli_command(&server.endpoint, &table).args(["status", "--partition-date", "2025-11-20"]),
        2,
    )
    .await?;
    ensure!(why.contains("LEDGER_TABLE_NAME"), "{why}");
    let (_, why) = expect_exit(
        with_ledger().args(["status", "--partition-date", "2025-13-01"]),
        2,
    )
    .await?;
    ensure!(why.contains("YYYY-MM-DD"), "{why}");
    expect_exit(with_ledger().arg("status"), 2).await?;
    Ok(())
}

pub async fn a_ledger_that_cannot_be_used_is_said_once_per_invocation() -> anyhow::Result<()> {
    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    table.seed(sample_day(20).chargebacks()).await?;
    // Two days: each message asks the ledger (one day's would follow the other).
    let event = kafka_event(&[
        Message::json(
            0,
            1,
            &consolidation("2025-11-21", 1, 4, "2025-11-21T03:00:00"),
        ),
        Message::json(
            0,
            2,
            &consolidation("2025-11-20", 2, 4, "2025-11-20T06:30:00"),
        ),
    ]);
    let path = std::env::temp_dir().join(format!("{}.json", unique("ledger-event")));
    std::fs::write(&path, event.to_string())?;
    let output = cli_command(&table.endpoint, &table.name)
        .env("LEDGER_TABLE_NAME", "no-such-ledger")
        .args(["invoke", "--event"])
        .arg(&path)
        .output()
        .await;
    let _ = std::fs::remove_file(&path);
    let output = output?;
    let stderr = text(&output.stderr);
    ensure!(output.status.success(), "{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("run ledger unavailable"))
        .collect();
    ensure!(warnings.len() == 1, "{warnings:#?}");
    ensure!(
        warnings[0].contains("ResourceNotFound") || warnings[0].contains("non-existent"),
        "the reason is named: {}",
        warnings[0]
    );
    ensure!(
        stderr.matches("message outcome: applied").count() == 2,
        "{stderr}"
    );
    Ok(())
}

/// `invoke --timeout`: a day of three index pages (2,000 keys each) at 500
/// writes/s stops near 3,000 records: the run stays `in_progress` with a
/// checkpoint `status` shows, and the next `invoke` resumes after it and
/// completes the run with every selected record counted once.
pub async fn invoke_with_a_timeout_leaves_a_checkpoint_and_the_next_invoke_resumes()
-> anyhow::Result<()> {
    let server = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    let day = sample_day(5_000);
    let selected = day.before_cutoff;
    put_chargebacks(&server.client, &server.name, day.chargebacks(), 8).await?;
    let ledger = format!("{}-runs", server.name);
    let with_ledger = || {
        let mut command = cli_command(&server.endpoint, &server.name);
        command
            .env("LEDGER_TABLE_NAME", &ledger)
            .env("MAX_WRITE_RATE", "500")
            .env("DEADLINE_SAFETY_MARGIN_MS", "1000");
        command
    };
    expect_exit(with_ledger().arg("create-table"), 0).await?;
    let event = kafka_event(&[Message::json(
        0,
        7,
        &consolidation("2025-11-20", 2, 4, "2025-11-20T06:30:00"),
    )]);
    let path = std::env::temp_dir().join(format!("{}.json", unique("resume-event")));
    std::fs::write(&path, event.to_string())?;

    let (bad, _) = expect_exit(
        with_ledger()
            .args(["invoke", "--timeout", "0", "--event"])
            .arg(&path),
        2,
    )
    .await
    .map(|(out, err)| (format!("{out}{err}"), ()))?;
    ensure!(bad.contains("is not a timeout"), "{bad}");

    // New work stops 6 s in: about 3,000 records, page 1 done.
    let (_, stopped) = expect_exit(
        with_ledger()
            .args(["invoke", "--timeout", "7", "--event"])
            .arg(&path),
        3,
    )
    .await?;
    ensure!(stopped.contains("deadline"), "{stopped}");
    let (status, _) = expect_exit(
        with_ledger().args(["status", "--partition-date", "2025-11-20"]),
        0,
    )
    .await?;
    ensure!(
        status.contains("in_progress") && status.contains("resumes after created_at 2025-11-20T"),
        "{status}"
    );
    let (json, _) = expect_exit(
        with_ledger().args(["status", "--partition-date", "2025-11-20", "--json"]),
        0,
    )
    .await?;
    let json: Value = serde_json::from_str(&json)?;
    let run = &json["days"][0]["runs"][0];
    let before = run["counts"]["stamped"].as_u64().context("stamped")?
        + run["counts"]["already_applied"]
            .as_u64()
            .context("already")?;
    ensure!(
        run["checkpoint"]["created_at"].is_string() && before % 2_000 == 0 && before > 0,
        "{run}"
    );

    let (_, resumed) = expect_exit(with_ledger().args(["invoke", "--event"]).arg(&path), 0).await?;
    let _ = std::fs::remove_file(&path);
    ensure!(
        resumed.contains("resuming the run after its checkpoint"),
        "{resumed}"
    );
    let (json, _) = expect_exit(
        with_ledger().args(["status", "--partition-date", "2025-11-20", "--json"]),
        0,
    )
    .await?;
    let json: Value = serde_json::from_str(&json)?;
    let run = &json["days"][0]["runs"][0];
    let counted = ["stamped", "already_applied", "gone"]
        .iter()
        .map(|k| run["counts"][k].as_u64().unwrap_or(0))
        .sum::<u64>();
    ensure!(
        run["status"] == "completed" && counted == selected && run["checkpoint"].is_null(),
        "{run}"
    );
    Ok(())
}
