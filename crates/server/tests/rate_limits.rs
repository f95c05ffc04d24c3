//! Per-app rate limits: a burst passes, the next request is refused with
//! 429 `RATE_LIMITED` and `Retry-After` (signed like every answer), other
//! apps keep their own budget, and the budget comes back with time. And the
//! pace of calls to a channel: a burst beyond it waits or is told to retry.

#[macro_use]
mod common;

use std::time::Duration;

use common::spawn_app;
use paymux_core::SystemClock;
use paymux_server::client::MerchantClient;
use paymux_server::config::AppRate;

on_every_backend!(an_app_over_its_rate_is_told_when_to_come_back, |db| {
    let app = spawn_app(&db, |c| {
        c.rate_limit.app_rps = 2.0;
        c.rate_limit.app_burst = 3;
    })
    .await;
    for _ in 0..3 {
        let r = app.client.get("/v1/payments?limit=1").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = app.client.get("/v1/payments?limit=1").await.unwrap();
    assert_eq!(
        (r.status, r.error_code()),
        (429, Some("RATE_LIMITED")),
        "{}",
        r.body
    );
    assert!(r.signature_ok, "a limited answer is signed too");
    assert_eq!(r.retry_after, Some(1));

    // Another merchant's app has a budget of its own.
    let (_, other) = paymux_server::merchants::create_merchant(&*db.store, &SystemClock, "Other")
        .await
        .unwrap();
    let other = MerchantClient::new(&app.server.base_url(), &other.app_id, &other.secret);
    assert_eq!(other.get("/v1/payments?limit=1").await.unwrap().status, 200);

    // At 2 per second, the next one is allowed half a second later.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        app.client.get("/v1/payments?limit=1").await.unwrap().status,
        200
    );
    app.server.stop();
});

on_every_backend!(an_app_can_have_a_limit_of_its_own, |db| {
    let (_, vip) = paymux_server::merchants::create_merchant(&*db.store, &SystemClock, "VIP")
        .await
        .unwrap();
    let vip_id = vip.app_id.clone();
    let app = spawn_app(&db, move |c| {
        c.rate_limit.app_rps = 1.0;
        c.rate_limit.app_burst = 1;
        // No limit for this one.
        c.rate_limit
            .apps
            .insert(vip_id, AppRate { rps: 0.0, burst: 1 });
    })
    .await;
    let vip = MerchantClient::new(&app.server.base_url(), &vip.app_id, &vip.secret);
    for _ in 0..20 {
        assert_eq!(vip.get("/v1/payments?limit=1").await.unwrap().status, 200);
    }
    assert_eq!(
        app.client.get("/v1/payments?limit=1").await.unwrap().status,
        200
    );
    assert_eq!(
        app.client.get("/v1/payments?limit=1").await.unwrap().status,
        429
    );
    app.server.stop();
});

on_every_backend!(
    a_flash_sale_is_paced_to_the_channel_and_the_rest_told_to_retry,
    |db| {
        let app = spawn_app(&db, |c| {
            // No merchant-side limit here: only the channel's pace.
            c.rate_limit.app_rps = 0.0;
            c.rate_limit.outbound.max_wait_ms = 300;
            c.rate_limit
                .outbound
                .channels
                .insert("wechat".into(), [("prepay".to_string(), 2.0)].into());
        })
        .await;
        let client = std::sync::Arc::new(app.client.clone());
        let url = app.receiver.url.clone();
        let tasks: Vec<_> = (0..12)
            .map(|i| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move {
                    client
                    .post(
                        "/v1/payments",
                        &serde_json::json!({"merchant_order_no": format!("FS-{i}"), "amount": 100,
                            "channel": "wechat", "method": "native", "description": "flash sale",
                            "notify_url": url}),
                    )
                    .await
                    .unwrap()
                })
            })
            .collect();
        let (mut made, mut refused) = (0, 0);
        for t in tasks {
            let r = t.await.unwrap();
            match r.status {
                201 => made += 1,
                503 => {
                    assert_eq!(r.error_code(), Some("CHANNEL_UNAVAILABLE"), "{}", r.body);
                    assert!(r.retry_after.is_some(), "{}", r.body);
                    refused += 1;
                }
                other => panic!("{other}: {}", r.body),
            }
        }
        // Two at once, then two a second (plus what fits in the 300 ms a call
        // may wait): however slowly the twelve arrive, most are turned away.
        assert!(made >= 2 && refused >= 3, "{made} made, {refused} refused");
        assert_eq!(made + refused, 12);
        app.server.stop();
    }
);
