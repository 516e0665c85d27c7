//! Where a message goes in a FIFO queue or topic: its message group (what
//! keeps its order) and its deduplication id (what makes a resend within the
//! deduplication window a no-op). Both are built here, from our own
//! vocabulary, so the adapters cannot send an id SQS or SNS would refuse.

use sha2::{Digest, Sha256};

use super::kafka::MessageId;

/// The longest `MessageGroupId` or `MessageDeduplicationId` SQS and SNS accept.
pub(crate) const FIFO_ID_MAX: usize = 128;
/// Hex digits of SHA-256 kept when an id has to be shortened or cleaned: 128
/// bits, so two different inputs never share an id in practice.
const HASH_DIGITS: usize = 32;
/// Separates the readable part of a shortened id from its hash. Kafka topic
/// names cannot contain it (`[a-zA-Z0-9._-]`), so a shortened id never equals
/// an untouched one.
const HASH_SEPARATOR: char = '~';

/// A valid FIFO message group or deduplication id: 1 to 128 characters, each
/// an ASCII letter, digit or punctuation mark.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct FifoId(String);

impl FifoId {
    /// `raw` itself when it is valid. Otherwise its first characters (any
    /// other character replaced by `_`), `~` and a hash of the whole `raw`:
    /// the same `raw` always gives the same id, and two different ones never
    /// share it, however long they are.
    pub(crate) fn new(raw: &str) -> Self {
        if is_valid(raw) {
            return Self(raw.to_owned());
        }
        let readable: String = raw
            .chars()
            .map(|c| if allowed(c) { c } else { '_' })
            .take(FIFO_ID_MAX - HASH_DIGITS - 1)
            .collect();
        let digest = format!("{:x}", Sha256::digest(raw.as_bytes()));
        Self(format!(
            "{readable}{HASH_SEPARATOR}{}",
            &digest[..HASH_DIGITS]
        ))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for FifoId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The characters SQS and SNS allow in the two ids.
fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || c.is_ascii_punctuation()
}

fn is_valid(raw: &str) -> bool {
    !raw.is_empty() && raw.len() <= FIFO_ID_MAX && raw.chars().all(allowed)
}

/// The two ids of one FIFO send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FifoPlacement {
    pub group: FifoId,
    pub deduplication: FifoId,
}

impl FifoPlacement {
    /// A parked Kafka message: grouped by its partition (`topic-partition`),
    /// so that a partition's parked messages keep their order, and
    /// deduplicated by `topic-partition-offset`, so that a poison message
    /// delivered again within the deduplication window is parked once.
    pub(crate) fn of_message(id: &MessageId) -> Self {
        Self {
            group: FifoId::new(&id.partition),
            deduplication: FifoId::new(&format!("{}-{}", id.partition, id.offset)),
        }
    }

    /// A failure notice of the function `function`.
    ///
    /// One group per function: a FIFO subscriber sees the function's notices
    /// in the order they were published, and functions sharing a topic never
    /// hold up each other's. Notices are rare, so one group's throughput is
    /// plenty.
    ///
    /// Deduplicated by the invocation's request id and a hash of the notice:
    /// a publish the SDK retries after a lost answer carries the same notice
    /// and is delivered once, while two different notices that share a request
    /// id (replays by `redrive` reuse the parked message's) are both delivered.
    pub(crate) fn of_notice(function: &str, request_id: &str, body: &str) -> Self {
        let digest = format!("{:x}", Sha256::digest(body.as_bytes()));
        Self {
            group: FifoId::new(function),
            deduplication: FifoId::new(&format!("{}-{}", request_id, &digest[..HASH_DIGITS])),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::outcome::FailureNotice;

    fn message(partition: &str, offset: i64) -> MessageId {
        MessageId {
            partition: partition.to_owned(),
            offset,
        }
    }

    fn notice(request_id: &str, dead_lettered: u64) -> FailureNotice {
        FailureNotice {
            request_id: request_id.to_owned(),
            dead_lettered,
            handed_back: 0,
            superseded: 0,
            messages: BTreeMap::new(),
            first_error_by_kind: BTreeMap::new(),
        }
    }

    #[test]
    fn a_valid_id_is_kept_as_it_is() {
        for raw in [
            "chargeback-consolidation-events-2",
            "a",
            "x".repeat(128).as_str(),
            "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
        ] {
            assert_eq!(FifoId::new(raw).as_str(), raw);
        }
    }

    #[test]
    fn a_parked_message_is_grouped_by_partition_and_deduplicated_by_offset() {
        let placement = FifoPlacement::of_message(&message("chargeback-events-2", 77));
        assert_eq!(placement.group.as_str(), "chargeback-events-2");
        assert_eq!(placement.deduplication.as_str(), "chargeback-events-2-77");
        let next = FifoPlacement::of_message(&message("chargeback-events-2", 78));
        assert_eq!(next.group, placement.group);
        assert_ne!(next.deduplication, placement.deduplication);
    }

    #[test]
    fn a_topic_too_long_for_an_id_gives_distinct_valid_ids() {
        // Kafka allows topic names of up to 249 characters.
        let topic = "t".repeat(249);
        let ids: Vec<FifoPlacement> = [(0, 5), (0, 6), (1, 5)]
            .iter()
            .map(|(partition, offset)| {
                FifoPlacement::of_message(&message(&format!("{topic}-{partition}"), *offset))
            })
            .collect();
        for placement in &ids {
            for id in [&placement.group, &placement.deduplication] {
                assert!(is_valid(id.as_str()), "{id}");
                assert!(id.as_str().starts_with("ttttt"), "{id}");
            }
        }
        assert_eq!(ids[0].group, ids[1].group, "one partition, one group");
        assert_ne!(ids[0].group, ids[2].group);
        assert_ne!(ids[0].deduplication, ids[1].deduplication);
        assert_ne!(ids[0].deduplication, ids[2].deduplication);
        // The same message always gets the same id, or deduplication is void.
        assert_eq!(
            FifoPlacement::of_message(&message(&format!("{topic}-0"), 5)),
            ids[0]
        );
    }

    #[test]
    fn ids_just_over_the_limit_or_with_foreign_characters_are_made_valid() {
        let long = "a".repeat(129);
        let spaced = "événements du jour";
        let ids = [
            FifoId::new(&long),
            FifoId::new(spaced),
            FifoId::new("événements du jouR"),
            FifoId::new(""),
        ];
        for id in &ids {
            assert!(is_valid(id.as_str()), "{id:?}");
        }
        assert_eq!(ids[0].as_str().len(), FIFO_ID_MAX);
        assert!(
            ids[1].as_str().starts_with("_v_nements_du_jour~"),
            "{}",
            ids[1]
        );
        assert_ne!(ids[1], ids[2], "cleaning alone would make them equal");
        assert_ne!(FifoId::new(&long), FifoId::new(&"a".repeat(130)));
    }

    fn placed(function: &str, notice: &FailureNotice) -> FifoPlacement {
        let body = notice.body().expect("a notice encodes");
        FifoPlacement::of_notice(function, &notice.request_id, &body)
    }

    #[test]
    fn a_notice_is_grouped_by_function_and_deduplicated_by_request_and_content() {
        let first = placed("consolidation-updater", &notice("req-1", 2));
        assert_eq!(first.group.as_str(), "consolidation-updater");
        assert!(first.deduplication.as_str().starts_with("req-1-"));
        assert!(is_valid(first.deduplication.as_str()));
        assert_eq!(
            placed("consolidation-updater", &notice("req-1", 2)),
            first,
            "a retried publish is the same message"
        );
        let other = placed("consolidation-updater", &notice("req-1", 3));
        assert_ne!(other.deduplication, first.deduplication);
        let long = placed(&"f".repeat(140), &notice(&"r".repeat(140), 1));
        assert!(is_valid(long.group.as_str()) && is_valid(long.deduplication.as_str()));
    }
}
