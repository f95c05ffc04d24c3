//! The types of merchant events, and which of them an app receives.
//!
//! Each app chooses (`PUT /v1/event-types`); until it does it receives
//! every type but `payment.pending`. The choice is applied when an event
//! is sent: one of a type the app does not receive is recorded like any
//! other and marked done without being sent. `payment.pending` is written
//! at all only for apps that receive it.

use paymux_store::App;

pub const PAYMENT_PENDING: &str = "payment.pending";

/// Every type, in the order the documentation lists them.
pub const ALL: [&str; 9] = [
    PAYMENT_PENDING,
    crate::flow::EVENT_PAYMENT_SUCCEEDED,
    crate::flow::EVENT_PAYMENT_FAILED,
    crate::flow::EVENT_PAYMENT_CLOSED,
    crate::checkouts::EVENT_DUPLICATE_REFUNDED,
    crate::refunds::EVENT_REFUND_SUCCEEDED,
    crate::refunds::EVENT_REFUND_FAILED,
    crate::groups::EVENT_GROUP_SUCCEEDED,
    crate::groups::EVENT_GROUP_FAILED,
];

/// Whether `app` receives events of `event_type`.
pub fn receives(app: &App, event_type: &str) -> bool {
    match &app.event_types {
        Some(types) => types.iter().any(|t| t == event_type),
        None => event_type != PAYMENT_PENDING,
    }
}

/// The types `app` receives, in [`ALL`]'s order.
pub fn of(app: &App) -> Vec<&'static str> {
    ALL.iter().copied().filter(|t| receives(app, t)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_everything_but_pending() {
        let mut app = App::new("a".into(), "m".into(), "s".into(), chrono::Utc::now());
        assert_eq!(of(&app).len(), ALL.len() - 1);
        assert!(!receives(&app, PAYMENT_PENDING));
        app.event_types = Some(vec![PAYMENT_PENDING.into(), "refund.failed".into()]);
        assert_eq!(of(&app), vec![PAYMENT_PENDING, "refund.failed"]);
        assert!(!receives(&app, "payment.succeeded"));
    }
}
