//! Fault injection shared by every simulator: what a channel does on a bad
//! day. Each fault fires at its own configured rate, decided by a seeded
//! pseudo-random sequence, so a run can be replayed: with the same seed and
//! the same order of calls, the same calls fail.
//!
//! API faults (latency, timeouts, 5xx, rate limits) are decided per channel
//! API call; callback faults (lost, duplicated, delayed, out of order) per
//! `/pay`. Each simulator renders a fault in its own channel's wire format;
//! this module only decides which fault happens and delivers callbacks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::callback::{CallbackAttempt, HeldCallback};

/// Longest latency or hang that may be configured: a fault must end.
pub const MAX_DELAY_MS: u64 = 120_000;
/// Callbacks held back for out-of-order delivery before the oldest is sent anyway.
pub const MAX_HELD_CALLBACKS: usize = 1_000;

/// `POST /faults`: which faults to inject and how often. Every rate is a
/// probability in `[0, 1]`; absent keys are 0 (no fault).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Seeds the decisions; the same seed and call order give the same faults.
    pub seed: u64,
    /// Calls answered normally, but `latency_ms` late.
    pub latency_rate: f64,
    pub latency_ms: u64,
    /// Calls that are carried out, whose answer comes only after `timeout_ms`
    /// (set it past the client's timeout): the client cannot know the outcome.
    pub timeout_rate: f64,
    pub timeout_ms: u64,
    /// Calls refused with a server error before anything is done.
    pub error_rate: f64,
    /// Calls refused with the channel's rate-limit answer before anything is done.
    pub rate_limit_rate: f64,
    /// Callbacks (of payments and refunds) never sent.
    pub callback_lost_rate: f64,
    /// Callbacks sent one extra time.
    pub callback_duplicate_rate: f64,
    /// Callbacks sent `callback_delay_ms` later, in the background.
    pub callback_delay_rate: f64,
    pub callback_delay_ms: u64,
    /// Callbacks held back and sent after the next ones.
    pub callback_reorder_rate: f64,
    /// Refund requests that fail for good (read through [`Faults::refund_fails`]).
    pub refund_failure_rate: f64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            seed: 0,
            latency_rate: 0.0,
            latency_ms: 200,
            timeout_rate: 0.0,
            timeout_ms: 15_000,
            error_rate: 0.0,
            rate_limit_rate: 0.0,
            callback_lost_rate: 0.0,
            callback_duplicate_rate: 0.0,
            callback_delay_rate: 0.0,
            callback_delay_ms: 1_000,
            callback_reorder_rate: 0.0,
            refund_failure_rate: 0.0,
        }
    }
}

impl FaultConfig {
    /// Refuses rates outside `[0, 1]` and delays past [`MAX_DELAY_MS`].
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("latency_rate", self.latency_rate),
            ("timeout_rate", self.timeout_rate),
            ("error_rate", self.error_rate),
            ("rate_limit_rate", self.rate_limit_rate),
            ("callback_lost_rate", self.callback_lost_rate),
            ("callback_duplicate_rate", self.callback_duplicate_rate),
            ("callback_delay_rate", self.callback_delay_rate),
            ("callback_reorder_rate", self.callback_reorder_rate),
            ("refund_failure_rate", self.refund_failure_rate),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1"));
            }
        }
        let delays = [
            ("latency_ms", self.latency_ms),
            ("timeout_ms", self.timeout_ms),
            ("callback_delay_ms", self.callback_delay_ms),
        ];
        for (name, ms) in delays {
            if ms > MAX_DELAY_MS {
                return Err(format!("{name} must be at most {MAX_DELAY_MS}"));
            }
        }
        Ok(())
    }
}

/// What happens to one channel API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFault {
    None,
    /// Answer normally after this long.
    Latency(Duration),
    /// Carry the call out, answer after this long.
    Timeout(Duration),
    /// Refuse with a 5xx before doing anything.
    ServerError,
    /// Refuse with the channel's rate-limit answer before doing anything.
    RateLimited,
}

/// What happens to the callbacks of one `/pay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallbackPlan {
    pub lost: bool,
    pub duplicated: bool,
    pub delay: Option<Duration>,
    pub reordered: bool,
}

/// `GET /faults`: the configuration and what the faults have done so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultStatus {
    pub config: FaultConfig,
    /// Callbacks scheduled for later (delayed or held back) not yet sent.
    pub pending_callbacks: usize,
    pub injected: Injected,
}

/// Counts of faults injected since the configuration was last set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Injected {
    pub latency: u64,
    pub timeouts: u64,
    pub errors: u64,
    pub rate_limits: u64,
    pub callbacks_lost: u64,
    pub callbacks_duplicated: u64,
    pub callbacks_delayed: u64,
    pub callbacks_reordered: u64,
    pub refund_failures: u64,
}

struct Inner {
    config: FaultConfig,
    rng: SplitMix64,
    injected: Injected,
    /// Callbacks held back for out-of-order delivery, oldest first.
    held: Vec<reqwest::RequestBuilder>,
}

/// Differences to put into the next bill the simulator produces (then
/// forgotten), to test reconciliation: trades or refunds left out (by
/// `out_trade_no` or `out_refund_no`), trades nobody made, amounts changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillFaults {
    #[serde(default)]
    pub drop: Vec<String>,
    #[serde(default)]
    pub add_unknown: u32,
    /// `out_trade_no` → the amount (minor units) the bill shows instead.
    #[serde(default)]
    pub change_amount: std::collections::BTreeMap<String, i64>,
}

/// Unknown trades one bill may gain at most.
const MAX_UNKNOWN: u32 = 10_000;

/// One simulator's fault state (each simulator has its own).
pub struct Faults {
    inner: Mutex<Inner>,
    bill: Mutex<BillFaults>,
    /// Delayed or held callbacks not yet delivered.
    pending: Arc<AtomicUsize>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            inner: Mutex::new(Inner {
                config: FaultConfig::default(),
                rng: SplitMix64(0),
                injected: Injected::default(),
                held: Vec::new(),
            }),
            bill: Mutex::new(BillFaults::default()),
            pending: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults").finish_non_exhaustive()
    }
}

impl Faults {
    /// Sets the differences the next bill gets.
    pub fn set_bill_faults(&self, faults: BillFaults) -> Result<(), String> {
        if faults.add_unknown > MAX_UNKNOWN {
            return Err(format!("add_unknown is at most {MAX_UNKNOWN}"));
        }
        if faults.change_amount.values().any(|&a| a <= 0) {
            return Err("change_amount takes positive amounts".into());
        }
        *crate::lock(&self.bill) = faults;
        Ok(())
    }

    /// The differences for the bill being made now; the next one has none.
    pub fn take_bill_faults(&self) -> BillFaults {
        std::mem::take(&mut *crate::lock(&self.bill))
    }

    /// Replaces the configuration and restarts the sequence from its seed.
    /// Callbacks held back for reordering are sent now.
    pub fn set(&self, config: FaultConfig) -> Result<(), String> {
        config.validate()?;
        let held = {
            let mut inner = crate::lock(&self.inner);
            inner.rng = SplitMix64(config.seed);
            inner.config = config;
            inner.injected = Injected::default();
            std::mem::take(&mut inner.held)
        };
        self.release(held);
        Ok(())
    }

    /// No faults from now on (held callbacks are sent).
    pub fn clear(&self) {
        // The default configuration is always valid.
        let _ = self.set(FaultConfig::default());
    }

    pub fn status(&self) -> FaultStatus {
        let inner = crate::lock(&self.inner);
        FaultStatus {
            config: inner.config.clone(),
            pending_callbacks: self.pending.load(Ordering::SeqCst),
            injected: inner.injected.clone(),
        }
    }

    /// Decides the fate of one channel API call. Every call consumes the same
    /// number of draws whatever the outcome, so one call's fault does not
    /// shift the decisions of the calls after it.
    pub fn api_fault(&self) -> ApiFault {
        let mut inner = crate::lock(&self.inner);
        let c = inner.config.clone();
        let timeout = inner.rng.chance(c.timeout_rate);
        let error = inner.rng.chance(c.error_rate);
        let limited = inner.rng.chance(c.rate_limit_rate);
        let slow = inner.rng.chance(c.latency_rate);
        if timeout {
            inner.injected.timeouts += 1;
            ApiFault::Timeout(Duration::from_millis(c.timeout_ms))
        } else if error {
            inner.injected.errors += 1;
            ApiFault::ServerError
        } else if limited {
            inner.injected.rate_limits += 1;
            ApiFault::RateLimited
        } else if slow {
            inner.injected.latency += 1;
            ApiFault::Latency(Duration::from_millis(c.latency_ms))
        } else {
            ApiFault::None
        }
    }

    /// Decides the fate of one `/pay`'s callbacks (same number of draws every time).
    pub fn callback_plan(&self) -> CallbackPlan {
        let mut inner = crate::lock(&self.inner);
        let c = inner.config.clone();
        let lost = inner.rng.chance(c.callback_lost_rate);
        let duplicated = inner.rng.chance(c.callback_duplicate_rate);
        let delayed = inner.rng.chance(c.callback_delay_rate);
        let reordered = inner.rng.chance(c.callback_reorder_rate);
        let plan = CallbackPlan {
            lost,
            duplicated: duplicated && !lost,
            delay: (delayed && !lost).then(|| Duration::from_millis(c.callback_delay_ms)),
            reordered: reordered && !lost && !delayed,
        };
        let n = &mut inner.injected;
        n.callbacks_lost += u64::from(plan.lost);
        n.callbacks_duplicated += u64::from(plan.duplicated);
        n.callbacks_delayed += u64::from(plan.delay.is_some());
        n.callbacks_reordered += u64::from(plan.reordered);
        plan
    }

    /// Whether this refund request fails for good (`refund_failure_rate`).
    pub fn refund_fails(&self) -> bool {
        let mut inner = crate::lock(&self.inner);
        let rate = inner.config.refund_failure_rate;
        let fails = inner.rng.chance(rate);
        inner.injected.refund_failures += u64::from(fails);
        fails
    }

    /// Delivers one `/pay`'s callbacks (`copies`, already built and signed)
    /// according to a fresh [`CallbackPlan`]. Returns what the merchant side
    /// answered to the callbacks sent now; lost ones are reported as such,
    /// delayed and held ones are not reported (they go out later).
    /// Sends the callbacks (through the fault plan), or with `hold` only
    /// builds them and hands them back unsent.
    pub(crate) async fn send_or_hold(
        &self,
        copies: Vec<reqwest::RequestBuilder>,
        hold: bool,
    ) -> Result<(Vec<CallbackAttempt>, Vec<HeldCallback>), String> {
        if hold {
            let held = copies
                .into_iter()
                .map(crate::callback::hold)
                .collect::<Result<_, _>>()?;
            return Ok((Vec::new(), held));
        }
        Ok((self.deliver_callbacks(copies).await, Vec::new()))
    }

    pub(crate) async fn deliver_callbacks(
        &self,
        mut copies: Vec<reqwest::RequestBuilder>,
    ) -> Vec<CallbackAttempt> {
        let plan = self.callback_plan();
        if plan.lost {
            return copies
                .iter()
                .map(|_| CallbackAttempt {
                    status: None,
                    body: String::new(),
                    error: Some("lost (fault injection)".into()),
                })
                .collect();
        }
        if plan.duplicated {
            if let Some(extra) = copies.last().and_then(reqwest::RequestBuilder::try_clone) {
                copies.push(extra);
            }
        }
        if let Some(delay) = plan.delay {
            self.pending.fetch_add(copies.len(), Ordering::SeqCst);
            let pending = self.pending.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                for req in copies {
                    crate::callback::deliver(req).await;
                    pending.fetch_sub(1, Ordering::SeqCst);
                }
            });
            return Vec::new();
        }
        if plan.reordered {
            let overflow = {
                let mut inner = crate::lock(&self.inner);
                self.pending.fetch_add(copies.len(), Ordering::SeqCst);
                inner.held.extend(copies);
                let excess = inner.held.len().saturating_sub(MAX_HELD_CALLBACKS);
                inner.held.drain(..excess).collect::<Vec<_>>()
            };
            self.release(overflow);
            return Vec::new();
        }
        let mut attempts = Vec::with_capacity(copies.len());
        for req in copies {
            attempts.push(crate::callback::deliver(req).await);
        }
        // Callbacks held back earlier now arrive after this newer one.
        let held = std::mem::take(&mut crate::lock(&self.inner).held);
        self.release(held);
        attempts
    }

    /// Sends held callbacks in the background.
    fn release(&self, held: Vec<reqwest::RequestBuilder>) {
        if held.is_empty() {
            return;
        }
        let pending = self.pending.clone();
        tokio::spawn(async move {
            for req in held {
                crate::callback::deliver(req).await;
                pending.fetch_sub(1, Ordering::SeqCst);
            }
        });
    }

    /// Sends every held callback now.
    pub fn flush(&self) {
        let held = std::mem::take(&mut crate::lock(&self.inner).held);
        self.release(held);
    }
}

/// SplitMix64: tiny, fast and fully determined by its seed; plenty for
/// deciding faults (nothing here needs unpredictability).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `rate` (always one draw, so sequences stay aligned).
    fn chance(&mut self, rate: f64) -> bool {
        // 53 random bits as a uniform value in [0, 1).
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        u < rate
    }
}

/// The `/faults` control routes, for a simulator whose state gives its [`Faults`].
pub(crate) mod routes {
    use std::sync::Arc;

    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::Json;

    use super::{BillFaults, FaultConfig, Faults};

    pub async fn show(State(f): State<Arc<Faults>>) -> Response {
        Json(f.status()).into_response()
    }

    pub async fn set(State(f): State<Arc<Faults>>, body: axum::body::Bytes) -> Response {
        let config: FaultConfig = match serde_json::from_slice(&body) {
            Ok(c) => c,
            Err(e) => return invalid(e.to_string()),
        };
        match f.set(config) {
            Ok(()) => Json(f.status()).into_response(),
            Err(e) => invalid(e),
        }
    }

    pub async fn clear(State(f): State<Arc<Faults>>) -> Response {
        f.clear();
        StatusCode::NO_CONTENT.into_response()
    }

    pub async fn set_bill(State(f): State<Arc<Faults>>, body: axum::body::Bytes) -> Response {
        let faults: BillFaults = match serde_json::from_slice(&body) {
            Ok(c) => c,
            Err(e) => return invalid(e.to_string()),
        };
        match f.set_bill_faults(faults.clone()) {
            Ok(()) => Json(faults).into_response(),
            Err(e) => invalid(e),
        }
    }

    fn invalid(message: String) -> Response {
        (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "code": "INVALID_PARAMETER", "message": message })),
        )
            .into_response()
    }

    /// `/faults`: `GET` shows, `POST` sets, `DELETE` clears.
    /// `/bills/faults`: `POST` sets the next bill's differences.
    pub fn router<S>(faults: Arc<Faults>) -> axum::Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        axum::Router::new()
            .route("/faults", axum::routing::get(show).post(set).delete(clear))
            .route("/bills/faults", axum::routing::post(set_bill))
            .with_state(faults)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(config: FaultConfig) -> Faults {
        let f = Faults::default();
        f.set(config).unwrap();
        f
    }

    #[test]
    fn the_same_seed_gives_the_same_faults() {
        let config = FaultConfig {
            seed: 42,
            error_rate: 0.3,
            rate_limit_rate: 0.2,
            latency_rate: 0.5,
            ..Default::default()
        };
        let a: Vec<_> = (0..200)
            .map({
                let f = faults(config.clone());
                move |_| f.api_fault()
            })
            .collect();
        let b: Vec<_> = (0..200)
            .map({
                let f = faults(config.clone());
                move |_| f.api_fault()
            })
            .collect();
        assert_eq!(a, b);
        let other = faults(FaultConfig { seed: 43, ..config });
        let c: Vec<_> = (0..200).map(|_| other.api_fault()).collect();
        assert_ne!(a, c);
        // Roughly the configured share; a fixed seed makes this exact, not flaky.
        let errors = a.iter().filter(|f| **f == ApiFault::ServerError).count();
        assert!((30..=90).contains(&errors), "{errors}");
    }

    #[test]
    fn rates_zero_and_one_are_never_and_always() {
        let never = Faults::default();
        assert!((0..100).all(|_| never.api_fault() == ApiFault::None));
        assert!((0..100).all(|_| never.callback_plan() == CallbackPlan::default()));
        assert!(!never.refund_fails());
        let always = faults(FaultConfig {
            error_rate: 1.0,
            callback_lost_rate: 1.0,
            refund_failure_rate: 1.0,
            ..Default::default()
        });
        assert!((0..100).all(|_| always.api_fault() == ApiFault::ServerError));
        assert!((0..100).all(|_| always.callback_plan().lost));
        assert!(always.refund_fails());
        assert_eq!(always.status().injected.errors, 100);
    }

    #[test]
    fn bad_configurations_are_refused() {
        let f = Faults::default();
        assert!(f
            .set(FaultConfig {
                error_rate: 1.5,
                ..Default::default()
            })
            .unwrap_err()
            .contains("error_rate"));
        assert!(f
            .set(FaultConfig {
                timeout_ms: MAX_DELAY_MS + 1,
                ..Default::default()
            })
            .is_err());
        assert_eq!(f.status().config, FaultConfig::default());
    }
}
