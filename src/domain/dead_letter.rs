//! A poison message as it is parked in the dead-letter queue: everything
//! needed to understand it and to replay it, in one JSON document that fits
//! the queue's size limit.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::event::DecodeError;
use super::failure::StoreError;
use super::kafka::{KafkaMessage, MessageId};

/// Longest `error_message` and `key` kept when a body must be cut to fit.
const CUT_FIELD_LIMIT: usize = 1024;

/// Why a message is parked: a problem retrying cannot fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    /// A stable name (`not_json`, `store_permanent`, ...), also a message attribute.
    pub kind: String,
    pub message: String,
}

impl From<&DecodeError> for Poison {
    fn from(problem: &DecodeError) -> Self {
        Self {
            kind: problem.kind().to_owned(),
            message: problem.to_string(),
        }
    }
}

impl From<&StoreError> for Poison {
    /// A request DynamoDB rejects for good (e.g. a `ValidationException`):
    /// the message would fail the same way on every delivery.
    fn from(error: &StoreError) -> Self {
        Self {
            kind: error.class.kind().to_owned(),
            message: error.to_string(),
        }
    }
}

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
    /// The headers were left out to make the body fit.
    #[serde(default)]
    pub headers_truncated: bool,
    pub error_kind: String,
    pub error_message: String,
    pub request_id: String,
    /// ISO-8601 UTC.
    pub failed_at: String,
}

impl DeadLetter {
    pub fn new(message: &KafkaMessage, poison: &Poison, request_id: &str, failed_at: &str) -> Self {
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
            headers_truncated: false,
            error_kind: poison.kind.clone(),
            error_message: poison.message.clone(),
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

    /// The JSON body, at most `limit` bytes (for any `limit` of a few KiB):
    /// the headers are dropped first, then the value is cut to a prefix with
    /// its length and SHA-256, and long `key` and `error_message` are cut too;
    /// never the coordinates or the error kind, so the message stays identifiable.
    pub fn to_body(&self, limit: usize) -> Result<String, serde_json::Error> {
        Ok(self.fit_body(limit)?.text)
    }

    /// [`to_body`](Self::to_body), saying whether anything was left out.
    pub fn fit_body(&self, limit: usize) -> Result<FittedBody, serde_json::Error> {
        let whole = serde_json::to_string(self)?;
        if whole.len() <= limit {
            return Ok(FittedBody {
                text: whole,
                truncated: false,
            });
        }
        Ok(FittedBody {
            text: self.cut_body(limit)?,
            truncated: true,
        })
    }

    /// The body without the headers, or with the value cut, to fit `limit`.
    fn cut_body(&self, limit: usize) -> Result<String, serde_json::Error> {
        let without_headers = Self {
            headers: None,
            headers_truncated: self.headers.is_some(),
            ..self.clone()
        };
        let body = serde_json::to_string(&without_headers)?;
        if body.len() <= limit {
            return Ok(body);
        }
        let raw = match &self.value {
            Some(Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let mut cut_down = Self {
            value: None,
            value_truncated: true,
            value_length: Some(raw.len()),
            value_sha256: Some(format!("{:x}", Sha256::digest(raw.as_bytes()))),
            key: self
                .key
                .as_deref()
                .map(|k| prefix(k, CUT_FIELD_LIMIT).to_owned()),
            error_message: prefix(&self.error_message, CUT_FIELD_LIMIT).to_owned(),
            ..without_headers
        };
        // Escaping can make the JSON of a slice longer than the slice: measure
        // the real body and shrink until it fits.
        let skeleton = serde_json::to_string(&cut_down)?;
        let mut room = limit.saturating_sub(skeleton.len() + 16).min(raw.len());
        loop {
            cut_down.value = Some(Value::String(prefix(&raw, room).to_owned()));
            let body = serde_json::to_string(&cut_down)?;
            if body.len() <= limit || room == 0 {
                return Ok(body);
            }
            room = room.saturating_sub((body.len() - limit).max(room / 8).max(1));
        }
    }
}

/// A dead letter's JSON body, and whether the headers or the value were left
/// out (or cut) to fit the queue's size limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FittedBody {
    pub text: String,
    pub truncated: bool,
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn prefix(text: &str, max: usize) -> &str {
    &text[..text.floor_char_boundary(max)]
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
            &Poison::from(&DecodeError::NotJson {
                reason: "expected value".into(),
            }),
            "req-1",
            "2025-11-20T07:00:00.000Z",
        );
        let body: Value = serde_json::from_str(&letter.to_body(262_144).unwrap()).unwrap();
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
            &Poison::from(&DecodeError::NotJson { reason: "x".into() }),
            "req-2",
            "2025-11-20T07:00:00.000Z",
        );
        let body = letter.to_body(65_536).unwrap();
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
        let letter = DeadLetter::new(
            &original,
            &Poison::from(&DecodeError::EmptyJobName),
            "r",
            "t",
        );
        let batches = crate::domain::kafka::decode_envelope(letter.to_kafka_event()).unwrap();
        assert_eq!(batches[0].messages, vec![original]);
    }

    /// A poison message whose headers alone outgrow a small queue limit.
    fn letter_with_big_headers() -> DeadLetter {
        let mut original = message(json!("e30="));
        original.raw_headers = Some(json!([{"big": vec![65; 10_000]}]));
        DeadLetter::new(
            &original,
            &Poison::from(&DecodeError::EmptyJobName),
            "r",
            "t",
        )
    }

    #[test]
    fn a_fitted_body_says_whether_anything_was_left_out() {
        let letter = letter_with_big_headers();
        let whole = letter.fit_body(262_144).unwrap();
        assert!(!whole.truncated);
        assert_eq!(whole.text, letter.to_body(262_144).unwrap());
        let cut = letter.fit_body(8_192).unwrap();
        assert!(cut.truncated && cut.text.len() <= 8_192);
        assert_eq!(cut.text, letter.to_body(8_192).unwrap());
    }

    #[test]
    fn long_headers_are_dropped_before_the_value_is_cut() {
        let letter = letter_with_big_headers();
        let parsed: Value = serde_json::from_str(&letter.to_body(8_192).unwrap()).unwrap();
        assert_eq!(parsed["value"], "e30=");
        assert_eq!(parsed["value_truncated"], false);
        assert_eq!(parsed["headers_truncated"], true);
    }

    #[test]
    fn a_body_fits_even_when_the_error_echoes_a_huge_field_and_the_value_needs_escaping() {
        let huge_path = "\"".repeat(200_000);
        let poison = Poison::from(&DecodeError::InvalidOutputPath {
            value: huge_path.clone(),
        });
        let letter = DeadLetter::new(
            &message(json!({"output_path": huge_path})),
            &poison,
            "r",
            "t",
        );
        for limit in [4_096, 65_536, 262_144] {
            let body = letter.to_body(limit).unwrap();
            assert!(body.len() <= limit, "{} > {limit}", body.len());
            let parsed: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(parsed["offset"], 77);
            assert_eq!(parsed["error_kind"], "invalid_output_path");
            assert_eq!(parsed["value_truncated"], true);
        }
    }
}
