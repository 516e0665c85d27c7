//! The table's layout: the attributes the adapter relies on, and how the keys
//! of a day are read, found once with `DescribeTable`.

use aws_sdk_dynamodb::types::{
    GlobalSecondaryIndexDescription, IndexStatus, KeyType, ProjectionType, TableDescription,
};
use tracing::{info, warn};

use super::DynamoStore;
use super::classify::classify;
use super::events::TableLayoutFound;
use crate::domain::failure::{ErrorClass, StoreError};

/// The attribute that records which execution stamped a record last.
pub(crate) const EXECUTION_ATTRIBUTE: &str = "consolidation_execution";
pub(crate) const PARTITION_DATE_ATTRIBUTE: &str = "partition_date";
pub(crate) const CREATED_AT_ATTRIBUTE: &str = "created_at";

/// Segments of the fallback scan. A scan reads the whole table, so it is
/// split to finish in a reasonable time; more segments than this only add
/// pagers competing with the updates for the same limiter.
const SCAN_SEGMENTS: u32 = 8;

/// How the table is laid out, read once with `DescribeTable`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableLayout {
    /// The `TableId` DynamoDB gave the table at creation (a server that
    /// reports none: the table's ARN or name and its creation time), which
    /// tells a recreated table from the one before it.
    pub table_id: String,
    pub hash_key: String,
    pub range_key: Option<String>,
    pub reader: KeyReader,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyReader {
    /// Query the date index; when it projects `consolidation_execution`,
    /// records already stamped are counted on read and never written.
    Index { projects_execution: bool },
    /// No date index, or one that cannot be read yet: a parallel scan with
    /// the same selection as a filter (slow and costly), which also sees
    /// `consolidation_execution`.
    Scan {
        segments: u32,
        /// The date index exists but is not readable (being built or
        /// deleted): its status, e.g. `CREATING, backfilling`.
        index_not_ready: Option<String>,
    },
}

/// Why an index cannot be queried yet: its status when that is neither
/// `ACTIVE` nor `UPDATING` (a throughput change, readable), with
/// `backfilling` when DynamoDB says so. A server that reports no status
/// (some local ones) is taken at its word that the index is there.
pub(crate) fn index_not_ready(index: &GlobalSecondaryIndexDescription) -> Option<String> {
    match index.index_status() {
        None | Some(IndexStatus::Active | IndexStatus::Updating) => None,
        Some(status) => Some(if index.backfilling() == Some(true) {
            format!("{}, backfilling", status.as_str())
        } else {
            status.as_str().to_owned()
        }),
    }
}

impl DynamoStore {
    pub(super) async fn describe(&self) -> Result<TableLayout, StoreError> {
        let output = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| classify("DescribeTable", e))?;
        let table = output.table().ok_or_else(|| {
            StoreError::new(
                ErrorClass::Setup,
                "DescribeTable",
                "no table description returned",
            )
        })?;
        layout_of(table, &self.table, &self.index)
    }
}

/// The table's `TableId`; without one (DynamoDB Local reports none), what
/// still changes when the table is recreated: its ARN (or name) and creation
/// time, to the fraction of a second the server gives.
fn table_id_of(table: &TableDescription, table_name: &str) -> String {
    match table.table_id() {
        Some(id) => id.to_owned(),
        None => {
            let created = table.creation_date_time();
            format!(
                "{}@{}.{:09}",
                table.table_arn().unwrap_or(table_name),
                created.map(|at| at.secs()).unwrap_or_default(),
                created.map(|at| at.subsec_nanos()).unwrap_or_default()
            )
        }
    }
}

/// The layout a table description shows, with `index` as the date index
/// (the table's name is for the log lines).
fn layout_of(
    table: &TableDescription,
    table_name: &str,
    index_name: &str,
) -> Result<TableLayout, StoreError> {
    let key_named = |kind: KeyType| {
        table
            .key_schema()
            .iter()
            .find(|k| *k.key_type() == kind)
            .map(|k| k.attribute_name().to_owned())
    };
    let hash_key = key_named(KeyType::Hash).ok_or_else(|| {
        StoreError::new(
            ErrorClass::Setup,
            "DescribeTable",
            "the table has no partition key",
        )
    })?;
    let index = table
        .global_secondary_indexes()
        .iter()
        .find(|i| i.index_name() == Some(index_name));
    let reader = match index {
        Some(index) => {
            let index_key = |kind: KeyType| {
                index
                    .key_schema()
                    .iter()
                    .find(|k| *k.key_type() == kind)
                    .map(|k| k.attribute_name())
            };
            if index_key(KeyType::Hash) != Some(PARTITION_DATE_ATTRIBUTE)
                || index_key(KeyType::Range) != Some(CREATED_AT_ATTRIBUTE)
            {
                return Err(StoreError::new(
                    ErrorClass::Setup,
                    "DescribeTable",
                    format!(
                        "index {} must have hash key {PARTITION_DATE_ATTRIBUTE} and range key \
                         {CREATED_AT_ATTRIBUTE}; it has {:?} and {:?}",
                        index_name,
                        index_key(KeyType::Hash),
                        index_key(KeyType::Range)
                    ),
                ));
            }
            let projection = index.projection();
            let projects_execution = match projection.and_then(|p| p.projection_type()) {
                Some(ProjectionType::All) => true,
                Some(ProjectionType::Include) => projection.is_some_and(|p| {
                    p.non_key_attributes()
                        .iter()
                        .any(|a| a == EXECUTION_ATTRIBUTE)
                }),
                _ => false,
            };
            if let Some(status) = index_not_ready(index) {
                warn!(
                    table = %table_name,
                    index = %index_name,
                    index_status = %status,
                    "the date index cannot be read yet (DynamoDB refuses queries while it is \
                     built): falling back to a parallel Scan of the whole table for every \
                     message until a cold start finds the index ACTIVE"
                );
                KeyReader::Scan {
                    segments: SCAN_SEGMENTS,
                    index_not_ready: Some(status),
                }
            } else {
                info!(
                    table = %table_name,
                    index = %index_name,
                    projects_execution,
                    "reading keys from the date index"
                );
                KeyReader::Index { projects_execution }
            }
        }
        None => {
            warn!(
                table = %table_name,
                index = %index_name,
                "the table has no date index: falling back to a parallel Scan of the whole \
                 table for every message, which is slow and consumes read capacity for \
                 every record of every day; create the index (see the README's table contract)"
            );
            KeyReader::Scan {
                segments: SCAN_SEGMENTS,
                index_not_ready: None,
            }
        }
    };
    let layout = TableLayout {
        table_id: table_id_of(table, table_name),
        hash_key,
        range_key: key_named(KeyType::Range),
        reader,
    };
    let projection = index.and_then(|i| i.projection());
    TableLayoutFound {
        table: table_name,
        hash_key: &layout.hash_key,
        range_key: layout.range_key.as_deref(),
        index: index_name,
        reader: match layout.reader {
            KeyReader::Index { .. } => "index",
            KeyReader::Scan { .. } => "scan",
        },
        projection: projection
            .and_then(|p| p.projection_type())
            .map(ProjectionType::as_str),
        projected_attributes: projection
            .map(|p| p.non_key_attributes().join(","))
            .unwrap_or_default(),
        projects_execution: matches!(
            layout.reader,
            KeyReader::Index {
                projects_execution: true
            } | KeyReader::Scan { .. }
        ),
        scan_segments: match layout.reader {
            KeyReader::Scan { segments, .. } => Some(segments),
            KeyReader::Index { .. } => None,
        },
    }
    .emit();
    Ok(layout)
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::types::{GlobalSecondaryIndexDescription, KeySchemaElement, Projection};

    use super::*;

    const INDEX: &str = "partition_date-created_at-index";

    fn key(name: &str, kind: KeyType) -> KeySchemaElement {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .unwrap()
    }

    fn date_index(
        hash: &str,
        range: &str,
        projection: Projection,
    ) -> GlobalSecondaryIndexDescription {
        GlobalSecondaryIndexDescription::builder()
            .index_name(INDEX)
            .key_schema(key(hash, KeyType::Hash))
            .key_schema(key(range, KeyType::Range))
            .projection(projection)
            .build()
    }

    fn table(index: Option<GlobalSecondaryIndexDescription>) -> TableDescription {
        TableDescription::builder()
            .key_schema(key("chargeback_id", KeyType::Hash))
            .key_schema(key(CREATED_AT_ATTRIBUTE, KeyType::Range))
            .set_global_secondary_indexes(index.map(|i| vec![i]))
            .build()
    }

    fn projecting(kind: ProjectionType, attributes: &[&str]) -> Projection {
        attributes
            .iter()
            .fold(Projection::builder().projection_type(kind), |p, a| {
                p.non_key_attributes(*a)
            })
            .build()
    }

    fn reader_of(projection: Projection) -> KeyReader {
        let index = date_index(PARTITION_DATE_ATTRIBUTE, CREATED_AT_ATTRIBUTE, projection);
        layout_of(&table(Some(index)), "chargebacks", INDEX)
            .unwrap()
            .reader
    }

    #[test]
    fn the_index_is_read_and_sees_the_execution_only_when_it_projects_it() {
        let layout = layout_of(
            &table(Some(date_index(
                PARTITION_DATE_ATTRIBUTE,
                CREATED_AT_ATTRIBUTE,
                projecting(ProjectionType::KeysOnly, &[]),
            ))),
            "chargebacks",
            INDEX,
        )
        .unwrap();
        assert_eq!(
            layout,
            TableLayout {
                table_id: "chargebacks@0.000000000".into(),
                hash_key: "chargeback_id".into(),
                range_key: Some(CREATED_AT_ATTRIBUTE.into()),
                reader: KeyReader::Index {
                    projects_execution: false
                },
            }
        );
        let sees = |projects_execution| KeyReader::Index { projects_execution };
        assert_eq!(reader_of(projecting(ProjectionType::All, &[])), sees(true));
        assert_eq!(
            reader_of(projecting(ProjectionType::Include, &[EXECUTION_ATTRIBUTE])),
            sees(true)
        );
        assert_eq!(
            reader_of(projecting(ProjectionType::Include, &["updated_at"])),
            sees(false)
        );
    }

    #[test]
    fn a_recreated_table_has_another_id() {
        let id =
            |table: TableDescription| layout_of(&table, "chargebacks", INDEX).unwrap().table_id;
        let described = |id: Option<&str>, created: (i64, u32)| {
            TableDescription::builder()
                .key_schema(key("chargeback_id", KeyType::Hash))
                .set_table_id(id.map(str::to_owned))
                .table_arn("arn:aws:dynamodb:sa-east-1:123456789012:table/chargebacks")
                .creation_date_time(aws_sdk_dynamodb::primitives::DateTime::from_secs_and_nanos(
                    created.0, created.1,
                ))
                .build()
        };
        assert_eq!(id(described(Some("0a1b-2c3d"), (1, 0))), "0a1b-2c3d");
        // A server without TableId: the ARN and the creation time.
        assert_eq!(
            id(described(None, (1_700_000_000, 0))),
            "arn:aws:dynamodb:sa-east-1:123456789012:table/chargebacks@1700000000.000000000"
        );
        // Deleted and created again within the same second.
        assert_ne!(
            id(described(None, (1, 120_000_000))),
            id(described(None, (1, 121_000_000)))
        );
    }

    #[test]
    fn a_table_without_the_date_index_is_scanned_in_segments() {
        let layout = layout_of(&table(None), "chargebacks", INDEX).unwrap();
        assert_eq!(
            layout.reader,
            KeyReader::Scan {
                segments: SCAN_SEGMENTS,
                index_not_ready: None,
            }
        );
    }

    /// DynamoDB refuses a `Query` on an index it is still building ("Cannot
    /// read from backfilling global secondary index"): such an index is
    /// scanned around, and its status said; `UPDATING` (a throughput change)
    /// and no status at all (local servers) are read as usual.
    #[test]
    fn an_index_being_built_or_deleted_is_scanned_around_until_it_is_active() {
        let with_status = |status: Option<IndexStatus>, backfilling: Option<bool>| {
            let index = date_index(
                PARTITION_DATE_ATTRIBUTE,
                CREATED_AT_ATTRIBUTE,
                projecting(ProjectionType::KeysOnly, &[]),
            );
            let index = GlobalSecondaryIndexDescription::builder()
                .set_index_name(index.index_name)
                .set_key_schema(index.key_schema)
                .set_projection(index.projection)
                .set_index_status(status)
                .set_backfilling(backfilling)
                .build();
            layout_of(&table(Some(index)), "chargebacks", INDEX)
                .unwrap()
                .reader
        };
        let scan = |status: &str| KeyReader::Scan {
            segments: SCAN_SEGMENTS,
            index_not_ready: Some(status.to_owned()),
        };
        assert_eq!(
            with_status(Some(IndexStatus::Creating), Some(true)),
            scan("CREATING, backfilling")
        );
        assert_eq!(
            with_status(Some(IndexStatus::Creating), Some(false)),
            scan("CREATING")
        );
        assert_eq!(
            with_status(Some(IndexStatus::Deleting), None),
            scan("DELETING")
        );
        let index = KeyReader::Index {
            projects_execution: false,
        };
        assert_eq!(with_status(Some(IndexStatus::Active), Some(false)), index);
        assert_eq!(with_status(Some(IndexStatus::Updating), None), index);
        assert_eq!(with_status(None, None), index);
    }

    #[test]
    fn an_index_keyed_otherwise_is_a_setup_failure() {
        let index = date_index(
            CREATED_AT_ATTRIBUTE,
            PARTITION_DATE_ATTRIBUTE,
            projecting(ProjectionType::All, &[]),
        );
        let error = layout_of(&table(Some(index)), "chargebacks", INDEX).unwrap_err();
        assert_eq!(
            (error.class, error.operation),
            (ErrorClass::Setup, "DescribeTable")
        );
        assert!(
            error
                .message
                .starts_with(&format!("index {INDEX} must have"))
        );
    }

    #[test]
    fn a_table_without_a_partition_key_is_a_setup_failure() {
        let error =
            layout_of(&TableDescription::builder().build(), "chargebacks", INDEX).unwrap_err();
        assert_eq!(error.class, ErrorClass::Setup);
        assert_eq!(error.message, "the table has no partition key");
    }
}
