//! Status checks end to end: lost callbacks, expiry and unknown prepay
//! outcomes settle through the poller, on every store backend available.
//! Time is a manual clock moved by the tests (by less than the signature
//! windows, so the simulator and the merchant client still agree with it).

#[macro_use]
mod common;

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use common::TestApp;

use chrono::Utc;
use paymux_core::{Clock, ManualClock, PaymentId, PaymentStatus};
use paymux_server::{flow, ServerConfig};
use paymux_store::testing::TestDb;
use paymux_store::{Inserted, Payment};
use serde_json::{json, Value};

/// The sandbox app plus the manual clock its server runs on.
struct PollApp {
    app: TestApp,
    clock: Arc<ManualClock>,
}

impl Deref for PollApp {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

impl DerefMut for PollApp {
    fn deref_mut(&mut self) -> &mut TestApp {
        &mut self.app
    }
}

async fn spawn_app(db: &TestDb, tweak: impl FnOnce(&mut ServerConfig)) -> PollApp {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let app = common::spawn_app_with_clock(db, clock.clone(), |config| {
        config.notifier.poll_interval_ms = 50;
        config.poller.interval_ms = 50;
        tweak(config);
    })
    .await;
    PollApp { app, clock }
}

impl TestApp {
    /// Creates a payment expiring in `expires_in` seconds; returns its id.
    async fn create(&self, order_no: &str, expires_in: i64) -> String {
        let body = json!({
            "merchant_order_no": order_no,
            "amount": 1999,
            "channel": "wechat",
            "method": "mini_program",
            "description": "2 cups of coffee",
            "notify_url": self.receiver.url,
            "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
            "expires_in_seconds": expires_in,
        });
        let r = self.client.post("/v1/payments", &body).await.unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.body["status"], "pending");
        r.body["id"].as_str().unwrap().to_string()
    }

    /// Creates an Alipay payment (`native`: the order exists at Alipay at
    /// once; `wap`: only once the payer opens it); returns its id.
    async fn create_alipay(&self, order_no: &str, method: &str, expires_in: i64) -> String {
        let body = json!({
            "merchant_order_no": order_no,
            "amount": 2590,
            "channel": "alipay",
            "method": method,
            "description": "a pot of tea",
            "notify_url": self.receiver.url,
            "expires_in_seconds": expires_in,
        });
        let r = self.client.post("/v1/payments", &body).await.unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.body["status"], "pending");
        r.body["id"].as_str().unwrap().to_string()
    }

    /// The payer pays at the simulator; returns its HTTP status and body.
    async fn sim_pay(&self, id: &str, callbacks: u32) -> (u16, Value) {
        self.pay_at(
            "wechat",
            &json!({"out_trade_no": id, "callbacks": callbacks}),
        )
        .await
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
}

impl PollApp {
    /// Exactly one `payment.succeeded` for `id` reaches the merchant.
    async fn notified_once(&mut self, id: &str) {
        let event = self
            .receiver
            .next(Duration::from_secs(5))
            .await
            .expect("merchant notified");
        assert!(event.signature_ok);
        assert_eq!(event.body["type"], "payment.succeeded");
        assert_eq!(event.body["data"]["id"], id);
        assert_eq!(event.body["data"]["status"], "succeeded");
        // Later checks change nothing and notify nothing.
        self.clock.advance(chrono::Duration::seconds(120));
        assert!(
            self.receiver
                .next(Duration::from_millis(500))
                .await
                .is_none(),
            "merchant notified twice"
        );
    }
}

/// A payment whose prepay answer never came back (timeout, crash): it stays
/// `created` here. With `reach_channel` the prepay did arrive at the channel.
async fn lost_prepay(app: &PollApp, db: &TestDb, order_no: &str, reach_channel: bool) -> String {
    // A first payment gives the merchant its sandbox channel account.
    let first = app.create(&format!("{order_no}-FIRST"), 3600).await;
    let first = db
        .store
        .payment(&PaymentId::parse(&first).unwrap())
        .await
        .unwrap()
        .unwrap();
    let now = app.clock.now();
    let lost = Payment {
        id: PaymentId::generate(),
        merchant_order_no: order_no.into(),
        status: PaymentStatus::Created,
        pay_params: None,
        created_at: now,
        updated_at: now,
        expires_at: now + chrono::Duration::hours(1),
        ..first
    };
    assert_eq!(db.store.insert_payment(&lost).await.unwrap(), Inserted::New);
    if reach_channel {
        // The very request paymux's prepare sends, so a repeat matches it.
        let state = &app.server.state;
        let (_, channel) = flow::channel_for(state, &lost.channel_account_id)
            .await
            .unwrap();
        let request = flow::prepay_request(state, &lost);
        channel.prepay(&request).await.unwrap();
    }
    lost.id.to_string()
}

on_every_backend!(a_lost_callback_is_made_good_by_polling, |db| {
    let mut app = spawn_app(&db, |c| c.poller.first_delay_secs = 60).await;
    let id = app.create("LOST-1", 3600).await;
    let (status, paid) = app.sim_pay(&id, 0).await;
    assert_eq!(status, 200, "{paid}");
    assert_eq!(paid["callbacks"], json!([]), "no callback was sent");
    // Before the first check is due nothing happens.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.status(&id).await, "pending");
    app.clock.advance(chrono::Duration::seconds(61));
    app.wait_status(&id, "succeeded").await;
    app.notified_once(&id).await;
    app.app.server.stop();
});

on_every_backend!(an_unpaid_payment_is_closed_when_it_expires, |db| {
    let mut app = spawn_app(&db, |c| c.poller.first_delay_secs = 3600).await;
    let id = app.create("EXPIRE-1", 60).await;
    app.clock.advance(chrono::Duration::seconds(59));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.status(&id).await, "pending");
    app.clock.advance(chrono::Duration::seconds(2));
    app.wait_status(&id, "closed").await;
    // Closed at the channel too: the payer can no longer pay.
    let (status, body) = app.sim_pay(&id, 1).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "ORDER_CLOSED", "{body}");
    // The merchant learns it without polling, once.
    let event = app
        .receiver
        .next(Duration::from_secs(5))
        .await
        .expect("payment.closed delivered");
    assert!(event.signature_ok);
    assert_eq!(event.body["type"], "payment.closed");
    assert_eq!(event.body["reason"], "expired");
    assert_eq!(event.body["data"]["id"], id.as_str());
    assert_eq!(event.body["data"]["status"], "closed");
    assert!(app
        .receiver
        .next(Duration::from_millis(300))
        .await
        .is_none());
    app.app.server.stop();
});

on_every_backend!(a_payment_paid_at_the_last_moment_is_not_closed, |db| {
    let mut app = spawn_app(&db, |c| c.poller.first_delay_secs = 3600).await;
    let id = app.create("LAST-1", 60).await;
    app.clock.advance(chrono::Duration::seconds(59));
    let (status, paid) = app.sim_pay(&id, 0).await;
    assert_eq!(status, 200, "{paid}");
    app.clock.advance(chrono::Duration::seconds(2));
    app.wait_status(&id, "succeeded").await;
    app.notified_once(&id).await;
    app.app.server.stop();
});

on_every_backend!(a_prepay_that_never_reached_the_channel_is_closed, |db| {
    let app = spawn_app(&db, |c| {
        c.poller.first_delay_secs = 30;
        c.poller.schedule_secs = vec![30];
        c.poller.prepay_window_secs = 60;
    })
    .await;
    let id = lost_prepay(&app, &db, "LOST-PREPAY-1", false).await;
    // Within the prepay window the channel's "not found" is not believed yet.
    app.clock.advance(chrono::Duration::seconds(31));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(app.status(&id).await, "created");
    app.clock.advance(chrono::Duration::seconds(31));
    app.wait_status(&id, "closed").await;
    // Paying it at the channel is impossible: the channel never had it.
    let (status, _) = app.sim_pay(&id, 1).await;
    assert_eq!(status, 404);
    app.app.server.stop();
});

on_every_backend!(a_prepay_whose_answer_was_lost_is_resumed, |db| {
    let app = spawn_app(&db, |c| c.poller.first_delay_secs = 30).await;
    let id = lost_prepay(&app, &db, "LOST-ANSWER-1", true).await;
    app.clock.advance(chrono::Duration::seconds(31));
    app.wait_status(&id, "pending").await;
    let r = app.client.get(&format!("/v1/payments/{id}")).await.unwrap();
    let package = r.body["pay_params"]["package"].as_str().unwrap_or_default();
    assert!(package.starts_with("prepay_id="), "{}", r.body);
    app.app.server.stop();
});

on_every_backend!(a_prepay_whose_answer_was_lost_and_was_paid_succeeds, |db| {
    let mut app = spawn_app(&db, |c| c.poller.first_delay_secs = 30).await;
    let id = lost_prepay(&app, &db, "LOST-ANSWER-2", true).await;
    let (status, paid) = app.sim_pay(&id, 0).await;
    assert_eq!(status, 200, "{paid}");
    app.clock.advance(chrono::Duration::seconds(31));
    app.wait_status(&id, "succeeded").await;
    app.notified_once(&id).await;
    app.app.server.stop();
});

on_every_backend!(
    a_callback_for_a_prepay_whose_answer_was_lost_succeeds,
    |db| {
        // No status check runs during this test: the callback alone settles it.
        let mut app = spawn_app(&db, |c| c.poller.first_delay_secs = 3600).await;
        let id = lost_prepay(&app, &db, "LOST-ANSWER-3", true).await;
        let (status, paid) = app.sim_pay(&id, 1).await;
        assert_eq!(status, 200, "{paid}");
        assert_eq!(common::callback_statuses(&paid), vec![200], "{paid}");
        assert_eq!(app.status(&id).await, "succeeded");
        app.notified_once(&id).await;
        app.app.server.stop();
    }
);

on_every_backend!(a_lost_alipay_notify_is_made_good_by_polling, |db| {
    let mut app = spawn_app(&db, |c| c.poller.first_delay_secs = 60).await;
    let id = app.create_alipay("ALI-LOST-1", "native", 3600).await;
    let (status, paid) = app
        .pay_at("alipay", &json!({"out_trade_no": id, "callbacks": 0}))
        .await;
    assert_eq!(status, 200, "{paid}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.status(&id).await, "pending");
    app.clock.advance(chrono::Duration::seconds(61));
    app.wait_status(&id, "succeeded").await;
    app.notified_once(&id).await;
    app.app.server.stop();
});

on_every_backend!(an_unpaid_alipay_payment_is_closed_when_it_expires, |db| {
    let app = spawn_app(&db, |c| c.poller.first_delay_secs = 3600).await;
    let id = app.create_alipay("ALI-EXPIRE-1", "native", 60).await;
    app.clock.advance(chrono::Duration::seconds(61));
    app.wait_status(&id, "closed").await;
    // Closed at Alipay too: the payer can no longer pay.
    let (status, body) = app
        .pay_at("alipay", &json!({"out_trade_no": id, "callbacks": 1}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "ACQ.TRADE_HAS_CLOSE", "{body}");
    app.app.server.stop();
});

on_every_backend!(
    an_alipay_payment_paid_at_the_last_moment_is_not_closed,
    |db| {
        let mut app = spawn_app(&db, |c| c.poller.first_delay_secs = 3600).await;
        let id = app.create_alipay("ALI-LAST-1", "native", 60).await;
        app.clock.advance(chrono::Duration::seconds(59));
        let (status, paid) = app
            .pay_at("alipay", &json!({"out_trade_no": id, "callbacks": 0}))
            .await;
        assert_eq!(status, 200, "{paid}");
        app.clock.advance(chrono::Duration::seconds(2));
        app.wait_status(&id, "succeeded").await;
        app.notified_once(&id).await;
        app.app.server.stop();
    }
);

on_every_backend!(
    an_alipay_wap_order_never_opened_is_closed_when_it_expires,
    |db| {
        // Alipay first hears of a WAP order from the payer's browser: one never
        // opened is unknown there, and expiry closes it here.
        let mut app = spawn_app(&db, |c| c.poller.first_delay_secs = 3600).await;
        let id = app.create_alipay("ALI-WAP-1", "wap", 60).await;
        app.clock.advance(chrono::Duration::seconds(61));
        app.wait_status(&id, "closed").await;
        let event = app
            .receiver
            .next(Duration::from_secs(5))
            .await
            .expect("notified");
        assert_eq!(event.body["type"], "payment.closed");
        assert_eq!(event.body["reason"], "expired");
        assert!(app
            .receiver
            .next(Duration::from_millis(300))
            .await
            .is_none());
        app.app.server.stop();
    }
);

on_every_backend!(
    closing_a_payment_whose_prepay_answer_was_lost_but_was_paid_does_not_hang,
    |db| {
        // The prepay reached WeChat but its answer was lost (the payment is
        // still `created` here), the payer paid, and the merchant closes it.
        // Closing holds the order's lock, learns from WeChat that it was
        // paid, and must settle it without taking that lock a second time.
        let mut app = spawn_app(&db, |c| c.poller.first_delay_secs = 3600).await;
        let id = lost_prepay(&app, &db, "LOST-CLOSE-1", true).await;
        let (status, paid) = app.sim_pay(&id, 0).await;
        assert_eq!(status, 200, "{paid}");
        let close = tokio::time::timeout(
            Duration::from_secs(10),
            app.client
                .post(&format!("/v1/payments/{id}/close"), &json!({})),
        )
        .await
        .expect("the close answers instead of waiting on its own lock")
        .unwrap();
        assert_eq!(
            (close.status, close.error_code()),
            (409, Some("INVALID_STATE")),
            "{}",
            close.body
        );
        assert_eq!(app.status(&id).await, "succeeded");
        app.notified_once(&id).await;
        // The order is not left locked: a second close answers too.
        let again = tokio::time::timeout(
            Duration::from_secs(10),
            app.client
                .post(&format!("/v1/payments/{id}/close"), &json!({})),
        )
        .await
        .expect("the order lock was released")
        .unwrap();
        assert_eq!(again.status, 409, "{}", again.body);
        app.app.server.stop();
    }
);
