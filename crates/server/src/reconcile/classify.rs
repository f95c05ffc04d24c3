//! What one bill record says against what paymux has: pure rules, so each
//! kind of difference is tested on its own.

use paymux_core::{PaymentStatus, RefundStatus};
use paymux_store::{ChannelAccount, Payment, Refund};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The kinds of difference a reconciliation reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The channel has a successful trade that paymux does not show as
    /// succeeded (unknown here, or still open).
    MissingHere,
    /// paymux shows a payment succeeded that the channel's bill lacks.
    MissingAtChannel,
    /// Both sides have the payment, for different amounts.
    AmountMismatch,
    /// The channel says paid; paymux has the payment failed or closed.
    StatusMismatch,
    /// A refund that one side has and the other lacks, or has for another
    /// amount or outcome.
    RefundMismatch,
    /// The bill's fee for a payment is not the one already in the books.
    FeeMismatch,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::MissingHere => "missing_here",
            Kind::MissingAtChannel => "missing_at_channel",
            Kind::AmountMismatch => "amount_mismatch",
            Kind::StatusMismatch => "status_mismatch",
            Kind::RefundMismatch => "refund_mismatch",
            Kind::FeeMismatch => "fee_mismatch",
        }
    }
}

/// One difference, as reports and the API show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Discrepancy {
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_trade_no: Option<String>,
    /// paymux's side: `{status, amount}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ours: Option<Value>,
    /// The bill's side: `{status, amount}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theirs: Option<Value>,
    /// What paymux did about it, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
}

fn side(status: &str, amount: i64, currency: &str) -> Value {
    json!({"status": status, "amount": amount, "currency": currency})
}

pub fn ours_payment(p: &Payment) -> Value {
    side(
        p.status.as_str(),
        p.amount.minor,
        p.amount.currency.as_str(),
    )
}

pub fn ours_refund(r: &Refund) -> Value {
    side(
        r.status.as_str(),
        r.amount.minor,
        r.amount.currency.as_str(),
    )
}

/// What the bill says of a trade it lists as paid.
pub struct BilledTrade<'a> {
    pub out_trade_no: &'a str,
    pub channel_trade_no: &'a str,
    pub amount: i64,
    pub currency: &'a str,
}

/// A paid trade in the bill against paymux's payment of that id (`None`
/// when paymux has none for this account). `None` back means they agree.
pub fn paid_trade(
    account: &ChannelAccount,
    billed: &BilledTrade<'_>,
    ours: Option<&Payment>,
) -> Option<Discrepancy> {
    let ours = ours.filter(|p| p.channel_account_id == account.id);
    let kind = match ours {
        None => Kind::MissingHere,
        Some(p) if p.status == PaymentStatus::Succeeded => {
            if p.amount.minor == billed.amount && p.amount.currency.as_str() == billed.currency {
                return None;
            }
            Kind::AmountMismatch
        }
        Some(p) if p.status.is_terminal() => Kind::StatusMismatch,
        Some(_) => Kind::MissingHere,
    };
    Some(Discrepancy {
        kind,
        payment_id: Some(billed.out_trade_no.to_string()),
        refund_id: None,
        channel_trade_no: Some(billed.channel_trade_no.to_string()),
        ours: ours.map(ours_payment),
        theirs: Some(side("paid", billed.amount, billed.currency)),
        resolution: None,
    })
}

/// What the bill says of a refund.
pub struct BilledRefund<'a> {
    pub out_trade_no: &'a str,
    pub out_refund_no: &'a str,
    pub amount: i64,
    pub currency: &'a str,
    pub succeeded: bool,
}

/// A refund in the bill against paymux's refund of that id.
pub fn billed_refund(
    account: &ChannelAccount,
    billed: &BilledRefund<'_>,
    ours: Option<&Refund>,
) -> Option<Discrepancy> {
    let ours = ours.filter(|r| r.merchant_id == account.merchant_id);
    let agrees = ours.is_some_and(|r| {
        (r.status == RefundStatus::Succeeded) == billed.succeeded
            && r.amount.minor == billed.amount
            && r.amount.currency.as_str() == billed.currency
            && r.payment_id.as_str() == billed.out_trade_no
    });
    if agrees {
        return None;
    }
    let status = if billed.succeeded {
        "refunded"
    } else {
        "not_refunded"
    };
    Some(Discrepancy {
        kind: Kind::RefundMismatch,
        payment_id: Some(billed.out_trade_no.to_string()),
        refund_id: Some(billed.out_refund_no.to_string()),
        channel_trade_no: None,
        ours: ours.map(ours_refund),
        theirs: Some(side(status, billed.amount, billed.currency)),
        resolution: ours
            .filter(|r| r.status == RefundStatus::Processing)
            .map(|_| "still processing here: the refund checks will settle it".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use paymux_core::{ChannelKind, Currency, Money, PayMethod, PaymentId};

    fn account() -> ChannelAccount {
        ChannelAccount {
            id: "acct_1".into(),
            merchant_id: "mch_1".into(),
            channel: ChannelKind::Wechat,
            config: json!({}),
            sandbox: true,
            enabled: true,
            created_at: Utc::now(),
        }
    }

    fn payment(status: PaymentStatus, amount: i64) -> Payment {
        let now = Utc::now();
        Payment {
            id: PaymentId::generate(),
            merchant_id: "mch_1".into(),
            merchant_order_no: "o".into(),
            amount: Money::new(amount, Currency::CNY).unwrap(),
            channel: ChannelKind::Wechat,
            method: PayMethod::Native,
            status,
            description: "d".into(),
            notify_url: "https://m.invalid/n".into(),
            payer: json!({}),
            metadata: json!({}),
            request_hash: "h".into(),
            channel_account_id: "acct_1".into(),
            app_id: None,
            checkout_id: None,
            group_id: None,
            pay_params: None,
            channel_trade_no: None,
            paid_at: None,
            refunded: 0,
            expires_at: now,
            created_at: now,
            updated_at: now,
        }
    }

    fn trade(amount: i64) -> BilledTrade<'static> {
        BilledTrade {
            out_trade_no: "pay_x",
            channel_trade_no: "4200",
            amount,
            currency: "CNY",
        }
    }

    fn kind(d: Option<Discrepancy>) -> Option<Kind> {
        d.map(|d| d.kind)
    }

    #[test]
    fn paid_trades_are_classified() {
        let a = account();
        let ok = payment(PaymentStatus::Succeeded, 100);
        assert_eq!(kind(paid_trade(&a, &trade(100), Some(&ok))), None);
        assert_eq!(
            kind(paid_trade(&a, &trade(99), Some(&ok))),
            Some(Kind::AmountMismatch)
        );
        assert_eq!(
            kind(paid_trade(&a, &trade(100), None)),
            Some(Kind::MissingHere)
        );
        let open = payment(PaymentStatus::Pending, 100);
        assert_eq!(
            kind(paid_trade(&a, &trade(100), Some(&open))),
            Some(Kind::MissingHere)
        );
        let closed = payment(PaymentStatus::Closed, 100);
        assert_eq!(
            kind(paid_trade(&a, &trade(100), Some(&closed))),
            Some(Kind::StatusMismatch)
        );
        // Another account's payment of that id is not this bill's.
        let elsewhere = Payment {
            channel_account_id: "acct_2".into(),
            ..ok.clone()
        };
        let d = paid_trade(&a, &trade(100), Some(&elsewhere)).unwrap();
        assert_eq!((d.kind, d.ours), (Kind::MissingHere, None));
        let d = paid_trade(&a, &trade(99), Some(&ok)).unwrap();
        assert_eq!(d.ours.unwrap()["amount"], 100);
        assert_eq!(d.theirs.unwrap()["amount"], 99);
    }

    #[test]
    fn billed_refunds_are_classified() {
        let a = account();
        let p = payment(PaymentStatus::Succeeded, 100);
        let r = Refund {
            id: "ref_1".into(),
            merchant_id: "mch_1".into(),
            payment_id: p.id.clone(),
            merchant_refund_no: "R".into(),
            amount: Money::new(40, Currency::CNY).unwrap(),
            status: RefundStatus::Succeeded,
            reason: None,
            notify_url: "https://m.invalid/r".into(),
            request_hash: "h".into(),
            channel_refund_no: None,
            failure_reason: None,
            refunded_at: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let billed = |amount, succeeded| BilledRefund {
            out_trade_no: p.id.as_str(),
            out_refund_no: "ref_1",
            amount,
            currency: "CNY",
            succeeded,
        };
        assert_eq!(billed_refund(&a, &billed(40, true), Some(&r)), None);
        assert!(billed_refund(&a, &billed(41, true), Some(&r)).is_some());
        assert!(billed_refund(&a, &billed(40, false), Some(&r)).is_some());
        assert!(billed_refund(&a, &billed(40, true), None).is_some());
        let processing = Refund {
            status: RefundStatus::Processing,
            ..r.clone()
        };
        let d = billed_refund(&a, &billed(40, true), Some(&processing)).unwrap();
        assert_eq!(d.kind, Kind::RefundMismatch);
        assert!(d.resolution.unwrap().contains("refund checks"));
    }
}
