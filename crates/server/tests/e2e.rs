//! End to end: the real server on a random port, the in-process WeChat Pay
//! simulator, a merchant notify endpoint, on every store backend available.

#[macro_use]
mod common;

use std::time::Duration;

use common::{callback_statuses, spawn_app, TestApp};

use paymux_server::client::{ApiResponse, Auth, MerchantClient};
use paymux_server::ServerConfig;
use reqwest::Method;
use serde_json::{json, Value};

fn order(order_no: &str, notify_url: &str) -> Value {
    json!({
        "merchant_order_no": order_no,
        "amount": 1999,
        "channel": "wechat",
        "method": "mini_program",
        "description": "2 cups of coffee",
        "notify_url": notify_url,
        "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        "metadata": {"cart": "c-1"}
    })
}

impl TestApp {
    async fn create(&self, order_no: &str) -> ApiResponse {
        self.client
            .post("/v1/payments", &order(order_no, &self.receiver.url))
            .await
            .unwrap()
    }

    async fn sim_pay(&self, body: Value) -> Value {
        let (status, outcome) = self.pay_at("wechat", &body).await;
        assert!((200..300).contains(&status), "sim pay: {status} {outcome}");
        outcome
    }
}

on_every_backend!(mini_program_payment_end_to_end, |db| {
    let mut app = spawn_app(&db, |_| {}).await;
    let created = app.create("ORDER-1").await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert!(created.signature_ok, "response signature verifies");
    let p = &created.body;
    assert_eq!(p["status"], "pending");
    assert_eq!(p["amount"], 1999);
    assert_eq!(p["currency"], "CNY");
    assert_eq!(p["method"], "mini_program");
    let id = p["id"].as_str().unwrap();
    assert!(id.len() <= 32);
    let params = &p["pay_params"];
    for field in [
        "appId",
        "timeStamp",
        "nonceStr",
        "package",
        "signType",
        "paySign",
    ] {
        assert!(params[field].is_string(), "pay_params.{field} in {params}");
    }
    assert!(params["package"]
        .as_str()
        .unwrap()
        .starts_with("prepay_id="));
    assert_eq!(params["signType"], "RSA");
    // paySign is WeChat's RSA-SHA256 over appId, timeStamp, nonceStr, package with the merchant key.
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
    let config: paymux_channels::wechat::WechatConfig =
        serde_json::from_value(account.config).unwrap();
    let public_key = paymux_channels::keys::PrivateKey::from_pem(&config.private_key_pem)
        .unwrap()
        .public_key()
        .unwrap();
    let message = paymux_channels::wechat::sign::jsapi_pay_message(
        params["appId"].as_str().unwrap(),
        params["timeStamp"].as_str().unwrap(),
        params["nonceStr"].as_str().unwrap(),
        params["package"].as_str().unwrap(),
    );
    public_key
        .verify_sha256(message.as_bytes(), params["paySign"].as_str().unwrap())
        .expect("paySign verifies");
    assert_eq!(params["appId"], config.appid.as_str());

    let paid = app.sim_pay(json!({"out_trade_no": id})).await;
    assert_eq!(
        callback_statuses(&paid),
        vec![200],
        "paymux acknowledged the callback: {paid}"
    );
    assert_eq!(app.status(id).await, "succeeded");

    let event = app
        .receiver
        .next(Duration::from_secs(10))
        .await
        .expect("merchant notified");
    assert!(event.signature_ok);
    assert_eq!(event.body["type"], "payment.succeeded");
    assert_eq!(event.body["data"]["id"], id);
    assert_eq!(event.body["data"]["status"], "succeeded");
    assert!(event.body["data"]["channel_trade_no"].is_string());
    // Acknowledged once: never again.
    assert!(app
        .receiver
        .next(Duration::from_millis(500))
        .await
        .is_none());

    let by_order = app
        .client
        .get("/v1/payments?merchant_order_no=ORDER-1")
        .await
        .unwrap();
    assert_eq!(by_order.body["id"], id);
    app.server.stop();
});

on_every_backend!(bad_requests_get_stable_codes_and_write_nothing, |db| {
    let app = spawn_app(&db, |_| {}).await;
    let body = order("ORDER-BAD", &app.receiver.url)
        .to_string()
        .into_bytes();
    let send = |body: Vec<u8>, auth: Auth| {
        let client = app.client.clone();
        async move {
            client
                .send(Method::POST, "/v1/payments", body, auth)
                .await
                .unwrap()
        }
    };
    let now = chrono::Utc::now().timestamp();

    let r = send(
        body.clone(),
        Auth {
            signature: Some("AAAA".into()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!((r.status, r.error_code()), (401, Some("INVALID_SIGNATURE")));
    let r = send(
        body.clone(),
        Auth {
            timestamp: Some(now - 301),
            ..Default::default()
        },
    )
    .await;
    assert_eq!((r.status, r.error_code()), (401, Some("TIMESTAMP_EXPIRED")));
    let r = send(
        body.clone(),
        Auth {
            timestamp: Some(now + 301),
            ..Default::default()
        },
    )
    .await;
    assert_eq!((r.status, r.error_code()), (401, Some("TIMESTAMP_EXPIRED")));
    let r = send(
        body.clone(),
        Auth {
            nonce: Some("short".into()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!((r.status, r.error_code()), (401, Some("INVALID_SIGNATURE")));
    let stranger = MerchantClient::new(&app.server.base_url(), "app_unknown", "whatever");
    let r = stranger
        .post("/v1/payments", &order("ORDER-BAD", &app.receiver.url))
        .await
        .unwrap();
    assert_eq!((r.status, r.error_code()), (401, Some("UNKNOWN_APP")));
    let r = send(b"{\"merchant_order_no\": ".to_vec(), Auth::default()).await;
    assert_eq!((r.status, r.error_code()), (400, Some("INVALID_REQUEST")));
    for (field, value) in [
        ("amount", json!(-100)),
        ("amount", json!(0)),
        ("amount", json!(12.5)),
        ("merchant_order_no", json!("x".repeat(65))),
        ("description", json!("d".repeat(128))),
        (
            "notify_url",
            json!(format!("https://x/{}", "u".repeat(300))),
        ),
        ("channel", json!("paypal")),
    ] {
        let mut o = order("ORDER-BAD", &app.receiver.url);
        o[field] = value;
        let r = send(o.to_string().into_bytes(), Auth::default()).await;
        assert_eq!(
            (r.status, r.error_code()),
            (400, Some("INVALID_REQUEST")),
            "{field}: {}",
            r.body
        );
        assert!(
            r.body["error"]["message"].as_str().unwrap().contains(field),
            "{}",
            r.body
        );
        assert!(r.signature_ok, "errors are signed too");
    }
    let r = send(vec![b' '; 70 * 1024], Auth::default()).await;
    assert_eq!((r.status, r.error_code()), (413, Some("PAYLOAD_TOO_LARGE")));

    // A replayed request: the first is accepted, the identical second is refused.
    let replay = Auth {
        nonce: Some("replay-nonce-0001".into()),
        timestamp: Some(now),
        ..Default::default()
    };
    let mut good = order("ORDER-REPLAY", &app.receiver.url);
    good["amount"] = json!(5);
    let first = send(good.to_string().into_bytes(), replay.clone()).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let again = send(good.to_string().into_bytes(), replay).await;
    assert_eq!(
        (again.status, again.error_code()),
        (401, Some("NONCE_REPLAYED"))
    );

    let found = app
        .client
        .get("/v1/payments?merchant_order_no=ORDER-BAD")
        .await
        .unwrap();
    assert_eq!(
        (found.status, found.error_code()),
        (404, Some("NOT_FOUND")),
        "nothing was written"
    );
    let r = app
        .client
        .get("/v1/payments/pay_01ARZ3NDEKTSV4RRFFQ69G5FAV")
        .await
        .unwrap();
    assert_eq!((r.status, r.error_code()), (404, Some("NOT_FOUND")));
    app.server.stop();
});

on_every_backend!(creates_are_idempotent, |db| {
    let app = spawn_app(&db, |_| {}).await;
    let first = app.create("ORDER-IDEM").await;
    assert_eq!(first.status, 201);
    let again = app.create("ORDER-IDEM").await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, first.body, "the same payment, byte for byte");
    let mut changed = order("ORDER-IDEM", &app.receiver.url);
    changed["amount"] = json!(2000);
    let conflict = app.client.post("/v1/payments", &changed).await.unwrap();
    assert_eq!(
        (conflict.status, conflict.error_code()),
        (409, Some("IDEMPOTENCY_CONFLICT"))
    );

    // Idempotency-Key: same key + same body replays; same key + other body conflicts.
    let keyed = |o: Value| {
        let client = app.client.clone();
        async move {
            let auth = Auth {
                idempotency_key: Some("key-123".into()),
                ..Default::default()
            };
            client
                .send(
                    Method::POST,
                    "/v1/payments",
                    o.to_string().into_bytes(),
                    auth,
                )
                .await
                .unwrap()
        }
    };
    let k1 = keyed(order("ORDER-KEY", &app.receiver.url)).await;
    assert_eq!(k1.status, 201);
    let k2 = keyed(order("ORDER-KEY", &app.receiver.url)).await;
    assert_eq!(
        (k2.status, &k2.body),
        (201, &k1.body),
        "the stored answer is replayed"
    );
    let k3 = keyed(order("ORDER-KEY-OTHER", &app.receiver.url)).await;
    assert_eq!(
        (k3.status, k3.error_code()),
        (409, Some("IDEMPOTENCY_CONFLICT"))
    );
    app.server.stop();
});

on_every_backend!(fifty_concurrent_identical_creates_make_one_payment, |db| {
    let app = spawn_app(&db, |_| {}).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (client, body) = (app.client.clone(), order("ORDER-RUSH", &app.receiver.url));
        tasks.push(tokio::spawn(async move {
            client.post("/v1/payments", &body).await.unwrap()
        }));
    }
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for t in tasks {
        let r = t.await.unwrap();
        assert!(
            r.status == 201 || r.status == 200,
            "{} {}",
            r.status,
            r.body
        );
        created += usize::from(r.status == 201);
        assert_eq!(r.body["status"], "pending");
        ids.insert(r.body["id"].as_str().unwrap().to_string());
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
    app.server.stop();
});

on_every_backend!(
    duplicate_callbacks_change_nothing_twice_and_notify_once,
    |db| {
        let mut app = spawn_app(&db, |_| {}).await;
        let created = app.create("ORDER-DUP").await;
        let id = created.body["id"].as_str().unwrap().to_string();
        let paid = app
            .sim_pay(json!({"out_trade_no": id, "callbacks": 3}))
            .await;
        assert_eq!(
            callback_statuses(&paid),
            vec![200, 200, 200],
            "every copy acknowledged: {paid}"
        );
        assert_eq!(app.status(&id).await, "succeeded");
        // Replayed later, the same notification is acknowledged and changes nothing.
        let replayed = app.sim_pay(json!({"out_trade_no": id})).await;
        assert_eq!(callback_statuses(&replayed), vec![200]);
        assert_eq!(replayed["notification_id"], paid["notification_id"]);
        let event = app
            .receiver
            .next(Duration::from_secs(10))
            .await
            .expect("notified");
        assert_eq!(event.body["data"]["id"], id.as_str());
        assert!(
            app.receiver
                .next(Duration::from_millis(1500))
                .await
                .is_none(),
            "notified once"
        );
        let pid = paymux_core::PaymentId::parse(&id).unwrap();
        assert_eq!(db.store.events_for_payment(&pid).await.unwrap().len(), 1);
        app.server.stop();
    }
);

on_every_backend!(forged_callbacks_are_rejected_and_change_nothing, |db| {
    let mut app = spawn_app(&db, |_| {}).await;
    let created = app.create("ORDER-FORGED").await;
    let id = created.body["id"].as_str().unwrap().to_string();
    for fault in [
        "bad_signature",
        "tampered_ciphertext",
        "stale_timestamp",
        "other_mchid",
        "other_appid",
    ] {
        let answer = app
            .sim_pay(json!({"out_trade_no": id, "fault": fault}))
            .await;
        assert_eq!(
            callback_statuses(&answer),
            vec![500],
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
    app.server.stop();
});

on_every_backend!(notification_survives_a_crash_before_delivery, |db| {
    // The first server commits the payment's success but dies before notifying.
    let mut app = spawn_app(&db, |c| c.notifier.enabled = false).await;
    let created = app.create("ORDER-CRASH").await;
    let id = created.body["id"].as_str().unwrap().to_string();
    app.sim_pay(json!({"out_trade_no": id})).await;
    assert_eq!(app.status(&id).await, "succeeded");
    assert!(app
        .receiver
        .next(Duration::from_millis(500))
        .await
        .is_none());
    let TestApp {
        server,
        mut receiver,
        ..
    } = app;
    server.stop();

    // A new process on the same database delivers it.
    let store = paymux_store::open(&db.url).await.unwrap();
    let mut config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        sandbox: true,
        ..Default::default()
    };
    config.notifier.poll_interval_ms = 100;
    let restarted = paymux_server::start(config, store).await.unwrap();
    let event = receiver
        .next(Duration::from_secs(10))
        .await
        .expect("delivered after restart");
    assert_eq!(event.body["data"]["id"], id.as_str());
    assert!(receiver.next(Duration::from_millis(500)).await.is_none());
    restarted.stop();
});

on_every_backend!(notifications_are_retried_until_acknowledged, |db| {
    let mut app = spawn_app(&db, |c| c.notifier.schedule_secs = vec![1, 1, 1, 1]).await;
    app.receiver.set_accepting(false);
    let created = app.create("ORDER-RETRY").await;
    let id = created.body["id"].as_str().unwrap().to_string();
    app.sim_pay(json!({"out_trade_no": id})).await;
    let refused = app.receiver.next(Duration::from_secs(10)).await.unwrap();
    assert!(!refused.acknowledged);
    let refused = app.receiver.next(Duration::from_secs(10)).await.unwrap();
    assert!(!refused.acknowledged);
    app.receiver.set_accepting(true);
    let accepted = app.receiver.next(Duration::from_secs(10)).await.unwrap();
    assert!(accepted.acknowledged);
    assert_eq!(
        accepted.body["id"], refused.body["id"],
        "the same event, retried"
    );
    assert!(
        app.receiver
            .next(Duration::from_millis(2500))
            .await
            .is_none(),
        "never again once acknowledged"
    );
    let pid = paymux_core::PaymentId::parse(&id).unwrap();
    let events = db.store.events_for_payment(&pid).await.unwrap();
    assert!(events[0].delivered_at.is_some());
    assert_eq!(events[0].attempts, 3);
    app.server.stop();
});

on_every_backend!(
    every_method_prepares_and_close_closes_at_the_channel,
    |db| {
        let mut app = spawn_app(&db, |_| {}).await;
        for (method, field) in [
            ("native", "code_url"),
            ("h5", "h5_url"),
            ("app", "prepayid"),
            ("jsapi", "paySign"),
        ] {
            let mut o = order(&format!("ORDER-{method}"), &app.receiver.url);
            o["method"] = json!(method);
            o["payer"] = json!({"openid": "o-1", "client_ip": "203.0.113.7"});
            let r = app.client.post("/v1/payments", &o).await.unwrap();
            assert_eq!(r.status, 201, "{method}: {}", r.body);
            assert!(
                r.body["pay_params"][field].is_string(),
                "{method}: {}",
                r.body
            );
        }
        let created = app.create("ORDER-CLOSE").await;
        let id = created.body["id"].as_str().unwrap().to_string();
        let closed = app
            .client
            .post(&format!("/v1/payments/{id}/close"), &json!({}))
            .await
            .unwrap();
        assert_eq!(
            (closed.status, closed.body["status"].as_str()),
            (200, Some("closed")),
            "{}",
            closed.body
        );
        let again = app
            .client
            .post(&format!("/v1/payments/{id}/close"), &json!({}))
            .await
            .unwrap();
        assert_eq!(again.body["status"], "closed");
        // The channel knows it is closed: the payer can no longer pay.
        let r = app
            .http
            .post(format!("{}/sim/wechat/pay", app.server.base_url()))
            .json(&json!({"out_trade_no": id}))
            .send()
            .await
            .unwrap();
        assert!(!r.status().is_success());
        assert_eq!(app.status(&id).await, "closed");
        // The merchant hears of the close once, with who closed it.
        let event = app
            .receiver
            .next(Duration::from_secs(5))
            .await
            .expect("payment.closed delivered");
        assert_eq!(event.body["type"], "payment.closed");
        assert_eq!(event.body["reason"], "merchant");
        assert_eq!(event.body["data"]["id"], id.as_str());
        assert!(app
            .receiver
            .next(Duration::from_millis(300))
            .await
            .is_none());
        app.server.stop();
    }
);

on_every_backend!(operational_endpoints_answer, |db| {
    let app = spawn_app(&db, |_| {}).await;
    let base = app.server.base_url();
    app.create("ORDER-OPS").await;
    for (path, needle) in [
        ("/healthz", "ok"),
        ("/readyz", "ready"),
        ("/metrics", "paymux_payments_created_total"),
    ] {
        let text = app
            .http
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains(needle), "{path}: {text}");
    }
    let missing: Value = app
        .http
        .get(format!("{base}/no/such/route"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(missing["error"]["code"], "NOT_FOUND");
    let r = app.client.get("/v1/payments?limit=0").await.unwrap();
    assert_eq!((r.status, r.error_code()), (400, Some("INVALID_REQUEST")));
    let r = app.client.get("/v1/payments?bogus=1").await.unwrap();
    assert_eq!((r.status, r.error_code()), (400, Some("INVALID_REQUEST")));
    let spec: Value = app
        .http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    assert!(spec["paths"]["/v1/payments/{id}/close"]["post"].is_object());
    assert!(spec["paths"]["/v1/balances"]["get"].is_object());
    assert!(spec["paths"]["/v1/checkouts/{id}/attempts"]["post"].is_object());
    assert!(spec["components"]["schemas"]["Checkout"]["properties"]["paid_payment_id"].is_object());
    app.server.stop();
});

on_every_backend!(
    admin_api_manages_channel_accounts_with_the_operator_token,
    |db| {
        // No token configured: the admin API does not exist.
        let app = spawn_app(&db, |_| {}).await;
        let base = app.server.base_url();
        let r = app
            .http
            .get(format!("{base}/admin/channel-accounts"))
            .bearer_auth("anything")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        app.server.stop();

        let token = "op-token-0123456789";
        let app = spawn_app(&db, |c| {
            c.admin_token = Some(paymux_server::config::SecretString::new(token))
        })
        .await;
        let base = app.server.base_url();
        let admin = |method: Method, path: &str| {
            app.http
                .request(method, format!("{base}/admin{path}"))
                .bearer_auth(token)
        };
        // Wrong token, no token, merchant credentials: all refused.
        for req in [
            app.http
                .get(format!("{base}/admin/channel-accounts"))
                .bearer_auth("op-token-0123456780"),
            app.http.get(format!("{base}/admin/channel-accounts")),
        ] {
            assert_eq!(req.send().await.unwrap().status(), 401);
        }
        let as_merchant = app.client.get("/admin/channel-accounts").await.unwrap();
        assert_eq!(as_merchant.status, 401);

        // A merchant's own WeChat keys, registered at the (in-process) simulator.
        let merchant = app.server.state.store.list_merchants().await.unwrap()[0].clone();
        let private_key_pem = paymux_channels::keys::PrivateKey::generate_pkcs8_pem().unwrap();
        let public_key_pem = paymux_channels::keys::PrivateKey::from_pem(&private_key_pem)
            .unwrap()
            .public_key()
            .unwrap()
            .to_pem();
        let apiv3_key = "AdminApiV3Key0123456789abcdefghi";
        let serial_no = "3775B6A45ACD588826D15E583A95F5DD2ACFDB4B";
        let r = app
            .http
            .post(format!("{base}/sim/wechat/merchants"))
            .json(&json!({"mchid": "1900007777", "serial_no": serial_no,
                      "public_key_pem": public_key_pem, "apiv3_key": apiv3_key}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let add = json!({
            "merchant_id": merchant.id, "appid": "wx0000000000000001", "mchid": "1900007777",
            "serial_no": serial_no, "private_key_pem": private_key_pem, "apiv3_key": apiv3_key,
            "base_url": format!("{base}/sim/wechat"),
        });
        let r = admin(Method::POST, "/channel-accounts/wechat")
            .json(&add)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let text = r.text().await.unwrap();
        assert!(
            !text.contains(apiv3_key) && !text.contains("PRIVATE KEY"),
            "{text}"
        );
        let created: Value = serde_json::from_str(&text).unwrap();
        let id = created["id"].as_str().unwrap().to_string();
        assert_eq!(created["config"]["apiv3_key"], "********");

        // A bad key is refused without echoing it.
        let mut bad = add.clone();
        bad["private_key_pem"] =
            json!("-----BEGIN PRIVATE KEY-----\nnot-a-key-SECRET\n-----END PRIVATE KEY-----\n");
        let r = admin(Method::POST, "/channel-accounts/wechat")
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert!(!r.text().await.unwrap().contains("not-a-key-SECRET"));

        let listed = admin(
            Method::GET,
            &format!("/channel-accounts?merchant_id={}", merchant.id),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
        assert!(listed.contains(&id) && !listed.contains(apiv3_key));
        let tested: Value = admin(Method::POST, &format!("/channel-accounts/{id}/test"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(tested["ok"], true, "{tested}");
        let r = admin(Method::POST, &format!("/channel-accounts/{id}/disable"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let shown: Value = admin(Method::GET, &format!("/channel-accounts/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(shown["enabled"], false);
        let r = admin(Method::GET, "/channel-accounts/acct_nope")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        app.server.stop();
    }
);

on_every_backend!(one_idempotency_key_runs_one_request_at_a_time, |db| {
    let app = spawn_app(&db, |_| {}).await;
    // Every WeChat call takes a second, so the first request is still
    // running when the others arrive.
    app.set_faults("wechat", &json!({"latency_rate": 1.0, "latency_ms": 1000}))
        .await;
    let keyed = |o: Value| {
        let client = app.client.clone();
        async move {
            let auth = Auth {
                idempotency_key: Some("key-race".into()),
                ..Default::default()
            };
            client
                .send(
                    Method::POST,
                    "/v1/payments",
                    o.to_string().into_bytes(),
                    auth,
                )
                .await
                .unwrap()
        }
    };
    let first = tokio::spawn(keyed(order("ORDER-RACE-1", &app.receiver.url)));
    // Until the first request holds the key.
    let merchant = db
        .store
        .app(&app.client.app_id)
        .await
        .unwrap()
        .unwrap()
        .merchant_id;
    for _ in 0..100 {
        if db
            .store
            .idempotency_record(&merchant, "key-race")
            .await
            .unwrap()
            .is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The same key with another order: refused, never a second payment.
    let other = keyed(order("ORDER-RACE-2", &app.receiver.url)).await;
    assert_eq!(
        (other.status, other.error_code()),
        (409, Some("IDEMPOTENCY_CONFLICT")),
        "{}",
        other.body
    );
    // The same request again while the first runs: in progress.
    let repeat = keyed(order("ORDER-RACE-1", &app.receiver.url)).await;
    assert_eq!(
        (repeat.status, repeat.error_code()),
        (409, Some("REQUEST_IN_PROGRESS")),
        "{}",
        repeat.body
    );
    let first = first.await.unwrap();
    assert_eq!(first.status, 201, "{}", first.body);
    app.clear_faults("wechat").await;
    // Once answered, a repeat gets the same answer.
    let replayed = keyed(order("ORDER-RACE-1", &app.receiver.url)).await;
    assert_eq!((replayed.status, &replayed.body), (201, &first.body));
    let second = app
        .client
        .get("/v1/payments?merchant_order_no=ORDER-RACE-2")
        .await
        .unwrap();
    assert_eq!(second.status, 404, "no payment for the refused order");
    app.server.stop();
});

on_every_backend!(
    notifications_are_signed_by_the_app_that_made_the_payment,
    |db| {
        let app = spawn_app(&db, |_| {}).await;
        // A second app of the same merchant (say, its H5 shop beside its
        // mini-program) creates a payment.
        let first = db.store.app(&app.client.app_id).await.unwrap().unwrap();
        let second = paymux_server::merchants::create_app(
            &*db.store,
            &paymux_core::SystemClock,
            &first.merchant_id,
        )
        .await
        .unwrap();
        let mut receiver = paymux_server::client::NotifyReceiver::start(&second.secret)
            .await
            .unwrap();
        let client = MerchantClient::new(&app.server.base_url(), &second.app_id, &second.secret);
        let created = client
            .post("/v1/payments", &order("ORDER-H5", &receiver.url))
            .await
            .unwrap();
        assert_eq!(created.status, 201, "{}", created.body);
        let id = created.body["id"].as_str().unwrap().to_string();
        app.sim_pay(json!({"out_trade_no": id})).await;
        let event = receiver
            .next(Duration::from_secs(5))
            .await
            .expect("notified");
        assert!(event.signature_ok, "signed with the second app's secret");
        assert!(event.acknowledged);
        assert_eq!(event.body["data"]["id"], id.as_str());
        app.server.stop();
    }
);
