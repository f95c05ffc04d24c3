//! The simulator's HTTP surface: WeChat's `/v3` API plus control endpoints.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::DateTime;
use paymux_channels::wechat::sign::{self, Authorization};
use paymux_channels::wechat::to_wechat_time;
use paymux_channels::wechat::types::{
    headers, CertificateEntry, CertificatesResponse, CloseBody, EncryptedResource, ErrorBody,
    PrepayBody, PrepayResponse, RefundBody, AEAD_AES_256_GCM,
};

use crate::faults::ApiFault;

use super::{
    lock, Merchant, Order, OrderState, PayRequest, SimError, SimMerchant, TradeType, WechatSim,
    MAX_ORDERS,
};

/// The simulator's routes, relative to where they are mounted (paymux nests
/// them under `/sim/wechat`). Request signatures are checked against the
/// original request URI, so any mount point works as long as the client's
/// base URL includes it. The router carries its own state, so it can be
/// nested into an application router of any state type.
pub fn router<S>(sim: Arc<WechatSim>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let control = Router::new()
        .route("/merchants", post(add_merchant))
        .route("/merchants/{mchid}", get(show_merchant))
        .route("/platform", get(platform))
        .route("/pay", post(pay))
        .route("/refunds", get(list_refunds))
        .with_state(sim.clone())
        .merge(crate::faults::routes::router(sim.faults.clone()))
        .merge(super::web_auth::router(sim.web_auth.clone()));
    let api = Router::new()
        .route("/v3/certificates", get(certificates))
        .route("/v3/pay/transactions/jsapi", post(prepay_jsapi))
        .route("/v3/pay/transactions/native", post(prepay_native))
        .route("/v3/pay/transactions/h5", post(prepay_h5))
        .route("/v3/pay/transactions/app", post(prepay_app))
        .route(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}",
            get(query),
        )
        .route(
            "/v3/pay/transactions/id/{transaction_id}",
            get(query_by_transaction_id),
        )
        .route(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}/close",
            post(close),
        )
        .route("/v3/bill/tradebill", get(trade_bill))
        .route("/v3/billdownload/file", get(download_bill))
        .route("/v3/refund/domestic/refunds", post(create_refund))
        .route(
            "/v3/refund/domestic/refunds/{out_refund_no}",
            get(query_refund),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            inject_faults,
        ))
        .with_state(sim);
    control.merge(api)
}

/// Applies the configured faults to a `/v3` call, in WeChat's formats: a
/// 500 `SYSTEM_ERROR`, a 429 `FREQUENCY_LIMITED`, a late answer.
async fn inject_faults(
    State(sim): State<Arc<WechatSim>>,
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
            // Done at the channel, but the answer comes too late to be read.
            let answer = next.run(req).await;
            tokio::time::sleep(d).await;
            answer
        }
        ApiFault::ServerError => sim.respond(Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SYSTEM_ERROR",
            "系统错误",
        ))),
        ApiFault::RateLimited => sim.respond(Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "FREQUENCY_LIMITED",
            "频率超限",
        ))),
    }
}

/// An error answer in WeChat's format.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    fn sign(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "SIGN_ERROR", message)
    }
    fn param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "PARAM_ERROR", message)
    }
    fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在")
    }
}

impl From<SimError> for ApiError {
    fn from(e: SimError) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SYSTEM_ERROR",
            e.to_string(),
        )
    }
}

type ApiResult = Result<(StatusCode, Vec<u8>), ApiError>;

impl WechatSim {
    /// Answers like WeChat: JSON body (or none), signed with the platform key.
    fn respond(&self, result: ApiResult) -> Response {
        let (status, body) = match result {
            Ok(ok) => ok,
            Err(e) => {
                let body = ErrorBody {
                    code: e.code.to_string(),
                    message: e.message,
                    detail: None,
                };
                (e.status, serde_json::to_vec(&body).unwrap_or_default())
            }
        };
        let signed = self.sign_body(self.now().timestamp(), &body);
        // A plain body: no content type of its own for an empty (204) answer.
        let mut resp = Response::new(axum::body::Body::from(body.clone()));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        if !body.is_empty() {
            h.insert(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
        }
        let mut put = |name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(name, v);
            }
        };
        put(headers::REQUEST_ID, &self.request_id());
        match signed {
            Ok((ts, nonce, sig)) => {
                put(headers::TIMESTAMP, &ts);
                put(headers::NONCE, &nonce);
                put(headers::SERIAL, self.platform_serial());
                put(headers::SIGNATURE, &sig);
                put(headers::SIGNATURE_TYPE, sign::SCHEMA);
            }
            Err(e) => tracing::error!(error = %e, "simulator could not sign an answer"),
        }
        resp
    }

    /// Checks a `/v3` request's Authorization: known merchant, its
    /// certificate serial, a fresh timestamp and a signature over
    /// `METHOD\nPATH?QUERY\nTS\nNONCE\nBODY\n` with the path as requested.
    fn authenticate(
        &self,
        method: &Method,
        uri: &Uri,
        hdrs: &HeaderMap,
        body: &[u8],
    ) -> Result<Arc<Merchant>, ApiError> {
        let value = hdrs
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::sign("缺少 Authorization 请求头"))?;
        let auth = Authorization::parse(value).map_err(|e| ApiError::sign(e.to_string()))?;
        let merchant = self
            .merchant(&auth.mchid)
            .ok_or_else(|| ApiError::sign(format!("商户 {} 未注册", auth.mchid)))?;
        if !auth
            .serial_no
            .eq_ignore_ascii_case(&merchant.info.serial_no)
        {
            return Err(ApiError::sign("商户证书序列号有误"));
        }
        let ts: i64 = auth
            .timestamp
            .parse()
            .map_err(|_| ApiError::sign("timestamp 格式错误"))?;
        if (self.now().timestamp() - ts).abs() > sign::MAX_CLOCK_SKEW_SECS {
            return Err(ApiError::sign("请求已过期或时间戳不正确"));
        }
        let canonical = uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or_else(|| uri.path());
        let message = sign::request_message(method.as_str(), canonical, ts, &auth.nonce_str, body);
        merchant
            .key
            .verify_sha256(&message, &auth.signature)
            .map_err(|_| ApiError::sign("签名错误"))?;
        Ok(merchant)
    }
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> ApiResult {
    serde_json::to_vec(value)
        .map(|b| (status, b))
        .map_err(|e| ApiError::from(SimError::Internal(e.to_string())))
}

async fn add_merchant(State(sim): State<Arc<WechatSim>>, Json(m): Json<SimMerchant>) -> Response {
    let mchid = m.mchid.clone();
    match sim.try_register_merchant(m) {
        Ok(()) => (
            StatusCode::CREATED,
            Json(serde_json::json!({ "mchid": mchid })),
        )
            .into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "code": "PARAM_ERROR", "message": e.to_string() })),
        )
            .into_response(),
    }
}

/// A registered merchant as the simulator knows it: its number, its
/// certificate serial and its public key (to check a `paySign` by hand).
/// Never the APIv3 key.
async fn show_merchant(State(sim): State<Arc<WechatSim>>, Path(mchid): Path<String>) -> Response {
    match sim.merchant(&mchid) {
        Some(m) => Json(serde_json::json!({
            "mchid": m.info.mchid,
            "serial_no": m.info.serial_no,
            "public_key_pem": m.info.public_key_pem,
        }))
        .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(
                serde_json::json!({ "code": "RESOURCE_NOT_EXISTS", "message": "no such merchant" }),
            ),
        )
            .into_response(),
    }
}

async fn platform(State(sim): State<Arc<WechatSim>>) -> Response {
    Json(sim.platform()).into_response()
}

async fn pay(State(sim): State<Arc<WechatSim>>, Json(req): Json<PayRequest>) -> Response {
    match sim.pay(req).await {
        Ok(outcome) => Json(outcome).into_response(),
        Err(e) => {
            let (status, code) = match &e {
                SimError::OrderNotFound => (StatusCode::NOT_FOUND, "ORDER_NOT_EXIST"),
                SimError::OrderClosed => (StatusCode::BAD_REQUEST, "ORDER_CLOSED"),
                SimError::Ambiguous(_) | SimError::Invalid(_) => {
                    (StatusCode::BAD_REQUEST, "PARAM_ERROR")
                }
                SimError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR"),
            };
            (
                status,
                Json(serde_json::json!({ "code": code, "message": e.to_string() })),
            )
                .into_response()
        }
    }
}

async fn certificates(
    State(sim): State<Arc<WechatSim>>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    hdrs: HeaderMap,
    body: Bytes,
) -> Response {
    let result = (|| {
        let merchant = sim.authenticate(&method, &uri, &hdrs, &body)?;
        let platform = sim.platform();
        let nonce = sign::random_nonce(12);
        let ciphertext = sign::encrypt_resource(
            merchant.info.apiv3_key.as_bytes(),
            &nonce,
            "certificate",
            platform.certificate_pem.as_bytes(),
        )
        .map_err(|e| ApiError::from(SimError::from(e)))?;
        let cert = paymux_channels::keys::Certificate::from_pem(&platform.certificate_pem)
            .map_err(|e| ApiError::from(SimError::from(e)))?;
        let entry = CertificateEntry {
            serial_no: platform.serial_no.clone(),
            effective_time: to_wechat_time(cert.not_before),
            expire_time: to_wechat_time(cert.not_after),
            encrypt_certificate: EncryptedResource {
                algorithm: AEAD_AES_256_GCM.into(),
                ciphertext,
                associated_data: Some("certificate".into()),
                original_type: None,
                nonce,
            },
        };
        json(StatusCode::OK, &CertificatesResponse { data: vec![entry] })
    })();
    sim.respond(result)
}

macro_rules! prepay_handler {
    ($name:ident, $kind:expr) => {
        async fn $name(
            State(sim): State<Arc<WechatSim>>,
            method: Method,
            OriginalUri(uri): OriginalUri,
            hdrs: HeaderMap,
            body: Bytes,
        ) -> Response {
            let result = prepay(&sim, $kind, &method, &uri, &hdrs, &body);
            sim.respond(result)
        }
    };
}

prepay_handler!(prepay_jsapi, TradeType::Jsapi);
prepay_handler!(prepay_native, TradeType::Native);
prepay_handler!(prepay_h5, TradeType::H5);
prepay_handler!(prepay_app, TradeType::App);

/// WeChat's out_trade_no alphabet: letters, digits, `_ - | *`.
fn valid_out_trade_no(s: &str) -> bool {
    (6..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'|' | b'*'))
}

fn validate(kind: TradeType, b: &PrepayBody) -> Result<(), ApiError> {
    if b.appid.is_empty() || b.appid.len() > 32 {
        return Err(ApiError::param("appid 长度应为 1-32"));
    }
    let desc_len = b.description.chars().count();
    if desc_len == 0 || desc_len > 127 {
        return Err(ApiError::param("description 长度应为 1-127"));
    }
    if !valid_out_trade_no(&b.out_trade_no) {
        return Err(ApiError::param(
            "out_trade_no 应为 6-32 位数字、大小写字母、_-|*",
        ));
    }
    if !(b.notify_url.starts_with("https://") || b.notify_url.starts_with("http://"))
        || b.notify_url.len() > 255
    {
        return Err(ApiError::param("notify_url 格式错误"));
    }
    if b.amount.total <= 0 {
        return Err(ApiError::param("amount.total 应大于 0"));
    }
    if let Some(c) = &b.amount.currency {
        if c != "CNY" {
            return Err(ApiError::param("amount.currency 仅支持 CNY"));
        }
    }
    if let Some(t) = &b.time_expire {
        DateTime::parse_from_rfc3339(t)
            .map_err(|_| ApiError::param("time_expire 应为 RFC3339 格式"))?;
    }
    match kind {
        TradeType::Jsapi => {
            let openid = b.payer.as_ref().and_then(|p| p.openid.as_deref());
            if openid.is_none_or(str::is_empty) {
                return Err(ApiError::param("缺少参数 payer.openid"));
            }
        }
        TradeType::H5 => {
            let scene = b.scene_info.as_ref();
            if scene
                .and_then(|s| s.payer_client_ip.as_deref())
                .is_none_or(str::is_empty)
            {
                return Err(ApiError::param("缺少参数 scene_info.payer_client_ip"));
            }
            if scene.and_then(|s| s.h5_info.as_ref()).is_none() {
                return Err(ApiError::param("缺少参数 scene_info.h5_info"));
            }
        }
        TradeType::Native | TradeType::App => {}
    }
    Ok(())
}

fn prepay_answer(kind: TradeType, order: &Order) -> PrepayResponse {
    match kind {
        TradeType::Jsapi | TradeType::App => PrepayResponse {
            prepay_id: Some(order.prepay_id.clone()),
            ..Default::default()
        },
        TradeType::Native => PrepayResponse {
            code_url: Some(format!(
                "weixin://wxpay/bizpayurl?pr={}",
                &order.prepay_id[order.prepay_id.len().saturating_sub(10)..]
            )),
            ..Default::default()
        },
        TradeType::H5 => PrepayResponse {
            h5_url: Some(format!(
                "https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id={}&package={}",
                order.prepay_id,
                &order.prepay_id[order.prepay_id.len().saturating_sub(10)..]
            )),
            ..Default::default()
        },
    }
}

fn prepay(
    sim: &WechatSim,
    kind: TradeType,
    method: &Method,
    uri: &Uri,
    hdrs: &HeaderMap,
    body: &[u8],
) -> ApiResult {
    let merchant = sim.authenticate(method, uri, hdrs, body)?;
    let req: PrepayBody = serde_json::from_slice(body)
        .map_err(|e| ApiError::param(format!("输入源“/body”映射到字段时出错: {e}")))?;
    if req.mchid != merchant.info.mchid {
        return Err(ApiError::param("mchid 与请求签名中的商户号不一致"));
    }
    validate(kind, &req)?;
    let key = (req.mchid.clone(), req.out_trade_no.clone());
    let mut orders = lock(&sim.orders);
    if let Some(existing) = orders.get(&key) {
        return match existing.state {
            OrderState::Success => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "ORDERPAID",
                "该订单已支付",
            )),
            OrderState::Closed => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "ORDER_CLOSED",
                "订单已关闭",
            )),
            OrderState::NotPay if existing.trade_type == kind && existing.body == req => {
                json(StatusCode::OK, &prepay_answer(kind, existing))
            }
            OrderState::NotPay => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "OUT_TRADE_NO_USED",
                "商户订单号重复",
            )),
        };
    }
    if orders.len() >= MAX_ORDERS {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "FREQUENCY_LIMITED",
            "模拟器订单数已达上限",
        ));
    }
    let now = sim.now();
    let order = Order {
        prepay_id: format!("wx{}{}", now.format("%d%H%M%S"), sim.unique(26)),
        body: req,
        trade_type: kind,
        state: OrderState::NotPay,
        transaction_id: None,
        success_time: None,
        notification_id: None,
    };
    let answer = json(StatusCode::OK, &prepay_answer(kind, &order));
    orders.insert(key, order);
    answer
}

async fn query(
    State(sim): State<Arc<WechatSim>>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    Path(out_trade_no): Path<String>,
    hdrs: HeaderMap,
    body: Bytes,
) -> Response {
    let result = find_transaction(&sim, &method, &uri, &hdrs, &body, |orders, mchid| {
        orders
            .get(&(mchid.to_string(), out_trade_no))
            .map(WechatSim::transaction_of)
    });
    sim.respond(result)
}

/// `GET /v3/pay/transactions/id/{transaction_id}?mchid=`: the same answer,
/// found by WeChat's own transaction id (only paid orders have one).
async fn query_by_transaction_id(
    State(sim): State<Arc<WechatSim>>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    Path(transaction_id): Path<String>,
    hdrs: HeaderMap,
    body: Bytes,
) -> Response {
    let result = find_transaction(&sim, &method, &uri, &hdrs, &body, |orders, mchid| {
        // A linear scan: the simulator keeps no second index for a rare query.
        orders
            .iter()
            .find(|((m, _), o)| m == mchid && o.transaction_id.as_deref() == Some(&transaction_id))
            .map(|(_, o)| WechatSim::transaction_of(o))
    });
    sim.respond(result)
}

/// The shared part of both queries: authenticate, check `mchid`, look the
/// order up with `find`, answer its transaction or ORDER_NOT_EXIST.
fn find_transaction<T: serde::Serialize>(
    sim: &WechatSim,
    method: &Method,
    uri: &Uri,
    hdrs: &HeaderMap,
    body: &[u8],
    find: impl FnOnce(&std::collections::HashMap<(String, String), Order>, &str) -> Option<T>,
) -> Result<(StatusCode, Vec<u8>), ApiError> {
    let merchant = sim.authenticate(method, uri, hdrs, body)?;
    let mchid = crate::request::query_param(uri, "mchid")
        .ok_or_else(|| ApiError::param("缺少参数 mchid"))?;
    if mchid != merchant.info.mchid {
        return Err(ApiError::param("mchid 与请求签名中的商户号不一致"));
    }
    let orders = lock(&sim.orders);
    let found = find(&orders, &mchid).ok_or_else(ApiError::not_found)?;
    json(StatusCode::OK, &found)
}

async fn close(
    State(sim): State<Arc<WechatSim>>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    Path(out_trade_no): Path<String>,
    hdrs: HeaderMap,
    body: Bytes,
) -> Response {
    let result = (|| {
        let merchant = sim.authenticate(&method, &uri, &hdrs, &body)?;
        let req: CloseBody = serde_json::from_slice(&body)
            .map_err(|e| ApiError::param(format!("输入源“/body”映射到字段时出错: {e}")))?;
        if req.mchid != merchant.info.mchid {
            return Err(ApiError::param("mchid 与请求签名中的商户号不一致"));
        }
        let mut orders = lock(&sim.orders);
        let order = orders
            .get_mut(&(req.mchid, out_trade_no))
            .ok_or_else(ApiError::not_found)?;
        match order.state {
            OrderState::Success => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "ORDERPAID",
                "订单已支付",
            )),
            // Closing twice is harmless at WeChat too.
            OrderState::Closed | OrderState::NotPay => {
                order.state = OrderState::Closed;
                Ok((StatusCode::NO_CONTENT, Vec::new()))
            }
        }
    })();
    sim.respond(result)
}

/// `POST /v3/refund/domestic/refunds`: accepted as PROCESSING; the refund
/// finishes right after the answer and its callback follows.
async fn create_refund(
    State(sim): State<Arc<WechatSim>>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    hdrs: HeaderMap,
    body: Bytes,
) -> Response {
    let result = (|| {
        let merchant = sim.authenticate(&method, &uri, &hdrs, &body)?;
        let req: RefundBody = serde_json::from_slice(&body)
            .map_err(|e| ApiError::param(format!("输入源“/body”映射到字段时出错: {e}")))?;
        let mchid = merchant.info.mchid.clone();
        let out_refund_no = req.out_refund_no.clone();
        let (record, new) = sim
            .accept_refund(&mchid, req)
            .map_err(|(status, code, message)| {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
                ApiError::new(status, code, message)
            })?;
        if new {
            let sim = sim.clone();
            tokio::spawn(async move { sim.finish_refund(&mchid, &out_refund_no).await });
        }
        json(StatusCode::OK, &record)
    })();
    sim.respond(result)
}

/// `GET /v3/refund/domestic/refunds/{out_refund_no}`.
async fn query_refund(
    State(sim): State<Arc<WechatSim>>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    Path(out_refund_no): Path<String>,
    hdrs: HeaderMap,
    body: Bytes,
) -> Response {
    let result = (|| {
        let merchant = sim.authenticate(&method, &uri, &hdrs, &body)?;
        let record = sim
            .refund_record(&merchant.info.mchid, &out_refund_no)
            .ok_or_else(|| {
                ApiError::new(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "退款单不存在")
            })?;
        json(StatusCode::OK, &record)
    })();
    sim.respond(result)
}

#[derive(serde::Deserialize)]
struct RefundsQuery {
    out_trade_no: String,
}

/// `GET /refunds?out_trade_no=`: the simulator's books for one trade.
async fn list_refunds(
    State(sim): State<Arc<WechatSim>>,
    axum::extract::Query(q): axum::extract::Query<RefundsQuery>,
) -> Response {
    Json(sim.refunds(&q.out_trade_no)).into_response()
}

/// `GET /v3/bill/tradebill?bill_date=&bill_type=ALL&tar_type=GZIP`: makes the
/// merchant's bill of that day (with the bill faults set for it) and answers
/// its SHA1 and a link to download it. Any day may be asked for; the real
/// WeChat Pay has a day's bill from 09:00 the next day.
async fn trade_bill(
    State(sim): State<Arc<WechatSim>>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    hdrs: HeaderMap,
    body: Bytes,
) -> Response {
    let result = (|| {
        let merchant = sim.authenticate(&method, &uri, &hdrs, &body)?;
        let param = |name| crate::request::query_param(&uri, name);
        let date = chrono::NaiveDate::parse_from_str(
            param("bill_date").as_deref().unwrap_or_default(),
            "%Y-%m-%d",
        )
        .map_err(|_| ApiError::param("bill_date 格式错误"))?;
        if param("bill_type").is_some_and(|t| t != "ALL") {
            return Err(ApiError::param("模拟器只提供 ALL 账单"));
        }
        let faults = sim.faults.take_bill_faults();
        let text = sim
            .trade_bill(&merchant.info.mchid, date, &faults)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "NO_STATEMENT_EXIST",
                    "账单文件不存在",
                )
            })?;
        let sha1 = hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            text.as_bytes(),
        ));
        let bytes = if param("tar_type").as_deref() == Some("GZIP") {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(text.as_bytes())
                .and_then(|()| gz.finish())
                .map_err(|e| ApiError::from(SimError::Internal(e.to_string())))?
        } else {
            text.into_bytes()
        };
        let token = sim.unique(24);
        sim.bills.keep(&token, &merchant.info.mchid, bytes);
        // The link is where this request came in, so it works wherever the
        // simulator is mounted.
        let base = crate::request::base_url(&uri, &hdrs, "/v3/bill/tradebill");
        json(
            StatusCode::OK,
            &serde_json::json!({
                "hash_type": "SHA1",
                "hash_value": sha1,
                "download_url": format!("{base}/v3/billdownload/file?token={token}"),
            }),
        )
    })();
    sim.respond(result)
}

/// `GET /v3/billdownload/file?token=`: the bill's bytes, unsigned (as WeChat
/// sends them), for the merchant that asked for it.
async fn download_bill(
    State(sim): State<Arc<WechatSim>>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    hdrs: HeaderMap,
    body: Bytes,
) -> Response {
    let found = (|| {
        let merchant = sim.authenticate(&method, &uri, &hdrs, &body)?;
        let token = crate::request::query_param(&uri, "token").unwrap_or_default();
        sim.bills
            .get(&token, Some(&merchant.info.mchid))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "RESOURCE_NOT_EXISTS",
                    "账单不存在或已过期",
                )
            })
    })();
    match found {
        Ok(bytes) => (
            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
            bytes,
        )
            .into_response(),
        Err(e) => sim.respond(Err(e)),
    }
}
