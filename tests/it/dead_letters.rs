//! Poison messages and failure notices against real SQS and SNS emulation
//! (moto's server, started by `.ci/run` and named by `MOTO_ENDPOINT`), with the
//! embedded engine as DynamoDB.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, ensure};
use aws_config::SdkConfig;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use consolidation_updater::app::{BatchHandler, DeadLetterReader, FanOut, Invocation, redrive};
use consolidation_updater::local::TableShape;
use consolidation_updater::model::{DeadLetter, FailureNotice};
use consolidation_updater::testing::{
    DEFAULT_MESSAGE_LIMIT, DeadLetterSink, FailureNotifier, SnsNotifier, SqsDeadLetters,
};
use libtest_mimic::Trial;
use serde_json::{Value, json};

use crate::Backends;
use crate::support::*;

pub fn tests(backends: &Backends) -> Vec<Trial> {
    let mut trials = trials!(|name, test| backends.on_moto(name, test), "moto";
        every_kind_of_poison_is_dead_lettered_with_its_payload,
        a_value_too_large_for_the_queue_is_dead_lettered_truncated,
        one_failure_notification_is_published_per_invocation,
        redrive_replays_what_now_decodes_and_leaves_the_rest,
        a_fifo_queue_parks_each_partitions_poison_in_order_and_once,
        a_fifo_failure_topic_gets_one_notice_per_invocation,
        redrive_of_a_fifo_queue_stops_each_partition_at_its_first_failure,
        at_debug_level_the_queues_limit_and_each_dead_letter_send_are_logged,
    );
    trials.extend(trials!("dead_letters";
        a_poison_message_is_handed_back_when_the_queue_is_unreachable,
        a_queue_whose_attributes_cannot_be_read_is_known_fifo_by_its_name,
    ));
    trials
}

/// An SDK configuration aimed at one local endpoint, with static credentials.
pub fn local_sdk(endpoint: &str) -> SdkConfig {
    let credentials = aws_sdk_sqs::config::Credentials::new("local", "local", None, None, "local");
    SdkConfig::builder()
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_sqs::config::SharedCredentialsProvider::new(
            credentials,
        ))
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build()
}

pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// A fresh queue; returns its URL.
pub async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    attributes: &[(QueueAttributeName, &str)],
) -> anyhow::Result<String> {
    let mut request = sqs.create_queue().queue_name(unique("dlq"));
    for (name, value) in attributes {
        request = request.attributes(name.clone(), *value);
    }
    request
        .send()
        .await?
        .queue_url
        .ok_or_else(|| anyhow!("no queue url"))
}

/// Every message in the queue, with its attributes, emptying it.
async fn drain(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
) -> anyhow::Result<Vec<aws_sdk_sqs::types::Message>> {
    let mut all = Vec::new();
    loop {
        let batch = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .wait_time_seconds(0)
            .send()
            .await?
            .messages
            .unwrap_or_default();
        if batch.is_empty() {
            return Ok(all);
        }
        for message in &batch {
            if let Some(handle) = &message.receipt_handle {
                sqs.delete_message()
                    .queue_url(url)
                    .receipt_handle(handle)
                    .send()
                    .await?;
            }
        }
        all.extend(batch);
    }
}

fn handler_with(table: &TestTable) -> BatchHandler<consolidation_updater::app::DynamoStore> {
    BatchHandler::new(FanOut::new(Arc::new(table.store()), 8, Arc::default()))
}

/// A raw Kafka record value as Lambda would deliver it, and the error kind it must produce.
struct Poison {
    value: Value,
    kind: &'static str,
}

fn poisons() -> Vec<Poison> {
    let good = consolidation("2025-11-20", 2, 4, "2025-11-20T06:30:00");
    let with = |field: &str, value: Value| {
        let mut event = good.clone();
        event[field] = value;
        Value::from(BASE64.encode(event.to_string()))
    };
    let without = |field: &str| {
        let mut event = good.clone();
        event.as_object_mut().map(|o| o.remove(field));
        Value::from(BASE64.encode(event.to_string()))
    };
    let b64 = |bytes: &[u8]| Value::from(BASE64.encode(bytes));
    vec![
        Poison {
            value: Value::Null,
            kind: "missing_value",
        },
        Poison {
            value: json!(42),
            kind: "not_base64",
        },
        Poison {
            value: json!("***"),
            kind: "not_base64",
        },
        Poison {
            value: b64(&[0xff, 0xfe]),
            kind: "not_utf8",
        },
        Poison {
            value: b64(b"{oops"),
            kind: "not_json",
        },
        Poison {
            value: b64(b"[1]"),
            kind: "not_an_object",
        },
        Poison {
            value: without("event_type"),
            kind: "missing_field",
        },
        Poison {
            value: with("records_processed", json!("many")),
            kind: "wrong_type",
        },
        Poison {
            value: with("partition_date", json!("2025-02-30")),
            kind: "invalid_partition_date",
        },
        Poison {
            value: with("total_executions", json!(0)),
            kind: "invalid_total_executions",
        },
        Poison {
            value: with("execution_sequence", json!(9)),
            kind: "execution_sequence_out_of_range",
        },
        Poison {
            value: with("output_files", json!(-1)),
            kind: "negative_count",
        },
        Poison {
            value: with("output_format", json!("xml")),
            kind: "unsupported_output_format",
        },
        Poison {
            value: with("output_path", json!("/tmp/x")),
            kind: "invalid_output_path",
        },
        Poison {
            value: with("completed_at", json!("soon")),
            kind: "invalid_timestamp",
        },
        Poison {
            value: with("job_name", json!("")),
            kind: "empty_job_name",
        },
    ]
}

/// A Lambda event with raw record values (some not even strings).
fn raw_event(records: &[(i64, Value)]) -> Value {
    let records: Vec<Value> = records
        .iter()
        .map(|(offset, value)| {
            json!({"topic": TOPIC, "partition": 0, "offset": offset, "timestamp": 1_763_620_000_000_i64,
                   "timestampType": "CREATE_TIME", "key": "a2V5", "value": value,
                   "headers": [{"x-correlation-id": [99, -61, -87]}]})
        })
        .collect();
    json!({"eventSource": "aws:kafka", "records": {format!("{TOPIC}-0"): records}})
}

pub async fn every_kind_of_poison_is_dead_lettered_with_its_payload(
    moto: String,
) -> anyhow::Result<()> {
    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    let early = chargeback("cb-early", "2025-11-20", "2025-11-20T01:00:00.000Z");
    table.seed(std::iter::once(early.clone())).await?;
    let sdk = local_sdk(&moto);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let url = create_queue(&sqs, &[]).await?;
    let handler = Arc::new(
        handler_with(&table)
            .with_dead_letters(Arc::new(SqsDeadLetters::connect(sqs.clone(), &url).await)),
    );

    let poisons = poisons();
    let mut records = vec![(
        1,
        Value::from(
            BASE64.encode(consolidation("2025-11-20", 1, 4, "2025-11-20T06:30:00").to_string()),
        ),
    )];
    for (i, poison) in poisons.iter().enumerate() {
        records.push((10 + i as i64, poison.value.clone()));
    }
    // A good message after all the poison: the partition must not be blocked.
    records.push((
        100,
        Value::from(
            BASE64.encode(consolidation("2025-11-20", 3, 4, "2025-11-20T06:30:00").to_string()),
        ),
    ));
    let outcome = handler
        .handle(raw_event(&records), &Invocation::unbounded("req-dlq"))
        .await?;
    let summary = outcome.summary();
    ensure!(
        outcome.response().batch_item_failures.is_empty(),
        "{:?}",
        outcome.response()
    );
    ensure!(
        summary.messages_dead_lettered == poisons.len() as u64,
        "{summary:?}"
    );
    // Execution 3 leads its day in the batch; execution 1 follows it.
    ensure!(
        summary.messages_processed == 1 && summary.messages_superseded == 1,
        "{summary:?}"
    );
    ensure!(
        table.execution_of(&early).await? == Some(3),
        "the later good message applied"
    );

    let parked = drain(&sqs, &url).await?;
    ensure!(
        parked.len() == poisons.len(),
        "{} messages in the queue",
        parked.len()
    );
    let mut by_offset = BTreeMap::new();
    for message in &parked {
        let letter: DeadLetter = serde_json::from_str(message.body().unwrap_or_default())?;
        let attributes: HashMap<String, String> = message
            .message_attributes()
            .map(|a| {
                a.iter()
                    .map(|(k, v)| (k.clone(), v.string_value().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        ensure!(
            attributes.get("error_kind") == Some(&letter.error_kind),
            "{attributes:?}"
        );
        ensure!(attributes.get("topic").map(String::as_str) == Some(TOPIC));
        by_offset.insert(letter.offset, letter);
    }
    for (i, poison) in poisons.iter().enumerate() {
        let offset = 10 + i as i64;
        let letter = by_offset
            .get(&offset)
            .ok_or_else(|| anyhow!("offset {offset} not parked"))?;
        ensure!(
            letter.error_kind == poison.kind,
            "offset {offset}: {} != {}",
            letter.error_kind,
            poison.kind
        );
        let expected_value = (!poison.value.is_null()).then(|| poison.value.clone());
        ensure!(
            letter.value == expected_value,
            "offset {offset}: value not kept as received"
        );
        ensure!(!letter.value_truncated);
        ensure!(letter.key.as_deref() == Some("a2V5"));
        ensure!(letter.topic == TOPIC && letter.partition == Some(0));
        ensure!(letter.timestamp == Some(1_763_620_000_000));
        ensure!(letter.headers == Some(json!([{"x-correlation-id": [99, -61, -87]}])));
        ensure!(letter.request_id == "req-dlq");
        ensure!(chrono::DateTime::parse_from_rfc3339(&letter.failed_at).is_ok());
        ensure!(!letter.error_message.is_empty());
    }
    Ok(())
}

pub async fn a_value_too_large_for_the_queue_is_dead_lettered_truncated(
    moto: String,
) -> anyhow::Result<()> {
    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    let sdk = local_sdk(&moto);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let url = create_queue(&sqs, &[(QueueAttributeName::MaximumMessageSize, "4096")]).await?;
    let queue = SqsDeadLetters::connect(sqs.clone(), &url).await;
    ensure!(
        queue.message_limit() == 4096,
        "limit read from the queue: {}",
        queue.message_limit()
    );
    ensure!(!queue.is_fifo(), "a standard queue");
    let handler = Arc::new(handler_with(&table).with_dead_letters(Arc::new(queue)));
    let huge = BASE64.encode("x".repeat(30_000));
    let outcome = handler
        .handle(
            raw_event(&[(5, Value::from(huge.clone()))]),
            &Invocation::unbounded("req-big"),
        )
        .await?;
    ensure!(
        outcome.response().batch_item_failures.is_empty(),
        "never handed back forever"
    );
    let parked = drain(&sqs, &url).await?;
    ensure!(parked.len() == 1);
    let body = parked[0].body().unwrap_or_default();
    ensure!(body.len() <= 4096, "{} bytes", body.len());
    let letter: DeadLetter = serde_json::from_str(body)?;
    ensure!(letter.value_truncated && letter.value_length == Some(huge.len()));
    ensure!(letter.offset == 5 && letter.error_kind == "not_json");
    let prefix = letter
        .value
        .as_ref()
        .and_then(Value::as_str)
        .unwrap_or_default();
    ensure!(!prefix.is_empty() && huge.starts_with(prefix));
    Ok(())
}

/// Runs without moto: the queue's endpoint refuses connections.
pub async fn a_poison_message_is_handed_back_when_the_queue_is_unreachable() -> anyhow::Result<()> {
    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    let closed = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let endpoint = format!("http://{}", closed.local_addr()?);
    drop(closed);
    let sqs = aws_sdk_sqs::Client::new(&local_sdk(&endpoint));
    let url = format!("{endpoint}/123456789012/dlq");
    let handler = Arc::new(
        handler_with(&table).with_dead_letters(Arc::new(SqsDeadLetters::connect(sqs, &url).await)),
    );
    let good = Value::from(
        BASE64.encode(consolidation("2025-11-20", 1, 4, "2025-11-20T06:30:00").to_string()),
    );
    let outcome = handler
        .handle(
            raw_event(&[(1, good.clone()), (2, json!("***")), (3, good)]),
            &Invocation::unbounded("req"),
        )
        .await?;
    let listed = listed_offsets(&outcome);
    ensure!(
        listed == [2, 3],
        "poison and what follows it are handed back: {listed:?}"
    );
    ensure!(outcome.summary().messages_dead_lettered == 0);
    Ok(())
}

pub async fn one_failure_notification_is_published_per_invocation(
    moto: String,
) -> anyhow::Result<()> {
    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    let sdk = local_sdk(&moto);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let sns = aws_sdk_sns::Client::new(&sdk);
    let dlq = create_queue(&sqs, &[]).await?;
    let inbox = create_queue(&sqs, &[]).await?;
    let inbox_arn = sqs
        .get_queue_attributes()
        .queue_url(&inbox)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| anyhow!("no queue arn"))?;
    let topic = sns
        .create_topic()
        .name(unique("failures"))
        .send()
        .await?
        .topic_arn
        .ok_or_else(|| anyhow!("no topic arn"))?;
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(&inbox_arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await?;
    let handler = Arc::new(
        handler_with(&table)
            .with_dead_letters(Arc::new(SqsDeadLetters::connect(sqs.clone(), &dlq).await))
            .with_notifier(Arc::new(SnsNotifier::new(sns.clone(), &topic))),
    );
    let good = Value::from(
        BASE64.encode(consolidation("2025-11-20", 1, 4, "2025-11-20T06:30:00").to_string()),
    );
    let records = [
        (1, json!("***")),
        (2, b64_json("[]")),
        (3, good.clone()),
        (4, json!(7)),
    ];
    handler
        .handle(raw_event(&records), &Invocation::unbounded("req-notify"))
        .await?;
    // A clean invocation publishes nothing.
    handler
        .handle(raw_event(&[(5, good)]), &Invocation::unbounded("req-clean"))
        .await?;

    tokio::time::sleep(Duration::from_millis(300)).await;
    let notices = drain(&sqs, &inbox).await?;
    ensure!(notices.len() == 1, "{} notifications", notices.len());
    let body: Value = serde_json::from_str(notices[0].body().unwrap_or_default())
        .with_context(|| format!("{:?}", notices[0].body()))?;
    ensure!(body["request_id"] == "req-notify");
    ensure!(
        body["dead_lettered"] == 3 && body["handed_back"] == 0,
        "{body}"
    );
    let offsets: Vec<i64> = body["messages"][format!("{TOPIC}-0")]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["offset"].as_i64()).collect())
        .unwrap_or_default();
    ensure!(offsets == [1, 2, 4], "{body}");
    let kinds: Vec<&str> = body["first_error_by_kind"]
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    ensure!(kinds == ["not_an_object", "not_base64"], "{kinds:?}");
    Ok(())
}

fn b64_json(text: &str) -> Value {
    Value::from(BASE64.encode(text))
}

pub async fn queue_depth(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<u64> {
    Ok(sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await?
        .attributes
        .and_then(|a| {
            a.get(&QueueAttributeName::ApproximateNumberOfMessages)
                .cloned()
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_default())
}

pub fn parked_letter(offset: i64, value: Value) -> anyhow::Result<String> {
    let event = raw_event(&[(offset, value)]);
    let batches = consolidation_updater::model::decode_envelope(event)?;
    let message = batches
        .first()
        .and_then(|b| b.messages.first())
        .ok_or_else(|| anyhow!("no message"))?;
    let letter = DeadLetter::new(
        message,
        &consolidation_updater::model::Poison::from(
            &consolidation_updater::model::DecodeError::UnsupportedOutputFormat {
                value: "orc".into(),
            },
        ),
        "req-old",
        "2025-11-20T07:00:00.000Z",
    );
    Ok(letter.to_body(262_144)?)
}

pub async fn redrive_replays_what_now_decodes_and_leaves_the_rest(
    moto: String,
) -> anyhow::Result<()> {
    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    let record = chargeback("cb-r", "2025-11-20", "2025-11-20T02:00:00.000Z");
    table.seed(std::iter::once(record.clone())).await?;
    let sqs = aws_sdk_sqs::Client::new(&local_sdk(&moto));
    let url = create_queue(&sqs, &[]).await?;
    // Dead-lettered by an older version that did not know this event; now it decodes.
    let fixed = Value::from(
        BASE64.encode(consolidation("2025-11-20", 2, 4, "2025-11-20T06:30:00").to_string()),
    );
    for body in [parked_letter(31, fixed)?, parked_letter(32, json!("***"))?] {
        sqs.send_message()
            .queue_url(&url)
            .message_body(body)
            .send()
            .await?;
    }
    let handler = Arc::new(handler_with(&table));
    let reader = consolidation_updater::app::DeadLetterReader::new(sqs.clone(), &url);

    let dry = consolidation_updater::app::redrive(&reader, &handler, None, true).await?;
    ensure!(
        (dry.examined, dry.redriven, dry.still_failing.len()) == (2, 1, 1),
        "{dry:?}"
    );
    ensure!(
        table.execution_of(&record).await?.is_none(),
        "a dry run stamps nothing"
    );
    ensure!(
        queue_depth(&sqs, &url).await? == 2,
        "a dry run deletes nothing"
    );

    let real = consolidation_updater::app::redrive(&reader, &handler, None, false).await?;
    ensure!((real.examined, real.redriven) == (2, 1), "{real:?}");
    let (name, why) = &real.still_failing[0];
    ensure!(
        name.ends_with("@32") && why.contains("base64"),
        "{name}: {why}"
    );
    ensure!(
        table.execution_of(&record).await? == Some(2),
        "the replay stamped the day"
    );
    let left = drain(&sqs, &url).await?;
    ensure!(left.len() == 1, "only the failing one stays");
    let letter: DeadLetter = serde_json::from_str(left[0].body().unwrap_or_default())?;
    ensure!(letter.offset == 32);
    Ok(())
}

/// A fresh FIFO queue (its name ends in `.fifo`), with `attributes` on top;
/// returns its URL.
pub async fn create_fifo_queue(
    sqs: &aws_sdk_sqs::Client,
    attributes: &[(QueueAttributeName, &str)],
) -> anyhow::Result<String> {
    let mut request = sqs
        .create_queue()
        .queue_name(format!("{}.fifo", unique("dlq")))
        .attributes(QueueAttributeName::FifoQueue, "true");
    for (name, value) in attributes {
        request = request.attributes(name.clone(), *value);
    }
    request
        .send()
        .await?
        .queue_url
        .ok_or_else(|| anyhow!("no queue url"))
}

/// A Lambda event with raw record values on any topic and partition, in order.
fn event_on(records: &[(&str, i64, i64, Value)]) -> Value {
    let mut by_partition: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (topic, partition, offset, value) in records {
        by_partition
            .entry(format!("{topic}-{partition}"))
            .or_default()
            .push(
                json!({"topic": topic, "partition": partition, "offset": offset,
                         "timestamp": 1_763_620_000_000_i64, "timestampType": "CREATE_TIME",
                         "key": null, "value": value, "headers": []}),
            );
    }
    json!({"eventSource": "aws:kafka", "records": by_partition})
}

/// The system attribute `name` of a received message.
fn system_attribute(
    message: &aws_sdk_sqs::types::Message,
    name: MessageSystemAttributeName,
) -> Option<String> {
    message.attributes()?.get(&name).cloned()
}

pub async fn a_fifo_queue_parks_each_partitions_poison_in_order_and_once(
    moto: String,
) -> anyhow::Result<()> {
    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    let sqs = aws_sdk_sqs::Client::new(&local_sdk(&moto));
    let url = create_fifo_queue(&sqs, &[]).await?;
    let handler = Arc::new(
        handler_with(&table)
            .with_dead_letters(Arc::new(SqsDeadLetters::connect(sqs.clone(), &url).await)),
    );
    // Kafka allows topic names of 249 characters: far more than an id's 128.
    let long_topic = format!("{TOPIC}.{}", "x".repeat(249 - TOPIC.len() - 1));
    let good = Value::from(
        BASE64.encode(consolidation("2025-11-20", 1, 4, "2025-11-20T06:30:00").to_string()),
    );
    let event = event_on(&[
        (TOPIC, 0, 10, json!("***")),
        (TOPIC, 0, 11, good.clone()),
        (TOPIC, 0, 12, b64_json("[]")),
        (TOPIC, 0, 13, json!(7)),
        (TOPIC, 1, 5, json!("***")),
        (&long_topic, 0, 8, json!("***")),
        (&long_topic, 0, 9, json!("***")),
    ]);
    let outcome = handler
        .handle(event.clone(), &Invocation::unbounded("req-fifo"))
        .await?;
    ensure!(
        outcome.response().batch_item_failures.is_empty(),
        "every poison is parked, none handed back: {:?}",
        outcome.response()
    );
    ensure!(outcome.summary().messages_dead_lettered == 6);
    // Lambda delivers the same batch again (say, the invocation timed out
    // after parking): within the deduplication window nothing is parked twice.
    let again = handler
        .handle(event, &Invocation::unbounded("req-fifo-again"))
        .await?;
    ensure!(again.response().batch_item_failures.is_empty());

    let parked = drain(&sqs, &url).await?;
    let mut groups: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for message in &parked {
        let letter: DeadLetter = serde_json::from_str(message.body().unwrap_or_default())?;
        let group = system_attribute(message, MessageSystemAttributeName::MessageGroupId)
            .ok_or_else(|| anyhow!("no message group"))?;
        let dedup = system_attribute(message, MessageSystemAttributeName::MessageDeduplicationId)
            .ok_or_else(|| anyhow!("no deduplication id"))?;
        for id in [&group, &dedup] {
            ensure!(
                !id.is_empty()
                    && id.len() <= 128
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c.is_ascii_punctuation()),
                "not a valid FIFO id: {id}"
            );
        }
        if letter.topic == TOPIC {
            ensure!(group == letter.batch_partition, "{group}");
            ensure!(
                dedup == format!("{}-{}", letter.batch_partition, letter.offset),
                "{dedup}"
            );
        }
        groups.entry(group).or_default().push(letter.offset);
    }
    ensure!(
        parked.len() == 6,
        "each poison parked once, not twice: {groups:?}"
    );
    ensure!(groups.len() == 3, "one group per partition: {groups:?}");
    ensure!(
        groups.get(&format!("{TOPIC}-0")) == Some(&vec![10, 12, 13]),
        "{groups:?}"
    );
    ensure!(
        groups.get(&format!("{TOPIC}-1")) == Some(&vec![5]),
        "{groups:?}"
    );
    ensure!(
        groups.values().any(|offsets| offsets == &[8, 9]),
        "the long topic's partition is one group, in order: {groups:?}"
    );
    Ok(())
}

pub async fn a_fifo_failure_topic_gets_one_notice_per_invocation(
    moto: String,
) -> anyhow::Result<()> {
    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    let sdk = local_sdk(&moto);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let sns = aws_sdk_sns::Client::new(&sdk);
    let dlq = create_queue(&sqs, &[]).await?;
    // A FIFO topic delivers to FIFO queues.
    let inbox = create_fifo_queue(&sqs, &[]).await?;
    let inbox_arn = sqs
        .get_queue_attributes()
        .queue_url(&inbox)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| anyhow!("no queue arn"))?;
    let topic = sns
        .create_topic()
        .name(format!("{}.fifo", unique("failures")))
        .attributes("FifoTopic", "true")
        .send()
        .await?
        .topic_arn
        .ok_or_else(|| anyhow!("no topic arn"))?;
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(&inbox_arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await?;
    let handler = Arc::new(
        handler_with(&table)
            .with_dead_letters(Arc::new(SqsDeadLetters::connect(sqs.clone(), &dlq).await))
            .with_notifier(Arc::new(SnsNotifier::new(sns.clone(), &topic))),
    );
    let poison = raw_event(&[(1, json!("***"))]);
    for request_id in ["req-a", "req-b"] {
        handler
            .handle(poison.clone(), &Invocation::unbounded(request_id))
            .await?;
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    let notices = drain(&sqs, &inbox).await?;
    let request_ids: Vec<Value> = notices
        .iter()
        .map(|n| {
            serde_json::from_str::<Value>(n.body().unwrap_or_default())
                .map(|body| body["request_id"].clone())
        })
        .collect::<Result<_, _>>()?;
    ensure!(
        request_ids == [json!("req-a"), json!("req-b")],
        "one notice per invocation, in order: {request_ids:?}"
    );
    let groups: Vec<Option<String>> = notices
        .iter()
        .map(|n| system_attribute(n, MessageSystemAttributeName::MessageGroupId))
        .collect();
    ensure!(
        groups.iter().all(|g| g.is_some()) && groups[0] == groups[1],
        "the notices share one message group: {groups:?}"
    );

    // A publish sent twice (the SDK retrying after a lost answer) is one notice.
    let notifier = SnsNotifier::new(sns.clone(), &topic);
    let notice = FailureNotice {
        request_id: "req-c".into(),
        dead_lettered: 1,
        handed_back: 0,
        superseded: 0,
        messages: BTreeMap::new(),
        first_error_by_kind: BTreeMap::new(),
    };
    notifier.publish(&notice).await?;
    notifier.publish(&notice).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let repeated = drain(&sqs, &inbox).await?;
    ensure!(
        repeated.len() == 1,
        "{} notices for one publish sent twice",
        repeated.len()
    );
    Ok(())
}

/// A dead letter of a message on `TOPIC`'s `partition`, as the handler makes it.
fn dead_letter_on(partition: i64, offset: i64, value: Value) -> anyhow::Result<DeadLetter> {
    let batches = consolidation_updater::model::decode_envelope(event_on(&[(
        TOPIC, partition, offset, value,
    )]))?;
    let message = batches
        .first()
        .and_then(|b| b.messages.first())
        .ok_or_else(|| anyhow!("no message"))?;
    Ok(DeadLetter::new(
        message,
        &consolidation_updater::model::Poison::from(
            &consolidation_updater::model::DecodeError::UnsupportedOutputFormat {
                value: "orc".into(),
            },
        ),
        "req-old",
        "2025-11-20T07:00:00.000Z",
    ))
}

pub async fn redrive_of_a_fifo_queue_stops_each_partition_at_its_first_failure(
    moto: String,
) -> anyhow::Result<()> {
    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    let first_day = chargeback("cb-20", "2025-11-20", "2025-11-20T02:00:00.000Z");
    let later_day = chargeback("cb-21", "2025-11-21", "2025-11-21T02:00:00.000Z");
    let other_partition = chargeback("cb-22", "2025-11-22", "2025-11-22T02:00:00.000Z");
    table
        .seed(
            [
                first_day.clone(),
                later_day.clone(),
                other_partition.clone(),
            ]
            .into_iter(),
        )
        .await?;
    let sqs = aws_sdk_sqs::Client::new(&local_sdk(&moto));
    let url = create_fifo_queue(&sqs, &[]).await?;
    let queue = SqsDeadLetters::connect(sqs.clone(), &url).await;
    ensure!(queue.is_fifo(), "FifoQueue read at connect");
    let event = |date: &str| {
        Value::from(
            BASE64.encode(consolidation(date, 2, 4, &format!("{date}T06:30:00")).to_string()),
        )
    };
    // Partition 1 parked one message; partition 0 one that replays now, a
    // poison, and eleven that would replay but come after the poison.
    let mut letters = vec![
        dead_letter_on(1, 40, event("2025-11-22"))?,
        dead_letter_on(0, 30, event("2025-11-20"))?,
        dead_letter_on(0, 31, json!("***"))?,
    ];
    for offset in 32..=42 {
        letters.push(dead_letter_on(0, offset, event("2025-11-21"))?);
    }
    for letter in &letters {
        queue.send(letter).await?;
    }
    let handler = Arc::new(handler_with(&table));
    let reader = DeadLetterReader::new(sqs.clone(), &url);
    ensure!(reader.is_fifo());
    let partition_0 = format!("{TOPIC}-0");
    let held_back: Vec<String> = (32..=38).map(|o| format!("{partition_0}@{o}")).collect();

    // One receive hands out ten messages (moto keeps the queue's order): the
    // rest of partition 0 stays behind the poison, in flight until the end.
    let dry = redrive(&reader, &handler, None, true).await?;
    ensure!((dry.examined, dry.redriven) == (10, 2), "{dry:?}");
    ensure!(
        dry.still_failing.len() == 1 && dry.still_failing[0].0 == format!("{partition_0}@31"),
        "{dry:?}"
    );
    ensure!(dry.held_back == held_back, "{dry:?}");
    ensure!(dry.stopped_groups == [partition_0.clone()], "{dry:?}");
    ensure!(table.execution_of(&first_day).await?.is_none());
    ensure!(
        queue_depth(&sqs, &url).await? == 14,
        "a dry run deletes nothing"
    );

    let real = redrive(&reader, &handler, None, false).await?;
    ensure!((real.examined, real.redriven) == (10, 2), "{real:?}");
    ensure!(real.still_failing.len() == 1, "{real:?}");
    ensure!(real.held_back == held_back, "{real:?}");
    ensure!(real.stopped_groups == [partition_0.clone()], "{real:?}");
    ensure!(
        table.execution_of(&first_day).await? == Some(2),
        "@30 replayed"
    );
    ensure!(
        table.execution_of(&other_partition).await? == Some(2),
        "another partition is not held up"
    );
    ensure!(
        table.execution_of(&later_day).await?.is_none(),
        "nothing behind the poison is applied before it"
    );
    ensure!(queue_depth(&sqs, &url).await? == 12, "@31 to @42 are left");

    // The operator deletes the poison: the partition's next message, @32, is
    // the head of its group again, and the next run replays the rest in order.
    let head = sqs
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(1)
        .send()
        .await?
        .messages
        .unwrap_or_default();
    let head = head.first().ok_or_else(|| anyhow!("empty queue"))?;
    let letter: DeadLetter = serde_json::from_str(head.body().unwrap_or_default())?;
    ensure!(
        letter.offset == 31,
        "the poison is still first: @{}",
        letter.offset
    );
    sqs.delete_message()
        .queue_url(&url)
        .set_receipt_handle(head.receipt_handle.clone())
        .send()
        .await?;
    let fixed = redrive(&reader, &handler, None, false).await?;
    ensure!(
        (fixed.examined, fixed.redriven) == (11, 11) && fixed.still_failing.is_empty(),
        "{fixed:?}"
    );
    ensure!(fixed.held_back.is_empty() && fixed.stopped_groups.is_empty());
    ensure!(table.execution_of(&later_day).await? == Some(2));
    ensure!(queue_depth(&sqs, &url).await? == 0);
    Ok(())
}

/// The real binary, with a FIFO dead-letter queue: at DEBUG it says what it
/// learnt of the queue at cold start and logs each send; at INFO neither.
pub async fn at_debug_level_the_queues_limit_and_each_dead_letter_send_are_logged(
    moto: String,
) -> anyhow::Result<()> {
    use crate::runtime_api::{Stub, lambda_command, start_stub, stop, wait_for};

    let table = TestTable::create(&Backend::embedded(), TableShape::default()).await?;
    let sqs = aws_sdk_sqs::Client::new(&local_sdk(&moto));
    let url = create_fifo_queue(&sqs, &[(QueueAttributeName::MaximumMessageSize, "4096")]).await?;
    // Two poisons: a small one, and one too large for the queue.
    let event = kafka_event(&[
        Message {
            partition: 0,
            offset: 5,
            value: "not json".into(),
        },
        Message {
            partition: 1,
            offset: 7,
            value: "x".repeat(30_000),
        },
    ]);
    let mut runs = Vec::new();
    for level in ["DEBUG", "INFO"] {
        let stub = Stub::new(event.clone());
        let api = start_stub(stub.clone()).await?;
        let mut command = lambda_command(&api, &table.endpoint, &table.name);
        command.envs([
            ("LOG_LEVEL", level),
            ("DLQ_URL", url.as_str()),
            ("AWS_ENDPOINT_URL_SQS", moto.as_str()),
        ]);
        let child = command.spawn()?;
        let answered = wait_for(&stub, |s| s.response.is_some()).await;
        let (stdout, stderr) = stop(child).await?;
        answered.with_context(|| format!("stdout: {stdout}\nstderr: {stderr}"))?;
        let response = stub.seen.lock().await.response.clone();
        ensure!(
            response == Some(json!({"batchItemFailures": []})),
            "at {level} both poisons are parked: {response:?}\n{stdout}"
        );
        let lines: Vec<Value> = stdout
            .lines()
            .map(|line| serde_json::from_str(line).with_context(|| format!("not JSON: {line}")))
            .collect::<anyhow::Result<_>>()?;
        runs.push(lines);
    }
    let said = |lines: &[Value], message: &str| -> Vec<Value> {
        lines
            .iter()
            .filter(|l| l["message"] == message)
            .cloned()
            .collect()
    };
    let debug = &runs[0];

    let described = said(debug, "dead-letter queue described");
    ensure!(described.len() == 1, "once, at cold start: {described:?}");
    let described = &described[0];
    ensure!(described["level"] == "DEBUG", "{described}");
    ensure!(described["dlq_url"] == url.as_str(), "{described}");
    ensure!(described["message_limit"] == 4096, "{described}");
    ensure!(described["fifo"] == true, "{described}");
    ensure!(described["from_attributes"] == true, "{described}");
    ensure!(
        described.get("request_id").is_none(),
        "before any invocation: {described}"
    );

    // The second run's sends were deduplicated by the queue: one copy each.
    let parked = drain(&sqs, &url).await?;
    let body_bytes: BTreeMap<i64, usize> = parked
        .iter()
        .map(|m| {
            let body = m.body().unwrap_or_default();
            serde_json::from_str::<DeadLetter>(body).map(|l| (l.offset, body.len()))
        })
        .collect::<Result<_, _>>()?;
    ensure!(body_bytes.len() == 2 && parked.len() == 2, "{body_bytes:?}");
    let sent = said(debug, "dead letter sent");
    ensure!(sent.len() == 2, "one line per send: {sent:?}");
    for line in &sent {
        ensure!(line["level"] == "DEBUG", "{line}");
        ensure!(line["dlq_url"] == url.as_str(), "{line}");
        ensure!(
            line["fifo_group"] == line["partition"],
            "grouped by partition: {line}"
        );
        let offset = line["offset"].as_i64().unwrap_or_default();
        ensure!(
            line["body_bytes"].as_u64() == body_bytes.get(&offset).map(|&b| b as u64),
            "the size of the body parked for @{offset} ({:?}): {line}",
            body_bytes.get(&offset)
        );
        ensure!(
            line["truncated"] == (offset == 7),
            "only the large value is cut: {line}"
        );
    }

    let info = &runs[1];
    for message in ["dead-letter queue described", "dead letter sent"] {
        ensure!(said(info, message).is_empty(), "{message} at INFO");
    }
    ensure!(
        !said(info, "poison messages go to the dead-letter queue").is_empty(),
        "the INFO run did connect the queue"
    );
    Ok(())
}

/// Runs without moto: when the queue's attributes cannot be read, its name
/// says whether it is FIFO.
pub async fn a_queue_whose_attributes_cannot_be_read_is_known_fifo_by_its_name()
-> anyhow::Result<()> {
    let closed = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let endpoint = format!("http://{}", closed.local_addr()?);
    drop(closed);
    let sqs = aws_sdk_sqs::Client::new(&local_sdk(&endpoint));
    for (name, fifo) in [("dlq.fifo", true), ("dlq", false)] {
        let url = format!("{endpoint}/123456789012/{name}");
        let queue = SqsDeadLetters::connect(sqs.clone(), &url).await;
        ensure!(queue.is_fifo() == fifo, "{name}");
        ensure!(queue.message_limit() == DEFAULT_MESSAGE_LIMIT, "{name}");
        ensure!(DeadLetterReader::new(sqs.clone(), &url).is_fifo() == fifo);
    }
    Ok(())
}
