//! The run ledger's table: one item per (day, execution), keyed
//! `partition_date` (S) + `execution_sequence` (N), expiring through the
//! TTL attribute `expires_at`. Every write is conditional so that a run's
//! state only moves forward, whichever delivery writes first.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use tracing::debug;

use super::classify::classify;
use super::ledger_table::{LEDGER_HASH_KEY, LEDGER_RANGE_KEY};
use super::position::{key_at, position_of};
use super::usage::Usage;
use crate::domain::event::PartitionDate;
use crate::domain::failure::{ErrorClass, StoreError};
use crate::domain::run::{
    Checkpoint, Completion, IndexPosition, Recorded, Run, RunCounts, RunStart, RunStatus,
    TableIdentity, ledger_time,
};
use crate::ports::{BoxFuture, RunLedger};

/// Attempts per ledger request (the SDK's standard retries): a short
/// hiccup should not cost a full pass over a day.
const ATTEMPTS: u32 = 3;

/// A fan-out starts: the run is created, or its deliveries counted. The
/// event's fields are kept from the first delivery; a completed run stays
/// completed (`if_not_exists`).
const START: &str = "SET #status = if_not_exists(#status, :in_progress), \
     chargebacks_table = :table, chargebacks_table_id = :table_id, \
     total_executions = if_not_exists(total_executions, :total), \
     job_name = if_not_exists(job_name, :job_name), \
     output_path = if_not_exists(output_path, :output_path), \
     completed_at = if_not_exists(completed_at, :completed_at), \
     execution_time = if_not_exists(execution_time, :execution_time), \
     records_processed = if_not_exists(records_processed, :records_processed), \
     duplicates_removed = if_not_exists(duplicates_removed, :duplicates_removed), \
     started_at = if_not_exists(started_at, :now), updated_at = :now, expires_at = :expires_at \
     ADD deliveries :one";
/// The run is this table's, or new. Otherwise it is another table's (the
/// chargebacks table was recreated): it is replaced, see [`TAKE_OVER`].
const START_CONDITION: &str =
    "attribute_not_exists(partition_date) OR chargebacks_table_id = :table_id";
/// Replaces another table's run with a new one of ours, unless a delivery
/// for our table got there first.
const TAKE_OVER: &str = "chargebacks_table_id <> :table_id";

/// A run completes: status, counts and the event's fields of the delivery
/// that completed it.
const COMPLETE: &str = "SET #status = :completed, stamped = :stamped, \
     already_applied = :already_applied, gone = :gone, \
     total_executions = :total, job_name = :job_name, output_path = :output_path, \
     completed_at = :completed_at, execution_time = :execution_time, \
     records_processed = :records_processed, duplicates_removed = :duplicates_removed, \
     finished_at = :now, updated_at = :now, expires_at = :expires_at";
/// An unfinished fan-out's checkpoint, with the counts of what lies before it.
const CHECKPOINT: &str = "SET checkpoint = :checkpoint, checkpoint_created_at = :checkpoint_created_at, \
     stamped = :stamped, already_applied = :already_applied, gone = :gone, \
     checkpoint_at = :now, updated_at = :now, expires_at = :expires_at";
/// Only forward, judged on `created_at` alone (the index's order among
/// equal values is not documented), or in place of the checkpoint this pass
/// could not start after (`:replaces_created_at`, its `created_at`; the new
/// one's own when there is none, which adds nothing) while the item still
/// holds that one; and only on an in-progress run of this table and cutoff.
const CHECKPOINT_FORWARD: &str = "chargebacks_table_id = :table_id AND #status = :in_progress \
     AND execution_time = :execution_time AND (attribute_not_exists(checkpoint_created_at) \
     OR checkpoint_created_at <= :checkpoint_created_at \
     OR checkpoint_created_at = :replaces_created_at)";

/// Only forward: an in-progress run, or a completed one with an earlier
/// cutoff (the same one too, for `backfill --force`).
const COMPLETE_FORWARD: &str = "chargebacks_table_id = :table_id AND \
     (#status = :in_progress OR execution_time < :execution_time)";
const COMPLETE_FORCE: &str = "chargebacks_table_id = :table_id AND \
     (#status = :in_progress OR execution_time <= :execution_time)";

/// The run ledger's DynamoDB table.
pub struct DynamoLedger {
    client: Client,
    table: String,
    ttl_days: u32,
    usage: Usage,
}

impl DynamoLedger {
    /// The ledger table `table`, reached through `client`'s configuration
    /// (with the SDK's standard retries), its items kept `ttl_days` after
    /// their last write.
    pub fn new(client: &Client, table: impl Into<String>, ttl_days: u32) -> Self {
        let usage = Usage::default();
        let retrying = Client::from_conf(
            client
                .config()
                .to_builder()
                .retry_config(RetryConfig::standard().with_max_attempts(ATTEMPTS))
                .build(),
        );
        Self {
            client: usage.counting(&retrying),
            table: table.into(),
            ttl_days,
            usage,
        }
    }

    pub fn table_name(&self) -> &str {
        &self.table
    }

    pub fn ttl_days(&self) -> u32 {
        self.ttl_days
    }

    /// Every run recorded for `date`, as `status` shows them.
    pub async fn runs(&self, date: PartitionDate) -> Result<Vec<Run>, StoreError> {
        self.query_day(date).await
    }

    async fn query_day(&self, date: PartitionDate) -> Result<Vec<Run>, StoreError> {
        let mut runs = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("partition_date = :date")
                .expression_attribute_values(":date", AttributeValue::S(date.to_string()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| classify("Query", e))?;
            for item in page.items() {
                match run_of(item) {
                    Some(run) => runs.push(run),
                    None => debug!(ledger_table = %self.table, item = ?item,
                        "a ledger item that is not a run: ignored"),
                }
            }
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(runs),
            }
        }
    }

    async fn record_start(&self, run: &RunStart) -> Result<(), StoreError> {
        let now = Utc::now();
        let values = self.event_values(run, now);
        // Twice at most: ours, or another table's taken over, then ours.
        for _ in 0..2 {
            let started = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key_of(run)))
                .update_expression(START)
                .condition_expression(START_CONDITION)
                .expression_attribute_names("#status", "status")
                .set_expression_attribute_values(Some(values.clone()))
                .expression_attribute_values(":one", number(1))
                .send()
                .await;
            match started {
                Ok(_) => return Ok(()),
                Err(SdkError::ServiceError(service))
                    if service.err().is_conditional_check_failed_exception() => {}
                Err(other) => return Err(classify("UpdateItem", other)),
            }
            let item = self.fresh_item(run, now);
            let replaced = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression(TAKE_OVER)
                .expression_attribute_values(":table_id", string(&run.table.id))
                .send()
                .await;
            match replaced {
                Ok(_) => return Ok(()),
                Err(SdkError::ServiceError(service))
                    if service.err().is_conditional_check_failed_exception() => {}
                Err(other) => return Err(classify("PutItem", other)),
            }
        }
        Err(StoreError::new(
            ErrorClass::Transient,
            "UpdateItem",
            "the run's ledger item changed hands twice while it was being started",
        ))
    }

    async fn record_completion(
        &self,
        run: &RunStart,
        counts: &RunCounts,
        rule: Completion,
    ) -> Result<Recorded, StoreError> {
        let mut values = self.event_values(run, Utc::now());
        values.insert(":completed".into(), string(RunStatus::Completed.as_str()));
        values.insert(":stamped".into(), number(counts.stamped));
        values.insert(":already_applied".into(), number(counts.already_applied));
        values.insert(":gone".into(), number(counts.gone));
        values.remove(":table");
        let mut update = COMPLETE.to_owned();
        // A completed run needs no place to resume from.
        let mut removed = vec!["checkpoint", "checkpoint_created_at"];
        match counts.left_for_next {
            Some(left) => {
                update.push_str(", left_for_next = :left_for_next");
                values.insert(":left_for_next".into(), number(left));
            }
            None => removed.push("left_for_next"),
        }
        update.push_str(" REMOVE ");
        update.push_str(&removed.join(", "));
        let condition = match rule {
            Completion::Forward => COMPLETE_FORWARD,
            Completion::Force => COMPLETE_FORCE,
        };
        let completed = self.update_if(run, &update, condition, values).await?;
        Ok(if completed {
            Recorded::Completed
        } else {
            Recorded::AlreadyCompleted
        })
    }

    /// One conditional `UpdateItem` of `run`'s item: `Ok(false)` when the
    /// condition declined it (the ledger kept what it had).
    async fn update_if(
        &self,
        run: &RunStart,
        update: &str,
        condition: &str,
        values: HashMap<String, AttributeValue>,
    ) -> Result<bool, StoreError> {
        let updated = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_of(run)))
            .update_expression(update)
            .condition_expression(condition)
            .expression_attribute_names("#status", "status")
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match updated {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(service))
                if service.err().is_conditional_check_failed_exception() =>
            {
                Ok(false)
            }
            Err(other) => Err(classify("UpdateItem", other)),
        }
    }

    async fn record_checkpoint(
        &self,
        run: &RunStart,
        checkpoint: &Checkpoint,
        replacing: Option<&IndexPosition>,
    ) -> Result<bool, StoreError> {
        let all = self.event_values(run, Utc::now());
        let mut values: HashMap<String, AttributeValue> = all
            .into_iter()
            .filter(|(name, _)| {
                matches!(
                    name.as_str(),
                    ":table_id" | ":in_progress" | ":execution_time" | ":now" | ":expires_at"
                )
            })
            .collect();
        let counts = &checkpoint.counts;
        values.insert(
            ":checkpoint".into(),
            AttributeValue::M(key_at(&checkpoint.position)),
        );
        values.insert(
            ":checkpoint_created_at".into(),
            string(&checkpoint.position.created_at),
        );
        values.insert(":stamped".into(), number(counts.stamped));
        values.insert(":already_applied".into(), number(counts.already_applied));
        values.insert(":gone".into(), number(counts.gone));
        values.insert(
            ":replaces_created_at".into(),
            string(&replacing.unwrap_or(&checkpoint.position).created_at),
        );
        self.update_if(run, CHECKPOINT, CHECKPOINT_FORWARD, values)
            .await
    }

    /// A new in-progress run, in place of another table's.
    fn fresh_item(&self, run: &RunStart, now: DateTime<Utc>) -> HashMap<String, AttributeValue> {
        let mut item = key_of(run);
        for (name, value) in self.event_values(run, now) {
            let attribute = match name.as_str() {
                ":table" => "chargebacks_table",
                ":table_id" => "chargebacks_table_id",
                ":total" => "total_executions",
                ":in_progress" => "status",
                ":now" => "started_at",
                other => &other[1..],
            };
            item.insert(attribute.to_owned(), value);
        }
        item.insert("updated_at".into(), string(&ledger_time(now)));
        item.insert("deliveries".into(), number(1));
        item
    }

    /// The values both writes name: the event's fields, the table, the times.
    fn event_values(&self, run: &RunStart, now: DateTime<Utc>) -> HashMap<String, AttributeValue> {
        let expires_at = now.timestamp() + i64::from(self.ttl_days) * 86_400;
        HashMap::from([
            (
                ":in_progress".into(),
                string(RunStatus::InProgress.as_str()),
            ),
            (":table".into(), string(&run.table.name)),
            (":table_id".into(), string(&run.table.id)),
            (":total".into(), number(run.total_executions)),
            (":job_name".into(), string(&run.job_name)),
            (":output_path".into(), string(&run.output_path)),
            (":completed_at".into(), string(&run.completed_at)),
            (
                ":execution_time".into(),
                string(&ledger_time(run.execution_time)),
            ),
            (":records_processed".into(), number(run.records_processed)),
            (":duplicates_removed".into(), number(run.duplicates_removed)),
            (":now".into(), string(&ledger_time(now))),
            (
                ":expires_at".into(),
                AttributeValue::N(expires_at.to_string()),
            ),
        ])
    }
}

impl RunLedger for DynamoLedger {
    fn runs_of_day(&self, date: PartitionDate) -> BoxFuture<'_, Result<Vec<Run>, StoreError>> {
        Box::pin(self.query_day(date))
    }

    fn start<'a>(&'a self, run: &'a RunStart) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.record_start(run))
    }

    fn complete<'a>(
        &'a self,
        run: &'a RunStart,
        counts: &'a RunCounts,
        rule: Completion,
    ) -> BoxFuture<'a, Result<Recorded, StoreError>> {
        Box::pin(self.record_completion(run, counts, rule))
    }

    fn save_checkpoint<'a>(
        &'a self,
        run: &'a RunStart,
        checkpoint: &'a Checkpoint,
        replacing: Option<&'a IndexPosition>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.record_checkpoint(run, checkpoint, replacing))
    }

    fn requests_sent(&self) -> Option<u64> {
        Some(self.usage.requests_sent())
    }
}

fn key_of(run: &RunStart) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            LEDGER_HASH_KEY.into(),
            string(&run.partition_date.to_string()),
        ),
        (LEDGER_RANGE_KEY.into(), number(run.execution_sequence)),
    ])
}

fn string(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn number(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A ledger item as a run; `None` when it lacks what a run must have (its
/// key, status and table). Other attributes are read when present.
fn run_of(item: &HashMap<String, AttributeValue>) -> Option<Run> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let count = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<u64>().ok())
    };
    let time = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    Some(Run {
        partition_date: PartitionDate::parse(&text("partition_date")?).ok()?,
        execution_sequence: count("execution_sequence")?,
        total_executions: count("total_executions"),
        status: RunStatus::parse(&text("status")?)?,
        table: TableIdentity {
            name: text("chargebacks_table").unwrap_or_default(),
            id: text("chargebacks_table_id")?,
        },
        job_name: text("job_name"),
        output_path: text("output_path"),
        completed_at: text("completed_at"),
        execution_time: time("execution_time"),
        records_processed: count("records_processed"),
        duplicates_removed: count("duplicates_removed"),
        counts: RunCounts {
            stamped: count("stamped").unwrap_or(0),
            already_applied: count("already_applied").unwrap_or(0),
            gone: count("gone").unwrap_or(0),
            left_for_next: count("left_for_next"),
        },
        deliveries: count("deliveries").unwrap_or(0),
        started_at: time("started_at"),
        finished_at: time("finished_at"),
        updated_at: time("updated_at"),
        checkpoint: item
            .get("checkpoint")
            .and_then(|v| v.as_m().ok())
            .and_then(position_of),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn an_item_with_its_key_status_and_table_is_a_run() {
        let run = run_of(&item(&[
            ("partition_date", string("2025-11-20")),
            ("execution_sequence", number(3)),
            ("status", string("completed")),
            ("chargebacks_table_id", string("id-1")),
            ("execution_time", string("2025-11-20T12:00:00.000000Z")),
            ("stamped", number(10)),
            ("left_for_next", number(2)),
        ]))
        .expect("a run");
        assert_eq!(run.execution_sequence, 3);
        assert_eq!(run.status, RunStatus::Completed);
        assert_eq!(run.table.id, "id-1");
        assert_eq!(run.counts.stamped, 10);
        assert_eq!(run.counts.left_for_next, Some(2));
        assert_eq!(
            run.execution_time.map(ledger_time).as_deref(),
            Some("2025-11-20T12:00:00.000000Z")
        );
    }

    #[test]
    fn an_item_missing_its_status_or_table_or_with_an_unknown_status_is_not() {
        let base = [
            ("partition_date", string("2025-11-20")),
            ("execution_sequence", number(3)),
            ("status", string("completed")),
            ("chargebacks_table_id", string("id-1")),
        ];
        for missing in ["status", "chargebacks_table_id", "execution_sequence"] {
            let partial: Vec<_> = base
                .iter()
                .filter(|(k, _)| *k != missing)
                .cloned()
                .collect();
            assert!(run_of(&item(&partial)).is_none(), "without {missing}");
        }
        let mut odd = base.to_vec();
        odd[2] = ("status", string("done"));
        assert!(run_of(&item(&odd)).is_none());
    }
}
