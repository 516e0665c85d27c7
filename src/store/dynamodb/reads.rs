//! Reading keys: the records a message selects, page by page from the date
//! index (`Query`) or a scan segment (`Scan`), and the count of records
//! created after the cutoff.

use std::collections::HashMap;
use std::time::Instant;

use aws_sdk_dynamodb::types::{AttributeValue, Select};

use super::classify::classify;
use super::events::{CountPageRead, KeyPageRead, KeyText, RecordStamped};
use super::layout::{
    CREATED_AT_ATTRIBUTE, EXECUTION_ATTRIBUTE, KeyReader, PARTITION_DATE_ATTRIBUTE, TableLayout,
};
use super::{DynamoStore, ItemKey};
use crate::domain::event::PartitionDate;
use crate::domain::failure::StoreError;
use crate::domain::stamp::{KeySelection, StampResult};
use crate::ports::KeyPage;

/// Keys per page read. DynamoDB would return up to 1 MB, some 10,000 keys,
/// each a map of a few attributes once decoded: the benchmark's peak RSS grew
/// with those pages. This many keep a page near a megabyte of memory for one
/// read request per 2,000 records.
pub(super) const KEYS_PER_PAGE: i32 = 2_000;

/// The records a message selects: its day, created before the cutoff.
const SELECTION_KEY_CONDITION: &str = "#date = :date AND #created < :before";

impl DynamoStore {
    /// One page of the keys `selection` names, from `stream` (a scan
    /// segment) at `cursor`, without those the read shows already stamped.
    pub(super) async fn page_of_keys(
        &self,
        selection: &KeySelection,
        stream: u32,
        cursor: Option<ItemKey>,
    ) -> Result<KeyPage<ItemKey, ItemKey>, StoreError> {
        let layout = self.layout().await?;
        let (mut projection, mut names) = key_projection(layout);
        // Where the read can see `consolidation_execution`, records already at
        // this execution or newer are counted here and never written. A
        // FilterExpression would cost the same read units but hide the count.
        let sees_execution = match layout.reader {
            KeyReader::Index { projects_execution } => projects_execution,
            KeyReader::Scan { .. } => true,
        };
        if sees_execution {
            projection.push_str(", #execution");
            names.insert("#execution".into(), EXECUTION_ATTRIBUTE.into());
        }
        names.insert("#date".into(), PARTITION_DATE_ATTRIBUTE.into());
        names.insert("#created".into(), CREATED_AT_ATTRIBUTE.into());
        let values = HashMap::from([
            (
                ":date".to_owned(),
                AttributeValue::S(selection.partition_date.to_string()),
            ),
            (
                ":before".to_owned(),
                AttributeValue::S(selection.created_before.clone()),
            ),
        ]);
        let started = Instant::now();
        let (items, next) = match layout.reader {
            KeyReader::Index { .. } => {
                let output = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(&self.index)
                    .key_condition_expression(SELECTION_KEY_CONDITION)
                    .limit(self.keys_per_page)
                    .projection_expression(projection)
                    .set_expression_attribute_names(Some(names))
                    .set_expression_attribute_values(Some(values))
                    .set_exclusive_start_key(cursor)
                    .send()
                    .await
                    .map_err(|e| classify("Query", e))?;
                (output.items, output.last_evaluated_key)
            }
            KeyReader::Scan { segments, .. } => {
                let output = self
                    .client
                    .scan()
                    .table_name(&self.table)
                    .segment(i32::try_from(stream).unwrap_or(0))
                    .total_segments(i32::try_from(segments).unwrap_or(1))
                    .filter_expression(SELECTION_KEY_CONDITION)
                    .limit(self.keys_per_page)
                    .projection_expression(projection)
                    .set_expression_attribute_names(Some(names))
                    .set_expression_attribute_values(Some(values))
                    .set_exclusive_start_key(cursor)
                    .send()
                    .await
                    .map_err(|e| classify("Scan", e))?;
                (output.items, output.last_evaluated_key)
            }
        };
        let duration = started.elapsed();
        let operation = match layout.reader {
            KeyReader::Index { .. } => "Query",
            KeyReader::Scan { .. } => "Scan",
        };
        let mut keys = items.unwrap_or_default();
        let before = keys.len();
        if sees_execution {
            keys.retain_mut(|item| {
                let stamped = item
                    .remove(EXECUTION_ATTRIBUTE)
                    .and_then(|v| v.as_n().ok().and_then(|n| n.parse::<u64>().ok()));
                let needs = selection.needs_stamp(stamped);
                if !needs {
                    RecordStamped {
                        operation,
                        key: &KeyText(item),
                        result: StampResult::AlreadyApplied,
                    }
                    .emit();
                }
                needs
            });
        }
        let next = next.filter(|k| !k.is_empty());
        let already_applied = (before - keys.len()) as u64;
        let (first, last, position) = (
            keys.first().map(KeyText),
            keys.last().map(KeyText),
            next.as_ref().map(KeyText),
        );
        KeyPageRead {
            operation,
            segment: matches!(layout.reader, KeyReader::Scan { .. }).then_some(stream),
            keys: keys.len(),
            already_applied_on_read: already_applied,
            first_key: first.as_ref().map(|k| k as _),
            last_key: last.as_ref().map(|k| k as _),
            duration,
            position: position.as_ref().map(|k| k as _),
        }
        .emit();
        Ok(KeyPage {
            already_applied,
            keys,
            next,
        })
    }

    /// How many records of `date` were created at or after `created_from`.
    pub(super) async fn count_from(
        &self,
        date: PartitionDate,
        created_from: &str,
    ) -> Result<u64, StoreError> {
        let layout = self.layout().await?;
        let names = HashMap::from([
            ("#date".to_owned(), PARTITION_DATE_ATTRIBUTE.to_owned()),
            ("#created".to_owned(), CREATED_AT_ATTRIBUTE.to_owned()),
        ]);
        let values = HashMap::from([
            (":date".to_owned(), AttributeValue::S(date.to_string())),
            (
                ":from".to_owned(),
                AttributeValue::S(created_from.to_owned()),
            ),
        ]);
        let condition = "#date = :date AND #created >= :from";
        let mut total = 0_u64;
        let mut cursor = None;
        loop {
            let started = Instant::now();
            let (operation, count, next) = match layout.reader {
                KeyReader::Index { .. } => {
                    let output = self
                        .client
                        .query()
                        .table_name(&self.table)
                        .index_name(&self.index)
                        .key_condition_expression(condition)
                        .select(Select::Count)
                        .set_expression_attribute_names(Some(names.clone()))
                        .set_expression_attribute_values(Some(values.clone()))
                        .set_exclusive_start_key(cursor)
                        .send()
                        .await
                        .map_err(|e| classify("Query", e))?;
                    ("Query", output.count, output.last_evaluated_key)
                }
                KeyReader::Scan { .. } => {
                    let output = self
                        .client
                        .scan()
                        .table_name(&self.table)
                        .filter_expression(condition)
                        .select(Select::Count)
                        .set_expression_attribute_names(Some(names.clone()))
                        .set_expression_attribute_values(Some(values.clone()))
                        .set_exclusive_start_key(cursor)
                        .send()
                        .await
                        .map_err(|e| classify("Scan", e))?;
                    ("Scan", output.count, output.last_evaluated_key)
                }
            };
            let counted = u64::try_from(count).unwrap_or(0);
            total += counted;
            let next = next.filter(|k| !k.is_empty());
            let position = next.as_ref().map(KeyText);
            CountPageRead {
                operation,
                counted,
                duration: started.elapsed(),
                position: position.as_ref().map(|k| k as _),
            }
            .emit();
            match next {
                Some(next) => cursor = Some(next),
                None => return Ok(total),
            }
        }
    }
}

/// The projection of a record's primary key, with the names it uses.
fn key_projection(layout: &TableLayout) -> (String, HashMap<String, String>) {
    let mut names = HashMap::from([("#pk".to_owned(), layout.hash_key.clone())]);
    match &layout.range_key {
        Some(range) => {
            names.insert("#sk".to_owned(), range.clone());
            ("#pk, #sk".to_owned(), names)
        }
        None => ("#pk".to_owned(), names),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(range_key: Option<&str>) -> TableLayout {
        TableLayout {
            table_id: "t".into(),
            hash_key: "chargeback_id".into(),
            range_key: range_key.map(str::to_owned),
            reader: KeyReader::Index {
                projects_execution: false,
            },
        }
    }

    #[test]
    fn the_key_projection_names_the_range_key_only_when_there_is_one() {
        assert_eq!(
            key_projection(&layout(Some("created_at"))),
            (
                "#pk, #sk".to_owned(),
                HashMap::from([
                    ("#pk".to_owned(), "chargeback_id".to_owned()),
                    ("#sk".to_owned(), "created_at".to_owned()),
                ])
            )
        );
        assert_eq!(
            key_projection(&layout(None)),
            (
                "#pk".to_owned(),
                HashMap::from([("#pk".to_owned(), "chargeback_id".to_owned())])
            )
        );
    }
}
