//! `paymux notify list` and `paymux notify retry` against the database of a
//! running gateway: a dead-lettered event is listed, and after a retry the
//! gateway's notifier delivers it once.

use std::time::Duration;

use paymux_core::{PaymentId, SystemClock};
use paymux_server::client::{MerchantClient, NotifyReceiver};
use paymux_server::ServerConfig;
use paymux_store::testing;
use serde_json::{json, Value};

mod run;
use run::paymux;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_event_is_listed_and_retried_from_the_command_line() {
    for db in testing::backends().await {
        eprintln!("-- on {}", db.backend);
        let mut config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            sandbox: true,
            ..Default::default()
        };
        config.notifier.poll_interval_ms = 100;
        config.notifier.schedule_secs = vec![1];
        let server = paymux_server::start(config, db.store.clone())
            .await
            .unwrap();
        let (_, app) = paymux_server::merchants::create_merchant(&*db.store, &SystemClock, "Mall")
            .await
            .unwrap();
        let mut receiver = NotifyReceiver::start(&app.secret).await.unwrap();
        receiver.set_accepting(false);
        let client = MerchantClient::new(&server.base_url(), &app.app_id, &app.secret);
        let created = client
            .post(
                "/v1/payments",
                &json!({"merchant_order_no": "CLI-1", "amount": 100, "channel": "wechat",
                        "method": "native", "description": "tea", "notify_url": receiver.url}),
            )
            .await
            .unwrap();
        assert_eq!(created.status, 201, "{}", created.body);
        let id = created.body["id"].as_str().unwrap().to_string();
        let paid = reqwest::Client::new()
            .post(format!("{}/sim/wechat/pay", server.base_url()))
            .json(&json!({"out_trade_no": id}))
            .send()
            .await
            .unwrap();
        assert!(paid.status().is_success());

        // Two refused attempts and the schedule is spent.
        let pid = PaymentId::parse(&id).unwrap();
        let mut event_id = None;
        for _ in 0..100 {
            let events = db.store.events_for_payment(&pid).await.unwrap();
            if let Some(e) = events.iter().find(|e| e.dead) {
                event_id = Some(e.id.clone());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let event_id = event_id.expect("dead-lettered");
        receiver.drain();

        let (ok, out, err) = paymux(&db.url, &["notify", "list", "--dead", "--json"]);
        assert!(ok, "{err}");
        let listed: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
        assert_eq!(listed[0]["id"], event_id.as_str());
        assert_eq!(listed[0]["status"], "dead");
        let (ok, out, _) = paymux(&db.url, &["notify", "list"]);
        assert!(ok && out.contains(&event_id), "{out}");

        receiver.set_accepting(true);
        let (ok, out, err) = paymux(&db.url, &["notify", "retry", &event_id]);
        assert!(ok, "{err}");
        assert!(out.contains(&event_id), "{out}");
        let got = receiver
            .next(Duration::from_secs(10))
            .await
            .expect("redelivered");
        assert!(got.acknowledged);
        assert_eq!(got.body["id"], event_id.as_str());
        assert!(receiver.next(Duration::from_millis(1500)).await.is_none());

        let (ok, out, _) = paymux(&db.url, &["notify", "list", "--json"]);
        assert!(ok);
        assert_eq!(out.trim(), "[]");
        // Acknowledged events are never sent again; unknown ones are named.
        let (ok, _, err) = paymux(&db.url, &["notify", "retry", &event_id]);
        assert!(!ok && err.contains("never sent again"), "{err}");
        let (ok, _, err) = paymux(&db.url, &["notify", "retry", "evt_nope"]);
        assert!(!ok && err.contains("no event evt_nope"), "{err}");
        server.stop();
        db.cleanup().await;
    }
}
