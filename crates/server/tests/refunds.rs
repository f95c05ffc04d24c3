//! Refunds end to end through WeChat Pay: the real server on a random port,
//! the in-process simulator (which keeps the channel's books), a merchant
//! notify endpoint, on every store backend available. Time is a manual clock
//! so lost callbacks are settled by the refund checks without waiting.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::refunds::{spawn_refund_app, RefundApp};
use paymux_store::testing::TestDb;
use serde_json::json;

async fn spawn_app(db: &TestDb) -> RefundApp {
    spawn_refund_app(db, "wechat").await
}

on_every_backend!(a_full_refund_end_to_end, |db| {
    let mut app = spawn_app(&db).await;
    let pid = app.paid_payment("R-FULL", 2599).await;
    let (status, refund) = app.refund(&pid, "RF-1", 2599).await;
    assert_eq!(status, 201, "{refund}");
    assert_eq!(refund["object"], "refund");
    assert_eq!(refund["payment_id"], pid.as_str());
    assert_eq!(refund["amount"], 2599);
    assert_eq!(refund["currency"], "CNY");
    let id = refund["id"].as_str().unwrap().to_string();
    // WeChat refunds finish asynchronously; the callback settles it.
    let event = app.event().await;
    assert_eq!(event["type"], "refund.succeeded");
    assert_eq!(event["data"]["id"], id.as_str());
    assert_eq!(event["data"]["status"], "succeeded");
    assert!(event["data"]["channel_refund_no"].is_string());
    assert!(event["data"]["refunded_at"].is_string());
    assert_eq!(app.refund_status(&id).await, "succeeded");
    let books = app.sim_refunds(&pid).await;
    assert_eq!(books.len(), 1);
    assert_eq!(
        (
            books[0]["out_refund_no"].as_str(),
            books[0]["amount"].as_i64(),
            books[0]["state"].as_str()
        ),
        (Some(id.as_str()), Some(2599), Some("SUCCESS"))
    );
    // The payment shows what was refunded.
    let payment = app
        .client
        .get(&format!("/v1/payments/{pid}"))
        .await
        .unwrap();
    assert_eq!(payment.body["refunded_amount"], 2599);
    assert_eq!(payment.body["status"], "succeeded");
    // Found by the merchant's number too.
    let r = app
        .client
        .get("/v1/refunds?merchant_refund_no=RF-1")
        .await
        .unwrap();
    assert_eq!(r.body["id"], id.as_str());
    // Nothing is left to refund.
    let (status, body) = app.refund(&pid, "RF-2", 1).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("REFUND_EXCEEDS_AVAILABLE"))
    );
    app.no_more_events().await;
    app.app.server.stop();
});

on_every_backend!(several_partial_refunds_stay_within_the_payment, |db| {
    let mut app = spawn_app(&db).await;
    let pid = app.paid_payment("R-PART", 1000).await;
    let mut ids = Vec::new();
    for (no, amount) in [("P-1", 300), ("P-2", 500)] {
        let (status, r) = app.refund(&pid, no, amount).await;
        assert_eq!(status, 201, "{r}");
        ids.push(r["id"].as_str().unwrap().to_string());
    }
    let (status, r) = app.refund(&pid, "P-3", 201).await;
    assert_eq!(status, 409, "{r}");
    assert_eq!(r["error"]["code"], "REFUND_EXCEEDS_AVAILABLE");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("(200)"),
        "{r}"
    );
    let (status, r) = app.refund(&pid, "P-3", 200).await;
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
    let books: i64 = app
        .sim_refunds(&pid)
        .await
        .iter()
        .map(|r| r["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(books, 1000);
    let books = app.checked_books(&db).await;
    assert_eq!(
        (&books["captured"], &books["refunded"], &books["receivable"]),
        (&json!(1000), &json!(1000), &json!(0))
    );
    app.no_more_events().await;
    app.app.server.stop();
});

on_every_backend!(concurrent_partial_refunds_take_exactly_what_fits, |db| {
    let mut app = spawn_app(&db).await;
    let pid = app.paid_payment("R-RACE", 1000).await;
    // 20 refunds of 150 against 1000: exactly 6 fit.
    let client = Arc::new(app.client.clone());
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let client = client.clone();
            let pid = pid.clone();
            tokio::spawn(async move {
                client
                    .post(
                        "/v1/refunds",
                        &json!({"payment_id": pid, "merchant_refund_no": format!("C-{i}"), "amount": 150}),
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            201 => created += 1,
            409 => assert_eq!(
                r.error_code(),
                Some("REFUND_EXCEEDS_AVAILABLE"),
                "{}",
                r.body
            ),
            other => panic!("{other}: {}", r.body),
        }
    }
    assert_eq!(created, 6);
    for _ in 0..6 {
        assert_eq!(app.event().await["type"], "refund.succeeded");
    }
    let books: i64 = app
        .sim_refunds(&pid)
        .await
        .iter()
        .map(|r| r["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(books, 900);
    let books = app.checked_books(&db).await;
    assert_eq!(
        (&books["captured"], &books["refunded"], &books["receivable"]),
        (&json!(1000), &json!(900), &json!(100))
    );
    app.no_more_events().await;
    app.app.server.stop();
});

on_every_backend!(refund_requests_are_idempotent_and_checked, |db| {
    let mut app = spawn_app(&db).await;
    let pid = app.paid_payment("R-IDEM", 800).await;
    let (status, first) = app.refund(&pid, "I-1", 100).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(app.event().await["type"], "refund.succeeded");
    // The same request again: the same refund, nothing refunded twice.
    let (status, again) = app.refund(&pid, "I-1", 100).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["status"], "succeeded");
    // The same number with another amount is a conflict.
    let (status, conflict) = app.refund(&pid, "I-1", 101).await;
    assert_eq!(
        (status, conflict["error"]["code"].as_str()),
        (409, Some("IDEMPOTENCY_CONFLICT"))
    );
    assert_eq!(app.sim_refunds(&pid).await.len(), 1);

    // An unpaid payment cannot be refunded; unknown and others' payments are not found.
    let open = app
        .client
        .post(
            "/v1/payments",
            &json!({"merchant_order_no": "R-OPEN", "amount": 100, "channel": "wechat",
            "method": "native", "description": "tea", "notify_url": app.receiver.url}),
        )
        .await
        .unwrap();
    let open_id = open.body["id"].as_str().unwrap().to_string();
    let (status, r) = app.refund(&open_id, "I-2", 100).await;
    assert_eq!(
        (status, r["error"]["code"].as_str()),
        (409, Some("PAYMENT_NOT_REFUNDABLE")),
        "{r}"
    );
    let (status, r) = app
        .refund("pay_01J00000000000000000000000", "I-3", 100)
        .await;
    assert_eq!(
        (status, r["error"]["code"].as_str()),
        (404, Some("NOT_FOUND")),
        "{r}"
    );
    let (_, other) =
        paymux_server::merchants::create_merchant(&*db.store, &paymux_core::SystemClock, "Other")
            .await
            .unwrap();
    let other = paymux_server::client::MerchantClient::new(
        &app.server.base_url(),
        &other.app_id,
        &other.secret,
    );
    let r = other
        .post(
            "/v1/refunds",
            &json!({"payment_id": pid, "merchant_refund_no": "X-1", "amount": 1}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 404, "{}", r.body);
    let r = other
        .get(&format!("/v1/refunds/{}", first["id"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    // Bad bodies name the field and write nothing.
    for body in [
        json!({"payment_id": pid, "merchant_refund_no": "I-4", "amount": 0}),
        json!({"payment_id": pid, "merchant_refund_no": "I-4", "amount": "1"}),
        json!({"payment_id": pid, "amount": 1}),
        json!({"payment_id": pid, "merchant_refund_no": "I-4", "amount": 1, "extra": true}),
    ] {
        let r = app.client.post("/v1/refunds", &body).await.unwrap();
        assert_eq!(
            (r.status, r.error_code()),
            (400, Some("INVALID_REQUEST")),
            "{body}: {}",
            r.body
        );
    }
    assert_eq!(app.sim_refunds(&pid).await.len(), 1);
    app.no_more_events().await;
    app.app.server.stop();
});

on_every_backend!(a_duplicated_refund_callback_changes_nothing_twice, |db| {
    let mut app = spawn_app(&db).await;
    let pid = app.paid_payment("R-DUP", 500).await;
    app.inject_faults(json!({"callback_duplicate_rate": 1.0}))
        .await;
    let (status, r) = app.refund(&pid, "D-1", 500).await;
    assert_eq!(status, 201, "{r}");
    assert_eq!(app.event().await["type"], "refund.succeeded");
    app.no_more_events().await;
    let pid = paymux_core::PaymentId::parse(&pid).unwrap();
    let events = db.store.events_for_payment(&pid).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event_type == "refund.succeeded")
            .count(),
        1
    );
    app.app.server.stop();
});

on_every_backend!(a_lost_refund_callback_is_made_good_by_a_check, |db| {
    let mut app = spawn_app(&db).await;
    let pid = app.paid_payment("R-LOST", 700).await;
    app.inject_faults(json!({"callback_lost_rate": 1.0})).await;
    let (status, r) = app.refund(&pid, "L-1", 700).await;
    assert_eq!(status, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.refund_status(&id).await, "processing");
    app.advance(61);
    app.wait_refund(&id, "succeeded").await;
    let event = app.event().await;
    assert_eq!(
        (event["type"].as_str(), event["data"]["id"].as_str()),
        (Some("refund.succeeded"), Some(id.as_str()))
    );
    app.advance(120);
    app.no_more_events().await;
    app.app.server.stop();
});

on_every_backend!(
    a_refund_call_that_fails_or_times_out_is_settled_by_query,
    |db| {
        let mut app = spawn_app(&db).await;
        let pid = app.paid_payment("R-UNKNOWN", 900).await;
        // A 5xx: WeChat did nothing. The refund stays processing, is not found
        // by the check, and is sent again under the same number.
        app.inject_faults(json!({"error_rate": 1.0})).await;
        let (status, first) = app.refund(&pid, "U-1", 400).await;
        assert_eq!(status, 201, "{first}");
        assert_eq!(first["status"], "processing");
        let first_id = first["id"].as_str().unwrap().to_string();
        assert!(app.sim_refunds(&pid).await.is_empty());
        // A timeout: WeChat made the refund, the answer never came.
        app.inject_faults(
            json!({"timeout_rate": 1.0, "timeout_ms": 2000, "callback_lost_rate": 1.0}),
        )
        .await;
        let (status, second) = app.refund(&pid, "U-2", 500).await;
        assert_eq!(status, 201, "{second}");
        assert_eq!(second["status"], "processing");
        let second_id = second["id"].as_str().unwrap().to_string();
        // Nothing more fits while both are in flight.
        let (status, r) = app.refund(&pid, "U-3", 1).await;
        assert_eq!(
            (status, r["error"]["code"].as_str()),
            (409, Some("REFUND_EXCEEDS_AVAILABLE"))
        );
        app.inject_faults(json!({})).await;
        app.advance(61);
        app.wait_refund(&first_id, "succeeded").await;
        app.wait_refund(&second_id, "succeeded").await;
        let mut types = [app.event().await, app.event().await];
        types.sort_by_key(|e| e["data"]["id"].as_str().unwrap().to_string());
        assert!(types.iter().all(|e| e["type"] == "refund.succeeded"));
        // The channel refunded each exactly once.
        let books = app.sim_refunds(&pid).await;
        assert_eq!(books.len(), 2, "{books:?}");
        assert_eq!(
            books
                .iter()
                .map(|r| r["amount"].as_i64().unwrap())
                .sum::<i64>(),
            900
        );
        app.advance(120);
        app.no_more_events().await;
        app.app.server.stop();
    }
);

on_every_backend!(a_refund_the_channel_fails_frees_its_amount, |db| {
    let mut app = spawn_app(&db).await;
    let pid = app.paid_payment("R-FAIL", 600).await;
    app.inject_faults(json!({"refund_failure_rate": 1.0})).await;
    let (status, r) = app.refund(&pid, "F-1", 600).await;
    assert_eq!(status, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    let event = app.event().await;
    assert_eq!(event["type"], "refund.failed");
    assert_eq!(event["data"]["id"], id.as_str());
    assert_eq!(event["data"]["failure_reason"], "ABNORMAL");
    assert_eq!(app.refund_status(&id).await, "failed");
    // The failed refund holds nothing: the full amount can be refunded again.
    app.inject_faults(json!({})).await;
    let (status, r) = app.refund(&pid, "F-2", 600).await;
    assert_eq!(status, 201, "{r}");
    assert_eq!(app.event().await["type"], "refund.succeeded");
    app.no_more_events().await;
    app.app.server.stop();
});
