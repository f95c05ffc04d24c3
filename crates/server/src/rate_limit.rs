//! Rate limits for the merchant API: per app, requests per second with a
//! burst, by the generic cell rate algorithm (GCRA). Each key keeps one
//! instant, its theoretical arrival time (TAT): a request at `now` is
//! allowed when `TAT − tolerance ≤ now`, and moves the TAT one emission
//! interval (`1 / rps`) on from `max(TAT, now)`. An idle key needs no
//! state, so the table is pruned of keys whose TAT has passed, which keeps
//! it bounded by the apps active within the last burst.
//!
//! The limit is per node: with several nodes behind a balancer, each
//! allows an app its rate.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys kept before idle ones are pruned.
const PRUNE_AT: usize = 10_000;

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
        let interval = Duration::from_secs_f64(1.0 / rps);
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
        let mut tats = self.tats.lock().unwrap_or_else(|p| p.into_inner());
        let tat = tats.get(key).copied().unwrap_or(now).max(now);
        let allowed_at = tat.checked_sub(rate.tolerance).unwrap_or(now);
        if allowed_at > now {
            return Err(allowed_at - now);
        }
        if tats.len() >= PRUNE_AT && !tats.contains_key(key) {
            tats.retain(|_, t| *t > now);
        }
        tats.insert(key.to_string(), tat + rate.interval);
        Ok(())
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
    fn no_rate_means_no_limit_and_the_table_stays_bounded() {
        assert_eq!(Rate::new(0.0, 10), None);
        assert_eq!(Rate::new(f64::NAN, 10), None);
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
