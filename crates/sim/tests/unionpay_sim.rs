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
use paymux_channels::{
    Callback, Channel, ChannelError, Notification, PrepayRequest, RefundNotification,
    RefundRequest, RefundState, TradeState,
};
use paymux_core::{new_id, Currency, Money, PayMethod, PaymentId};
use paymux_sim::faults::FaultConfig;
use paymux_sim::unionpay::{
    router, PlatformInfo, Registered, SimRefund, SimRefundState, UnionpaySim,
};
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
    let (sim, host) = start_sim().await;
    let ch = register(&host).await;
    let req = request(PayMethod::Native, "http://127.0.0.1:9/notify");
    ch.prepay(&req).await.unwrap();
    ch.close(&req.out_trade_no).await.unwrap();
    // UnionPay has no close: the order stays unpaid, at UnionPay and in
    // what the client reads back (its payTimeout ends it there).
    let trade = ch.query(&req.out_trade_no).await.unwrap();
    assert_ne!(trade.state, TradeState::Paid, "{trade:?}");
    let books = sim.trades(&req.out_trade_no.replace('_', ""));
    let books = if books.is_empty() {
        sim.trades(&req.out_trade_no)
    } else {
        books
    };
    assert_eq!(books.len(), 1, "the simulator knows the order");
    assert_eq!(books[0].state, paymux_sim::SimTradeState::Unpaid);
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

// ---------------------------------------------------------------------------
// Refunds

type RefundCallback = (Vec<u8>, Result<RefundNotification, ChannelError>);

/// A merchant-side refund backUrl that verifies with `parse_refund_callback`
/// and hands over the raw body with the outcome.
async fn start_refund_receiver(
    ch: Arc<Unionpay>,
) -> (String, mpsc::UnboundedReceiver<RefundCallback>) {
    type S = (Arc<Unionpay>, mpsc::UnboundedSender<RefundCallback>);
    async fn handle(State((ch, tx)): State<S>, headers: HeaderMap, body: Bytes) -> Response {
        let result = ch
            .parse_refund_callback(
                Callback {
                    headers: &headers,
                    body: &body,
                },
                Utc::now(),
            )
            .await;
        let reply = ch.callback_reply(result.is_ok());
        let _ = tx.send((body.to_vec(), result));
        (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response()
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let host = serve(
        Router::new()
            .route("/refund", post(handle))
            .with_state((ch, tx)),
    )
    .await;
    (format!("{host}/refund"), rx)
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .expect("a callback within 10 s")
        .expect("receiver open")
}

/// A QR payment of 19.99 made and paid; returns it and its queryId.
async fn paid_payment(host: &str, ch: &Unionpay) -> (PrepayRequest, String) {
    let req = request(PayMethod::Native, "http://127.0.0.1:9/notify");
    ch.prepay(&req).await.unwrap();
    let (status, outcome) = pay(host, json!({ "out_trade_no": req.out_trade_no })).await;
    assert_eq!(status, 200, "{outcome}");
    (req, outcome["query_id"].as_str().unwrap().to_string())
}

fn refund_of(paid: &PrepayRequest, query_id: &str, fen: i64, notify_url: &str) -> RefundRequest {
    RefundRequest {
        out_trade_no: paid.out_trade_no.clone(),
        method: paid.method,
        out_refund_no: new_id("ref"),
        amount: Money::new(fen, Currency::CNY).unwrap(),
        total: paid.amount,
        reason: Some("returned".into()),
        notify_url: notify_url.into(),
        channel_trade_no: Some(query_id.into()),
        created_at: Utc::now(),
    }
}

fn state_of(r: &SimRefund) -> (i64, SimRefundState) {
    (r.amount, r.state)
}

#[tokio::test]
async fn a_full_refund_is_notified_and_queried() {
    let (sim, host) = start_sim().await;
    let ch = Arc::new(register(&host).await);
    let (refund_url, mut rx) = start_refund_receiver(ch.clone()).await;
    let (paid, query_id) = paid_payment(&host, &ch).await;
    let req = refund_of(&paid, &query_id, 1999, &refund_url);

    let accepted = ch.refund(&req).await.unwrap();
    assert_eq!(accepted.state, RefundState::Processing);
    assert_eq!(accepted.out_refund_no, req.out_refund_no);
    let refund_query_id = accepted.refund_id.clone().unwrap();
    assert_ne!(refund_query_id, query_id);

    let (_, n) = next(&mut rx).await;
    let n = n.unwrap();
    assert_eq!(n.event_id, refund_query_id);
    assert_eq!(n.out_trade_no, paid.out_trade_no);
    assert_eq!(n.refund.out_refund_no, req.out_refund_no);
    assert_eq!(n.refund.state, RefundState::Succeeded);
    assert_eq!(n.refund.amount, Some(req.amount));
    assert_eq!(
        n.refund.refund_id.as_deref(),
        Some(refund_query_id.as_str())
    );

    let found = ch.query_refund(&req).await.unwrap();
    assert_eq!(found.state, RefundState::Succeeded);
    assert_eq!(found.amount, Some(req.amount));
    assert_eq!(found.refund_id, Some(refund_query_id));
    // The consumption itself stays paid.
    assert_eq!(
        ch.query(&paid.out_trade_no).await.unwrap().state,
        TradeState::Paid
    );

    let listed = sim.refunds(&paid.out_trade_no, None).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].out_refund_no, req.out_refund_no);
    assert_eq!(state_of(&listed[0]), (1999, SimRefundState::Succeeded));
    let body: Value = reqwest::Client::new()
        .get(format!(
            "{host}/sim/unionpay/refunds?out_trade_no={}",
            paid.out_trade_no
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body[0]["amount"], 1999);
    assert_eq!(body[0]["state"], "succeeded");
    assert_eq!(body[0]["out_refund_no"], req.out_refund_no);
    // Nothing is left to refund.
    let more = refund_of(&paid, &query_id, 1, &refund_url);
    assert!(matches!(
        ch.refund(&more).await,
        Err(ChannelError::Rejected { code, .. }) if code == "45"
    ));
    assert!(matches!(
        ch.query_refund(&more).await,
        Err(ChannelError::NotFound)
    ));
}

#[tokio::test]
async fn two_partial_refunds_and_no_more_than_was_paid() {
    let (sim, host) = start_sim().await;
    let ch = Arc::new(register(&host).await);
    let (refund_url, mut rx) = start_refund_receiver(ch.clone()).await;
    let (paid, query_id) = paid_payment(&host, &ch).await;

    let first = refund_of(&paid, &query_id, 1000, &refund_url);
    ch.refund(&first).await.unwrap();
    let second = refund_of(&paid, &query_id, 900, &refund_url);
    ch.refund(&second).await.unwrap();
    let mut notified = [
        next(&mut rx).await.1.unwrap().refund,
        next(&mut rx).await.1.unwrap().refund,
    ];
    notified.sort_by_key(|r| r.amount.unwrap().minor);
    assert_eq!(notified[0].out_refund_no, second.out_refund_no);
    assert_eq!(notified[1].out_refund_no, first.out_refund_no);
    assert!(notified.iter().all(|r| r.state == RefundState::Succeeded));

    // 99 fen are left: 100 is refused and changes nothing.
    let over = refund_of(&paid, &query_id, 100, &refund_url);
    match ch.refund(&over).await {
        Err(ChannelError::Rejected { code, message }) => {
            assert_eq!(code, "33");
            assert!(message.contains("99 fen left"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        ch.query_refund(&over).await,
        Err(ChannelError::NotFound)
    ));
    let listed = sim.refunds(&paid.out_trade_no, None).unwrap();
    assert_eq!(
        listed.iter().map(state_of).collect::<Vec<_>>(),
        vec![
            (1000, SimRefundState::Succeeded),
            (900, SimRefundState::Succeeded)
        ]
    );
    // The rest exactly is fine.
    let rest = refund_of(&paid, &query_id, 99, &refund_url);
    ch.refund(&rest).await.unwrap();
    assert_eq!(
        next(&mut rx).await.1.unwrap().refund.out_refund_no,
        rest.out_refund_no
    );
    assert_eq!(sim.refunds(&paid.out_trade_no, None).unwrap().len(), 3);
}

#[tokio::test]
async fn a_repeated_refund_never_refunds_twice() {
    let (sim, host) = start_sim().await;
    let ch = Arc::new(register(&host).await);
    let (refund_url, mut rx) = start_refund_receiver(ch.clone()).await;
    let (paid, query_id) = paid_payment(&host, &ch).await;
    // Made an hour ago here (say the first call timed out): UnionPay knows
    // a refund by its orderId and txnTime, and the txnTime is the refund's
    // creation time, the same on every call.
    let mut req = refund_of(&paid, &query_id, 500, &refund_url);
    req.created_at -= Duration::hours(1);
    ch.refund(&req).await.unwrap();
    next(&mut rx).await.1.unwrap();
    let mut other_time = req.clone();
    other_time.created_at += Duration::seconds(1);
    assert!(matches!(
        ch.query_refund(&other_time).await,
        Err(ChannelError::NotFound)
    ));
    // The repeat (say its first answer was lost) is UnionPay's "duplicate
    // transaction": an unknown outcome for the client, settled by query.
    let again = ch.refund(&req).await.unwrap_err();
    assert!(matches!(again, ChannelError::Transport(_)), "{again}");
    assert!(again.is_retryable());
    assert_eq!(
        ch.query_refund(&req).await.unwrap().state,
        RefundState::Succeeded
    );
    let listed = sim.refunds(&paid.out_trade_no, None).unwrap();
    assert_eq!(
        listed.iter().map(state_of).collect::<Vec<_>>(),
        vec![(500, SimRefundState::Succeeded)]
    );
}

#[tokio::test]
async fn refunds_need_a_paid_consumption() {
    let (_, host) = start_sim().await;
    let ch = register(&host).await;
    let (paid, query_id) = paid_payment(&host, &ch).await;
    // A refund nobody asked for is unknown.
    let unknown = refund_of(&paid, &query_id, 100, "http://127.0.0.1:9/refund");
    assert!(matches!(
        ch.query_refund(&unknown).await,
        Err(ChannelError::NotFound)
    ));
    // Without the consumption's queryId nothing can be refunded.
    let mut no_query_id = unknown.clone();
    no_query_id.channel_trade_no = None;
    match ch.refund(&no_query_id).await {
        Err(ChannelError::Rejected { code, message }) => {
            assert_eq!(code, paymux_channels::unionpay::refund::MISSING_QUERY_ID);
            assert!(message.contains("origQryId"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // A queryId UnionPay does not know, or another merchant's.
    let mut wrong = refund_of(
        &paid,
        "000000000000000000000",
        100,
        "http://127.0.0.1:9/refund",
    );
    assert!(matches!(
        ch.refund(&wrong).await,
        Err(ChannelError::Rejected { code, .. }) if code == "35"
    ));
    let other = register(&host).await;
    wrong.channel_trade_no = Some(query_id);
    assert!(matches!(
        other.refund(&wrong).await,
        Err(ChannelError::Rejected { code, .. }) if code == "35"
    ));
}

#[tokio::test]
async fn forged_refund_callbacks_are_refused() {
    let (_, host) = start_sim().await;
    let ch = Arc::new(register(&host).await);
    let (refund_url, mut rx) = start_refund_receiver(ch.clone()).await;
    let (paid, query_id) = paid_payment(&host, &ch).await;
    ch.refund(&refund_of(&paid, &query_id, 300, &refund_url))
        .await
        .unwrap();
    let (body, genuine) = next(&mut rx).await;
    genuine.unwrap();
    let params = sign::parse_form(&body).unwrap();
    let parse = |p: &Params| {
        let ch = ch.clone();
        let body = sign::encode_form(p);
        async move {
            ch.parse_refund_callback(
                Callback {
                    headers: &HeaderMap::new(),
                    body: body.as_bytes(),
                },
                Utc::now(),
            )
            .await
        }
    };
    // A larger amount after UnionPay signed.
    let mut tampered = params.clone();
    tampered.insert("txnAmt".into(), "1999".into());
    assert!(matches!(
        parse(&tampered).await,
        Err(ChannelError::InvalidSignature(_))
    ));
    // Signed by the merchant's own key: a key, but not UnionPay's certificate.
    let mut self_signed = params.clone();
    self_signed.remove("signPubKeyCert");
    let self_signed = ch.sign(self_signed).unwrap();
    assert!(matches!(
        parse(&self_signed).await,
        Err(ChannelError::InvalidSignature(_))
    ));
    // Another merchant's refund, genuinely signed by UnionPay, is not ours.
    let other = register(&host).await;
    assert!(other
        .parse_refund_callback(
            Callback {
                headers: &HeaderMap::new(),
                body: &body,
            },
            Utc::now(),
        )
        .await
        .unwrap_err()
        .to_string()
        .contains("merId"));
    // A payment's notification, posted to the refund URL, is not a refund's.
    let req = request(PayMethod::Native, &refund_url);
    ch.prepay(&req).await.unwrap();
    let (_, outcome) = pay(&host, json!({ "out_trade_no": req.out_trade_no })).await;
    assert_eq!(outcome["callbacks"][0]["status"], 500);
    let err = next(&mut rx).await.1.unwrap_err();
    assert!(err.to_string().contains("txnType 01"), "{err}");
}

#[tokio::test]
async fn failed_and_lost_refund_callbacks_are_settled_by_query() {
    let (sim, host) = start_sim().await;
    let ch = Arc::new(register(&host).await);
    let (refund_url, mut rx) = start_refund_receiver(ch.clone()).await;
    let (paid, query_id) = paid_payment(&host, &ch).await;
    // UnionPay accepts the refund, then it fails for good.
    sim.faults
        .set(FaultConfig {
            refund_failure_rate: 1.0,
            ..Default::default()
        })
        .unwrap();
    let failing = refund_of(&paid, &query_id, 1999, &refund_url);
    assert_eq!(
        ch.refund(&failing).await.unwrap().state,
        RefundState::Processing
    );
    let n = next(&mut rx).await.1.unwrap();
    assert_eq!(n.refund.state, RefundState::Failed);
    assert_eq!(n.refund.failure.as_deref().map(|f| &f[..2]), Some("01"));
    let found = ch.query_refund(&failing).await.unwrap();
    assert_eq!(found.state, RefundState::Failed);
    assert!(found.failure.is_some());
    // The failed refund's amount can be refunded again; this time its
    // callback is lost and only a query tells.
    sim.faults
        .set(FaultConfig {
            callback_lost_rate: 1.0,
            ..Default::default()
        })
        .unwrap();
    let retry = refund_of(&paid, &query_id, 1999, &refund_url);
    ch.refund(&retry).await.unwrap();
    // The notification goes out after the answer: wait for its fate.
    for _ in 0..100 {
        if sim.faults.status().injected.callbacks_lost == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(sim.faults.status().injected.callbacks_lost, 1);
    assert!(rx.try_recv().is_err());
    assert_eq!(
        ch.query_refund(&retry).await.unwrap().state,
        RefundState::Succeeded
    );
    let listed = sim.refunds(&paid.out_trade_no, None).unwrap();
    assert_eq!(
        listed.iter().map(state_of).collect::<Vec<_>>(),
        vec![
            (1999, SimRefundState::Failed),
            (1999, SimRefundState::Succeeded)
        ]
    );
}

#[tokio::test]
async fn gateway_faults_reach_unionpay_calls() {
    let (sim, host) = start_sim().await;
    let ch = register(&host).await;
    let (paid, query_id) = paid_payment(&host, &ch).await;
    let r = reqwest::Client::new()
        .post(format!("{host}/sim/unionpay/faults"))
        .json(&json!({ "seed": 3, "error_rate": 1.0 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let req = refund_of(&paid, &query_id, 100, "http://127.0.0.1:9/refund");
    let err = ch.refund(&req).await.unwrap_err();
    assert!(matches!(err, ChannelError::Transport(_)), "{err}");
    // Refused before anything was done.
    assert!(sim.refunds(&paid.out_trade_no, None).unwrap().is_empty());
    sim.faults
        .set(FaultConfig {
            rate_limit_rate: 1.0,
            ..Default::default()
        })
        .unwrap();
    let err = ch.query(&paid.out_trade_no).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(sim.faults.status().injected.rate_limits, 1);
    sim.faults.clear();
    // The same refund, now that UnionPay is back: made once.
    ch.refund(&req).await.unwrap();
    assert_eq!(sim.refunds(&paid.out_trade_no, None).unwrap().len(), 1);
}
