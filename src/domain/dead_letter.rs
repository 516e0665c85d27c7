//! A poison message as it is parked in the dead-letter queue: everything
//! needed to understand it and to replay it, in one JSON document that fits
//! the queue's size limit.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::event::DecodeError;
use super::kafka::{KafkaMessage, MessageId};

/// Room kept for the message attributes and the JSON around a truncated value.
const ENVELOPE_RESERVE: usize = 2048;

/// The dead-letter document. `value` and `key` are exactly as received
/// (base64), unless the value alone would overflow the queue's limit: then it
/// is replaced by its length, SHA-256 and a leading slice, and `value_truncated`
/// says so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The partition as Lambda names it (`<topic>-<partition>`).
    pub batch_partition: String,
    pub topic: String,
    pub partition: Option<i64>,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub timestamp_type: Option<String>,
    pub key: Option<String>,
    pub value: Option<Value>,
    pub value_truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value_length: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value_sha256: Option<String>,
    pub headers: Option<Value>,
    pub error_kind: String,
    pub error_message: String,
    pub request_id: String,
    /// ISO-8601 UTC.
    pub failed_at: String,
}

impl DeadLetter {
    pub fn new(
        message: &KafkaMessage,
        problem: &DecodeError,
        request_id: &str,
        failed_at: &str,
    ) -> Self {
        Self {
            batch_partition: message.id.partition.clone(),
            topic: message.topic.clone(),
            partition: message.partition,
            offset: message.id.offset,
            timestamp: message.timestamp,
            timestamp_type: message.timestamp_type.clone(),
            key: message.key.clone(),
            value: message.value.clone(),
            value_truncated: false,
            value_length: None,
            value_sha256: None,
            headers: message.raw_headers.clone(),
            error_kind: problem.kind().to_owned(),
            error_message: problem.to_string(),
            request_id: request_id.to_owned(),
            failed_at: failed_at.to_owned(),
        }
    }

    /// The message it came from, for a replay through the same decoding.
    pub fn message_id(&self) -> MessageId {
        MessageId {
            partition: self.batch_partition.clone(),
            offset: self.offset,
        }
    }

    /// A one-record Lambda Kafka event holding the original message, so a
    /// replay goes through exactly the decoding and stamping of a delivery.
    pub fn to_kafka_event(&self) -> Value {
        serde_json::json!({
            "eventSource": "aws:kafka",
            "records": {
                self.batch_partition.clone(): [{
                    "topic": self.topic,
                    "partition": self.partition,
                    "offset": self.offset,
                    "timestamp": self.timestamp,
                    "timestampType": self.timestamp_type,
                    "key": self.key,
                    "value": self.value,
                    "headers": self.headers,
                }]
            }
        })
    }

    /// The JSON body, at most `limit` bytes: the value is truncated if needed
    /// (never the coordinates or the error), so the message stays identifiable.
    pub fn to_body(&self, limit: usize) -> String {
        let whole = serde_json::to_string(self).unwrap_or_default();
        if whole.len() <= limit {
            return whole;
        }
        let raw = match &self.value {
            Some(Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let mut truncated = Self {
            value: None,
            value_truncated: true,
            value_length: Some(raw.len()),
            value_sha256: Some(format!("{:x}", Sha256::digest(raw.as_bytes()))),
            headers: None,
            ..self.clone()
        };
        let skeleton = serde_json::to_string(&truncated).unwrap_or_default();
        let room = limit.saturating_sub(skeleton.len() + ENVELOPE_RESERVE);
        let mut cut = room.min(raw.len());
        while !raw.is_char_boundary(cut) {
            cut -= 1;
        }
        truncated.value = Some(Value::String(raw[..cut].to_owned()));
        serde_json::to_string(&truncated).unwrap_or(skeleton)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(value: Value) -> KafkaMessage {
        KafkaMessage {
            id: MessageId {
                partition: "chargeback-consolidation-events-2".into(),
                offset: 77,
            },
            topic: "chargeback-consolidation-events".into(),
            partition: Some(2),
            timestamp: Some(1_700_000_000_000),
            timestamp_type: Some("CREATE_TIME".into()),
            key: Some("a2V5".into()),
            value: Some(value),
            headers: vec![("x-correlation-id".into(), b"c-1".to_vec())],
            raw_headers: Some(json!([{"x-correlation-id": [99, 45, 49]}])),
        }
    }

    #[test]
    fn the_body_carries_everything_needed_to_replay_the_message() {
        let letter = DeadLetter::new(
            &message(json!("bm90IGpzb24=")),
            &DecodeError::NotJson {
                reason: "expected value".into(),
            },
            "req-1",
            "2025-11-20T07:00:00.000Z",
        );
        let body: Value = serde_json::from_str(&letter.to_body(262_144)).unwrap();
        assert_eq!(body["batch_partition"], "chargeback-consolidation-events-2");
        assert_eq!(body["topic"], "chargeback-consolidation-events");
        assert_eq!(
            (body["partition"].clone(), body["offset"].clone()),
            (json!(2), json!(77))
        );
        assert_eq!(body["timestamp"], 1_700_000_000_000_i64);
        assert_eq!(body["key"], "a2V5");
        assert_eq!(body["value"], "bm90IGpzb24=");
        assert_eq!(body["value_truncated"], false);
        assert_eq!(body["headers"], json!([{"x-correlation-id": [99, 45, 49]}]));
        assert_eq!(body["error_kind"], "not_json");
        assert_eq!(
            body["error_message"],
            "the value is not JSON: expected value"
        );
        assert_eq!(body["request_id"], "req-1");
        assert_eq!(body["failed_at"], "2025-11-20T07:00:00.000Z");
        let back: DeadLetter = serde_json::from_value(body).unwrap();
        assert_eq!(back, letter);
    }

    #[test]
    fn a_value_too_large_is_kept_as_length_hash_and_prefix_within_the_limit() {
        let huge = "QUFB".repeat(100_000);
        let letter = DeadLetter::new(
            &message(json!(huge)),
            &DecodeError::NotJson { reason: "x".into() },
            "req-2",
            "2025-11-20T07:00:00.000Z",
        );
        let body = letter.to_body(65_536);
        assert!(body.len() <= 65_536, "{} bytes", body.len());
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["value_truncated"], true);
        assert_eq!(parsed["value_length"], 400_000);
        assert_eq!(
            parsed["value_sha256"],
            format!("{:x}", Sha256::digest(huge.as_bytes()))
        );
        let prefix = parsed["value"].as_str().unwrap();
        assert!(prefix.len() > 50_000 && huge.starts_with(prefix));
        assert_eq!(parsed["offset"], 77);
        assert_eq!(parsed["error_kind"], "not_json");
    }

    #[test]
    fn a_dead_letter_replays_as_the_message_it_came_from() {
        let original = message(json!("e30="));
        let letter = DeadLetter::new(&original, &DecodeError::EmptyJobName, "r", "t");
        let batches = crate::domain::kafka::decode_envelope(letter.to_kafka_event()).unwrap();
        assert_eq!(batches[0].messages, vec![original]);
    }
}
