//! One `invoke` as the deadline and backlog measurements read it: whatever
//! it exited with and however many messages it held, from the product's own
//! lines (run at `LOG_LEVEL=debug` for the index pages).

use std::time::Duration;

use anyhow::anyhow;
use serde_json::Value;

use super::{EXIT_DONE, EXIT_HANDED_BACK, Finished};

/// What one `invoke` did, summed over its messages.
#[derive(Debug)]
pub(super) struct Delivery {
    pub(super) exit: i32,
    pub(super) wall: Duration,
    /// The batch summary line's `duration_ms`: from the event in hand to
    /// the response, without process start.
    pub(super) handler_ms: Option<u64>,
    /// Each message's outcome, in the order their lines came.
    pub(super) outcomes: Vec<String>,
    /// The summary's counts, handed-back messages' work included.
    pub(super) written: u64,
    pub(super) already_applied: u64,
    pub(super) missing: u64,
    /// Of `already_applied`, those the read showed stamped (the "applied"
    /// lines'; a stopped fan-out's line does not say, and on a keys-only
    /// index there are none).
    pub(super) already_applied_on_read: u64,
    /// Requests to the chargebacks table (the usage line's `dynamodb_requests`).
    pub(super) requests: u64,
    /// Requests to the run ledger; `None` without it.
    pub(super) ledger_requests: Option<u64>,
    /// Write units the server reported, table and index together.
    pub(super) reported_units: f64,
    /// Pages of keys read from the date index (the DEBUG "key page read" lines).
    pub(super) index_pages: u64,
    /// The ledger said it resumed the run after its checkpoint.
    pub(super) resumed: bool,
    /// The DEBUG "checkpoint saved" line's `done`, when one was saved.
    pub(super) checkpoint_done: Option<u64>,
    /// Why messages were handed back (the product's summary on stderr).
    pub(super) why: Option<String>,
    /// The WARN and ERROR lines' messages, but those a deadline or the
    /// missing dead-letter queue bring on purpose.
    pub(super) warnings: Vec<String>,
}

impl Delivery {
    pub(super) fn of(run: &Finished) -> anyhow::Result<Self> {
        let lines = &run.lines;
        let starts =
            |l: &Value, prefix: &str| l["message"].as_str().is_some_and(|m| m.starts_with(prefix));
        let summary = lines
            .iter()
            .find(|l| l.get("messages_superseded").is_some())
            .ok_or_else(|| anyhow!("no batch summary line (exit {}): {}", run.exit, run.log))?;
        let usage = lines
            .iter()
            .find(|l| l.get("dynamodb_requests").is_some())
            .ok_or_else(|| anyhow!("no usage line: {}", run.log))?;
        let count = |line: &Value, field: &str| line[field].as_u64().unwrap_or(0);
        Ok(Self {
            exit: run.exit,
            wall: run.wall,
            handler_ms: summary["duration_ms"].as_u64(),
            outcomes: lines
                .iter()
                .filter(|l| starts(l, "message outcome"))
                .filter_map(|l| l["outcome"].as_str().map(str::to_owned))
                .collect(),
            written: count(summary, "chargebacks_updated"),
            already_applied: count(summary, "chargebacks_already_applied"),
            missing: count(summary, "chargebacks_missing"),
            already_applied_on_read: lines
                .iter()
                .filter(|l| l["message"] == "applied")
                .map(|l| count(l, "already_applied_on_read"))
                .sum(),
            requests: count(usage, "dynamodb_requests"),
            ledger_requests: usage["ledger_requests"].as_u64(),
            reported_units: usage["table_write_units"].as_f64().unwrap_or(0.0)
                + usage["index_write_units"].as_f64().unwrap_or(0.0),
            index_pages: lines
                .iter()
                .filter(|l| l["message"] == "key page read")
                .count() as u64,
            resumed: lines
                .iter()
                .any(|l| starts(l, "resuming the run after its checkpoint")),
            checkpoint_done: lines
                .iter()
                .filter(|l| starts(l, "checkpoint saved"))
                .filter_map(|l| l["done"].as_u64())
                .next_back(),
            why: run.why(),
            warnings: lines
                .iter()
                .filter(|l| l["level"] == "WARN" || l["level"] == "ERROR")
                .map(|l| l["message"].as_str().unwrap_or_default().to_owned())
                .filter(|m| {
                    !(m.starts_with("DLQ_URL is not set")
                        || m.starts_with("stopped before done")
                        || m.starts_with("not started, handed back"))
                })
                .collect(),
        })
    }

    /// Exited done: every message applied or superseded.
    pub(super) fn done(&self) -> bool {
        self.exit == EXIT_DONE
    }

    /// Exited having handed messages back (the deadline, here).
    pub(super) fn handed_back(&self) -> bool {
        self.exit == EXIT_HANDED_BACK
    }

    /// Records examined: written, already applied (declined or skipped on
    /// read) or gone.
    pub(super) fn examined(&self) -> u64 {
        self.written + self.already_applied + self.missing
    }

    /// Conditional writes declined by their condition: attempted and billed.
    pub(super) fn declined(&self) -> u64 {
        self.already_applied
            .saturating_sub(self.already_applied_on_read)
    }

    /// Write units on the chargebacks table by DynamoDB's rule on a
    /// keys-only index: 1 per conditional write attempted (items under
    /// 1 KB), declined ones included; the gone ones' attempts too.
    pub(super) fn write_units(&self) -> u64 {
        self.written + self.declined() + self.missing
    }

    /// The outcomes, repeated ones counted: `applied,superseded×3`.
    pub(super) fn outcome(&self) -> String {
        let mut seen: Vec<(&str, usize)> = Vec::new();
        for outcome in &self.outcomes {
            match seen.iter_mut().find(|(o, _)| o == outcome) {
                Some((_, n)) => *n += 1,
                None => seen.push((outcome, 1)),
            }
        }
        if seen.is_empty() {
            return "-".to_owned();
        }
        seen.iter()
            .map(|(o, n)| match n {
                1 => (*o).to_owned(),
                n => format!("{o}×{n}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}
