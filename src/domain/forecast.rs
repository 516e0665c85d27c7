//! Whether a day can be stamped in the time an invocation has left.

/// Whether a fan-out of `records` can finish in the time an invocation has
/// left, judged before it starts from the event's own count (no extra read).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Forecast {
    /// Records per second needed to finish in time; `None` without a deadline.
    pub needed_rate: Option<f64>,
    /// `None` when there is no deadline or no rate seen yet to judge by.
    pub expected_to_finish: Option<bool>,
    /// The write ceiling alone (`MAX_WRITE_RATE`) is below the needed rate.
    pub over_ceiling: bool,
}

impl Forecast {
    /// `time_left`: until new work stops; `seen_rate`: records per second of
    /// the last fan-out this execution environment ran; `ceiling`: the most
    /// writes per second the invocation may make. A first pass writes every
    /// record, so the ceiling bounds its rate.
    pub(crate) fn new(
        records: u64,
        time_left: Option<std::time::Duration>,
        seen_rate: Option<f64>,
        ceiling: Option<f64>,
    ) -> Self {
        let needed_rate = time_left.map(|left| records as f64 / left.as_secs_f64().max(1e-3));
        let over_ceiling = needed_rate
            .zip(ceiling)
            .is_some_and(|(needed, ceiling)| ceiling < needed);
        Self {
            needed_rate,
            expected_to_finish: if over_ceiling {
                Some(false)
            } else {
                needed_rate
                    .zip(seen_rate)
                    .map(|(needed, seen)| seen >= needed)
            },
            over_ceiling,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Forecast;

    #[test]
    fn the_needed_rate_is_the_records_over_the_time_left() {
        let forecast = Forecast::new(1_250_000, Some(Duration::from_secs(830)), None, None);
        let needed = forecast.needed_rate.unwrap_or_default();
        assert!((needed - 1506.02).abs() < 0.01, "{needed}");
        assert_eq!(forecast.expected_to_finish, None, "no rate seen yet");
    }

    #[test]
    fn a_seen_rate_decides_whether_it_is_expected_to_finish() {
        let left = Some(Duration::from_secs(100));
        assert_eq!(
            Forecast::new(100_000, left, Some(2_000.0), None).expected_to_finish,
            Some(true)
        );
        assert_eq!(
            Forecast::new(100_000, left, Some(900.0), None).expected_to_finish,
            Some(false)
        );
    }

    #[test]
    fn a_write_ceiling_below_the_needed_rate_says_it_cannot_finish() {
        // The seed's day at MAX_WRITE_RATE=1000 in an 830 s invocation: 1,250 s needed.
        let left = Some(Duration::from_secs(830));
        let capped = Forecast::new(1_250_000, left, None, Some(1_000.0));
        assert_eq!(
            (capped.expected_to_finish, capped.over_ceiling),
            (Some(false), true)
        );
        let roomy = Forecast::new(1_250_000, left, Some(5_000.0), Some(2_000.0));
        assert_eq!(
            (roomy.expected_to_finish, roomy.over_ceiling),
            (Some(true), false)
        );
        assert_eq!(
            Forecast::new(1_250_000, left, None, Some(2_000.0)).expected_to_finish,
            None,
            "a ceiling above the need says nothing of the table"
        );
    }

    #[test]
    fn without_a_deadline_there_is_nothing_to_judge() {
        assert_eq!(
            Forecast::new(10, None, Some(5.0), Some(1.0)),
            Forecast {
                needed_rate: None,
                expected_to_finish: None,
                over_ceiling: false,
            }
        );
    }
}
