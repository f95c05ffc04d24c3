//! Property tests of the books: any sequence of payments, settlements,
//! refunds and channel fees leaves a ledger that balances, agrees with payments and refunds,
//! and sums to what a plain model of the same sequence says. Each case runs
//! on its own merchant in one database per backend.

use chrono::{DateTime, Duration, Utc};
use paymux_core::{
    new_id, ChannelKind, Currency, Money, PayMethod, PaymentId, PaymentStatus, RefundStatus,
};
use paymux_store::testing::{self, TestDb};
use paymux_store::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::json;

#[derive(Debug, Clone)]
enum Op {
    /// A new payment of this many fen.
    Create(i64),
    /// The n-th payment (modulo how many there are) is paid, fails or closes.
    Settle(usize, PaymentStatus),
    /// A refund of the n-th payment.
    Refund(usize, i64),
    /// The n-th refund succeeds (`true`) or fails.
    SettleRefund(usize, bool),
    /// The channel's bill states a fee of this many fen for the n-th payment.
    Fee(usize, i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (1i64..50_000).prop_map(Op::Create),
        3 => (any::<usize>(), prop_oneof![
            6 => Just(PaymentStatus::Succeeded),
            1 => Just(PaymentStatus::Failed),
            1 => Just(PaymentStatus::Closed),
        ]).prop_map(|(i, s)| Op::Settle(i, s)),
        3 => (any::<usize>(), 1i64..30_000).prop_map(|(i, a)| Op::Refund(i, a)),
        3 => (any::<usize>(), prop::bool::weighted(0.8)).prop_map(|(i, ok)| Op::SettleRefund(i, ok)),
        1 => (any::<usize>(), 1i64..300).prop_map(|(i, fee)| Op::Fee(i, fee)),
    ]
}

/// What the books must say, from the sequence alone.
#[derive(Default)]
struct Model {
    payments: Vec<(PaymentId, i64, PaymentStatus)>,
    refunds: Vec<(String, usize, i64, RefundStatus)>,
    /// The fee posted per payment index.
    fees: std::collections::BTreeMap<usize, i64>,
}

impl Model {
    fn captured(&self) -> i64 {
        self.payments
            .iter()
            .filter(|p| p.2 == PaymentStatus::Succeeded)
            .map(|p| p.1)
            .sum()
    }
    fn refunded(&self) -> i64 {
        self.refunds
            .iter()
            .filter(|r| r.3 == RefundStatus::Succeeded)
            .map(|r| r.2)
            .sum()
    }
    /// Not failed refunds of payment `i`, which the store reserves.
    fn held(&self, i: usize) -> i64 {
        self.refunds
            .iter()
            .filter(|r| r.1 == i && r.3 != RefundStatus::Failed)
            .map(|r| r.2)
            .sum()
    }
}

fn at(step: usize) -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).unwrap() + Duration::seconds(step as i64)
}

async fn apply(db: &TestDb, ops: &[Op]) -> Result<(), String> {
    let s = db.store.as_ref();
    let m = Merchant {
        id: new_id("mch"),
        name: "props".into(),
        created_at: at(0),
    };
    s.insert_merchant(
        &m,
        &App::new(new_id("app"), m.id.clone(), "s".into(), at(0)),
    )
    .await
    .map_err(|e| e.to_string())?;
    let account = ChannelAccount {
        id: new_id("acct"),
        merchant_id: m.id.clone(),
        channel: ChannelKind::Alipay,
        config: json!({}),
        sandbox: true,
        enabled: true,
        created_at: at(0),
    };
    s.insert_channel_account(&account)
        .await
        .map_err(|e| e.to_string())?;
    let mut model = Model::default();
    for (step, op) in ops.iter().enumerate() {
        let now = at(step + 1);
        match *op {
            Op::Create(amount) => {
                let p = Payment {
                    id: PaymentId::generate(),
                    merchant_id: m.id.clone(),
                    merchant_order_no: new_id("o"),
                    amount: Money::new(amount, Currency::CNY).unwrap(),
                    channel: ChannelKind::Alipay,
                    method: PayMethod::Native,
                    status: PaymentStatus::Created,
                    description: "props".into(),
                    notify_url: "https://m.invalid/n".into(),
                    payer: json!({}),
                    metadata: json!({}),
                    request_hash: "h".into(),
                    channel_account_id: account.id.clone(),
                    app_id: None,
                    checkout_id: None,
                    group_id: None,
                    pay_params: None,
                    channel_trade_no: None,
                    paid_at: None,
                    refunded: 0,
                    expires_at: now + Duration::minutes(30),
                    created_at: now,
                    updated_at: now,
                };
                s.insert_payment(&p).await.map_err(|e| e.to_string())?;
                model.payments.push((p.id, amount, PaymentStatus::Created));
            }
            Op::Settle(i, to) => {
                let Some(i) = pick(i, model.payments.len()) else {
                    continue;
                };
                let (id, _, status) = model.payments[i].clone();
                if status.is_terminal() {
                    continue;
                }
                if status == PaymentStatus::Created {
                    move_payment(db, &id, PaymentStatus::Created, PaymentStatus::Pending, now)
                        .await?;
                }
                move_payment(db, &id, PaymentStatus::Pending, to, now).await?;
                model.payments[i].2 = to;
            }
            Op::Refund(i, amount) => {
                let Some(i) = pick(i, model.payments.len()) else {
                    continue;
                };
                let (id, paid, status) = model.payments[i].clone();
                let r = Refund {
                    id: new_id("ref"),
                    merchant_id: m.id.clone(),
                    payment_id: id,
                    merchant_refund_no: new_id("r"),
                    amount: Money::new(amount, Currency::CNY).unwrap(),
                    status: RefundStatus::Processing,
                    reason: None,
                    notify_url: "https://m.invalid/r".into(),
                    request_hash: "h".into(),
                    channel_refund_no: None,
                    failure_reason: None,
                    refunded_at: None,
                    created_at: now,
                    updated_at: now,
                };
                let inserted = s.insert_refund(&r).await.map_err(|e| e.to_string())?;
                let fits = status == PaymentStatus::Succeeded && model.held(i) + amount <= paid;
                match (inserted, fits) {
                    (RefundInserted::New, true) => {
                        model
                            .refunds
                            .push((r.id, i, amount, RefundStatus::Processing))
                    }
                    (RefundInserted::NotRefundable(_), false)
                        if status != PaymentStatus::Succeeded => {}
                    (RefundInserted::Exceeds { available }, false) => {
                        if available != paid - model.held(i) {
                            return Err(format!(
                                "available {available}, model {}",
                                paid - model.held(i)
                            ));
                        }
                    }
                    (other, _) => return Err(format!("refund of {amount} against {i}: {other:?}")),
                }
            }
            Op::Fee(i, fee) => {
                let Some(i) = pick(i, model.payments.len()) else {
                    continue;
                };
                let (id, amount, status) = model.payments[i].clone();
                let posted = s.post_fee(&id, fee, now).await;
                let want_ok = status == PaymentStatus::Succeeded && fee <= amount;
                match (posted, want_ok) {
                    (Ok(outcome), true) => {
                        let expected = match model.fees.get(&i) {
                            None => ledger::FeePosted::New,
                            Some(&f) if f == fee => ledger::FeePosted::Already,
                            Some(&f) => ledger::FeePosted::Differs { posted: f },
                        };
                        if outcome != expected {
                            return Err(format!(
                                "fee {fee} on {i}: {outcome:?}, model {expected:?}"
                            ));
                        }
                        model.fees.entry(i).or_insert(fee);
                    }
                    (Err(StoreError::Invalid(_)), false) => {}
                    (other, _) => return Err(format!("fee {fee} on {i}: {other:?}")),
                }
            }
            Op::SettleRefund(j, ok) => {
                let Some(j) = pick(j, model.refunds.len()) else {
                    continue;
                };
                if model.refunds[j].3 != RefundStatus::Processing {
                    continue;
                }
                let to = if ok {
                    RefundStatus::Succeeded
                } else {
                    RefundStatus::Failed
                };
                let t = s
                    .transition_refund(
                        &model.refunds[j].0,
                        RefundStatus::Processing,
                        to,
                        &RefundPatch::default(),
                        None,
                        now,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                if !matches!(t, RefundTransition::Applied(_)) {
                    return Err(format!("refund transition: {t:?}"));
                }
                model.refunds[j].3 = to;
            }
        }
    }

    let check = s.ledger_check(5).await.map_err(|e| e.to_string())?;
    if !check.ok() {
        return Err(format!("ledger check: {:?}", check.issues));
    }
    let (mut receivable, mut revenue, mut refunds, mut fees) = (0, 0, 0, 0);
    for b in s.balances(&m.id).await.map_err(|e| e.to_string())? {
        let net = b.debit - b.credit;
        match b.account {
            LedgerAccount::ChannelReceivable => receivable += net,
            LedgerAccount::MerchantRevenue => revenue -= net,
            LedgerAccount::MerchantRefunds => refunds += net,
            LedgerAccount::ChannelFees => fees += net,
        }
    }
    let model_fees: i64 = model.fees.values().sum();
    let want = (
        model.captured() - model.refunded() - model_fees,
        model.captured(),
        model.refunded(),
        model_fees,
    );
    let books = (receivable, revenue, refunds, fees);
    if books != want {
        return Err(format!("books {books:?}, model {want:?}"));
    }
    Ok(())
}

fn pick(i: usize, len: usize) -> Option<usize> {
    (len > 0).then(|| i % len)
}

async fn move_payment(
    db: &TestDb,
    id: &PaymentId,
    from: PaymentStatus,
    to: PaymentStatus,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let t = db
        .store
        .transition(id, from, to, &TransitionPatch::default(), None, now)
        .await
        .map_err(|e| e.to_string())?;
    match t {
        Transition::Applied(_) => Ok(()),
        other => Err(format!("{from} → {to}: {other:?}")),
    }
}

fn run(db: Option<TestDb>, rt: &tokio::runtime::Runtime) {
    let Some(db) = db else { return };
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&prop::collection::vec(op(), 1..40), |ops| {
        rt.block_on(apply(&db, &ops)).map_err(TestCaseError::fail)
    });
    rt.block_on(db.cleanup());
    if let Err(e) = result {
        panic!("{e}");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn sqlite() {
    let rt = runtime();
    let db = rt.block_on(testing::sqlite());
    run(Some(db), &rt);
}

#[test]
fn postgres() {
    let rt = runtime();
    let db = rt.block_on(testing::postgres());
    run(db, &rt);
}
