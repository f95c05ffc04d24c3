//! What an attacker or a careless merchant can do to paymux, and what paymux
//! does about it: unsigned answers to strangers, the timestamp window's
//! arithmetic, NUL bytes, slow and oversized requests, connection limits,
//! failed-authentication back-off, notification destinations, tenant
//! fairness and acknowledged events never sent twice.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{spawn_app, TestApp};
use paymux_server::client::{Auth, MerchantClient, NotifyReceiver};
use paymux_server::outbound::{notify_client, NotifyPolicy};
use paymux_server::signing::HEADER_SIGNATURE;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn order(order_no: &str, notify_url: &str) -> Value {
    json!({
        "merchant_order_no": order_no,
        "amount": 100,
        "channel": "wechat",
        "method": "native",
        "description": "Coffee",
        "notify_url": notify_url,
    })
}

/// Creates a payment and pays it at the simulator: one event in the outbox.
async fn paid(app: &TestApp, client: &MerchantClient, order_no: &str, notify_url: &str) -> String {
    let r = client
        .post("/v1/payments", &order(order_no, notify_url))
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    let (status, outcome) = app.pay_at("wechat", &json!({"out_trade_no": id})).await;
    assert_eq!(status, 200, "{outcome}");
    id
}

/// Sends raw bytes and reads the answer's status line, if one comes in time.
async fn raw_status(addr: std::net::SocketAddr, request: &[u8], wait: Duration) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 1024];
    match tokio::time::timeout(wait, s.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            Some(text.lines().next().unwrap_or_default().to_string())
        }
        _ => None,
    }
}

on_every_backend!(answers_to_strangers_are_not_signed, |db| {
    let app = spawn_app(&db, |_| {}).await;
    let body = order("ORDER-S", &app.receiver.url).to_string().into_bytes();
    let bad = Auth {
        signature: Some("AAAA".into()),
        ..Default::default()
    };
    let url = format!("{}/v1/payments", app.server.base_url());
    let r = app
        .http
        .post(&url)
        .header("paymux-app-id", &app.client.app_id)
        .header(
            "paymux-timestamp",
            chrono::Utc::now().timestamp().to_string(),
        )
        .header("paymux-nonce", "nonce-stranger-1")
        .header("paymux-signature", "AAAA")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers().get(HEADER_SIGNATURE).is_none(),
        "a 401 to someone who only knows the app id carries no signature"
    );
    let signed = app
        .client
        .send(Method::POST, "/v1/payments", body, bad)
        .await
        .unwrap();
    assert_eq!(signed.error_code(), Some("INVALID_SIGNATURE"));
    assert!(!signed.signature_ok);
    app.server.stop();
});

on_every_backend!(a_timestamp_near_the_start_of_time_is_refused, |db| {
    let app = spawn_app(&db, |_| {}).await;
    let now = chrono::Utc::now().timestamp();
    for ts in [
        now.wrapping_sub(i64::MIN),
        i64::MIN,
        i64::MAX,
        now - (1 << 62),
    ] {
        let auth = Auth {
            timestamp: Some(ts),
            nonce: Some("nonce-wrap-0001".into()),
            ..Default::default()
        };
        let body = order("ORDER-WRAP", &app.receiver.url)
            .to_string()
            .into_bytes();
        for _ in 0..2 {
            let r = app
                .client
                .send(Method::POST, "/v1/payments", body.clone(), auth.clone())
                .await
                .unwrap();
            assert_eq!(
                (r.status, r.error_code()),
                (401, Some("TIMESTAMP_EXPIRED")),
                "timestamp {ts}: {}",
                r.body
            );
        }
    }
    let found = app
        .client
        .get("/v1/payments?merchant_order_no=ORDER-WRAP")
        .await
        .unwrap();
    assert_eq!(found.status, 404, "nothing was created");
    app.server.stop();
});

on_every_backend!(nul_is_bad_input_everywhere, |db| {
    let app = spawn_app(&db, |_| {}).await;
    for path in [
        "/v1/payments?merchant_order_no=a%00b",
        "/v1/refunds?merchant_refund_no=a%00b",
        "/v1/payments/pay_%00",
        "/v1/refunds/ref_%00",
    ] {
        let r = app.client.get(path).await.unwrap();
        assert_eq!(
            (r.status, r.error_code()),
            (400, Some("INVALID_REQUEST")),
            "{path}: {}",
            r.body
        );
    }
    let mut o = order("ORDER-NUL", &app.receiver.url);
    o["metadata"] = json!({"note": "a\u{0}b"});
    let r = app.client.post("/v1/payments", &o).await.unwrap();
    assert_eq!(
        (r.status, r.error_code()),
        (400, Some("INVALID_REQUEST")),
        "{}",
        r.body
    );
    let mut o = order("ORDER-\u{0}", &app.receiver.url);
    o["description"] = json!("fine");
    let r = app.client.post("/v1/payments", &o).await.unwrap();
    assert_eq!(
        (r.status, r.error_code()),
        (400, Some("INVALID_REQUEST")),
        "{}",
        r.body
    );
    // A backslash followed by "u0000" is text, not a NUL.
    let mut o = order("ORDER-BACKSLASH", &app.receiver.url);
    o["metadata"] = json!({"note": "\\u0000"});
    let r = app.client.post("/v1/payments", &o).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    app.server.stop();
});

#[tokio::test]
async fn slow_and_oversized_requests_are_cut_off() {
    let db = paymux_store::testing::sqlite().await;
    let app = spawn_app(&db, |c| {
        c.http.header_read_timeout_ms = 300;
        c.http.body_timeout_ms = 300;
    })
    .await;
    let addr = app.server.addr;

    // A Content-Length above the limit is refused before the body is read.
    let started = Instant::now();
    let line = raw_status(
        addr,
        b"POST /v1/payments HTTP/1.1\r\nhost: x\r\ncontent-length: 999999999999\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        line.as_deref().unwrap_or_default().contains("413"),
        "{line:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    // A body that stalls gets an answer when its time is up.
    let line = raw_status(
        addr,
        b"POST /v1/payments HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{\"a\":",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        line.as_deref().unwrap_or_default().contains("408"),
        "{line:?}"
    );

    // A half-sent request line does not hold its connection.
    let mut held = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HT").await.unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(900)).await;
    for mut s in held {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("the server ended the connection")
            .unwrap_or(0);
        // Either closed outright or answered 408 and closed.
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || text.contains("408"), "{text}");
    }
    app.server.stop();
    db.cleanup().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_their_turn() {
    let db = paymux_store::testing::sqlite().await;
    let app = spawn_app(&db, |c| {
        c.http.max_connections = 2;
        c.http.header_read_timeout_ms = 60_000;
    })
    .await;
    let addr = app.server.addr;
    let mut a = TcpStream::connect(addr).await.unwrap();
    a.write_all(b"GET /healthz HT").await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    b.write_all(b"GET /healthz HT").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third = tokio::spawn(raw_status(
        addr,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(10),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "the third connection waits for a slot"
    );
    drop(a);
    let line = third.await.unwrap();
    assert!(
        line.as_deref().unwrap_or_default().contains("200"),
        "{line:?}"
    );
    drop(b);
    app.server.stop();
    db.cleanup().await;
}

#[tokio::test]
async fn failed_authentication_is_counted_and_slowed_down() {
    let db = paymux_store::testing::sqlite().await;
    let app = spawn_app(&db, |c| {
        c.auth_failures.per_ip = 5;
        c.auth_failures.window_secs = 60;
    })
    .await;
    let bad = Auth {
        signature: Some("AAAA".into()),
        ..Default::default()
    };
    for _ in 0..6 {
        let r = app
            .client
            .send(Method::GET, "/v1/events", Vec::new(), bad.clone())
            .await
            .unwrap();
        assert_eq!(r.error_code(), Some("INVALID_SIGNATURE"));
    }
    let url = format!("{}/v1/events", app.server.base_url());
    let r = app.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "TOO_MANY_AUTH_FAILURES");
    // Even a correct request from that address waits.
    let good = app.client.get("/v1/events").await.unwrap();
    assert_eq!(good.status, 429);
    let metrics = app.metrics_text().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("paymux_auth_failures_total{reason=\"INVALID_SIGNATURE\"}")),
        "{metrics}"
    );
    app.server.stop();
    db.cleanup().await;
}

#[tokio::test]
async fn wrong_operator_tokens_are_counted_and_slowed_down() {
    let db = paymux_store::testing::sqlite().await;
    let app = spawn_app(&db, |c| {
        c.auth_failures.per_ip = 5;
        c.admin_token = Some(paymux_server::config::SecretString::new("the-right-token"));
    })
    .await;
    let url = format!("{}/admin/channel-accounts", app.server.base_url());
    for _ in 0..6 {
        let r = app
            .http
            .get(&url)
            .bearer_auth("guess")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    // The right token from that address waits too, for a while.
    let r = app
        .http
        .get(&url)
        .bearer_auth("the-right-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "TOO_MANY_AUTH_FAILURES");
    let metrics = app.metrics_text().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("paymux_auth_failures_total{reason=\"ADMIN_TOKEN\"}")),
        "{metrics}"
    );
    app.server.stop();
    db.cleanup().await;
}

/// Reads a request's head, so that the answer comes after it.
async fn read_head(s: &mut TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
}

/// Counts the requests a loopback listener receives.
async fn counting_listener() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            read_head(&mut s).await;
            let _ = s
                .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    (addr, hits)
}

#[tokio::test]
async fn notifications_never_reach_internal_addresses_or_follow_redirects() {
    let (addr, hits) = counting_listener().await;
    let port = addr.port();
    let strict = notify_client(Arc::new(NotifyPolicy::default()), Duration::from_secs(2)).unwrap();
    for url in [
        format!("http://127.0.0.1:{port}/n"),
        format!("http://2130706433:{port}/n"),
        format!("http://0x7f.1:{port}/n"),
        format!("http://[::ffff:127.0.0.1]:{port}/n"),
        format!("http://localhost:{port}/n"),
    ] {
        // Literals are refused before sending; names when they are resolved.
        let refused = match strict.post(reqwest::Url::parse(&url).unwrap()) {
            Err(_) => true,
            Ok(req) => req.send().await.is_err(),
        };
        assert!(refused, "{url} must not be reached");
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);

    // A 307 to another address is not followed (loopback allowed, as in sandbox).
    let (target, target_hits) = counting_listener().await;
    let redirector = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirect_addr = redirector.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = redirector.accept().await {
            read_head(&mut s).await;
            let answer = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://{target}/internal\r\ncontent-length: 0\r\n\r\n"
            );
            let _ = s.write_all(answer.as_bytes()).await;
        }
    });
    let sandbox = notify_client(
        Arc::new(NotifyPolicy {
            allow_loopback: true,
            ..NotifyPolicy::default()
        }),
        Duration::from_secs(2),
    )
    .unwrap();
    let r = sandbox
        .post(reqwest::Url::parse(&format!("http://{redirect_addr}/n")).unwrap())
        .unwrap()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    assert_eq!(target_hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

on_every_backend!(
    internal_notify_urls_are_refused_and_errors_stay_generic,
    |db| {
        let app = spawn_app(&db, |c| c.notifier.schedule_secs = vec![60]).await;
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/notify",
            "http://[fd00::1]/notify",
        ] {
            let r = app
                .client
                .post("/v1/payments", &order("ORDER-SSRF", url))
                .await
                .unwrap();
            assert_eq!(
                (r.status, r.error_code()),
                (400, Some("INVALID_REQUEST")),
                "{url}: {}",
                r.body
            );
        }
        // A closed loopback port (allowed in sandbox): the merchant sees that
        // nothing answered, not why.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_url = format!("http://{}/n", closed.local_addr().unwrap());
        drop(closed);
        let id = paid(&app, &app.client, "ORDER-DEAD", &dead_url).await;
        let pid = paymux_core::PaymentId::parse(&id).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let error = loop {
            let events = db.store.events_for_payment(&pid).await.unwrap();
            if let Some(e) = events.iter().find_map(|e| e.last_error.clone()) {
                break e;
            }
            assert!(Instant::now() < deadline, "the delivery was tried");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(error, "not delivered: no answer from notify_url");
        app.server.stop();
    }
);

/// An endpoint that accepts connections and never answers.
async fn black_hole() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/n", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    url
}

on_every_backend!(one_merchants_dead_endpoint_does_not_delay_another, |db| {
    let mut app = spawn_app(&db, |c| {
        c.notifier.timeout_secs = 5;
        c.notifier.concurrency = 8;
        c.notifier.per_merchant_concurrency = 2;
        c.notifier.schedule_secs = vec![60];
    })
    .await;
    let hole = black_hole().await;
    for i in 0..24 {
        paid(&app, &app.client, &format!("ORDER-HOLE-{i}"), &hole).await;
    }
    // Let the dead endpoint take every slot it can.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, other) = paymux_server::merchants::create_merchant(
        &*db.store,
        &paymux_core::SystemClock,
        "Other Mall",
    )
    .await
    .unwrap();
    let mut receiver = NotifyReceiver::start(&other.secret).await.unwrap();
    let client = MerchantClient::new(&app.server.base_url(), &other.app_id, &other.secret);
    let started = Instant::now();
    let id = paid(&app, &client, "ORDER-OTHER", &receiver.url).await;
    let event = receiver
        .next(Duration::from_secs(3))
        .await
        .expect("the other merchant is notified while the dead endpoint hangs");
    assert_eq!(event.body["data"]["id"], id, "{}", event.body);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(app.receiver.drain().is_empty());
    app.server.stop();
});

on_every_backend!(
    a_slow_merchant_never_gets_an_acknowledged_event_again,
    |db| {
        let mut app = spawn_app(&db, |c| {
            // Lease = timeout + 5 s = 7 s; twelve events at 1.5 s each through
            // two slots take 9 s, longer than one lease.
            c.notifier.timeout_secs = 2;
            c.notifier.concurrency = 2;
            c.notifier.per_merchant_concurrency = 2;
            c.notifier.poll_interval_ms = 50;
        })
        .await;
        app.receiver.set_delay(Duration::from_millis(1500));
        let mut ids = Vec::new();
        for i in 0..12 {
            ids.push(
                paid(
                    &app,
                    &app.client,
                    &format!("ORDER-SLOW-{i}"),
                    &app.receiver.url.clone(),
                )
                .await,
            );
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.len() < ids.len() && Instant::now() < deadline {
            if let Some(e) = app.receiver.next(Duration::from_secs(1)).await {
                *seen
                    .entry(e.body["id"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
        }
        // Anything still in flight would arrive now.
        tokio::time::sleep(Duration::from_secs(3)).await;
        for e in app.receiver.drain() {
            *seen
                .entry(e.body["id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        assert_eq!(seen.len(), ids.len(), "every event delivered");
        assert!(
            seen.values().all(|n| *n == 1),
            "each exactly once: {seen:?}"
        );
        app.server.stop();
    }
);

on_every_backend!(
    an_app_with_an_ed25519_key_pays_and_its_secret_alone_no_longer_signs,
    |db| {
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
        use base64::Engine;
        let mut app = spawn_app(&db, |_| {}).await;
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let spki = pair.public_key().as_der().unwrap();
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(spki.as_ref())
        );
        paymux_server::merchants::set_app_request_key(
            &*db.store,
            &app.client.app_id,
            Some(paymux_store::RequestKey {
                alg: paymux_store::RequestKeyAlg::Ed25519,
                public_key_pem: pem,
            }),
        )
        .await
        .unwrap();
        // A key that is not Ed25519 is refused when it is set.
        assert!(paymux_server::merchants::set_app_request_key(
            &*db.store,
            &app.client.app_id,
            Some(paymux_store::RequestKey {
                alg: paymux_store::RequestKeyAlg::Ed25519,
                public_key_pem: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
                    .into(),
            }),
        )
        .await
        .is_err());

        // Signed with the secret only: refused.
        let r = app
            .client
            .post("/v1/payments", &order("ORDER-ED-HMAC", &app.receiver.url))
            .await
            .unwrap();
        assert_eq!(
            (r.status, r.error_code()),
            (401, Some("INVALID_SIGNATURE")),
            "{}",
            r.body
        );

        // Signed with the private key: a payment, answered and notified under the secret.
        let keyed = app.client.clone().with_ed25519_key(pkcs8.as_ref()).unwrap();
        let r = keyed
            .post("/v1/payments", &order("ORDER-ED", &app.receiver.url))
            .await
            .unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
        assert!(r.signature_ok, "the answer is signed with the app secret");
        let id = r.body["id"].as_str().unwrap().to_string();
        let (status, paid) = app.pay_at("wechat", &json!({"out_trade_no": id})).await;
        assert_eq!(status, 200, "{paid}");
        let event = app
            .receiver
            .next(Duration::from_secs(5))
            .await
            .expect("notified");
        assert!(event.signature_ok);
        assert_eq!(event.body["data"]["id"], id.as_str());
        app.server.stop();
    }
);
