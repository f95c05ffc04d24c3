//! Wire-compatible payment channel simulators. They speak the channels' real
//! protocols (paths, fields, signatures, encryption) with their own keys, so
//! paymux's sandbox — and any official channel SDK pointed at them — works
//! without a real merchant account and without moving money.

pub mod alipay;
mod callback;
pub mod unionpay;
pub mod wechat;
