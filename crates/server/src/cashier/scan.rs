//! What a scan of an aggregated QR code (一码付) opens: `/q/{id}`. Each scan
//! is a new checkout for the code (of its amount, or of what the payer
//! enters on the small form shown when it has none), and the payer goes on
//! to that checkout's cashier page, which pays through the app that
//! scanned: WeChat, Alipay or UnionPay's.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use paymux_core::{new_id, Money};
use paymux_store::QrCode;

use crate::api::checkout_request::CreateCheckout;
use crate::api::ApiError;
use crate::error::FlowError;
use crate::rate_limit::Rate;
use crate::{checkouts, AppState};

const AMOUNT_PAGE: &str = include_str!("amount.html");

/// How long a scan's checkout stays payable: the payer is at the till.
const SCAN_EXPIRY_SECS: i64 = 15 * 60;
/// Scans of one code: enough for a busy till, not for a script filling the
/// database with checkouts.
const SCANS_PER_SEC: f64 = 5.0;
const SCAN_BURST: u32 = 30;

pub fn router() -> Router<AppState> {
    Router::new().route("/q/{id}", get(scanned).post(entered))
}

/// What the code encodes.
pub fn url(state: &AppState, qr: &QrCode) -> String {
    format!("{}/q/{}", state.public_url, qr.id)
}

async fn code(state: &AppState, id: &str) -> Result<QrCode, ApiError> {
    let missing = || ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such QR code");
    if id.len() > 64 {
        return Err(missing());
    }
    state
        .store
        .qr_code(id)
        .await
        .map_err(FlowError::from)?
        .ok_or_else(missing)
}

/// `GET /q/{id}`: on to a new checkout's cashier page, or the amount form.
async fn scanned(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let result = async {
        let qr = code(&state, &id).await?;
        match qr.amount {
            Some(minor) => open(&state, &qr, minor).await,
            None => Ok(amount_form(&qr, None)),
        }
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /q/{id}` `amount=12.34`: the payer entered the amount.
async fn entered(State(state): State<AppState>, Path(id): Path<String>, body: Bytes) -> Response {
    let amount = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "amount")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let result = async {
        let qr = code(&state, &id).await?;
        if qr.amount.is_some() {
            return open(&state, &qr, qr.amount.unwrap_or_default()).await;
        }
        match parse_yuan(&amount) {
            Some(minor) => open(&state, &qr, minor).await,
            None => Ok(amount_form(
                &qr,
                Some("请输入正确的金额 / Enter a valid amount"),
            )),
        }
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// A new checkout for one scan, and the payer sent to its cashier page.
async fn open(state: &AppState, qr: &QrCode, minor: i64) -> Result<Response, ApiError> {
    let rate = Rate::new(SCANS_PER_SEC, SCAN_BURST).expect("a positive rate");
    if let Err(wait) = state
        .app_limits
        .take(&format!("qr:{}", qr.id), rate, Instant::now())
    {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            "this code is being scanned too often; try again shortly",
        );
        e.retry_after = Some(wait.as_secs().max(1));
        return Err(e);
    }
    let amount = Money::new(minor, qr.currency)
        .map_err(|_| ApiError::invalid("amount: must be greater than 0"))?;
    let req = CreateCheckout {
        // One order per scan, named after its code.
        merchant_order_no: format!("{}-{}", qr.id, new_id("s").trim_start_matches("s_")),
        amount,
        description: qr.description.clone(),
        notify_url: qr.notify_url.clone(),
        return_url: None,
        expires_in_seconds: Some(SCAN_EXPIRY_SECS),
        metadata: serde_json::json!({"qr_code_id": qr.id}),
    };
    let (checkout, _) = checkouts::create(state, &qr.merchant_id, &qr.app_id, req).await?;
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, super::url(state, &checkout)),
            (header::CACHE_CONTROL, "no-store".to_string()),
            (header::REFERRER_POLICY, "no-referrer".to_string()),
        ],
    )
        .into_response())
}

/// The amount form of a code without an amount.
fn amount_form(qr: &QrCode, error: Option<&str>) -> Response {
    let nonce = crate::signing::new_nonce();
    let html = AMOUNT_PAGE
        .replace("{{nonce}}", &nonce)
        .replace("{{description}}", &escape(&qr.description))
        .replace("{{error}}", &escape(error.unwrap_or("")));
    let mut resp = Html(html).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, "no-store".parse().expect("static"));
    if let Ok(v) = format!(
        "default-src 'none'; style-src 'nonce-{nonce}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    .parse()
    {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    resp
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// "12", "12.3" or "12.34" yuan as fen; anything else (or zero, or more
/// than a till takes) is `None`.
fn parse_yuan(s: &str) -> Option<i64> {
    const MAX_FEN: i64 = 10_000_000_00;
    let s = s.trim();
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) if digits(f) && f.len() <= 2 => (w, f),
        Some(_) => return None,
        None => (s, ""),
    };
    if !digits(whole) || whole.len() > 9 {
        return None;
    }
    let fen = whole.parse::<i64>().ok()? * 100 + format!("{frac:0<2}").parse::<i64>().ok()?;
    (fen > 0 && fen <= MAX_FEN).then_some(fen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payer_enters_yuan() {
        assert_eq!(parse_yuan("12"), Some(1200));
        assert_eq!(parse_yuan(" 12.3 "), Some(1230));
        assert_eq!(parse_yuan("0.01"), Some(1));
        assert_eq!(parse_yuan("12.34"), Some(1234));
        for bad in [
            "",
            "0",
            "0.00",
            "-1",
            "1.234",
            "1e3",
            "１２",
            ".5",
            "5.",
            "abc",
            "1234567890",
        ] {
            assert_eq!(parse_yuan(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_form_escapes_the_merchants_text() {
        assert_eq!(escape("<b>&\"'"), "&lt;b&gt;&amp;&quot;&#39;");
    }
}
