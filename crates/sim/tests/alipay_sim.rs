//! The Alipay simulator driven over HTTP by paymux's own Alipay client, in
//! both key modes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use axum::Router;
use chrono::{Duration, Utc};
use paymux_channels::alipay::{sign, Alipay, AlipayConfig};
use paymux_channels::keys::PrivateKey;
use paymux_channels::{Channel, ChannelError, PrepayRequest, TradeState};
use paymux_core::{Currency, Money, PayMethod};
use paymux_sim::alipay::{router, AlipaySim, PlatformInfo, Registered};
use serde_json::{json, Value};
use tokio::net::TcpListener;

async fn start_sim() -> (Arc<AlipaySim>, String) {
    let sim = AlipaySim::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().nest("/sim/alipay", router(sim.clone()));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (sim, format!("http://{addr}"))
}

fn app_id() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("2021000{:09}", N.fetch_add(1, Ordering::Relaxed))
}

fn order_no(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("pay_{tag}_{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Registers a fresh app over HTTP and returns its client configuration.
async fn register(host: &str, cert_mode: bool) -> AlipayConfig {
    register_with(host, cert_mode, None).await
}

async fn register_with(host: &str, cert_mode: bool, encrypt_key: Option<&str>) -> AlipayConfig {
    let http = reqwest::Client::new();
    let pem = PrivateKey::generate_pkcs8_pem().unwrap();
    let public = PrivateKey::from_pem(&pem).unwrap().public_key().unwrap();
    let app_id = app_id();
    let r = http
        .post(format!("{host}/sim/alipay/merchants"))
        .json(&json!({
            "app_id": app_id,
            "app_public_key": public.to_pem(),
            "cert_mode": cert_mode,
            "encrypt_key": encrypt_key,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let registered: Registered = r.json().await.unwrap();
    let platform: PlatformInfo = http
        .get(format!("{host}/sim/alipay/platform"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut config = AlipayConfig {
        gateway_url: format!("{host}/sim/alipay/gateway.do"),
        app_id,
        private_key_pem: pem,
        alipay_public_key_pem: Some(platform.alipay_public_key.clone()),
        app_cert_pem: None,
        alipay_cert_pem: None,
        alipay_root_cert_pem: None,
        seller_id: Some(registered.seller_id.clone()),
        encrypt_key: encrypt_key.map(str::to_string),
        barcode_timeout_secs: Some(1),
        barcode_poll_ms: Some(200),
    };
    if cert_mode {
        let app_cert = registered.app_cert.expect("an issued app certificate");
        assert_eq!(
            sign::cert_sn(&app_cert).unwrap(),
            registered.app_cert_sn.unwrap()
        );
        config.alipay_public_key_pem = None;
        config.app_cert_pem = Some(app_cert);
        config.alipay_cert_pem = Some(platform.alipay_cert.clone());
        config.alipay_root_cert_pem = Some(platform.alipay_root_cert.clone());
        assert_eq!(
            sign::root_cert_sn(&platform.alipay_root_cert).unwrap(),
            platform.alipay_root_cert_sn
        );
    }
    config
}

fn request(out_trade_no: &str, method: PayMethod) -> PrepayRequest {
    PrepayRequest {
        out_trade_no: out_trade_no.into(),
        description: "paymux 测试商品 & more".into(),
        amount: Money::new(1999, Currency::CNY).unwrap(),
        method,
        // Nobody listens here: notifies fail to deliver, which these tests ignore.
        notify_url: "http://127.0.0.1:9/notify".into(),
        expires_at: Utc::now() + Duration::minutes(30),
        payer_openid: Some("074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5".into()),
        payer_client_ip: None,
        payer_buyer_id: None,
        auth_code: None,
    }
}

async fn sim_pay(host: &str, out_trade_no: &str) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(format!("{host}/sim/alipay/pay"))
        .json(&json!({"out_trade_no": out_trade_no}))
        .send()
        .await
        .unwrap()
        .status()
}

async fn full_cycle(cert_mode: bool) {
    full_cycle_with(cert_mode, None).await;
}

async fn full_cycle_with(cert_mode: bool, encrypt_key: Option<&str>) {
    let (_sim, host) = start_sim().await;
    let config = register_with(&host, cert_mode, encrypt_key).await;
    let ch = Alipay::new(config, reqwest::Client::new()).unwrap();

    let no = order_no("qr");
    let prepared = ch.prepay(&request(&no, PayMethod::Native)).await.unwrap();
    assert!(prepared.pay_params["qr_code"].is_string());
    // A retried create is the same order, not a second one.
    ch.prepay(&request(&no, PayMethod::Native)).await.unwrap();
    let t = ch.query(&no).await.unwrap();
    assert_eq!(t.state, TradeState::NotPaid);
    assert_eq!(sim_pay(&host, &no).await, 200);
    let t = ch.query(&no).await.unwrap();
    assert_eq!(t.state, TradeState::Paid);
    assert_eq!(t.amount.unwrap().minor, 1999);
    assert!(t.transaction_id.is_some());
    assert!(t.paid_at.is_some());
    // A create retried after the payer paid (the first answer was lost)
    // reports the settled trade instead of a refusal.
    let again = ch.prepay(&request(&no, PayMethod::Native)).await.unwrap();
    assert_eq!(again.trade.unwrap().state, TradeState::Paid);
    // A paid trade cannot be closed.
    assert!(matches!(
        ch.close(&no).await,
        Err(ChannelError::Rejected { code, .. }) if code == "ACQ.TRADE_STATUS_ERROR"
    ));

    let no = order_no("mini");
    let prepared = ch
        .prepay(&request(&no, PayMethod::MiniProgram))
        .await
        .unwrap();
    assert!(prepared.pay_params["tradeNO"].is_string());
    ch.close(&no).await.unwrap();
    ch.close(&no).await.unwrap();
    assert_eq!(ch.query(&no).await.unwrap().state, TradeState::Closed);
    assert!(sim_pay(&host, &no).await.is_client_error());

    assert!(matches!(
        ch.query("pay_unknown").await,
        Err(ChannelError::NotFound)
    ));
    assert!(matches!(
        ch.close("pay_unknown").await,
        Err(ChannelError::NotFound)
    ));
}

#[tokio::test]
async fn public_key_mode_full_cycle() {
    full_cycle(false).await;
}

#[tokio::test]
async fn certificate_mode_full_cycle() {
    full_cycle(true).await;
}

const AES_KEY: &str = "aa4BtZ4tspm2wnXLb1ThQA==";

#[tokio::test]
async fn aes_content_encryption_full_cycle() {
    full_cycle_with(false, Some(AES_KEY)).await;
    full_cycle_with(true, Some(AES_KEY)).await;
}

#[tokio::test]
async fn aes_requests_and_answers_are_encrypted_on_the_wire() {
    let (_sim, host) = start_sim().await;
    let config = register_with(&host, false, Some(AES_KEY)).await;
    let ch = Alipay::new(config.clone(), reqwest::Client::new()).unwrap();
    let params = ch
        .signed_params(
            "alipay.trade.query",
            &json!({"out_trade_no": "pay_x"}),
            None,
        )
        .unwrap();
    assert_eq!(params["encrypt_type"], "AES");
    assert!(!params["biz_content"].contains("pay_x"));
    let body = reqwest::Client::new()
        .post(&config.gateway_url)
        .body(sign::encode_form(&params))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    let node = v["alipay_trade_query_response"]
        .as_str()
        .expect("an encrypted node");
    let plain: Value = serde_json::from_str(&sign::aes_decrypt(AES_KEY, node).unwrap()).unwrap();
    assert_eq!(plain["sub_code"], "ACQ.TRADE_NOT_EXIST");

    // The simulator refuses encrypted requests from an app that has no
    // content key configured.
    let (_sim2, host2) = start_sim().await;
    let plain_app = register(&host2, false).await;
    let mut encrypting = plain_app.clone();
    encrypting.encrypt_key = Some(AES_KEY.into());
    let ch = Alipay::new(encrypting, reqwest::Client::new()).unwrap();
    assert!(matches!(
        ch.query("pay_x").await,
        Err(ChannelError::Rejected { code, .. }) if code == "isv.invalid-encrypt-type"
    ));
}

#[tokio::test]
async fn certificate_mode_answers_carry_the_alipay_cert_sn_and_check_the_app_cert() {
    let (sim, host) = start_sim().await;
    let config = register(&host, true).await;
    let ch = Alipay::new(config.clone(), reqwest::Client::new()).unwrap();
    let params = ch
        .signed_params(
            "alipay.trade.query",
            &json!({"out_trade_no": "pay_x"}),
            None,
        )
        .unwrap();
    assert!(params.contains_key("app_cert_sn"));
    assert!(params.contains_key("alipay_root_cert_sn"));
    let body = reqwest::Client::new()
        .post(&config.gateway_url)
        .body(sign::encode_form(&params))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["alipay_cert_sn"], sim.platform().alipay_cert_sn.as_str());
    assert_eq!(
        v["alipay_trade_query_response"]["sub_code"],
        "ACQ.TRADE_NOT_EXIST"
    );

    // The same app in public-key mode (no app_cert_sn) is refused.
    let mut plain = config.clone();
    plain.app_cert_pem = None;
    plain.alipay_cert_pem = None;
    plain.alipay_root_cert_pem = None;
    plain.alipay_public_key_pem = Some(sim.platform().alipay_public_key);
    let ch = Alipay::new(plain, reqwest::Client::new()).unwrap();
    assert!(matches!(
        ch.prepay(&request(&order_no("nocert"), PayMethod::Native)).await,
        Err(ChannelError::Rejected { code, .. }) if code == "isv.missing-app-cert-sn"
    ));
}

#[tokio::test]
async fn answers_are_verified_and_requests_must_be_signed() {
    let (_sim, host) = start_sim().await;
    let config = register(&host, false).await;

    // A client that trusts another Alipay key refuses the simulator's answers.
    let mut wrong = config.clone();
    let other = PrivateKey::generate_pkcs8_pem().unwrap();
    wrong.alipay_public_key_pem = Some(
        PrivateKey::from_pem(&other)
            .unwrap()
            .public_key()
            .unwrap()
            .to_pem(),
    );
    let ch = Alipay::new(wrong, reqwest::Client::new()).unwrap();
    assert!(matches!(
        ch.prepay(&request(&order_no("v"), PayMethod::Native)).await,
        Err(ChannelError::InvalidSignature(_))
    ));

    // A request signed with another app key is refused by the gateway.
    let mut forged = config.clone();
    forged.private_key_pem = other;
    let ch = Alipay::new(forged, reqwest::Client::new()).unwrap();
    assert!(matches!(
        ch.prepay(&request(&order_no("f"), PayMethod::Native)).await,
        Err(ChannelError::Rejected { code, .. }) if code == "isv.invalid-signature"
    ));

    // Parameters may come in the query string too (GET), like a browser's.
    let ch = Alipay::new(config.clone(), reqwest::Client::new()).unwrap();
    let prepared = ch
        .prepay(&request(&order_no("wap"), PayMethod::Wap))
        .await
        .unwrap();
    let url = prepared.pay_params["pay_url"].as_str().unwrap();
    let page = reqwest::get(url).await.unwrap().text().await.unwrap();
    assert!(page.contains("paymux Alipay simulator cashier"), "{page}");
}

#[tokio::test]
async fn barcode_charges_at_once_or_is_cancelled_after_the_timeout() {
    let (_sim, host) = start_sim().await;
    let ch = Alipay::new(register(&host, false).await, reqwest::Client::new()).unwrap();

    let no = order_no("bar");
    let mut req = request(&no, PayMethod::Barcode);
    req.auth_code = Some("286212345678901234".into());
    let prepared = ch.prepay(&req).await.unwrap();
    let trade = prepared.trade.expect("barcode settles at once");
    assert_eq!(trade.state, TradeState::Paid);
    assert_eq!(trade.amount.unwrap().minor, 1999);

    // The payer never confirms: after the timeout the trade is cancelled.
    let no = order_no("bar_wait");
    let mut req = request(&no, PayMethod::Barcode);
    req.auth_code = Some("286200000000000000".into());
    assert!(matches!(
        ch.prepay(&req).await,
        Err(ChannelError::Rejected { code, .. }) if code == "USER_PAYING_TIMEOUT"
    ));
    assert_eq!(ch.query(&no).await.unwrap().state, TradeState::Closed);
    assert!(sim_pay(&host, &no).await.is_client_error());

    // A malformed payment code is refused by Alipay.
    let mut req = request(&order_no("bar_bad"), PayMethod::Barcode);
    req.auth_code = Some("12".into());
    assert!(matches!(
        ch.prepay(&req).await,
        Err(ChannelError::Rejected { code, .. }) if code == "ACQ.PAYMENT_AUTH_CODE_INVALID"
    ));
}

#[tokio::test]
async fn injected_faults_reach_the_client_as_alipay_sends_them() {
    let (sim, host) = start_sim().await;
    let config = register(&host, false).await;
    let ch = Alipay::new(config, reqwest::Client::new()).unwrap();
    let http = reqwest::Client::new();
    let set = |faults: Value| {
        let (http, host) = (http.clone(), host.clone());
        async move {
            let r = http
                .post(format!("{host}/sim/alipay/faults"))
                .json(&faults)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    let no = order_no("fault");
    // The gateway's signed 40005 call-limit answer.
    set(json!({"seed": 2, "rate_limit_rate": 1.0})).await;
    assert!(matches!(
        ch.query(&no).await,
        Err(ChannelError::RateLimited { .. })
    ));
    set(json!({"seed": 2, "error_rate": 1.0})).await;
    match ch.prepay(&request(&no, PayMethod::Native)).await {
        Err(e @ ChannelError::Transport(_)) => assert!(e.is_channel_failure()),
        r => panic!("{r:?}"),
    }
    assert!(sim.trades(&no).is_empty());
    set(json!({"seed": 2, "latency_rate": 1.0, "latency_ms": 50})).await;
    ch.prepay(&request(&no, PayMethod::Native)).await.unwrap();
    let trades = sim.trades(&no);
    assert_eq!(trades.len(), 1);
    assert_eq!(trades[0].amount, 1999);
    let status: Value = http
        .get(format!("{host}/sim/alipay/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Counted since the faults were last set.
    assert_eq!(status["injected"]["latency"], 1);
    assert_eq!(status["injected"]["errors"], 0);
}

fn refund_of(out_trade_no: &str, fen: i64) -> paymux_channels::RefundRequest {
    paymux_channels::RefundRequest {
        out_trade_no: out_trade_no.into(),
        method: PayMethod::Native,
        out_refund_no: paymux_core::new_id("ref"),
        amount: Money::new(fen, Currency::CNY).unwrap(),
        total: Money::new(1999, Currency::CNY).unwrap(),
        reason: Some("退货".into()),
        notify_url: "http://127.0.0.1:9/refund".into(),
        channel_trade_no: None,
        created_at: Utc::now(),
    }
}

#[tokio::test]
async fn refunds_settle_in_the_call_and_are_never_made_twice() {
    use paymux_channels::RefundState;
    for cert_mode in [false, true] {
        let (sim, host) = start_sim().await;
        let ch = Alipay::new(register(&host, cert_mode).await, reqwest::Client::new()).unwrap();
        let no = order_no("refund");
        ch.prepay(&request(&no, PayMethod::Native)).await.unwrap();
        // Nothing to refund before the payer paid.
        assert!(matches!(
            ch.refund(&refund_of(&no, 100)).await,
            Err(ChannelError::Rejected { code, .. }) if code == "ACQ.TRADE_STATUS_ERROR"
        ));
        assert_eq!(sim_pay(&host, &no).await, 200);

        let first = refund_of(&no, 999);
        let done = ch.refund(&first).await.unwrap();
        assert_eq!(done.state, RefundState::Succeeded);
        assert_eq!(done.amount, Some(first.amount));
        assert!(done.refunded_at.is_some());
        // The same refund again: fund_change N, answered from the refund query.
        let again = ch.refund(&first).await.unwrap();
        assert_eq!(
            (again.state, again.amount),
            (RefundState::Succeeded, Some(first.amount))
        );
        let queried = ch.query_refund(&first).await.unwrap();
        assert_eq!(queried.state, RefundState::Succeeded);
        // More than is left is refused; an unknown refund is not found.
        assert!(matches!(
            ch.refund(&refund_of(&no, 1001)).await,
            Err(ChannelError::Rejected { code, .. }) if code == "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"
        ));
        assert!(matches!(
            ch.query_refund(&refund_of(&no, 5)).await,
            Err(ChannelError::NotFound)
        ));
        // The rest; the trade is then closed, as Alipay does after a full refund.
        let rest = ch.refund(&refund_of(&no, 1000)).await.unwrap();
        assert_eq!(rest.state, RefundState::Succeeded);
        assert_eq!(ch.query(&no).await.unwrap().state, TradeState::Closed);
        let books: Vec<_> = sim.refunds(&no).iter().map(|r| r.amount).collect();
        assert_eq!(books, vec![999, 1000], "cert mode {cert_mode}");
        // A refund failure injected at the simulator is a refusal.
        let no = order_no("refund-fail");
        ch.prepay(&request(&no, PayMethod::Native)).await.unwrap();
        assert_eq!(sim_pay(&host, &no).await, 200);
        sim.faults
            .set(paymux_sim::faults::FaultConfig {
                refund_failure_rate: 1.0,
                ..Default::default()
            })
            .unwrap();
        assert!(matches!(
            ch.refund(&refund_of(&no, 1)).await,
            Err(ChannelError::Rejected { code, .. }) if code == "ACQ.SELLER_BALANCE_NOT_ENOUGH"
        ));
        assert!(sim.refunds(&no).is_empty());
    }
}

async fn bill_of_today(ch: &Alipay) -> Vec<paymux_channels::bill::BillRecord> {
    let today = paymux_core::clock::china_date(Utc::now());
    let file = ch.bill(today).await.unwrap();
    tokio::task::spawn_blocking(move || file.records().unwrap().collect::<Result<Vec<_>, _>>())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn the_days_bill_is_a_zip_of_gbk_csv_with_the_injected_differences() {
    use paymux_channels::bill::BillRecord;
    let (_sim, host) = start_sim().await;
    let ch = Alipay::new(register(&host, false).await, reqwest::Client::new()).unwrap();
    assert!(ch.reads_bills());
    // Nothing moved: no bill, read as an empty one.
    assert!(bill_of_today(&ch).await.is_empty());
    let (a, b) = (order_no("bill"), order_no("bill"));
    for no in [&a, &b] {
        ch.prepay(&request(no, PayMethod::Native)).await.unwrap();
        assert_eq!(sim_pay(&host, no).await, 200);
    }
    let refund = refund_of(&a, 400);
    ch.refund(&refund).await.unwrap();

    let records = bill_of_today(&ch).await;
    assert_eq!(records.len(), 3, "{records:?}");
    for no in [&a, &b] {
        assert!(records.iter().any(|r| matches!(r,
            BillRecord::Payment { out_trade_no, amount: 1999, fee_milli: 12_000, .. } if out_trade_no == no)),
            "{records:?}");
    }
    assert!(records.iter().any(|r| matches!(r,
        BillRecord::Refund { out_trade_no, out_refund_no, amount: 400, succeeded: true, .. }
            if *out_trade_no == a && *out_refund_no == refund.out_refund_no)));

    let set = reqwest::Client::new()
        .post(format!("{host}/sim/alipay/bills/faults"))
        .json(&json!({"drop": [refund.out_refund_no], "add_unknown": 1, "change_amount": {b.clone(): 7}}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let faulty = bill_of_today(&ch).await;
    assert!(!faulty
        .iter()
        .any(|r| matches!(r, BillRecord::Refund { .. })));
    assert!(faulty.iter().any(|r| matches!(r,
        BillRecord::Payment { out_trade_no, amount: 7, .. } if *out_trade_no == b)));
    assert!(faulty.iter().any(|r| matches!(r,
        BillRecord::Payment { out_trade_no, .. } if out_trade_no.starts_with("unknown"))));
    assert_eq!(bill_of_today(&ch).await.len(), 3);
}
