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

/// Waits (briefly, in real time) for the workers to bring a payment to `want`.
async fn wait_status(app: &TestApp, id: &str, want: &str) {
    let mut seen = String::new();
    for _ in 0..100 {
        seen = app.status(id).await;
        if seen == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("payment {id} is {seen}, expected {want}");
}

async fn poller_waits_for_the_breaker(db: &TestDb, channel: &str, kind: ChannelKind) {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let app: TestApp = common::spawn_app_with_clock(db, clock.clone(), |c| {
        c.poller.interval_ms = 20;
        c.poller.first_delay_secs = 30;
        c.poller.schedule_secs = vec![10];
        c.breaker.consecutive_failures = 3;
        c.breaker.min_calls = 100;
        c.breaker.open_secs = 60;
    })
    .await;
    let url = app.receiver.url.clone();
    // Three paid payments whose callbacks were lost: only queries can settle them.
    let mut ids = Vec::new();
    for n in 0..3 {
        let body = create_body(channel, &format!("POLL-BRK-{channel}-{n}"), &url);
        let r = app.client.post("/v1/payments", &body).await.unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
        let id = r.body["id"].as_str().unwrap().to_string();
        let (status, paid) = app
            .pay_at(channel, &json!({"out_trade_no": id, "callbacks": 0}))
            .await;
        assert_eq!(status, 200, "{paid}");
        ids.push(id);
    }
    let account = account_id(db, kind).await;
    app.set_faults(channel, &json!({"seed": 11, "error_rate": 1.0}))
        .await;
    // The first checks fail and open the query breaker.
    clock.advance(chrono::Duration::seconds(31));
    let mut opened = false;
    for _ in 0..100 {
        if app.breaker_gauge(&account, "query").await == Some(1.0) {
            opened = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(opened, "query breaker did not open");
    assert_eq!(app.faults(channel).await["injected"]["errors"], 3);
    // While it is open, the checks that fall due are deferred: no call
    // reaches the channel.
    for _ in 0..5 {
        clock.advance(chrono::Duration::seconds(10));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(app.faults(channel).await["injected"]["errors"], 3);
    for id in &ids {
        assert_eq!(app.status(id).await, "pending");
    }
    // The channel recovers; once the open time is up a trial query closes
    // the breaker and every payment settles.
    app.clear_faults(channel).await;
    clock.advance(chrono::Duration::seconds(15));
    for id in &ids {
        for _ in 0..5 {
            if app.status(id).await == "succeeded" {
                break;
            }
            clock.advance(chrono::Duration::seconds(2));
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        wait_status(&app, id, "succeeded").await;
    }
    assert_eq!(app.breaker_gauge(&account, "query").await, Some(0.0));
    app.server.stop();
}

on_every_backend!(the_poller_waits_for_an_open_wechat_breaker, |db| {
    poller_waits_for_the_breaker(&db, "wechat", ChannelKind::Wechat).await;
});

on_every_backend!(the_poller_waits_for_an_open_alipay_breaker, |db| {
    poller_waits_for_the_breaker(&db, "alipay", ChannelKind::Alipay).await;
});
