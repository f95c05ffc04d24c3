//! The WeChat Pay simulator driven over HTTP by paymux's own WeChat client.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::{Duration, Utc};
use paymux_channels::keys::{PrivateKey, PublicKey};
use paymux_channels::wechat::{sign, WechatConfig, WechatPay};
use paymux_channels::{Callback, Channel, ChannelError, Notification, PrepayRequest, TradeState};
use paymux_core::{Currency, Money, PayMethod};
use paymux_sim::wechat::{router, Fault, PayOutcome, PayRequest, SimError, SimMerchant, WechatSim};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const APPID: &str = "wxd678efh567hg6787";

async fn serve(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// The simulator mounted like paymux mounts it.
async fn start_sim() -> (Arc<WechatSim>, String) {
    let sim = WechatSim::new();
    let host = serve(Router::new().nest("/sim/wechat", router(sim.clone()))).await;
    (sim, host)
}

struct Merchant {
    config: WechatConfig,
    key: PrivateKey,
    public_pem: String,
}

fn new_merchant(base_url: &str) -> Merchant {
    static N: AtomicU32 = AtomicU32::new(0);
    let pem = PrivateKey::generate_pkcs8_pem().unwrap();
    let key = PrivateKey::from_pem(&pem).unwrap();
    let public_pem = key.public_key().unwrap().to_pem();
    let n = N.fetch_add(1, Ordering::Relaxed);
    Merchant {
        config: WechatConfig {
            base_url: base_url.to_string(),
            appid: APPID.into(),
            mchid: format!("19000{n:05}"),
            serial_no: format!("5A3F0000000000000000000000000000000{n:05}"),
            private_key_pem: pem,
            apiv3_key: format!("apiv3key{n:024}"),
            platform_public_key_id: None,
            platform_public_key_pem: None,
            oauth_app_secret: None,
        },
        key,
        public_pem,
    }
}

/// Registers the merchant through the simulator's HTTP control endpoint.
async fn register(host: &str, m: &Merchant) {
    let resp = reqwest::Client::new()
        .post(format!("{host}/sim/wechat/merchants"))
        .json(&SimMerchant {
            mchid: m.config.mchid.clone(),
            serial_no: m.config.serial_no.clone(),
            public_key_pem: m.public_pem.clone(),
            apiv3_key: m.config.apiv3_key.clone(),
        })
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
}

async fn setup() -> (Arc<WechatSim>, String, Merchant, WechatPay) {
    let (sim, host) = start_sim().await;
    let m = new_merchant(&format!("{host}/sim/wechat"));
    register(&host, &m).await;
    let ch = WechatPay::new(m.config.clone(), reqwest::Client::new()).unwrap();
    (sim, host, m, ch)
}

fn order_no(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("pay_{tag}_{}", N.fetch_add(1, Ordering::Relaxed))
}

fn request(out_trade_no: &str, method: PayMethod, notify_url: &str) -> PrepayRequest {
    PrepayRequest {
        out_trade_no: out_trade_no.into(),
        description: "paymux 测试商品".into(),
        amount: Money::new(1999, Currency::CNY).unwrap(),
        method,
        notify_url: notify_url.into(),
        expires_at: Utc::now() + Duration::minutes(30),
        payer_openid: Some("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into()),
        payer_client_ip: Some("203.0.113.7".into()),
        payer_buyer_id: None,
        auth_code: None,
    }
}

/// A merchant-side callback endpoint that verifies with `parse_callback`
/// and answers what WeChat expects.
async fn start_receiver(
    ch: Arc<WechatPay>,
) -> (
    String,
    mpsc::UnboundedReceiver<Result<Notification, ChannelError>>,
) {
    type S = (
        Arc<WechatPay>,
        mpsc::UnboundedSender<Result<Notification, ChannelError>>,
    );
    async fn handle(State((ch, tx)): State<S>, headers: HeaderMap, body: Bytes) -> Response {
        let result = ch
            .parse_callback(
                Callback {
                    headers: &headers,
                    body: &body,
                },
                Utc::now(),
            )
            .await;
        let reply = ch.callback_reply(result.is_ok());
        let _ = tx.send(result);
        (
            StatusCode::from_u16(reply.status).unwrap(),
            [("content-type", reply.content_type)],
            reply.body,
        )
            .into_response()
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let host = serve(
        Router::new()
            .route("/notify", post(handle))
            .with_state((ch, tx)),
    )
    .await;
    (format!("{host}/notify"), rx)
}

async fn pay_http(host: &str, body: Value) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{host}/sim/wechat/pay"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn platform_certificate_download() {
    let (sim, host, _m, ch) = setup().await;
    let serials = ch.refresh_platform_certificates().await.unwrap();
    assert_eq!(serials, vec![sim.platform().serial_no.clone()]);
    let info: Value = reqwest::get(format!("{host}/sim/wechat/platform"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["serial_no"], sim.platform().serial_no);
    assert!(info["certificate_pem"]
        .as_str()
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    PublicKey::from_pem(info["public_key_pem"].as_str().unwrap()).unwrap();
}

#[tokio::test]
async fn mini_program_prepay_is_idempotent_and_signed() {
    let (_sim, _host, m, ch) = setup().await;
    let no = order_no("mp");
    let req = request(
        &no,
        PayMethod::MiniProgram,
        "https://merchant.example/notify",
    );
    let p = ch.prepay(&req).await.unwrap();
    let prepay_id = p.channel_ref.clone().unwrap();
    let pp = &p.pay_params;
    assert_eq!(pp["appId"], APPID);
    assert_eq!(pp["package"], format!("prepay_id={prepay_id}"));
    assert_eq!(pp["signType"], "RSA");
    let ts = pp["timeStamp"].as_str().unwrap();
    assert!(ts.parse::<i64>().is_ok());
    let msg = sign::jsapi_pay_message(
        APPID,
        ts,
        pp["nonceStr"].as_str().unwrap(),
        pp["package"].as_str().unwrap(),
    );
    m.key
        .public_key()
        .unwrap()
        .verify_sha256(msg.as_bytes(), pp["paySign"].as_str().unwrap())
        .unwrap();
    assert_eq!(pp.as_object().unwrap().len(), 6);

    // Retried with identical parameters: the same prepay_id.
    let again = ch.prepay(&req).await.unwrap();
    assert_eq!(again.channel_ref.as_deref(), Some(prepay_id.as_str()));
    // The same out_trade_no with other parameters is refused like WeChat does.
    let mut other = req.clone();
    other.amount = Money::new(1, Currency::CNY).unwrap();
    match ch.prepay(&other).await {
        Err(ChannelError::Rejected { code, .. }) => assert_eq!(code, "OUT_TRADE_NO_USED"),
        r => panic!("{r:?}"),
    }
}

#[tokio::test]
async fn native_h5_app_prepay() {
    let (_sim, _host, m, ch) = setup().await;
    let native = ch
        .prepay(&request(
            &order_no("nat"),
            PayMethod::Native,
            "https://m.example/n",
        ))
        .await
        .unwrap();
    assert!(native.pay_params["code_url"]
        .as_str()
        .unwrap()
        .starts_with("weixin://wxpay/bizpayurl"));

    let h5 = ch
        .prepay(&request(
            &order_no("h5"),
            PayMethod::H5,
            "https://m.example/n",
        ))
        .await
        .unwrap();
    assert!(h5.pay_params["h5_url"]
        .as_str()
        .unwrap()
        .starts_with("https://"));

    let app = ch
        .prepay(&request(
            &order_no("app"),
            PayMethod::App,
            "https://m.example/n",
        ))
        .await
        .unwrap();
    let pp = &app.pay_params;
    assert_eq!(pp["appid"], APPID);
    assert_eq!(pp["partnerid"], m.config.mchid);
    assert_eq!(pp["package"], "Sign=WXPay");
    assert_eq!(pp["prepayid"].as_str(), app.channel_ref.as_deref());
    let msg = sign::app_pay_message(
        APPID,
        pp["timestamp"].as_str().unwrap(),
        pp["noncestr"].as_str().unwrap(),
        pp["prepayid"].as_str().unwrap(),
    );
    m.key
        .public_key()
        .unwrap()
        .verify_sha256(msg.as_bytes(), pp["sign"].as_str().unwrap())
        .unwrap();
}

#[tokio::test]
async fn invalid_prepay_parameters_are_refused() {
    let (_sim, _host, _m, ch) = setup().await;
    // Checked by WeChat (the simulator): out_trade_no too short.
    match ch
        .prepay(&request("abc", PayMethod::Native, "https://m.example/n"))
        .await
    {
        Err(ChannelError::Rejected { code, .. }) => assert_eq!(code, "PARAM_ERROR"),
        r => panic!("{r:?}"),
    }
    // Checked before sending: no openid for a mini-program payment, no IP for H5.
    let mut r = request(
        &order_no("x"),
        PayMethod::MiniProgram,
        "https://m.example/n",
    );
    r.payer_openid = None;
    assert!(matches!(
        ch.prepay(&r).await,
        Err(ChannelError::Rejected { .. })
    ));
    let mut r = request(&order_no("x"), PayMethod::H5, "https://m.example/n");
    r.payer_client_ip = None;
    assert!(matches!(
        ch.prepay(&r).await,
        Err(ChannelError::Rejected { .. })
    ));
}

#[tokio::test]
async fn query_and_close() {
    let (sim, _host, m, ch) = setup().await;
    assert!(matches!(
        ch.query("pay_does_not_exist").await,
        Err(ChannelError::NotFound)
    ));
    assert!(matches!(
        ch.close("pay_does_not_exist").await,
        Err(ChannelError::NotFound)
    ));

    let no = order_no("qc");
    ch.prepay(&request(&no, PayMethod::Native, "https://m.example/n"))
        .await
        .unwrap();
    let t = ch.query(&no).await.unwrap();
    assert_eq!(t.state, TradeState::NotPaid);
    assert_eq!(t.amount, Some(Money::new(1999, Currency::CNY).unwrap()));
    assert_eq!(t.merchant_account.as_deref(), Some(m.config.mchid.as_str()));
    assert_eq!(t.app_id.as_deref(), Some(APPID));
    assert_eq!(t.transaction_id, None);

    ch.close(&no).await.unwrap();
    ch.close(&no).await.unwrap();
    assert_eq!(ch.query(&no).await.unwrap().state, TradeState::Closed);
    // A closed order can be neither paid nor prepared again.
    let r = sim
        .pay(PayRequest {
            out_trade_no: no.clone(),
            mchid: None,
            callbacks: 0,
            fault: None,
            hold: false,
        })
        .await;
    assert!(matches!(r, Err(SimError::OrderClosed)), "{r:?}");
    match ch
        .prepay(&request(&no, PayMethod::Native, "https://m.example/n"))
        .await
    {
        Err(ChannelError::Rejected { code, .. }) => assert_eq!(code, "ORDER_CLOSED"),
        r => panic!("{r:?}"),
    }
}

#[tokio::test]
async fn bad_merchant_signature_is_refused() {
    let (_sim, host, m, _ch) = setup().await;
    // The simulator knows this mchid with another public key.
    let mut impostor = new_merchant(&m.config.base_url);
    impostor.config.mchid = m.config.mchid.clone();
    impostor.config.serial_no = m.config.serial_no.clone();
    let ch = WechatPay::new(impostor.config.clone(), reqwest::Client::new()).unwrap();
    match ch
        .prepay(&request(
            &order_no("bad"),
            PayMethod::Native,
            "https://m.example/n",
        ))
        .await
    {
        Err(ChannelError::Rejected { code, .. }) => assert_eq!(code, "SIGN_ERROR"),
        r => panic!("{r:?}"),
    }
    // Unsigned: 401 SIGN_ERROR, and the answer itself is signed.
    let resp = reqwest::Client::new()
        .post(format!("{host}/sim/wechat/v3/pay/transactions/native"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("Wechatpay-Signature"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "SIGN_ERROR");

    // A signature made for another path does not verify.
    let now = Utc::now().timestamp();
    let body = b"{}";
    let auth = sign::Authorization::sign(
        &m.key,
        &m.config.mchid,
        &m.config.serial_no,
        "POST",
        "/v3/pay/transactions/native",
        now,
        "NONCE",
        body,
    )
    .unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{host}/sim/wechat/v3/pay/transactions/native"))
        .header("Authorization", auth.header_value())
        .body(&body[..])
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        401,
        "the mount prefix is part of the signed path"
    );
    // Signed over the full path: accepted up to body validation.
    let auth = sign::Authorization::sign(
        &m.key,
        &m.config.mchid,
        &m.config.serial_no,
        "POST",
        "/sim/wechat/v3/pay/transactions/native",
        now,
        "NONCE",
        body,
    )
    .unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{host}/sim/wechat/v3/pay/transactions/native"))
        .header("Authorization", auth.header_value())
        .body(&body[..])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // A stale timestamp is refused.
    let auth = sign::Authorization::sign(
        &m.key,
        &m.config.mchid,
        &m.config.serial_no,
        "POST",
        "/sim/wechat/v3/pay/transactions/native",
        now - 400,
        "NONCE",
        body,
    )
    .unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{host}/sim/wechat/v3/pay/transactions/native"))
        .header("Authorization", auth.header_value())
        .body(&body[..])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn pay_sends_verified_encrypted_callbacks() {
    let (sim, host, m, ch) = setup().await;
    let ch = Arc::new(ch);
    let (notify_url, mut rx) = start_receiver(ch.clone()).await;
    let no = order_no("paid");
    ch.prepay(&request(&no, PayMethod::MiniProgram, &notify_url))
        .await
        .unwrap();

    let (status, outcome) = pay_http(
        &host,
        json!({ "out_trade_no": no, "callbacks": 2, "fault": null }),
    )
    .await;
    assert_eq!(status, 200, "{outcome}");
    let outcome: PayOutcome = serde_json::from_value(outcome).unwrap();
    assert_eq!(outcome.callbacks.len(), 2);
    for c in &outcome.callbacks {
        assert_eq!(c.status, Some(200), "{c:?}");
        assert!(c.body.contains("SUCCESS"));
    }
    let first = rx.recv().await.unwrap().unwrap();
    let second = rx.recv().await.unwrap().unwrap();
    assert_eq!(
        first.event_id, second.event_id,
        "duplicates share the notification id"
    );
    assert_eq!(first.event_id, outcome.notification_id);
    assert_eq!(first.event_type, "TRANSACTION.SUCCESS");
    let t = &first.trade;
    assert_eq!(t.out_trade_no, no);
    assert_eq!(t.state, TradeState::Paid);
    assert_eq!(
        t.transaction_id.as_deref(),
        Some(outcome.transaction_id.as_str())
    );
    assert_eq!(t.amount, Some(Money::new(1999, Currency::CNY).unwrap()));
    assert_eq!(t.merchant_account.as_deref(), Some(m.config.mchid.as_str()));
    assert_eq!(t.app_id.as_deref(), Some(APPID));
    assert!(t.paid_at.is_some());

    let q = ch.query(&no).await.unwrap();
    assert_eq!(q.state, TradeState::Paid);
    assert_eq!(q.transaction_id, t.transaction_id);
    assert_eq!(q.paid_at, t.paid_at);
    // Paid orders cannot be prepared again nor closed.
    match ch
        .prepay(&request(&no, PayMethod::MiniProgram, &notify_url))
        .await
    {
        Err(ChannelError::Rejected { code, .. }) => assert_eq!(code, "ORDERPAID"),
        r => panic!("{r:?}"),
    }
    match ch.close(&no).await {
        Err(ChannelError::Rejected { code, .. }) => assert_eq!(code, "ORDERPAID"),
        r => panic!("{r:?}"),
    }
    // Paying again re-sends the same notification.
    let again = sim
        .pay(PayRequest {
            out_trade_no: no.clone(),
            mchid: None,
            callbacks: 1,
            fault: None,
            hold: false,
        })
        .await
        .unwrap();
    assert_eq!(again.notification_id, outcome.notification_id);
    assert_eq!(
        rx.recv().await.unwrap().unwrap().event_id,
        outcome.notification_id
    );
    // Unknown orders.
    let (status, _) = pay_http(&host, json!({ "out_trade_no": "pay_unknown" })).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn faulty_callbacks_are_rejected() {
    let (_sim, host, _m, ch) = setup().await;
    let ch = Arc::new(ch);
    let (notify_url, mut rx) = start_receiver(ch.clone()).await;
    for (fault, name) in [
        (Fault::BadSignature, "bad_signature"),
        (Fault::TamperedCiphertext, "tampered_ciphertext"),
        (Fault::StaleTimestamp, "stale_timestamp"),
        (Fault::OtherMchid, "other_mchid"),
        (Fault::OtherAppid, "other_appid"),
    ] {
        let no = order_no("fault");
        ch.prepay(&request(&no, PayMethod::Native, &notify_url))
            .await
            .unwrap();
        let (status, outcome) = pay_http(
            &host,
            json!({ "out_trade_no": no, "callbacks": 1, "fault": name }),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(outcome["callbacks"][0]["status"], 500, "{name}");
        let err = rx.recv().await.unwrap().unwrap_err();
        let expected = match fault {
            Fault::BadSignature => matches!(err, ChannelError::InvalidSignature(_)),
            Fault::TamperedCiphertext => matches!(err, ChannelError::Decrypt),
            Fault::StaleTimestamp => matches!(err, ChannelError::StaleTimestamp(_)),
            // A genuine callback for another merchant number or app is not ours.
            Fault::OtherMchid => matches!(&err, ChannelError::Protocol(m) if m.contains("mchid")),
            Fault::OtherAppid => matches!(&err, ChannelError::Protocol(m) if m.contains("appid")),
        };
        assert!(expected, "{name}: {err:?}");
    }
}

#[tokio::test]
async fn public_key_mode_and_forged_answers() {
    let (sim, host, m, _ch) = setup().await;
    let platform = sim.platform();
    // Public-key mode: answers verify without downloading certificates.
    let mut config = m.config.clone();
    config.platform_public_key_id = Some(platform.serial_no.clone());
    config.platform_public_key_pem = Some(platform.public_key_pem.clone());
    let ch = WechatPay::new(config.clone(), reqwest::Client::new()).unwrap();
    ch.prepay(&request(
        &order_no("pk"),
        PayMethod::Native,
        "https://m.example/n",
    ))
    .await
    .unwrap();

    // A client that trusts another key under the simulator's serial must
    // refuse the simulator's answers.
    let other = PrivateKey::from_pem(&PrivateKey::generate_pkcs8_pem().unwrap()).unwrap();
    config.platform_public_key_pem = Some(other.public_key().unwrap().to_pem());
    let ch = WechatPay::new(config, reqwest::Client::new()).unwrap();
    let r = ch
        .prepay(&request(
            &order_no("pk"),
            PayMethod::Native,
            "https://m.example/n",
        ))
        .await;
    assert!(matches!(r, Err(ChannelError::InvalidSignature(_))), "{r:?}");
    let _ = host;
}

#[tokio::test]
async fn served_at_the_root_too() {
    // As the standalone binary serves it: nested and at the root.
    let sim = WechatSim::new();
    let host = serve(
        Router::new()
            .nest("/sim/wechat", router(sim.clone()))
            .merge(router(sim.clone())),
    )
    .await;
    let m = new_merchant(&host);
    sim.register_merchant(SimMerchant {
        mchid: m.config.mchid.clone(),
        serial_no: m.config.serial_no.clone(),
        public_key_pem: m.public_pem.clone(),
        apiv3_key: m.config.apiv3_key.clone(),
    });
    let ch = WechatPay::new(m.config.clone(), reqwest::Client::new()).unwrap();
    let no = order_no("root");
    ch.prepay(&request(&no, PayMethod::Native, "https://m.example/n"))
        .await
        .unwrap();
    assert_eq!(ch.query(&no).await.unwrap().state, TradeState::NotPaid);
}

#[tokio::test]
async fn unreachable_channel_is_a_transport_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let m = new_merchant(&format!("http://{addr}"));
    let ch = WechatPay::new(m.config, reqwest::Client::new()).unwrap();
    let err = ch.query("pay_whatever").await.unwrap_err();
    assert!(matches!(err, ChannelError::Transport(_)), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn injected_faults_reach_the_client_as_wechat_sends_them() {
    let (sim, host, m, ch) = setup().await;
    let http = reqwest::Client::new();
    let set = |faults: Value| {
        let (http, host) = (http.clone(), host.clone());
        async move {
            let r = http
                .post(format!("{host}/sim/wechat/faults"))
                .json(&faults)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    let no = order_no("fault");
    set(json!({"seed": 1, "rate_limit_rate": 1.0})).await;
    match ch.query(&no).await {
        Err(e @ ChannelError::RateLimited { .. }) => assert!(e.is_channel_failure()),
        r => panic!("{r:?}"),
    }
    set(json!({"seed": 1, "error_rate": 1.0})).await;
    // A 5xx is refused before anything is done: the order does not exist.
    match ch
        .prepay(&request(&no, PayMethod::Native, "https://m.example/n"))
        .await
    {
        Err(e @ ChannelError::Transport(_)) => assert!(e.is_channel_failure()),
        r => panic!("{r:?}"),
    }
    assert!(sim.trades(&no).is_empty());
    // A timeout: done at the channel, the answer too late for the client.
    set(json!({"seed": 1, "timeout_rate": 1.0, "timeout_ms": 1000})).await;
    let impatient = WechatPay::new(
        m.config.clone(),
        paymux_channels::transport::client(paymux_channels::transport::Timeouts {
            connect: std::time::Duration::from_millis(200),
            request: std::time::Duration::from_millis(200),
        })
        .unwrap(),
    )
    .unwrap();
    match impatient
        .prepay(&request(&no, PayMethod::Native, "https://m.example/n"))
        .await
    {
        Err(ChannelError::Transport(_)) => {}
        r => panic!("{r:?}"),
    }
    assert_eq!(sim.trades(&no).len(), 1, "the order was made");
    let status: Value = http
        .get(format!("{host}/sim/wechat/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Counted since the faults were last set.
    assert_eq!(status["injected"]["errors"], 0);
    assert!(status["injected"]["timeouts"].as_u64().unwrap() >= 1);
    let r = http
        .delete(format!("{host}/sim/wechat/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(ch.query(&no).await.unwrap().state, TradeState::NotPaid);
}

#[tokio::test]
async fn a_registered_merchant_shows_its_public_key_and_never_its_apiv3_key() {
    let (_sim, host, m, _ch) = setup().await;
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{host}/sim/wechat/merchants/{}", m.config.mchid))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["mchid"], m.config.mchid.as_str());
    assert_eq!(body["serial_no"], m.config.serial_no.as_str());
    let pem = body["public_key_pem"].as_str().unwrap();
    assert!(pem.contains("BEGIN"), "{pem}");
    assert!(
        !body.to_string().contains(&m.config.apiv3_key),
        "the APIv3 key is never shown"
    );
    let missing = http
        .get(format!("{host}/sim/wechat/merchants/0000000000"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

/// Today in China, the day bills are made for.
fn china_today() -> chrono::NaiveDate {
    paymux_core::clock::china_date(Utc::now())
}

async fn bill_of_today(ch: &WechatPay) -> Vec<paymux_channels::bill::BillRecord> {
    let file = ch.bill(china_today()).await.unwrap();
    tokio::task::spawn_blocking(move || file.records().unwrap().collect::<Result<Vec<_>, _>>())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn the_days_bill_lists_what_was_paid_and_refunded_with_injected_differences() {
    use paymux_channels::bill::BillRecord;
    let (_sim, host, _m, ch) = setup().await;
    // Nothing moved yet: no bill, which reads as an empty one.
    assert!(bill_of_today(&ch).await.is_empty());
    let nowhere = "http://127.0.0.1:9/notify";
    let (a, b) = (order_no("bill"), order_no("bill"));
    for no in [&a, &b] {
        ch.prepay(&request(no, PayMethod::Native, nowhere))
            .await
            .unwrap();
        let (status, _) = pay_http(&host, json!({"out_trade_no": no, "callbacks": 0})).await;
        assert_eq!(status, 200);
    }
    let refund = paymux_channels::RefundRequest {
        out_trade_no: a.clone(),
        method: PayMethod::Native,
        out_refund_no: format!("{a}_r1"),
        amount: Money::new(500, Currency::CNY).unwrap(),
        total: Money::new(1999, Currency::CNY).unwrap(),
        reason: None,
        notify_url: nowhere.into(),
        channel_trade_no: None,
        created_at: Utc::now(),
    };
    ch.refund(&refund).await.unwrap();
    for _ in 0..100 {
        if ch.query_refund(&refund).await.unwrap().state == paymux_channels::RefundState::Succeeded
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let mut records = bill_of_today(&ch).await;
    records.sort_by_key(|r| format!("{r:?}"));
    let paid: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            BillRecord::Payment {
                out_trade_no,
                amount,
                fee_milli,
                ..
            } => Some((out_trade_no.clone(), *amount, *fee_milli)),
            _ => None,
        })
        .collect();
    assert_eq!(paid, [(a.clone(), 1999, 11_994), (b.clone(), 1999, 11_994)]);
    assert!(records.iter().any(|r| matches!(r,
        BillRecord::Refund { out_trade_no, out_refund_no, amount: 500, succeeded: true, .. }
            if *out_trade_no == a && *out_refund_no == refund.out_refund_no)));
    assert_eq!(records.len(), 3);

    // The next bill gets the differences asked for, and only the next.
    let set = reqwest::Client::new()
        .post(format!("{host}/sim/wechat/bills/faults"))
        .json(&json!({"drop": [b], "add_unknown": 2, "change_amount": {a.clone(): 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let faulty = bill_of_today(&ch).await;
    let amounts: Vec<_> = faulty
        .iter()
        .filter_map(|r| match r {
            BillRecord::Payment {
                out_trade_no,
                amount,
                ..
            } => Some((out_trade_no.clone(), *amount)),
            _ => None,
        })
        .collect();
    assert!(amounts.contains(&(a.clone(), 1)), "{amounts:?}");
    assert!(!amounts.iter().any(|(no, _)| *no == b));
    assert_eq!(
        amounts
            .iter()
            .filter(|(no, _)| no.starts_with("unknown"))
            .count(),
        2
    );
    assert_eq!(bill_of_today(&ch).await.len(), 3);

    let refused = reqwest::Client::new()
        .post(format!("{host}/sim/wechat/bills/faults"))
        .json(&json!({"change_amount": {a: 0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
}
