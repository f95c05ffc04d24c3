//! Rate limits: the merchant API's, per app, and the pace of calls to the
//! channels, per channel account and operation; both by the generic cell
//! rate algorithm (GCRA). Each key keeps one
//! instant, its theoretical arrival time (TAT): a request at `now` is
//! allowed when `TAT − tolerance ≤ now`, and moves the TAT one emission
//! interval (`1 / rps`) on from `max(TAT, now)`. An idle key needs no
//! state, so the table is pruned of keys whose TAT has passed, which keeps
//! it bounded by the apps active within the last burst.
//!
//! The limits are per node: with several nodes behind a balancer, each
//! allows an app (and calls a channel at) its rate.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::guarded::Operation;

/// Keys kept before idle ones are pruned.
const PRUNE_AT: usize = 10_000;

/// The longest interval between two requests a rate allows: slower rates
/// are held to one a day (and durations and instants never overflow).
const MAX_INTERVAL: Duration = Duration::from_secs(86_400);

/// A rate: `rps` requests per second on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    interval: Duration,
    tolerance: Duration,
}

impl Rate {
    /// `None` (no limit) when `rps` is not positive.
    pub fn new(rps: f64, burst: u32) -> Option<Rate> {
        if !(rps > 0.0 && rps.is_finite()) {
            return None;
        }
        let interval = Duration::try_from_secs_f64(1.0 / rps)
            .unwrap_or(MAX_INTERVAL)
            .min(MAX_INTERVAL);
        Some(Rate {
            interval,
            tolerance: interval.saturating_mul(burst.max(1) - 1),
        })
    }
}

#[derive(Default)]
pub struct Limiter {
    tats: Mutex<HashMap<String, Instant>>,
}

impl Limiter {
    /// Takes one request of `key` at `now`, or says how long to wait.
    pub fn take(&self, key: &str, rate: Rate, now: Instant) -> Result<(), Duration> {
        self.reserve(key, rate, now, Duration::ZERO).map(drop)
    }

    /// Takes one request of `key` at `now` if its turn comes within
    /// `max_wait`: the turn is booked and the wait until it returned (the
    /// caller sleeps that long). Otherwise how long until a turn, and
    /// nothing is booked.
    pub fn reserve(
        &self,
        key: &str,
        rate: Rate,
        now: Instant,
        max_wait: Duration,
    ) -> Result<Duration, Duration> {
        let mut tats = self.tats.lock().unwrap_or_else(|p| p.into_inner());
        let tat = tats.get(key).copied().unwrap_or(now).max(now);
        let allowed_at = tat.checked_sub(rate.tolerance).unwrap_or(now);
        let wait = allowed_at.saturating_duration_since(now);
        if wait > max_wait {
            return Err(wait);
        }
        let next = tat + rate.interval;
        // A key already kept is updated in place: no allocation per request.
        if let Some(kept) = tats.get_mut(key) {
            *kept = next;
            return Ok(wait);
        }
        if tats.len() >= PRUNE_AT {
            tats.retain(|_, t| *t > now);
        }
        tats.insert(key.to_string(), next);
        Ok(wait)
    }
}

/// Paces this node's calls to the channels, per channel account and
/// operation, to the rates `[rate_limit.outbound]` sets (by default WeChat
/// Pay's published per-merchant limits): a call over the rate waits for
/// its turn, up to `max_wait_ms`, so a flash sale is smoothed here instead
/// of being refused by the channel; past that it is not made at all.
pub struct Pacer {
    /// One per operation, keyed by account id.
    limiters: HashMap<Operation, Limiter>,
    config: crate::config::OutboundConfig,
}

impl Pacer {
    pub fn new(config: crate::config::OutboundConfig) -> Self {
        Pacer {
            limiters: Operation::ALL
                .into_iter()
                .map(|op| (op, Limiter::default()))
                .collect(),
            config,
        }
    }

    /// The wait before the call may go, or (`Err`) how long until it could.
    pub fn pace(
        &self,
        channel: &str,
        account_id: &str,
        operation: Operation,
        now: Instant,
    ) -> Result<Duration, Duration> {
        let rps = self
            .config
            .accounts
            .get(account_id)
            .or_else(|| self.config.channels.get(channel))
            .and_then(|ops| ops.get(operation.as_str()))
            .copied()
            .unwrap_or(0.0);
        // A second's worth of calls may go at once.
        let Some(rate) = Rate::new(rps, rps.ceil().max(1.0) as u32) else {
            return Ok(Duration::ZERO);
        };
        let max_wait = Duration::from_millis(self.config.max_wait_ms);
        self.limiters[&operation].reserve(account_id, rate, now, max_wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let l = Limiter::default();
        let rate = Rate::new(10.0, 5).unwrap();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(l.take("app", rate, t0).is_ok());
        }
        let wait = l.take("app", rate, t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(90) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        // One interval later, one more.
        let t1 = t0 + Duration::from_millis(100);
        assert!(l.take("app", rate, t1).is_ok());
        assert!(l.take("app", rate, t1).is_err());
        // Another key has its own budget.
        assert!(l.take("other", rate, t1).is_ok());
        // After a full idle burst the whole burst is back.
        let t2 = t1 + Duration::from_secs(1);
        for _ in 0..5 {
            assert!(l.take("app", rate, t2).is_ok());
        }
        assert!(l.take("app", rate, t2).is_err());
    }

    #[test]
    fn a_reservation_books_a_turn_within_the_wait() {
        let l = Limiter::default();
        let rate = Rate::new(10.0, 1).unwrap();
        let t0 = Instant::now();
        let max = Duration::from_millis(250);
        assert_eq!(l.reserve("k", rate, t0, max), Ok(Duration::ZERO));
        assert_eq!(
            l.reserve("k", rate, t0, max),
            Ok(Duration::from_millis(100))
        );
        assert_eq!(
            l.reserve("k", rate, t0, max),
            Ok(Duration::from_millis(200))
        );
        // The fourth would wait 300 ms: refused, and nothing booked.
        assert_eq!(
            l.reserve("k", rate, t0, max),
            Err(Duration::from_millis(300))
        );
        assert_eq!(
            l.reserve("k", rate, t0, max),
            Err(Duration::from_millis(300))
        );
    }

    #[test]
    fn no_rate_means_no_limit_and_the_table_stays_bounded() {
        assert_eq!(Rate::new(0.0, 10), None);
        assert_eq!(Rate::new(f64::NAN, 10), None);
        // A rate too slow to express is one a day, never a panic.
        let glacial = Rate::new(1e-300, u32::MAX).unwrap();
        assert_eq!(glacial.interval, MAX_INTERVAL);
        let t = Instant::now();
        let l = Limiter::default();
        assert!(l.take("k", glacial, t).is_ok());
        assert!(l.take("k", Rate::new(1e-300, 1).unwrap(), t).is_err());
        let l = Limiter::default();
        let rate = Rate::new(1000.0, 1).unwrap();
        let t0 = Instant::now();
        for i in 0..PRUNE_AT {
            l.take(&format!("k{i}"), rate, t0).unwrap();
        }
        let later = t0 + Duration::from_secs(1);
        l.take("fresh", rate, later).unwrap();
        assert!(l.tats.lock().unwrap().len() < 10);
    }
}
