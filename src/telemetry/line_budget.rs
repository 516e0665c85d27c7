//! A budget of log lines per key and interval, for events that a fault can
//! multiply (retries, limit changes): the first one of a key in an interval
//! is written, the rest are counted, and the count rides on the next line of
//! that key (or on a summary when the work ends), so nothing is lost from the
//! totals while the line count stays bounded by time, not by faults.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// At most one line per key per `interval`.
pub(crate) struct LineBudget {
    interval: Duration,
    keys: Mutex<Vec<Key>>,
}

struct Key {
    name: &'static str,
    last_line: Instant,
    held_back: u64,
}

impl LineBudget {
    pub(crate) const fn new(interval: Duration) -> Self {
        Self {
            interval,
            keys: Mutex::new(Vec::new()),
        }
    }

    /// Whether a line of `key` may be written at `now`: `Some(n)` with the
    /// number of its lines held back since the last one written, or `None`
    /// when this one is held back (and counted).
    pub(crate) fn admit(&self, key: &'static str, now: Instant) -> Option<u64> {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = keys.iter_mut().find(|k| k.name == key) else {
            keys.push(Key {
                name: key,
                last_line: now,
                held_back: 0,
            });
            return Some(0);
        };
        if now.saturating_duration_since(entry.last_line) >= self.interval {
            entry.last_line = now;
            Some(std::mem::take(&mut entry.held_back))
        } else {
            entry.held_back += 1;
            None
        }
    }

    /// The keys with lines held back and not yet reported, with their
    /// counts; the counts start again from zero.
    pub(crate) fn drain(&self) -> Vec<(&'static str, u64)> {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        keys.iter_mut()
            .filter(|k| k.held_back > 0)
            .map(|k| (k.name, std::mem::take(&mut k.held_back)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_per_interval_and_the_rest_are_counted() {
        let budget = LineBudget::new(Duration::from_secs(1));
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(budget.admit("UpdateItem", at(0)), Some(0));
        assert_eq!(budget.admit("UpdateItem", at(10)), None);
        assert_eq!(budget.admit("UpdateItem", at(999)), None);
        assert_eq!(budget.admit("Query", at(500)), Some(0), "keys are apart");
        assert_eq!(
            budget.admit("UpdateItem", at(1000)),
            Some(2),
            "the next line carries what was held back"
        );
        assert_eq!(budget.admit("UpdateItem", at(1500)), None);
        assert_eq!(budget.drain(), vec![("UpdateItem", 1)]);
        assert!(budget.drain().is_empty(), "reported once");
        assert_eq!(budget.admit("UpdateItem", at(2000)), Some(0));
    }

    #[test]
    fn a_thousand_events_in_a_second_make_one_line() {
        let budget = LineBudget::new(Duration::from_secs(1));
        let start = Instant::now();
        let written = (0..1000)
            .filter(|i| {
                budget
                    .admit("UpdateItem", start + Duration::from_micros(i * 999))
                    .is_some()
            })
            .count();
        assert_eq!(written, 1);
        assert_eq!(budget.drain(), vec![("UpdateItem", 999)]);
    }
}
