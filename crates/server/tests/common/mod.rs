//! What the end-to-end suites share: a sandbox paymux on a random port with a
//! merchant and the merchant's notify endpoint, and a way to run a test once
//! per store backend. Each suite adds its own helpers to `TestApp`.

#![allow(dead_code)]

pub mod refunds;

use std::sync::Arc;

use paymux_core::{Clock, SystemClock};
use paymux_server::client::{MerchantClient, NotifyReceiver};
use paymux_server::{Running, ServerConfig};
use paymux_store::testing::TestDb;
use serde_json::Value;

pub struct TestApp {
    pub server: Running,
    pub client: MerchantClient,
    pub receiver: NotifyReceiver,
    pub http: reqwest::Client,
}

/// A sandbox server on the real clock.
pub async fn spawn_app(db: &TestDb, tweak: impl FnOnce(&mut ServerConfig)) -> TestApp {
    spawn_app_with_clock(db, Arc::new(SystemClock), tweak).await
}

pub async fn spawn_app_with_clock(
    db: &TestDb,
    clock: Arc<dyn Clock>,
    tweak: impl FnOnce(&mut ServerConfig),
) -> TestApp {
    let mut config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        sandbox: true,
        ..Default::default()
    };
    config.notifier.poll_interval_ms = 100;
    tweak(&mut config);
    let server = paymux_server::start_with_clock(config, db.store.clone(), clock)
        .await
        .expect("server starts");
    let (_, app) = paymux_server::merchants::create_merchant(&*db.store, &SystemClock, "Test Mall")
        .await
        .unwrap();
    let receiver = NotifyReceiver::start(&app.secret).await.unwrap();
    let client = MerchantClient::new(&server.base_url(), &app.app_id, &app.secret);
    TestApp {
        server,
        client,
        receiver,
        http: reqwest::Client::new(),
    }
}

impl TestApp {
    /// Plays the payer at a simulator (`channel` is `wechat` or `alipay`):
    /// the HTTP status of the control call and its answer.
    pub async fn pay_at(&self, channel: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/sim/{channel}/pay", self.server.base_url()))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The payment's status as the merchant API reports it.
    pub async fn status(&self, id: &str) -> String {
        let r = self
            .client
            .get(&format!("/v1/payments/{id}"))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["status"].as_str().unwrap().to_string()
    }
}

impl TestApp {
    /// Sets a simulator's injected faults (`channel` is `wechat` or `alipay`).
    pub async fn set_faults(&self, channel: &str, faults: &Value) {
        let r = self
            .http
            .post(format!("{}/sim/{channel}/faults", self.server.base_url()))
            .json(faults)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    }

    /// A simulator's fault configuration and counts.
    pub async fn faults(&self, channel: &str) -> Value {
        self.http
            .get(format!("{}/sim/{channel}/faults", self.server.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// No more faults at a simulator.
    pub async fn clear_faults(&self, channel: &str) {
        let r = self
            .http
            .delete(format!("{}/sim/{channel}/faults", self.server.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }

    /// What `/metrics` shows now.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.server.base_url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of the breaker state gauge of an account's operation
    /// (0 closed, 1 open, 2 half-open), from `/metrics`.
    pub async fn breaker_gauge(&self, account_id: &str, operation: &str) -> Option<f64> {
        let text = self.metrics_text().await;
        let account = format!("account=\"{account_id}\"");
        let op = format!("operation=\"{operation}\"");
        text.lines()
            .filter(|l| l.starts_with("paymux_channel_breaker_state{"))
            .find(|l| l.contains(&account) && l.contains(&op))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

/// The HTTP statuses paymux answered a simulator's callbacks with.
pub fn callback_statuses(outcome: &Value) -> Vec<u64> {
    outcome["callbacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_u64().unwrap_or(0))
        .collect()
}

/// Runs a test body as one test per backend (`NAME::sqlite`,
/// `NAME::postgres`), each on its own fresh database, so a failure names its
/// backend. Every case ends with a check of the whole ledger and of the
/// audit trail's hash chain.
macro_rules! on_every_backend {
    ($name:ident, |$db:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $db = paymux_store::testing::sqlite().await;
                $body
                $db.assert_ledger_ok().await;
                $db.assert_audit_ok().await;
                $db.cleanup().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some($db) = paymux_store::testing::postgres().await else {
                    return;
                };
                $body
                $db.assert_ledger_ok().await;
                $db.assert_audit_ok().await;
                $db.cleanup().await;
            }
        }
    };
}
