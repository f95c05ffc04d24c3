//! The simulator's HTTP surface: Alipay's `/gateway.do` plus control endpoints.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use paymux_channels::alipay::sign::{self, Params};
use serde_json::{json, Value};

use crate::faults::ApiFault;

use super::{
    lock, AlipaySim, App, Order, PayRequest, SimApp, SimError, TradeStatus, CONFIRM_SUFFIX,
    MAX_ORDERS,
};

/// The simulator's routes, relative to where they are mounted (paymux nests
/// them under `/sim/alipay`). The router carries its own state, so it can be
/// nested into an application router of any state type.
pub fn router<S>(sim: Arc<AlipaySim>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/merchants", post(add_app))
        .route("/platform", get(platform))
        .route("/pay", post(pay))
        .route("/gateway.do", get(gateway).post(gateway))
        .route("/refunds", get(list_refunds))
        .route("/bills/download", get(download_bill))
        .with_state(sim.clone())
        .merge(crate::faults::routes::router(sim.faults.clone()))
}

/// A refusal in Alipay's shape: `code` / `msg` plus `sub_code` / `sub_msg`.
pub(super) struct Refusal {
    code: &'static str,
    msg: &'static str,
    sub_code: &'static str,
    sub_msg: String,
}

impl Refusal {
    pub(super) fn args(sub_code: &'static str, sub_msg: impl Into<String>) -> Self {
        Refusal {
            code: "40002",
            msg: "Invalid Arguments",
            sub_code,
            sub_msg: sub_msg.into(),
        }
    }
    pub(super) fn business(sub_code: &'static str, sub_msg: impl Into<String>) -> Self {
        Refusal {
            code: "40004",
            msg: "Business Failed",
            sub_code,
            sub_msg: sub_msg.into(),
        }
    }
    pub(super) fn system(sub_msg: impl Into<String>) -> Self {
        Refusal {
            code: "20000",
            msg: "Service Currently Unavailable",
            sub_code: "isp.unknow-error",
            sub_msg: sub_msg.into(),
        }
    }
    fn node(&self) -> Value {
        json!({
            "code": self.code,
            "msg": self.msg,
            "sub_code": self.sub_code,
            "sub_msg": self.sub_msg,
        })
    }
}

impl From<SimError> for Refusal {
    fn from(e: SimError) -> Self {
        Refusal::system(e.to_string())
    }
}

pub(super) fn success(mut fields: Value) -> Value {
    if let Some(o) = fields.as_object_mut() {
        o.insert("code".into(), "10000".into());
        o.insert("msg".into(), "Success".into());
    }
    fields
}

async fn add_app(State(sim): State<Arc<AlipaySim>>, Json(app): Json<SimApp>) -> Response {
    match sim.register_app(app) {
        Ok(registered) => (StatusCode::CREATED, Json(registered)).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "code": "INVALID_PARAMETER", "message": e.to_string() })),
        )
            .into_response(),
    }
}

async fn platform(State(sim): State<Arc<AlipaySim>>) -> Response {
    Json(sim.platform()).into_response()
}

async fn pay(State(sim): State<Arc<AlipaySim>>, Json(req): Json<PayRequest>) -> Response {
    match sim.pay(req).await {
        Ok(outcome) => Json(outcome).into_response(),
        Err(e) => {
            let (status, code) = match &e {
                SimError::OrderNotFound => (StatusCode::NOT_FOUND, "ACQ.TRADE_NOT_EXIST"),
                SimError::OrderClosed => (StatusCode::BAD_REQUEST, "ACQ.TRADE_HAS_CLOSE"),
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

/// `/gateway.do`: parameters from the query string and, for a form POST,
/// the body (the SDKs put the common ones in the query and `biz_content` in
/// the body, or everything in one of them).
async fn gateway(
    State(sim): State<Arc<AlipaySim>>,
    OriginalUri(uri): OriginalUri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    // Where this simulator's files are served: beside its gateway.
    let files_base = crate::request::base_url(&uri, &headers, "/gateway.do");
    let mut params = match sign::parse_form(uri.query().unwrap_or("").as_bytes()) {
        Ok(p) => p,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match sign::parse_form(&body) {
        Ok(form) => {
            for (k, v) in form {
                if params.insert(k.clone(), v).is_some() {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!("parameter {k} given twice"),
                    );
                }
            }
        }
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    }
    let method = params.get("method").cloned().unwrap_or_default();
    let mut late_by = None;
    match sim.faults.api_fault() {
        ApiFault::None => {}
        ApiFault::Latency(d) => tokio::time::sleep(d).await,
        // Done at the channel, but the answer comes too late to be read.
        ApiFault::Timeout(d) => late_by = Some(d),
        ApiFault::ServerError => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable".into(),
            )
        }
        ApiFault::RateLimited => {
            // The gateway's call-limit answer: code 40005, signed like any answer.
            let node = Refusal {
                code: "40005",
                msg: "Call Limited",
                sub_code: "isv.app-call-limited",
                sub_msg: "应用调用次数超限，包含调用频率超限".into(),
            }
            .node();
            let body = sim.answer(&method, &node, params.contains_key("app_cert_sn"), None);
            return gateway_answer(body);
        }
    }
    let (answer, notify) = gateway_call(&sim, &method, &params, &files_base);
    if let Some(notify) = notify {
        // After the answer, like Alipay, and subject to the callback faults.
        let sim = sim.clone();
        tokio::spawn(async move {
            sim.faults.deliver_callbacks(vec![notify]).await;
        });
    }
    if let Some(d) = late_by {
        tokio::time::sleep(d).await;
    }
    answer
}

/// Runs one gateway call and renders its answer; with a notify to send after it.
fn gateway_call(
    sim: &AlipaySim,
    method: &str,
    params: &Params,
    files_base: &str,
) -> (Response, Option<reqwest::RequestBuilder>) {
    let (node, notify) = match sim.handle(method, params, files_base) {
        Ok(Handled::Node(node)) => (node, None),
        Ok(Handled::NodeThen(node, notify)) => (node, notify.map(|n| *n)),
        Ok(Handled::Cashier(order)) => return (cashier(&order), None),
        Err(r) => (r.node(), None),
    };
    let body = if method.is_empty() {
        format!("{{\"error_response\":{node}}}")
    } else {
        // Answers to an encrypted request are encrypted with the app's key.
        let encrypt_key = params
            .get("encrypt_type")
            .and(params.get("app_id"))
            .and_then(|a| sim.app(a))
            .and_then(|a| a.info.encrypt_key.clone());
        sim.answer(
            method,
            &node,
            params.contains_key("app_cert_sn"),
            encrypt_key.as_deref(),
        )
    };
    (gateway_answer(body), notify)
}

fn gateway_answer(body: String) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html;charset=utf-8"),
    );
    resp
}

fn text(status: StatusCode, message: String) -> Response {
    (status, message).into_response()
}

/// The page a browser lands on for WAP / PC payments: the order as Alipay's
/// cashier would show it. `/pay` plays the payer who confirms here.
fn cashier(order: &Order) -> Response {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>paymux Alipay simulator</title></head>\
         <body><h1>paymux Alipay simulator cashier</h1><p>{}</p><p>¥{}</p>\
         <p>out_trade_no: <code>{}</code></p>\
         <p>POST /sim/alipay/pay {{\"out_trade_no\": \"{}\"}} pays it.</p></body></html>",
        escape(&order.subject),
        escape(&order.total_amount),
        escape(&order.out_trade_no),
        escape(&order.out_trade_no),
    );
    let mut resp = (StatusCode::OK, html).into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html;charset=utf-8"),
    );
    resp
}

pub(crate) enum Handled {
    Node(Value),
    /// An answer, then a notify to send once it is out.
    NodeThen(Value, Option<Box<reqwest::RequestBuilder>>),
    Cashier(Box<Order>),
}

impl AlipaySim {
    /// Checks the common parameters and the signature, then runs the method.
    fn handle(&self, method: &str, p: &Params, files_base: &str) -> Result<Handled, Refusal> {
        let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
        if method.is_empty() {
            return Err(Refusal::args("isv.missing-method", "缺少方法名参数"));
        }
        let app_id = get("app_id");
        if app_id.is_empty() {
            return Err(Refusal::args("isv.missing-app-id", "缺少AppID参数"));
        }
        let app = self
            .app(app_id)
            .ok_or_else(|| Refusal::args("isv.invalid-app-id", "无效的AppID参数"))?;
        if get("sign").is_empty() {
            return Err(Refusal::args("isv.missing-signature", "缺少签名参数"));
        }
        if get("sign_type") != sign::SIGN_TYPE {
            return Err(Refusal::args(
                "isv.invalid-signature-type",
                "无效的签名类型参数",
            ));
        }
        if !get("charset").eq_ignore_ascii_case("utf-8") {
            return Err(Refusal::args("isv.invalid-charset", "字符集错误"));
        }
        if sign::parse_alipay_time(get("timestamp")).is_err() {
            return Err(Refusal::args("isv.invalid-timestamp", "非法的时间戳参数"));
        }
        match (&app.app_cert_sn, p.get("app_cert_sn")) {
            (None, None) => {}
            (Some(ours), Some(theirs)) if ours == theirs => {
                if get("alipay_root_cert_sn") != self.platform().alipay_root_cert_sn {
                    return Err(Refusal::args(
                        "isv.alipay-root-cert-sn-error",
                        "支付宝根证书SN错误",
                    ));
                }
            }
            (Some(_), None) => {
                return Err(Refusal::args(
                    "isv.missing-app-cert-sn",
                    "缺少应用公钥证书序列号",
                ))
            }
            _ => {
                return Err(Refusal::args(
                    "isv.app-cert-sn-error",
                    "应用公钥证书序列号不匹配",
                ))
            }
        }
        sign::verify_request(&app.key, p)
            .map_err(|_| Refusal::args("isv.invalid-signature", "验签出错"))?;
        let biz_text = match p.get("encrypt_type").map(String::as_str) {
            None => get("biz_content").to_string(),
            Some(sign::ENCRYPT_TYPE) => {
                let key = app.info.encrypt_key.as_deref().ok_or_else(|| {
                    Refusal::args("isv.invalid-encrypt-type", "应用未设置接口内容加密方式")
                })?;
                sign::aes_decrypt(key, get("biz_content"))
                    .map_err(|_| Refusal::args("isv.decryption-error", "解密出错"))?
            }
            Some(_) => {
                return Err(Refusal::args(
                    "isv.invalid-encrypt-type",
                    "无效的加密类型参数",
                ))
            }
        };
        let biz: Value = serde_json::from_str(&biz_text)
            .map_err(|_| Refusal::args("isv.invalid-biz-content", "biz_content 不是 JSON"))?;
        let notify_url = p.get("notify_url").filter(|u| !u.is_empty()).cloned();
        match method {
            "alipay.trade.create" => self.create(&app, method, &biz, notify_url),
            "alipay.trade.precreate" => self.precreate(&app, method, &biz, notify_url),
            "alipay.trade.app.pay" => self
                .new_order(&app, method, &biz, notify_url)
                .map(|o| Handled::Node(success(order_fields(&o, &app)))),
            "alipay.trade.wap.pay" | "alipay.trade.page.pay" => self
                .new_order(&app, method, &biz, notify_url)
                .map(|o| Handled::Cashier(Box::new(o))),
            "alipay.trade.pay" => self.barcode(&app, method, &biz, notify_url),
            "alipay.trade.query" => self.query(&app, &biz),
            "alipay.trade.close" => self.close(&app, &biz),
            "alipay.trade.cancel" => self.cancel(&app, &biz),
            "alipay.trade.refund" => self
                .refund(&app, &biz)
                .map(|(node, notify)| Handled::NodeThen(node, notify.map(Box::new))),
            "alipay.trade.fastpay.refund.query" => self.refund_query(&app, &biz).map(Handled::Node),
            "alipay.data.dataservice.bill.downloadurl.query" => {
                self.bill_link(&app, &biz, files_base).map(Handled::Node)
            }
            _ => Err(Refusal::args("isv.invalid-method", "不存在的方法名")),
        }
    }

    /// Creates the order, or returns the same one for a repeat of the same
    /// request (a retried create must not make a second trade).
    fn new_order(
        &self,
        app: &App,
        method: &str,
        biz: &Value,
        notify_url: Option<String>,
    ) -> Result<Order, Refusal> {
        let field = |k: &str| biz.get(k).and_then(Value::as_str).unwrap_or("");
        let out_trade_no = field("out_trade_no");
        if out_trade_no.is_empty() || out_trade_no.len() > 64 {
            return Err(Refusal::args(
                "isv.missing-out-trade-no",
                "out_trade_no 无效",
            ));
        }
        let total_amount = field("total_amount");
        match sign::yuan_to_minor(total_amount) {
            Ok(fen) if fen > 0 => {}
            _ => return Err(Refusal::args("isv.invalid-total-amount", "订单金额无效")),
        }
        let subject = field("subject");
        if subject.is_empty() {
            return Err(Refusal::args("isv.missing-subject", "缺少订单标题"));
        }
        let mut orders = lock(&self.orders);
        let key = (app.info.app_id.clone(), out_trade_no.to_string());
        if let Some(existing) = orders.get(&key) {
            if existing.total_amount != total_amount || existing.method != method {
                return Err(Refusal::business(
                    "ACQ.CONTEXT_INCONSISTENT",
                    "交易信息被篡改",
                ));
            }
            return match existing.status {
                TradeStatus::Success if method == "alipay.trade.pay" => Ok(existing.clone()),
                TradeStatus::Success => {
                    Err(Refusal::business("ACQ.TRADE_HAS_SUCCESS", "交易已被支付"))
                }
                TradeStatus::Closed => {
                    Err(Refusal::business("ACQ.TRADE_HAS_CLOSE", "交易已经关闭"))
                }
                TradeStatus::WaitBuyerPay => Ok(existing.clone()),
            };
        }
        if orders.len() >= MAX_ORDERS {
            return Err(Refusal::system("too many orders"));
        }
        let buyer_id = biz
            .get("buyer_id")
            .and_then(Value::as_str)
            .filter(|b| !b.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| format!("2088{}", self.unique(12)));
        let order = Order {
            app_id: app.info.app_id.clone(),
            method: method.to_string(),
            out_trade_no: out_trade_no.to_string(),
            total_amount: total_amount.to_string(),
            subject: subject.to_string(),
            notify_url,
            trade_no: format!("2026{}", self.unique(24)),
            buyer_id,
            status: TradeStatus::WaitBuyerPay,
            gmt_create: self.now_text(),
            gmt_payment: None,
            notify_id: None,
        };
        orders.insert(key, order.clone());
        Ok(order)
    }

    fn create(
        &self,
        app: &App,
        method: &str,
        biz: &Value,
        notify_url: Option<String>,
    ) -> Result<Handled, Refusal> {
        let has = |k: &str| {
            biz.get(k)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
        };
        if !has("buyer_id") && !has("buyer_open_id") {
            return Err(Refusal::args(
                "isv.missing-buyer-id",
                "buyer_id 和 buyer_open_id 不能同时为空",
            ));
        }
        let order = self.new_order(app, method, biz, notify_url)?;
        Ok(Handled::Node(success(json!({
            "out_trade_no": order.out_trade_no,
            "trade_no": order.trade_no,
        }))))
    }

    fn precreate(
        &self,
        app: &App,
        method: &str,
        biz: &Value,
        notify_url: Option<String>,
    ) -> Result<Handled, Refusal> {
        let order = self.new_order(app, method, biz, notify_url)?;
        Ok(Handled::Node(success(json!({
            "out_trade_no": order.out_trade_no,
            "qr_code": format!("https://qr.alipay.com/bax{}", &order.trade_no[4..]),
        }))))
    }

    fn barcode(
        &self,
        app: &App,
        method: &str,
        biz: &Value,
        notify_url: Option<String>,
    ) -> Result<Handled, Refusal> {
        let auth_code = biz.get("auth_code").and_then(Value::as_str).unwrap_or("");
        if auth_code.len() < 16 || !auth_code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Refusal::business(
                "ACQ.PAYMENT_AUTH_CODE_INVALID",
                "支付失败，获取顾客账户信息失败，请顾客刷新付款码后重新收款",
            ));
        }
        if biz.get("scene").and_then(Value::as_str) != Some("bar_code") {
            return Err(Refusal::args("isv.invalid-scene", "scene 必须为 bar_code"));
        }
        let order = self.new_order(app, method, biz, notify_url)?;
        let paid = {
            let mut orders = lock(&self.orders);
            let key = (order.app_id.clone(), order.out_trade_no.clone());
            let stored = orders
                .get_mut(&key)
                .ok_or_else(|| Refusal::system("order vanished"))?;
            if stored.status == TradeStatus::WaitBuyerPay && !auth_code.ends_with(CONFIRM_SUFFIX) {
                self.mark_paid(stored);
            }
            stored.clone()
        };
        let mut fields = order_fields(&paid, app);
        if paid.status == TradeStatus::Success {
            fields["gmt_payment"] = paid.gmt_payment.clone().unwrap_or_default().into();
            fields["buyer_user_id"] = paid.buyer_id.clone().into();
            Ok(Handled::Node(success(fields)))
        } else {
            // The payer must confirm on the phone: "processing".
            fields["code"] = "10003".into();
            fields["msg"] = " order success pay inprocess".into();
            Ok(Handled::Node(fields))
        }
    }

    pub(super) fn find(&self, app: &App, biz: &Value) -> Result<(String, String), Refusal> {
        let out_trade_no = biz
            .get("out_trade_no")
            .and_then(Value::as_str)
            .unwrap_or("");
        if out_trade_no.is_empty() {
            return Err(Refusal::args(
                "isv.missing-out-trade-no",
                "缺少 out_trade_no",
            ));
        }
        let key = (app.info.app_id.clone(), out_trade_no.to_string());
        if !lock(&self.orders).contains_key(&key) {
            return Err(Refusal::business("ACQ.TRADE_NOT_EXIST", "交易不存在"));
        }
        Ok(key)
    }

    fn query(&self, app: &App, biz: &Value) -> Result<Handled, Refusal> {
        let key = self.find(app, biz)?;
        let order = lock(&self.orders)
            .get(&key)
            .cloned()
            .ok_or_else(|| Refusal::business("ACQ.TRADE_NOT_EXIST", "交易不存在"))?;
        let mut fields = order_fields(&order, app);
        fields["trade_status"] = order.status.as_str().into();
        fields["buyer_user_id"] = order.buyer_id.clone().into();
        if let Some(t) = &order.gmt_payment {
            fields["send_pay_date"] = t.clone().into();
            fields["buyer_pay_amount"] = order.total_amount.clone().into();
        }
        Ok(Handled::Node(success(fields)))
    }

    fn close(&self, app: &App, biz: &Value) -> Result<Handled, Refusal> {
        let key = self.find(app, biz)?;
        let mut orders = lock(&self.orders);
        let order = orders
            .get_mut(&key)
            .ok_or_else(|| Refusal::business("ACQ.TRADE_NOT_EXIST", "交易不存在"))?;
        if order.status == TradeStatus::Success {
            return Err(Refusal::business(
                "ACQ.TRADE_STATUS_ERROR",
                "交易状态不合法",
            ));
        }
        order.status = TradeStatus::Closed;
        Ok(Handled::Node(success(json!({
            "out_trade_no": order.out_trade_no,
            "trade_no": order.trade_no,
        }))))
    }

    /// Closes an unpaid trade; a paid one is refunded and closed.
    fn cancel(&self, app: &App, biz: &Value) -> Result<Handled, Refusal> {
        let key = self.find(app, biz)?;
        let mut orders = lock(&self.orders);
        let order = orders
            .get_mut(&key)
            .ok_or_else(|| Refusal::business("ACQ.TRADE_NOT_EXIST", "交易不存在"))?;
        let action = match order.status {
            TradeStatus::Success => "refund",
            _ => "close",
        };
        order.status = TradeStatus::Closed;
        Ok(Handled::Node(success(json!({
            "out_trade_no": order.out_trade_no,
            "trade_no": order.trade_no,
            "retry_flag": "N",
            "action": action,
        }))))
    }
}

fn order_fields(order: &Order, app: &App) -> Value {
    json!({
        "out_trade_no": order.out_trade_no,
        "trade_no": order.trade_no,
        "total_amount": order.total_amount,
        "seller_id": app.seller_id,
    })
}

#[derive(serde::Deserialize)]
struct RefundsQuery {
    out_trade_no: String,
}

/// `GET /refunds?out_trade_no=`: the simulator's books for one trade.
async fn list_refunds(
    State(sim): State<Arc<AlipaySim>>,
    axum::extract::Query(q): axum::extract::Query<RefundsQuery>,
) -> Response {
    Json(sim.refunds(&q.out_trade_no)).into_response()
}

/// `GET /bills/download?…&token=`: a bill's zip, like Alipay's file
/// servers: no signature, the token is the key.
async fn download_bill(
    State(sim): State<Arc<AlipaySim>>,
    OriginalUri(uri): OriginalUri,
) -> Response {
    let token = crate::request::query_param(&uri, "token").unwrap_or_default();
    // Like Alipay's file servers: the token is the key, no signature.
    match sim.bills.get(&token, None) {
        Some(zip) => ([(axum::http::header::CONTENT_TYPE, "application/zip")], zip).into_response(),
        None => text(StatusCode::NOT_FOUND, "no such bill".into()),
    }
}
