//! UnionPay end to end: the real server on a random port with the in-process
//! UnionPay simulator, a merchant notify endpoint, on every store backend.
//! Every method goes create → the payer pays at the simulator → signed back
//! notification → `succeeded` → merchant notified; forged or wrong
//! notifications are refused and change nothing.

#[macro_use]
mod common;

use std::time::Duration;

use common::TestApp;

use paymux_channels::keys::PublicKey;
use paymux_channels::unionpay::sign::{self, Params};
use paymux_channels::unionpay::UnionpayConfig;
use paymux_server::client::ApiResponse;
use paymux_store::testing::TestDb;
use serde_json::{json, Value};

fn order(order_no: &str, method: &str, notify_url: &str) -> Value {
    json!({
        "merchant_order_no": order_no,
        "amount": 1999,
        "channel": "unionpay",
        "method": method,
        "description": "2 cups of coffee",
        "notify_url": notify_url,
        "payer": {},
    })
}

impl TestApp {
    async fn create(&self, order_no: &str, method: &str) -> ApiResponse {
        self.client
            .post("/v1/payments", &order(order_no, method, &self.receiver.url))
            .await
            .unwrap()
    }

    /// Waits (briefly, in real time) for the workers to bring the payment to `want`.
    async fn wait_status(&self, id: &str, want: &str) {
        let mut seen = String::new();
        for _ in 0..100 {
            seen = self.status(id).await;
            if seen == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("payment {id} is {seen}, expected {want}");
    }

    async fn sim_pay(&self, body: Value) -> (u16, Value) {
        self.pay_at("unionpay", &body).await
    }

    async fn account(&self, db: &TestDb, id: &str) -> UnionpayConfig {
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

    /// What the payer's browser or app does with pay_params before paying.
    async fn follow(&self, db: &TestDb, method: &str, id: &str, params: &Value) {
        match method {
            "pc" | "wap" => {
                let action = params["action"].as_str().unwrap();
                assert!(
                    action.ends_with("/sim/unionpay/gateway/api/frontTransReq.do"),
                    "{action}"
                );
                assert_eq!(params["method"], "POST");
                let fields: Params = serde_json::from_value(params["fields"].clone()).unwrap();
                assert_eq!(fields["txnType"], "01");
                assert_eq!(fields["txnSubType"], "01");
                assert_eq!(fields["bizType"], "000201");
                assert_eq!(
                    fields["channelType"],
                    if method == "pc" { "07" } else { "08" }
                );
                assert_eq!(fields["txnAmt"], "1999");
                assert_eq!(fields["orderId"], id.replace('_', ""));
                assert_eq!(fields["txnTime"].len(), 14);
                // Signed with the merchant's key, under its certId.
                let config = self.account(db, id).await;
                let cert = config.sign_cert_pem.as_deref().unwrap();
                assert_eq!(
                    fields["certId"],
                    paymux_channels::unionpay::certs::cert_id_of_pem(cert).unwrap()
                );
                sign::verify(
                    &PublicKey::from_key_or_certificate_pem(cert).unwrap(),
                    &fields,
                )
                .expect("front form signature");
                let html = params["html"].as_str().unwrap();
                assert!(html.contains(action) && html.contains("submit()"), "{html}");
                // The browser posts the form; the gateway shows its payment page.
                let r = self
                    .http
                    .post(action)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(sign::encode_form(&fields))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let page = r.text().await.unwrap();
                assert!(page.contains(&fields["orderId"]), "{page}");
            }
            "app" => assert!(
                params["tn"].as_str().is_some_and(|t| t.len() == 21),
                "{params}"
            ),
            "native" => assert!(
                params["qr_code"]
                    .as_str()
                    .unwrap()
                    .starts_with("https://qr.95516.com/"),
                "{params}"
            ),
            _ => unreachable!(),
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

on_every_backend!(every_unionpay_method_end_to_end, |db| {
    let mut app = common::spawn_app(&db, |_| {}).await;
    for method in ["pc", "wap", "app", "native"] {
        let created = app.create(&format!("UP-{method}"), method).await;
        assert_eq!(created.status, 201, "{method}: {}", created.body);
        assert!(created.signature_ok);
        let p = &created.body;
        assert_eq!(p["status"], "pending", "{method}");
        assert_eq!(p["channel"], "unionpay");
        assert_eq!(p["method"], method);
        let id = p["id"].as_str().unwrap().to_string();
        app.follow(&db, method, &id, &p["pay_params"]).await;

        let (status, paid) = app.sim_pay(json!({"out_trade_no": id})).await;
        assert_eq!(status, 200, "{paid}");
        assert_eq!(
            common::callback_statuses(&paid),
            vec![200],
            "{method}: {paid}"
        );
        assert_eq!(callback_bodies(&paid), vec!["ok"]);
        assert_eq!(app.status(&id).await, "succeeded", "{method}");

        let event = app
            .receiver
            .next(Duration::from_secs(10))
            .await
            .expect("merchant notified");
        assert!(event.signature_ok);
        assert_eq!(event.body["type"], "payment.succeeded");
        assert_eq!(event.body["data"]["id"], id.as_str());
        assert_eq!(event.body["data"]["amount"], 1999);
        assert_eq!(
            event.body["data"]["channel_trade_no"],
            paid["query_id"].as_str().unwrap()
        );

        // Duplicate notifications are acknowledged and change nothing.
        let (_, again) = app
            .sim_pay(json!({"out_trade_no": id, "callbacks": 2}))
            .await;
        assert_eq!(common::callback_statuses(&again), vec![200, 200]);
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

on_every_backend!(
    unionpay_forged_or_wrong_notifications_change_nothing,
    |db| {
        let mut app = common::spawn_app(&db, |_| {}).await;
        let created = app.create("UP-FAULTS", "native").await;
        assert_eq!(created.status, 201, "{}", created.body);
        let id = created.body["id"].as_str().unwrap().to_string();
        let pid = paymux_core::PaymentId::parse(&id).unwrap();
        for fault in [
            // signPubKeyCert issued under another root with the same names
            "untrusted_chain",
            // signPubKeyCert expired
            "expired_cert",
            // chains to the configured root, but not in UnionPay's name
            "not_unionpay_cert",
            // signature over other content
            "bad_signature",
            // correctly signed, one fen more than the order
            "wrong_amount",
            // correctly signed, for another merchant
            "wrong_mer_id",
        ] {
            let (status, answer) = app
                .sim_pay(json!({"out_trade_no": id, "fault": fault}))
                .await;
            assert_eq!(status, 200, "{answer}");
            let statuses = common::callback_statuses(&answer);
            assert_eq!(statuses.len(), 1);
            assert_ne!(statuses[0], 200, "{fault} must be refused: {answer}");
            assert_eq!(app.status(&id).await, "pending", "{fault} changed nothing");
            assert!(db.store.events_for_payment(&pid).await.unwrap().is_empty());
        }
        assert!(app
            .receiver
            .next(Duration::from_millis(300))
            .await
            .is_none());
        // The genuine notification still settles it.
        let (_, paid) = app.sim_pay(json!({"out_trade_no": id})).await;
        assert_eq!(common::callback_statuses(&paid), vec![200]);
        assert_eq!(app.status(&id).await, "succeeded");
        app.server.stop();
    }
);

on_every_backend!(unionpay_close, |db| {
    let mut app = common::spawn_app(&db, |_| {}).await;
    for method in ["pc", "native"] {
        let created = app.create(&format!("UP-CLOSE-{method}"), method).await;
        let id = created.body["id"].as_str().unwrap().to_string();
        if method == "pc" {
            app.follow(&db, method, &id, &created.body["pay_params"])
                .await;
        }
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
        assert_eq!(app.status(&id).await, "closed");
        // UnionPay has no close: a payer who pays before payTimeout anyway
        // gets the notification refused; the payment stays closed.
        let (_, late) = app.sim_pay(json!({"out_trade_no": id})).await;
        assert_ne!(common::callback_statuses(&late), vec![200]);
        assert_eq!(app.status(&id).await, "closed");
        let event = app
            .receiver
            .next(Duration::from_secs(5))
            .await
            .expect("notified");
        assert_eq!(event.body["type"], "payment.closed");
        assert_eq!(event.body["reason"], "merchant");
        assert_eq!(event.body["data"]["id"], id.as_str());
    }

    // Paid at UnionPay but the notification never arrived: the close asks
    // UnionPay (queryTrans.do), which says paid, so the payment settles.
    let created = app.create("UP-CLOSE-LOST-NOTIFY", "app").await;
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
    let event = app
        .receiver
        .next(Duration::from_secs(10))
        .await
        .expect("merchant notified");
    assert_eq!(event.body["data"]["id"], id.as_str());

    // A paid payment cannot be closed.
    let r = app
        .client
        .post(&format!("/v1/payments/{id}/close"), &json!({}))
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", r.body);
    app.server.stop();
});

on_every_backend!(unionpay_create_requests_are_checked, |db| {
    let app = common::spawn_app(&db, |_| {}).await;
    for method in ["mini_program", "jsapi", "h5", "barcode"] {
        let r = app
            .client
            .post("/v1/payments", &order("UP-BAD", method, &app.receiver.url))
            .await
            .unwrap();
        assert_eq!(
            r.error_code(),
            Some("INVALID_REQUEST"),
            "{method}: {}",
            r.body
        );
    }
    let mut o = order("UP-BAD", "native", &app.receiver.url);
    o["amount"] = json!(1_000_000_000_000i64);
    let r = app.client.post("/v1/payments", &o).await.unwrap();
    assert_eq!(r.error_code(), Some("INVALID_REQUEST"), "{}", r.body);
    app.server.stop();
});

on_every_backend!(unionpay_sandbox_accounts_survive_a_restart, |db| {
    let app = common::spawn_app(&db, |_| {}).await;
    let created = app.create("UP-BEFORE-RESTART", "native").await;
    assert_eq!(created.status, 201, "{}", created.body);
    let addr = app.server.addr;
    let TestApp {
        server,
        client,
        receiver,
        http,
    } = app;
    server.stop();

    // A new process on the same address and database: its UnionPay
    // simulator has a new root, intermediate and signing certificate and
    // knows no merchants; the sandbox account is registered again with its
    // signing certificate and trusts the new simulator's chain.
    let store = paymux_store::open(&db.url).await.unwrap();
    let mut restarted = None;
    for _ in 0..50 {
        let mut config = paymux_server::ServerConfig {
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
    let created = app.create("UP-AFTER-RESTART", "native").await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["status"], "pending", "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_string();
    let (_, paid) = app.sim_pay(json!({"out_trade_no": id})).await;
    assert_eq!(callback_bodies(&paid), vec!["ok"], "{paid}");
    assert_eq!(app.status(&id).await, "succeeded");
    app.server.stop();
});

on_every_backend!(unionpay_polling_settles_lost_callbacks_and_expiry, |db| {
    use paymux_core::ManualClock;
    let clock = std::sync::Arc::new(ManualClock::new(chrono::Utc::now()));
    let mut app = common::spawn_app_with_clock(&db, clock.clone(), |config| {
        config.notifier.poll_interval_ms = 50;
        config.poller.interval_ms = 50;
        config.poller.first_delay_secs = 60;
    })
    .await;
    // Paid, but the notification was lost: the first check (queryTrans.do) settles it.
    let created = app.create("UP-POLL-LOST", "app").await;
    let paid_id = created.body["id"].as_str().unwrap().to_string();
    let (status, _) = app
        .sim_pay(json!({"out_trade_no": paid_id, "callbacks": 0}))
        .await;
    assert_eq!(status, 200);
    // Unpaid until it expires: closed then.
    let mut o = order("UP-POLL-EXPIRE", "native", &app.receiver.url);
    o["expires_in_seconds"] = json!(120);
    let created = app.client.post("/v1/payments", &o).await.unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    let unpaid_id = created.body["id"].as_str().unwrap().to_string();

    clock.advance(chrono::Duration::seconds(61));
    app.wait_status(&paid_id, "succeeded").await;
    let event = app
        .receiver
        .next(Duration::from_secs(10))
        .await
        .expect("merchant notified");
    assert_eq!(event.body["data"]["id"], paid_id.as_str());
    assert_eq!(app.status(&unpaid_id).await, "pending");
    clock.advance(chrono::Duration::seconds(61));
    app.wait_status(&unpaid_id, "closed").await;
    let event = app
        .receiver
        .next(Duration::from_secs(5))
        .await
        .expect("notified");
    assert_eq!(event.body["type"], "payment.closed");
    assert_eq!(event.body["reason"], "expired");
    assert_eq!(event.body["data"]["id"], unpaid_id.as_str());
    assert!(app
        .receiver
        .next(Duration::from_millis(300))
        .await
        .is_none());
    app.server.stop();
});
