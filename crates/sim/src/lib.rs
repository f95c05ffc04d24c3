//! Wire-compatible payment channel simulators. They speak the channels' real
//! protocols (paths, fields, signatures, encryption) with their own keys, so
//! paymux's sandbox — and any official channel SDK pointed at them — works
//! without a real merchant account and without moving money.

pub mod alipay;
mod bills;
pub mod callback;
pub mod faults;
mod request;
pub mod unionpay;
pub mod wechat;

/// Locks a mutex; a panic while it was held leaves plain data behind, so keep serving.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An order as a simulated channel holds it, so tests and tools can compare
/// a merchant's records with the channel's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SimTrade {
    pub state: SimTradeState,
    /// In minor units (fen).
    pub amount: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimTradeState {
    Unpaid,
    Paid,
    Closed,
}
