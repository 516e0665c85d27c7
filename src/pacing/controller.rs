//! The pure rate logic: a token bucket whose rate slow-starts, is cut by
//! throttling to just below what the table admits, and probes upward again.

use std::time::{Duration, Instant};

use super::sent_window::SentWindow;

/// Where an invocation's rate starts: two batches a second, not a first
/// wave of every request the concurrency limit allows.
pub(crate) const START_RATE: f64 = 50.0;
/// No cut goes below this (or below `MAX_WRITE_RATE`, when that is lower).
pub(crate) const FLOOR_RATE: f64 = 5.0;
/// No throttling answer, and no write admitted, for this long: the
/// invocation is making no progress and a throttled write gives up.
pub(crate) const STALL_AFTER: Duration = Duration::from_secs(60);
/// A warm process slow-starts up to the rate it learned if its last cut is
/// this recent; after that the table's capacity or its other writers may
/// have changed, and it starts afresh.
pub(crate) const REMEMBER_FOR: Duration = Duration::from_secs(600);

/// Slow start: each admitted write adds this much to the rate, so that it
/// grows e-fold every eighth of a second (doubles in about 90 ms) while the
/// bucket is what holds writes back.
const SLOW_START_GAIN: f64 = 8.0;
/// Probing after a cut: 2 % a second at first...
const PROBE_GAIN: f64 = 0.02;
/// ...twice as fast for every 2 s without a throttle, so that a cut that
/// went too deep (a burst of throttling that was not about capacity) is won
/// back within 15 s even from the floor, while a rate near the table's
/// limit creeps.
const PROBE_DOUBLING: Duration = Duration::from_secs(2);
/// The first cut, ending the slow start, goes at least this deep.
const SLOW_START_EXIT: f64 = 0.5;
/// A cut sets the rate this far below the estimate of what the table admits.
const BELOW_ESTIMATE: f64 = 0.95;
/// No one cut takes the rate below this share of what it was: an estimate
/// from a burst of throttling (a partition splitting) can be far too low,
/// while a slow start's overshoot can be ten times the capacity (two cuts).
const DEEPEST_CUT: f64 = 0.25;
/// Answers to writes sent at the current rate needed before a throttle cuts
/// it: writes arrive at the table in bunches, and the admitted share of
/// fewer (two batches, or fifty single updates) says too little.
const MIN_SAMPLE: u64 = 50;
/// Fewer answers do when the table admitted less than this share of them:
/// the rate is far above the table's, and every answer waited for is
/// another throttled write.
const CLEAR_SAMPLE: u64 = 25;
const CLEAR_SHARE: f64 = 0.2;
/// The bucket holds this long's worth of writes: enough to smooth out the
/// timer's granularity, too little to be a burst.
const BUCKET_SECONDS: f64 = 0.05;
/// The rate grows only while the bucket held writes back this recently: a
/// rate nothing used says nothing about the table.
const BOUND_RECENTLY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Growing fast until the first throttle, the remembered rate or the ceiling.
    SlowStart,
    /// Creeping up from a cut, until the next throttle.
    Probing,
}

/// The rate a write was sent at, and when: answers to writes sent before a
/// cut do not cut again, nor do those to writes sent while the table was
/// still answering writes sent before it (they met a table the faster
/// writes had just emptied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    epoch: u64,
    sent_at: Instant,
}

impl Ticket {
    /// A ticket no cut will ever count: for writes sent without pacing.
    pub(super) fn unpaced(sent_at: Instant) -> Self {
        Self { epoch: 0, sent_at }
    }
}

/// A cut of the rate, for the log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Cut {
    pub old: f64,
    pub new: f64,
    /// Of the writes answered at the old rate, the share the table admitted.
    pub admitted_share: f64,
}

/// The rate and its bucket, as plain state over the caller's clock.
#[derive(Debug)]
pub(crate) struct RateController {
    ceiling: Option<f64>,
    floor: f64,
    rate: f64,
    /// Negative while the last admitted writes are still being paid for.
    tokens: f64,
    refilled_at: Instant,
    phase: Phase,
    /// Slow start ends here: the rate learned by an earlier invocation.
    threshold: Option<f64>,
    epoch: u64,
    epoch_admitted: u64,
    epoch_throttled: u64,
    /// When the last answer to a write sent before the current rate came.
    old_answer_at: Instant,
    probing_since: Instant,
    last_cut: Option<Instant>,
    bound_at: Option<Instant>,
    invocation_started: Instant,
    last_admitted: Option<Instant>,
    /// The lowest rate a cut set in this invocation.
    lowest: Option<f64>,
    sent: SentWindow,
}

impl RateController {
    /// `ceiling`: `MAX_WRITE_RATE`, the most the rate may ever be.
    pub(crate) fn new(ceiling: Option<u32>, now: Instant) -> Self {
        let ceiling = ceiling.map(f64::from);
        let mut controller = Self {
            ceiling,
            floor: ceiling.map_or(FLOOR_RATE, |c| c.min(FLOOR_RATE)),
            rate: START_RATE,
            tokens: 0.0,
            refilled_at: now,
            phase: Phase::SlowStart,
            threshold: None,
            epoch: 0,
            epoch_admitted: 0,
            epoch_throttled: 0,
            old_answer_at: now,
            probing_since: now,
            last_cut: None,
            bound_at: None,
            invocation_started: now,
            last_admitted: None,
            lowest: None,
            sent: SentWindow::new(now),
        };
        controller.begin_invocation(now);
        controller
    }

    /// A new invocation: slow start again, up to the rate learned by the
    /// last one if it was cut within [`REMEMBER_FOR`].
    pub(crate) fn begin_invocation(&mut self, now: Instant) {
        self.threshold = self
            .last_cut
            .filter(|at| now.saturating_duration_since(*at) < REMEMBER_FOR)
            .map(|_| self.rate);
        self.rate = self.capped(START_RATE);
        self.tokens = 0.0;
        self.refilled_at = now;
        self.phase = Phase::SlowStart;
        self.next_epoch();
        self.bound_at = None;
        self.invocation_started = now;
        self.last_admitted = None;
        self.lowest = None;
        self.sent = SentWindow::new(now);
    }

    /// Writes per second the bucket lets through now.
    pub(crate) fn rate(&self) -> f64 {
        self.rate
    }

    /// The lowest rate a cut set in this invocation, if any did.
    pub(crate) fn lowest(&self) -> Option<f64> {
        self.lowest
    }

    #[cfg(test)]
    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// Takes `writes` tokens, or says how long until there are some. A
    /// request goes out whenever the bucket is not in debt, whatever its
    /// size: below 25 writes/s a whole batch still goes, and is paid for
    /// before the next one.
    pub(crate) fn try_take(&mut self, now: Instant, writes: usize) -> Result<Ticket, Duration> {
        self.refill(now);
        if self.tokens >= 0.0 {
            self.tokens -= writes as f64;
            self.sent.record(now, writes as u64);
            return Ok(Ticket {
                epoch: self.epoch,
                sent_at: now,
            });
        }
        self.bound_at = Some(now);
        Err(Duration::from_secs_f64(-self.tokens / self.rate))
    }

    /// What the table answered to writes sent with `ticket`: `admitted`
    /// (written or declined by their condition: either way the table took
    /// them) and `throttled`. Returns the cut, if this made one.
    pub(crate) fn on_answers(
        &mut self,
        now: Instant,
        ticket: Ticket,
        admitted: u64,
        throttled: u64,
    ) -> Option<Cut> {
        if admitted > 0 {
            self.last_admitted = Some(now);
        }
        if ticket.epoch != self.epoch {
            self.old_answer_at = self.old_answer_at.max(now);
            return None;
        }
        if ticket.sent_at < self.old_answer_at {
            // Settling: sent while writes at the old rate still reached the table.
            return None;
        }
        if throttled > 0 && self.epoch_throttled == 0 {
            // The share is measured from the first throttle on: before it,
            // the table was still spending what it had saved up.
            self.epoch_admitted = 0;
        }
        self.epoch_admitted += admitted;
        self.epoch_throttled += throttled;
        if self.epoch_throttled > 0 {
            // No growth while a cut is pending. A share this low cuts as
            // deep as a cut goes whatever a bigger sample would say.
            let answered = self.epoch_admitted + self.epoch_throttled;
            let clearly_over = answered >= CLEAR_SAMPLE
                && (self.epoch_admitted as f64) < CLEAR_SHARE * answered as f64;
            return (answered >= MIN_SAMPLE || clearly_over).then(|| self.cut(now));
        }
        self.grow(now, admitted);
        None
    }

    /// Whether no write was admitted for [`STALL_AFTER`] (counted from the
    /// invocation's start when none was yet).
    pub(crate) fn stalled(&self, now: Instant) -> bool {
        let since = self.last_admitted.map_or(self.invocation_started, |at| {
            at.max(self.invocation_started)
        });
        now.saturating_duration_since(since) >= STALL_AFTER
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        let capacity = (self.rate * BUCKET_SECONDS).max(1.0);
        self.tokens = (self.tokens + elapsed * self.rate).min(capacity);
        self.refilled_at = now;
    }

    fn bound(&self, now: Instant) -> bool {
        self.bound_at
            .is_some_and(|at| now.saturating_duration_since(at) < BOUND_RECENTLY)
    }

    fn grow(&mut self, now: Instant, admitted: u64) {
        if !self.bound(now) || admitted == 0 {
            return;
        }
        let gain = match self.phase {
            Phase::SlowStart => SLOW_START_GAIN,
            Phase::Probing => {
                let quiet = now.saturating_duration_since(self.probing_since);
                (PROBE_GAIN * 2_f64.powf(quiet.as_secs_f64() / PROBE_DOUBLING.as_secs_f64()))
                    .min(SLOW_START_GAIN)
            }
        };
        // The bucket's refill so far was at the old rate.
        self.refill(now);
        self.rate = self.capped(self.rate + gain * admitted as f64);
        if self.phase == Phase::SlowStart
            && let Some(threshold) = self.threshold
            && self.rate >= threshold
        {
            self.rate = self.capped(threshold);
            self.phase = Phase::Probing;
            self.probing_since = now;
        }
    }

    fn cut(&mut self, now: Instant) -> Cut {
        let answered = (self.epoch_admitted + self.epoch_throttled) as f64;
        let admitted_share = self.epoch_admitted as f64 / answered;
        let old = self.rate;
        // The writes went out at the bucket's rate, or slower when
        // something else (the concurrency limit, slow answers) held them.
        let sent_at = match self.phase {
            // Growing fast: the last second's average lags far behind.
            Phase::SlowStart => old,
            Phase::Probing => self.sent.rate(now).map_or(old, |sent| sent.min(old)),
        };
        let mut estimate = sent_at * admitted_share * BELOW_ESTIMATE;
        if self.phase == Phase::SlowStart {
            // The first throttle comes as the table's savings run out, so its
            // sample overstates what the table admits; and one doubling ago
            // everything was still admitted: at least halve, as TCP does.
            estimate = estimate.min(old * SLOW_START_EXIT);
        }
        self.refill(now);
        self.rate = estimate.max(old * DEEPEST_CUT).max(self.floor).min(old);
        self.lowest = Some(self.lowest.map_or(self.rate, |l| l.min(self.rate)));
        self.phase = Phase::Probing;
        self.probing_since = now;
        self.last_cut = Some(now);
        self.next_epoch();
        Cut {
            old,
            new: self.rate,
            admitted_share,
        }
    }

    fn next_epoch(&mut self) {
        self.epoch += 1;
        self.epoch_admitted = 0;
        self.epoch_throttled = 0;
    }

    fn capped(&self, rate: f64) -> f64 {
        self.ceiling.map_or(rate, |ceiling| rate.min(ceiling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake clock: the controller only ever sees the instants it is given.
    struct Clock(Instant);

    impl Clock {
        fn advance(&mut self, by: Duration) -> Instant {
            self.0 += by;
            self.0
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A table that admits `capacity` writes/s from a bucket holding one
    /// second of them (at least 25), as the benchmark's proxy does.
    struct Table {
        capacity: f64,
        tokens: f64,
        at: Instant,
    }

    impl Table {
        fn new(capacity: f64, at: Instant) -> Self {
            Self {
                capacity,
                tokens: capacity.max(25.0),
                at,
            }
        }

        /// How many of `writes` it admits at `now`.
        fn answer(&mut self, now: Instant, writes: u64) -> u64 {
            let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.capacity).min(self.capacity.max(25.0));
            self.at = now;
            let admitted = (self.tokens.floor() as u64).min(writes);
            self.tokens -= admitted as f64;
            admitted
        }
    }

    /// Sends requests of `batch` writes as fast as the controller allows for
    /// `seconds`, each answered after `latency`, against a table of
    /// `capacity`; every throttled write is sent again. Returns the writes
    /// admitted after the first `warm_up` seconds per second, and the
    /// throttled writes per admitted write over the whole run.
    fn simulate(capacity: f64, batch: u64, seconds: u64, warm_up: u64) -> (f64, f64) {
        let latency = ms(5);
        let step = ms(1);
        let mut clock = Clock(Instant::now());
        let start = clock.0;
        let mut controller = RateController::new(None, start);
        let mut table = Table::new(capacity, start);
        let mut in_flight: Vec<(Instant, Ticket, u64)> = Vec::new();
        let (mut admitted_total, mut throttled_total, mut admitted_late) = (0, 0, 0);
        while clock.0 < start + Duration::from_secs(seconds) {
            let now = clock.advance(step);
            // Up to 64 requests in flight.
            while in_flight.len() < 64 {
                match controller.try_take(now, batch as usize) {
                    Ok(ticket) => {
                        let admitted = table.answer(now, batch);
                        in_flight.push((now + latency, ticket, admitted));
                    }
                    Err(_) => break,
                }
            }
            in_flight.retain(|(due, ticket, admitted)| {
                if *due > now {
                    return true;
                }
                controller.on_answers(now, *ticket, *admitted, batch - admitted);
                admitted_total += admitted;
                throttled_total += batch - admitted;
                if now >= start + Duration::from_secs(warm_up) {
                    admitted_late += admitted;
                }
                false
            });
        }
        (
            admitted_late as f64 / (seconds - warm_up) as f64,
            throttled_total as f64 / admitted_total as f64,
        )
    }

    #[test]
    fn under_a_capacity_limit_the_rate_settles_just_below_it_with_little_throttling() {
        for (capacity, batch) in [
            (100.0, 25),
            (500.0, 25),
            (1_000.0, 25),
            (5_000.0, 25),
            (100.0, 1),
            (1_000.0, 1),
            (2_000.0, 1),
        ] {
            let (reached, throttled_per_write) = simulate(capacity, batch, 60, 10);
            // Above the capacity only by what the table's bucket saved up.
            assert!(
                reached >= 0.93 * capacity && reached <= 1.03 * capacity,
                "capacity {capacity}, batch {batch}: reached {reached:.0}/s"
            );
            assert!(
                throttled_per_write <= 0.05,
                "capacity {capacity}, batch {batch}: {throttled_per_write:.3} throttled per write"
            );
        }
    }

    #[test]
    fn slow_start_begins_low_and_doubles_quickly_while_writes_are_admitted() {
        let mut clock = Clock(Instant::now());
        let mut controller = RateController::new(None, clock.0);
        assert_eq!(controller.rate(), START_RATE);
        // The first request goes at once; the second waits for the first's tokens.
        let ticket = controller.try_take(clock.0, 25).unwrap();
        let wait = controller.try_take(clock.0, 25).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        controller.on_answers(clock.advance(ms(5)), ticket, 25, 0);
        assert_eq!(controller.rate(), START_RATE + SLOW_START_GAIN * 25.0);
        assert_eq!(controller.phase(), Phase::SlowStart);
    }

    #[test]
    fn a_rate_nothing_waits_for_does_not_grow() {
        let mut clock = Clock(Instant::now());
        let mut controller = RateController::new(None, clock.0);
        for _ in 0..100 {
            let now = clock.advance(Duration::from_secs(1));
            let ticket = controller.try_take(now, 1).unwrap();
            controller.on_answers(now, ticket, 1, 0);
        }
        assert_eq!(controller.rate(), START_RATE, "demand never met the rate");
    }

    #[test]
    fn a_cut_follows_the_admitted_share_once_and_only_for_writes_sent_at_the_current_rate() {
        let mut clock = Clock(Instant::now());
        let mut controller = RateController::new(None, clock.0);
        controller.rate = 4_000.0;
        let first = controller.try_take(clock.0, 100).unwrap();
        let second = controller.try_take(clock.advance(ms(30)), 100).unwrap();
        let now = clock.advance(ms(5));
        let cut = controller.on_answers(now, first, 40, 60).unwrap();
        assert_eq!(cut.old, 4_000.0);
        assert!((cut.admitted_share - 0.4).abs() < 1e-9);
        assert!((controller.rate() - 4_000.0 * 0.4 * BELOW_ESTIMATE).abs() < 1e-9);
        assert_eq!(
            controller.on_answers(now, second, 0, 100),
            None,
            "sent before the cut: no second cut"
        );
        assert_eq!(controller.phase(), Phase::Probing);
    }

    #[test]
    fn writes_sent_while_the_old_rate_was_still_answered_do_not_cut_again() {
        let mut clock = Clock(Instant::now());
        let mut controller = RateController::new(None, clock.0);
        controller.rate = 4_000.0;
        let old = controller.try_take(clock.0, 100).unwrap();
        let cut_by = controller.try_take(clock.advance(ms(30)), 100).unwrap();
        controller
            .on_answers(clock.advance(ms(5)), cut_by, 0, 100)
            .unwrap();
        let rate = controller.rate();
        // Sent at the new rate, but before the last answer at the old one.
        let early = controller.try_take(clock.advance(ms(100)), 100).unwrap();
        controller.on_answers(clock.advance(ms(5)), old, 0, 100);
        assert_eq!(
            controller.on_answers(clock.advance(ms(5)), early, 0, 100),
            None
        );
        assert_eq!(controller.rate(), rate, "settling: no second cut");
        let late = controller
            .try_take(clock.advance(Duration::from_secs(1)), 100)
            .unwrap();
        assert!(
            controller
                .on_answers(clock.advance(ms(5)), late, 0, 100)
                .is_some()
        );
        assert!(controller.rate() < rate);
    }

    #[test]
    fn the_cut_that_ends_the_slow_start_at_least_halves() {
        let mut clock = Clock(Instant::now());
        let mut controller = RateController::new(None, clock.0);
        controller.rate = 8_000.0;
        assert_eq!(controller.phase(), Phase::SlowStart);
        let ticket = controller.try_take(clock.0, 100).unwrap();
        let cut = controller
            .on_answers(clock.advance(ms(5)), ticket, 95, 5)
            .unwrap();
        assert_eq!(cut.new, 4_000.0, "{cut:?}");
    }

    #[test]
    fn one_throttled_answer_waits_for_enough_of_a_sample() {
        let mut clock = Clock(Instant::now());
        let mut controller = RateController::new(None, clock.0);
        controller.rate = 1_000.0;
        controller.phase = Phase::Probing;
        let tickets: Vec<_> = (0..120)
            .map(|_| controller.try_take(clock.advance(ms(1)), 1).unwrap())
            .collect();
        assert_eq!(controller.on_answers(clock.0, tickets[0], 0, 1), None);
        for ticket in &tickets[1..49] {
            assert_eq!(controller.on_answers(clock.0, *ticket, 1, 0), None);
        }
        assert_eq!(
            controller.rate(),
            1_000.0,
            "no growth while a cut is pending"
        );
        let cut = controller.on_answers(clock.0, tickets[49], 1, 0).unwrap();
        assert!((cut.admitted_share - 0.98).abs() < 1e-9);
        let expected = 1_000.0 * 0.98 * BELOW_ESTIMATE;
        assert!(
            (controller.rate() - expected).abs() < 0.02 * expected,
            "{}",
            controller.rate()
        );
    }

    #[test]
    fn the_share_is_measured_from_the_first_throttle_on() {
        let mut clock = Clock(Instant::now());
        let mut controller = RateController::new(None, clock.0);
        controller.rate = 10_000.0;
        controller.phase = Phase::Probing;
        // A long quiet stretch at this rate: the table spends its savings.
        for _ in 0..1_000 {
            let ticket = controller.try_take(clock.advance(ms(3)), 25).unwrap();
            assert_eq!(controller.on_answers(clock.0, ticket, 25, 0), None);
        }
        let rate = controller.rate();
        let ticket = controller.try_take(clock.advance(ms(3)), 100).unwrap();
        let cut = controller.on_answers(clock.0, ticket, 40, 60).unwrap();
        assert!((cut.admitted_share - 0.4).abs() < 1e-9, "{cut:?}");
        // The writes went out at 25 per 3 ms, below the bucket's rate: the
        // cut starts from what was sent, not from the rate nothing used.
        let sent = 25.0 / 0.003;
        assert!(rate > sent);
        let expected = sent * 0.4 * BELOW_ESTIMATE;
        assert!(
            (controller.rate() - expected).abs() < 0.02 * expected,
            "{} vs {expected}",
            controller.rate()
        );
    }

    #[test]
    fn a_small_sample_cuts_only_when_clearly_over() {
        let mut clock = Clock(Instant::now());
        let mut controller = RateController::new(None, clock.0);
        controller.rate = 1_000.0;
        let ticket = controller.try_take(clock.0, 25).unwrap();
        assert_eq!(
            controller.on_answers(clock.advance(ms(5)), ticket, 6, 19),
            None
        );
        assert_eq!(
            controller.rate(),
            1_000.0,
            "a quarter admitted: wait for {MIN_SAMPLE}"
        );
    }

    #[test]
    fn no_cut_goes_below_a_quarter_or_the_floor() {
        let mut clock = Clock(Instant::now());
        let mut controller = RateController::new(None, clock.0);
        controller.rate = 1_000.0;
        let ticket = controller.try_take(clock.0, 25).unwrap();
        controller.on_answers(clock.advance(ms(5)), ticket, 0, 25);
        assert_eq!(
            controller.rate(),
            250.0,
            "25 answers, none admitted: clearly over, cut at once"
        );
        for _ in 0..20 {
            let ticket = controller
                .try_take(clock.advance(Duration::from_secs(10)), 25)
                .unwrap();
            controller.on_answers(clock.advance(ms(5)), ticket, 0, 25);
        }
        assert_eq!(controller.rate(), FLOOR_RATE);
        assert_eq!(controller.lowest(), Some(FLOOR_RATE));
    }

    #[test]
    fn the_ceiling_is_never_exceeded_and_paces_exactly() {
        let mut clock = Clock(Instant::now());
        let start = clock.0;
        let mut controller = RateController::new(Some(300), start);
        let mut sent = 0;
        while clock.0 < start + Duration::from_secs(20) {
            let now = clock.advance(ms(1));
            while let Ok(ticket) = controller.try_take(now, 25) {
                sent += 25;
                controller.on_answers(now, ticket, 25, 0);
            }
            assert!(controller.rate() <= 300.0);
        }
        // The first two seconds are the slow start.
        let rate = sent as f64 / 20.0;
        assert!((280.0..=310.0).contains(&rate), "{rate}");
    }

    #[test]
    fn a_ceiling_below_the_floor_is_the_floor() {
        let controller = RateController::new(Some(2), Instant::now());
        assert_eq!(controller.rate(), 2.0);
        assert_eq!(controller.floor, 2.0);
    }

    #[test]
    fn a_warm_process_slow_starts_up_to_the_rate_it_learned_then_probes() {
        let mut clock = Clock(Instant::now());
        let mut controller = RateController::new(None, clock.0);
        controller.rate = 2_000.0;
        let ticket = controller.try_take(clock.0, 100).unwrap();
        controller.on_answers(clock.advance(ms(5)), ticket, 80, 20);
        let learned = controller.rate();
        controller.begin_invocation(clock.advance(Duration::from_secs(120)));
        assert_eq!(controller.rate(), START_RATE);
        assert_eq!(controller.threshold, Some(learned));
        // Keep the bucket bound and answer everything: the slow start stops at the learned rate.
        for _ in 0..10_000 {
            let now = clock.advance(ms(1));
            if let Ok(ticket) = controller.try_take(now, 25) {
                controller.on_answers(now, ticket, 25, 0);
            }
            if controller.phase() == Phase::Probing {
                break;
            }
        }
        assert_eq!(controller.phase(), Phase::Probing);
        assert!((controller.rate() - learned).abs() < 1.0);

        controller.begin_invocation(clock.advance(REMEMBER_FOR));
        assert_eq!(
            controller.threshold, None,
            "forgotten after {REMEMBER_FOR:?}"
        );
    }

    #[test]
    fn a_stall_is_a_minute_without_an_admitted_write() {
        let mut clock = Clock(Instant::now());
        let mut controller = RateController::new(None, clock.0);
        assert!(!controller.stalled(clock.advance(Duration::from_secs(59))));
        let ticket = controller.try_take(clock.0, 1).unwrap();
        controller.on_answers(clock.0, ticket, 1, 0);
        assert!(!controller.stalled(clock.advance(Duration::from_secs(59))));
        let ticket = controller.try_take(clock.0, 1).unwrap();
        controller.on_answers(clock.0, ticket, 0, 1);
        assert!(controller.stalled(clock.advance(Duration::from_secs(1))));
        controller.begin_invocation(clock.0);
        assert!(
            !controller.stalled(clock.0),
            "a new invocation starts its own minute"
        );
    }

    #[test]
    fn a_too_deep_cut_is_won_back_within_twenty_seconds() {
        let mut clock = Clock(Instant::now());
        let mut controller = RateController::new(None, clock.0);
        controller.rate = 5_000.0;
        controller.phase = Phase::Probing;
        // Throttling that has nothing to do with capacity: everything refused for a while.
        for _ in 0..20 {
            let now = clock.advance(ms(50));
            let ticket = controller.try_take(now, 25).unwrap_or(Ticket {
                epoch: controller.epoch,
                sent_at: now,
            });
            controller.on_answers(now, ticket, 0, 25);
        }
        assert_eq!(controller.rate(), FLOOR_RATE);
        let recovered_by = clock.0 + Duration::from_secs(20);
        while controller.rate() < 5_000.0 && clock.0 < recovered_by {
            let now = clock.advance(ms(1));
            while let Ok(ticket) = controller.try_take(now, 25) {
                controller.on_answers(now, ticket, 25, 0);
            }
        }
        assert!(controller.rate() >= 5_000.0, "{}", controller.rate());
    }
}
