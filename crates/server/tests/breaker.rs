//! Circuit breakers end to end: a channel answering 5xx to everything opens
//! its account's prepay breaker, after which creates are refused at once
//! with 503 CHANNEL_UNAVAILABLE without reaching the channel or writing a
//! payment; once the channel recovers and the open time is up, a trial call
//! closes the breaker again. Time is a manual clock.

#[macro_use]
mod common;

use std::sync::Arc;

use chrono::Utc;
use common::TestApp;
use paymux_core::{ChannelKind, ManualClock};
use paymux_store::testing::TestDb;
use serde_json::{json, Value};

fn create_body(channel: &str, order_no: &str, notify_url: &str) -> Value {
    let (method, payer) = match channel {
        "wechat" => (
            "mini_program",
            json!({"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}),
        ),
        _ => ("native", json!({})),
    };
    json!({
        "merchant_order_no": order_no,
        "amount": 1999,
        "channel": channel,
        "method": method,
        "description": "2 cups of coffee",
        "notify_url": notify_url,
        "payer": payer,
    })
}

async fn account_id(db: &TestDb, channel: ChannelKind) -> String {
    db.store
        .list_channel_accounts(None)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.channel == channel)
        .expect("sandbox account")
        .id
}

async fn breaker_opens_and_closes(db: &TestDb, channel: &str, kind: ChannelKind) {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let app: TestApp = common::spawn_app_with_clock(db, clock.clone(), |c| {
        // Only the create path talks to the channel here.
        c.poller.enabled = false;
        c.breaker.consecutive_failures = 3;
        c.breaker.min_calls = 100;
        c.breaker.open_secs = 30;
        c.breaker.half_open_calls = 1;
    })
    .await;
    let url = app.receiver.url.clone();
    let create = |n: &str| create_body(channel, &format!("BRK-{channel}-{n}"), &url);

    // A healthy first payment gives the merchant its account.
    let r = app.client.post("/v1/payments", &create("0")).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let account = account_id(db, kind).await;
    assert_eq!(app.breaker_gauge(&account, "prepay").await, Some(0.0));

    app.set_faults(channel, &json!({"seed": 7, "error_rate": 1.0}))
        .await;
    // Each of these reaches the channel and fails: the outcome is unknown,
    // the payment stays `created` and a repeat resumes it.
    for n in 1..=3 {
        let r = app
            .client
            .post("/v1/payments", &create(&n.to_string()))
            .await
            .unwrap();
        assert_eq!(r.status, 503, "{}", r.body);
        assert_eq!(r.error_code(), Some("CHANNEL_UNAVAILABLE"));
    }
    assert_eq!(app.faults(channel).await["injected"]["errors"], 3);
    assert_eq!(app.breaker_gauge(&account, "prepay").await, Some(1.0));

    // Open: refused at once, nothing sent to the channel, nothing written.
    let r = app.client.post("/v1/payments", &create("4")).await.unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.error_code(), Some("CHANNEL_UNAVAILABLE"));
    assert_eq!(app.faults(channel).await["injected"]["errors"], 3);
    let found = app
        .client
        .get(&format!("/v1/payments?merchant_order_no=BRK-{channel}-4"))
        .await
        .unwrap();
    assert_eq!(found.status, 404, "{}", found.body);
    // A repeat of a payment left `created` is refused too, and stays `created`.
    let r = app.client.post("/v1/payments", &create("1")).await.unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(app.faults(channel).await["injected"]["errors"], 3);

    // The channel recovers; before the open time is up nothing changes.
    app.clear_faults(channel).await;
    clock.advance(chrono::Duration::seconds(29));
    let r = app.client.post("/v1/payments", &create("5")).await.unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    clock.advance(chrono::Duration::seconds(1));
    // Half-open: this create is the trial call; it succeeds and closes the breaker.
    let r = app.client.post("/v1/payments", &create("6")).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["status"], "pending");
    assert_eq!(app.breaker_gauge(&account, "prepay").await, Some(0.0));
    // The payment refused while open can now be created, and the one left
    // `created` resumes with the same request.
    let r = app.client.post("/v1/payments", &create("4")).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let r = app.client.post("/v1/payments", &create("1")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "pending");
    app.server.stop();
}

on_every_backend!(a_failing_wechat_channel_opens_and_recovers, |db| {
    breaker_opens_and_closes(&db, "wechat", ChannelKind::Wechat).await;
});

on_every_backend!(a_failing_alipay_channel_opens_and_recovers, |db| {
    breaker_opens_and_closes(&db, "alipay", ChannelKind::Alipay).await;
});
