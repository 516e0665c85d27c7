//! The validated values an event carries: each newtype is built once, by
//! its `parse`, and cannot hold an invalid value afterwards.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Timelike, Utc};

use super::DecodeError;

/// The day whose chargebacks a run consolidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionDate(NaiveDate);

impl PartitionDate {
    pub fn parse(value: &str) -> Result<Self, DecodeError> {
        let invalid = || DecodeError::InvalidPartitionDate {
            value: value.to_owned(),
        };
        // chrono alone accepts "2025-1-5"; the contract is the zero-padded form.
        let shape_ok = value.len() == 10
            && value.bytes().enumerate().all(|(i, b)| match i {
                4 | 7 => b == b'-',
                _ => b.is_ascii_digit(),
            });
        if !shape_ok {
            return Err(invalid());
        }
        NaiveDate::parse_from_str(value, "%Y-%m-%d")
            .map(Self)
            .map_err(|_| invalid())
    }

    pub fn date(self) -> NaiveDate {
        self.0
    }
}

impl serde::Serialize for PartitionDate {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl std::fmt::Display for PartitionDate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

/// Which of the day's runs this is: `sequence` of `total`, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Execution {
    sequence: u64,
    total: u64,
}

impl Execution {
    pub fn new(sequence: i128, total: i128) -> Result<Self, DecodeError> {
        let total = u64::try_from(total)
            .ok()
            .filter(|t| *t >= 1)
            .ok_or(DecodeError::InvalidTotalExecutions { value: total })?;
        let out_of_range = DecodeError::ExecutionSequenceOutOfRange { sequence, total };
        let sequence = u64::try_from(sequence)
            .ok()
            .filter(|s| (1..=total).contains(s))
            .ok_or(out_of_range)?;
        Ok(Self { sequence, total })
    }

    pub fn sequence(self) -> u64 {
        self.sequence
    }

    pub fn total(self) -> u64 {
        self.total
    }

    /// No later run of the day will stamp what this one leaves.
    pub fn is_last(self) -> bool {
        self.sequence == self.total
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Csv,
    Parquet,
    Json,
}

impl OutputFormat {
    pub fn parse(value: &str) -> Result<Self, DecodeError> {
        match value {
            "csv" => Ok(Self::Csv),
            "parquet" => Ok(Self::Parquet),
            "json" => Ok(Self::Json),
            _ => Err(DecodeError::UnsupportedOutputFormat {
                value: value.to_owned(),
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Parquet => "parquet",
            Self::Json => "json",
        }
    }
}

/// An `s3://bucket/prefix` URI with a plausible bucket name and a non-empty prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Uri(String);

impl S3Uri {
    pub fn parse(value: &str) -> Result<Self, DecodeError> {
        let invalid = || DecodeError::InvalidOutputPath {
            value: value.to_owned(),
        };
        let rest = value.strip_prefix("s3://").ok_or_else(invalid)?;
        let (bucket, prefix) = rest.split_once('/').ok_or_else(invalid)?;
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
            && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !bucket_ok || prefix.trim().is_empty() || value.chars().any(char::is_whitespace) {
            return Err(invalid());
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// When the run completed, kept exactly as the job wrote it (that string is
/// what records carry), after checking it is an ISO-8601 timestamp. Without an
/// offset it means UTC, as `execution_time` does: a Glue job that writes
/// `datetime.utcnow().isoformat()` must not have its day dead-lettered for a
/// field that is only copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedAt {
    raw: String,
}

impl CompletedAt {
    pub fn parse(value: &str) -> Result<Self, DecodeError> {
        parse_utc(value).ok_or_else(|| DecodeError::InvalidTimestamp {
            field: "completed_at",
            value: value.to_owned(),
            hint: " (e.g. 2025-11-20T06:45:32.123456+00:00, UTC when no offset is given)",
        })?;
        Ok(Self {
            raw: value.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

/// ISO-8601's basic form has a four-digit year; chrono would also take
/// expanded years such as "+262142", whose cutoff cannot be compared as text.
fn has_four_digit_year(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.len() > 4 && bytes[..4].iter().all(u8::is_ascii_digit) && bytes[4] == b'-'
}

/// An ISO-8601 date and time as the job writes it: with an offset (converted to
/// UTC) or without one (UTC), `T` or a space between date and time.
pub(super) fn parse_utc(value: &str) -> Option<DateTime<Utc>> {
    if !has_four_digit_year(value) {
        return None;
    }
    if let Ok(with_offset) = DateTime::parse_from_rfc3339(value) {
        return Some(with_offset.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(value, format).ok())
        .map(|naive| naive.and_utc())
}

/// `execution_time` as the job writes it: usually without an offset, which means UTC.
pub(super) fn parse_execution_time(value: &str) -> Result<DateTime<Utc>, DecodeError> {
    parse_utc(value).ok_or_else(|| DecodeError::InvalidTimestamp {
        field: "execution_time",
        value: value.to_owned(),
        hint: " (e.g. 2025-11-20T06:30:00, UTC when no offset is given)",
    })
}

/// The Glue job's name: never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobName(String);

impl JobName {
    pub fn parse(value: &str) -> Result<Self, DecodeError> {
        if value.trim().is_empty() {
            return Err(DecodeError::EmptyJobName);
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Truncates to the second: the cutoff is compared as text at that precision.
pub(crate) fn floor_to_second(at: DateTime<Utc>) -> DateTime<Utc> {
    at.with_nanosecond(0).unwrap_or(at)
}
