//! Failed authentication: counted, logged without flooding the log, and
//! slowed down per client address.
//!
//! An address that fails more than `per_ip` times in `window_secs` is
//! refused with 429 before any work for twice as long as the last time
//! (from one window up to an hour). Failures per app are counted too; an
//! app over `per_app` is logged as under attack, but its correctly signed
//! requests still pass: someone who merely knows an `app_id` must not be
//! able to lock its merchant out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthFailureLimits {
    /// Failures one client address may have in a window before it is refused.
    pub per_ip: u32,
    /// Failures for one app in a window before it is reported as attacked.
    pub per_app: u32,
    pub window_secs: u64,
}

impl Default for AuthFailureLimits {
    fn default() -> Self {
        AuthFailureLimits {
            per_ip: 50,
            per_app: 200,
            window_secs: 60,
        }
    }
}

/// Entries kept per map; beyond it, stale ones go first, then everything
/// (an attacker with that many addresses gets a fresh start, nothing worse).
const MAX_TRACKED: usize = 65_536;
const MAX_BLOCK: Duration = Duration::from_secs(3600);
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
    /// The last block's length, doubled by the next one.
    last_block: Duration,
}

#[derive(Default)]
struct Tracked {
    by_ip: HashMap<IpAddr, Window>,
    by_app: HashMap<String, Window>,
    last_log: Option<Instant>,
    unlogged: u64,
}

pub struct AuthFailures {
    limits: AuthFailureLimits,
    tracked: Mutex<Tracked>,
}

impl AuthFailures {
    pub fn new(limits: AuthFailureLimits) -> Self {
        AuthFailures {
            limits,
            tracked: Mutex::new(Tracked::default()),
        }
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.limits.window_secs.max(1))
    }

    /// How long this address must wait before it may try again, if at all.
    pub fn blocked(&self, ip: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let ip = ip?;
        let tracked = self.tracked.lock().unwrap_or_else(|p| p.into_inner());
        let until = tracked.by_ip.get(&ip)?.blocked_until?;
        until.checked_duration_since(now).filter(|d| !d.is_zero())
    }

    /// Records one failure (with a stable reason code) and logs it, at most
    /// once per ten seconds with the count of those not logged.
    pub fn record(&self, ip: Option<IpAddr>, app_id: Option<&str>, code: &str, now: Instant) {
        metrics::counter!("paymux_auth_failures_total", "reason" => code.to_string()).increment(1);
        let window = self.window();
        let mut tracked = self.tracked.lock().unwrap_or_else(|p| p.into_inner());
        let mut ip_blocked = None;
        if let Some(ip) = ip {
            let w = bump(&mut tracked.by_ip, ip, now, window);
            if w.failures > self.limits.per_ip && w.blocked_until.is_none_or(|u| u <= now) {
                let block = (w.last_block * 2).clamp(window, MAX_BLOCK);
                w.last_block = block;
                w.blocked_until = Some(now + block);
                ip_blocked = Some(block);
            }
        }
        let mut app_over = false;
        if let Some(app) = app_id {
            let w = bump(&mut tracked.by_app, app.to_string(), now, window);
            app_over = w.failures == self.limits.per_app + 1;
        }
        if let Some(block) = ip_blocked {
            metrics::counter!("paymux_auth_blocked_total").increment(1);
            tracing::warn!(client = ?ip, ?block, "authentication failures: client address refused for a while");
        }
        if app_over {
            tracing::warn!(
                app_id,
                limit = self.limits.per_app,
                "authentication failures: app under attack (its signed requests still pass)"
            );
        }
        let log_due = tracked
            .last_log
            .is_none_or(|t| now.saturating_duration_since(t) >= LOG_EVERY);
        if log_due {
            let suppressed = std::mem::take(&mut tracked.unlogged);
            tracked.last_log = Some(now);
            drop(tracked);
            tracing::warn!(client = ?ip, app_id, code, suppressed, "authentication failed");
        } else {
            tracked.unlogged += 1;
        }
    }
}

/// The key's window, restarted when it has passed; the map is kept bounded.
fn bump<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, Window>,
    key: K,
    now: Instant,
    window: Duration,
) -> &mut Window {
    if map.len() >= MAX_TRACKED {
        map.retain(|_, w| {
            now.saturating_duration_since(w.started) < window
                || w.blocked_until.is_some_and(|u| u > now)
        });
        if map.len() >= MAX_TRACKED {
            map.clear();
        }
    }
    let w = map.entry(key).or_insert(Window {
        started: now,
        failures: 0,
        blocked_until: None,
        last_block: Duration::ZERO,
    });
    if now.saturating_duration_since(w.started) >= window
        && w.blocked_until.is_none_or(|u| u <= now)
    {
        w.started = now;
        w.failures = 0;
    }
    w.failures = w.failures.saturating_add(1);
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AuthFailureLimits {
        AuthFailureLimits {
            per_ip: 3,
            per_app: 5,
            window_secs: 60,
        }
    }

    #[test]
    fn an_address_over_its_limit_waits_longer_each_time() {
        let f = AuthFailures::new(limits());
        let ip = Some("192.0.2.7".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            f.record(ip, Some("app"), "INVALID_SIGNATURE", t0);
        }
        assert_eq!(
            f.blocked(ip, t0),
            None,
            "three failures are within the limit"
        );
        f.record(ip, Some("app"), "INVALID_SIGNATURE", t0);
        assert_eq!(f.blocked(ip, t0), Some(Duration::from_secs(60)));
        let other = Some("192.0.2.8".parse().unwrap());
        assert_eq!(
            f.blocked(other, t0),
            None,
            "another address is not affected"
        );

        // After the block, the next burst blocks for twice as long.
        let t1 = t0 + Duration::from_secs(61);
        assert_eq!(f.blocked(ip, t1), None);
        for _ in 0..4 {
            f.record(ip, None, "INVALID_SIGNATURE", t1);
        }
        assert_eq!(f.blocked(ip, t1), Some(Duration::from_secs(120)));
    }

    #[test]
    fn the_map_stays_bounded() {
        let f = AuthFailures::new(limits());
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            let ip = IpAddr::from(i.to_be_bytes());
            f.record(Some(ip), None, "UNKNOWN_APP", t0);
        }
        let tracked = f.tracked.lock().unwrap();
        assert!(tracked.by_ip.len() <= MAX_TRACKED);
    }
}
