//! The books: every movement of money as balanced double-entry postings,
//! written by the store in the transaction of the state change that causes
//! it, and the checks that prove the books agree with payments and refunds.
//!
//! Accounts are kept per merchant and per channel account:
//! - `channel_receivable` (asset): what the channel holds for the merchant;
//! - `merchant_revenue` (income): payments captured;
//! - `merchant_refunds` (contra-income): refunds paid back;
//! - `channel_fees` (expense): what the channel kept, as its bill states.
//!
//! A captured payment debits the receivable and credits revenue; a refund
//! that succeeded debits refunds and credits the receivable; a fee (posted
//! when the channel's bill is reconciled) debits fees and credits the
//! receivable. So, per channel account and currency, receivable = revenue −
//! refunds − fees: what the channel owes the merchant.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use paymux_core::ChannelKind;
use serde::Serialize;

use crate::model::{Payment, Refund};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerAccount {
    ChannelReceivable,
    MerchantRevenue,
    MerchantRefunds,
    ChannelFees,
}

impl LedgerAccount {
    pub const ALL: [LedgerAccount; 4] = [
        LedgerAccount::ChannelReceivable,
        LedgerAccount::MerchantRevenue,
        LedgerAccount::MerchantRefunds,
        LedgerAccount::ChannelFees,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LedgerAccount::ChannelReceivable => "channel_receivable",
            LedgerAccount::MerchantRevenue => "merchant_revenue",
            LedgerAccount::MerchantRefunds => "merchant_refunds",
            LedgerAccount::ChannelFees => "channel_fees",
        }
    }
}

impl fmt::Display for LedgerAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LedgerAccount {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        LedgerAccount::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a ledger account"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Debit,
    Credit,
}

/// A captured payment: the channel now holds the amount for the merchant.
pub const CAPTURE: [(LedgerAccount, Side); 2] = [
    (LedgerAccount::ChannelReceivable, Side::Debit),
    (LedgerAccount::MerchantRevenue, Side::Credit),
];

/// A refund that succeeded: the channel paid the amount back to the payer.
pub const REFUND: [(LedgerAccount, Side); 2] = [
    (LedgerAccount::MerchantRefunds, Side::Debit),
    (LedgerAccount::ChannelReceivable, Side::Credit),
];

/// The channel's fee for a payment, from its bill.
pub const FEE: [(LedgerAccount, Side); 2] = [
    (LedgerAccount::ChannelFees, Side::Debit),
    (LedgerAccount::ChannelReceivable, Side::Credit),
];

/// One row of the ledger: one account's side of one ledger transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Posting {
    /// `capture:<payment id>`, `refund:<refund id>` or `fee:<payment id>`.
    pub txn_id: String,
    pub account: LedgerAccount,
    pub merchant_id: String,
    pub channel_account_id: String,
    pub currency: String,
    pub debit: i64,
    pub credit: i64,
    pub payment_id: String,
    pub refund_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The ledger transaction id of a payment's capture.
pub fn capture_txn(payment_id: &str) -> String {
    format!("capture:{payment_id}")
}

/// The postings of a payment that has just succeeded.
pub fn capture(p: &Payment, at: DateTime<Utc>) -> Vec<Posting> {
    payment_legs(p, &CAPTURE, capture_txn(p.id.as_str()), p.amount.minor, at)
}

/// The ledger transaction id of a payment's fee.
pub fn fee_txn(payment_id: &str) -> String {
    format!("fee:{payment_id}")
}

/// The postings of the channel's fee of `fee` minor units for a captured payment.
pub fn fee(p: &Payment, fee: i64, at: DateTime<Utc>) -> Vec<Posting> {
    payment_legs(p, &FEE, fee_txn(p.id.as_str()), fee, at)
}

/// A payment's own transaction (not a refund's): `amount` on each of `legs`.
fn payment_legs(
    p: &Payment,
    legs_of: &[(LedgerAccount, Side)],
    txn_id: String,
    amount: i64,
    at: DateTime<Utc>,
) -> Vec<Posting> {
    legs(legs_of, amount, |account| Posting {
        txn_id: txn_id.clone(),
        account,
        merchant_id: p.merchant_id.clone(),
        channel_account_id: p.channel_account_id.clone(),
        currency: p.amount.currency.as_str().to_owned(),
        debit: 0,
        credit: 0,
        payment_id: p.id.as_str().to_owned(),
        refund_id: None,
        created_at: at,
    })
}

/// What [`crate::Store::post_fee`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeePosted {
    New,
    /// The same fee was posted before.
    Already,
    /// Another fee was posted before: this is it (nothing changed).
    Differs {
        posted: i64,
    },
}

/// The postings of a refund that has just succeeded; `channel_account_id`
/// is its payment's.
pub fn refund(r: &Refund, channel_account_id: &str, at: DateTime<Utc>) -> Vec<Posting> {
    legs(&REFUND, r.amount.minor, |account| Posting {
        txn_id: format!("refund:{}", r.id),
        account,
        merchant_id: r.merchant_id.clone(),
        channel_account_id: channel_account_id.to_owned(),
        currency: r.amount.currency.as_str().to_owned(),
        debit: 0,
        credit: 0,
        payment_id: r.payment_id.as_str().to_owned(),
        refund_id: Some(r.id.clone()),
        created_at: at,
    })
}

fn legs(
    legs: &[(LedgerAccount, Side)],
    amount: i64,
    base: impl Fn(LedgerAccount) -> Posting,
) -> Vec<Posting> {
    assert!(amount > 0, "a posting moves a positive amount");
    let postings: Vec<Posting> = legs
        .iter()
        .map(|&(account, side)| {
            let mut p = base(account);
            match side {
                Side::Debit => p.debit = amount,
                Side::Credit => p.credit = amount,
            }
            p
        })
        .collect();
    debug_assert_eq!(
        postings.iter().map(|p| p.debit).sum::<i64>(),
        postings.iter().map(|p| p.credit).sum::<i64>(),
        "a ledger transaction balances"
    );
    postings
}

/// The fee posted for a payment, if any.
pub(crate) const POSTED_FEE: &str = "SELECT CAST(SUM(debit_minor) AS BIGINT) AS fee
     FROM ledger_postings WHERE txn_id = $1 AND account = 'channel_fees'";

/// Inserts one posting; `$1`…`$10` as [`Posting`]'s fields are ordered.
pub(crate) const INSERT_POSTING: &str = "INSERT INTO ledger_postings (txn_id, account,
        merchant_id, channel_account_id, currency, debit_minor, credit_minor, payment_id,
        refund_id, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// Debits and credits of one account of a merchant, per channel account
/// and currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountBalance {
    pub channel_account_id: String,
    pub channel: ChannelKind,
    pub currency: String,
    pub account: LedgerAccount,
    pub debit: i64,
    pub credit: i64,
}

/// A merchant's books at one channel account in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BalanceSummary {
    pub channel_account_id: String,
    pub channel: ChannelKind,
    pub currency: String,
    /// Payments captured.
    pub captured: i64,
    /// Refunds paid back.
    pub refunded: i64,
    /// The channel's fees, as far as its bills have been reconciled.
    pub fees: i64,
    /// What the channel holds for the merchant: `captured − refunded − fees`.
    pub receivable: i64,
}

/// Folds account rows (as [`crate::Store::balances`] returns them, ordered
/// by channel account and currency) into one summary per channel account
/// and currency.
pub fn summarise(rows: &[AccountBalance]) -> Vec<BalanceSummary> {
    let mut out: Vec<BalanceSummary> = Vec::new();
    for r in rows {
        let same = out.last().is_some_and(|s| {
            s.channel_account_id == r.channel_account_id && s.currency == r.currency
        });
        if !same {
            out.push(BalanceSummary {
                channel_account_id: r.channel_account_id.clone(),
                channel: r.channel,
                currency: r.currency.clone(),
                captured: 0,
                refunded: 0,
                fees: 0,
                receivable: 0,
            });
        }
        let s = out.last_mut().expect("pushed above");
        match r.account {
            LedgerAccount::ChannelReceivable => s.receivable += r.debit - r.credit,
            LedgerAccount::MerchantRevenue => s.captured += r.credit - r.debit,
            LedgerAccount::MerchantRefunds => s.refunded += r.debit - r.credit,
            LedgerAccount::ChannelFees => s.fees += r.debit - r.credit,
        }
    }
    out
}

/// The merchant's accounts, summed per channel account and currency.
pub(crate) const BALANCES: &str = "SELECT l.channel_account_id, ca.channel, l.currency, l.account,
        CAST(SUM(l.debit_minor) AS BIGINT) AS debit,
        CAST(SUM(l.credit_minor) AS BIGINT) AS credit
     FROM ledger_postings l JOIN channel_accounts ca ON ca.id = l.channel_account_id
     WHERE l.merchant_id = $1
     GROUP BY l.channel_account_id, ca.channel, l.currency, l.account
     ORDER BY l.channel_account_id, l.currency, l.account";

/// A payment's postings, in the order they were made.
pub(crate) const PAYMENT_POSTINGS: &str = "SELECT txn_id, account, merchant_id, channel_account_id,
        currency, debit_minor, credit_minor, payment_id, refund_id, created_at
     FROM ledger_postings WHERE payment_id = $1 ORDER BY created_at, txn_id, debit_minor DESC";

/// What a ledger check found wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerIssueKind {
    /// A ledger transaction whose debits differ from its credits (or that
    /// mixes currencies).
    Unbalanced,
    /// A posting to an account the ledger does not have.
    UnknownAccount,
    /// A posting on an account, or a side, that its kind of transaction
    /// (capture, refund, fee) does not post to.
    Misplaced,
    /// A posting whose merchant, channel account or currency is not its payment's.
    Misattributed,
    /// A payment whose captured amount in the ledger is not what its status says.
    CaptureMismatch,
    /// A refund whose refunded amount in the ledger is not what its status says.
    RefundMismatch,
    /// A payment whose refunded total is not the sum of its succeeded refunds.
    RefundedTotalMismatch,
    /// A channel account whose receivable is not its revenue minus its
    /// refunds and fees.
    ReceivableMismatch,
}

/// One inconsistency: what is wrong, about what, and the two sides of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerIssue {
    pub kind: LedgerIssueKind,
    /// The transaction, payment, refund or channel account concerned.
    pub subject: String,
    /// What payments and refunds (or the debit side) say.
    pub expected: i64,
    /// What the ledger (or the credit side) says.
    pub actual: i64,
}

impl fmt::Display for LedgerIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = serde_json::to_value(self.kind).expect("serialises");
        write!(
            f,
            "{} {}: expected {}, ledger has {}",
            kind.as_str().unwrap_or_default(),
            self.subject,
            self.expected,
            self.actual
        )
    }
}

/// The result of checking the whole ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LedgerCheck {
    pub transactions: i64,
    pub postings: i64,
    /// The first inconsistencies found, by kind, at most the limit asked for.
    pub issues: Vec<LedgerIssue>,
}

impl LedgerCheck {
    pub fn ok(&self) -> bool {
        self.issues.is_empty()
    }
}

/// Counts of what a check covers: postings, then transactions.
pub(crate) const COUNTS: &str =
    "SELECT COUNT(*) AS postings, COUNT(DISTINCT txn_id) AS transactions FROM ledger_postings";

/// The checks, each a query of `(subject, expected, actual)` rows that lists
/// only what is wrong; the backends run them in order with a `LIMIT`. Plain
/// SQL that SQLite and PostgreSQL read alike.
pub(crate) const CHECKS: &[(LedgerIssueKind, &str)] = &[
    (
        LedgerIssueKind::Unbalanced,
        "SELECT txn_id AS subject, CAST(SUM(debit_minor) AS BIGINT) AS expected,
                CAST(SUM(credit_minor) AS BIGINT) AS actual
         FROM ledger_postings GROUP BY txn_id
         HAVING SUM(debit_minor) <> SUM(credit_minor) OR COUNT(DISTINCT currency) > 1
         ORDER BY txn_id",
    ),
    (
        LedgerIssueKind::UnknownAccount,
        "SELECT txn_id || ' ' || account AS subject, CAST(0 AS BIGINT) AS expected,
                debit_minor + credit_minor AS actual
         FROM ledger_postings
         WHERE account NOT IN
             ('channel_receivable', 'merchant_revenue', 'merchant_refunds', 'channel_fees')
         ORDER BY txn_id",
    ),
    (
        LedgerIssueKind::Misplaced,
        "SELECT txn_id || ' ' || account AS subject, CAST(0 AS BIGINT) AS expected,
                debit_minor + credit_minor AS actual
         FROM ledger_postings
         WHERE NOT (
             (txn_id LIKE 'capture:%' AND refund_id IS NULL
                 AND ((account = 'channel_receivable' AND credit_minor = 0)
                   OR (account = 'merchant_revenue' AND debit_minor = 0)))
             OR (txn_id LIKE 'refund:%' AND refund_id IS NOT NULL
                 AND ((account = 'merchant_refunds' AND credit_minor = 0)
                   OR (account = 'channel_receivable' AND debit_minor = 0)))
             OR (txn_id LIKE 'fee:%' AND refund_id IS NULL
                 AND ((account = 'channel_fees' AND credit_minor = 0)
                   OR (account = 'channel_receivable' AND debit_minor = 0))))
         ORDER BY txn_id",
    ),
    (
        LedgerIssueKind::Misattributed,
        "SELECT l.txn_id || ' ' || l.account AS subject, CAST(0 AS BIGINT) AS expected,
                debit_minor + credit_minor AS actual
         FROM ledger_postings l JOIN payments p ON p.id = l.payment_id
         WHERE l.merchant_id <> p.merchant_id OR l.channel_account_id <> p.channel_account_id
            OR l.currency <> p.currency
         ORDER BY l.txn_id",
    ),
    (
        LedgerIssueKind::CaptureMismatch,
        "SELECT p.id AS subject,
                CASE WHEN p.status = 'succeeded' THEN p.amount_minor ELSE 0 END AS expected,
                COALESCE(l.captured, 0) AS actual
         FROM payments p LEFT JOIN (
             SELECT payment_id, CAST(SUM(credit_minor) - SUM(debit_minor) AS BIGINT) AS captured
             FROM ledger_postings WHERE account = 'merchant_revenue' GROUP BY payment_id
         ) l ON l.payment_id = p.id
         WHERE COALESCE(l.captured, 0)
               <> CASE WHEN p.status = 'succeeded' THEN p.amount_minor ELSE 0 END
         ORDER BY p.id",
    ),
    (
        LedgerIssueKind::RefundMismatch,
        "SELECT r.id AS subject,
                CASE WHEN r.status = 'succeeded' THEN r.amount_minor ELSE 0 END AS expected,
                COALESCE(l.refunded, 0) AS actual
         FROM refunds r LEFT JOIN (
             SELECT refund_id, CAST(SUM(debit_minor) - SUM(credit_minor) AS BIGINT) AS refunded
             FROM ledger_postings WHERE account = 'merchant_refunds' GROUP BY refund_id
         ) l ON l.refund_id = r.id
         WHERE COALESCE(l.refunded, 0)
               <> CASE WHEN r.status = 'succeeded' THEN r.amount_minor ELSE 0 END
         ORDER BY r.id",
    ),
    (
        LedgerIssueKind::RefundedTotalMismatch,
        "SELECT p.id AS subject, COALESCE(r.total, 0) AS expected, p.refunded_minor AS actual
         FROM payments p LEFT JOIN (
             SELECT payment_id, CAST(SUM(amount_minor) AS BIGINT) AS total
             FROM refunds WHERE status = 'succeeded' GROUP BY payment_id
         ) r ON r.payment_id = p.id
         WHERE p.refunded_minor <> COALESCE(r.total, 0)
         ORDER BY p.id",
    ),
    (
        LedgerIssueKind::ReceivableMismatch,
        "SELECT subject, expected, actual FROM (
             SELECT merchant_id || ' ' || channel_account_id || ' ' || currency AS subject,
                 CAST(SUM(CASE WHEN account <> 'channel_receivable'
                               THEN credit_minor - debit_minor ELSE 0 END) AS BIGINT) AS expected,
                 CAST(SUM(CASE WHEN account = 'channel_receivable'
                               THEN debit_minor - credit_minor ELSE 0 END) AS BIGINT) AS actual
             FROM ledger_postings GROUP BY merchant_id, channel_account_id, currency
         ) books
         WHERE expected <> actual
         ORDER BY subject",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use paymux_core::{Currency, Money, PayMethod, PaymentId, PaymentStatus};
    use serde_json::json;

    fn payment(amount: i64) -> Payment {
        let now = Utc::now();
        Payment {
            id: PaymentId::generate(),
            merchant_id: "mch_1".into(),
            merchant_order_no: "o1".into(),
            amount: Money::new(amount, Currency::CNY).unwrap(),
            channel: ChannelKind::Wechat,
            method: PayMethod::Native,
            status: PaymentStatus::Succeeded,
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

    #[test]
    fn a_capture_debits_the_receivable_and_credits_revenue() {
        let p = payment(990);
        let postings = capture(&p, Utc::now());
        assert_eq!(postings.len(), 2);
        assert_eq!(postings[0].account, LedgerAccount::ChannelReceivable);
        assert_eq!((postings[0].debit, postings[0].credit), (990, 0));
        assert_eq!(postings[1].account, LedgerAccount::MerchantRevenue);
        assert_eq!((postings[1].debit, postings[1].credit), (0, 990));
        assert!(postings
            .iter()
            .all(|x| x.txn_id == capture_txn(p.id.as_str())));
    }

    #[test]
    fn summaries_fold_accounts_per_channel_account_and_currency() {
        let row = |acct: &str, account, debit, credit| AccountBalance {
            channel_account_id: acct.into(),
            channel: ChannelKind::Alipay,
            currency: "CNY".into(),
            account,
            debit,
            credit,
        };
        let rows = [
            row("a1", LedgerAccount::ChannelReceivable, 500, 120),
            row("a1", LedgerAccount::MerchantRefunds, 120, 0),
            row("a1", LedgerAccount::MerchantRevenue, 0, 500),
            row("a2", LedgerAccount::ChannelReceivable, 7, 0),
            row("a2", LedgerAccount::MerchantRevenue, 0, 7),
        ];
        let s = summarise(&rows);
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].captured, s[0].refunded, s[0].receivable),
            (500, 120, 380)
        );
        assert_eq!((s[1].captured, s[1].refunded, s[1].receivable), (7, 0, 7));
        assert!(summarise(&[]).is_empty());
    }

    #[test]
    fn accounts_round_trip_their_names() {
        for a in LedgerAccount::ALL {
            assert_eq!(a.as_str().parse::<LedgerAccount>(), Ok(a));
            assert_eq!(serde_json::to_value(a).unwrap(), json!(a.as_str()));
        }
        assert!("cash".parse::<LedgerAccount>().is_err());
    }

    #[test]
    fn every_check_names_only_known_accounts() {
        // The SQL spells account names; they must be the enum's.
        for (_, sql) in CHECKS {
            for word in sql.split(|c: char| !(c.is_ascii_lowercase() || c == '_')) {
                let account_like = word.starts_with("merchant_r")
                    || (word.starts_with("channel_") && word != "channel_account_id");
                if account_like {
                    assert!(word.parse::<LedgerAccount>().is_ok(), "{word} in {sql}");
                }
            }
        }
    }
}
