//! The hosted cashier (收银台页面): the page a checkout's `cashier_url`
//! opens. It offers the ways to pay that fit where the payer is (see
//! [`env`]), makes the attempt the payer picks, shows its QR code or sends
//! the payer on to the channel, watches the checkout, and once it is paid
//! returns the payer to the merchant's `return_url`, signed.
//!
//! The routes are public (payers have no credentials): the checkout's
//! `cashier_token`, in the URL, is what lets a request at the checkout.
//! Everything the page may do is what the merchant API allows for the
//! checkout anyway: attempts, each checked like a create.

pub mod env;
mod qr;
pub mod return_url;
pub mod scan;

pub use qr::svg as qr_svg;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use paymux_core::{ChannelKind, PayMethod};
use paymux_store::{Checkout, Payment};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{view, ApiError};
use crate::error::FlowError;
use crate::{checkouts, AppState};
use env::PayerEnv;
use paymux_channels::wechat::web_auth::WebAuthConfig;

const PAGE: &str = include_str!("page.html");

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(scan::router())
        .route("/cashier/{id}", get(page))
        .route("/cashier/{id}/pay", post(pay))
        .route("/cashier/{id}/status", get(status))
        .route("/cashier/{id}/wechat", get(wechat_return))
}

/// The cashier URL of a checkout.
pub fn url(state: &AppState, checkout: &Checkout) -> String {
    format!(
        "{}/cashier/{}?t={}",
        state.public_url, checkout.id, checkout.cashier_token
    )
}

#[derive(Deserialize)]
pub struct Access {
    t: String,
}

/// The checkout the URL names, if its token is the checkout's (a wrong
/// token looks like a missing checkout).
async fn checkout(state: &AppState, id: &str, access: &Access) -> Result<Checkout, ApiError> {
    let missing = || ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such checkout");
    if id.len() > 64 || access.t.len() > 64 {
        return Err(missing());
    }
    let checkout = state
        .store
        .checkout(id)
        .await
        .map_err(FlowError::from)?
        .ok_or_else(missing)?;
    let same = checkout.cashier_token.len() == access.t.len()
        && aws_lc_rs::constant_time::verify_slices_are_equal(
            checkout.cashier_token.as_bytes(),
            access.t.as_bytes(),
        )
        .is_ok();
    if !same {
        return Err(missing());
    }
    Ok(checkout)
}

/// The channels the checkout's merchant can take payments through.
async fn enabled_channels(
    state: &AppState,
    checkout: &Checkout,
) -> Result<Vec<ChannelKind>, ApiError> {
    // The sandbox opens an account for any channel on first use.
    if state.sandbox.is_some() {
        return Ok(ChannelKind::ALL.to_vec());
    }
    let mut enabled = Vec::new();
    for channel in ChannelKind::ALL {
        let account = state
            .store
            .channel_account_for(&checkout.merchant_id, channel)
            .await
            .map_err(FlowError::from)?;
        if account.is_some() {
            enabled.push(channel);
        }
    }
    Ok(enabled)
}

/// Headers of every cashier answer: never cached, never framed, no
/// referrer (the URL holds the token), scripts only of this page.
fn guarded(mut resp: Response, script_nonce: Option<&str>) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let csp = match script_nonce {
        Some(n) => format!(
            "default-src 'none'; script-src 'nonce-{n}'; style-src 'nonce-{n}'; \
             img-src data:; connect-src 'self'; form-action http: https:; \
             frame-ancestors 'none'; base-uri 'none'"
        ),
        None => "default-src 'none'; frame-ancestors 'none'".to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    resp
}

/// `GET /cashier/{id}?t=…`: the page. Inside WeChat, when the merchant's
/// WeChat Pay account can do web authorisation, the payer first makes the
/// round trip through WeChat that gives paymux their openid
/// ([`wechat_return`] renders the page then).
async fn page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(access): Query<Access>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let checkout = checkout(&state, &id, &access).await?;
        let env = PayerEnv::detect(&headers);
        let offers = env.offers(&enabled_channels(&state, &checkout).await?);
        let paying = checkout.winner_payment_id.is_none();
        if paying && offers.contains(&(ChannelKind::Wechat, PayMethod::Jsapi)) {
            if let Some(auth) = web_auth(&state, &checkout).await? {
                let back = format!("{}/wechat?t={}", cashier_path(&state, &checkout), access.t);
                let to = auth.authorize(&back, &oauth_state(&checkout));
                return Ok(guarded(
                    (StatusCode::FOUND, [(header::LOCATION, to)]).into_response(),
                    None,
                ));
            }
        }
        Ok::<_, ApiError>(render(&state, &checkout, env, &offers, None))
    };
    result
        .await
        .unwrap_or_else(|e| guarded(e.into_response(), None))
}

#[derive(Deserialize)]
pub struct WechatReturn {
    t: String,
    code: Option<String>,
    state: Option<String>,
}

/// `GET /cashier/{id}/wechat?t=…&code=…&state=…`: WeChat sends the payer
/// back here; the code becomes their openid and the page is shown with it.
async fn wechat_return(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(back): Query<WechatReturn>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let access = Access { t: back.t };
        let checkout = checkout(&state, &id, &access).await?;
        if back.state.as_deref() != Some(oauth_state(&checkout).as_str()) {
            return Err(ApiError::invalid("state: not this checkout's"));
        }
        let code = back
            .code
            .filter(|c| !c.is_empty() && c.len() <= 128)
            .ok_or_else(|| ApiError::invalid("code: WeChat gave none (the payer refused?)"))?;
        let auth = web_auth(&state, &checkout)
            .await?
            .ok_or_else(oauth_unavailable)?;
        let openid = auth
            .openid(oauth_http()?, &code)
            .await
            .map_err(|e| ApiError::from(crate::flow::unavailable(e)))?;
        let env = PayerEnv::detect(&headers);
        let offers = env.offers(&enabled_channels(&state, &checkout).await?);
        Ok::<_, ApiError>(render(&state, &checkout, env, &offers, Some(&openid)))
    };
    result
        .await
        .unwrap_or_else(|e| guarded(e.into_response(), None))
}

fn cashier_path(state: &AppState, checkout: &Checkout) -> String {
    format!("{}/cashier/{}", state.public_url, checkout.id)
}

/// The page, with the payer's openid (and its proof) when known.
fn render(
    state: &AppState,
    checkout: &Checkout,
    env: PayerEnv,
    offers: &[(ChannelKind, PayMethod)],
    openid: Option<&str>,
) -> Response {
    let nonce = crate::signing::new_nonce();
    let mut data = json!({
        "id": checkout.id,
        "token": checkout.cashier_token,
        "env": env.as_str(),
        "status": status_of(state, checkout),
        "amount": checkout.amount.minor,
        "currency": checkout.amount.currency.as_str(),
        "description": checkout.description,
        "merchant_order_no": checkout.merchant_order_no,
        "expires_at": view::time(checkout.expires_at),
        "offers": offers
            .iter()
            .map(|(c, m)| json!({"channel": c.as_str(), "method": m.as_str()}))
            .collect::<Vec<_>>(),
    });
    if let Some(openid) = openid {
        data["openid"] = openid.into();
        data["openid_proof"] = openid_proof(checkout, openid).into();
    }
    let html = PAGE
        .replace("{{nonce}}", &nonce)
        .replace("{{data}}", &script_json(&data));
    guarded(Html(html).into_response(), Some(&nonce))
}

/// The merchant's WeChat Pay account's web authorisation, if it has one.
async fn web_auth(
    state: &AppState,
    checkout: &Checkout,
) -> Result<Option<WebAuthConfig>, ApiError> {
    let account = match state
        .store
        .channel_account_for(&checkout.merchant_id, ChannelKind::Wechat)
        .await
        .map_err(FlowError::from)?
    {
        Some(a) => a,
        None => match &state.sandbox {
            Some(sandbox) => crate::sandbox::ensure_account(
                state,
                sandbox,
                &checkout.merchant_id,
                ChannelKind::Wechat,
            )
            .await
            .map_err(FlowError::from)?,
            None => return Ok(None),
        },
    };
    Ok(WebAuthConfig::from_account(&account.config))
}

fn oauth_unavailable() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "WECHAT_OAUTH_UNAVAILABLE",
        "WeChat Pay inside WeChat needs the payer's openid: set oauth_app_secret (the official account's AppSecret) on the WeChat Pay account",
    )
}

/// One HTTP client for web authorisation calls, with the channels' timeouts.
fn oauth_http() -> Result<&'static reqwest::Client, ApiError> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    let client = paymux_channels::wechat::http_client()
        .map_err(|e| ApiError::from(FlowError::Internal(e.into())))?;
    Ok(CLIENT.get_or_init(|| client))
}

fn mac_hex(key: &str, msg: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.as_bytes());
    hex::encode(aws_lc_rs::hmac::sign(&key, msg.as_bytes()))
}

/// The `state` of the checkout's web authorisation round trip.
fn oauth_state(checkout: &Checkout) -> String {
    mac_hex(&checkout.cashier_token, "wechat-oauth")[..32].to_string()
}

/// Proves that paymux learnt `openid` from WeChat for this checkout, so a
/// page cannot pay with an openid of its own choosing.
fn openid_proof(checkout: &Checkout, openid: &str) -> String {
    mac_hex(&checkout.cashier_token, &format!("openid:{openid}"))
}

/// JSON safe inside a `<script>` element: no `<`, `>` or `&` that could
/// end it or start markup.
fn script_json(v: &Value) -> String {
    v.to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

fn status_of(state: &AppState, checkout: &Checkout) -> &'static str {
    match (
        &checkout.winner_payment_id,
        checkout.expires_at <= state.clock.now(),
    ) {
        (Some(_), _) => "paid",
        (None, true) => "expired",
        (None, false) => "open",
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayBody {
    channel: ChannelKind,
    method: PayMethod,
    /// The payer's openid and its proof, from the page (WeChat JSAPI).
    #[serde(default)]
    openid: Option<String>,
    #[serde(default)]
    openid_proof: Option<String>,
}

/// `POST /cashier/{id}/pay?t=… {channel, method}`: makes (or resumes) the
/// attempt and says what the page does next: `qr` (show `qr_svg`),
/// `redirect` (go to `url`), `form` (post `fields` to `url`) or `jsapi`
/// (hand `params` to WeChat's `getBrandWCPayRequest`).
async fn pay(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(access): Query<Access>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let result = async {
        let checkout = checkout(&state, &id, &access).await?;
        let PayBody {
            channel,
            method,
            openid,
            openid_proof,
        } = serde_json::from_slice(&body).map_err(|e| ApiError::invalid(format!("body: {e}")))?;
        let env = PayerEnv::detect(&headers);
        // The page offers only what fits; a request for anything else (a
        // hand-made one) is refused the same way.
        if !env
            .offers(&enabled_channels(&state, &checkout).await?)
            .contains(&(channel, method))
        {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "METHOD_NOT_OFFERED",
                format!(
                    "{channel} {method} is not offered in this browser ({})",
                    env.as_str()
                ),
            ));
        }
        let mut payer = serde_json::Map::new();
        if method == PayMethod::H5 {
            // WeChat checks the H5 payment against the payer's own address.
            let ip =
                crate::http_limits::client_ip(peer.ip(), &headers, &state.config.trusted_proxies);
            payer.insert("client_ip".into(), ip.to_string().into());
        }
        if method == PayMethod::Jsapi {
            let openid = match (openid, openid_proof) {
                (Some(o), Some(p)) if verify_proof(&checkout, &o, &p) => o,
                _ => return Err(oauth_unavailable()),
            };
            payer.insert("openid".into(), openid.into());
        }
        let attempt = json!({"channel": channel, "method": method, "payer": payer});
        let (payment, _) =
            checkouts::attempt(&state, &checkout, attempt.to_string().as_bytes()).await?;
        next_step(&payment)
    };
    match result.await {
        Ok(v) => guarded(Json(v).into_response(), None),
        Err(e) => guarded(e.into_response(), None),
    }
}

fn verify_proof(checkout: &Checkout, openid: &str, proof: &str) -> bool {
    let want = openid_proof(checkout, openid);
    want.len() == proof.len()
        && aws_lc_rs::constant_time::verify_slices_are_equal(want.as_bytes(), proof.as_bytes())
            .is_ok()
}

/// What the page does with an attempt's `pay_params`.
fn next_step(payment: &Payment) -> Result<Value, ApiError> {
    let params = payment.pay_params.clone().unwrap_or(Value::Null);
    let text = |field: &str| {
        params
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let missing = || {
        ApiError::from(FlowError::Internal(crate::ServerError::Invariant(format!(
            "payment {} has no pay_params for {}",
            payment.id, payment.method
        ))))
    };
    let mut step = match payment.method {
        PayMethod::Native => {
            let code = text("code_url")
                .or_else(|| text("qr_code"))
                .ok_or_else(missing)?;
            json!({"action": "qr", "qr_svg": qr::svg(&code)?})
        }
        PayMethod::H5 => json!({"action": "redirect", "url": text("h5_url").ok_or_else(missing)?}),
        PayMethod::Wap | PayMethod::Pc if payment.channel == ChannelKind::Alipay => {
            json!({"action": "redirect", "url": text("pay_url").ok_or_else(missing)?})
        }
        PayMethod::Wap | PayMethod::Pc => json!({
            "action": "form",
            "url": text("action").ok_or_else(missing)?,
            "fields": params.get("fields").cloned().ok_or_else(missing)?,
        }),
        PayMethod::Jsapi => json!({"action": "jsapi", "params": params}),
        _ => return Err(missing()),
    };
    step["payment_id"] = payment.id.as_str().into();
    step["channel"] = payment.channel.as_str().into();
    step["method"] = payment.method.as_str().into();
    Ok(step)
}

/// `GET /cashier/{id}/status?t=…`: `open`, `expired`, or `paid` with the
/// signed URL back to the merchant (`return_url`, when the checkout has one).
async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(access): Query<Access>,
) -> Response {
    let result = async {
        let checkout = checkout(&state, &id, &access).await?;
        let status = status_of(&state, &checkout);
        let back = match (&checkout.winner_payment_id, &checkout.return_url) {
            (Some(_), Some(_)) => Some(return_url::signed(&state, &checkout).await?),
            _ => None,
        };
        Ok::<_, ApiError>(json!({"status": status, "return_url": back}))
    };
    match result.await {
        Ok(v) => guarded(Json(v).into_response(), None),
        Err(e) => guarded(e.into_response(), None),
    }
}
