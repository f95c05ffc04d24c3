//! Checkouts end to end: one order, attempts on WeChat Pay and Alipay, paid
//! once. The real server on a random port with the in-process simulators
//! (which keep the channels' books), on every store backend available.

#[macro_use]
mod common;

use std::time::Duration;

use common::refunds::{spawn_refund_app, RefundApp};
use serde_json::{json, Value};

const AMOUNT: i64 = 2_599;

impl RefundApp {
    /// Creates a checkout of [`AMOUNT`]; its id.
    async fn checkout(&self, order_no: &str) -> String {
        let r = self
            .client
            .post(
                "/v1/checkouts",
                &json!({
                    "merchant_order_no": order_no,
                    "amount": AMOUNT,
                    "description": "一双鞋",
                    "notify_url": self.receiver.url,
                    "return_url": "https://mall.invalid/orders/1",
                }),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.body["status"], "open");
        assert_eq!(r.body["attempts"], json!([]));
        r.body["id"].as_str().unwrap().to_string()
    }

    /// Starts an attempt (QR code) on `channel`: the status and the payment.
    async fn attempt(&self, checkout: &str, channel: &str) -> (u16, Value) {
        let r = self
            .client
            .post(
                &format!("/v1/checkouts/{checkout}/attempts"),
                &json!({"channel": channel, "method": "native"}),
            )
            .await
            .unwrap();
        assert!(r.signature_ok);
        (r.status, r.body)
    }

    async fn show(&self, checkout: &str) -> Value {
        let r = self
            .client
            .get(&format!("/v1/checkouts/{checkout}"))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }

    /// Waits (in real time) until `done` holds for the checkout.
    async fn wait_checkout(&self, checkout: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..200 {
            let k = self.show(checkout).await;
            if done(&k) {
                return k;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("checkout {checkout}: {}", self.show(checkout).await);
    }

    /// The next `n` events, in the order they arrived.
    async fn events(&mut self, n: usize) -> Vec<Value> {
        let mut seen = Vec::new();
        for _ in 0..n {
            seen.push(self.event().await);
        }
        seen
    }
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

fn of_type<'a>(events: &'a [Value], t: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == t).collect()
}

on_every_backend!(paying_one_attempt_closes_the_others, |db| {
    let mut app = spawn_refund_app(&db, "wechat").await;
    let k = app.checkout("CK-CLOSE").await;
    let (status, wechat) = app.attempt(&k, "wechat").await;
    assert_eq!(status, 201, "{wechat}");
    assert_eq!(wechat["status"], "pending");
    assert_eq!(wechat["checkout_id"], k.as_str());
    assert_eq!(wechat["amount"], AMOUNT);
    assert!(wechat["pay_params"]["code_url"].is_string(), "{wechat}");
    // The payer switches back and forth: the open attempt is resumed.
    let (status, again) = app.attempt(&k, "wechat").await;
    assert_eq!((status, id(&again)), (200, id(&wechat)));
    let (status, alipay) = app.attempt(&k, "alipay").await;
    assert_eq!(status, 201, "{alipay}");

    let (status, paid) = app
        .pay_at("alipay", &json!({"out_trade_no": id(&alipay)}))
        .await;
    assert_eq!(status, 200, "{paid}");
    let events = app.events(2).await;
    let succeeded = of_type(&events, "payment.succeeded");
    assert_eq!(succeeded.len(), 1, "{events:?}");
    assert_eq!(succeeded[0]["data"]["id"], id(&alipay).as_str());
    assert_eq!(succeeded[0]["data"]["checkout_id"], k.as_str());
    let closed = of_type(&events, "payment.closed");
    assert_eq!(closed.len(), 1, "{events:?}");
    assert_eq!(closed[0]["data"]["id"], id(&wechat).as_str());
    assert_eq!(closed[0]["reason"], "checkout_paid");

    let shown = app.show(&k).await;
    assert_eq!(shown["status"], "paid");
    assert_eq!(shown["paid_payment_id"], id(&alipay).as_str());
    let statuses: Vec<_> = shown["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (id(a), a["status"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        statuses,
        vec![
            (id(&wechat), "closed".to_string()),
            (id(&alipay), "succeeded".to_string())
        ]
    );
    // A paid checkout takes no more attempts.
    let (status, refused) = app.attempt(&k, "wechat").await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "CHECKOUT_PAID");
    app.no_more_events().await;
});

on_every_backend!(
    an_attempt_paid_after_the_checkout_was_won_is_refunded,
    |db| {
        let mut app = spawn_refund_app(&db, "wechat").await;
        let k = app.checkout("CK-DUP").await;
        let (_, wechat) = app.attempt(&k, "wechat").await;
        let (_, alipay) = app.attempt(&k, "alipay").await;
        // WeChat Pay stops answering paymux: the WeChat attempt cannot be closed.
        app.set_faults("wechat", &json!({"error_rate": 1.0})).await;
        app.pay_at("alipay", &json!({"out_trade_no": id(&alipay)}))
            .await;
        let first = app.event().await;
        assert_eq!(first["type"], "payment.succeeded");
        assert_eq!(first["data"]["id"], id(&alipay).as_str());
        app.wait_checkout(&k, |v| v["status"] == "paid").await;

        // …and the payer pays it anyway, in WeChat.
        let (status, paid) = app
            .pay_at("wechat", &json!({"out_trade_no": id(&wechat)}))
            .await;
        assert_eq!(status, 200, "{paid}");
        let events = app.events(2).await;
        let dup = of_type(&events, "payment.duplicate_refunded");
        assert_eq!(dup.len(), 1, "{events:?}");
        assert_eq!(dup[0]["data"]["id"], id(&wechat).as_str());
        assert_eq!(dup[0]["data"]["checkout_id"], k.as_str());
        assert_eq!(dup[0]["refund"]["amount"], AMOUNT);
        // The refund call failed (WeChat Pay still not answering): processing.
        assert_eq!(dup[0]["refund"]["status"], "processing");
        let refund_id = dup[0]["refund"]["id"].as_str().unwrap().to_string();
        assert_eq!(
            of_type(&events, "payment.succeeded")[0]["data"]["id"],
            id(&wechat).as_str()
        );
        assert_eq!(
            app.show(&k).await["paid_payment_id"],
            id(&alipay).as_str(),
            "the first success keeps the checkout"
        );

        // WeChat Pay answers again; the refund checks carry the refund through.
        app.clear_faults("wechat").await;
        app.clock.advance(chrono::Duration::seconds(61));
        app.wait_refund(&refund_id, "succeeded").await;
        let done = app.event().await;
        assert_eq!(done["type"], "refund.succeeded");
        assert_eq!(done["data"]["id"], refund_id.as_str());
        let books = app.sim_refunds(&id(&wechat)).await;
        assert_eq!(books.len(), 1, "{books:?}");
        let r = app
            .client
            .get(&format!("/v1/payments/{}", id(&wechat)))
            .await
            .unwrap();
        assert_eq!(r.body["refunded_amount"], AMOUNT);
        let r = app
            .client
            .get(&format!("/v1/payments/{}", id(&alipay)))
            .await
            .unwrap();
        assert_eq!(r.body["refunded_amount"], 0);
        app.no_more_events().await;
    }
);

on_every_backend!(attempts_paid_at_once_leave_exactly_one_paid, |db| {
    let mut app = spawn_refund_app(&db, "wechat").await;
    let k = app.checkout("CK-RACE").await;
    let (_, wechat) = app.attempt(&k, "wechat").await;
    let (_, alipay) = app.attempt(&k, "alipay").await;
    // Both paid at their channels, neither telling paymux: the status
    // checks find both at once.
    for (channel, p) in [("wechat", &wechat), ("alipay", &alipay)] {
        let (status, paid) = app
            .pay_at(channel, &json!({"out_trade_no": id(p), "callbacks": 0}))
            .await;
        assert_eq!(status, 200, "{paid}");
    }
    app.clock.advance(chrono::Duration::seconds(61));
    let events = app.events(4).await;
    assert_eq!(of_type(&events, "payment.succeeded").len(), 2, "{events:?}");
    let dup = of_type(&events, "payment.duplicate_refunded");
    assert_eq!(dup.len(), 1, "{events:?}");
    assert_eq!(of_type(&events, "refund.succeeded").len(), 1, "{events:?}");
    let shown = app.show(&k).await;
    let winner = shown["paid_payment_id"].as_str().unwrap();
    let loser = dup[0]["data"]["id"].as_str().unwrap();
    assert_ne!(winner, loser);
    for a in shown["attempts"].as_array().unwrap() {
        assert_eq!(a["status"], "succeeded");
        let refunded = if id(a) == loser { AMOUNT } else { 0 };
        assert_eq!(a["refunded_amount"], refunded, "{a}");
    }
    app.no_more_events().await;
});

on_every_backend!(checkouts_are_idempotent_scoped_and_expire, |db| {
    let app = spawn_refund_app(&db, "wechat").await;
    let k = app.checkout("CK-ONCE").await;
    let body = json!({
        "merchant_order_no": "CK-ONCE",
        "amount": AMOUNT,
        "description": "一双鞋",
        "notify_url": app.receiver.url,
        "return_url": "https://mall.invalid/orders/1",
    });
    let r = app.client.post("/v1/checkouts", &body).await.unwrap();
    assert_eq!((r.status, id(&r.body)), (200, k.clone()));
    let mut changed = body.clone();
    changed["amount"] = 1.into();
    let r = app.client.post("/v1/checkouts", &changed).await.unwrap();
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "IDEMPOTENCY_CONFLICT");
    let r = app
        .client
        .get("/v1/checkouts?merchant_order_no=CK-ONCE")
        .await
        .unwrap();
    assert_eq!((r.status, id(&r.body)), (200, k.clone()));

    // Bad attempts are refused naming the field, and create nothing.
    for (attempt, field) in [
        (
            json!({"channel": "wechat", "method": "jsapi"}),
            "payer.openid",
        ),
        (json!({"channel": "alipay", "method": "jsapi"}), "method"),
        (
            json!({"channel": "wechat", "method": "native", "amount": 1}),
            "amount",
        ),
    ] {
        let r = app
            .client
            .post(&format!("/v1/checkouts/{k}/attempts"), &attempt)
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.body["error"]["code"], "INVALID_REQUEST");
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{message}");
    }
    assert_eq!(app.show(&k).await["attempts"], json!([]));
    let r = app
        .client
        .post(
            "/v1/checkouts/chk_nope/attempts",
            &json!({"channel": "wechat", "method": "native"}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 404, "{}", r.body);

    // Another merchant sees nothing of it.
    let (_, other) =
        paymux_server::merchants::create_merchant(&*db.store, &paymux_core::SystemClock, "Other")
            .await
            .unwrap();
    let stranger = paymux_server::client::MerchantClient::new(
        &app.server.base_url(),
        &other.app_id,
        &other.secret,
    );
    let r = stranger.get(&format!("/v1/checkouts/{k}")).await.unwrap();
    assert_eq!(r.status, 404, "{}", r.body);

    // A checkout takes at most ten attempts.
    for n in 0..11 {
        let r = app
            .client
            .post(
                &format!("/v1/checkouts/{k}/attempts"),
                &json!({"channel": "wechat", "method": "h5",
                        "payer": {"client_ip": format!("203.0.113.{n}")}}),
            )
            .await
            .unwrap();
        if n < 10 {
            assert_eq!(r.status, 201, "{}", r.body);
        } else {
            assert_eq!(r.status, 409, "{}", r.body);
            assert_eq!(r.body["error"]["code"], "TOO_MANY_ATTEMPTS");
        }
    }
    assert_eq!(app.show(&k).await["attempts"].as_array().unwrap().len(), 10);

    // Past its expiry it takes no attempts.
    let mut short = body.clone();
    short["merchant_order_no"] = "CK-SHORT".into();
    short["expires_in_seconds"] = 60.into();
    let r = app.client.post("/v1/checkouts", &short).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let short = id(&r.body);
    app.clock.advance(chrono::Duration::seconds(61));
    assert_eq!(app.show(&short).await["status"], "expired");
    assert_eq!(app.show(&k).await["status"], "open");
    let (status, refused) = app.attempt(&short, "alipay").await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "CHECKOUT_EXPIRED");
});
