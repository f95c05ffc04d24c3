//! Background workers that are not about delivering notifications.

pub mod poller;
pub mod refund_checks;
