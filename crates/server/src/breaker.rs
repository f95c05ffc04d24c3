//! A circuit breaker: stops calling a channel that keeps failing, so a
//! struggling channel gets room to recover and merchants get a quick
//! `503 CHANNEL_UNAVAILABLE` instead of a slow timeout.
//!
//! - **Closed**: calls go through. Failures are counted in a fixed window;
//!   the breaker opens when the window has at least `min_calls` calls and
//!   `failure_rate` of them failed, or after `consecutive_failures` failures
//!   in a row.
//! - **Open**: calls are refused without reaching the channel for `open_secs`.
//! - **Half-open**: then up to `half_open_calls` trial calls go through at
//!   once. One failure opens the breaker again; once that many have
//!   succeeded it closes.
//!
//! A rate-limit answer counts as a failure and also suspends calls for the
//! time the channel asked (or `rate_limit_backoff_secs`), whatever the state.
//! Time comes from the caller (the server's clock), so tests drive it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::BreakerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The value of the `paymux_channel_breaker_state` gauge.
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        }
    }
}

/// How a call through the breaker ended, as far as the breaker cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The channel answered (a refusal is an answer too).
    Success,
    /// Transport failure, timeout or 5xx.
    Failure,
    /// A rate-limit answer, with the wait the channel asked for.
    RateLimited(Option<Duration>),
}

/// A call was refused: do not call before `retry_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub retry_at: DateTime<Utc>,
    pub state: BreakerState,
}

impl Refused {
    /// Time left until `retry_at`, at least one second (it is said to clients).
    pub fn retry_after(&self, now: DateTime<Utc>) -> Duration {
        (self.retry_at - now)
            .to_std()
            .unwrap_or_default()
            .max(Duration::from_secs(1))
    }
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    /// Bumped at every state change: outcomes of calls admitted before it are ignored.
    generation: u64,
    window_start: DateTime<Utc>,
    calls: u32,
    failures: u32,
    consecutive: u32,
    open_until: DateTime<Utc>,
    trials_in_flight: u32,
    trial_successes: u32,
    backoff_until: Option<DateTime<Utc>>,
}

/// One breaker (per channel account and operation).
#[derive(Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    /// `(account, operation)` for the state gauge.
    labels: (String, &'static str),
    inner: Mutex<Inner>,
}

/// Admission of one call; report how it ended with [`Permit::record`]. A
/// permit dropped unreported (the call was cancelled) frees its trial slot.
#[derive(Debug)]
pub struct Permit {
    breaker: Arc<Breaker>,
    generation: u64,
    trial: bool,
    done: bool,
}

impl Breaker {
    pub fn new(
        cfg: BreakerConfig,
        account: &str,
        operation: &'static str,
        now: DateTime<Utc>,
    ) -> Arc<Self> {
        let breaker = Arc::new(Breaker {
            cfg,
            labels: (account.to_string(), operation),
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                generation: 0,
                window_start: now,
                calls: 0,
                failures: 0,
                consecutive: 0,
                open_until: now,
                trials_in_flight: 0,
                trial_successes: 0,
                backoff_until: None,
            }),
        });
        breaker.publish(BreakerState::Closed);
        breaker
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state as of `now` (an open breaker whose time is up reads half-open).
    pub fn state(&self, now: DateTime<Utc>) -> BreakerState {
        let inner = self.lock();
        match inner.state {
            BreakerState::Open if now >= inner.open_until => BreakerState::HalfOpen,
            s => s,
        }
    }

    /// Whether a call would be admitted now, without admitting one: lets a
    /// caller refuse work before writing anything.
    pub fn check(&self, now: DateTime<Utc>) -> Result<(), Refused> {
        let inner = self.lock();
        self.refusal(&inner, now).map_or(Ok(()), Err)
    }

    fn refusal(&self, inner: &Inner, now: DateTime<Utc>) -> Option<Refused> {
        if let Some(until) = inner.backoff_until.filter(|u| now < *u) {
            return Some(Refused {
                retry_at: until,
                state: inner.state,
            });
        }
        match inner.state {
            BreakerState::Closed => None,
            BreakerState::Open if now < inner.open_until => Some(Refused {
                retry_at: inner.open_until,
                state: BreakerState::Open,
            }),
            // Open and due, or half-open: trial slots decide.
            BreakerState::Open => None,
            BreakerState::HalfOpen => (inner.trials_in_flight + inner.trial_successes
                >= self.cfg.half_open_calls.max(1))
            .then(|| Refused {
                // The trials answer within a request timeout; look again soon.
                retry_at: now + chrono::Duration::seconds(1),
                state: BreakerState::HalfOpen,
            }),
        }
    }

    /// Admits a call, or says when to try again.
    pub fn acquire(self: &Arc<Self>, now: DateTime<Utc>) -> Result<Permit, Refused> {
        let mut inner = self.lock();
        if let Some(refused) = self.refusal(&inner, now) {
            metrics::counter!(
                "paymux_channel_breaker_refusals_total",
                "account" => self.labels.0.clone(),
                "operation" => self.labels.1,
            )
            .increment(1);
            return Err(refused);
        }
        if inner.state == BreakerState::Open {
            self.enter(&mut inner, BreakerState::HalfOpen, now);
        }
        let trial = inner.state == BreakerState::HalfOpen;
        if trial {
            inner.trials_in_flight += 1;
        }
        Ok(Permit {
            breaker: self.clone(),
            generation: inner.generation,
            trial,
            done: false,
        })
    }

    fn record(&self, permit: &Permit, outcome: Outcome, now: DateTime<Utc>) {
        let mut inner = self.lock();
        if let Outcome::RateLimited(wait) = outcome {
            let wait = wait.unwrap_or(Duration::from_secs(self.cfg.rate_limit_backoff_secs));
            let wait = wait.min(paymux_channels::transport::MAX_RETRY_AFTER);
            let until = paymux_core::clock::later(now, paymux_core::clock::span(wait));
            inner.backoff_until = Some(inner.backoff_until.map_or(until, |u| u.max(until)));
        }
        if permit.generation != inner.generation {
            // Admitted before the last state change: says nothing about now.
            return;
        }
        let failed = outcome != Outcome::Success;
        match inner.state {
            BreakerState::Closed => {
                let window = paymux_core::clock::seconds(self.cfg.window_secs);
                if now >= paymux_core::clock::later(inner.window_start, window) {
                    inner.window_start = now;
                    inner.calls = 0;
                    inner.failures = 0;
                }
                inner.calls += 1;
                if failed {
                    inner.failures += 1;
                    inner.consecutive += 1;
                } else {
                    inner.consecutive = 0;
                }
                let by_rate = inner.calls >= self.cfg.min_calls.max(1)
                    && f64::from(inner.failures) >= self.cfg.failure_rate * f64::from(inner.calls);
                let in_a_row = self.cfg.consecutive_failures > 0
                    && inner.consecutive >= self.cfg.consecutive_failures;
                if failed && (by_rate || in_a_row) {
                    self.enter(&mut inner, BreakerState::Open, now);
                }
            }
            BreakerState::HalfOpen if permit.trial => {
                inner.trials_in_flight = inner.trials_in_flight.saturating_sub(1);
                if failed {
                    self.enter(&mut inner, BreakerState::Open, now);
                } else {
                    inner.trial_successes += 1;
                    if inner.trial_successes >= self.cfg.half_open_calls.max(1) {
                        self.enter(&mut inner, BreakerState::Closed, now);
                    }
                }
            }
            _ => {}
        }
    }

    fn release_trial(&self, permit: &Permit) {
        let mut inner = self.lock();
        if permit.trial && permit.generation == inner.generation {
            inner.trials_in_flight = inner.trials_in_flight.saturating_sub(1);
        }
    }

    fn enter(&self, inner: &mut Inner, state: BreakerState, now: DateTime<Utc>) {
        inner.state = state;
        inner.generation += 1;
        inner.window_start = now;
        inner.calls = 0;
        inner.failures = 0;
        inner.consecutive = 0;
        inner.trials_in_flight = 0;
        inner.trial_successes = 0;
        if state == BreakerState::Open {
            inner.open_until =
                paymux_core::clock::later(now, paymux_core::clock::seconds(self.cfg.open_secs));
        }
        let (account, operation) = (&self.labels.0, self.labels.1);
        match state {
            BreakerState::Open => {
                tracing::warn!(
                    account,
                    operation,
                    open_secs = self.cfg.open_secs,
                    "circuit breaker opened: channel calls suspended"
                )
            }
            BreakerState::HalfOpen => {
                tracing::info!(
                    account,
                    operation,
                    "circuit breaker half-open: trying the channel"
                )
            }
            BreakerState::Closed => {
                tracing::info!(
                    account,
                    operation,
                    "circuit breaker closed: channel recovered"
                )
            }
        }
        self.publish(state);
    }

    fn publish(&self, state: BreakerState) {
        metrics::gauge!(
            "paymux_channel_breaker_state",
            "account" => self.labels.0.clone(),
            "operation" => self.labels.1,
        )
        .set(state.gauge());
    }
}

impl Permit {
    /// Reports how the call ended.
    pub fn record(mut self, outcome: Outcome, now: DateTime<Utc>) {
        self.done = true;
        self.breaker.record(&self, outcome, now);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.release_trial(self);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paymux_core::{Clock, ManualClock};

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            enabled: true,
            window_secs: 60,
            min_calls: 4,
            failure_rate: 0.5,
            consecutive_failures: 3,
            open_secs: 30,
            half_open_calls: 2,
            rate_limit_backoff_secs: 5,
        }
    }

    fn setup() -> (ManualClock, Arc<Breaker>) {
        let clock = ManualClock::new(DateTime::from_timestamp(1_767_225_600, 0).unwrap());
        let b = Breaker::new(cfg(), "acct_test", "prepay", clock.now());
        (clock, b)
    }

    fn call(b: &Arc<Breaker>, clock: &ManualClock, outcome: Outcome) {
        b.acquire(clock.now())
            .expect("admitted")
            .record(outcome, clock.now());
    }

    fn secs(s: i64) -> chrono::Duration {
        chrono::Duration::seconds(s)
    }

    #[test]
    fn opens_after_failures_in_a_row_and_refuses_until_open_time_is_up() {
        let (clock, b) = setup();
        call(&b, &clock, Outcome::Failure);
        call(&b, &clock, Outcome::Failure);
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
        call(&b, &clock, Outcome::Failure);
        assert_eq!(b.state(clock.now()), BreakerState::Open);
        let refused = b.acquire(clock.now()).unwrap_err();
        assert_eq!(refused.retry_at, clock.now() + secs(30));
        assert_eq!(refused.retry_after(clock.now()), Duration::from_secs(30));
        assert!(b.check(clock.now()).is_err());
        clock.advance(secs(29));
        assert!(b.acquire(clock.now()).is_err());
        clock.advance(secs(1));
        assert_eq!(b.state(clock.now()), BreakerState::HalfOpen);
        assert!(b.check(clock.now()).is_ok());
    }

    #[test]
    fn opens_on_the_failure_rate_of_the_window() {
        let (clock, b) = setup();
        // Alternating: never three in a row, but half of the calls fail.
        call(&b, &clock, Outcome::Success);
        call(&b, &clock, Outcome::Failure);
        call(&b, &clock, Outcome::Success);
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
        call(&b, &clock, Outcome::Failure);
        assert_eq!(b.state(clock.now()), BreakerState::Open);
    }

    #[test]
    fn old_failures_leave_the_window() {
        let (clock, b) = setup();
        call(&b, &clock, Outcome::Failure);
        call(&b, &clock, Outcome::Failure);
        call(&b, &clock, Outcome::Success);
        clock.advance(secs(61));
        // A fresh window: one failure in four calls is below the rate.
        call(&b, &clock, Outcome::Success);
        call(&b, &clock, Outcome::Success);
        call(&b, &clock, Outcome::Success);
        call(&b, &clock, Outcome::Failure);
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
    }

    #[test]
    fn half_open_closes_after_enough_trials_succeed() {
        let (clock, b) = setup();
        for _ in 0..3 {
            call(&b, &clock, Outcome::Failure);
        }
        clock.advance(secs(30));
        let first = b.acquire(clock.now()).unwrap();
        let second = b.acquire(clock.now()).unwrap();
        // Only two trials at once.
        assert_eq!(
            b.acquire(clock.now()).unwrap_err().state,
            BreakerState::HalfOpen
        );
        first.record(Outcome::Success, clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::HalfOpen);
        second.record(Outcome::Success, clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
        assert!(b.acquire(clock.now()).is_ok());
    }

    #[test]
    fn a_failed_trial_opens_it_again() {
        let (clock, b) = setup();
        for _ in 0..3 {
            call(&b, &clock, Outcome::Failure);
        }
        clock.advance(secs(31));
        call(&b, &clock, Outcome::Failure);
        assert_eq!(b.state(clock.now()), BreakerState::Open);
        assert_eq!(
            b.acquire(clock.now()).unwrap_err().retry_at,
            clock.now() + secs(30)
        );
    }

    #[test]
    fn a_cancelled_trial_frees_its_slot() {
        let (clock, b) = setup();
        for _ in 0..3 {
            call(&b, &clock, Outcome::Failure);
        }
        clock.advance(secs(30));
        let a = b.acquire(clock.now()).unwrap();
        let c = b.acquire(clock.now()).unwrap();
        assert!(b.acquire(clock.now()).is_err());
        drop(a);
        let again = b.acquire(clock.now()).unwrap();
        again.record(Outcome::Success, clock.now());
        c.record(Outcome::Success, clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
    }

    #[test]
    fn outcomes_from_before_a_state_change_are_ignored() {
        let (clock, b) = setup();
        let slow = b.acquire(clock.now()).unwrap();
        for _ in 0..3 {
            call(&b, &clock, Outcome::Failure);
        }
        clock.advance(secs(30));
        call(&b, &clock, Outcome::Success);
        call(&b, &clock, Outcome::Success);
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
        // A call admitted before the breaker opened fails late: it says
        // nothing about the recovered channel.
        slow.record(Outcome::Failure, clock.now());
        call(&b, &clock, Outcome::Failure);
        call(&b, &clock, Outcome::Failure);
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
    }

    #[test]
    fn rate_limits_back_off_for_the_time_asked() {
        let (clock, b) = setup();
        call(
            &b,
            &clock,
            Outcome::RateLimited(Some(Duration::from_secs(2))),
        );
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
        let refused = b.acquire(clock.now()).unwrap_err();
        assert_eq!(refused.retry_at, clock.now() + secs(2));
        clock.advance(secs(2));
        call(&b, &clock, Outcome::Success);
        // Without a wait from the channel, the configured back-off.
        call(&b, &clock, Outcome::RateLimited(None));
        assert_eq!(
            b.check(clock.now()).unwrap_err().retry_at,
            clock.now() + secs(5)
        );
    }

    #[test]
    fn a_huge_retry_after_is_capped_and_never_panics() {
        let (clock, b) = setup();
        // A channel (or whoever answers in its place) asks for forever.
        call(&b, &clock, Outcome::RateLimited(Some(Duration::MAX)));
        let refused = b.acquire(clock.now()).unwrap_err();
        assert_eq!(
            refused.retry_at,
            clock.now() + secs(3600),
            "capped at an hour"
        );
        clock.advance(secs(3600));
        assert!(b.acquire(clock.now()).is_ok());
    }
}
