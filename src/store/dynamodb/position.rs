//! A date-index position (a Query's `LastEvaluatedKey`) as the core and the
//! run ledger keep it, and back: each key attribute with its type.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

use super::ItemKey;
use super::layout::CREATED_AT_ATTRIBUTE;
use crate::domain::run::{IndexPosition, KeyPart};

/// The position `key` names; `None` unless it has a text `created_at` and
/// every attribute is a string, number or binary (as keys are).
pub(super) fn position_of(key: &ItemKey) -> Option<IndexPosition> {
    let created_at = key.get(CREATED_AT_ATTRIBUTE)?.as_s().ok()?.clone();
    let key = key
        .iter()
        .map(|(name, value)| {
            let part = match value {
                AttributeValue::S(s) => KeyPart::S(s.clone()),
                AttributeValue::N(n) => KeyPart::N(n.clone()),
                AttributeValue::B(b) => KeyPart::B(b.as_ref().to_vec()),
                _ => return None,
            };
            Some((name.clone(), part))
        })
        .collect::<Option<BTreeMap<_, _>>>()?;
    Some(IndexPosition { created_at, key })
}

/// The key a position names, for `ExclusiveStartKey` or the ledger's item.
pub(super) fn key_at(position: &IndexPosition) -> ItemKey {
    position
        .key
        .iter()
        .map(|(name, part)| {
            let value = match part {
                KeyPart::S(s) => AttributeValue::S(s.clone()),
                KeyPart::N(n) => AttributeValue::N(n.clone()),
                KeyPart::B(b) => AttributeValue::B(Blob::new(b.clone())),
            };
            (name.clone(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_position_goes_to_the_ledger_and_back_unchanged() {
        let key = ItemKey::from([
            ("chargeback_id".into(), AttributeValue::S("cb-7".into())),
            (
                "partition_date".into(),
                AttributeValue::S("2025-11-20".into()),
            ),
            (
                "created_at".into(),
                AttributeValue::S("2025-11-20T03:00:00.000Z".into()),
            ),
            ("n".into(), AttributeValue::N("12".into())),
            ("b".into(), AttributeValue::B(Blob::new(vec![1, 2]))),
        ]);
        let position = position_of(&key).expect("a position");
        assert_eq!(position.created_at, "2025-11-20T03:00:00.000Z");
        assert_eq!(position.key["n"], KeyPart::N("12".into()));
        assert_eq!(key_at(&position), key);
    }

    #[test]
    fn a_key_without_created_at_or_with_another_type_is_no_position() {
        let without = ItemKey::from([("chargeback_id".into(), AttributeValue::S("cb".into()))]);
        assert!(position_of(&without).is_none());
        let odd = ItemKey::from([
            ("created_at".into(), AttributeValue::S("2025".into())),
            ("flag".into(), AttributeValue::Bool(true)),
        ]);
        assert!(position_of(&odd).is_none());
    }
}
