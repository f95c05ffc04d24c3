//! The simulator's HTTP surface: UnionPay's gateway paths plus control endpoints.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{OriginalUri, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use paymux_channels::unionpay::sign::{self, Params};
use paymux_channels::unionpay::{
    APP_TRANS_PATH, BACK_TRANS_PATH, FRONT_TRANS_PATH, QUERY_TRANS_PATH,
};
use serde::Deserialize;
use serde_json::json;

use super::{lock, Kind, Order, PayRequest, SimError, SimMerchant, UnionpaySim, MAX_ORDERS};
use crate::faults::ApiFault;

/// The simulator's routes, relative to where they are mounted (paymux nests
/// them under `/sim/unionpay`, so the gateway is `/sim/unionpay/gateway/api/…`).
pub fn router<S>(sim: Arc<UnionpaySim>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let control = Router::new()
        .route("/merchants", post(add_merchant))
        .route("/platform", get(platform))
        .route("/pay", post(pay))
        .route("/refunds", get(refunds))
        .route(FRONT_TRANS_PATH, get(front).post(front))
        .with_state(sim.clone())
        .merge(crate::faults::routes::router(sim.faults.clone()));
    // The back gateway (merchant server to UnionPay) has bad days; the
    // payer's browser page is left alone.
    let back_gateway = Router::new()
        .route(APP_TRANS_PATH, post(app))
        .route(BACK_TRANS_PATH, post(back))
        .route(QUERY_TRANS_PATH, post(query))
        .route_layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            inject_faults,
        ))
        .with_state(sim);
    control.merge(back_gateway)
}

/// Applies the configured faults to a gateway call, as UnionPay shows them:
/// an HTTP 5xx, a signed "system busy" (06) answer, a late answer.
async fn inject_faults(
    State(sim): State<Arc<UnionpaySim>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match sim.faults.api_fault() {
        ApiFault::None => next.run(req).await,
        ApiFault::Latency(d) => {
            tokio::time::sleep(d).await;
            next.run(req).await
        }
        ApiFault::Timeout(d) => {
            // Done at UnionPay, but the answer comes too late to be read.
            let answer = next.run(req).await;
            tokio::time::sleep(d).await;
            answer
        }
        ApiFault::ServerError => (StatusCode::BAD_GATEWAY, "502 Bad Gateway").into_response(),
        // UnionPay has no HTTP rate-limit answer; it says it is busy.
        ApiFault::RateLimited => sim.reply(Err(Refusal::new("06", "系统繁忙，请稍后再试"))),
    }
}

/// A refusal in UnionPay's terms: `respCode` and `respMsg`.
pub(super) struct Refusal {
    code: &'static str,
    msg: String,
}

impl Refusal {
    pub(super) fn new(code: &'static str, msg: impl Into<String>) -> Self {
        Refusal {
            code,
            msg: msg.into(),
        }
    }
    /// 10: the message is malformed.
    pub(super) fn format(msg: impl Into<String>) -> Self {
        Self::new("10", msg)
    }
}

async fn add_merchant(State(sim): State<Arc<UnionpaySim>>, Json(m): Json<SimMerchant>) -> Response {
    match sim.register_merchant(m) {
        Ok(registered) => (StatusCode::CREATED, Json(registered)).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "code": "INVALID_PARAMETER", "message": e.to_string() })),
        )
            .into_response(),
    }
}

async fn platform(State(sim): State<Arc<UnionpaySim>>) -> Response {
    Json(sim.platform()).into_response()
}

async fn pay(State(sim): State<Arc<UnionpaySim>>, Json(req): Json<PayRequest>) -> Response {
    match sim.pay(req).await {
        Ok(outcome) => Json(outcome).into_response(),
        Err(e) => {
            let (status, code) = match &e {
                SimError::OrderNotFound => (StatusCode::NOT_FOUND, "34"),
                SimError::OrderExpired => (StatusCode::BAD_REQUEST, "ORDER_EXPIRED"),
                SimError::Ambiguous(_) | SimError::Invalid(_) => {
                    (StatusCode::BAD_REQUEST, "INVALID_PARAMETER")
                }
                SimError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR"),
            };
            (
                status,
                Json(json!({ "code": code, "message": e.to_string() })),
            )
                .into_response()
        }
    }
}

#[derive(Deserialize)]
struct RefundsQuery {
    out_trade_no: String,
    #[serde(default)]
    mer_id: Option<String>,
}

/// `GET /refunds?out_trade_no=pay_…[&mer_id=…]`: the refunds of a paid order.
async fn refunds(State(sim): State<Arc<UnionpaySim>>, Query(q): Query<RefundsQuery>) -> Response {
    match sim.refunds(&q.out_trade_no, q.mer_id.as_deref()) {
        Ok(list) => Json(list).into_response(),
        Err(e) => {
            let (status, code) = match &e {
                SimError::OrderNotFound => (StatusCode::NOT_FOUND, "34"),
                SimError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR"),
                _ => (StatusCode::BAD_REQUEST, "INVALID_PARAMETER"),
            };
            (
                status,
                Json(json!({ "code": code, "message": e.to_string() })),
            )
                .into_response()
        }
    }
}

/// The fields of a request: the form body, or the query string for a GET.
fn fields(uri: &axum::http::Uri, body: &[u8]) -> Result<Params, Refusal> {
    let raw = if body.is_empty() {
        uri.query().unwrap_or("").as_bytes()
    } else {
        body
    };
    sign::parse_form(raw).map_err(|e| Refusal::format(e.to_string()))
}

/// `frontTransReq.do`: the payer's browser posts the signed form; the
/// answer is the payment page. `/pay` plays the payer who pays on it.
async fn front(
    State(sim): State<Arc<UnionpaySim>>,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> Response {
    let result = fields(&uri, &body).and_then(|p| {
        sim.verified(&p)?;
        sim.expect(&p, "txnType", &[sign::TXN_CONSUME])?;
        sim.expect(&p, "txnSubType", &["01"])?;
        sim.expect(&p, "bizType", &["000201"])?;
        sim.expect(&p, "channelType", &["07", "08"])?;
        sim.new_order(Kind::Front, &p)
    });
    match result {
        Ok(order) => page(&order),
        Err(r) => html(
            StatusCode::BAD_REQUEST,
            format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>paymux UnionPay simulator</title></head>\
                 <body><h1>Transaction refused</h1><p>respCode {}: {}</p></body></html>",
                r.code,
                escape(&r.msg)
            ),
        ),
    }
}

/// `appTransReq.do`: the order for the UnionPay app SDK; answers a `tn`.
async fn app(
    State(sim): State<Arc<UnionpaySim>>,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> Response {
    let answer = fields(&uri, &body).and_then(|p| {
        sim.verified(&p)?;
        sim.expect(&p, "txnType", &[sign::TXN_CONSUME])?;
        sim.expect(&p, "txnSubType", &["01"])?;
        sim.expect(&p, "bizType", &["000201"])?;
        sim.expect(&p, "channelType", &["08"])?;
        let order = sim.new_order(Kind::App, &p)?;
        let mut a = sim.echo(&p);
        a.insert("tn".into(), order.handle.unwrap_or_default());
        Ok(a)
    });
    sim.reply(answer)
}

/// `backTransReq.do`: UnionPay QR (txnType 01, txnSubType 07, bizType
/// 000000), answering the `qrCode` the payer scans; and refunds (txnType
/// 04), whose notification is sent right after the answer.
async fn back(
    State(sim): State<Arc<UnionpaySim>>,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> Response {
    let mut notification = None;
    let answer = fields(&uri, &body).and_then(|p| {
        sim.verified(&p)?;
        sim.expect(&p, "txnType", &[sign::TXN_CONSUME, sign::TXN_REFUND])?;
        if p["txnType"] == sign::TXN_REFUND {
            let (answer, n) = sim.new_refund(&p)?;
            notification = n;
            return Ok(answer);
        }
        sim.expect(&p, "txnSubType", &["07"])?;
        sim.expect(&p, "bizType", &["000000"])?;
        sim.expect(&p, "channelType", &["08"])?;
        let order = sim.new_order(Kind::Qr, &p)?;
        let mut a = sim.echo(&p);
        a.insert("qrCode".into(), order.handle.unwrap_or_default());
        Ok(a)
    });
    let reply = sim.reply(answer);
    if let Some(n) = notification {
        let faults = sim.faults.clone();
        tokio::spawn(async move {
            faults.deliver_callbacks(vec![n]).await;
        });
    }
    reply
}

/// `queryTrans.do` (txnType 00): the order's state, by `orderId` + `txnTime`.
async fn query(
    State(sim): State<Arc<UnionpaySim>>,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> Response {
    let answer = fields(&uri, &body).and_then(|p| {
        sim.verified(&p)?;
        sim.expect(&p, "txnType", &[sign::TXN_QUERY])?;
        sim.expect(&p, "txnSubType", &["00"])?;
        let mer_id = p["merId"].clone();
        let order_id = sim.required(&p, "orderId")?;
        let txn_time = sim.required(&p, "txnTime")?;
        let order = lock(&sim.orders)
            .get(&(mer_id.clone(), order_id.to_string()))
            .filter(|o| o.txn_time == txn_time)
            .cloned();
        let Some(order) = order else {
            // A refund is queried by its own orderId and txnTime.
            let refund = sim
                .refund_query(&mer_id, order_id, txn_time)
                .ok_or_else(|| Refusal::new("34", "查无此交易"))?;
            let mut a = sim.echo(&p);
            a.extend(refund);
            a.insert("bizType".into(), p["bizType"].clone());
            return Ok(a);
        };
        let mut a = sim.echo(&p);
        match &order.paid {
            Some(payment) => {
                // Like UnionPay's answers: the original transaction's fields
                // (txnType 01, its txnSubType), under the query's bizType.
                a.extend(UnionpaySim::paid_fields(&order, payment));
                a.insert("bizType".into(), p["bizType"].clone());
                a.insert("origRespCode".into(), "00".into());
                a.insert("origRespMsg".into(), "成功[0000000]".into());
            }
            None => {
                // Known but not paid yet: the simulator reports it as
                // still in process, which clients must treat as unpaid.
                a.insert("txnAmt".into(), order.txn_amt.clone());
                a.insert("origRespCode".into(), "05".into());
                a.insert("origRespMsg".into(), "交易处理中".into());
            }
        }
        Ok(a)
    });
    sim.reply(answer)
}

impl UnionpaySim {
    /// Checks the common fields and the merchant's signature.
    pub(super) fn verified(&self, p: &Params) -> Result<(), Refusal> {
        self.expect(p, "version", &[sign::VERSION])?;
        self.expect(p, "signMethod", &[sign::SIGN_METHOD])?;
        self.expect(p, "accessType", &["0"])?;
        let mer_id = self.required(p, "merId")?;
        let merchant = self
            .merchant(mer_id)
            .ok_or_else(|| Refusal::new("10", format!("unknown merId {mer_id}")))?;
        let cert_id = self.required(p, "certId")?;
        if cert_id != merchant.cert_id {
            // 11: signature verification failed (the certificate is not the registered one).
            return Err(Refusal::new(
                "11",
                format!("certId {cert_id} is not the merchant's signing certificate"),
            ));
        }
        sign::verify(&merchant.key, p).map_err(|e| Refusal::new("11", e.to_string()))
    }

    pub(super) fn required<'a>(&self, p: &'a Params, name: &str) -> Result<&'a str, Refusal> {
        p.get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Refusal::new("13", format!("{name} is missing")))
    }

    pub(super) fn expect(&self, p: &Params, name: &str, allowed: &[&str]) -> Result<(), Refusal> {
        let v = self.required(p, name)?;
        if allowed.contains(&v) {
            Ok(())
        } else {
            Err(Refusal::format(format!("{name}={v} is not accepted here")))
        }
    }

    /// Checks the order fields and records the order; the same order sent
    /// again gets the same answer, a different one with the same orderId is
    /// a duplicate (12).
    fn new_order(&self, kind: Kind, p: &Params) -> Result<Order, Refusal> {
        let order_id = self.required(p, "orderId")?;
        if !(8..=40).contains(&order_id.len())
            || !order_id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(Refusal::format("orderId must be 8-40 letters and digits"));
        }
        let txn_time = self.required(p, "txnTime")?;
        sign::parse_acp_time(txn_time).map_err(|e| Refusal::format(e.to_string()))?;
        let txn_amt = self.required(p, "txnAmt")?;
        if sign::txn_amt_to_fen(txn_amt).map_err(|e| Refusal::format(e.to_string()))? <= 0 {
            return Err(Refusal::format("txnAmt must be positive"));
        }
        self.expect(p, "currencyCode", &[sign::CURRENCY_CNY])?;
        let pay_timeout = match p.get("payTimeout") {
            Some(t) => {
                sign::parse_acp_time(t).map_err(|e| Refusal::format(e.to_string()))?;
                Some(t.clone())
            }
            None => None,
        };
        let mer_id = p["merId"].clone();
        let mut orders = lock(&self.orders);
        let key = (mer_id.clone(), order_id.to_string());
        if let Some(existing) = orders.get(&key) {
            if existing.kind == kind && existing.txn_amt == txn_amt && existing.txn_time == txn_time
            {
                return Ok(existing.clone());
            }
            return Err(Refusal::new("12", "重复交易 (orderId already used)"));
        }
        if orders.len() >= MAX_ORDERS {
            return Err(Refusal::new("05", "too many orders in the simulator"));
        }
        let handle = match kind {
            Kind::Front => None,
            Kind::App => Some(self.unique(21)),
            Kind::Qr => Some(format!("https://qr.95516.com/00010000/{}", self.unique(20))),
        };
        let order = Order {
            kind,
            mer_id,
            order_id: order_id.to_string(),
            txn_time: txn_time.to_string(),
            txn_amt: txn_amt.to_string(),
            txn_sub_type: p["txnSubType"].clone(),
            biz_type: p["bizType"].clone(),
            channel_type: p["channelType"].clone(),
            back_url: p.get("backUrl").filter(|u| !u.is_empty()).cloned(),
            pay_timeout,
            handle,
            paid: None,
        };
        orders.insert(key, order.clone());
        Ok(order)
    }

    /// The request fields an answer repeats.
    pub(super) fn echo(&self, p: &Params) -> Params {
        let mut a = Params::new();
        for k in [
            "version",
            "encoding",
            "signMethod",
            "accessType",
            "bizType",
            "merId",
            "orderId",
            "txnTime",
            "txnType",
            "txnSubType",
            "txnAmt",
            "currencyCode",
        ] {
            if let Some(v) = p.get(k) {
                a.insert(k.to_string(), v.clone());
            }
        }
        a
    }

    /// A signed `k=v&…` answer: the fields with `respCode 00`, or the refusal.
    pub(super) fn reply(&self, answer: Result<Params, Refusal>) -> Response {
        let mut a = match answer {
            Ok(mut a) => {
                a.insert("respCode".into(), "00".into());
                a.insert("respMsg".into(), "成功[0000000]".into());
                a
            }
            Err(r) => {
                let mut a = Params::new();
                a.insert("version".into(), sign::VERSION.into());
                a.insert("signMethod".into(), sign::SIGN_METHOD.into());
                a.insert("respCode".into(), r.code.into());
                a.insert("respMsg".into(), r.msg.replace('&', " "));
                a
            }
        };
        a.insert("encoding".into(), "utf-8".into());
        let body = match self.sign_out(a, None) {
            Ok(signed) => sign::encode_answer(&signed),
            Err(e) => {
                tracing::error!(error = %e, "simulator could not sign an answer");
                return (StatusCode::INTERNAL_SERVER_ERROR, "signing failed").into_response();
            }
        };
        let mut resp = (StatusCode::OK, body).into_response();
        resp.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain;charset=utf-8"),
        );
        resp
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn html(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html;charset=utf-8"),
    );
    resp
}

/// The page the payer's browser lands on: the order as UnionPay's payment
/// page would show it.
fn page(order: &Order) -> Response {
    let fen = sign::txn_amt_to_fen(&order.txn_amt).unwrap_or(0);
    html(
        StatusCode::OK,
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>paymux UnionPay simulator</title></head>\
             <body><h1>paymux UnionPay simulator payment page</h1>\
             <p>merId <code>{}</code> ({} channel)</p><p>¥{}.{:02}</p>\
             <p>orderId: <code>{}</code></p>\
             <p>POST /sim/unionpay/pay {{\"out_trade_no\": \"{}\"}} pays it.</p></body></html>",
            escape(&order.mer_id),
            if order.channel_type == "07" { "PC" } else { "mobile" },
            fen / 100,
            fen % 100,
            escape(&order.order_id),
            escape(&sign::out_trade_no_of(&order.order_id)),
        ),
    )
}
