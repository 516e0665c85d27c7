//! The `consolidation_completed` event the Glue job publishes, decoded from a
//! Kafka record's value. Once a [`ConsolidationEvent`] exists it is valid:
//! every field has been checked here, at the edge.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use thiserror::Error;

mod values;

pub use values::PartitionDate;
pub(crate) use values::floor_to_second;
use values::parse_execution_time;
pub(crate) use values::{CompletedAt, Execution, JobName, OutputFormat, S3Uri};

/// The only event type this function acts on; any other is skipped.
pub(crate) const CONSOLIDATION_COMPLETED: &str = "consolidation_completed";

/// What a Kafka record's value decodes to.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodedValue {
    Consolidation(ConsolidationEvent),
    /// A well-formed message of another event type: not ours, skipped.
    OtherEventType(String),
}

/// A validated consolidation run of one day's chargebacks.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsolidationEvent {
    pub partition_date: PartitionDate,
    pub execution: Execution,
    pub records_processed: u64,
    pub duplicates_removed: u64,
    pub output_files: u64,
    pub output_format: OutputFormat,
    pub output_path: S3Uri,
    /// When the run started, in UTC; records created later belong to the next run.
    pub execution_time: DateTime<Utc>,
    pub completed_at: CompletedAt,
    pub job_name: JobName,
}

/// Every way a record's value can be unusable. All of them are permanent:
/// retrying the same bytes can never succeed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("the record has no value (missing or null)")]
    MissingValue,
    #[error("the value is not valid base64: {reason}")]
    NotBase64 { reason: String },
    #[error("the value is not UTF-8: {reason}")]
    NotUtf8 { reason: String },
    #[error("the value is not JSON: {reason}")]
    NotJson { reason: String },
    #[error("the value is JSON but not an object: found {found}")]
    NotAnObject { found: &'static str },
    #[error("required field `{field}` is missing")]
    MissingField { field: &'static str },
    #[error("field `{field}` must be {expected}, found {found}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    #[error("`partition_date` {value:?} is not a calendar date YYYY-MM-DD")]
    InvalidPartitionDate { value: String },
    #[error("`total_executions` must be at least 1, found {value}")]
    InvalidTotalExecutions { value: i128 },
    #[error("`execution_sequence` {sequence} is not within 1..={total} (`total_executions`)")]
    ExecutionSequenceOutOfRange { sequence: i128, total: u64 },
    #[error("`{field}` must not be negative, found {value}")]
    NegativeCount { field: &'static str, value: i128 },
    #[error("`output_format` {value:?} is not one of csv, parquet, json")]
    UnsupportedOutputFormat { value: String },
    #[error("`output_path` {value:?} is not an s3://bucket/prefix URI")]
    InvalidOutputPath { value: String },
    #[error("`{field}` {value:?} is not an ISO-8601 timestamp{hint}")]
    InvalidTimestamp {
        field: &'static str,
        value: String,
        hint: &'static str,
    },
    #[error("`job_name` is empty")]
    EmptyJobName,
}

impl DecodeError {
    /// A stable, machine-readable name for logs, metrics and the dead-letter queue.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MissingValue => "missing_value",
            Self::NotBase64 { .. } => "not_base64",
            Self::NotUtf8 { .. } => "not_utf8",
            Self::NotJson { .. } => "not_json",
            Self::NotAnObject { .. } => "not_an_object",
            Self::MissingField { .. } => "missing_field",
            Self::WrongType { .. } => "wrong_type",
            Self::InvalidPartitionDate { .. } => "invalid_partition_date",
            Self::InvalidTotalExecutions { .. } => "invalid_total_executions",
            Self::ExecutionSequenceOutOfRange { .. } => "execution_sequence_out_of_range",
            Self::NegativeCount { .. } => "negative_count",
            Self::UnsupportedOutputFormat { .. } => "unsupported_output_format",
            Self::InvalidOutputPath { .. } => "invalid_output_path",
            Self::InvalidTimestamp { .. } => "invalid_timestamp",
            Self::EmptyJobName => "empty_job_name",
        }
    }
}

/// Decodes a Kafka record value (a base64 string of JSON, as Lambda delivers it).
pub fn decode_value(value: Option<&Value>) -> Result<DecodedValue, DecodeError> {
    let encoded = match value {
        None | Some(Value::Null) => return Err(DecodeError::MissingValue),
        Some(Value::String(text)) => text,
        Some(other) => {
            return Err(DecodeError::NotBase64 {
                reason: format!("the value is {}, not a base64 string", json_type(other)),
            });
        }
    };
    let bytes = BASE64
        .decode(encoded.trim())
        .map_err(|e| DecodeError::NotBase64 {
            reason: e.to_string(),
        })?;
    let text = String::from_utf8(bytes).map_err(|e| DecodeError::NotUtf8 {
        reason: e.utf8_error().to_string(),
    })?;
    decode_json(&text)
}

/// Decodes the JSON text of an event.
pub(crate) fn decode_json(text: &str) -> Result<DecodedValue, DecodeError> {
    let json: Value = serde_json::from_str(text).map_err(|e| DecodeError::NotJson {
        reason: e.to_string(),
    })?;
    let Value::Object(fields) = json else {
        return Err(DecodeError::NotAnObject {
            found: json_type(&json),
        });
    };
    let fields = Fields(&fields);
    let event_type = fields.string("event_type")?;
    if event_type != CONSOLIDATION_COMPLETED {
        return Ok(DecodedValue::OtherEventType(event_type.to_owned()));
    }
    ConsolidationEvent::from_fields(&fields).map(DecodedValue::Consolidation)
}

/// An event's fields as an operator gives them (e.g. to `backfill`),
/// before validation; [`ConsolidationEvent::from_parts`] applies the same
/// rules as decoding the producer's JSON.
#[derive(Debug, Clone, Copy)]
pub struct EventParts<'a> {
    pub partition_date: &'a str,
    pub execution_sequence: i128,
    pub total_executions: i128,
    pub records_processed: u64,
    pub duplicates_removed: u64,
    pub output_files: u64,
    pub output_format: &'a str,
    pub output_path: &'a str,
    pub execution_time: &'a str,
    pub completed_at: &'a str,
    pub job_name: &'a str,
}

impl ConsolidationEvent {
    /// An event from its parts, validated as a decoded one is.
    pub fn from_parts(parts: EventParts<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            partition_date: PartitionDate::parse(parts.partition_date)?,
            execution: Execution::new(parts.execution_sequence, parts.total_executions)?,
            records_processed: parts.records_processed,
            duplicates_removed: parts.duplicates_removed,
            output_files: parts.output_files,
            output_format: OutputFormat::parse(parts.output_format)?,
            output_path: S3Uri::parse(parts.output_path)?,
            execution_time: parse_execution_time(parts.execution_time)?,
            completed_at: CompletedAt::parse(parts.completed_at)?,
            job_name: JobName::parse(parts.job_name)?,
        })
    }

    fn from_fields(fields: &Fields<'_>) -> Result<Self, DecodeError> {
        let partition_date = PartitionDate::parse(fields.string("partition_date")?)?;
        let execution = Execution::new(
            fields.integer("execution_sequence")?,
            fields.integer("total_executions")?,
        )?;
        Ok(Self {
            partition_date,
            execution,
            records_processed: fields.count("records_processed")?,
            duplicates_removed: fields.count("duplicates_removed")?,
            output_files: fields.count("output_files")?,
            output_format: OutputFormat::parse(fields.string("output_format")?)?,
            output_path: S3Uri::parse(fields.string("output_path")?)?,
            execution_time: parse_execution_time(fields.string("execution_time")?)?,
            completed_at: CompletedAt::parse(fields.string("completed_at")?)?,
            job_name: JobName::parse(fields.string("job_name")?)?,
        })
    }

    /// A correlation id for a message that carries none: the same for every
    /// redelivery of the same run, so one run's story can be followed across retries.
    pub fn derived_correlation_id(&self) -> String {
        format!(
            "{}:{}:{}",
            self.job_name.as_str(),
            self.partition_date,
            self.execution.sequence()
        )
    }
}

/// Typed access to the event's JSON object, with one error per field problem.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, field: &'static str) -> Result<&Value, DecodeError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Err(DecodeError::MissingField { field }),
            Some(value) => Ok(value),
        }
    }

    fn string(&self, field: &'static str) -> Result<&str, DecodeError> {
        let value = self.get(field)?;
        value.as_str().ok_or(DecodeError::WrongType {
            field,
            expected: "a string",
            found: json_type(value),
        })
    }

    /// Any JSON integer, kept wide so that range errors can quote it exactly.
    fn integer(&self, field: &'static str) -> Result<i128, DecodeError> {
        let value = self.get(field)?;
        let wrong_type = || DecodeError::WrongType {
            field,
            expected: "an integer",
            found: json_type(value),
        };
        let Value::Number(number) = value else {
            return Err(wrong_type());
        };
        number
            .as_i64()
            .map(i128::from)
            .or_else(|| number.as_u64().map(i128::from))
            .ok_or_else(wrong_type)
    }

    fn count(&self, field: &'static str) -> Result<u64, DecodeError> {
        let value = self.integer(field)?;
        u64::try_from(value).map_err(|_| DecodeError::NegativeCount { field, value })
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a decimal number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "event_type": "consolidation_completed",
            "partition_date": "2025-11-20",
            "execution_sequence": 2,
            "total_executions": 4,
            "records_processed": 1250000,
            "duplicates_removed": 150,
            "output_files": 10,
            "output_format": "csv",
            "output_path": "s3://bucket/consolidated/chargebacks/year=2025/month=11/day=20",
            "execution_time": "2025-11-20T06:30:00",
            "completed_at": "2025-11-20T06:45:32.123456+00:00",
            "job_name": "poc-chargeback-dev-chargebacks-consolidation"
        })
    }

    fn with(field: &str, value: Value) -> String {
        let mut event = sample();
        event[field] = value;
        event.to_string()
    }

    fn without(field: &str) -> String {
        let mut event = sample();
        event.as_object_mut().map(|o| o.remove(field));
        event.to_string()
    }

    fn decode_ok(text: &str) -> ConsolidationEvent {
        match decode_json(text) {
            Ok(DecodedValue::Consolidation(event)) => event,
            other => panic!("expected a consolidation event, got {other:?}"),
        }
    }

    fn decode_err(text: &str) -> DecodeError {
        match decode_json(text) {
            Err(e) => e,
            Ok(v) => panic!("expected an error, got {v:?}"),
        }
    }

    #[test]
    fn the_seed_sample_decodes_into_every_field() {
        let event = decode_ok(&sample().to_string());
        assert_eq!(event.partition_date.to_string(), "2025-11-20");
        assert_eq!(event.execution.sequence(), 2);
        assert_eq!(event.execution.total(), 4);
        assert!(!event.execution.is_last());
        assert_eq!(event.records_processed, 1_250_000);
        assert_eq!(event.duplicates_removed, 150);
        assert_eq!(event.output_files, 10);
        assert_eq!(event.output_format, OutputFormat::Csv);
        assert_eq!(
            event.output_path.as_str(),
            "s3://bucket/consolidated/chargebacks/year=2025/month=11/day=20"
        );
        assert_eq!(
            event.execution_time.to_rfc3339(),
            "2025-11-20T06:30:00+00:00"
        );
        assert_eq!(
            event.completed_at.as_str(),
            "2025-11-20T06:45:32.123456+00:00"
        );
        assert_eq!(
            event.job_name.as_str(),
            "poc-chargeback-dev-chargebacks-consolidation"
        );
        assert_eq!(
            event.derived_correlation_id(),
            "poc-chargeback-dev-chargebacks-consolidation:2025-11-20:2"
        );
    }

    #[test]
    fn a_base64_value_decodes_like_its_json() {
        let encoded = Value::from(BASE64.encode(sample().to_string()));
        assert_eq!(
            decode_value(Some(&encoded)),
            decode_json(&sample().to_string())
        );
    }

    #[test]
    fn unknown_extra_fields_are_accepted() {
        decode_ok(&with("schema_version", json!(7)));
    }

    #[test]
    fn another_event_type_is_skipped_without_checking_its_fields() {
        let text = json!({"event_type": "consolidation_started", "partition_date": "nope"});
        assert_eq!(
            decode_json(&text.to_string()),
            Ok(DecodedValue::OtherEventType("consolidation_started".into()))
        );
    }

    #[test]
    fn a_missing_or_null_value_is_reported() {
        assert_eq!(decode_value(None), Err(DecodeError::MissingValue));
        assert_eq!(
            decode_value(Some(&Value::Null)),
            Err(DecodeError::MissingValue)
        );
    }

    #[test]
    fn a_value_that_is_not_base64_is_reported() {
        assert_eq!(
            decode_value(Some(&json!("%%%"))).map_err(|e| e.kind()),
            Err("not_base64")
        );
        assert_eq!(
            decode_value(Some(&json!(123))),
            Err(DecodeError::NotBase64 {
                reason: "the value is an integer, not a base64 string".into()
            })
        );
    }

    #[test]
    fn a_value_that_is_not_utf8_is_reported() {
        let encoded = json!(BASE64.encode([0xff, 0xfe, 0x00]));
        assert_eq!(
            decode_value(Some(&encoded)).map_err(|e| e.kind()),
            Err("not_utf8")
        );
    }

    #[test]
    fn a_value_that_is_not_json_is_reported() {
        let encoded = json!(BASE64.encode("event_type=consolidation_completed"));
        assert_eq!(
            decode_value(Some(&encoded)).map_err(|e| e.kind()),
            Err("not_json")
        );
    }

    #[test]
    fn json_that_is_not_an_object_is_reported_with_what_it_is() {
        assert_eq!(
            decode_err("[1,2]"),
            DecodeError::NotAnObject { found: "an array" }
        );
        assert_eq!(
            decode_err("\"x\""),
            DecodeError::NotAnObject { found: "a string" }
        );
    }

    #[test]
    fn an_object_without_a_string_event_type_is_a_bad_message() {
        assert_eq!(
            decode_err(&without("event_type")),
            DecodeError::MissingField {
                field: "event_type"
            }
        );
        assert_eq!(
            decode_err(&with("event_type", json!(3))),
            DecodeError::WrongType {
                field: "event_type",
                expected: "a string",
                found: "an integer"
            }
        );
    }

    #[test]
    fn every_required_field_is_reported_when_missing_or_null() {
        for field in [
            "partition_date",
            "execution_sequence",
            "total_executions",
            "records_processed",
            "duplicates_removed",
            "output_files",
            "output_format",
            "output_path",
            "execution_time",
            "completed_at",
            "job_name",
        ] {
            assert_eq!(
                decode_err(&without(field)),
                DecodeError::MissingField { field }
            );
            assert_eq!(
                decode_err(&with(field, Value::Null)),
                DecodeError::MissingField { field }
            );
        }
    }

    #[test]
    fn fields_of_the_wrong_type_are_reported() {
        assert_eq!(
            decode_err(&with("execution_sequence", json!("2"))),
            DecodeError::WrongType {
                field: "execution_sequence",
                expected: "an integer",
                found: "a string"
            }
        );
        assert_eq!(
            decode_err(&with("records_processed", json!(12.5))),
            DecodeError::WrongType {
                field: "records_processed",
                expected: "an integer",
                found: "a decimal number"
            }
        );
        assert_eq!(
            decode_err(&with("job_name", json!(["a"]))),
            DecodeError::WrongType {
                field: "job_name",
                expected: "a string",
                found: "an array"
            }
        );
    }

    #[test]
    fn partition_dates_must_be_real_zero_padded_calendar_dates() {
        for bad in [
            "2025-02-30",
            "2025-13-01",
            "2025-1-5",
            "20251120",
            "2025-11-20T00:00:00",
            "",
        ] {
            assert_eq!(
                decode_err(&with("partition_date", json!(bad))),
                DecodeError::InvalidPartitionDate { value: bad.into() },
                "{bad}"
            );
        }
        decode_ok(&with("partition_date", json!("2024-02-29")));
    }

    #[test]
    fn total_executions_must_be_at_least_one() {
        assert_eq!(
            decode_err(&with("total_executions", json!(0))),
            DecodeError::InvalidTotalExecutions { value: 0 }
        );
    }

    #[test]
    fn execution_sequence_must_be_within_one_and_total() {
        assert_eq!(
            decode_err(&with("execution_sequence", json!(0))),
            DecodeError::ExecutionSequenceOutOfRange {
                sequence: 0,
                total: 4
            }
        );
        assert_eq!(
            decode_err(&with("execution_sequence", json!(5))),
            DecodeError::ExecutionSequenceOutOfRange {
                sequence: 5,
                total: 4
            }
        );
        assert!(
            decode_ok(&with("execution_sequence", json!(4)))
                .execution
                .is_last()
        );
    }

    #[test]
    fn negative_counts_are_reported_by_field() {
        for field in ["records_processed", "duplicates_removed", "output_files"] {
            assert_eq!(
                decode_err(&with(field, json!(-1))),
                DecodeError::NegativeCount { field, value: -1 }
            );
        }
    }

    #[test]
    fn output_format_must_be_csv_parquet_or_json() {
        assert_eq!(
            decode_err(&with("output_format", json!("avro"))),
            DecodeError::UnsupportedOutputFormat {
                value: "avro".into()
            }
        );
        assert_eq!(
            decode_ok(&with("output_format", json!("parquet"))).output_format,
            OutputFormat::Parquet
        );
    }

    #[test]
    fn output_path_must_be_an_s3_uri_with_bucket_and_prefix() {
        for bad in [
            "https://bucket/x",
            "s3://bucket",
            "s3://bucket/",
            "s3:///x",
            "s3://Bad_Bucket/x",
            "s3://bucket/a b",
        ] {
            assert_eq!(
                decode_err(&with("output_path", json!(bad))),
                DecodeError::InvalidOutputPath { value: bad.into() },
                "{bad}"
            );
        }
    }

    #[test]
    fn completed_at_without_an_offset_is_accepted_as_utc_and_kept_as_received() {
        // What `datetime.utcnow().isoformat()` in the Glue job writes.
        for naive in [
            "2025-11-20T06:45:32.123456",
            "2025-11-20T06:45:32",
            "2025-11-20 06:45:32",
        ] {
            let event = decode_ok(&with("completed_at", json!(naive)));
            assert_eq!(event.completed_at.as_str(), naive, "stored as received");
            assert_eq!(
                values::parse_utc(event.completed_at.as_str())
                    .unwrap()
                    .format("%Y-%m-%dT%H:%M:%S")
                    .to_string(),
                "2025-11-20T06:45:32",
                "read as UTC"
            );
        }
        let offset = decode_ok(&with("completed_at", json!("2025-11-20T03:45:32-03:00")));
        assert_eq!(offset.completed_at.as_str(), "2025-11-20T03:45:32-03:00");
        assert_eq!(
            values::parse_utc(offset.completed_at.as_str())
                .unwrap()
                .to_rfc3339(),
            "2025-11-20T06:45:32+00:00"
        );
    }

    #[test]
    fn the_producers_type_mistakes_stay_poison() {
        assert!(matches!(
            decode_err(&with("execution_sequence", json!("2"))),
            DecodeError::WrongType {
                field: "execution_sequence",
                ..
            }
        ));
        assert_eq!(
            decode_err(&with("output_format", json!("CSV"))),
            DecodeError::UnsupportedOutputFormat {
                value: "CSV".into()
            }
        );
    }

    #[test]
    fn execution_time_without_offset_is_utc_and_with_offset_is_converted() {
        let naive = decode_ok(&with("execution_time", json!("2025-11-20T06:30:00.250")));
        assert_eq!(
            naive.execution_time.to_rfc3339(),
            "2025-11-20T06:30:00.250+00:00"
        );
        let offset = decode_ok(&with("execution_time", json!("2025-11-20T03:30:00-03:00")));
        assert_eq!(
            offset.execution_time.to_rfc3339(),
            "2025-11-20T06:30:00+00:00"
        );
    }

    #[test]
    fn timestamps_that_are_not_iso_8601_are_reported_by_field() {
        for (field, bad) in [
            ("execution_time", "yesterday"),
            ("execution_time", "2025-11-20"),
            ("completed_at", "2025-11-20 06:45"),
            ("completed_at", "20/11/2025 06:45:32"),
            ("execution_time", "+262142-12-31T23:59:59"),
            ("execution_time", "12345-01-01T00:00:00"),
            ("completed_at", "+12025-11-20T06:45:32+00:00"),
        ] {
            assert!(
                matches!(
                    decode_err(&with(field, json!(bad))),
                    DecodeError::InvalidTimestamp { field: f, value, .. } if f == field && value == bad
                ),
                "{field}={bad}"
            );
        }
    }

    #[test]
    fn an_empty_job_name_is_reported() {
        assert_eq!(
            decode_err(&with("job_name", json!("  "))),
            DecodeError::EmptyJobName
        );
    }

    #[test]
    fn every_error_kind_is_a_distinct_name() {
        let errors = [
            DecodeError::MissingValue,
            DecodeError::NotBase64 {
                reason: String::new(),
            },
            DecodeError::NotUtf8 {
                reason: String::new(),
            },
            DecodeError::NotJson {
                reason: String::new(),
            },
            DecodeError::NotAnObject { found: "" },
            DecodeError::MissingField { field: "" },
            DecodeError::WrongType {
                field: "",
                expected: "",
                found: "",
            },
            DecodeError::InvalidPartitionDate {
                value: String::new(),
            },
            DecodeError::InvalidTotalExecutions { value: 0 },
            DecodeError::ExecutionSequenceOutOfRange {
                sequence: 0,
                total: 1,
            },
            DecodeError::NegativeCount {
                field: "",
                value: 0,
            },
            DecodeError::UnsupportedOutputFormat {
                value: String::new(),
            },
            DecodeError::InvalidOutputPath {
                value: String::new(),
            },
            DecodeError::InvalidTimestamp {
                field: "",
                value: String::new(),
                hint: "",
            },
            DecodeError::EmptyJobName,
        ];
        let kinds: std::collections::HashSet<_> = errors.iter().map(DecodeError::kind).collect();
        assert_eq!(kinds.len(), errors.len());
    }
}
