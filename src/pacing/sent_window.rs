//! The rate writes were actually sent at, over the last second.

use std::time::{Duration, Instant};

/// The rate writes were actually sent at is measured over this long, in
/// tenths: when something else (the concurrency limit, slow answers) holds
/// the writes below the bucket's rate, a cut starts from what was sent.
const SENT_WINDOW: Duration = Duration::from_secs(1);

/// Writes taken from the bucket over the last [`SENT_WINDOW`], in ten slots.
#[derive(Debug)]
pub(super) struct SentWindow {
    slots: [u64; 10],
    /// Where the current slot began, and which it is.
    slot_started: Instant,
    current: usize,
    since: Instant,
}

impl SentWindow {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            slots: [0; 10],
            slot_started: now,
            current: 0,
            since: now,
        }
    }

    fn slot_length() -> Duration {
        SENT_WINDOW / 10
    }

    fn advance(&mut self, now: Instant) {
        let mut steps = 0;
        while now.saturating_duration_since(self.slot_started) >= Self::slot_length() && steps < 10
        {
            self.current = (self.current + 1) % 10;
            self.slots[self.current] = 0;
            self.slot_started += Self::slot_length();
            steps += 1;
        }
        if now.saturating_duration_since(self.slot_started) >= Self::slot_length() {
            // Idle for longer than the window: start it afresh.
            self.slot_started = now;
        }
    }

    pub(super) fn record(&mut self, now: Instant, writes: u64) {
        self.advance(now);
        self.slots[self.current] += writes;
    }

    /// Writes per second over the window (or over the time since it began,
    /// if shorter); `None` before a tenth of the window has passed.
    pub(super) fn rate(&mut self, now: Instant) -> Option<f64> {
        self.advance(now);
        // Nine whole slots and the current one so far.
        let window =
            SENT_WINDOW - Self::slot_length() + now.saturating_duration_since(self.slot_started);
        let covered = now.saturating_duration_since(self.since).min(window);
        (covered >= Self::slot_length())
            .then(|| self.slots.iter().sum::<u64>() as f64 / covered.as_secs_f64())
    }
}
