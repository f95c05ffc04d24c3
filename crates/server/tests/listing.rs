//! Listing a merchant's payments and refunds: only theirs, newest first,
//! filtered, and page after page without duplicates or gaps while new
//! payments arrive.

#[macro_use]
mod common;

use std::collections::HashSet;

use common::spawn_app;
use paymux_server::client::MerchantClient;
use serde_json::{json, Value};

fn order(order_no: &str, channel: &str, notify_url: &str) -> Value {
    json!({
        "merchant_order_no": order_no,
        "amount": 100,
        "channel": channel,
        "method": "native",
        "description": "Tea",
        "notify_url": notify_url,
    })
}

async fn create(
    client: &MerchantClient,
    order_no: &str,
    channel: &str,
    notify_url: &str,
) -> String {
    let r = client
        .post("/v1/payments", &order(order_no, channel, notify_url))
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

on_every_backend!(payments_are_listed_page_by_page_newest_first, |db| {
    let app = spawn_app(&db, |_| {}).await;
    let url = app.receiver.url.clone();
    let mut mine = Vec::new();
    for i in 0..25 {
        mine.push(create(&app.client, &format!("MALL-{i:02}"), "wechat", &url).await);
    }
    // Another merchant's payments never show.
    let (_, other) = paymux_server::merchants::create_merchant(
        &*db.store,
        &paymux_core::SystemClock,
        "Other Mall",
    )
    .await
    .unwrap();
    let stranger = MerchantClient::new(&app.server.base_url(), &other.app_id, &other.secret);
    let theirs = create(&stranger, "MALL-00", "wechat", &url).await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/payments?limit=10&starting_after={c}"),
            None => "/v1/payments?limit=10".to_string(),
        };
        let page = app.client.get(&path).await.unwrap();
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.signature_ok);
        let got = ids(&page.body);
        seen.extend(got.clone());
        pages += 1;
        // New payments arrive while the merchant pages: they are newer than
        // every cursor, so they never shift a page.
        create(&app.client, &format!("LATE-{pages}"), "wechat", &url).await;
        if page.body["has_more"] == false {
            break;
        }
        cursor = got.last().cloned();
        assert!(pages < 10, "paging ends");
    }
    assert_eq!(pages, 3);
    let mut expected = mine.clone();
    expected.reverse();
    assert_eq!(seen, expected, "every payment once, newest first");
    assert!(!seen.contains(&theirs));
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len());
    app.server.stop();
});

on_every_backend!(payment_and_refund_listings_filter, |db| {
    let app = spawn_app(&db, |_| {}).await;
    let url = app.receiver.url.clone();
    let a = create(&app.client, "SHOP-A-1", "wechat", &url).await;
    let b = create(&app.client, "SHOP-A-2", "alipay", &url).await;
    let c = create(&app.client, "SHOP-B-1", "wechat", &url).await;
    let closed = app
        .client
        .post(&format!("/v1/payments/{c}/close"), &json!({}))
        .await
        .unwrap();
    assert_eq!(closed.status, 200, "{}", closed.body);
    for (query, want) in [
        ("status=closed", vec![c.clone()]),
        ("status=pending", vec![b.clone(), a.clone()]),
        ("channel=alipay", vec![b.clone()]),
        ("method=native&channel=wechat", vec![c.clone(), a.clone()]),
        (
            "merchant_order_no_prefix=SHOP-A-",
            vec![b.clone(), a.clone()],
        ),
        ("merchant_order_no_prefix=SHOP-%25", vec![]),
        (
            "created_from=2000-01-01T00:00:00Z&created_to=2000-01-02T00:00:00Z",
            vec![],
        ),
        (
            "created_from=2000-01-01T00:00:00%2B08:00",
            vec![c.clone(), b.clone(), a.clone()],
        ),
    ] {
        let r = app
            .client
            .get(&format!("/v1/payments?{query}"))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{query}: {}", r.body);
        assert_eq!(ids(&r.body), want, "{query}");
    }
    for bad in [
        "status=paid",
        "channel=paypal",
        "limit=101",
        "created_from=yesterday",
        "starting_after=nope",
    ] {
        let r = app
            .client
            .get(&format!("/v1/payments?{bad}"))
            .await
            .unwrap();
        assert_eq!(
            (r.status, r.error_code()),
            (400, Some("INVALID_REQUEST")),
            "{bad}"
        );
    }

    // Refunds: pay one and refund it twice.
    let (status, paid) = app.pay_at("wechat", &json!({"out_trade_no": a})).await;
    assert_eq!(status, 200, "{paid}");
    let mut refunds = Vec::new();
    for no in ["R-1", "R-2"] {
        let r = app
            .client
            .post(
                "/v1/refunds",
                &json!({"payment_id": a, "merchant_refund_no": no, "amount": 10}),
            )
            .await
            .unwrap();
        assert!(r.status == 201 || r.status == 200, "{}", r.body);
        refunds.push(r.body["id"].as_str().unwrap().to_string());
    }
    refunds.reverse();
    let r = app
        .client
        .get(&format!("/v1/refunds?payment_id={a}"))
        .await
        .unwrap();
    assert_eq!(ids(&r.body), refunds, "{}", r.body);
    let r = app.client.get("/v1/refunds?limit=1").await.unwrap();
    assert_eq!(ids(&r.body), vec![refunds[0].clone()]);
    assert_eq!(r.body["has_more"], true);
    let r = app
        .client
        .get(&format!(
            "/v1/refunds?limit=1&starting_after={}",
            refunds[0]
        ))
        .await
        .unwrap();
    assert_eq!(ids(&r.body), vec![refunds[1].clone()]);
    assert_eq!(r.body["has_more"], false);
    let r = app
        .client
        .get(&format!("/v1/refunds?payment_id={b}"))
        .await
        .unwrap();
    assert_eq!(ids(&r.body), Vec::<String>::new());
    app.server.stop();
});
