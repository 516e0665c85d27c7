//! A batch planned before anything runs: when several valid events of one
//! day wait in the same batch (a backlog after an outage, or duplicates),
//! the newest leads and the others follow it. A follower waits for its
//! leader instead of stamping: once the leader completed, the follower is
//! done (superseded) without a fan-out, because the leader's execution and
//! cutoff are at least the follower's, so every record the follower selects
//! is at the leader's execution or newer. If the leader does not complete,
//! each follower runs as if it were alone.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::event::{ConsolidationEvent, PartitionDate};
use super::kafka::MessageId;

/// What the plan needs of one event: its day, execution and cutoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DayRun {
    pub(crate) partition_date: PartitionDate,
    pub(crate) execution_sequence: u64,
    pub(crate) execution_time: DateTime<Utc>,
}

impl From<&ConsolidationEvent> for DayRun {
    fn from(event: &ConsolidationEvent) -> Self {
        Self {
            partition_date: event.partition_date,
            execution_sequence: event.execution.sequence(),
            execution_time: event.execution_time,
        }
    }
}

impl DayRun {
    /// Whether this run, applied, did everything `older` asks: same day, an
    /// execution and a cutoff at least as new.
    pub(crate) fn covers(&self, older: &Self) -> bool {
        self.partition_date == older.partition_date
            && self.execution_sequence >= older.execution_sequence
            && self.execution_time >= older.execution_time
    }
}

/// A message's part in the batch's plan; a message without one runs alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    /// The newest event of its day in the batch; others wait for it.
    Leads,
    /// An older (or the same) event of the day `leader` leads, and covers.
    Follows { leader: MessageId },
}

/// The roles of a batch's events: per day, the newest (highest execution,
/// then latest cutoff, then first in the batch's order) leads every other
/// event of that day it covers. An event it does not cover (a lower
/// execution with a later cutoff, which a producer should never send) runs
/// alone, as does the only event of a day.
pub(crate) fn plan_backlog<'a>(
    events: impl IntoIterator<Item = (&'a MessageId, DayRun)>,
) -> HashMap<MessageId, Role> {
    let mut days: HashMap<PartitionDate, Vec<(&MessageId, DayRun)>> = HashMap::new();
    for (id, run) in events {
        days.entry(run.partition_date).or_default().push((id, run));
    }
    let mut roles = HashMap::new();
    for mut day in days.into_values() {
        if day.len() < 2 {
            continue;
        }
        // Newest first; among equals, the batch's order decides.
        day.sort_by(|(a_id, a), (b_id, b)| {
            (b.execution_sequence, b.execution_time)
                .cmp(&(a.execution_sequence, a.execution_time))
                .then_with(|| a_id.cmp(b_id))
        });
        let (leader_id, leader) = &day[0];
        let followers: Vec<&MessageId> = day[1..]
            .iter()
            .filter(|(_, run)| leader.covers(run))
            .map(|(id, _)| *id)
            .collect();
        if followers.is_empty() {
            continue;
        }
        roles.insert((*leader_id).clone(), Role::Leads);
        for id in followers {
            roles.insert(
                id.clone(),
                Role::Follows {
                    leader: (*leader_id).clone(),
                },
            );
        }
    }
    roles
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(partition: &str, offset: i64) -> MessageId {
        MessageId {
            partition: partition.into(),
            offset,
        }
    }

    fn run(date: &str, execution: u64, time: &str) -> DayRun {
        DayRun {
            partition_date: PartitionDate::parse(date).unwrap(),
            execution_sequence: execution,
            execution_time: DateTime::parse_from_rfc3339(&format!("{date}T{time}Z"))
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    #[test]
    fn the_newest_of_each_day_leads_the_older_ones_wherever_they_are() {
        // The example: partition 0 = [X1, Y5], partition 1 = [Y3, X4].
        let (x1, y5, y3, x4) = (id("t-0", 0), id("t-0", 1), id("t-1", 0), id("t-1", 1));
        let roles = plan_backlog([
            (&x1, run("2025-11-20", 1, "06:00:00")),
            (&y5, run("2025-11-21", 5, "18:00:00")),
            (&y3, run("2025-11-21", 3, "12:00:00")),
            (&x4, run("2025-11-20", 4, "18:00:00")),
        ]);
        assert_eq!(roles[&x4], Role::Leads);
        assert_eq!(roles[&y5], Role::Leads);
        assert_eq!(roles[&x1], Role::Follows { leader: x4.clone() });
        assert_eq!(roles[&y3], Role::Follows { leader: y5.clone() });
    }

    #[test]
    fn a_day_alone_in_the_batch_has_no_role() {
        let (a, b) = (id("t-0", 0), id("t-0", 1));
        let roles = plan_backlog([
            (&a, run("2025-11-20", 1, "06:00:00")),
            (&b, run("2025-11-21", 1, "06:00:00")),
        ]);
        assert!(roles.is_empty());
    }

    #[test]
    fn duplicates_follow_the_first_of_them() {
        let (first, again, later) = (id("t-0", 3), id("t-0", 7), id("t-1", 0));
        let roles = plan_backlog([
            (&again, run("2025-11-20", 2, "06:00:00")),
            (&later, run("2025-11-20", 2, "06:00:00")),
            (&first, run("2025-11-20", 2, "06:00:00")),
        ]);
        assert_eq!(roles[&first], Role::Leads);
        for follower in [&again, &later] {
            assert_eq!(
                roles[follower],
                Role::Follows {
                    leader: first.clone()
                }
            );
        }
    }

    #[test]
    fn an_older_execution_with_a_later_cutoff_is_not_covered_and_runs_alone() {
        let (newest, odd, older) = (id("t-0", 0), id("t-0", 1), id("t-0", 2));
        let roles = plan_backlog([
            (&newest, run("2025-11-20", 4, "12:00:00")),
            (&odd, run("2025-11-20", 3, "13:00:00")),
            (&older, run("2025-11-20", 2, "11:00:00")),
        ]);
        assert_eq!(roles[&newest], Role::Leads);
        assert!(!roles.contains_key(&odd));
        assert_eq!(
            roles[&older],
            Role::Follows {
                leader: newest.clone()
            }
        );
    }

    #[test]
    fn among_equal_executions_the_later_cutoff_leads() {
        let (early, late) = (id("t-0", 0), id("t-1", 0));
        let roles = plan_backlog([
            (&early, run("2025-11-20", 2, "06:00:00")),
            (&late, run("2025-11-20", 2, "07:00:00")),
        ]);
        assert_eq!(roles[&late], Role::Leads);
        assert_eq!(
            roles[&early],
            Role::Follows {
                leader: late.clone()
            }
        );
    }

    #[test]
    fn covering_needs_the_same_day_and_an_execution_and_cutoff_as_new() {
        let base = run("2025-11-20", 2, "06:00:00");
        assert!(base.covers(&base));
        assert!(run("2025-11-20", 3, "06:00:00").covers(&base));
        assert!(!run("2025-11-20", 3, "05:59:59").covers(&base));
        assert!(!run("2025-11-20", 1, "07:00:00").covers(&base));
        assert!(!run("2025-11-21", 3, "07:00:00").covers(&base));
    }
}
