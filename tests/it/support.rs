//! Shared test fixtures: a uniquely named table on a real DynamoDB-compatible
//! server (the embedded engine or DynamoDB Local), events built like the Glue
//! job's, and readers of what ended up in the table.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, anyhow};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use consolidation_updater::app::{
    BatchHandler, DynamoStore, FanOut, Invocation, load_sdk_config, local_client,
};
use consolidation_updater::local::{
    Chargeback, EmbeddedServer, TableShape, create_table, put_chargebacks,
};
use consolidation_updater::model::{BatchOutcome, DeadLetter, SinkError};
use consolidation_updater::settings::WriteMode;
use consolidation_updater::testing::{BoxFuture, DeadLetterSink};
use serde_json::{Value, json};

pub const INDEX: &str = "partition_date-index";
pub const REGION: &str = "sa-east-1";

/// Which real server a test runs against.
#[derive(Debug, Clone)]
pub enum Server {
    /// The `dynoxide-rs` engine, served on loopback by the test itself.
    Embedded,
    /// The official DynamoDB Local at this endpoint (started by `.ci/run`).
    DynamoDbLocal(String),
}

/// A server, and how the adapter under test writes to it.
#[derive(Debug, Clone)]
pub struct Backend {
    pub server: Server,
    pub write_mode: WriteMode,
}

impl Backend {
    /// The embedded engine, one `UpdateItem` per record.
    pub fn embedded() -> Self {
        Self {
            server: Server::Embedded,
            write_mode: WriteMode::UpdateItem,
        }
    }

    pub fn writing_with(mut self, write_mode: WriteMode) -> Self {
        self.write_mode = write_mode;
        self
    }
}

/// A fresh table, unique to one test, on the backend's server.
pub struct TestTable {
    pub client: Client,
    pub name: String,
    pub shape: TableShape,
    pub endpoint: String,
    pub write_mode: WriteMode,
    // Keeps the embedded engine running for the table's lifetime.
    _server: Option<EmbeddedServer>,
}

static TABLE_COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_table_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "chargebacks-test-{}-{}-{nanos}",
        std::process::id(),
        TABLE_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl TestTable {
    pub async fn create(backend: &Backend, shape: TableShape) -> anyhow::Result<Self> {
        let (server, endpoint) = match &backend.server {
            Server::Embedded => {
                let server = EmbeddedServer::start(None).await?;
                let endpoint = server.endpoint().to_owned();
                (Some(server), endpoint)
            }
            Server::DynamoDbLocal(endpoint) => (None, endpoint.clone()),
        };
        let sdk = load_sdk_config(Some(REGION)).await;
        let client = local_client(&sdk, &endpoint);
        let name = unique_table_name();
        create_table(&client, &name, INDEX, shape)
            .await
            .with_context(|| format!("creating {name} at {endpoint}"))?;
        Ok(Self {
            client,
            name,
            shape,
            endpoint,
            write_mode: backend.write_mode,
            _server: server,
        })
    }

    pub fn store(&self) -> DynamoStore {
        DynamoStore::new(self.client.clone(), &self.name, INDEX).with_write_mode(self.write_mode)
    }

    pub fn handler(&self) -> Arc<BatchHandler<DynamoStore>> {
        Arc::new(BatchHandler::new(FanOut::new(
            Arc::new(self.store()),
            16,
            Arc::default(),
        )))
    }

    pub async fn seed(&self, chargebacks: impl Iterator<Item = Chargeback>) -> anyhow::Result<u64> {
        Ok(put_chargebacks(&self.client, &self.name, chargebacks, 8).await?)
    }

    /// Runs one Lambda Kafka event through a fresh handler.
    pub async fn invoke(&self, event: Value) -> anyhow::Result<BatchOutcome> {
        Ok(self
            .handler()
            .handle(event, &Invocation::unbounded("test-request"))
            .await?)
    }

    pub async fn item(
        &self,
        chargeback: &Chargeback,
    ) -> anyhow::Result<Option<HashMap<String, AttributeValue>>> {
        let mut request = self
            .client
            .get_item()
            .table_name(&self.name)
            .consistent_read(true)
            .key(
                "chargeback_id",
                AttributeValue::S(chargeback.chargeback_id.clone()),
            );
        if self.shape.created_at_sort_key {
            request = request.key(
                "created_at",
                AttributeValue::S(chargeback.created_at.clone()),
            );
        }
        Ok(request.send().await?.item)
    }

    /// `consolidation_execution` of a record, or `None` when never stamped.
    pub async fn execution_of(&self, chargeback: &Chargeback) -> anyhow::Result<Option<u64>> {
        let item = self
            .item(chargeback)
            .await?
            .ok_or_else(|| anyhow!("{} is not in the table", chargeback.chargeback_id))?;
        item.get("consolidation_execution")
            .map(|v| {
                number(v).ok_or_else(|| anyhow!("consolidation_execution is not a number: {v:?}"))
            })
            .transpose()
    }
}

pub fn text(value: &AttributeValue) -> Option<&str> {
    value.as_s().ok().map(String::as_str)
}

pub fn number(value: &AttributeValue) -> Option<u64> {
    value.as_n().ok().and_then(|n| n.parse().ok())
}

/// A consolidation event as the Glue job writes it.
pub fn consolidation(date: &str, sequence: u64, total: u64, execution_time: &str) -> Value {
    json!({
        "event_type": "consolidation_completed",
        "partition_date": date,
        "execution_sequence": sequence,
        "total_executions": total,
        "records_processed": 1000 + sequence,
        "duplicates_removed": 3,
        "output_files": 2,
        "output_format": "parquet",
        "output_path": format!("s3://chargebacks-bucket/consolidated/{date}/run={sequence}"),
        "execution_time": execution_time,
        "completed_at": format!("{date}T23:00:0{sequence}.123456+00:00"),
        "job_name": "poc-chargeback-dev-chargebacks-consolidation"
    })
}

/// One Kafka message: its partition number, offset and raw value text.
pub struct Message {
    pub partition: i64,
    pub offset: i64,
    pub value: String,
}

impl Message {
    pub fn json(partition: i64, offset: i64, value: &Value) -> Self {
        Self {
            partition,
            offset,
            value: value.to_string(),
        }
    }
}

pub const TOPIC: &str = "chargeback-consolidation-events";

/// A Lambda MSK event holding `messages`, grouped by partition as Lambda does.
pub fn kafka_event(messages: &[Message]) -> Value {
    let mut records: HashMap<String, Vec<Value>> = HashMap::new();
    for m in messages {
        records
            .entry(format!("{TOPIC}-{}", m.partition))
            .or_default()
            .push(json!({
                "topic": TOPIC,
                "partition": m.partition,
                "offset": m.offset,
                "timestamp": 1_763_620_000_000_i64 + m.offset,
                "timestampType": "CREATE_TIME",
                "key": null,
                "value": BASE64.encode(&m.value),
                "headers": []
            }));
    }
    json!({
        "eventSource": "aws:kafka",
        "eventSourceArn": "arn:aws:kafka:sa-east-1:123456789012:cluster/test/abc",
        "bootstrapServers": "b-1.test:9098",
        "records": records
    })
}

/// The shipped sample event, as a fixture file.
pub fn sample_event() -> Value {
    let text = include_str!("../../events/sample-msk-event.json");
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// A chargeback with chosen identity and creation time.
pub fn chargeback(id: &str, date: &str, created_at: &str) -> Chargeback {
    Chargeback {
        chargeback_id: id.to_owned(),
        partition_date: date.to_owned(),
        created_at: created_at.to_owned(),
        merchant_id: "m-00001".to_owned(),
        amount_cents: 1234,
        currency: "BRL",
        reason_code: "10.4",
    }
}

/// A dead-letter sink that only records: proves what was, or was not, parked.
#[derive(Default)]
pub struct RecordingSink {
    letters: std::sync::Mutex<Vec<DeadLetter>>,
}

impl RecordingSink {
    pub fn count(&self) -> usize {
        self.letters.lock().map(|l| l.len()).unwrap_or(usize::MAX)
    }

    pub fn letters(&self) -> Vec<DeadLetter> {
        self.letters.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl DeadLetterSink for RecordingSink {
    fn send<'a>(&'a self, letter: &'a DeadLetter) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            if let Ok(mut letters) = self.letters.lock() {
                letters.push(letter.clone());
            }
            Ok(())
        })
    }
}

/// A handler on `table` through `client`, dead-lettering into a recording sink.
pub fn handler_on(
    client: Client,
    table: &str,
) -> (Arc<BatchHandler<DynamoStore>>, Arc<RecordingSink>) {
    let sink = Arc::new(RecordingSink::default());
    let handler = BatchHandler::new(FanOut::new(
        Arc::new(DynamoStore::new(client, table, INDEX)),
        8,
        Arc::default(),
    ))
    .with_dead_letters(Arc::clone(&sink) as Arc<dyn DeadLetterSink>);
    (Arc::new(handler), sink)
}

/// Four good messages of one day over `partitions`, with these offsets.
pub fn good_messages(placements: [(i64, i64); 4]) -> Vec<Message> {
    placements
        .iter()
        .zip(1..)
        .map(|(&(partition, offset), sequence)| {
            Message::json(
                partition,
                offset,
                &consolidation("2025-11-20", sequence, 4, "2025-11-20T06:30:00"),
            )
        })
        .collect()
}

/// The offsets a response hands back, in order.
pub fn listed_offsets(outcome: &BatchOutcome) -> Vec<i64> {
    outcome
        .response()
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.offset)
        .collect()
}
