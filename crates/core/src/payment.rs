//! The payment status state machine.
//!
//! ```text
//! created ──prepay accepted──▶ pending ──paid──▶ succeeded
//!    │                           │  └──pay failed──▶ failed
//!    ├──prepay rejected──▶ failed │
//!    └──────close────────▶ closed ◀──close──┘
//! ```
//!
//! Terminal statuses never change. An event that already happened (a second
//! callback for a paid order) is a success that changes nothing.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{CoreError, Money};

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Created,
    Pending,
    Succeeded,
    Failed,
    Closed,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentEvent {
    /// The channel accepted the order and returned pay parameters.
    PrepayAccepted,
    /// The channel refused the order outright.
    PrepayRejected,
    /// The channel reports the payer paid.
    Paid,
    /// The channel reports the payment failed for good.
    PayFailed,
    /// The order was closed (by the merchant or by expiry) and can no longer be paid.
    Closed,
}

/// What applying an event does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Step {
    /// The status moves to a new one; persist it with a compare-and-set.
    Move(PaymentStatus),
    /// The event already happened; nothing to do and nothing to notify.
    Already,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 5] = [
        PaymentStatus::Created,
        PaymentStatus::Pending,
        PaymentStatus::Succeeded,
        PaymentStatus::Failed,
        PaymentStatus::Closed,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            PaymentStatus::Created => "created",
            PaymentStatus::Pending => "pending",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Closed => "closed",
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            PaymentStatus::Succeeded | PaymentStatus::Failed | PaymentStatus::Closed
        )
    }

    /// The status an event leads to, wherever it is legal.
    fn target(event: PaymentEvent) -> PaymentStatus {
        match event {
            PaymentEvent::PrepayAccepted => PaymentStatus::Pending,
            PaymentEvent::PrepayRejected | PaymentEvent::PayFailed => PaymentStatus::Failed,
            PaymentEvent::Paid => PaymentStatus::Succeeded,
            PaymentEvent::Closed => PaymentStatus::Closed,
        }
    }

    /// The edges of the machine: may a payment go from `self` to `to`?
    pub fn can_move_to(&self, to: PaymentStatus) -> bool {
        use PaymentStatus::*;
        matches!(
            (self, to),
            (Created, Pending)
                | (Created, Failed)
                | (Created, Closed)
                | (Pending, Succeeded)
                | (Pending, Failed)
                | (Pending, Closed)
        )
    }

    /// Applies an event. A repeated event is [`Step::Already`]; an event the
    /// machine forbids in this status is an error and must change nothing.
    pub fn on(self, event: PaymentEvent) -> Result<Step, CoreError> {
        let to = Self::target(event);
        if self == to {
            return Ok(Step::Already);
        }
        // Prepay acceptance arriving after the payer already paid is old news.
        if event == PaymentEvent::PrepayAccepted && self == PaymentStatus::Succeeded {
            return Ok(Step::Already);
        }
        if self.can_move_to(to) {
            Ok(Step::Move(to))
        } else {
            Err(CoreError::IllegalTransition { from: self, event })
        }
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PaymentStatus {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        PaymentStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| CoreError::UnknownVariant {
                kind: "payment status",
                value: s.into(),
            })
    }
}

/// Checks a channel-reported paid amount against the payment's own. A payment's
/// amount never changes; a mismatch means the report is not about this payment.
pub fn check_paid_amount(expected: Money, reported: Money) -> Result<(), CoreError> {
    expected.same_currency(&reported)?;
    if expected.minor != reported.minor {
        return Err(CoreError::AmountMismatch {
            expected: expected.minor,
            reported: reported.minor,
        });
    }
    Ok(())
}

macro_rules! string_enum {
    ($name:ident, $kind:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
        pub enum $name { $(#[serde(rename = $text)] $variant),+ }

        impl $name {
            pub fn as_str(&self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = CoreError;
            fn from_str(s: &str) -> Result<Self, CoreError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(CoreError::UnknownVariant { kind: $kind, value: s.into() }),
                }
            }
        }
    };
}

string_enum!(ChannelKind, "channel", {
    Wechat => "wechat",
    Alipay => "alipay",
    Unionpay => "unionpay",
});

string_enum!(PayMethod, "method", {
    MiniProgram => "mini_program",
    Jsapi => "jsapi",
    Native => "native",
    H5 => "h5",
    App => "app",
    Wap => "wap",
    Pc => "pc",
    Barcode => "barcode",
});

impl ChannelKind {
    pub const ALL: [ChannelKind; 3] = [
        ChannelKind::Wechat,
        ChannelKind::Alipay,
        ChannelKind::Unionpay,
    ];

    /// The methods this channel offers, in the order the API documents them.
    pub fn methods(&self) -> &'static [PayMethod] {
        match self {
            ChannelKind::Wechat => &[
                PayMethod::MiniProgram,
                PayMethod::Jsapi,
                PayMethod::Native,
                PayMethod::H5,
                PayMethod::App,
            ],
            ChannelKind::Alipay => &[
                PayMethod::MiniProgram,
                PayMethod::App,
                PayMethod::Wap,
                PayMethod::Pc,
                PayMethod::Native,
                PayMethod::Barcode,
            ],
            ChannelKind::Unionpay => &[
                PayMethod::Pc,
                PayMethod::Wap,
                PayMethod::App,
                PayMethod::Native,
            ],
        }
    }

    pub fn accepts(&self, method: PayMethod) -> bool {
        self.methods().contains(&method)
    }
}

impl PayMethod {
    /// Methods where the payer is identified by an openid inside WeChat.
    pub fn needs_openid(&self) -> bool {
        matches!(self, PayMethod::MiniProgram | PayMethod::Jsapi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Currency;
    use proptest::prelude::*;

    const EVENTS: [PaymentEvent; 5] = [
        PaymentEvent::PrepayAccepted,
        PaymentEvent::PrepayRejected,
        PaymentEvent::Paid,
        PaymentEvent::PayFailed,
        PaymentEvent::Closed,
    ];

    #[test]
    fn happy_path() {
        let s = PaymentStatus::Created;
        assert_eq!(
            s.on(PaymentEvent::PrepayAccepted).unwrap(),
            Step::Move(PaymentStatus::Pending)
        );
        let s = PaymentStatus::Pending;
        assert_eq!(
            s.on(PaymentEvent::Paid).unwrap(),
            Step::Move(PaymentStatus::Succeeded)
        );
        assert_eq!(
            PaymentStatus::Succeeded.on(PaymentEvent::Paid).unwrap(),
            Step::Already
        );
    }

    #[test]
    fn paid_cannot_be_closed_and_closed_cannot_be_paid() {
        assert!(PaymentStatus::Succeeded.on(PaymentEvent::Closed).is_err());
        assert!(PaymentStatus::Closed.on(PaymentEvent::Paid).is_err());
        assert!(PaymentStatus::Created.on(PaymentEvent::Paid).is_err());
    }

    #[test]
    fn names_roundtrip() {
        for s in PaymentStatus::ALL {
            assert_eq!(s.as_str().parse::<PaymentStatus>().unwrap(), s);
        }
        assert_eq!(
            "mini_program".parse::<PayMethod>().unwrap(),
            PayMethod::MiniProgram
        );
        assert_eq!(
            "alipay".parse::<ChannelKind>().unwrap(),
            ChannelKind::Alipay
        );
        assert_eq!(
            "unionpay".parse::<ChannelKind>().unwrap(),
            ChannelKind::Unionpay
        );
        assert!("visa".parse::<ChannelKind>().is_err());
        assert!(ChannelKind::Unionpay.accepts(PayMethod::Native));
        assert!(!ChannelKind::Unionpay.accepts(PayMethod::MiniProgram));
        assert!(ChannelKind::Alipay.accepts(PayMethod::Barcode));
        assert!(!ChannelKind::Wechat.accepts(PayMethod::Barcode));
        assert!(!ChannelKind::Alipay.accepts(PayMethod::Jsapi));
    }

    /// A payment as the store sees it: a status and an amount that must never move.
    #[derive(Debug, Clone)]
    struct Model {
        status: PaymentStatus,
        amount: Money,
    }

    impl Model {
        fn apply(&mut self, event: PaymentEvent, reported: Money) {
            if event == PaymentEvent::Paid && check_paid_amount(self.amount, reported).is_err() {
                return;
            }
            if let Ok(Step::Move(to)) = self.status.on(event) {
                self.status = to;
            }
        }
    }

    proptest! {
        #[test]
        fn no_sequence_reaches_an_illegal_state_or_changes_the_amount(
            amount in 1i64..10_000_000,
            events in proptest::collection::vec((0usize..5, 0i64..3), 0..40),
        ) {
            let amount = Money::new(amount, Currency::CNY).unwrap();
            let mut m = Model { status: PaymentStatus::Created, amount };
            for (e, delta) in events {
                let before = m.status;
                let event = EVENTS[e];
                let reported = Money { minor: amount.minor + delta, currency: Currency::CNY };
                m.apply(event, reported);
                // Only legal edges are ever taken.
                prop_assert!(before == m.status || before.can_move_to(m.status));
                // Terminal statuses are absorbing.
                if before.is_terminal() { prop_assert_eq!(before, m.status); }
                // A wrong paid amount never pays the order.
                if event == PaymentEvent::Paid && delta != 0 { prop_assert_eq!(before, m.status); }
                prop_assert_eq!(m.amount, amount);
            }
        }

        #[test]
        fn every_event_is_idempotent(s in 0usize..5, e in 0usize..5) {
            let status = PaymentStatus::ALL[s];
            if let Ok(Step::Move(to)) = status.on(EVENTS[e]) {
                prop_assert_eq!(to.on(EVENTS[e]).unwrap(), Step::Already);
            }
        }
    }
}
