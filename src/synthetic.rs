//! Synthetic chargebacks for the demo, the tests and the benchmark: a
//! deterministic, realistic-looking day, some of it created after the
//! execution time and some of it on neighbouring dates.

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeDelta, Utc};

/// One chargeback as it sits in the table before any consolidation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chargeback {
    pub chargeback_id: String,
    pub partition_date: String,
    pub created_at: String,
    pub merchant_id: String,
    pub amount_cents: u64,
    pub currency: &'static str,
    pub reason_code: &'static str,
}

/// How a synthetic day is laid out around one execution.
#[derive(Debug, Clone, Copy)]
pub struct SyntheticDay {
    pub date: NaiveDate,
    pub execution_time: DateTime<Utc>,
    /// Records of `date` created at or before the execution time.
    pub before_cutoff: u64,
    /// Records of `date` created after it: the next execution's work.
    pub after_cutoff: u64,
    /// Records of the previous and next day, which must never be touched.
    pub other_dates: u64,
}

impl SyntheticDay {
    /// A day of `total` records of `date`: 90% before the execution time, 10% after,
    /// plus 5% more spread over the neighbouring dates.
    pub fn around(execution_time: DateTime<Utc>, date: NaiveDate, total: u64) -> Self {
        let after_cutoff = total / 10;
        Self {
            date,
            execution_time,
            before_cutoff: total - after_cutoff,
            after_cutoff,
            other_dates: total / 20,
        }
    }

    pub fn total(&self) -> u64 {
        self.before_cutoff + self.after_cutoff + self.other_dates
    }

    /// Every record, lazily: a million of them are never held at once.
    pub fn chargebacks(self) -> impl Iterator<Item = Chargeback> {
        let start = self.date.and_time(NaiveTime::MIN).and_utc();
        let end_of_day = start + TimeDelta::days(1) - TimeDelta::milliseconds(1);
        // Everything up to the end of the execution's second is stamped by it.
        let cutoff_end = crate::domain::event::floor_to_second(self.execution_time)
            + TimeDelta::milliseconds(999);
        let before =
            (0..self.before_cutoff).map(move |i| (i, start, cutoff_end.min(end_of_day), self.date));
        let after = (0..self.after_cutoff).map(move |i| {
            (
                self.before_cutoff + i,
                cutoff_end + TimeDelta::milliseconds(1),
                end_of_day,
                self.date,
            )
        });
        let others = (0..self.other_dates).map(move |i| {
            let date = if i % 2 == 0 {
                self.date.checked_sub_days(Days::new(1))
            } else {
                self.date.checked_add_days(Days::new(1))
            }
            .unwrap_or(self.date);
            let day_start = date.and_time(NaiveTime::MIN).and_utc();
            let n = self.before_cutoff + self.after_cutoff + i;
            (
                n,
                day_start,
                day_start + TimeDelta::days(1) - TimeDelta::milliseconds(1),
                date,
            )
        });
        before
            .chain(after)
            .chain(others)
            .map(|(n, from, to, date)| chargeback(n, from, to, date))
    }
}

const CURRENCIES: [&str; 3] = ["BRL", "USD", "EUR"];
const REASON_CODES: [&str; 5] = ["10.4", "13.1", "4837", "4853", "13.3"];

fn chargeback(n: u64, from: DateTime<Utc>, to: DateTime<Utc>, date: NaiveDate) -> Chargeback {
    let random = splitmix64(n);
    let span = (to - from).num_milliseconds().max(0) as u64 + 1;
    let created = from + TimeDelta::milliseconds((random % span) as i64);
    Chargeback {
        chargeback_id: format!("cb-{}-{n:08}", date.format("%Y%m%d")),
        partition_date: date.format("%Y-%m-%d").to_string(),
        created_at: created.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        merchant_id: format!("m-{:05}", (random >> 20) % 20_000),
        amount_cents: 500 + (random >> 8) % 250_000,
        currency: CURRENCIES[(random >> 40) as usize % CURRENCIES.len()],
        reason_code: REASON_CODES[(random >> 44) as usize % REASON_CODES.len()],
    }
}

/// A tiny deterministic mixer: the same record number always gives the same record.
fn splitmix64(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day() -> SyntheticDay {
        let execution_time = DateTime::parse_from_rfc3339("2025-11-20T06:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        SyntheticDay::around(
            execution_time,
            NaiveDate::from_ymd_opt(2025, 11, 20).unwrap(),
            1000,
        )
    }

    #[test]
    fn the_day_splits_around_the_execution_time_and_spills_onto_other_dates() {
        let day = day();
        assert_eq!(
            (day.before_cutoff, day.after_cutoff, day.other_dates),
            (900, 100, 50)
        );
        let records: Vec<_> = day.chargebacks().collect();
        assert_eq!(records.len() as u64, day.total());
        let cutoff = "2025-11-20T06:30:01";
        let on_day = |r: &&Chargeback| r.partition_date == "2025-11-20";
        assert_eq!(
            records
                .iter()
                .filter(on_day)
                .filter(|r| r.created_at.as_str() < cutoff)
                .count(),
            900
        );
        assert_eq!(
            records
                .iter()
                .filter(on_day)
                .filter(|r| r.created_at.as_str() >= cutoff)
                .count(),
            100
        );
        assert!(
            records
                .iter()
                .filter(on_day)
                .all(|r| r.created_at.starts_with("2025-11-20T"))
        );
        assert_eq!(
            records
                .iter()
                .filter(|r| r.partition_date == "2025-11-19")
                .count(),
            25
        );
        assert_eq!(
            records
                .iter()
                .filter(|r| r.partition_date == "2025-11-21")
                .count(),
            25
        );
    }

    #[test]
    fn ids_are_unique_and_records_are_deterministic() {
        let first: Vec<_> = day().chargebacks().collect();
        let ids: std::collections::HashSet<_> = first.iter().map(|r| &r.chargeback_id).collect();
        assert_eq!(ids.len(), first.len());
        assert_eq!(first, day().chargebacks().collect::<Vec<_>>());
    }
}
