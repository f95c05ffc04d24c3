//! Time comes through a clock so tests can move it.

use std::sync::Mutex;

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, Offset, Utc};

/// `t + by`, saturating at the ends of time instead of panicking: a huge
/// wait (a channel's `Retry-After`, a configured delay) must never crash a
/// worker or wrap into the past.
pub fn later(t: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    let bound = if by < Duration::zero() {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    };
    t.checked_add_signed(by).unwrap_or(bound)
}

/// A standard duration as a signed one, capped at ten years (beyond that no
/// wait paymux makes has any meaning).
pub fn span(d: std::time::Duration) -> Duration {
    const TEN_YEARS: std::time::Duration = std::time::Duration::from_secs(10 * 366 * 86_400);
    Duration::from_std(d.min(TEN_YEARS)).unwrap_or(Duration::days(3660))
}

/// China Standard Time (UTC+8), the channels' clock: their timestamps,
/// bill days and settlement days.
pub fn china_standard_time() -> FixedOffset {
    // 8 h is always a valid offset; the fallback is never taken.
    FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| Utc.fix())
}

/// The day it is in China at `t`.
pub fn china_date(t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&china_standard_time()).date_naive()
}

/// The China-time day `date` as a UTC range `[from, to)`.
pub fn china_day(date: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let midnight = date.and_time(chrono::NaiveTime::MIN);
    let from = (midnight - Duration::hours(8)).and_utc();
    (from, from + Duration::days(1))
}

/// Configured seconds as a signed duration, capped like [`span`].
pub fn seconds(secs: u64) -> Duration {
    span(std::time::Duration::from_secs(secs))
}

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(at))
    }

    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t += by;
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod saturating_tests {
    use super::*;

    #[test]
    fn a_china_day_starts_at_16_utc_the_day_before() {
        let d = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        let (from, to) = china_day(d);
        assert_eq!(from.to_rfc3339(), "2026-11-30T16:00:00+00:00");
        assert_eq!(to - from, Duration::days(1));
        assert_eq!(china_date(from), d);
        assert_eq!(china_date(to - Duration::seconds(1)), d);
        assert_eq!(china_date(to), d.succ_opt().unwrap());
    }

    #[test]
    fn later_saturates_instead_of_panicking() {
        let now = Utc::now();
        assert_eq!(later(now, Duration::MAX), DateTime::<Utc>::MAX_UTC);
        assert_eq!(later(now, Duration::MIN), DateTime::<Utc>::MIN_UTC);
        assert_eq!(later(now, Duration::seconds(5)), now + Duration::seconds(5));
        assert_eq!(
            span(std::time::Duration::MAX),
            Duration::from_std(std::time::Duration::from_secs(10 * 366 * 86_400)).unwrap()
        );
        assert_eq!(seconds(u64::MAX), span(std::time::Duration::MAX));
    }
}
