//! The proxy as a capacity-limited table: its token bucket and batch
//! splitting on their own, then through the real SDK against a real server,
//! which must accept the re-bodied requests and apply only what was admitted.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, BatchStatementErrorCodeEnum, BatchStatementRequest};
use consolidation_updater::app::{load_sdk_config, local_client};
use consolidation_updater::local::{Chargeback, TableShape};
use libtest_mimic::Trial;
use serde_json::{Value, json};

use crate::proxy::{
    BatchRequest, CapacityStats, FaultProxy, WriteBucket, WriteLedger, merge_batch_answer,
    update_throttled_body,
};
use crate::support::*;
use crate::{Backends, ServerTest};

/// The proxy as a capacity-limited table: its logic alone, then through the
/// SDK on each server.
pub fn tests(backends: &Backends) -> Vec<Trial> {
    let mut trials = trials!(crate::sync_test, "capacity_proxy";
        a_bucket_holds_one_second_of_writes_and_at_least_a_batch,
        a_batch_gets_as_many_statements_as_whole_tokens,
        tokens_come_back_at_the_rate_and_never_beyond_a_full_bucket,
        without_capacity_every_write_is_admitted_and_counted,
        a_greedy_client_reaches_the_rate_once_the_burst_is_discounted,
        a_split_batch_keeps_its_other_fields_and_its_first_statements,
        the_merged_answer_keeps_the_order_and_consumed_capacity_and_throttles_the_rest,
        a_refused_update_names_its_table_in_the_throttling_reasons,
    );
    const ON_EACH_SERVER: &[(&str, ServerTest)] = server_tests![
        a_batch_beyond_the_tokens_applies_the_first_ones_and_throttles_the_rest_per_statement,
        an_update_beyond_capacity_is_refused_with_throttling_reasons_the_sdk_parses,
        fault_throttling_refuses_each_statement_of_the_chosen_batch,
    ];
    for (name, test) in ON_EACH_SERVER {
        trials.extend(backends.on_both_servers("capacity_proxy", name, *test));
    }
    // About the proxy's timing, not the server: on the engine fast enough to
    // outrun the rate (DynamoDB Local, cold, writes one item slower).
    trials.push(crate::test(
        "capacity_proxy::embedded::greedy_writers_are_held_to_the_capacity_once_the_burst_is_spent",
        || greedy_writers_are_held_to_the_capacity_once_the_burst_is_spent(Backend::embedded()),
    ));
    trials
}

const DAY: &str = "2025-11-20";

// ---- The bucket and the splitting, without HTTP ----

pub fn a_bucket_holds_one_second_of_writes_and_at_least_a_batch() -> anyhow::Result<()> {
    let now = Instant::now();
    ensure!(WriteBucket::new(1000, now).capacity() == 1000);
    ensure!(WriteBucket::new(10, now).capacity() == 25);
    let mut bucket = WriteBucket::new(10, now);
    ensure!(bucket.admit(30, now) == 25, "a fresh bucket is full");
    ensure!(bucket.admit(1, now) == 0);
    Ok(())
}

pub fn a_batch_gets_as_many_statements_as_whole_tokens() -> anyhow::Result<()> {
    let now = Instant::now();
    let mut bucket = WriteBucket::new(100, now);
    bucket.hold(10, now);
    ensure!(bucket.admit(25, now) == 10);
    // 5 ms at 100/s is half a token: not a whole one.
    ensure!(bucket.admit(25, now + Duration::from_millis(5)) == 0);
    ensure!(bucket.admit(25, now + Duration::from_millis(10)) == 1);
    Ok(())
}

pub fn tokens_come_back_at_the_rate_and_never_beyond_a_full_bucket() -> anyhow::Result<()> {
    let now = Instant::now();
    let mut bucket = WriteBucket::new(200, now);
    bucket.hold(0, now);
    ensure!(bucket.admit(1000, now + Duration::from_millis(250)) == 50);
    ensure!(bucket.admit(1000, now + Duration::from_secs(60)) == 200);
    Ok(())
}

pub fn without_capacity_every_write_is_admitted_and_counted() -> anyhow::Result<()> {
    let mut ledger = WriteLedger::default();
    let start = Instant::now();
    ensure!(ledger.admit(0, 25, start) == 25);
    ensure!(ledger.admit(0, 1, start + Duration::from_secs(2)) == 1);
    ledger.refuse(25, start + Duration::from_secs(3));
    let stats = ledger.stats(0);
    ensure!(
        stats
            == CapacityStats {
                write_capacity: 0,
                bucket_capacity: 0,
                admitted_writes: 26,
                throttled_writes: 25,
                throttled_requests: 1,
                admitted_span_seconds: 2.0,
            },
        "{stats:?}"
    );
    ensure!(stats.admitted_rate() == Some(13.0));
    Ok(())
}

/// A client asking for a batch every 10 ms, far beyond 100 writes/s, for 5
/// seconds: the bucket's burst, then the rate.
pub fn a_greedy_client_reaches_the_rate_once_the_burst_is_discounted() -> anyhow::Result<()> {
    let mut ledger = WriteLedger::default();
    let start = Instant::now();
    for tick in 0..500 {
        ledger.admit(100, 25, start + Duration::from_millis(10 * tick));
    }
    let stats = ledger.stats(100);
    ensure!(stats.bucket_capacity == 100);
    ensure!(
        stats.admitted_writes + stats.throttled_writes == 500 * 25,
        "{stats:?}"
    );
    let reached = stats.reached_rate().context("a rate was imposed")?;
    ensure!(
        (reached - 100.0).abs() < 2.0,
        "reached {reached}: {stats:?}"
    );
    // Burst included, the same run looks faster than the table allows.
    ensure!(
        stats.admitted_rate().is_some_and(|r| r > 115.0),
        "{stats:?}"
    );
    Ok(())
}

pub fn a_split_batch_keeps_its_other_fields_and_its_first_statements() -> anyhow::Result<()> {
    let body = json!({
        "Statements": [{"Statement": "a"}, {"Statement": "b"}, {"Statement": "c"}],
        "ReturnConsumedCapacity": "TOTAL"
    });
    let batch = BatchRequest::parse(body.to_string().as_bytes())?;
    ensure!(batch.len() == 3);
    let first_two: Value = serde_json::from_slice(&batch.body_with_first(2))?;
    ensure!(
        first_two
            == json!({
                "Statements": [{"Statement": "a"}, {"Statement": "b"}],
                "ReturnConsumedCapacity": "TOTAL"
            }),
        "{first_two}"
    );
    ensure!(BatchRequest::parse(br#"{"TableName":"t"}"#).is_err());
    ensure!(BatchRequest::parse(b"not json").is_err());
    Ok(())
}

pub fn the_merged_answer_keeps_the_order_and_consumed_capacity_and_throttles_the_rest()
-> anyhow::Result<()> {
    let upstream = json!({
        "Responses": [{"TableName": "t"}, {"Error": {"Code": "ConditionalCheckFailed"}}],
        "ConsumedCapacity": [{"TableName": "t", "CapacityUnits": 2.0}]
    });
    let merged: Value = serde_json::from_slice(&merge_batch_answer(
        Some(upstream.to_string().as_bytes()),
        2,
        4,
    )?)?;
    let throttled = json!({"Error": {
        "Code": "ProvisionedThroughputExceeded",
        "Message": "The level of configured provisioned throughput for the table was exceeded."
    }});
    ensure!(
        merged
            == json!({
                "Responses": [
                    {"TableName": "t"},
                    {"Error": {"Code": "ConditionalCheckFailed"}},
                    throttled,
                    throttled
                ],
                "ConsumedCapacity": [{"TableName": "t", "CapacityUnits": 2.0}]
            }),
        "{merged}"
    );
    let none: Value = serde_json::from_slice(&merge_batch_answer(None, 0, 2)?)?;
    ensure!(
        none == json!({"Responses": [throttled, throttled]}),
        "{none}"
    );
    ensure!(
        merge_batch_answer(Some(upstream.to_string().as_bytes()), 3, 4).is_err(),
        "an upstream answer of the wrong length is an error, not a guess"
    );
    Ok(())
}

pub fn a_refused_update_names_its_table_in_the_throttling_reasons() -> anyhow::Result<()> {
    let body: Value = serde_json::from_str(&update_throttled_body("chargebacks"))?;
    ensure!(
        body["__type"] == "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"
    );
    ensure!(
        body["ThrottlingReasons"]
            == json!([{
                "reason": "TableWriteProvisionedThroughputExceeded",
                "resource": "arn:aws:dynamodb:us-east-1:000000000000:table/chargebacks"
            }]),
        "{body}"
    );
    Ok(())
}

// ---- Through the SDK, against a real server ----

/// A table of `count` fresh records and the proxy in front of its server,
/// with a client of the proxy that does not retry (each refusal is seen).
async fn table_behind_proxy(
    backend: &Backend,
    count: usize,
) -> anyhow::Result<(
    TestTable,
    Vec<Chargeback>,
    std::sync::Arc<FaultProxy>,
    Client,
)> {
    let table = TestTable::create(backend, TableShape::default()).await?;
    let records: Vec<Chargeback> = (0..count)
        .map(|i| chargeback(&format!("cb-{i:02}"), DAY, &format!("{DAY}T10:00:00")))
        .collect();
    table.seed(records.clone().into_iter()).await?;
    let (proxy, endpoint) = FaultProxy::start(&table.endpoint).await?;
    let client = local_client(&load_sdk_config(Some(REGION)).await, &endpoint);
    let client = Client::from_conf(
        client
            .config()
            .to_builder()
            .retry_config(RetryConfig::disabled())
            .build(),
    );
    Ok((table, records, proxy, client))
}

fn stamp_statements(
    table: &str,
    records: &[Chargeback],
) -> anyhow::Result<Vec<BatchStatementRequest>> {
    records
        .iter()
        .map(|record| {
            Ok(BatchStatementRequest::builder()
                .statement(format!(
                    "UPDATE \"{table}\" SET \"consolidation_execution\" = ? WHERE \"chargeback_id\" = ?"
                ))
                .parameters(AttributeValue::N("1".to_owned()))
                .parameters(AttributeValue::S(record.chargeback_id.clone()))
                .build()?)
        })
        .collect()
}

/// 25 statements with 10 tokens left: the first 10 are applied, the other
/// 15 come back as per-statement throttling errors the SDK decodes, and
/// the table shows exactly the 10.
pub async fn a_batch_beyond_the_tokens_applies_the_first_ones_and_throttles_the_rest_per_statement(
    backend: Backend,
) -> anyhow::Result<()> {
    let (table, records, proxy, client) = table_behind_proxy(&backend, 25).await?;
    // One write a second: the bucket barely refills while the batch is sent.
    proxy.write_capacity.store(1, Ordering::SeqCst);
    proxy.hold_write_tokens(10);
    let answer = client
        .batch_execute_statement()
        .set_statements(Some(stamp_statements(&table.name, &records)?))
        .send()
        .await
        .context("the batch is answered 200")?;
    let responses = answer.responses();
    ensure!(responses.len() == 25, "{} responses", responses.len());
    for (i, response) in responses.iter().enumerate() {
        let code = response.error().and_then(|e| e.code());
        if i < 10 {
            ensure!(code.is_none(), "statement {i} was admitted: {response:?}");
        } else {
            ensure!(
                code == Some(&BatchStatementErrorCodeEnum::ProvisionedThroughputExceeded),
                "statement {i} was throttled: {response:?}"
            );
        }
    }
    for (i, record) in records.iter().enumerate() {
        let execution = table.execution_of(record).await?;
        ensure!(
            execution == (i < 10).then_some(1),
            "{} stamped {execution:?}",
            record.chargeback_id
        );
    }
    let stats = proxy.capacity_stats();
    ensure!(
        (
            stats.admitted_writes,
            stats.throttled_writes,
            stats.throttled_requests
        ) == (10, 15, 1),
        "{stats:?}"
    );
    ensure!(proxy.throttled.load(Ordering::SeqCst) == 1);
    Ok(())
}

/// Without a token an `UpdateItem` is refused whole, with the reason the
/// SDK parses onto the exception; reads still pass; with a token it applies.
pub async fn an_update_beyond_capacity_is_refused_with_throttling_reasons_the_sdk_parses(
    backend: Backend,
) -> anyhow::Result<()> {
    let (table, records, proxy, client) = table_behind_proxy(&backend, 1).await?;
    proxy.write_capacity.store(1, Ordering::SeqCst);
    proxy.hold_write_tokens(0);
    let stamp = || {
        client
            .update_item()
            .table_name(&table.name)
            .key(
                "chargeback_id",
                AttributeValue::S(records[0].chargeback_id.clone()),
            )
            .update_expression("SET consolidation_execution = :execution")
            .expression_attribute_values(":execution", AttributeValue::N("1".to_owned()))
    };
    let refused = stamp().send().await;
    let Err(error) = refused else {
        anyhow::bail!("an update without a token was applied");
    };
    let UpdateItemError::ProvisionedThroughputExceededException(exception) =
        error.into_service_error()
    else {
        anyhow::bail!("not a throughput error");
    };
    let reasons = exception.throttling_reasons();
    ensure!(reasons.len() == 1, "{exception:?}");
    ensure!(reasons[0].reason() == Some("TableWriteProvisionedThroughputExceeded"));
    ensure!(
        reasons[0].resource()
            == Some(
                format!(
                    "arn:aws:dynamodb:us-east-1:000000000000:table/{}",
                    table.name
                )
                .as_str()
            ),
        "{:?}",
        reasons[0]
    );
    // Reads are never limited: a consistent read through the proxy passes.
    let read = client
        .get_item()
        .table_name(&table.name)
        .consistent_read(true)
        .key(
            "chargeback_id",
            AttributeValue::S(records[0].chargeback_id.clone()),
        )
        .send()
        .await
        .context("a read with no write capacity left")?;
    ensure!(
        read.item()
            .is_some_and(|item| !item.contains_key("consolidation_execution")),
        "the refused update was not applied: {read:?}"
    );
    proxy.hold_write_tokens(1);
    stamp()
        .send()
        .await
        .context("an update with a token is forwarded")?;
    ensure!(table.execution_of(&records[0]).await? == Some(1));
    ensure!(
        (proxy.admitted_writes(), proxy.throttled_writes()) == (1, 1),
        "{:?}",
        proxy.capacity_stats()
    );
    Ok(())
}

/// The fault knobs on a batch: every statement of the chosen request comes
/// back throttled (a 200), counted once as a request and per statement as
/// writes; the same body passes the next time.
pub async fn fault_throttling_refuses_each_statement_of_the_chosen_batch(
    backend: Backend,
) -> anyhow::Result<()> {
    let (table, records, proxy, client) = table_behind_proxy(&backend, 5).await?;
    proxy.throttle_one_in.store(1, Ordering::SeqCst);
    proxy.throttling.store(true, Ordering::SeqCst);
    let statements = stamp_statements(&table.name, &records)?;
    let send = || {
        client
            .batch_execute_statement()
            .set_statements(Some(statements.clone()))
            .send()
    };
    let first = send().await?;
    ensure!(
        first.responses().len() == 5
            && first.responses().iter().all(|r| {
                r.error().and_then(|e| e.code())
                    == Some(&BatchStatementErrorCodeEnum::ProvisionedThroughputExceeded)
            }),
        "{first:?}"
    );
    ensure!(table.execution_of(&records[0]).await?.is_none());
    let again = send().await?;
    ensure!(
        again.responses().iter().all(|r| r.error().is_none()),
        "{again:?}"
    );
    for record in &records {
        ensure!(table.execution_of(record).await? == Some(1));
    }
    ensure!(proxy.throttled.load(Ordering::SeqCst) == 1);
    let stats = proxy.capacity_stats();
    ensure!(
        (stats.admitted_writes, stats.throttled_writes) == (5, 5),
        "{stats:?}"
    );
    Ok(())
}

/// Writers that never pause, through HTTP, against 200 writes/s: once the
/// bucket's burst is spent, the proxy admits the rate and no more. (The
/// server must outrun the rate for this to say anything.)
pub async fn greedy_writers_are_held_to_the_capacity_once_the_burst_is_spent(
    backend: Backend,
) -> anyhow::Result<()> {
    const RATE: u64 = 200;
    const WRITES: u64 = 600;
    let (table, records, proxy, client) = table_behind_proxy(&backend, 1).await?;
    proxy.write_capacity.store(RATE, Ordering::SeqCst);
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (proxy, client) = (std::sync::Arc::clone(&proxy), client.clone());
        let (name, id) = (table.name.clone(), records[0].chargeback_id.clone());
        writers.spawn(async move {
            while proxy.admitted_writes() < WRITES {
                let sent = client
                    .update_item()
                    .table_name(&name)
                    .key("chargeback_id", AttributeValue::S(id.clone()))
                    .update_expression("SET consolidation_execution = :execution")
                    .expression_attribute_values(":execution", AttributeValue::N("1".to_owned()))
                    .send()
                    .await;
                if sent.is_err() {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        });
    }
    while let Some(writer) = writers.join_next().await {
        writer?;
    }
    let stats = proxy.capacity_stats();
    let reached = proxy
        .reached_write_rate()
        .context("the burst did not cover every write")?;
    eprintln!(
        "greedy writers ({:?}): {stats:?}, reached {reached:.1} writes/s",
        backend.server
    );
    ensure!(stats.throttled_writes > 0, "{stats:?}");
    ensure!(
        reached <= RATE as f64 * 1.02 && reached >= RATE as f64 * 0.9,
        "reached {reached:.1} writes/s against {RATE}: {stats:?}"
    );
    Ok(())
}
