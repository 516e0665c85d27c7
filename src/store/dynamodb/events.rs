//! What the DynamoDB adapter tells operators, one type per event (see
//! `telemetry::events` for the volume each level adds): the table's layout
//! at cold start, one line per page read at DEBUG, one per record at TRACE.

use std::fmt::Display;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use tracing::{debug, trace};

use super::ItemKey;
use crate::domain::stamp::StampResult;
use crate::telemetry::events::millis;

/// How the keys of a day will be read: what `DescribeTable` found.
pub(crate) struct TableLayoutFound<'a> {
    pub table: &'a str,
    pub hash_key: &'a str,
    pub range_key: Option<&'a str>,
    pub index: &'a str,
    /// `index` (the date index) or `scan` (no such index).
    pub reader: &'static str,
    /// The index's projection type (`KEYS_ONLY`, `INCLUDE`, `ALL`).
    pub projection: Option<&'a str>,
    /// The non-key attributes an `INCLUDE` projection names, comma-separated.
    pub projected_attributes: String,
    /// Whether the read sees `consolidation_execution`.
    pub projects_execution: bool,
    pub scan_segments: Option<u32>,
}

impl TableLayoutFound<'_> {
    pub(crate) fn emit(&self) {
        debug!(
            table = self.table,
            hash_key = self.hash_key,
            range_key = self.range_key,
            index = self.index,
            key_reader = self.reader,
            index_projection = self.projection,
            index_projected_attributes = self.projected_attributes.as_str(),
            projects_execution = self.projects_execution,
            scan_segments = self.scan_segments,
            "table layout"
        );
    }
}

/// One page of keys read from the index (`Query`) or a scan segment
/// (`Scan`). The keys themselves would be thousands per line: the count,
/// the first and the last say which stretch of the index it was.
pub(crate) struct KeyPageRead<'a> {
    pub operation: &'static str,
    pub segment: Option<u32>,
    /// Keys to stamp.
    pub keys: usize,
    /// Records the read showed already at this execution or newer.
    pub already_applied_on_read: u64,
    pub first_key: Option<&'a dyn Display>,
    pub last_key: Option<&'a dyn Display>,
    pub duration: Duration,
    /// Where the next page starts (`LastEvaluatedKey`); `None`: the last page.
    pub position: Option<&'a dyn Display>,
}

impl KeyPageRead<'_> {
    pub(crate) fn emit(&self) {
        debug!(
            operation = self.operation,
            segment = self.segment,
            keys = self.keys,
            already_applied_on_read = self.already_applied_on_read,
            first_key = self.first_key.map(tracing::field::display),
            last_key = self.last_key.map(tracing::field::display),
            read_ms = millis(self.duration),
            position = self.position.map(tracing::field::display),
            last_page = self.position.is_none(),
            "key page read"
        );
    }
}

/// One page of the count of records created after the cutoff.
pub(crate) struct CountPageRead<'a> {
    pub operation: &'static str,
    pub counted: u64,
    pub duration: Duration,
    pub position: Option<&'a dyn Display>,
}

impl CountPageRead<'_> {
    pub(crate) fn emit(&self) {
        debug!(
            operation = self.operation,
            counted = self.counted,
            read_ms = millis(self.duration),
            position = self.position.map(tracing::field::display),
            last_page = self.position.is_none(),
            "count page read"
        );
    }
}

/// TRACE: what happened to one record (written, or declined by the update's
/// condition or on read).
pub(crate) struct RecordStamped<'a> {
    pub operation: &'static str,
    pub key: &'a dyn Display,
    pub result: StampResult,
}

impl RecordStamped<'_> {
    pub(crate) fn emit(&self) {
        let result = match self.result {
            StampResult::Written => "written",
            StampResult::AlreadyApplied => "already_applied",
            StampResult::Missing => "missing",
        };
        if self.result == StampResult::Written {
            trace!(
                operation = self.operation,
                key = %self.key,
                result,
                "record written"
            );
        } else {
            trace!(
                operation = self.operation,
                key = %self.key,
                result,
                "record declined"
            );
        }
    }
}

/// A key (or a read position) for a log line: its attributes by name,
/// `chargeback_id=cb-1, created_at=2025-11-20T01:00:00.000Z`.
pub(crate) struct KeyText<'a>(pub &'a ItemKey);

impl Display for KeyText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.0.keys().collect();
        names.sort();
        for (i, name) in names.into_iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match &self.0[name] {
                AttributeValue::S(text) => write!(f, "{name}={text}")?,
                AttributeValue::N(number) => write!(f, "{name}={number}")?,
                AttributeValue::B(bytes) => write!(f, "{name}=<{} bytes>", bytes.as_ref().len())?,
                other => write!(f, "{name}={other:?}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::primitives::Blob;

    use super::*;

    #[test]
    fn a_key_is_written_as_its_attributes_sorted_by_name() {
        let key = ItemKey::from([
            (
                "created_at".to_owned(),
                AttributeValue::S("2025-11-20T01:00:00.000Z".into()),
            ),
            ("chargeback_id".to_owned(), AttributeValue::S("cb-1".into())),
        ]);
        assert_eq!(
            KeyText(&key).to_string(),
            "chargeback_id=cb-1, created_at=2025-11-20T01:00:00.000Z"
        );
        let other = ItemKey::from([
            ("n".to_owned(), AttributeValue::N("42".into())),
            ("b".to_owned(), AttributeValue::B(Blob::new(vec![1, 2, 3]))),
        ]);
        assert_eq!(KeyText(&other).to_string(), "b=<3 bytes>, n=42");
    }
}
