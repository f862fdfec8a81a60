//! A circuit breaker per backend: an explicit state machine, closed → open → half-open with one
//! trial request. It trips on consecutive failures, or on the failure rate over a sliding window
//! once the window holds a minimum of requests; each time it opens again without having
//! recovered, it stays open twice as long (up to a cap). Time is passed in, never read, so
//! tests drive it with exact instants.

use crate::config::BreakerConfig;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// A breaker's state, as published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Requests flow.
    Closed,
    /// Requests are refused until `until`.
    Open {
        /// When a trial may go.
        until: Instant,
    },
    /// One trial request decides.
    HalfOpen,
}

impl State {
    /// A short stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open { .. } => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// A change of state, for the event stream (the tray and notifications listen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// Before.
    pub from: State,
    /// After.
    pub to: State,
}

/// Whether a request may go to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Yes.
    Allowed,
    /// Yes, as the half-open trial: its outcome closes or reopens the breaker.
    Trial,
    /// No; a trial may go at `retry_at` (or after the trial in flight ends).
    Rejected {
        /// When the breaker admits a trial.
        retry_at: Instant,
    },
}

/// Slices of the failure-rate window: an outcome leaves the window between `window` and
/// `window + window / BUCKETS` after it was recorded.
const BUCKETS: u32 = 30;

/// Outcome counts over a sliding window, in time slices with running sums.
#[derive(Debug, Default)]
struct Window {
    /// (slice start, outcomes, failures), oldest first.
    slices: VecDeque<(Instant, u32, u32)>,
    total: u32,
    failed: u32,
}

impl Window {
    fn record(&mut self, now: Instant, failed: bool, window: Duration) {
        let width = (window / BUCKETS).max(Duration::from_millis(1));
        // A slice leaves once all of it is older than the window.
        while let Some(&(start, n, f)) = self.slices.front() {
            if now.saturating_duration_since(start) <= window + width {
                break;
            }
            self.slices.pop_front();
            self.total -= n;
            self.failed -= f;
        }
        match self.slices.back_mut() {
            Some((start, n, f)) if now.saturating_duration_since(*start) < width => {
                *n += 1;
                *f += u32::from(failed);
            }
            _ => self.slices.push_back((now, 1, u32::from(failed))),
        }
        self.total += 1;
        self.failed += u32::from(failed);
    }

    fn clear(&mut self) {
        *self = Window::default();
    }
}

/// The breaker.
#[derive(Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    state: State,
    consecutive: u32,
    /// Recent outcomes while closed, counted in [`BUCKETS`] slices of the window so that
    /// recording is O(1) and the memory constant at any request rate.
    window: Window,
    /// Times it opened since it was last closed by a success.
    trips: u32,
    trial_in_flight: bool,
    /// The last failure recorded never reached HTTP (no connection, no route, no name): the
    /// backend could not be reached, which is exactly what a probe's answer disproves.
    unreachable: bool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(cfg: BreakerConfig) -> Breaker {
        Breaker {
            cfg,
            state: State::Closed,
            consecutive: 0,
            window: Window::default(),
            trips: 0,
            trial_in_flight: false,
            unreachable: false,
        }
    }

    /// The state now.
    pub fn state(&self) -> State {
        self.state
    }

    /// Asks to send a request at `now`.
    pub fn admit(&mut self, now: Instant) -> (Admission, Option<Transition>) {
        match self.state {
            State::Closed => (Admission::Allowed, None),
            State::Open { until } if now < until => (Admission::Rejected { retry_at: until }, None),
            State::Open { .. } => {
                let t = self.set(State::HalfOpen);
                self.trial_in_flight = true;
                (Admission::Trial, t)
            }
            State::HalfOpen if self.trial_in_flight => {
                (Admission::Rejected { retry_at: now }, None)
            }
            State::HalfOpen => {
                self.trial_in_flight = true;
                (Admission::Trial, None)
            }
        }
    }

    /// A health probe got an answer while open. When what opened the breaker was that the
    /// backend could not be reached, the answer disproves it: closed. Otherwise (it answered,
    /// but with overloads or broken streams, which a model list does not test) the next
    /// request goes through as the trial now instead of waiting out the open time.
    pub fn probe_ok(&mut self) -> Option<Transition> {
        match self.state {
            State::Open { .. } | State::HalfOpen if self.unreachable => {
                self.trial_in_flight = false;
                self.close()
            }
            State::Open { .. } => {
                self.trial_in_flight = false;
                self.set(State::HalfOpen)
            }
            _ => None,
        }
    }

    /// Records a failure that never reached HTTP: the backend could not be reached (refused,
    /// no route, no name), so a probe's answer will close the breaker outright.
    pub fn record_unreachable(&mut self, now: Instant) -> Option<Transition> {
        let t = self.record(now, false);
        self.unreachable = true;
        t
    }

    fn close(&mut self) -> Option<Transition> {
        self.trips = 0;
        self.consecutive = 0;
        self.unreachable = false;
        self.window.clear();
        self.set(State::Closed)
    }

    /// Records the outcome of an admitted request.
    pub fn record(&mut self, now: Instant, ok: bool) -> Option<Transition> {
        if !ok {
            self.unreachable = false;
        }
        match self.state {
            State::HalfOpen => {
                self.trial_in_flight = false;
                if ok {
                    self.close()
                } else {
                    self.open(now)
                }
            }
            // A request admitted before the breaker opened: it no longer decides anything.
            State::Open { .. } => None,
            State::Closed => {
                self.window.record(now, !ok, self.cfg.window);
                self.consecutive = if ok { 0 } else { self.consecutive + 1 };
                let (n, failed) = (self.window.total, self.window.failed);
                let rate_trip = n >= self.cfg.min_requests
                    && f64::from(failed) / f64::from(n) >= self.cfg.failure_rate;
                if !ok && (self.consecutive >= self.cfg.consecutive_failures || rate_trip) {
                    self.open(now)
                } else {
                    None
                }
            }
        }
    }

    fn open(&mut self, now: Instant) -> Option<Transition> {
        let factor = 2u32.saturating_pow(self.trips.min(16));
        let open_for = self
            .cfg
            .open_base
            .saturating_mul(factor)
            .min(self.cfg.open_max);
        self.trips += 1;
        self.consecutive = 0;
        self.window.clear();
        self.set(State::Open {
            until: now + open_for,
        })
    }

    fn set(&mut self, to: State) -> Option<Transition> {
        let from = std::mem::replace(&mut self.state, to);
        (from != to).then_some(Transition { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            failure_rate: 0.5,
            window: 10 * S,
            min_requests: 6,
            open_base: 5 * S,
            open_max: 30 * S,
            probe_interval: S,
            check_interval: S,
        }
    }

    #[test]
    fn consecutive_failures_trip_it_and_the_trial_decides() {
        let t0 = Instant::now();
        let mut b = Breaker::new(cfg());
        assert_eq!(b.record(t0, false), None);
        assert_eq!(b.record(t0, false), None);
        let t = b.record(t0, false).unwrap();
        assert_eq!(
            (t.from, t.to),
            (State::Closed, State::Open { until: t0 + 5 * S })
        );
        assert_eq!(
            b.admit(t0 + 4 * S).0,
            Admission::Rejected {
                retry_at: t0 + 5 * S
            }
        );
        // At the deadline one trial goes; a second request waits for it.
        let (a, t) = b.admit(t0 + 5 * S);
        assert_eq!(a, Admission::Trial);
        assert_eq!(t.unwrap().to, State::HalfOpen);
        assert!(matches!(b.admit(t0 + 5 * S).0, Admission::Rejected { .. }));
        // The trial fails: open again, twice as long.
        let t = b.record(t0 + 6 * S, false).unwrap();
        assert_eq!(t.to, State::Open { until: t0 + 16 * S });
        assert_eq!(b.admit(t0 + 16 * S).0, Admission::Trial);
        b.record(t0 + 17 * S, false);
        assert_eq!(
            b.state(),
            State::Open { until: t0 + 37 * S },
            "20 s, under the 30 s cap"
        );
        assert_eq!(b.admit(t0 + 37 * S).0, Admission::Trial);
        b.record(t0 + 38 * S, false);
        assert_eq!(
            b.state(),
            State::Open { until: t0 + 68 * S },
            "capped at 30 s"
        );
        // A successful trial closes it and resets the growth.
        b.admit(t0 + 68 * S);
        let t = b.record(t0 + 69 * S, true).unwrap();
        assert_eq!(t.to, State::Closed);
        for _ in 0..3 {
            b.record(t0 + 70 * S, false);
        }
        assert_eq!(b.state(), State::Open { until: t0 + 75 * S });
    }

    #[test]
    fn a_good_probe_lets_the_trial_go_early() {
        let t0 = Instant::now();
        let mut b = Breaker::new(cfg());
        for _ in 0..3 {
            b.record(t0, false);
        }
        assert_eq!(b.probe_ok().unwrap().to, State::HalfOpen);
        assert_eq!(
            b.admit(t0 + S).0,
            Admission::Trial,
            "long before the 5 s open time ends"
        );
        assert_eq!(b.probe_ok(), None, "only an open breaker moves on a probe");
    }

    #[test]
    fn a_probe_answer_closes_a_breaker_that_opened_on_an_unreachable_backend() {
        let t0 = Instant::now();
        let mut b = Breaker::new(cfg());
        for _ in 0..3 {
            b.record_unreachable(t0);
        }
        assert!(matches!(b.state(), State::Open { .. }));
        let t = b.probe_ok().unwrap();
        assert_eq!(t.to, State::Closed, "reachability is what the probe proves");
        assert_eq!(b.admit(t0).0, Admission::Allowed);
        // Opened by answers (overloads): the probe only lets the trial go early.
        for _ in 0..2 {
            b.record_unreachable(t0);
        }
        b.record(t0, false);
        assert_eq!(b.probe_ok().unwrap().to, State::HalfOpen);
    }

    #[test]
    fn the_failure_rate_trips_it_only_with_enough_requests_in_the_window() {
        let t0 = Instant::now();
        let mut b = Breaker::new(cfg());
        // Alternating outcomes never make 3 failures in a row; 5 requests are below the minimum.
        for i in 0..5 {
            assert_eq!(b.record(t0 + i * S, i % 2 == 1), None);
        }
        // The 6th request (a failure) makes 4 failures out of 6 in the window: trip.
        let t = b.record(t0 + 5 * S, false).unwrap();
        assert_eq!(t.to, State::Open { until: t0 + 10 * S });
    }

    #[test]
    fn old_outcomes_leave_the_window() {
        let t0 = Instant::now();
        let mut b = Breaker::new(cfg());
        for i in 0..4 {
            b.record(t0 + i * S, i % 2 == 0); // ok, fail, ok, fail
        }
        // 20 s later those are gone: two new outcomes are below the minimum again.
        assert_eq!(b.record(t0 + 20 * S, true), None);
        assert_eq!(b.record(t0 + 21 * S, false), None);
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn a_busy_window_counts_every_outcome_in_constant_memory() {
        let t0 = Instant::now();
        let mut w = Window::default();
        let window = 10 * S;
        // 100,000 outcomes over 20 s, one in ten a failure.
        for i in 0..100_000u32 {
            w.record(
                t0 + Duration::from_micros(u64::from(i) * 200),
                i % 10 == 0,
                window,
            );
        }
        assert!(w.slices.len() <= BUCKETS as usize + 2, "{}", w.slices.len());
        // What is left is the last 10 s (give or take one slice), with its failures.
        let slice = window / BUCKETS;
        let kept = f64::from(w.total) * 200e-6;
        assert!(
            kept >= 10.0 && kept <= 10.0 + 2.0 * slice.as_secs_f64(),
            "{kept}"
        );
        assert!(
            w.failed.abs_diff(w.total / 10) <= 1,
            "{} of {}",
            w.failed,
            w.total
        );
    }
}
