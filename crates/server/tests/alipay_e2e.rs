//! Alipay end to end: the real server on a random port with the in-process
//! Alipay simulator, a merchant notify endpoint, on every store backend.
//! Every method goes create → the payer pays at the simulator → signed
//! notify → `succeeded` → merchant notified.

#[macro_use]
mod common;

use std::time::Duration;

use common::TestApp;

use paymux_channels::alipay::sign;
use paymux_channels::alipay::AlipayConfig;
use paymux_channels::keys::PrivateKey;
use paymux_server::client::ApiResponse;
use paymux_server::ServerConfig;
use paymux_store::testing::TestDb;
use serde_json::{json, Value};

/// A create request for `method`, with the payer fields it needs.
fn order(order_no: &str, method: &str, notify_url: &str) -> Value {
    let payer = match method {
        "mini_program" => json!({"openid": "074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5"}),
        "barcode" => json!({"auth_code": "286212345678901234"}),
        _ => json!({}),
    };
    json!({
        "merchant_order_no": order_no,
        "amount": 1999,
        "channel": "alipay",
        "method": method,
        "description": "2 cups of coffee",
        "notify_url": notify_url,
        "payer": payer,
    })
}

impl TestApp {
    async fn create(&self, order_no: &str, method: &str) -> ApiResponse {
        self.client
            .post("/v1/payments", &order(order_no, method, &self.receiver.url))
            .await
            .unwrap()
    }

    async fn sim_pay(&self, body: Value) -> (u16, Value) {
        self.pay_at("alipay", &body).await
    }

    async fn account(&self, db: &TestDb, id: &str) -> AlipayConfig {
        let payment = db
            .store
            .payment(&paymux_core::PaymentId::parse(id).unwrap())
            .await
            .unwrap()
            .unwrap();
        let account = db
            .store
            .channel_account(&payment.channel_account_id)
            .await
            .unwrap()
            .unwrap();
        serde_json::from_value(account.config).unwrap()
    }

    /// What the payer's app or browser does with pay_params before paying.
    async fn follow(&self, db: &TestDb, method: &str, id: &str, params: &Value) {
        match method {
            "mini_program" => assert!(params["tradeNO"].is_string(), "{params}"),
            "native" => assert!(
                params["qr_code"].as_str().unwrap().starts_with("https://"),
                "{params}"
            ),
            "wap" | "pc" => {
                // The browser follows the signed URL to the gateway's cashier.
                let url = params["pay_url"].as_str().unwrap();
                assert!(url.contains("/sim/alipay/gateway.do?"), "{url}");
                let r = self.http.get(url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let page = r.text().await.unwrap();
                assert!(page.contains(id), "{page}");
            }
            "app" => {
                // The order string is signed with the app key over its own
                // parameters; the app SDK hands it to Alipay as it is.
                let order_string = params["order_string"].as_str().unwrap();
                let p = sign::parse_form(order_string.as_bytes()).unwrap();
                assert_eq!(p["method"], "alipay.trade.app.pay");
                let config = self.account(db, id).await;
                let public = PrivateKey::from_pem(&config.private_key_pem)
                    .unwrap()
                    .public_key()
                    .unwrap();
                sign::verify_request(&public, &p).expect("order string signature");
                let biz: Value = serde_json::from_str(&p["biz_content"]).unwrap();
                assert_eq!(biz["total_amount"], "19.99");
                assert_eq!(biz["out_trade_no"], id);
                let r = self
                    .http
                    .post(format!("{}/sim/alipay/gateway.do", self.server.base_url()))
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(order_string.to_string())
                    .send()
                    .await
                    .unwrap();
                let answer = r.text().await.unwrap();
                assert!(answer.contains("\"code\":\"10000\""), "{answer}");
            }
            _ => {}
        }
    }
}

fn callback_bodies(outcome: &Value) -> Vec<String> {
    outcome["callbacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["body"].as_str().unwrap_or("").to_string())
        .collect()
}

on_every_backend!(every_alipay_method_end_to_end, |db| {
    let mut app = common::spawn_app(&db, |_| {}).await;
    for method in ["mini_program", "native", "app", "wap", "pc"] {
        let created = app.create(&format!("ALI-{method}"), method).await;
        assert_eq!(created.status, 201, "{method}: {}", created.body);
        assert!(created.signature_ok);
        let p = &created.body;
        assert_eq!(p["status"], "pending", "{method}");
        assert_eq!(p["channel"], "alipay");
        assert_eq!(p["method"], method);
        let id = p["id"].as_str().unwrap().to_string();
        app.follow(&db, method, &id, &p["pay_params"]).await;

        let (status, paid) = app.sim_pay(json!({"out_trade_no": id})).await;
        assert_eq!(status, 200, "{paid}");
        assert_eq!(callback_bodies(&paid), vec!["success"], "{method}: {paid}");
        assert_eq!(app.status(&id).await, "succeeded", "{method}");

        let event = app
            .receiver
            .next(Duration::from_secs(10))
            .await
            .expect("merchant notified");
        assert!(event.signature_ok);
        assert_eq!(event.body["type"], "payment.succeeded");
        assert_eq!(event.body["data"]["id"], id.as_str());
        assert_eq!(
            event.body["data"]["channel_trade_no"],
            paid["trade_no"].as_str().unwrap()
        );

        // A duplicate notify is acknowledged and changes nothing.
        let (_, again) = app
            .sim_pay(json!({"out_trade_no": id, "callbacks": 2}))
            .await;
        assert_eq!(callback_bodies(&again), vec!["success", "success"]);
        assert!(app
            .receiver
            .next(Duration::from_millis(300))
            .await
            .is_none());
        let pid = paymux_core::PaymentId::parse(&id).unwrap();
        assert_eq!(db.store.events_for_payment(&pid).await.unwrap().len(), 1);
    }
    app.server.stop();
});

on_every_backend!(alipay_barcode_charges_at_once, |db| {
    let mut app = common::spawn_app(&db, |_| {}).await;
    let created = app.create("ALI-BARCODE", "barcode").await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_string();
    assert_eq!(created.body["status"], "succeeded", "{}", created.body);
    assert!(created.body["channel_trade_no"].is_string());
    let event = app
        .receiver
        .next(Duration::from_secs(10))
        .await
        .expect("merchant notified");
    assert_eq!(event.body["data"]["status"], "succeeded");
    // Alipay's notify for the same trade arrives too: acknowledged, nothing changes.
    let (_, paid) = app.sim_pay(json!({"out_trade_no": id})).await;
    assert_eq!(callback_bodies(&paid), vec!["success"]);
    assert!(app
        .receiver
        .next(Duration::from_millis(300))
        .await
        .is_none());
    app.server.stop();
});

on_every_backend!(alipay_barcode_waits_for_the_payer, |db| {
    let mut app = common::spawn_app(&db, |_| {}).await;
    let mut o = order("ALI-BARCODE-WAIT", "barcode", &app.receiver.url);
    // The simulator asks the payer to confirm codes ending in 0000.
    o["payer"]["auth_code"] = json!("286200000000000000");
    let client = app.client.clone();
    let create = tokio::spawn(async move { client.post("/v1/payments", &o).await.unwrap() });
    // The payer confirms on the phone a moment later.
    let mut paid = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let listed = app
            .client
            .get("/v1/payments?merchant_order_no=ALI-BARCODE-WAIT")
            .await
            .unwrap();
        if let Some(id) = listed.body["id"].as_str() {
            let (status, _) = app.sim_pay(json!({"out_trade_no": id})).await;
            if status == 200 {
                paid = true;
                break;
            }
        }
    }
    assert!(paid, "the order reached the simulator");
    let created = create.await.unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["status"], "succeeded", "{}", created.body);
    let event = app
        .receiver
        .next(Duration::from_secs(10))
        .await
        .expect("merchant notified");
    assert_eq!(event.body["data"]["status"], "succeeded");
    app.server.stop();
});

on_every_backend!(
    alipay_forged_callbacks_are_rejected_and_change_nothing,
    |db| {
        let mut app = common::spawn_app(&db, |_| {}).await;
        let created = app.create("ALI-FORGED", "native").await;
        let id = created.body["id"].as_str().unwrap().to_string();
        for fault in [
            "bad_signature",
            "wrong_app_id",
            "wrong_seller",
            "wrong_amount",
        ] {
            let (_, answer) = app
                .sim_pay(json!({"out_trade_no": id, "fault": fault}))
                .await;
            assert_eq!(
                callback_bodies(&answer),
                vec!["fail"],
                "{fault} must be refused: {answer}"
            );
            assert_eq!(app.status(&id).await, "pending", "{fault} changed nothing");
        }
        assert!(app
            .receiver
            .next(Duration::from_millis(500))
            .await
            .is_none());
        let pid = paymux_core::PaymentId::parse(&id).unwrap();
        assert!(db.store.events_for_payment(&pid).await.unwrap().is_empty());
        // The genuine notify still goes through afterwards.
        let (_, answer) = app.sim_pay(json!({"out_trade_no": id})).await;
        assert_eq!(callback_bodies(&answer), vec!["success"]);
        assert_eq!(app.status(&id).await, "succeeded");
        app.server.stop();
    }
);

on_every_backend!(alipay_close_closes_at_the_channel, |db| {
    let app = common::spawn_app(&db, |_| {}).await;
    for method in ["native", "mini_program", "wap"] {
        let created = app.create(&format!("ALI-CLOSE-{method}"), method).await;
        let id = created.body["id"].as_str().unwrap().to_string();
        let closed = app
            .client
            .post(&format!("/v1/payments/{id}/close"), &json!({}))
            .await
            .unwrap();
        assert_eq!(
            (closed.status, closed.body["status"].as_str()),
            (200, Some("closed")),
            "{method}: {}",
            closed.body
        );
        // The payer can no longer pay: the trade is closed at the simulator,
        // or (WAP, never opened) does not exist there.
        let (status, _) = app.sim_pay(json!({"out_trade_no": id})).await;
        assert!(status >= 400, "{method}");
        assert_eq!(app.status(&id).await, "closed");
    }
    // A paid trade cannot be closed.
    let created = app.create("ALI-CLOSE-PAID", "native").await;
    let id = created.body["id"].as_str().unwrap().to_string();
    app.sim_pay(json!({"out_trade_no": id})).await;
    let r = app
        .client
        .post(&format!("/v1/payments/{id}/close"), &json!({}))
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(app.status(&id).await, "succeeded");

    // Paid at Alipay but the notify never arrived: close is refused there,
    // paymux asks alipay.trade.query and records the payment as paid.
    let created = app.create("ALI-CLOSE-LOST-NOTIFY", "native").await;
    let id = created.body["id"].as_str().unwrap().to_string();
    let (status, _) = app
        .sim_pay(json!({"out_trade_no": id, "callbacks": 0}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(app.status(&id).await, "pending");
    let r = app
        .client
        .post(&format!("/v1/payments/{id}/close"), &json!({}))
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(app.status(&id).await, "succeeded");
    app.server.stop();
});

on_every_backend!(alipay_create_requests_are_checked, |db| {
    let app = common::spawn_app(&db, |_| {}).await;
    let mut o = order("ALI-BAD", "mini_program", &app.receiver.url);
    o["payer"] = json!({});
    let r = app.client.post("/v1/payments", &o).await.unwrap();
    assert_eq!(r.error_code(), Some("INVALID_REQUEST"));
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("payer.openid"));
    let mut o = order("ALI-BAD", "barcode", &app.receiver.url);
    o["payer"] = json!({});
    let r = app.client.post("/v1/payments", &o).await.unwrap();
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("payer.auth_code"));
    let o = order("ALI-BAD", "jsapi", &app.receiver.url);
    let r = app.client.post("/v1/payments", &o).await.unwrap();
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("method: alipay accepts only"));
    // A mini-program payment by Alipay user id.
    let mut o = order("ALI-BUYER-ID", "mini_program", &app.receiver.url);
    o["payer"] = json!({"buyer_id": "2088102534368455"});
    let r = app.client.post("/v1/payments", &o).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    app.server.stop();
});

on_every_backend!(alipay_sandbox_accounts_survive_a_restart, |db| {
    let app = common::spawn_app(&db, |_| {}).await;
    let created = app.create("ALI-BEFORE-RESTART", "native").await;
    assert_eq!(created.status, 201, "{}", created.body);
    let addr = app.server.addr;
    let TestApp {
        server,
        client,
        receiver,
        http,
    } = app;
    server.stop();

    // A new process on the same address and database: its Alipay simulator
    // has a new key and knows no apps; the sandbox account is registered
    // again and verifies the new simulator's answers.
    let store = paymux_store::open(&db.url).await.unwrap();
    let mut restarted = None;
    for _ in 0..50 {
        let mut config = ServerConfig {
            listen: addr,
            sandbox: true,
            ..Default::default()
        };
        config.notifier.poll_interval_ms = 100;
        match paymux_server::start(config, store.clone()).await {
            Ok(r) => {
                restarted = Some(r);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let server = restarted.expect("restarted on the same address");
    let app = TestApp {
        server,
        client,
        receiver,
        http,
    };
    let created = app.create("ALI-AFTER-RESTART", "native").await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["status"], "pending", "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_string();
    let (_, paid) = app.sim_pay(json!({"out_trade_no": id})).await;
    assert_eq!(callback_bodies(&paid), vec!["success"], "{paid}");
    assert_eq!(app.status(&id).await, "succeeded");
    app.server.stop();
});

on_every_backend!(a_payment_the_channel_refuses_is_reported_failed, |db| {
    let mut app = common::spawn_app(&db, |_| {}).await;
    // A payment code Alipay cannot read: the trade is refused.
    let mut o = order("ALI-REFUSED", "barcode", &app.receiver.url);
    o["payer"] = json!({"auth_code": "12345"});
    let r = app.client.post("/v1/payments", &o).await.unwrap();
    assert_eq!(
        (r.status, r.error_code()),
        (502, Some("CHANNEL_REJECTED")),
        "{}",
        r.body
    );
    let found = app
        .client
        .get("/v1/payments?merchant_order_no=ALI-REFUSED")
        .await
        .unwrap();
    assert_eq!(found.body["status"], "failed", "{}", found.body);
    let event = app
        .receiver
        .next(Duration::from_secs(5))
        .await
        .expect("payment.failed delivered");
    assert!(event.signature_ok);
    assert_eq!(event.body["type"], "payment.failed");
    assert_eq!(event.body["reason"], "channel_refused");
    assert_eq!(event.body["data"]["id"], found.body["id"]);
    assert!(app
        .receiver
        .next(Duration::from_millis(300))
        .await
        .is_none());
    app.server.stop();
});
