//! Authenticates every merchant request (HMAC or the app's own key,
//! timestamp window, nonce, and a bound client certificate) and signs every
//! answer to an authenticated request with the app secret.
//!
//! Checks run cheapest-first and write nothing until the signature is known
//! good: a forged or stale request never touches the database.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use paymux_store::App;

use super::ApiError;
use crate::signing::{self, HEADER_APP_ID, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use crate::AppState;

/// The authenticated caller, available to handlers as an extension.
#[derive(Clone, Debug)]
pub struct Caller {
    pub app_id: String,
    pub merchant_id: String,
}

const NONCE_LEN: std::ops::RangeInclusive<usize> = 8..=64;

/// The largest answer paymux signs (its own JSON; far above any it makes).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

pub async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let ip = crate::http_limits::remote_addr(&req).map(|a| a.ip());
    let started = std::time::Instant::now();
    // Answers to requests that did not authenticate are never signed: an
    // outsider who knows an app id must not obtain a body signed with its
    // secret (a merchant would verify it like a notification).
    if let Some(wait) = state.auth_failures.blocked(ip, started) {
        return ApiError::too_many_auth_failures(wait).into_response();
    }
    let refuse = |e: ApiError, app_id: Option<&str>| {
        state.auth_failures.record(ip, app_id, e.code, started);
        e.into_response()
    };
    let (mut parts, body) = req.into_parts();
    let app = match lookup_app(&state, &parts.headers).await {
        Ok(app) => app,
        Err(e) if e.status == StatusCode::UNAUTHORIZED => return refuse(e, None),
        Err(e) => return e.into_response(),
    };
    // The body was buffered within the limit by `http_limits::limit`; the
    // bound here only keeps this function safe on its own.
    let Ok(body) = to_bytes(body, state.config.max_body_bytes).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("request body exceeds {} bytes", state.config.max_body_bytes),
        )
        .into_response();
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    if let Some(bound) = &app.client_cert_sha256 {
        let presented = parts.extensions.get::<crate::tls::ClientCert>();
        if presented.map(|c| &c.0) != Some(bound) {
            let e = ApiError::unauthorized(
                "CLIENT_CERT_REQUIRED",
                "this app is served only over mutual TLS with its own client certificate",
            );
            return refuse(e, Some(&app.app_id));
        }
    }
    // The response is signed with the secret the request was signed with:
    // during a rotation's grace period a client still on the previous
    // secret can verify our answers too.
    let secret = match check(
        &state,
        &app,
        parts.method.as_str(),
        path_and_query,
        &parts.headers,
        &body,
    )
    .await
    {
        Ok(secret) => secret,
        Err(e) if e.status == StatusCode::UNAUTHORIZED => return refuse(e, Some(&app.app_id)),
        Err(e) => return e.into_response(),
    };
    tracing::Span::current().record("merchant_id", app.merchant_id.as_str());
    // After authentication, so nobody but the app can spend its budget.
    if let Some(rate) = state.config.rate_limit.for_app(&app.app_id) {
        if let Err(wait) = state.app_limits.take(&app.app_id, rate, started) {
            metrics::counter!("paymux_rate_limited_total", "scope" => "app").increment(1);
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                "this app is over its request rate; retry after the Retry-After seconds",
            );
            e.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
            return sign(&state, &secret, e.into_response()).await;
        }
    }
    parts.extensions.insert(Caller {
        app_id: app.app_id.clone(),
        merchant_id: app.merchant_id.clone(),
    });
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    sign(&state, &secret, response).await
}

async fn lookup_app(state: &AppState, headers: &HeaderMap) -> Result<App, ApiError> {
    let app_id = header(headers, HEADER_APP_ID)
        .ok_or_else(|| ApiError::unauthorized("UNKNOWN_APP", "missing Paymux-App-Id header"))?;
    match state.directory.app(&*state.store, app_id).await {
        Ok(Some(app)) => Ok(app),
        Ok(None) => Err(ApiError::unauthorized("UNKNOWN_APP", "unknown app id")),
        Err(e) => Err(crate::error::FlowError::from(e).into()),
    }
}

async fn check(
    state: &AppState,
    app: &App,
    method: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, ApiError> {
    let bad_sig = |m: &str| ApiError::unauthorized("INVALID_SIGNATURE", m.to_string());
    let timestamp = header(headers, HEADER_TIMESTAMP)
        .ok_or_else(|| bad_sig("missing Paymux-Timestamp header"))?;
    let nonce =
        header(headers, HEADER_NONCE).ok_or_else(|| bad_sig("missing Paymux-Nonce header"))?;
    let signature = header(headers, HEADER_SIGNATURE)
        .ok_or_else(|| bad_sig("missing Paymux-Signature header"))?;
    if !NONCE_LEN.contains(&nonce.len()) || !nonce.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad_sig(
            "Paymux-Nonce must be 8-64 printable ASCII characters",
        ));
    }
    // A GET carries no body, whatever the client sent.
    let body = if method == "GET" { &[][..] } else { body };
    let now = state.clock.now();
    let secret = match &app.request_key {
        // An app with its own key pair is verified with its public key only
        // (no fallback to the secret); its answers are still signed with
        // the secret, which the merchant uses to check them.
        Some(key) => {
            let message = signing::request_message(method, path_and_query, timestamp, nonce, body);
            if !crate::request_keys::verify(key, &message, signature) {
                return Err(bad_sig(&format!(
                    "signature does not verify with the app's {} public key",
                    key.alg.as_str()
                )));
            }
            app.secret.clone()
        }
        // The current secret, or the previous one while its grace period lasts.
        None => app
            .valid_secrets(now)
            .find(|secret| {
                signing::verify_request(
                    secret,
                    method,
                    path_and_query,
                    timestamp,
                    nonce,
                    body,
                    signature,
                )
            })
            .ok_or_else(|| bad_sig("signature does not match the request"))?
            .to_string(),
    };
    let window = state.config.timestamp_window_secs;
    let ts: i64 = timestamp.parse().map_err(|_| {
        ApiError::unauthorized("TIMESTAMP_EXPIRED", "Paymux-Timestamp is not unix seconds")
    })?;
    // Checked arithmetic: a timestamp near i64::MIN must not wrap into the
    // window (and its nonce must not expire at once).
    let skew = now.timestamp().checked_sub(ts).and_then(i64::checked_abs);
    if skew.is_none_or(|s| s > window) {
        return Err(ApiError::unauthorized(
            "TIMESTAMP_EXPIRED",
            format!("Paymux-Timestamp is more than {window}s away from the server clock"),
        ));
    }
    // The nonce must be remembered as long as a request carrying this timestamp
    // could still be accepted.
    let expires_at = ts
        .checked_add(window.saturating_add(1))
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .unwrap_or(now);
    let fresh = state
        .store
        .use_nonce(&app.app_id, nonce, now, expires_at.max(now))
        .await
        .map_err(crate::error::FlowError::from)?;
    if !fresh {
        return Err(ApiError::unauthorized(
            "NONCE_REPLAYED",
            "this nonce was already used",
        ));
    }
    Ok(secret)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Adds the response-signature headers over the exact body bytes sent.
pub async fn sign(state: &AppState, secret: &str, response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(body) = to_bytes(body, MAX_RESPONSE_BYTES).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let timestamp = state.clock.now().timestamp().to_string();
    let nonce = signing::new_nonce();
    let signature = signing::sign_response(secret, &timestamp, &nonce, &body);
    for (name, value) in [
        (HEADER_TIMESTAMP, timestamp),
        (HEADER_NONCE, nonce),
        (HEADER_SIGNATURE, signature),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            parts.headers.insert(name, v);
        }
    }
    Response::from_parts(parts, Body::from(body))
}
