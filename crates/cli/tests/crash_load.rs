//! A kill under load: `paymux serve` (live mode, a WeChat Pay endpoint of
//! its own) takes payment callbacks from many concurrent connections and is
//! killed with SIGKILL while their transactions are being committed. A new
//! process on the same database must hold every payment whose callback was
//! answered with success, and the status poller must bring every other paid
//! payment to `succeeded` from the channel; unpaid ones stay open. No
//! payment gets more than one `payment.succeeded` event.

mod live;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use live::*;
use paymux_core::PaymentId;
use paymux_server::client::MerchantClient;
use paymux_sim::callback::HeldCallback;
use paymux_store::testing;
use serde_json::{json, Value};

const PAID: usize = 240;
const UNPAID: usize = 20;
const CLIENTS: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_under_callback_load_loses_no_acknowledged_payment() {
    let sim = start_simulator().await;
    for db in testing::backends().await {
        eprintln!("-- kill -9 under load on {}", db.backend);
        let op = Operator::new(&db);
        let mchid = new_mchid();
        let keys = register_wechat_merchant(&sim, &mchid).await;
        let merchant = op.create_merchant("Flash Sale");
        let merchant_id = merchant["merchant_id"].as_str().unwrap();
        op.add_wechat(merchant_id, &keys, &format!("{sim}/sim/wechat"));
        // One port for both processes: the callbacks the channel holds are
        // addressed to it.
        let port = free_port();
        let settings = |poller: &str| {
            format!(
                "listen = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
                 allow_insecure_public_url = true\nallow_http_notify_url = true\n\
                 allow_private_notify_url = true\n[poller]\n{poller}\n"
            )
        };
        // The first process leaves everything to the callbacks; the second
        // checks open payments with the channel a second after creation.
        let config = op.file("first.toml", &settings("enabled = false"));
        let restarted = op.file(
            "second.toml",
            &settings(
                "first_delay_secs = 1\nschedule_secs = [1, 1, 1, 1, 1, 1, 1, 1]\ninterval_ms = 200",
            ),
        );
        let (mut first, base) = op.serve(&config);
        let secret = merchant["app_secret"].as_str().unwrap();
        let client = MerchantClient::new(&base, merchant["app_id"].as_str().unwrap(), secret);

        // Orders, and the payer paying most of them: the channel has the
        // success callbacks ready (signed, not yet sent).
        let http = reqwest::Client::new();
        let mut paid = Vec::new();
        let mut held = Vec::new();
        let mut unpaid = Vec::new();
        for i in 0..PAID + UNPAID {
            let created = client
                .post(
                    "/v1/payments",
                    &json!({
                        "merchant_order_no": format!("FLASH-{i}"), "amount": 990,
                        "channel": "wechat", "method": "native", "description": "flash sale",
                        "notify_url": "http://127.0.0.1:9/unused",
                    }),
                )
                .await
                .unwrap();
            assert_eq!(created.status, 201, "{}", created.body);
            let id = created.body["id"].as_str().unwrap().to_string();
            if i >= PAID {
                unpaid.push(id);
                continue;
            }
            let outcome: Value = http
                .post(format!("{sim}/sim/wechat/pay"))
                .json(&json!({"out_trade_no": id, "hold": true}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let callback: Vec<HeldCallback> =
                serde_json::from_value(outcome["held"].clone()).unwrap();
            held.push(callback.into_iter().next().expect("a held callback"));
            paid.push(id);
        }

        // The channel sends them all at once; the server dies a third of
        // the way through, with transactions queued and committing.
        let (held, sent) = (Arc::new(held), Arc::new(AtomicUsize::new(0)));
        let mut senders = Vec::new();
        for _ in 0..CLIENTS {
            let (held, sent, http) = (held.clone(), sent.clone(), http.clone());
            senders.push(tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                loop {
                    let i = sent.fetch_add(1, Ordering::SeqCst);
                    let Some(cb) = held.get(i) else {
                        return acknowledged;
                    };
                    let mut req = http.post(&cb.url).body(cb.body.clone());
                    for (k, v) in &cb.headers {
                        req = req.header(k, v);
                    }
                    if let Ok(r) = req.timeout(Duration::from_secs(5)).send().await {
                        if r.status().is_success() {
                            acknowledged.push(i);
                        }
                    }
                }
            }));
        }
        while sent.load(Ordering::SeqCst) < PAID / 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        first.kill().unwrap(); // SIGKILL: no shutdown code runs
        first.wait().unwrap();
        let mut acknowledged = HashSet::new();
        for s in senders {
            acknowledged.extend(s.await.unwrap());
        }
        eprintln!(
            "{} of {PAID} callbacks acknowledged before the kill",
            acknowledged.len()
        );
        assert!(!acknowledged.is_empty() && acknowledged.len() < PAID);

        // Every callback answered with success is committed.
        for &i in &acknowledged {
            let id = PaymentId::parse(&paid[i]).unwrap();
            let p = db.store.payment(&id).await.unwrap().unwrap();
            assert_eq!(p.status.as_str(), "succeeded", "acknowledged {id} lost");
        }

        // A new process; the poller asks the channel about the rest.
        let (mut second, base) = op.serve(&restarted);
        let client = MerchantClient::new(&base, merchant["app_id"].as_str().unwrap(), secret);
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut open: Vec<&String> = paid.iter().collect();
        while !open.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{} paid payments still open",
                open.len()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut still = Vec::new();
            for id in open {
                let got = client.get(&format!("/v1/payments/{id}")).await.unwrap();
                if got.body["status"] != "succeeded" {
                    still.push(id);
                }
            }
            open = still;
        }
        for id in &unpaid {
            let got = client.get(&format!("/v1/payments/{id}")).await.unwrap();
            assert!(
                matches!(got.body["status"].as_str(), Some("pending" | "created")),
                "unpaid {id}: {}",
                got.body
            );
        }
        for id in &paid {
            let events = db
                .store
                .events_for_payment(&PaymentId::parse(id).unwrap())
                .await
                .unwrap();
            let succeeded = events
                .iter()
                .filter(|e| e.event_type == "payment.succeeded")
                .count();
            assert_eq!(succeeded, 1, "{id}: {succeeded} payment.succeeded events");
        }

        // The books survived the kill too.
        let out = op.ok(&["ledger", "check"]);
        assert!(out.contains(&format!("{PAID} transactions")), "{out}");

        second.kill().unwrap();
        second.wait().unwrap();
        let _ = std::fs::remove_dir_all(&op.dir);
        db.cleanup().await;
    }
}
