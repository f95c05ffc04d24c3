//! Signed requests and verified responses.

use chrono::{DateTime, Utc};
use http::HeaderMap;

use super::sign::{self, Authorization};
use super::types::{headers, ErrorBody};
use super::WechatPay;
use crate::keys::PublicKey;
use crate::ChannelError;

/// A response whose signature has been checked (or an unsigned error answer).
pub(super) struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ChannelError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ChannelError::Protocol(format!("unexpected answer: {e}")))
    }
}

/// The four signature headers of a response or callback.
pub(super) struct SignatureHeaders {
    pub timestamp: String,
    pub nonce: String,
    pub serial: String,
    pub signature: String,
}

impl SignatureHeaders {
    pub fn from_headers(h: &HeaderMap) -> Result<Self, ChannelError> {
        let get = |name: &str| -> Result<String, ChannelError> {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ChannelError::InvalidSignature(format!("missing header {name}")))
        };
        Ok(SignatureHeaders {
            timestamp: get(headers::TIMESTAMP)?,
            nonce: get(headers::NONCE)?,
            serial: get(headers::SERIAL)?,
            signature: get(headers::SIGNATURE)?,
        })
    }

    pub fn present(h: &HeaderMap) -> bool {
        h.contains_key(headers::SIGNATURE)
    }

    /// Rejects a timestamp more than five minutes away from `now`: a replayed
    /// response or callback must not verify forever.
    pub fn check_fresh(&self, now: DateTime<Utc>) -> Result<(), ChannelError> {
        let ts: i64 = self
            .timestamp
            .parse()
            .map_err(|_| ChannelError::InvalidSignature("timestamp is not a number".into()))?;
        // Checked: a timestamp near i64::MIN must not wrap into the window.
        let skew = now.timestamp().checked_sub(ts).and_then(i64::checked_abs);
        if skew.is_none_or(|s| s > sign::MAX_CLOCK_SKEW_SECS) {
            return Err(ChannelError::StaleTimestamp(format!(
                "timestamp {ts} is more than {} s away from now",
                sign::MAX_CLOCK_SKEW_SECS
            )));
        }
        Ok(())
    }

    pub fn verify(&self, key: &PublicKey, body: &[u8]) -> Result<(), ChannelError> {
        sign::verify_response(key, &self.timestamp, &self.nonce, body, &self.signature)
    }
}

impl WechatPay {
    /// Sends one signed request. `path_and_query` is relative to the API root
    /// (`/v3/...`); the base URL's own path prefix is kept and signed too.
    pub(super) async fn send(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response, ChannelError> {
        let resp = self.request(method, path_and_query, body).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .map_err(|e| ChannelError::Transport(format!("reading answer: {e}")))?
            .to_vec();
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// Sends one signed request and returns the answer unread (a bill
    /// download streams its body to disk).
    pub(super) async fn request(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, ChannelError> {
        let url_text = format!(
            "{}{}",
            self.base_url.as_str().trim_end_matches('/'),
            path_and_query
        );
        let url = reqwest::Url::parse(&url_text)
            .map_err(|e| ChannelError::Config(format!("request URL {url_text:?}: {e}")))?;
        // Sign the path and query exactly as they go on the wire (after the
        // URL parser's normalisation), which is what WeChat verifies.
        let canonical = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let body = body.unwrap_or_default();
        let auth = Authorization::sign(
            &self.key,
            &self.config.mchid,
            &self.config.serial_no,
            method.as_str(),
            &canonical,
            self.clock.now().timestamp(),
            &sign::random_nonce(32),
            &body,
        )?;
        let mut req = self
            .http
            .request(method.clone(), url)
            .header(http::header::AUTHORIZATION, auth.header_value())
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "paymux");
        if method != reqwest::Method::GET {
            req = req
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        req.send()
            .await
            .map_err(|e| ChannelError::Transport(format!("{method} {canonical}: {e}")))
    }

    /// Sends a signed request, verifies the answer's signature and turns
    /// error answers into [`ChannelError`]s.
    pub(super) async fn call(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response, ChannelError> {
        let resp = self.send(method, path_and_query, body).await?;
        if resp.status == 429 {
            // FREQUENCY_LIMITED: turned away before anything was done.
            return Err(ChannelError::RateLimited {
                retry_after: crate::transport::retry_after(&resp.headers),
            });
        }
        if resp.status >= 500 {
            // The outcome is unknown: the same request may be retried, and
            // only a later query can tell what happened.
            return Err(ChannelError::Transport(format!(
                "HTTP {}: {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            )));
        }
        let success = (200..300).contains(&resp.status);
        // Successful answers must be signed. Error answers are verified when
        // signed (WeChat signs them), but an unsigned one is still reported:
        // the official SDKs do the same, and it cannot move money.
        if success || SignatureHeaders::present(&resp.headers) {
            let sig = SignatureHeaders::from_headers(&resp.headers)?;
            let now = self.clock.now();
            sig.check_fresh(now)?;
            let key = self.verifying_key(&sig.serial, now).await?;
            sig.verify(&key, &resp.body)?;
        }
        if success {
            return Ok(resp);
        }
        let err: Option<ErrorBody> = serde_json::from_slice(&resp.body).ok();
        match err {
            Some(e)
                if resp.status == 404
                    && matches!(
                        e.code.as_str(),
                        "ORDER_NOT_EXIST" | "ORDERNOTEXIST" | "RESOURCE_NOT_EXISTS"
                    ) =>
            {
                Err(ChannelError::NotFound)
            }
            Some(e) if e.code == "FREQUENCY_LIMITED" => Err(ChannelError::RateLimited {
                retry_after: crate::transport::retry_after(&resp.headers),
            }),
            Some(e) => Err(ChannelError::Rejected {
                code: e.code,
                message: e.message,
            }),
            None => Err(ChannelError::Rejected {
                code: format!("HTTP_{}", resp.status),
                message: String::from_utf8_lossy(&resp.body)
                    .chars()
                    .take(500)
                    .collect(),
            }),
        }
    }
}
