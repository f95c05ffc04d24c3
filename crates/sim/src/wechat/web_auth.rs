//! WeChat's web authorisation (网页授权) as the simulator plays it: an
//! official account (appid + AppSecret) registered with
//! [`WebAuth::register`]; `GET /connect/oauth2/authorize` sends the
//! browser straight back to `redirect_uri` with a one-time `code` (the
//! payer agreed: `snsapi_base` asks nothing), and
//! `GET /sns/oauth2/access_token` exchanges it for the payer's openid,
//! answering WeChat's error codes for a bad appid (40013), secret (40125)
//! or code (40029).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{OriginalUri, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use paymux_core::Clock;
use serde_json::json;

use super::lock;
use crate::request::query_param;

/// Codes waiting for their exchange, at most this many (the oldest go first).
const MAX_CODES: usize = 10_000;
/// WeChat's codes live five minutes.
const CODE_TTL_SECS: i64 = 300;

struct Code {
    appid: String,
    openid: String,
    expires_at: DateTime<Utc>,
}

pub struct WebAuth {
    /// appid → AppSecret.
    apps: Mutex<HashMap<String, String>>,
    codes: Mutex<HashMap<String, Code>>,
    clock: Arc<dyn Clock>,
}

impl WebAuth {
    pub fn new(clock: Arc<dyn Clock>) -> WebAuth {
        WebAuth {
            apps: Mutex::new(HashMap::new()),
            codes: Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// Registers (or replaces) an official account's AppSecret.
    pub fn register(&self, appid: &str, secret: &str) {
        lock(&self.apps).insert(appid.to_string(), secret.to_string());
    }

    fn known(&self, appid: &str) -> Option<String> {
        lock(&self.apps).get(appid).cloned()
    }

    /// A one-time code standing for a payer of `appid`: the same payer each
    /// time for one appid and browser session is not needed, so each code
    /// names a payer of its own.
    fn issue(&self, appid: &str) -> String {
        let code = random_hex(16);
        let now = self.clock.now();
        let mut codes = lock(&self.codes);
        codes.retain(|_, c| c.expires_at > now);
        if codes.len() >= MAX_CODES {
            if let Some(oldest) = codes
                .iter()
                .min_by_key(|(_, c)| c.expires_at)
                .map(|(k, _)| k.clone())
            {
                codes.remove(&oldest);
            }
        }
        codes.insert(
            code.clone(),
            Code {
                appid: appid.to_string(),
                openid: format!("o-sim-{}", random_hex(12)),
                expires_at: now + Duration::seconds(CODE_TTL_SECS),
            },
        );
        code
    }

    /// Spends a code: its openid, once, for its own appid, before it expires.
    fn redeem(&self, appid: &str, code: &str) -> Option<String> {
        let c = lock(&self.codes).remove(code)?;
        (c.appid == appid && c.expires_at > self.clock.now()).then_some(c.openid)
    }
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut b).expect("system random generator");
    hex::encode(b)
}

fn wechat_error(errcode: i64, errmsg: &str) -> Response {
    Json(json!({"errcode": errcode, "errmsg": errmsg})).into_response()
}

pub fn router<S>(auth: Arc<WebAuth>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/connect/oauth2/authorize", get(authorize))
        .route("/sns/oauth2/access_token", get(access_token))
        .with_state(auth)
}

async fn authorize(State(auth): State<Arc<WebAuth>>, OriginalUri(uri): OriginalUri) -> Response {
    let param = |name| query_param(&uri, name).unwrap_or_default();
    let (appid, redirect_uri, state) = (param("appid"), param("redirect_uri"), param("state"));
    if auth.known(&appid).is_none() {
        return (StatusCode::BAD_REQUEST, "appid 参数错误 (40013)").into_response();
    }
    if param("response_type") != "code"
        || !matches!(param("scope").as_str(), "snsapi_base" | "snsapi_userinfo")
    {
        return (
            StatusCode::BAD_REQUEST,
            "scope 参数错误或没有 scope 权限 (10005)",
        )
            .into_response();
    }
    if !(redirect_uri.starts_with("http://") || redirect_uri.starts_with("https://")) {
        return (StatusCode::BAD_REQUEST, "redirect_uri 参数错误 (10003)").into_response();
    }
    let code = auth.issue(&appid);
    let back = form_urlencoded::Serializer::new(String::new())
        .append_pair("code", &code)
        .append_pair("state", &state)
        .finish();
    let joiner = if redirect_uri.contains('?') { '&' } else { '?' };
    (
        StatusCode::FOUND,
        [(header::LOCATION, format!("{redirect_uri}{joiner}{back}"))],
    )
        .into_response()
}

async fn access_token(State(auth): State<Arc<WebAuth>>, OriginalUri(uri): OriginalUri) -> Response {
    let param = |name| query_param(&uri, name).unwrap_or_default();
    let appid = param("appid");
    let Some(secret) = auth.known(&appid) else {
        return wechat_error(40013, "invalid appid");
    };
    if param("secret") != secret {
        return wechat_error(40125, "invalid appsecret");
    }
    if param("grant_type") != "authorization_code" {
        return wechat_error(40002, "invalid grant_type");
    }
    match auth.redeem(&appid, &param("code")) {
        Some(openid) => Json(json!({
            "access_token": random_hex(32),
            "expires_in": 7200,
            "refresh_token": random_hex(32),
            "openid": openid,
            "scope": "snsapi_base",
        }))
        .into_response(),
        None => wechat_error(40029, "invalid code"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_spent_once_for_its_own_appid() {
        let auth = WebAuth::new(Arc::new(paymux_core::SystemClock));
        auth.register("wx1", "secret");
        let code = auth.issue("wx1");
        assert_eq!(auth.redeem("wx2", &code), None);
        let code = auth.issue("wx1");
        let openid = auth.redeem("wx1", &code).unwrap();
        assert!(openid.starts_with("o-sim-"));
        assert_eq!(auth.redeem("wx1", &code), None);
    }
}
