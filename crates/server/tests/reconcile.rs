//! Reconciliation end to end on WeChat Pay and Alipay: payments and refunds
//! through the sandbox, differences injected into the simulator's bill, and
//! the run reports exactly those, settling the payment whose callback was lost.

#[macro_use]
mod common;

use common::refunds::{spawn_refund_app, RefundApp};
use paymux_core::Clock;
use paymux_server::reconcile::china_date;
use reqwest::Method;
use serde_json::{json, Value};

async fn spawn_app(db: &paymux_store::testing::TestDb, channel: &'static str) -> RefundApp {
    spawn_refund_app(db, channel).await
}

/// A Native payment paid at the simulator with its callback held back
/// (lost): paymux still shows it pending.
async fn paid_without_callback(app: &RefundApp, order_no: &str, amount: i64) -> String {
    let r = app
        .client
        .post(
            "/v1/payments",
            &json!({"merchant_order_no": order_no, "amount": amount, "channel": app.channel,
                    "method": "native", "description": "a pair of shoes",
                    "notify_url": app.receiver.url}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    let (status, paid) = app
        .pay_at(app.channel, &json!({"out_trade_no": id, "hold": true}))
        .await;
    assert_eq!(status, 200, "{paid}");
    id
}

fn kinds(run: &Value) -> Vec<(String, String)> {
    let mut k: Vec<_> = run["discrepancies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_string(),
                d["refund_id"]
                    .as_str()
                    .or(d["payment_id"].as_str())
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    k.sort();
    k
}

on_every_backend!(
    a_wechat_bill_is_reconciled_and_each_difference_reported,
    |db| {
        every_difference_is_reported(&db, "wechat").await;
    }
);

on_every_backend!(
    an_alipay_bill_is_reconciled_and_each_difference_reported,
    |db| {
        every_difference_is_reported(&db, "alipay").await;
    }
);

async fn every_difference_is_reported(db: &paymux_store::testing::TestDb, channel: &'static str) {
    let mut app = spawn_app(db, channel).await;
    let date = china_date(app.clock.now()).to_string();
    let reconcile = json!({"channel": channel, "date": date});

    // A day that agrees: three payments, one partly refunded.
    let mut ids = Vec::new();
    for (no, amount) in [("RC-1", 1000), ("RC-2", 2000), ("RC-3", 3000)] {
        ids.push(app.paid_payment(no, amount).await);
    }
    let (status, refund) = app.refund(&ids[0], "RCR-1", 400).await;
    assert_eq!(status, 201, "{refund}");
    let refund_id = refund["id"].as_str().unwrap().to_string();
    assert_eq!(app.event().await["type"], "refund.succeeded");
    let (status, body) = app
        .admin(Method::POST, "/reconciliations", Some(reconcile.clone()))
        .await;
    assert_eq!(status, 200, "{body}");
    let run = &body["data"][0];
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        (&run["matched"], &run["discrepancy_count"]),
        (&json!(4), &json!(0)),
        "{run}"
    );
    // The bill's fees (the simulators charge 0.6 %) are in the books now,
    // and a second run posts none twice.
    let fees = json!(6 + 12 + 18);
    let books = app.checked_books(db).await;
    assert_eq!(
        (&books["fees"], &books["receivable"]),
        (&fees, &json!(6000 - 400 - 36))
    );

    // Now every kind of difference: a payment whose callback was lost
    // (missing here, and settled by the run), a trade paymux never made, a
    // payment and a refund the bill lacks, an amount the bill changed.
    let lost = paid_without_callback(&app, "RC-LOST", 700).await;
    let (status, _) = app
        .http
        .post(format!(
            "{}/sim/{channel}/bills/faults",
            app.server.base_url()
        ))
        .json(&json!({"drop": [ids[1], refund_id], "add_unknown": 1,
                  "change_amount": {ids[2].clone(): 2999}}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 200);
    let (status, body) = app
        .admin(Method::POST, "/reconciliations", Some(reconcile.clone()))
        .await;
    assert_eq!(status, 200, "{body}");
    let run = body["data"][0].clone();
    assert_eq!(run["status"], "succeeded", "{run}");
    let found = kinds(&run);
    let unknown = found
        .iter()
        .find(|(k, id)| k == "missing_here" && *id != lost)
        .expect("the unknown trade")
        .1
        .clone();
    assert!(unknown.starts_with("unknown"), "{run}");
    let mut want = vec![
        ("amount_mismatch".to_string(), ids[2].clone()),
        ("missing_at_channel".to_string(), ids[1].clone()),
        ("missing_here".to_string(), lost.clone()),
        ("missing_here".to_string(), unknown),
        ("refund_mismatch".to_string(), refund_id.clone()),
    ];
    want.sort();
    assert_eq!(found, want, "{run}");
    // RC-1 matched; so did nothing else: RC-2 and the refund were dropped,
    // RC-3 changed, the lost one was missing here.
    assert_eq!(
        (&run["matched"], &run["discrepancy_count"]),
        (&json!(1), &json!(5)),
        "{run}"
    );
    let d = |kind: &str, id: &str| {
        run["discrepancies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["kind"] == kind && (d["payment_id"] == id || d["refund_id"] == id))
            .unwrap()
            .clone()
    };
    let changed = d("amount_mismatch", &ids[2]);
    assert_eq!(
        (&changed["ours"]["amount"], &changed["theirs"]["amount"]),
        (&json!(3000), &json!(2999))
    );
    let settled = d("missing_here", &lost);
    assert!(
        settled["resolution"]
            .as_str()
            .unwrap()
            .starts_with("settled"),
        "{settled}"
    );
    // The lost payment is paid now, and the merchant heard of it once.
    let p = app
        .client
        .get(&format!("/v1/payments/{lost}"))
        .await
        .unwrap();
    assert_eq!(p.body["status"], "succeeded");
    let e = app.event().await;
    assert_eq!(
        (e["type"].as_str(), e["data"]["id"].as_str()),
        (Some("payment.succeeded"), Some(lost.as_str()))
    );

    // The run is stored, and exported for finance.
    let run_id = run["run_id"].as_str().unwrap();
    let (status, stored) = app
        .admin(Method::GET, &format!("/reconciliations/{run_id}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(stored, run);
    let csv = app
        .http
        .get(format!(
            "{}/admin/reconciliations/{run_id}/report.csv",
            app.server.base_url()
        ))
        .bearer_auth(common::refunds::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = csv.text().await.unwrap();
    assert_eq!(csv.lines().count(), 6, "{csv}");
    assert!(
        csv.contains(&format!("amount_mismatch,{}", ids[2])),
        "{csv}"
    );

    // The lost payment's fee joined the others; none was posted twice.
    let books = app.checked_books(db).await;
    assert_eq!(books["fees"], json!(36 + 4), "{books}");
    // The faults were for that bill only, and the lost payment is settled:
    // a third run finds the day in agreement.
    let (_, body) = app
        .admin(Method::POST, "/reconciliations", Some(reconcile))
        .await;
    let run = &body["data"][0];
    assert_eq!(
        (&run["matched"], &run["discrepancy_count"]),
        (&json!(5), &json!(0)),
        "{run}"
    );
    app.no_more_events().await;
    app.app.server.stop();
}

on_every_backend!(reconciliation_requests_are_checked, |db| {
    let app = spawn_app(&db, "wechat").await;
    for (body, code) in [
        (json!({"channel": "wechat", "date": "2026-13-01"}), 400),
        (json!({"channel": "paypal", "date": "2026-12-01"}), 400),
        (
            json!({"channel": "wechat", "date": "2026-12-01", "account_id": "acct_nope"}),
            400,
        ),
        (json!({"channel": "wechat"}), 400),
    ] {
        let (status, answer) = app
            .admin(Method::POST, "/reconciliations", Some(body.clone()))
            .await;
        assert_eq!(status, code, "{body}: {answer}");
    }
    // A channel whose bills paymux does not read yet: the run fails, saying so.
    // (The sandbox opens a merchant's UnionPay account with its first payment.)
    let r = app
        .client
        .post(
            "/v1/payments",
            &json!({"merchant_order_no": "RC-UP", "amount": 100, "channel": "unionpay",
                    "method": "native", "description": "tea", "notify_url": app.receiver.url}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let (status, body) = app
        .admin(
            Method::POST,
            "/reconciliations",
            Some(json!({"channel": "unionpay", "date": "2026-12-01"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["status"], "failed");
    assert!(
        body["data"][0]["error"]
            .as_str()
            .unwrap()
            .contains("does not read"),
        "{body}"
    );
    let (status, _) = app
        .admin(Method::GET, "/reconciliations/rec_nope", None)
        .await;
    assert_eq!(status, 404);
    app.app.server.stop();
});

on_every_backend!(the_daily_run_reconciles_yesterday_once, |db| {
    let mut app = common::refunds::spawn_refund_app_with(&db, "wechat", |c| {
        c.reconcile.check_interval_secs = 1;
    })
    .await;
    let pid = app.paid_payment("RD-1", 500).await;
    let payment = app
        .client
        .get(&format!("/v1/payments/{pid}"))
        .await
        .unwrap();
    assert_eq!(payment.body["status"], "succeeded");
    let today = china_date(app.clock.now());
    let account = db
        .store
        .list_channel_accounts(None)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.channel == paymux_core::ChannelKind::Wechat)
        .unwrap();
    // Tomorrow, 10:30 in China: today's bill is due.
    let (tomorrow, _) = paymux_server::reconcile::china_day(today.succ_opt().unwrap());
    app.clock
        .set(tomorrow + chrono::Duration::minutes(10 * 60 + 30));
    let mut runs = Vec::new();
    for _ in 0..100 {
        runs = db.store.reconciliations(&account.id, today).await.unwrap();
        if runs.iter().any(|r| r.finished_at.is_some()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert_eq!(
        (run.trigger.as_str(), run.status.as_str()),
        ("daily", "succeeded"),
        "{run:?}"
    );
    assert_eq!((run.matched, run.discrepancy_count), (1, 0));
    // Later rounds leave the day alone.
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    assert_eq!(
        db.store
            .reconciliations(&account.id, today)
            .await
            .unwrap()
            .len(),
        1
    );
    let (status, listed) = app
        .admin(
            Method::GET,
            &format!(
                "/reconciliations?channel_account_id={}&date={today}",
                account.id
            ),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed["data"][0]["run_id"], run.id.as_str());
    app.app.server.stop();
});
