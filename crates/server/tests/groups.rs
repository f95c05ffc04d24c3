//! Group buys end to end: the real server on a random port with the
//! in-process WeChat Pay simulator, on every store backend available.

#[macro_use]
mod common;

use std::collections::HashMap;

use chrono::SecondsFormat;
use common::refunds::{spawn_refund_app, RefundApp};
use paymux_core::Clock;
use serde_json::{json, Value};

const PRICE: i64 = 1_000;

impl RefundApp {
    /// A group of `size` at [`PRICE`] each, due `secs` from now (server time).
    async fn group(&self, no: &str, size: i64, secs: i64) -> Value {
        let due = self.clock.now() + chrono::Duration::seconds(secs);
        let r = self
            .client
            .post(
                "/v1/groups",
                &json!({
                    "merchant_group_no": no,
                    "size": size,
                    "amount": PRICE,
                    "expires_at": due.to_rfc3339_opts(SecondsFormat::Secs, true),
                    "notify_url": self.receiver.url,
                }),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.body["status"], "open");
        r.body
    }

    /// A buyer joins: the status and the answer.
    async fn join(&self, group: &str, order_no: &str) -> (u16, Value) {
        let r = self
            .client
            .post(
                "/v1/payments",
                &json!({
                    "merchant_order_no": order_no,
                    "amount": PRICE,
                    "channel": "wechat",
                    "method": "native",
                    "description": "拼团 · 一盒草莓",
                    "notify_url": self.receiver.url,
                    "group_id": group,
                }),
            )
            .await
            .unwrap();
        (r.status, r.body)
    }

    async fn show_group(&self, id: &str) -> Value {
        let r = self.client.get(&format!("/v1/groups/{id}")).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }

    /// The next `n` events, counted by type.
    async fn event_types(&mut self, n: usize) -> (HashMap<String, usize>, Vec<Value>) {
        let mut counts = HashMap::new();
        let mut all = Vec::new();
        for _ in 0..n {
            let e = self.event().await;
            *counts
                .entry(e["type"].as_str().unwrap().to_string())
                .or_default() += 1;
            all.push(e);
        }
        (counts, all)
    }
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

on_every_backend!(a_group_fills_exactly_under_concurrent_joins, |db| {
    let mut app = spawn_refund_app(&db, "wechat").await;
    let g = app.group("G-FILL", 3, 600).await;
    let gid = id(&g);
    // Three times as many buyers as seats, all at once.
    let joins: Vec<_> = (0..9)
        .map(|n| {
            let client = app.client.clone();
            let url = app.receiver.url.clone();
            let gid = gid.clone();
            tokio::spawn(async move {
                let r = client
                    .post(
                        "/v1/payments",
                        &json!({
                            "merchant_order_no": format!("FILL-{n}"), "amount": PRICE,
                            "channel": "wechat", "method": "native", "description": "拼团",
                            "notify_url": url, "group_id": gid,
                        }),
                    )
                    .await
                    .unwrap();
                (r.status, r.body)
            })
        })
        .collect();
    let mut seated = Vec::new();
    for j in joins {
        let (status, body) = j.await.unwrap();
        match status {
            201 => seated.push(id(&body)),
            409 => assert_eq!(body["error"]["code"], "GROUP_FULL", "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(seated.len(), 3);
    let shown = app.show_group(&gid).await;
    assert_eq!(
        (
            shown["seats_taken"].clone(),
            shown["members"].as_array().unwrap().len()
        ),
        (json!(3), 3)
    );

    // A join that does not fit the group is refused before anything is made.
    let r = app
        .client
        .post(
            "/v1/payments",
            &json!({"merchant_order_no": "FILL-X", "amount": PRICE + 1, "channel": "wechat",
                    "method": "native", "description": "拼团", "notify_url": app.receiver.url,
                    "group_id": gid}),
        )
        .await
        .unwrap();
    assert_eq!((r.status, r.error_code()), (400, Some("INVALID_REQUEST")));

    for p in &seated {
        let (status, paid) = app.pay_at("wechat", &json!({"out_trade_no": p})).await;
        assert_eq!(status, 200, "{paid}");
    }
    let (counts, events) = app.event_types(4).await;
    assert_eq!(counts.get("payment.succeeded"), Some(&3), "{events:?}");
    assert_eq!(counts.get("group.succeeded"), Some(&1), "{events:?}");
    let done = events
        .iter()
        .find(|e| e["type"] == "group.succeeded")
        .unwrap();
    assert_eq!(done["data"]["id"], gid.as_str());
    assert_eq!(done["data"]["paid_count"], 3);
    let shown = app.show_group(&gid).await;
    assert_eq!(shown["status"], "succeeded");
    assert!(shown["succeeded_at"].is_string());
    let (status, body) = app.join(&gid, "FILL-LATE").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("GROUP_CLOSED"))
    );
    app.no_more_events().await;
});

on_every_backend!(a_group_that_does_not_fill_in_time_refunds_everyone, |db| {
    let mut app = spawn_refund_app(&db, "wechat").await;
    let g = app.group("G-SHORT", 3, 90).await;
    let gid = id(&g);
    let (_, paid) = app.join(&gid, "SHORT-1").await;
    let (_, unpaid) = app.join(&gid, "SHORT-2").await;
    assert_eq!(
        unpaid["expires_at"], g["expires_at"],
        "members pay before the deadline"
    );
    app.pay_at("wechat", &json!({"out_trade_no": id(&paid)}))
        .await;
    assert_eq!(app.event().await["type"], "payment.succeeded");

    app.clock.advance(chrono::Duration::seconds(91));
    let (counts, events) = app.event_types(3).await;
    assert_eq!(counts.get("group.failed"), Some(&1), "{events:?}");
    assert_eq!(counts.get("payment.closed"), Some(&1), "{events:?}");
    assert_eq!(counts.get("refund.succeeded"), Some(&1), "{events:?}");
    let closed = events
        .iter()
        .find(|e| e["type"] == "payment.closed")
        .unwrap();
    assert_eq!(closed["data"]["id"], id(&unpaid).as_str());
    // Closed for the group, or for its own expiry (the same deadline).
    assert!(
        ["group_failed", "expired"].contains(&closed["reason"].as_str().unwrap()),
        "{closed}"
    );
    let refunded = events
        .iter()
        .find(|e| e["type"] == "refund.succeeded")
        .unwrap();
    assert_eq!(refunded["data"]["payment_id"], id(&paid).as_str());
    assert_eq!(refunded["data"]["amount"], PRICE);
    assert_eq!(app.sim_refunds(&id(&paid)).await.len(), 1);

    let shown = app.show_group(&gid).await;
    assert_eq!(shown["status"], "failed");
    let members: Vec<_> = shown["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["status"].as_str().unwrap().to_string(),
                m["refunded_amount"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        members,
        vec![("succeeded".to_string(), PRICE), ("closed".to_string(), 0)]
    );
    let (status, body) = app.join(&gid, "SHORT-3").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("GROUP_CLOSED"))
    );
    app.no_more_events().await;
});

on_every_backend!(groups_are_checked_idempotent_and_scoped, |db| {
    let app = spawn_refund_app(&db, "wechat").await;
    let due = (app.clock.now() + chrono::Duration::minutes(10)).to_rfc3339();
    let body = json!({"merchant_group_no": "G-ONCE", "size": 2, "expires_at": due,
                      "notify_url": app.receiver.url});
    let r = app.client.post("/v1/groups", &body).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let again = app.client.post("/v1/groups", &body).await.unwrap();
    assert_eq!((again.status, id(&again.body)), (200, id(&r.body)));
    let mut changed = body.clone();
    changed["size"] = 3.into();
    let r2 = app.client.post("/v1/groups", &changed).await.unwrap();
    assert_eq!(
        (r2.status, r2.error_code()),
        (409, Some("IDEMPOTENCY_CONFLICT"))
    );
    for (field, value) in [
        ("size", json!(1)),
        ("size", json!(1001)),
        ("expires_at", json!("tomorrow")),
        (
            "expires_at",
            json!((app.clock.now() + chrono::Duration::days(8)).to_rfc3339()),
        ),
        ("amount", json!(0)),
    ] {
        let mut bad = body.clone();
        bad["merchant_group_no"] = "G-BAD".into();
        bad[field] = value;
        let r = app.client.post("/v1/groups", &bad).await.unwrap();
        assert_eq!(r.status, 400, "{field}: {}", r.body);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(field),
            "{}",
            r.body
        );
    }
    // Without a fixed amount members pay what their payment says.
    let (status, joined) = app.join(&id(&r.body), "ONCE-1").await;
    assert_eq!(status, 201, "{joined}");
    let (_, other) =
        paymux_server::merchants::create_merchant(&*db.store, &paymux_core::SystemClock, "Other")
            .await
            .unwrap();
    let stranger = paymux_server::client::MerchantClient::new(
        &app.server.base_url(),
        &other.app_id,
        &other.secret,
    );
    let r3 = stranger
        .get(&format!("/v1/groups/{}", id(&r.body)))
        .await
        .unwrap();
    assert_eq!(r3.status, 404);
    let r4 = stranger
        .post(
            "/v1/payments",
            &json!({"merchant_order_no": "X-1", "amount": PRICE, "channel": "wechat",
                    "method": "native", "description": "拼团", "notify_url": app.receiver.url,
                    "group_id": id(&r.body)}),
        )
        .await
        .unwrap();
    assert_eq!((r4.status, r4.error_code()), (400, Some("INVALID_REQUEST")));
});

on_every_backend!(a_failing_group_is_refunded_through_channel_faults, |db| {
    let mut app = spawn_refund_app(&db, "wechat").await;
    let g = app.group("G-FAULTS", 3, 90).await;
    let gid = id(&g);
    let mut members = Vec::new();
    for n in 0..3 {
        let (status, p) = app.join(&gid, &format!("FAULTS-{n}")).await;
        assert_eq!(status, 201, "{p}");
        members.push(id(&p));
    }
    // Two pay, their callbacks each delivered twice.
    for p in &members[..2] {
        let (status, paid) = app
            .pay_at("wechat", &json!({"out_trade_no": p, "callbacks": 2}))
            .await;
        assert_eq!(status, 200, "{paid}");
    }
    let (counts, events) = app.event_types(2).await;
    assert_eq!(counts.get("payment.succeeded"), Some(&2), "{events:?}");

    // WeChat Pay stops answering just as the deadline passes: the close of
    // the third member and both refunds fail at first.
    app.set_faults("wechat", &json!({"error_rate": 1.0})).await;
    app.clock.advance(chrono::Duration::seconds(91));
    let failed = app.event().await;
    assert_eq!(failed["type"], "group.failed", "{failed}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.show_group(&gid).await["status"], "failed");

    // It answers again: the next rounds and the refund checks finish the job.
    // The breakers and the refund checks run on the server's clock: move it
    // on until everything is settled (bounded).
    app.clear_faults("wechat").await;
    let mut events = Vec::new();
    for _ in 0..8 {
        app.clock.advance(chrono::Duration::seconds(61));
        while events.len() < 3 {
            match app.receiver.next(std::time::Duration::from_secs(2)).await {
                Some(e) => {
                    assert!(e.signature_ok && e.acknowledged);
                    events.push(e.body);
                }
                None => break,
            }
        }
        if events.len() == 3 {
            break;
        }
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for e in &events {
        *counts
            .entry(e["type"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(counts.get("refund.succeeded"), Some(&2), "{events:?}");
    assert_eq!(counts.get("payment.closed"), Some(&1), "{events:?}");
    for p in &members[..2] {
        let books = app.sim_refunds(p).await;
        assert_eq!(
            books.len(),
            1,
            "one refund at the channel for {p}: {books:?}"
        );
        assert_eq!(books[0]["amount"], PRICE, "{books:?}");
    }
    let shown = app.show_group(&gid).await;
    let refunded: Vec<_> = shown["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["refunded_amount"].as_i64().unwrap())
        .collect();
    assert_eq!(refunded, vec![PRICE, PRICE, 0]);
    app.no_more_events().await;
});
