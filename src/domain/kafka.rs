//! The Lambda Kafka event (MSK and self-managed Kafka) and the partial-batch
//! response. The envelope is decoded first; each record's value is decoded
//! later, on its own, so one bad record never fails the invocation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

/// The `eventSource` of an MSK event source mapping.
const MSK: &str = "aws:kafka";
/// The `eventSource` of a self-managed Kafka mapping, as AWS's current example
/// spells it, and as Powertools' models, Middy and older examples spell it.
/// Which one a given mapping sends is not ours to know: both are normal.
const SELF_MANAGED_KAFKA: [&str; 2] = ["SelfManagedKafka", "aws:SelfManagedKafka"];

/// Headers that carry a caller-supplied correlation id, in order of preference.
const CORRELATION_HEADERS: [&str; 2] = ["correlation_id", "x-correlation-id"];

/// The payload is not a Kafka event: the whole invocation fails, since there is
/// no message in it that could be reported on its own.
#[derive(Debug, Error)]
pub enum EnvelopeError {
    #[error("the payload is not a Lambda Kafka event: {reason}")]
    NotKafkaEvent { reason: String },
    #[error(
        "record {index} of {partition:?} has no usable offset ({reason}); it cannot be reported on its own"
    )]
    UnaddressableRecord {
        partition: String,
        index: usize,
        reason: String,
    },
}

/// Only `records` is required: `eventSource`, `eventSourceArn`,
/// `bootstrapServers` and any other top-level field are information we do not
/// use, and a value of an unexpected shape there must not fail a batch.
#[derive(Deserialize)]
struct WireEvent {
    /// Records stay raw JSON here: each is judged on its own, so a field of
    /// the wrong type in one record cannot fail the others.
    records: BTreeMap<String, Vec<Value>>,
}

/// Where a message sits: the partition as Lambda names it (`<topic>-<partition>`)
/// and its offset. This is what `batchItemFailures` reports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId {
    pub partition: String,
    pub offset: i64,
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.partition, self.offset)
    }
}

/// A Kafka record whose envelope is understood; its value is still raw.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaMessage {
    pub id: MessageId,
    pub topic: String,
    pub partition: Option<i64>,
    pub timestamp: Option<i64>,
    pub timestamp_type: Option<String>,
    /// Base64, exactly as received.
    pub key: Option<String>,
    /// Exactly as received: normally a base64 string; anything else, or
    /// nothing, makes the message invalid when its value is decoded.
    pub value: Option<Value>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// The headers exactly as received, for the dead-letter queue.
    pub raw_headers: Option<Value>,
}

impl KafkaMessage {
    /// The caller's correlation id, when a header carries one.
    pub fn correlation_header(&self) -> Option<String> {
        CORRELATION_HEADERS.iter().find_map(|wanted| {
            self.headers
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
                .and_then(|(_, bytes)| std::str::from_utf8(bytes).ok())
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
        })
    }
}

/// The messages of one Kafka partition, in offset order.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionBatch {
    pub partition: String,
    pub messages: Vec<KafkaMessage>,
}

/// What the event says it came from. Information, not a gate: the records
/// of an event from an unexpected source are processed all the same (the
/// caller says so once), since failing the invocation would block every
/// partition of the topic over a field we never use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EventSource {
    Msk,
    SelfManagedKafka,
    /// No `eventSource` (or `null`).
    Missing,
    /// Anything else, as JSON text (a string keeps its quotes).
    Unexpected(String),
}

impl EventSource {
    /// Reads `eventSource` from a raw event, whatever its type.
    pub(crate) fn of(payload: &Value) -> Self {
        match payload.get("eventSource") {
            None | Some(Value::Null) => Self::Missing,
            Some(Value::String(source)) if source == MSK => Self::Msk,
            Some(Value::String(source)) if SELF_MANAGED_KAFKA.contains(&source.as_str()) => {
                Self::SelfManagedKafka
            }
            Some(other) => Self::Unexpected(other.to_string()),
        }
    }

    /// One of the spellings Lambda's Kafka event source mappings use.
    #[cfg(test)]
    pub(crate) fn is_known(&self) -> bool {
        matches!(self, Self::Msk | Self::SelfManagedKafka)
    }
}

/// Decodes the envelope of a Lambda Kafka event into its partitions. Only
/// `records` matters: a map of `"<topic>-<partition>"` to lists of records.
pub fn decode_envelope(payload: Value) -> Result<Vec<PartitionBatch>, EnvelopeError> {
    let event: WireEvent =
        serde_json::from_value(payload).map_err(|e| EnvelopeError::NotKafkaEvent {
            reason: e.to_string(),
        })?;
    event
        .records
        .into_iter()
        .map(|(partition, records)| {
            let mut messages = records
                .into_iter()
                .enumerate()
                .map(|(index, record)| to_message(&partition, index, record))
                .collect::<Result<Vec<_>, _>>()?;
            messages.sort_by_key(|m| m.id.offset);
            // The same offset twice is the same Kafka record: apply and report it once.
            messages.dedup_by_key(|m| m.id.offset);
            Ok(PartitionBatch {
                partition,
                messages,
            })
        })
        .collect()
}

fn to_message(partition: &str, index: usize, record: Value) -> Result<KafkaMessage, EnvelopeError> {
    let unaddressable = |reason: &str| EnvelopeError::UnaddressableRecord {
        partition: partition.to_owned(),
        index,
        reason: reason.to_owned(),
    };
    let Value::Object(mut record) = record else {
        return Err(unaddressable("the record is not an object"));
    };
    let offset = match record.get("offset") {
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| unaddressable("not an integer"))?,
        // Some producers of test events quote the offset.
        Some(Value::String(s)) => s.parse().map_err(|_| unaddressable("not an integer"))?,
        Some(Value::Null) | None => return Err(unaddressable("missing")),
        Some(_) => return Err(unaddressable("not an integer")),
    };
    // Everything else is informational and read leniently: a field of the
    // wrong type counts as absent.
    let text = |name: &str| record.get(name).and_then(Value::as_str).map(str::to_owned);
    let integer = |name: &str| record.get(name).and_then(Value::as_i64);
    Ok(KafkaMessage {
        id: MessageId {
            partition: partition.to_owned(),
            offset,
        },
        topic: text("topic").unwrap_or_else(|| topic_of(partition).to_owned()),
        partition: integer("partition"),
        timestamp: integer("timestamp"),
        timestamp_type: text("timestampType"),
        key: text("key"),
        headers: record
            .get("headers")
            .map(decode_headers)
            .unwrap_or_default(),
        raw_headers: record.get("headers").filter(|h| !h.is_null()).cloned(),
        value: record.remove("value").filter(|v| !v.is_null()),
    })
}

/// `"<topic>-<partition>"` without its partition number.
fn topic_of(partition_key: &str) -> &str {
    partition_key
        .rsplit_once('-')
        .map_or(partition_key, |(topic, _)| topic)
}

/// Headers arrive as `[{"name": [byte, ...]}, ...]`, where a byte may be signed
/// (-128..=127, as Java sends it) or unsigned. Anything else is ignored: headers
/// are informational here, never a reason to reject a message.
fn decode_headers(headers: &Value) -> Vec<(String, Vec<u8>)> {
    let Some(list) = headers.as_array() else {
        return Vec::new();
    };
    list.iter()
        .filter_map(Value::as_object)
        .flat_map(|header| header.iter())
        .filter_map(|(name, bytes)| {
            let bytes = match bytes {
                Value::Array(items) => items
                    .iter()
                    .map(|b| b.as_i64().and_then(signed_or_unsigned_byte))
                    .collect::<Option<Vec<u8>>>()?,
                Value::String(text) => text.as_bytes().to_vec(),
                _ => return None,
            };
            Some((name.clone(), bytes))
        })
        .collect()
}

fn signed_or_unsigned_byte(value: i64) -> Option<u8> {
    match value {
        -128..=-1 => Some((value + 256) as u8),
        0..=255 => Some(value as u8),
        _ => None,
    }
}

/// The response Lambda expects from a Kafka event source with
/// `ReportBatchItemFailures`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaBatchResponse {
    pub batch_item_failures: Vec<BatchItemFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchItemFailure {
    pub item_identifier: MessageIdentifier,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageIdentifier {
    pub partition: String,
    pub offset: i64,
}

impl From<&MessageId> for BatchItemFailure {
    fn from(id: &MessageId) -> Self {
        Self {
            item_identifier: MessageIdentifier {
                partition: id.partition.clone(),
                offset: id.offset,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(offset: Value) -> Value {
        json!({
            "topic": "chargeback-consolidation-events",
            "partition": 0,
            "offset": offset,
            "timestamp": 1700639732123_i64,
            "timestampType": "CREATE_TIME",
            "key": "",
            "value": "e30=",
            "headers": []
        })
    }

    #[test]
    fn the_shipped_msk_sample_decodes_into_one_message() {
        let payload: Value =
            serde_json::from_str(include_str!("../../events/sample-msk-event.json")).unwrap();
        let batches = decode_envelope(payload).unwrap();
        assert_eq!(batches.len(), 1);
        let message = &batches[0].messages[0];
        assert_eq!(message.id.partition, "chargeback-consolidation-events-0");
        assert_eq!(message.id.offset, 123);
        assert_eq!(message.topic, "chargeback-consolidation-events");
        assert_eq!(message.timestamp, Some(1700639732123));
        assert!(message.value.is_some());
    }

    #[test]
    fn a_self_managed_kafka_event_with_null_optionals_decodes() {
        let payload = json!({
            "eventSource": "SelfManagedKafka",
            "bootstrapServers": "b-1:9092",
            "records": {
                "t-3": [{"topic": "t", "partition": 3, "offset": 9, "timestamp": null,
                          "timestampType": null, "key": null, "value": null, "headers": null,
                          "valueSchemaMetadata": null}]
            }
        });
        let batches = decode_envelope(payload).unwrap();
        let message = &batches[0].messages[0];
        assert_eq!(
            message.id,
            MessageId {
                partition: "t-3".into(),
                offset: 9
            }
        );
        assert_eq!(message.value, None);
        assert!(message.headers.is_empty());
    }

    #[test]
    fn fields_of_the_wrong_type_in_one_record_do_not_fail_the_envelope() {
        let payload = json!({
            "eventSource": "aws:kafka",
            "records": {
                "t-0": [
                    {"offset": 1, "timestamp": 1.5, "partition": "0", "key": 5, "value": 123,
                     "topic": ["t"], "timestampType": 7, "headers": "nope"},
                    record(json!(2))
                ]
            }
        });
        let batches = decode_envelope(payload).unwrap();
        let odd = &batches[0].messages[0];
        assert_eq!(odd.id.offset, 1);
        assert_eq!(
            (odd.timestamp, odd.partition, odd.key.as_deref()),
            (None, None, None)
        );
        assert_eq!(odd.topic, "t", "taken from the partition key");
        assert_eq!(
            odd.value,
            Some(json!(123)),
            "kept as received, judged when decoded"
        );
        assert_eq!(batches[0].messages[1].id.offset, 2);
    }

    /// Every fixture under `events/`: each spelling of the event source, with
    /// `bootstrapServers` as a string or a list, with and without an ARN.
    const FIXTURES: [(&str, &str); 5] = [
        (
            "sample-msk-event.json",
            include_str!("../../events/sample-msk-event.json"),
        ),
        (
            "self-managed-kafka-event.json",
            include_str!("../../events/self-managed-kafka-event.json"),
        ),
        (
            "self-managed-kafka-aws-prefix-event.json",
            include_str!("../../events/self-managed-kafka-aws-prefix-event.json"),
        ),
        (
            "unexpected-event-source-event.json",
            include_str!("../../events/unexpected-event-source-event.json"),
        ),
        (
            "no-event-source-event.json",
            include_str!("../../events/no-event-source-event.json"),
        ),
    ];

    #[test]
    fn every_fixture_decodes_whatever_its_event_source() {
        for (name, text) in FIXTURES {
            let payload: Value = serde_json::from_str(text).unwrap();
            let batches = decode_envelope(payload).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                batches.iter().all(|b| !b.messages.is_empty()),
                "{name}: every partition holds its messages"
            );
        }
    }

    #[test]
    fn each_spelling_of_the_event_source_is_recognised() {
        let source = |text: &str| EventSource::of(&serde_json::from_str(text).unwrap());
        assert_eq!(source(FIXTURES[0].1), EventSource::Msk);
        assert_eq!(source(FIXTURES[1].1), EventSource::SelfManagedKafka);
        assert_eq!(source(FIXTURES[2].1), EventSource::SelfManagedKafka);
        assert_eq!(
            source(FIXTURES[3].1),
            EventSource::Unexpected("\"aws:kafka:msk\"".into())
        );
        assert_eq!(source(FIXTURES[4].1), EventSource::Missing);
        assert!(source(FIXTURES[1].1).is_known() && !source(FIXTURES[4].1).is_known());
    }

    #[test]
    fn envelope_fields_we_do_not_use_never_fail_the_event() {
        for envelope in [
            json!({"eventSource": 42, "records": {"t-0": [record(json!(1))]}}),
            json!({"eventSource": {"name": "kafka"}, "records": {"t-0": [record(json!(1))]}}),
            json!({"eventSource": null, "records": {"t-0": [record(json!(1))]}}),
            json!({"eventSource": "aws:sqs", "records": {"t-0": [record(json!(1))]}}),
            json!({"eventSource": "SelfManagedKafka",
                   "bootstrapServers": ["b-1:9092", "b-2:9092"],
                   "records": {"t-0": [record(json!(1))]}}),
            json!({"eventSource": "aws:kafka", "eventSourceArn": null,
                   "records": {"t-0": [record(json!(1))]}}),
            json!({"eventSource": "aws:kafka", "records": {"t-0": [record(json!(1))]},
                   "futureField": {"anything": [1, 2]}, "bootstrapServers": 7}),
        ] {
            let batches =
                decode_envelope(envelope.clone()).unwrap_or_else(|e| panic!("{envelope}: {e}"));
            assert_eq!(batches[0].messages[0].id.offset, 1, "{envelope}");
        }
        assert_eq!(
            EventSource::of(&json!({"eventSource": 42})),
            EventSource::Unexpected("42".into())
        );
    }

    #[test]
    fn a_repeated_offset_is_one_message() {
        let payload = json!({"records": {"t-0": [record(json!(4)), record(json!(4))]}});
        assert_eq!(decode_envelope(payload).unwrap()[0].messages.len(), 1);
    }

    #[test]
    fn messages_of_a_partition_come_out_in_offset_order() {
        let payload = json!({
            "eventSource": "aws:kafka",
            "records": {"t-0": [record(json!(7)), record(json!(5)), record(json!(6))]}
        });
        let offsets: Vec<i64> = decode_envelope(payload).unwrap()[0]
            .messages
            .iter()
            .map(|m| m.id.offset)
            .collect();
        assert_eq!(offsets, [5, 6, 7]);
    }

    #[test]
    fn signed_and_unsigned_header_bytes_decode_to_the_same_text() {
        let headers = json!([
            {"x-correlation-id": [99, 45, 49]},
            {"signed": [-61, -87]},
            {"unsigned": [195, 169]},
            {"bad": [300]}
        ]);
        let decoded = decode_headers(&headers);
        assert_eq!(decoded[0], ("x-correlation-id".into(), b"c-1".to_vec()));
        assert_eq!(decoded[1].1, "é".as_bytes());
        assert_eq!(decoded[2].1, "é".as_bytes());
        assert_eq!(
            decoded.len(),
            3,
            "an out-of-range byte drops that header only"
        );
    }

    #[test]
    fn the_correlation_id_header_is_found_by_either_name() {
        let mut message = decode_envelope(json!({"records": {"t-0": [record(json!(1))]}})).unwrap()
            [0]
        .messages[0]
            .clone();
        assert_eq!(message.correlation_header(), None);
        message.headers = vec![("X-Correlation-Id".into(), b"abc".to_vec())];
        assert_eq!(message.correlation_header().as_deref(), Some("abc"));
        message
            .headers
            .push(("correlation_id".into(), b"first".to_vec()));
        assert_eq!(message.correlation_header().as_deref(), Some("first"));
    }

    #[test]
    fn a_payload_that_is_not_a_kafka_event_is_an_envelope_error() {
        assert!(matches!(
            decode_envelope(json!({"Records": [{"eventSource": "aws:sqs"}]})),
            Err(EnvelopeError::NotKafkaEvent { .. })
        ));
        assert!(matches!(
            decode_envelope(json!([{"records": {}}])),
            Err(EnvelopeError::NotKafkaEvent { .. })
        ));
        assert!(matches!(
            decode_envelope(json!({"eventSource": "aws:kafka", "records": [record(json!(1))]})),
            Err(EnvelopeError::NotKafkaEvent { .. })
        ));
        assert!(matches!(
            decode_envelope(json!({"records": {"t-0": record(json!(1))}})),
            Err(EnvelopeError::NotKafkaEvent { .. })
        ));
        assert!(matches!(
            decode_envelope(json!({"records": {"t-0": [{"offset": 1.5}]}})),
            Err(EnvelopeError::UnaddressableRecord { .. })
        ));
        assert!(matches!(
            decode_envelope(json!({"records": {"t-0": [{"value": "e30="}]}})),
            Err(EnvelopeError::UnaddressableRecord { .. })
        ));
        assert!(matches!(
            decode_envelope(json!({"records": {"t-0": [null]}})),
            Err(EnvelopeError::UnaddressableRecord { .. })
        ));
    }

    #[test]
    fn the_response_has_the_shape_aws_documents() {
        let response = KafkaBatchResponse {
            batch_item_failures: vec![BatchItemFailure::from(&MessageId {
                partition: "t-0".into(),
                offset: 12,
            })],
        };
        assert_eq!(
            serde_json::to_value(&response).unwrap(),
            json!({"batchItemFailures": [{"itemIdentifier": {"partition": "t-0", "offset": 12}}]})
        );
        assert_eq!(
            serde_json::to_value(KafkaBatchResponse::default()).unwrap(),
            json!({"batchItemFailures": []})
        );
    }
}
