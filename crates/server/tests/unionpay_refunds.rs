//! Refunds end to end through UnionPay: the real server on a random port,
//! the in-process UnionPay simulator (which keeps the channel's books), a
//! merchant notify endpoint, on every store backend available. A UnionPay
//! refund is accepted by the call and settled by its signed back
//! notification, or by a query when that is lost (manual clock).

#[macro_use]
mod common;

use std::time::Duration;

use common::refunds::{spawn_refund_app, RefundApp};
use paymux_store::testing::TestDb;
use serde_json::{json, Value};

async fn spawn_app(db: &TestDb) -> RefundApp {
    spawn_refund_app(db, "unionpay").await
}

/// (refund id, fen, state) of the simulator's books, for comparing.
fn books_of(books: &[Value]) -> Vec<(String, i64, String)> {
    books
        .iter()
        .map(|r| {
            (
                r["out_refund_no"].as_str().unwrap().to_string(),
                r["amount"].as_i64().unwrap(),
                r["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

on_every_backend!(a_full_unionpay_refund_end_to_end, |db| {
    let mut app = spawn_app(&db).await;
    let pid = app.paid_payment("U-FULL", 1999).await;
    let (status, refund) = app.refund(&pid, "UF-1", 1999).await;
    assert_eq!(status, 201, "{refund}");
    assert_eq!(refund["payment_id"], pid.as_str());
    assert_eq!(refund["amount"], 1999);
    let id = refund["id"].as_str().unwrap().to_string();
    // UnionPay accepts the refund; its back notification settles it.
    let event = app.event().await;
    assert_eq!(event["type"], "refund.succeeded");
    assert_eq!(event["data"]["id"], id.as_str());
    assert_eq!(event["data"]["status"], "succeeded");
    // The refund transaction's own queryId.
    let refund_query_id = event["data"]["channel_refund_no"].as_str().unwrap();
    assert_eq!(refund_query_id.len(), 21);
    assert_eq!(app.refund_status(&id).await, "succeeded");
    assert_eq!(
        books_of(&app.sim_refunds(&pid).await),
        vec![(id.clone(), 1999, "succeeded".to_string())]
    );
    // Nothing is left to refund: refused before UnionPay is asked.
    let (status, body) = app.refund(&pid, "UF-2", 1).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("REFUND_EXCEEDS_AVAILABLE"))
    );
    assert_eq!(app.sim_refunds(&pid).await.len(), 1);
    app.no_more_events().await;
    app.app.server.stop();
});

on_every_backend!(partial_unionpay_refunds_stay_within_the_payment, |db| {
    let mut app = spawn_app(&db).await;
    let pid = app.paid_payment("U-PART", 1000).await;
    let mut ids = Vec::new();
    for (no, amount) in [("UP-1", 300), ("UP-2", 500)] {
        let (status, r) = app.refund(&pid, no, amount).await;
        assert_eq!(status, 201, "{r}");
        ids.push(r["id"].as_str().unwrap().to_string());
    }
    // 200 are left.
    let (status, r) = app.refund(&pid, "UP-3", 201).await;
    assert_eq!(
        (status, r["error"]["code"].as_str()),
        (409, Some("REFUND_EXCEEDS_AVAILABLE")),
        "{r}"
    );
    let (status, r) = app.refund(&pid, "UP-3", 200).await;
    assert_eq!(status, 201, "{r}");
    ids.push(r["id"].as_str().unwrap().to_string());
    let mut settled = Vec::new();
    for _ in 0..3 {
        let e = app.event().await;
        assert_eq!(e["type"], "refund.succeeded");
        settled.push(e["data"]["id"].as_str().unwrap().to_string());
    }
    settled.sort();
    ids.sort();
    assert_eq!(settled, ids);
    let books = books_of(&app.sim_refunds(&pid).await);
    assert_eq!(books.len(), 3);
    assert!(books.iter().all(|(_, _, state)| state == "succeeded"));
    assert_eq!(books.iter().map(|(_, fen, _)| fen).sum::<i64>(), 1000);
    // A repeated request is the same refund, never a second one at UnionPay.
    let (status, again) = app.refund(&pid, "UP-1", 300).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(app.sim_refunds(&pid).await.len(), 3);
    let books = app.checked_books(&db).await;
    assert_eq!(
        (&books["captured"], &books["refunded"], &books["receivable"]),
        (&json!(1000), &json!(1000), &json!(0))
    );
    app.no_more_events().await;
    app.app.server.stop();
});

on_every_backend!(
    a_lost_unionpay_refund_callback_is_made_good_by_a_check,
    |db| {
        let mut app = spawn_app(&db).await;
        let pid = app.paid_payment("U-LOST", 700).await;
        app.inject_faults(json!({"callback_lost_rate": 1.0})).await;
        let (status, r) = app.refund(&pid, "UL-1", 700).await;
        assert_eq!(status, 201, "{r}");
        assert_eq!(r["status"], "processing");
        let id = r["id"].as_str().unwrap().to_string();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(app.refund_status(&id).await, "processing");
        assert_eq!(
            app.faults("unionpay").await["injected"]["callbacks_lost"],
            1
        );
        // The check queries UnionPay with the refund's orderId and txnTime.
        app.advance(61);
        app.wait_refund(&id, "succeeded").await;
        let event = app.event().await;
        assert_eq!(
            (event["type"].as_str(), event["data"]["id"].as_str()),
            (Some("refund.succeeded"), Some(id.as_str()))
        );
        assert_eq!(
            books_of(&app.sim_refunds(&pid).await),
            vec![(id.clone(), 700, "succeeded".to_string())]
        );
        app.advance(120);
        app.no_more_events().await;
        app.app.server.stop();
    }
);

on_every_backend!(a_unionpay_refund_answer_lost_is_not_made_twice, |db| {
    let mut app = spawn_app(&db).await;
    let pid = app.paid_payment("U-TIMEOUT", 900).await;
    // UnionPay makes the refund; the answer and the notification never come.
    app.inject_faults(json!({"timeout_rate": 1.0, "timeout_ms": 2000, "callback_lost_rate": 1.0}))
        .await;
    let (status, r) = app.refund(&pid, "UT-1", 900).await;
    assert_eq!(status, 201, "{r}");
    assert_eq!(r["status"], "processing");
    let id = r["id"].as_str().unwrap().to_string();
    app.inject_faults(json!({})).await;
    app.advance(61);
    app.wait_refund(&id, "succeeded").await;
    assert_eq!(app.event().await["type"], "refund.succeeded");
    assert_eq!(
        books_of(&app.sim_refunds(&pid).await),
        vec![(id, 900, "succeeded".to_string())]
    );
    app.advance(120);
    app.no_more_events().await;
    app.app.server.stop();
});

on_every_backend!(a_unionpay_refund_that_fails_frees_its_amount, |db| {
    let mut app = spawn_app(&db).await;
    let pid = app.paid_payment("U-FAIL", 600).await;
    app.inject_faults(json!({"refund_failure_rate": 1.0})).await;
    let (status, r) = app.refund(&pid, "UX-1", 600).await;
    assert_eq!(status, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    let event = app.event().await;
    assert_eq!(event["type"], "refund.failed");
    assert_eq!(event["data"]["id"], id.as_str());
    let reason = event["data"]["failure_reason"].as_str().unwrap();
    assert!(reason.starts_with("01"), "{reason}");
    assert_eq!(app.refund_status(&id).await, "failed");
    app.inject_faults(json!({})).await;
    let (status, r) = app.refund(&pid, "UX-2", 600).await;
    assert_eq!(status, 201, "{r}");
    assert_eq!(app.event().await["type"], "refund.succeeded");
    let books = books_of(&app.sim_refunds(&pid).await);
    assert_eq!(
        books
            .iter()
            .map(|(_, fen, s)| (*fen, s.as_str()))
            .collect::<Vec<_>>(),
        vec![(600, "failed"), (600, "succeeded")]
    );
    app.no_more_events().await;
    app.app.server.stop();
});
