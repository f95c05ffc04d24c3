//! Dead-lettered merchant notifications: listed through the merchant and
//! admin APIs, sent again on request, never sent again once acknowledged.

#[macro_use]
mod common;

use std::time::Duration;

use common::{spawn_app, TestApp};
use paymux_server::config::SecretString;
use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "op-token-0123456789";

impl TestApp {
    /// A paid WeChat Native payment whose `payment.succeeded` event the
    /// merchant refuses until it is dead; returns the payment id.
    async fn dead_lettered_payment(&mut self, order_no: &str) -> String {
        self.receiver.set_accepting(false);
        let created = self
            .client
            .post(
                "/v1/payments",
                &json!({
                    "merchant_order_no": order_no,
                    "amount": 500,
                    "channel": "wechat",
                    "method": "native",
                    "description": "one book",
                    "notify_url": self.receiver.url,
                }),
            )
            .await
            .unwrap();
        assert_eq!(created.status, 201, "{}", created.body);
        let id = created.body["id"].as_str().unwrap().to_string();
        let (status, outcome) = self.pay_at("wechat", &json!({"out_trade_no": id})).await;
        assert!((200..300).contains(&status), "{outcome}");
        // The schedule has two retries: three refused attempts, then dead.
        for _ in 0..3 {
            let refused = self.receiver.next(Duration::from_secs(10)).await.unwrap();
            assert!(!refused.acknowledged);
        }
        id
    }

    async fn list(&self, query: &str) -> Vec<Value> {
        let r = self
            .client
            .get(&format!("/v1/events{query}"))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.signature_ok);
        r.body["data"].as_array().unwrap().clone()
    }

    async fn admin(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        let r = self
            .http
            .request(method, format!("{}/admin{path}", self.server.base_url()))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

async fn app_with_short_schedule(db: &paymux_store::testing::TestDb) -> TestApp {
    spawn_app(db, |c| {
        c.notifier.schedule_secs = vec![1, 1];
        c.admin_token = Some(SecretString::new(ADMIN_TOKEN));
    })
    .await
}

/// Waits until the payment's event is dead-lettered in the store.
async fn until_dead(app: &TestApp, payment_id: &str) -> String {
    let pid = paymux_core::PaymentId::parse(payment_id).unwrap();
    for _ in 0..100 {
        let events = app
            .server
            .state
            .store
            .events_for_payment(&pid)
            .await
            .unwrap();
        if let Some(e) = events.iter().find(|e| e.dead) {
            return e.id.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the event of {payment_id} was never dead-lettered");
}

on_every_backend!(a_dead_event_is_listed_and_delivered_once_on_retry, |db| {
    let mut app = app_with_short_schedule(&db).await;
    let id = app.dead_lettered_payment("ORDER-DEAD-1").await;
    let event_id = until_dead(&app, &id).await;
    assert!(app
        .receiver
        .next(Duration::from_millis(1500))
        .await
        .is_none());

    let dead = app.list("?status=dead").await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["id"], event_id.as_str());
    assert_eq!(dead[0]["type"], "payment.succeeded");
    assert_eq!(dead[0]["payment_id"], id.as_str());
    assert_eq!(dead[0]["status"], "dead");
    assert_eq!(dead[0]["attempts"], 3);
    assert!(dead[0]["last_error"].is_string());
    assert_eq!(app.list("").await.len(), 1, "undelivered by default");

    // The merchant fixed its endpoint and asks for the event again.
    app.receiver.set_accepting(true);
    let r = app
        .client
        .post(&format!("/v1/events/{event_id}/retry"), &json!({}))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "retrying");
    let got = app.receiver.next(Duration::from_secs(10)).await.unwrap();
    assert!(got.acknowledged);
    assert_eq!(got.body["id"], event_id.as_str());
    assert_eq!(got.body["data"]["id"], id.as_str());
    assert!(
        app.receiver
            .next(Duration::from_millis(2500))
            .await
            .is_none(),
        "delivered once"
    );
    assert!(app.list("").await.is_empty());

    // Acknowledged: never sent again.
    let again = app
        .client
        .post(&format!("/v1/events/{event_id}/retry"), &json!({}))
        .await
        .unwrap();
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(again.error_code(), Some("INVALID_STATE"));
    assert!(app
        .receiver
        .next(Duration::from_millis(1500))
        .await
        .is_none());
    app.server.stop();
});

on_every_backend!(event_listing_is_scoped_and_validated, |db| {
    let mut app = app_with_short_schedule(&db).await;
    let id = app.dead_lettered_payment("ORDER-DEAD-2").await;
    let event_id = until_dead(&app, &id).await;

    // Another merchant sees none of it and cannot retry it.
    let (_, other) =
        paymux_server::merchants::create_merchant(&*db.store, &paymux_core::SystemClock, "Other")
            .await
            .unwrap();
    let other = paymux_server::client::MerchantClient::new(
        &app.server.base_url(),
        &other.app_id,
        &other.secret,
    );
    let r = other.get("/v1/events?status=dead").await.unwrap();
    assert_eq!(r.body["data"], json!([]));
    let r = other
        .post(&format!("/v1/events/{event_id}/retry"), &json!({}))
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    let r = app
        .client
        .post("/v1/events/evt_missing/retry", &json!({}))
        .await
        .unwrap();
    assert_eq!(r.status, 404);

    // Bad filters get stable codes.
    for q in ["?status=delivered", "?limit=0", "?limit=501", "?color=red"] {
        let r = app.client.get(&format!("/v1/events{q}")).await.unwrap();
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert_eq!(r.error_code(), Some("INVALID_REQUEST"), "{q}");
    }

    // The operator sees every merchant's dead events and can retry them.
    let (status, all) = app.admin(reqwest::Method::GET, "/events?status=dead").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["data"].as_array().unwrap().len(), 1);
    app.receiver.set_accepting(true);
    let (status, retried) = app
        .admin(reqwest::Method::POST, &format!("/events/{event_id}/retry"))
        .await;
    assert_eq!(status, 200, "{retried}");
    let got = app.receiver.next(Duration::from_secs(10)).await.unwrap();
    assert!(got.acknowledged);
    assert_eq!(got.body["id"], event_id.as_str());
    // The merchant's 2xx is recorded a moment after it is sent.
    for _ in 0..50 {
        let e = db.store.event(&event_id).await.unwrap().unwrap();
        if e.delivered_at.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = app
        .admin(reqwest::Method::POST, &format!("/events/{event_id}/retry"))
        .await;
    assert_eq!(status, 409);
    app.server.stop();
});
