//! Which events an app receives: `payment.pending` only when it asks, and
//! nothing of a type it turned off. The real server with the WeChat Pay
//! simulator, on every backend.

#[macro_use]
mod common;

use std::time::Duration;

use common::spawn_app;
use serde_json::{json, Value};

async fn native(app: &common::TestApp, order_no: &str) -> Value {
    let r = app
        .client
        .post(
            "/v1/payments",
            &json!({"merchant_order_no": order_no, "amount": 300, "channel": "wechat",
                    "method": "native", "description": "一杯茶", "notify_url": app.receiver.url}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    r.body
}

on_every_backend!(an_app_receives_the_event_types_it_chose, |db| {
    let mut app = spawn_app(&db, |c| c.notifier.poll_interval_ms = 50).await;
    let r = app.client.get("/v1/event-types").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let types = r.body["types"].as_array().unwrap();
    assert!(!types.contains(&json!("payment.pending")), "{}", r.body);
    assert!(types.contains(&json!("payment.succeeded")));
    assert!(r.body["available"]
        .as_array()
        .unwrap()
        .contains(&json!("payment.pending")));

    // By default: no payment.pending.
    let quiet = native(&app, "ET-1").await;
    app.pay_at("wechat", &json!({"out_trade_no": quiet["id"]}))
        .await;
    let e = app.receiver.next(Duration::from_secs(10)).await.unwrap();
    assert_eq!(e.body["type"], "payment.succeeded");

    // Unknown types are refused, naming the field.
    let r = app
        .client
        .put("/v1/event-types", &json!({"types": ["payment.paid"]}))
        .await
        .unwrap();
    assert_eq!((r.status, r.error_code()), (400, Some("INVALID_REQUEST")));
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("types"));

    let r = app
        .client
        .put(
            "/v1/event-types",
            &json!({"types": ["payment.pending", "payment.succeeded"]}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["types"],
        json!(["payment.pending", "payment.succeeded"])
    );

    let p = native(&app, "ET-2").await;
    let e = app.receiver.next(Duration::from_secs(10)).await.unwrap();
    assert!(e.signature_ok);
    assert_eq!(e.body["type"], "payment.pending");
    assert_eq!(e.body["data"]["id"], p["id"]);
    assert_eq!(e.body["data"]["status"], "pending");
    app.pay_at("wechat", &json!({"out_trade_no": p["id"]}))
        .await;
    let e = app.receiver.next(Duration::from_secs(10)).await.unwrap();
    assert_eq!(e.body["type"], "payment.succeeded");

    // A type the app turned off is recorded, not sent, and not left waiting.
    let closing = native(&app, "ET-3").await;
    assert_eq!(
        app.receiver
            .next(Duration::from_secs(10))
            .await
            .unwrap()
            .body["type"],
        "payment.pending"
    );
    let r = app
        .client
        .post(
            &format!("/v1/payments/{}/close", closing["id"].as_str().unwrap()),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(app
        .receiver
        .next(Duration::from_millis(800))
        .await
        .is_none());
    let r = app.client.get("/v1/events").await.unwrap();
    assert_eq!(r.body["data"], json!([]), "{}", r.body);

    // Back to the default.
    let r = app
        .client
        .put("/v1/event-types", &json!({"types": null}))
        .await
        .unwrap();
    assert!(!r.body["types"]
        .as_array()
        .unwrap()
        .contains(&json!("payment.pending")));
    app.server.stop();
});
