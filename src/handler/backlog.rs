//! The batch's plan at run time (see [`crate::domain::backlog`]): each
//! leader publishes how it ended, each follower waits for that. A leader
//! that never runs (blocked, or its partition task ended abnormally) is
//! released, which its followers read as "not completed": they then run as
//! if alone. No follower waits on anything that waits on it: leaders never
//! wait, and followers run after every leader of their partition.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tokio::sync::watch;
use tracing::info;

use crate::domain::backlog::{DayRun, Role, plan_backlog};
use crate::domain::event::{DecodedValue, decode_value};
use crate::domain::kafka::{MessageId, PartitionBatch};
use crate::domain::outcome::MessageOutcome;

/// How a leader ended, as its followers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LeaderEnd {
    /// Its day is done at this execution or newer: followers are superseded.
    Completed { by_execution: u64 },
    /// Handed back, dead-lettered, or never run: followers run alone.
    NotCompleted,
}

/// A leader's execution, and where its end is published.
type Leader = (u64, watch::Sender<Option<LeaderEnd>>);

/// One batch's leaders and followers.
#[derive(Default)]
pub(super) struct Backlog {
    /// Each leader's execution and the channel its end is published on;
    /// removed once published or released.
    leaders: Mutex<HashMap<MessageId, Leader>>,
    followers: HashMap<MessageId, Follower>,
}

/// A follower's leader and where its end will be published.
#[derive(Clone)]
pub(super) struct Follower {
    pub(super) leader: MessageId,
    end: watch::Receiver<Option<LeaderEnd>>,
}

impl Follower {
    /// How the leader ended, once it has (or was released).
    pub(super) async fn leader_end(mut self) -> LeaderEnd {
        match self.end.wait_for(Option::is_some).await {
            Ok(end) => end.unwrap_or(LeaderEnd::NotCompleted),
            Err(_) => LeaderEnd::NotCompleted,
        }
    }
}

impl Backlog {
    /// Plans `partitions`: every valid consolidation event of a day that
    /// has another in the batch gets a role. Said in one line when any has.
    pub(super) fn plan(partitions: &[PartitionBatch]) -> Self {
        let events: Vec<(&MessageId, DayRun)> = partitions
            .iter()
            .flat_map(|p| &p.messages)
            .filter_map(|m| match decode_value(m.value.as_ref()) {
                Ok(DecodedValue::Consolidation(event)) => Some((&m.id, DayRun::from(&event))),
                _ => None,
            })
            .collect();
        let executions: HashMap<&MessageId, u64> = events
            .iter()
            .map(|(id, run)| (*id, run.execution_sequence))
            .collect();
        let roles = plan_backlog(events.iter().map(|(id, run)| (*id, run.clone())));
        let mut backlog = Self::default();
        let mut ends = HashMap::new();
        let leaders = backlog
            .leaders
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for (id, role) in &roles {
            if *role == Role::Leads {
                let (tx, rx) = watch::channel(None);
                ends.insert(id.clone(), rx);
                leaders.insert(id.clone(), (executions.get(id).copied().unwrap_or(0), tx));
            }
        }
        for (id, role) in roles {
            if let Role::Follows { leader } = role
                && let Some(end) = ends.get(&leader)
            {
                let end = end.clone();
                backlog.followers.insert(id, Follower { leader, end });
            }
        }
        if !backlog.followers.is_empty() {
            info!(
                leaders = ends.len(),
                followers = backlog.followers.len(),
                "batch planned: {} message(s) wait for a newer event of their day in this batch \
                 ({} day(s)); each is done once that event completes",
                backlog.followers.len(),
                ends.len()
            );
        }
        backlog
    }

    pub(super) fn follower(&self, id: &MessageId) -> Option<Follower> {
        self.followers.get(id).cloned()
    }

    pub(super) fn follows(&self, id: &MessageId) -> bool {
        self.followers.contains_key(id)
    }

    /// A message ended with `outcome`: if it leads, its followers learn.
    pub(super) fn finished(&self, id: &MessageId, outcome: &MessageOutcome) {
        let Some((execution, end)) = self.take(id) else {
            return;
        };
        let published = match outcome {
            MessageOutcome::Applied(_) => LeaderEnd::Completed {
                by_execution: execution,
            },
            MessageOutcome::Superseded { by_execution } => LeaderEnd::Completed {
                by_execution: *by_execution,
            },
            _ => LeaderEnd::NotCompleted,
        };
        end.send_replace(Some(published));
    }

    /// These messages will not run (or did not say how they ended): any
    /// followers of theirs run alone.
    pub(super) fn release<'a>(&self, ids: impl IntoIterator<Item = &'a MessageId>) {
        for id in ids {
            drop(self.take(id));
        }
    }

    fn take(&self, id: &MessageId) -> Option<Leader> {
        self.leaders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)
    }
}
