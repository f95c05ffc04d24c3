//! Refunds end to end through Alipay: the real server on a random port, the
//! in-process Alipay simulator (which keeps the channel's books), a merchant
//! notify endpoint, on every store backend available. Alipay refunds settle
//! in the call; a lost answer is settled by `alipay.trade.fastpay.refund.query`.

#[macro_use]
mod common;

use common::refunds::{spawn_refund_app, RefundApp};
use paymux_store::testing::TestDb;
use serde_json::{json, Value};

async fn spawn_app(db: &TestDb) -> RefundApp {
    spawn_refund_app(db, "alipay").await
}

/// (out_request_no, fen) of the simulator's books.
fn books_of(books: &[Value]) -> Vec<(String, i64)> {
    books
        .iter()
        .map(|r| {
            (
                r["out_request_no"].as_str().unwrap().to_string(),
                r["amount"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// How many Alipay notifies paymux applied and how many it did not, from `/metrics`.
async fn notifies(app: &RefundApp) -> (u64, u64) {
    let text = app
        .http
        .get(format!("{}/metrics", app.server.base_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut counts = (0, 0);
    for line in text
        .lines()
        .filter(|l| l.starts_with("paymux_callbacks_total"))
    {
        let n = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        if line.contains("result=\"ok\"") {
            counts.0 += n;
        } else {
            counts.1 += n;
        }
    }
    counts
}

on_every_backend!(a_full_alipay_refund_settles_in_the_call, |db| {
    let mut app = spawn_app(&db).await;
    let pid = app.paid_payment("A-FULL", 2599).await;
    let (status, refund) = app.refund(&pid, "AF-1", 2599).await;
    assert_eq!(status, 201, "{refund}");
    // fund_change Y: refunded by the call itself.
    assert_eq!(refund["status"], "succeeded");
    assert!(refund["refunded_at"].is_string());
    let id = refund["id"].as_str().unwrap().to_string();
    let event = app.event().await;
    assert_eq!(event["type"], "refund.succeeded");
    assert_eq!(event["data"]["id"], id.as_str());
    assert_eq!(
        books_of(&app.sim_refunds(&pid).await),
        vec![(id.clone(), 2599)]
    );
    // Alipay then notifies the trade as TRADE_CLOSED: acknowledged, and the
    // payment stays succeeded with nothing sent to the merchant.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.status(&pid).await, "succeeded");
    // (Metrics are per process: other tests add to the count, never to refusals.)
    let (applied, refused) = notifies(&app).await;
    assert!(
        applied >= 2 && refused == 0,
        "{applied} applied, {refused} not"
    );
    let (status, body) = app.refund(&pid, "AF-2", 1).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("REFUND_EXCEEDS_AVAILABLE"))
    );
    app.no_more_events().await;
    app.app.server.stop();
});

on_every_backend!(partial_alipay_refunds_are_exact_and_never_repeated, |db| {
    let mut app = spawn_app(&db).await;
    let pid = app.paid_payment("A-PART", 1000).await;
    let mut ids = Vec::new();
    for (no, amount) in [("AP-1", 300), ("AP-2", 500)] {
        let (status, r) = app.refund(&pid, no, amount).await;
        assert_eq!(
            (status, r["status"].as_str()),
            (201, Some("succeeded")),
            "{r}"
        );
        ids.push((r["id"].as_str().unwrap().to_string(), amount));
        assert_eq!(app.event().await["type"], "refund.succeeded");
    }
    let (status, r) = app.refund(&pid, "AP-3", 201).await;
    assert_eq!(
        (status, r["error"]["code"].as_str()),
        (409, Some("REFUND_EXCEEDS_AVAILABLE")),
        "{r}"
    );
    // The same request again: the same refund, nothing more at Alipay.
    let (status, again) = app.refund(&pid, "AP-1", 300).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], ids[0].0.as_str());
    assert_eq!(books_of(&app.sim_refunds(&pid).await), ids);
    assert_eq!(app.status(&pid).await, "succeeded");
    let books = app.checked_books(&db).await;
    assert_eq!(
        (&books["captured"], &books["refunded"], &books["receivable"]),
        (&json!(1000), &json!(800), &json!(200))
    );
    app.no_more_events().await;
    app.app.server.stop();
});

on_every_backend!(lost_alipay_refund_answers_are_settled_by_query, |db| {
    let mut app = spawn_app(&db).await;
    let pid = app.paid_payment("A-LOST", 900).await;
    // A 503: Alipay did nothing; the check finds no refund and sends it again.
    app.inject_faults(json!({"error_rate": 1.0})).await;
    let (status, first) = app.refund(&pid, "AL-1", 400).await;
    assert_eq!(
        (status, first["status"].as_str()),
        (201, Some("processing")),
        "{first}"
    );
    assert!(app.sim_refunds(&pid).await.is_empty());
    // A timeout: Alipay refunded, the answer never came.
    app.inject_faults(json!({"timeout_rate": 1.0, "timeout_ms": 2000}))
        .await;
    let (status, second) = app.refund(&pid, "AL-2", 500).await;
    assert_eq!(
        (status, second["status"].as_str()),
        (201, Some("processing")),
        "{second}"
    );
    app.inject_faults(json!({})).await;
    app.advance(61);
    for r in [&first, &second] {
        app.wait_refund(r["id"].as_str().unwrap(), "succeeded")
            .await;
    }
    for _ in 0..2 {
        assert_eq!(app.event().await["type"], "refund.succeeded");
    }
    let mut books = books_of(&app.sim_refunds(&pid).await);
    books.sort_by_key(|(_, fen)| *fen);
    assert_eq!(
        books,
        vec![
            (first["id"].as_str().unwrap().to_string(), 400),
            (second["id"].as_str().unwrap().to_string(), 500)
        ]
    );
    app.advance(120);
    app.no_more_events().await;
    app.app.server.stop();
});

on_every_backend!(an_alipay_refund_refused_frees_its_amount, |db| {
    let mut app = spawn_app(&db).await;
    let pid = app.paid_payment("A-FAIL", 600).await;
    app.inject_faults(json!({"refund_failure_rate": 1.0})).await;
    let (status, r) = app.refund(&pid, "AX-1", 600).await;
    assert_eq!((status, r["status"].as_str()), (201, Some("failed")), "{r}");
    let reason = r["failure_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("ACQ.SELLER_BALANCE_NOT_ENOUGH"),
        "{reason}"
    );
    let event = app.event().await;
    assert_eq!(event["type"], "refund.failed");
    assert_eq!(event["data"]["id"], r["id"]);
    assert!(app.sim_refunds(&pid).await.is_empty());
    app.inject_faults(json!({})).await;
    let (status, r) = app.refund(&pid, "AX-2", 600).await;
    assert_eq!(
        (status, r["status"].as_str()),
        (201, Some("succeeded")),
        "{r}"
    );
    assert_eq!(app.event().await["type"], "refund.succeeded");
    app.no_more_events().await;
    app.app.server.stop();
});
