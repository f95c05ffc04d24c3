//! The UnionPay simulator driven over HTTP by paymux's own UnionPay client:
//! registration, every prepay path, query, close, signed back notifications
//! and each fault, refused for its own reason.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::{Duration, Utc};
use paymux_channels::keys::PrivateKey;
use paymux_channels::unionpay::sign::{self, Params};
use paymux_channels::unionpay::{Unionpay, UnionpayConfig, QUERY_TRANS_PATH};
use paymux_channels::{Callback, Channel, ChannelError, Notification, PrepayRequest, TradeState};
use paymux_core::{Currency, Money, PayMethod, PaymentId};
use paymux_sim::unionpay::{router, PlatformInfo, Registered, UnionpaySim};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

async fn serve(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

async fn start_sim() -> (Arc<UnionpaySim>, String) {
    let sim = UnionpaySim::new();
    let host = serve(Router::new().nest("/sim/unionpay", router(sim.clone()))).await;
    (sim, host)
}

fn mer_id() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("777290058{:06}", N.fetch_add(1, Ordering::Relaxed))
}

/// Registers a fresh merchant over HTTP (the simulator issues its
/// certificate) and returns its client.
async fn register(host: &str) -> Unionpay {
    let http = reqwest::Client::new();
    let pem = PrivateKey::generate_pkcs8_pem().unwrap();
    let public = PrivateKey::from_pem(&pem).unwrap().public_key().unwrap();
    let mer_id = mer_id();
    let r = http
        .post(format!("{host}/sim/unionpay/merchants"))
        .json(&json!({ "mer_id": mer_id, "public_key": public.to_pem() }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let registered: Registered = r.json().await.unwrap();
    let platform: PlatformInfo = http
        .get(format!("{host}/sim/unionpay/platform"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ch = Unionpay::new(
        UnionpayConfig {
            base_url: format!("{host}/sim/unionpay"),
            mer_id,
            sign_pfx: None,
            sign_pfx_password: None,
            private_key_pem: Some(pem),
            sign_cert_pem: Some(registered.sign_cert),
            root_cert_pem: platform.root_cert,
            middle_cert_pem: platform.middle_cert,
            front_url: Some("https://mall.example.com/paid".into()),
            validate_cn_name: true,
        },
        reqwest::Client::new(),
    )
    .unwrap();
    assert_eq!(ch.cert_id(), registered.cert_id);
    ch
}

fn request(method: PayMethod, notify_url: &str) -> PrepayRequest {
    PrepayRequest {
        out_trade_no: PaymentId::generate().to_string(),
        description: "coffee".into(),
        amount: Money::new(1999, Currency::CNY).unwrap(),
        method,
        notify_url: notify_url.into(),
        expires_at: Utc::now() + Duration::hours(2),
        payer_openid: None,
        payer_client_ip: None,
        payer_buyer_id: None,
        auth_code: None,
    }
}

/// A merchant-side backUrl that verifies with `parse_callback` and answers
/// what UnionPay expects.
async fn start_receiver(
    ch: Arc<Unionpay>,
) -> (
    String,
    mpsc::UnboundedReceiver<Result<Notification, ChannelError>>,
) {
    type S = (
        Arc<Unionpay>,
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
        (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response()
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

async fn pay(host: &str, body: Value) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{host}/sim/unionpay/pay"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap())
}

#[tokio::test]
async fn every_method_prepares_pays_and_notifies() {
    let (_, host) = start_sim().await;
    let ch = Arc::new(register(&host).await);
    let (notify_url, mut rx) = start_receiver(ch.clone()).await;
    for method in [
        PayMethod::Pc,
        PayMethod::Wap,
        PayMethod::App,
        PayMethod::Native,
    ] {
        let req = request(method, &notify_url);
        let prepared = ch.prepay(&req).await.unwrap();
        // Nothing known at UnionPay until the payer's browser posts the form.
        if matches!(method, PayMethod::Pc | PayMethod::Wap) {
            assert!(matches!(
                ch.query(&req.out_trade_no).await,
                Err(ChannelError::NotFound)
            ));
            let fields: Params =
                serde_json::from_value(prepared.pay_params["fields"].clone()).unwrap();
            let r = reqwest::Client::new()
                .post(prepared.pay_params["action"].as_str().unwrap())
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(sign::encode_form(&fields))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert!(r.text().await.unwrap().contains(&fields["orderId"]));
            // The browser posting the same form again is the same order.
            let again = ch.prepay(&req).await.unwrap();
            let again: Params = serde_json::from_value(again.pay_params["fields"].clone()).unwrap();
            assert_eq!(again, fields);
        } else {
            // A retried prepay is the same order: the same tn / qrCode.
            assert_eq!(ch.prepay(&req).await.unwrap(), prepared);
        }
        let trade = ch.query(&req.out_trade_no).await.unwrap();
        assert_eq!(trade.state, TradeState::NotPaid, "{method}");

        let (status, outcome) = pay(&host, json!({ "out_trade_no": req.out_trade_no })).await;
        assert_eq!(status, 200, "{outcome}");
        assert_eq!(outcome["callbacks"][0]["status"], 200, "{outcome}");
        assert_eq!(outcome["callbacks"][0]["body"], "ok");
        let n = rx.recv().await.unwrap().unwrap();
        assert_eq!(n.trade.out_trade_no, req.out_trade_no);
        assert_eq!(n.trade.state, TradeState::Paid);
        assert_eq!(n.trade.amount, Some(req.amount));
        assert_eq!(n.event_id, outcome["query_id"].as_str().unwrap());

        let trade = ch.query(&req.out_trade_no).await.unwrap();
        assert_eq!(trade.state, TradeState::Paid);
        assert_eq!(trade.amount, Some(req.amount));
        assert_eq!(
            trade.transaction_id.as_deref(),
            outcome["query_id"].as_str()
        );
        // Close of a paid order: refused, so the caller settles it instead.
        assert!(matches!(
            ch.close(&req.out_trade_no).await,
            Err(ChannelError::Rejected { code, .. }) if code == "ALREADY_PAID"
        ));
    }
}

#[tokio::test]
async fn close_of_an_unpaid_or_unknown_order_succeeds() {
    let (_, host) = start_sim().await;
    let ch = register(&host).await;
    let req = request(PayMethod::Native, "http://127.0.0.1:9/notify");
    ch.prepay(&req).await.unwrap();
    ch.close(&req.out_trade_no).await.unwrap();
    ch.close(&PaymentId::generate().to_string()).await.unwrap();
    // The probe: an order that does not exist, answered and signed.
    ch.probe().await.unwrap();
}

#[tokio::test]
async fn each_fault_is_refused_for_its_own_reason() {
    let (_, host) = start_sim().await;
    let ch = Arc::new(register(&host).await);
    let (notify_url, mut rx) = start_receiver(ch.clone()).await;
    let req = request(PayMethod::Native, &notify_url);
    ch.prepay(&req).await.unwrap();
    for (fault, reason) in [
        ("bad_signature", "signature does not verify"),
        ("untrusted_chain", "does not chain"),
        ("expired_cert", "not valid now"),
        ("not_unionpay_cert", "not UnionPay's"),
        ("wrong_mer_id", "merId"),
    ] {
        let (status, outcome) = pay(
            &host,
            json!({ "out_trade_no": req.out_trade_no, "fault": fault }),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(outcome["callbacks"][0]["status"], 500, "{fault}");
        let err = rx.recv().await.unwrap().unwrap_err();
        assert!(err.to_string().contains(reason), "{fault}: {err}");
    }
    // A wrong amount verifies (UnionPay signed it); the amount check against
    // the payment is the server's, which sees this.
    pay(
        &host,
        json!({ "out_trade_no": req.out_trade_no, "fault": "wrong_amount" }),
    )
    .await;
    let n = rx.recv().await.unwrap().unwrap();
    assert_eq!(n.trade.amount.unwrap().minor, 2000);
}

#[tokio::test]
async fn requests_must_be_signed_by_the_registered_certificate() {
    let (_, host) = start_sim().await;
    let ch = register(&host).await;
    let http = reqwest::Client::new();
    let post = |p: Params| {
        let http = http.clone();
        let url = format!("{host}/sim/unionpay{QUERY_TRANS_PATH}");
        async move {
            let body = http
                .post(url)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(sign::encode_form(&p))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            sign::parse_answer(&body).unwrap()
        }
    };
    let mut p = Params::new();
    for (k, v) in [
        ("version", "5.1.0"),
        ("encoding", "utf-8"),
        ("signMethod", "01"),
        ("certId", ch.cert_id()),
        ("merId", ch.config().mer_id.as_str()),
        ("accessType", "0"),
        ("txnType", "00"),
        ("txnSubType", "00"),
        ("bizType", "000000"),
        ("orderId", "pay01KB0000000000000000000000"),
        ("txnTime", "20260101120000"),
    ] {
        p.insert(k.into(), v.into());
    }
    let signed = ch.sign(p.clone()).unwrap();
    assert_eq!(post(signed.clone()).await["respCode"], "34");
    // Tampered after signing.
    let mut tampered = signed.clone();
    tampered.insert("orderId".into(), "pay01KB0000000000000000000001".into());
    assert_eq!(post(tampered).await["respCode"], "11");
    // Another certificate's id.
    let mut other = p.clone();
    other.insert("certId".into(), "1".into());
    assert_eq!(post(ch.sign(other).unwrap()).await["respCode"], "11");
    // Answers are signed by the simulator's UnionPay certificate.
    let answer = post(signed).await;
    assert!(answer["signPubKeyCert"].contains("\r\n"));
    ch.verify_params(&answer, Utc::now()).unwrap();
}

#[tokio::test]
async fn an_expired_order_cannot_be_paid() {
    let (_, host) = start_sim().await;
    let ch = register(&host).await;
    let mut req = request(PayMethod::Native, "http://127.0.0.1:9/notify");
    req.expires_at = Utc::now() - Duration::minutes(1);
    ch.prepay(&req).await.unwrap();
    let (status, body) = pay(&host, json!({ "out_trade_no": req.out_trade_no })).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "ORDER_EXPIRED");
    let (status, _) = pay(
        &host,
        json!({ "out_trade_no": "pay_01KB0000000000000000000000" }),
    )
    .await;
    assert_eq!(status, 404);
}
