//! What the refund suites share: a sandbox paymux on a manual clock, a paid
//! payment at one channel's simulator, refund requests, the merchant's
//! events and the simulator's books.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use paymux_core::ManualClock;
use paymux_store::testing::TestDb;
use serde_json::{json, Value};

use super::TestApp;

/// The sandbox app, the manual clock its server runs on, and the channel
/// its payments go through.
pub struct RefundApp {
    pub app: TestApp,
    pub clock: Arc<ManualClock>,
    pub channel: &'static str,
}

impl Deref for RefundApp {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

impl DerefMut for RefundApp {
    fn deref_mut(&mut self) -> &mut TestApp {
        &mut self.app
    }
}

/// The operator token of these apps' admin API.
pub const ADMIN_TOKEN: &str = "operator-token-for-tests";

/// Refund checks first run a minute after a refund, then every minute.
pub async fn spawn_refund_app(db: &TestDb, channel: &'static str) -> RefundApp {
    spawn_refund_app_with(db, channel, |_| {}).await
}

/// [`spawn_refund_app`] with more configuration.
pub async fn spawn_refund_app_with(
    db: &TestDb,
    channel: &'static str,
    tweak: impl FnOnce(&mut paymux_server::ServerConfig),
) -> RefundApp {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let app = super::spawn_app_with_clock(db, clock.clone(), |config| {
        config.notifier.poll_interval_ms = 50;
        config.poller.interval_ms = 50;
        config.poller.first_delay_secs = 60;
        config.poller.schedule_secs = vec![60];
        config.channel_http.request_timeout_ms = 1_000;
        config.admin_token = Some(paymux_server::config::SecretString::new(ADMIN_TOKEN));
        tweak(config);
    })
    .await;
    RefundApp {
        app,
        clock,
        channel,
    }
}

impl RefundApp {
    /// Calls the admin API: its status and JSON answer (`Null` if not JSON).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/admin{path}", self.server.base_url()))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// The merchant's books at its one channel account, from
    /// `GET /v1/balances`, once the whole ledger has passed its check.
    pub async fn checked_books(&self, db: &TestDb) -> Value {
        db.assert_ledger_ok().await;
        let r = self.client.get("/v1/balances").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["object"], "balances");
        let data = r.body["data"].as_array().unwrap();
        assert_eq!(data.len(), 1, "{}", r.body);
        assert_eq!(data[0]["channel"], self.channel);
        assert_eq!(data[0]["currency"], "CNY");
        data[0].clone()
    }

    /// A Native (QR) payment of `amount` fen, paid at the simulator, its
    /// `payment.succeeded` received; returns its id.
    pub async fn paid_payment(&mut self, order_no: &str, amount: i64) -> String {
        let r = self
            .client
            .post(
                "/v1/payments",
                &json!({
                    "merchant_order_no": order_no,
                    "amount": amount,
                    "channel": self.channel,
                    "method": "native",
                    "description": "a pair of shoes",
                    "notify_url": self.receiver.url,
                }),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
        let id = r.body["id"].as_str().unwrap().to_string();
        let (status, paid) = self
            .pay_at(self.channel, &json!({"out_trade_no": id}))
            .await;
        assert_eq!(status, 200, "{paid}");
        let event = self.event().await;
        assert_eq!(event["type"], "payment.succeeded");
        id
    }

    /// Asks for a refund; the HTTP status and the body.
    pub async fn refund(&self, payment_id: &str, no: &str, amount: i64) -> (u16, Value) {
        let r = self
            .client
            .post(
                "/v1/refunds",
                &json!({"payment_id": payment_id, "merchant_refund_no": no, "amount": amount,
                        "reason": "退货"}),
            )
            .await
            .unwrap();
        assert!(r.signature_ok);
        (r.status, r.body)
    }

    pub async fn refund_status(&self, id: &str) -> String {
        let r = self.client.get(&format!("/v1/refunds/{id}")).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["status"].as_str().unwrap().to_string()
    }

    /// Waits (briefly, in real time) for the refund to reach `want`.
    pub async fn wait_refund(&self, id: &str, want: &str) {
        let mut seen = String::new();
        for _ in 0..100 {
            seen = self.refund_status(id).await;
            if seen == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("refund {id} is {seen}, expected {want}");
    }

    /// The next event the merchant receives (acknowledged, signed).
    pub async fn event(&mut self) -> Value {
        let e = self
            .receiver
            .next(Duration::from_secs(10))
            .await
            .expect("an event reaches the merchant");
        assert!(e.signature_ok && e.acknowledged);
        e.body
    }

    /// No further event within a short while.
    pub async fn no_more_events(&mut self) {
        let extra = self.receiver.next(Duration::from_millis(700)).await;
        assert!(
            extra.is_none(),
            "unexpected event {:?}",
            extra.map(|e| e.body)
        );
    }

    /// The simulator's books: the payment's refunds at the channel.
    pub async fn sim_refunds(&self, payment_id: &str) -> Vec<Value> {
        let r = self
            .http
            .get(format!(
                "{}/sim/{}/refunds?out_trade_no={payment_id}",
                self.server.base_url(),
                self.channel
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Vec<Value>>().await.unwrap()
    }

    /// Sets the faults of this channel's simulator.
    pub async fn inject_faults(&self, config: Value) {
        self.set_faults(self.channel, &config).await;
    }

    pub fn advance(&self, secs: i64) {
        self.clock.advance(chrono::Duration::seconds(secs));
    }
}
