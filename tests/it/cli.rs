//! The command line as a user meets it: exit codes, help, errors on one line,
//! `create-table` on any endpoint, and the demo's report.

use std::process::Output;

use anyhow::{Context as _, ensure};
use aws_sdk_dynamodb::types::{
    GlobalSecondaryIndexDescription, IndexStatus, KeyType, ProjectionType,
};

/// The exit statuses the README and `--help` promise.
mod exit_code {
    pub const USAGE: u8 = 2;
    pub const HANDED_BACK: u8 = 3;
}
use consolidation_updater::app::load_sdk_config;
use consolidation_updater::local::{TableShape, create_table};
use libtest_mimic::Trial;
use tokio::process::Command;

use crate::dead_letters::{create_queue, local_sdk, unique};
use crate::runtime_api::BINARY;
use crate::support::*;
use crate::{Backends, ServerTest};

pub fn tests(backends: &Backends) -> Vec<Trial> {
    let mut trials = trials!("cli";
        the_help_lists_the_exit_codes_and_one_default_per_option,
        a_count_that_is_not_positive_is_refused_as_such,
        every_invalid_setting_is_named_at_once,
        invoke_exits_3_when_a_message_is_handed_back_and_says_why,
        the_demo_reports_a_small_day_truthfully,
    );
    trials.push(backends.on_moto(
        "moto::cli::redrive_exits_3_while_messages_still_fail",
        redrive_exits_3_while_messages_still_fail,
    ));
    const CREATE_TABLE: &[(&str, ServerTest)] =
        server_tests![create_table_makes_the_contract_and_can_run_again];
    for (name, test) in CREATE_TABLE {
        trials.extend(backends.on_both_servers("cli", name, *test));
    }
    trials
}

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/events/sample-msk-event.json");

/// The binary as a CLI, with local credentials and `endpoint` as DynamoDB.
pub fn cli_command(endpoint: &str, table: &str) -> Command {
    let mut command = Command::new(BINARY);
    command
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("AWS_ENDPOINT_URL_DYNAMODB", endpoint)
        .env("DYNAMODB_TABLE_NAME", table)
        .env("CHARGEBACK_DATE_INDEX", INDEX);
    command
}

fn code(output: &Output) -> Option<i32> {
    output.status.code()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub async fn the_help_lists_the_exit_codes_and_one_default_per_option() -> anyhow::Result<()> {
    let top = Command::new(BINARY).arg("--help").output().await?;
    let help = text(&top.stdout);
    ensure!(top.status.success(), "{}", text(&top.stderr));
    for line in [
        "Exit status:",
        "0  done",
        "1  failed",
        "2  usage error or invalid setting",
        "3  some messages were handed back",
    ] {
        ensure!(help.contains(line), "--help lacks {line:?}: {help}");
    }
    ensure!(help.contains("create-table"), "{help}");
    for command in [
        "serve",
        "backfill",
        "demo",
        "redrive",
        "invoke",
        "create-table",
    ] {
        let output = Command::new(BINARY)
            .args([command, "--help"])
            .output()
            .await?;
        let help = text(&output.stdout);
        ensure!(
            output.status.success(),
            "{command} --help: {}",
            text(&output.stderr)
        );
        // An option's description may wrap: judge each option's whole text.
        for option in help.split("\n  -").skip(1) {
            ensure!(
                option.matches("[default:").count() <= 1,
                "{command}: two defaults in one option: {option}"
            );
        }
    }
    Ok(())
}

pub async fn a_count_that_is_not_positive_is_refused_as_such() -> anyhow::Result<()> {
    for (args, expected) in [
        (&["demo", "--records", "-5"][..], "not a positive count"),
        (&["demo", "--records", "0"][..], "not a positive count"),
        (
            &[
                "redrive",
                "--queue-url",
                "http://127.0.0.1:9/q",
                "--max",
                "-1",
            ][..],
            "not a positive count",
        ),
    ] {
        let output = Command::new(BINARY).args(args).output().await?;
        let stderr = text(&output.stderr);
        ensure!(
            code(&output) == Some(i32::from(exit_code::USAGE)),
            "{args:?}: {stderr}"
        );
        ensure!(stderr.contains(expected), "{args:?}: {stderr}");
        ensure!(
            !stderr.contains("unexpected argument"),
            "{args:?}: {stderr}"
        );
    }
    Ok(())
}

pub async fn every_invalid_setting_is_named_at_once() -> anyhow::Result<()> {
    let output = cli_command("http://127.0.0.1:9", "chargebacks")
        .args(["invoke", "--event", SAMPLE])
        .env("LOG_LEVEL", "LOUD")
        .env("MAX_CONCURRENCY", "0")
        .env("WRITE_MODE", "fast")
        .output()
        .await?;
    let stderr = text(&output.stderr);
    ensure!(
        code(&output) == Some(i32::from(exit_code::USAGE)),
        "{stderr}"
    );
    ensure!(stderr.trim().lines().count() == 1, "one line: {stderr}");
    for named in [
        "LOG_LEVEL",
        "MAX_CONCURRENCY",
        "WRITE_MODE",
        "TRACE, DEBUG, INFO",
    ] {
        ensure!(stderr.contains(named), "{named} missing: {stderr}");
    }
    Ok(())
}

/// `invoke` tells a handed-back message from success, and says why in one
/// short line with what to set.
pub async fn invoke_exits_3_when_a_message_is_handed_back_and_says_why() -> anyhow::Result<()> {
    // A server without the table.
    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    let output = cli_command(&table.endpoint, "no-such-table")
        .args(["invoke", "--event", SAMPLE])
        .output()
        .await?;
    let stderr = text(&output.stderr);
    ensure!(
        code(&output) == Some(i32::from(exit_code::HANDED_BACK)),
        "{stderr}"
    );
    let response: serde_json::Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("stdout: {}", text(&output.stdout)))?;
    ensure!(
        response["batchItemFailures"]
            .as_array()
            .is_some_and(|f| f.len() == 1)
    );
    let last = stderr.trim().lines().last().unwrap_or_default();
    ensure!(
        last.contains("1 of 1 messages handed back") && last.contains("create-table"),
        "the last line says what happened and what to do: {last}"
    );

    // No credentials anywhere: no keys, no profile, no instance metadata.
    let home = std::env::temp_dir().join(unique("no-credentials"));
    std::fs::create_dir_all(&home)?;
    let output = Command::new(BINARY)
        .args(["invoke", "--event", SAMPLE])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL_DYNAMODB", &table.endpoint)
        .env("DYNAMODB_TABLE_NAME", &table.name)
        .output()
        .await?;
    let _ = std::fs::remove_dir_all(&home);
    let stderr = text(&output.stderr);
    ensure!(
        code(&output) == Some(i32::from(exit_code::HANDED_BACK)),
        "{stderr}"
    );
    let last = stderr.trim().lines().last().unwrap_or_default();
    ensure!(
        last.contains("no AWS credentials found") && last.contains("AWS_PROFILE"),
        "{last}"
    );
    // The cause once per line, not the SDK's multi-line chain or a Debug dump.
    for dump in ["Attempted:", "source:", "DispatchFailure", "ConnectorError"] {
        ensure!(!stderr.contains(dump), "{dump:?} on stderr: {stderr}");
    }
    ensure!(
        stderr.lines().all(|line| !line.starts_with(' ')),
        "no continuation lines: {stderr}"
    );
    Ok(())
}

/// `create-table` makes the table contract on a server that has nothing,
/// finds it the second time, and gives an existing table the index it lacks.
pub async fn create_table_makes_the_contract_and_can_run_again(
    backend: Backend,
) -> anyhow::Result<()> {
    // Only for its server: the test's own tables are made here.
    let server = TestTable::create(&backend, TableShape::default()).await?;
    let name = unique("chargebacks-cli");
    let run = || async {
        let output = cli_command(&server.endpoint, &name)
            .args(["create-table"])
            .output()
            .await?;
        ensure!(output.status.success(), "{}", text(&output.stderr));
        anyhow::Ok(text(&output.stdout))
    };
    let first = run().await?;
    ensure!(first.contains(&format!("Table {name}: created")), "{first}");
    ensure!(first.contains("keys only"), "{first}");
    let second = run().await?;
    ensure!(
        second.contains(&format!("Table {name}: already there")),
        "{second}"
    );

    let described = server
        .client
        .describe_table()
        .table_name(&name)
        .send()
        .await?;
    let index = described
        .table()
        .and_then(|t| t.global_secondary_indexes().first().cloned())
        .context("no index")?;
    ensure!(index.index_name() == Some(INDEX));
    let keys: Vec<(String, KeyType)> = index
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name().to_owned(), k.key_type().clone()))
        .collect();
    ensure!(
        keys == [
            ("partition_date".to_owned(), KeyType::Hash),
            ("created_at".to_owned(), KeyType::Range)
        ],
        "{keys:?}"
    );
    ensure!(
        index.projection().and_then(|p| p.projection_type()) == Some(&ProjectionType::KeysOnly)
    );

    // A table made without the index gets it, waited for until active. On
    // DynamoDB Local under its own access key, i.e. its own database: the
    // server builds an added index on a pool of 10 threads it shares with a
    // TTL job per TTL-enabled table (every ledger table of the suite), which
    // can hold the build back for many minutes.
    let client = isolated_client(&server.endpoint).await;
    let isolated = |table: String, args: &'static [&'static str]| {
        let endpoint = server.endpoint.clone();
        async move {
            let output = cli_command(&endpoint, &table)
                .env("AWS_ACCESS_KEY_ID", ISOLATED_ACCESS_KEY)
                .args(args)
                .output()
                .await?;
            ensure!(output.status.success(), "{}", text(&output.stderr));
            anyhow::Ok(text(&output.stdout))
        }
    };
    let bare = unique("chargebacks-bare");
    create_table(&client, &bare, INDEX, no_index()).await?;
    let stdout = isolated(
        bare.clone(),
        &["create-table", "--index-projection", "include-execution"],
    )
    .await?;
    ensure!(
        stdout.contains("already there; date index added")
            && stdout.contains("projects consolidation_execution"),
        "{stdout}"
    );
    ensure!(
        index_of(&client, &bare).await?.index_status() == Some(&IndexStatus::Active),
        "the index is not active after create-table waited for it"
    );

    // `--wait 0` asks for the index and returns; the next run waits for it.
    let unwaited = unique("chargebacks-unwaited");
    create_table(&client, &unwaited, INDEX, no_index()).await?;
    let stdout = isolated(unwaited.clone(), &["create-table", "--wait", "0"]).await?;
    let status = index_of(&client, &unwaited).await?.index_status().cloned();
    ensure!(
        stdout.contains("already there; date index added")
            && (stdout.contains("keys only")
                || stdout.contains(&format!(
                    "index {INDEX} being built (CREATING): the function scans the table"
                ))),
        "{stdout}"
    );
    ensure!(
        matches!(
            status,
            Some(IndexStatus::Active | IndexStatus::Creating) | None
        ),
        "{status:?}"
    );
    let stdout = isolated(unwaited.clone(), &["create-table"]).await?;
    ensure!(
        stdout.contains(&format!("Table {unwaited}: already there; key"))
            && stdout.contains("keys only"),
        "{stdout}"
    );
    ensure!(index_of(&client, &unwaited).await?.index_status() == Some(&IndexStatus::Active));
    Ok(())
}

/// An access key no other test uses: DynamoDB Local keeps a database per
/// access key and region.
const ISOLATED_ACCESS_KEY: &str = "createtabletest";

async fn isolated_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let sdk = load_sdk_config(Some(REGION)).await;
    let config = aws_sdk_dynamodb::config::Builder::from(&sdk)
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            ISOLATED_ACCESS_KEY,
            "local",
            None,
            None,
            "test",
        ))
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

fn no_index() -> TableShape {
    TableShape {
        index: None,
        ..TableShape::default()
    }
}

async fn index_of(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> anyhow::Result<GlobalSecondaryIndexDescription> {
    let described = client.describe_table().table_name(table).send().await?;
    described
        .table()
        .and_then(|t| t.global_secondary_indexes().first().cloned())
        .with_context(|| format!("{table} has no index"))
}

/// The demo's report says what its labels say.
pub async fn the_demo_reports_a_small_day_truthfully() -> anyhow::Result<()> {
    let output = Command::new(BINARY)
        .args(["demo", "--records", "200"])
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env("PROGRESS_LOG_INTERVAL_SECONDS", "1")
        .output()
        .await?;
    let stdout = text(&output.stdout);
    ensure!(output.status.success(), "{}", text(&output.stderr));
    for expected in [
        "Embedded DynamoDB-compatible engine at http://127.0.0.1:",
        "Seeded 210 chargebacks in ",
        "Stamped 180 chargebacks of 2025-11-20 (execution 2 of 4)",
        "  created after 2025-11-20T06:30:00, left for the next execution: 20",
        "  messages: 1 applied, 0 superseded, 0 skipped, 0 dead-lettered, 0 handed back",
        "Response: {\"batchItemFailures\":[]}",
        // The same event again, answered from the demo's run ledger.
        "Delivered again: answered from the run ledger (",
        "execution 2 completed) in ",
        " ms with 1 ledger request and 0 to the chargebacks table",
    ] {
        ensure!(stdout.contains(expected), "{expected:?} missing: {stdout}");
    }
    // The day's last run: what is created after it has no later run.
    let last = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/events/self-managed-kafka-event.json"
    );
    let output = Command::new(BINARY)
        .args(["demo", "--records", "100", "--event", last])
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .output()
        .await?;
    let stdout = text(&output.stdout);
    ensure!(output.status.success(), "{}", text(&output.stderr));
    ensure!(
        stdout.contains(
            "  created after 2025-11-20T18:30:00, the day's last execution: 10, which no later run will stamp"
        ),
        "{stdout}"
    );
    ensure!(!stdout.contains("left for the next execution"), "{stdout}");
    Ok(())
}

/// `redrive` exits 3 while dead-lettered messages still fail and stay queued.
pub async fn redrive_exits_3_while_messages_still_fail(moto: String) -> anyhow::Result<()> {
    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    let sqs = aws_sdk_sqs::Client::new(&local_sdk(&moto));
    let queue = create_queue(&sqs, &[]).await?;
    sqs.send_message()
        .queue_url(&queue)
        .message_body("not a dead letter")
        .send()
        .await?;
    let output = cli_command(&table.endpoint, &table.name)
        .args(["redrive", "--queue-url", &queue])
        .env("AWS_ENDPOINT_URL_SQS", &moto)
        .output()
        .await?;
    let stdout = text(&output.stdout);
    ensure!(
        code(&output) == Some(i32::from(exit_code::HANDED_BACK)),
        "{stdout} {}",
        text(&output.stderr)
    );
    ensure!(stdout.contains("1 still failing"), "{stdout}");
    Ok(())
}
