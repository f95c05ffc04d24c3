//! A real crash: `paymux serve` is killed with SIGKILL after a payment's
//! success is committed but before the merchant acknowledged the notification.
//! A new process on the same database delivers it.

mod live;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use live::free_port;
use paymux_server::client::{MerchantClient, NotifyReceiver};
use paymux_store::testing;
use serde_json::{json, Value};

/// Starts `paymux serve --sandbox`; returns the process and the first line it
/// printed as JSON, if any (the sandbox merchant's credentials on first start).
fn serve(db_url: &str, port: u16, config: &std::path::Path) -> (Child, Option<Value>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_paymux"))
        .args([
            "serve",
            "--sandbox",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--database-url", db_url, "--config"])
        .arg(config)
        .env("PAYMUX_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("paymux starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut credentials = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.starts_with('{') {
            credentials = serde_json::from_str(&line).ok();
        }
        if line.starts_with("paymux listening") {
            break;
        }
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, credentials)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_is_delivered_after_a_kill_9() {
    for db in testing::backends().await {
        eprintln!("-- kill -9 on {}", db.backend);
        let config = std::env::temp_dir().join(format!(
            "paymux-crash-{}-{}.toml",
            std::process::id(),
            db.backend
        ));
        std::fs::write(&config, "[notifier]\nschedule_secs = [1, 1, 1, 1, 1]\npoll_interval_ms = 100\ntimeout_secs = 2\n").unwrap();

        let port = free_port();
        let (mut first, credentials) = serve(&db.url, port, &config);
        let credentials = credentials.expect("sandbox merchant credentials printed");
        let (app_id, secret) = (
            credentials["app_id"].as_str().unwrap(),
            credentials["app_secret"].as_str().unwrap(),
        );
        let base = format!("http://127.0.0.1:{port}");
        let client = MerchantClient::new(&base, app_id, secret);
        let mut receiver = NotifyReceiver::start(secret).await.unwrap();
        receiver.set_accepting(false);

        let created = client
            .post(
                "/v1/payments",
                &json!({
                    "merchant_order_no": "KILL-1", "amount": 500, "channel": "wechat",
                    "method": "mini_program", "description": "crash test",
                    "notify_url": receiver.url, "payer": {"openid": "o-crash"}
                }),
            )
            .await
            .unwrap();
        assert_eq!(created.status, 201, "{}", created.body);
        let id = created.body["id"].as_str().unwrap().to_string();
        let paid = reqwest::Client::new()
            .post(format!("{base}/sim/wechat/pay"))
            .json(&json!({"out_trade_no": id}))
            .send()
            .await
            .unwrap();
        assert!(paid.status().is_success());
        let refused = receiver
            .next(Duration::from_secs(10))
            .await
            .expect("first attempt");
        assert!(!refused.acknowledged);

        first.kill().unwrap(); // SIGKILL: no shutdown code runs
        first.wait().unwrap();
        receiver.set_accepting(true);
        let (mut second, _) = serve(&db.url, free_port(), &config);
        let delivered = receiver
            .next(Duration::from_secs(30))
            .await
            .expect("delivered after restart");
        assert!(delivered.acknowledged && delivered.signature_ok);
        assert_eq!(delivered.body["id"], refused.body["id"]);
        assert_eq!(delivered.body["data"]["status"], "succeeded");
        assert!(
            receiver.next(Duration::from_secs(3)).await.is_none(),
            "acknowledged: never again"
        );

        second.kill().unwrap();
        second.wait().unwrap();
        let _ = std::fs::remove_file(&config);
        db.assert_ledger_ok().await;
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_the_requests_in_flight_then_stops() {
    let db = testing::sqlite().await;
    let config = std::env::temp_dir().join(format!("paymux-drain-{}.toml", std::process::id()));
    std::fs::write(&config, "[notifier]\npoll_interval_ms = 100\n").unwrap();
    let port = free_port();
    let (mut child, credentials) = serve(&db.url, port, &config);
    let credentials = credentials.expect("sandbox merchant credentials printed");
    let base = format!("http://127.0.0.1:{port}");
    let client = MerchantClient::new(
        &base,
        credentials["app_id"].as_str().unwrap(),
        credentials["app_secret"].as_str().unwrap(),
    );
    // A first payment sets the sandbox account up (its simulator is served
    // on the same listener, so a draining node would not reach it anew).
    let warm = client
        .post(
            "/v1/payments",
            &json!({"merchant_order_no": "DRAIN-0", "amount": 500, "channel": "wechat",
                    "method": "native", "description": "drain test",
                    "notify_url": "http://127.0.0.1:9/notify"}),
        )
        .await
        .unwrap();
    assert_eq!(warm.status, 201, "{}", warm.body);
    // WeChat Pay answers 1.5 s late: a create is in flight when the signal comes.
    let http = reqwest::Client::new();
    let set = http
        .post(format!("{base}/sim/wechat/faults"))
        .json(&json!({"latency_rate": 1.0, "latency_ms": 1500}))
        .send()
        .await
        .unwrap();
    assert!(set.status().is_success());
    let slow = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .post(
                    "/v1/payments",
                    &json!({
                        "merchant_order_no": "DRAIN-1", "amount": 500, "channel": "wechat",
                        "method": "native", "description": "drain test",
                        "notify_url": "http://127.0.0.1:9/notify",
                    }),
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Draining: no new connections…
    assert!(
        http.get(format!("{base}/healthz")).send().await.is_err(),
        "a draining node takes no new connections"
    );
    // …but the request in flight is answered.
    let answered = slow
        .await
        .unwrap()
        .expect("the create in flight is answered");
    assert_eq!(answered.status, 201, "{}", answered.body);
    assert_eq!(answered.body["status"], "pending");
    // And then the process ends by itself, cleanly.
    let mut exited = None;
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = exited.expect("paymux exits after draining");
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_file(&config);
    db.assert_ledger_ok().await;
    db.cleanup().await;
}
