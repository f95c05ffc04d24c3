//! A small merchant-side client for the paymux API: signs requests and
//! verifies signed responses exactly as the API contract says. The demo, the
//! load generator and the tests use it; it is also a worked example for
//! merchants writing their own.

use reqwest::Method;
use serde_json::Value;

use crate::signing::{self, HEADER_APP_ID, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP};

#[derive(Clone)]
pub struct MerchantClient {
    pub base_url: String,
    pub app_id: String,
    pub secret: String,
    /// Signs requests with this Ed25519 key instead of the secret (the
    /// secret still checks the answers).
    ed25519: Option<std::sync::Arc<aws_lc_rs::signature::Ed25519KeyPair>>,
    http: reqwest::Client,
}

/// An answer from paymux, with its signature already checked.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: u16,
    pub body: Value,
    /// Whether the response signature verified with our secret.
    pub signature_ok: bool,
    /// The `Retry-After` header, in seconds, when there is one.
    pub retry_after: Option<u64>,
}

impl ApiResponse {
    /// The error code of an error answer.
    pub fn error_code(&self) -> Option<&str> {
        self.body.pointer("/error/code").and_then(Value::as_str)
    }
}

/// What to put in the authentication headers; tests override parts of it.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    pub timestamp: Option<i64>,
    pub nonce: Option<String>,
    pub signature: Option<String>,
    pub idempotency_key: Option<String>,
}

impl MerchantClient {
    pub fn new(base_url: &str, app_id: &str, secret: &str) -> Self {
        MerchantClient {
            base_url: base_url.trim_end_matches('/').to_string(),
            app_id: app_id.to_string(),
            secret: secret.to_string(),
            ed25519: None,
            http: reqwest::Client::new(),
        }
    }

    /// The same client over another HTTP client (TLS roots, a client certificate).
    pub fn with_http(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// The same client, signing its requests with an Ed25519 key (PKCS#8).
    pub fn with_ed25519_key(mut self, pkcs8: &[u8]) -> Result<Self, String> {
        let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|e| format!("Ed25519 key: {e}"))?;
        self.ed25519 = Some(std::sync::Arc::new(pair));
        Ok(self)
    }

    pub async fn get(&self, path: &str) -> Result<ApiResponse, reqwest::Error> {
        self.send(Method::GET, path, Vec::new(), Auth::default())
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<ApiResponse, reqwest::Error> {
        self.send(
            Method::POST,
            path,
            body.to_string().into_bytes(),
            Auth::default(),
        )
        .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<ApiResponse, reqwest::Error> {
        self.send(
            Method::PUT,
            path,
            body.to_string().into_bytes(),
            Auth::default(),
        )
        .await
    }

    /// Sends raw body bytes with the given authentication overrides.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Vec<u8>,
        auth: Auth,
    ) -> Result<ApiResponse, reqwest::Error> {
        let timestamp = auth
            .timestamp
            .unwrap_or_else(|| chrono::Utc::now().timestamp())
            .to_string();
        let nonce = auth.nonce.unwrap_or_else(signing::new_nonce);
        let signature = auth.signature.unwrap_or_else(|| match &self.ed25519 {
            Some(pair) => {
                use base64::Engine;
                let message = signing::request_message(
                    method.as_str(),
                    path_and_query,
                    &timestamp,
                    &nonce,
                    &body,
                );
                base64::engine::general_purpose::STANDARD.encode(pair.sign(&message).as_ref())
            }
            None => signing::sign_request(
                &self.secret,
                method.as_str(),
                path_and_query,
                &timestamp,
                &nonce,
                &body,
            ),
        });
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base_url, path_and_query))
            .header(HEADER_APP_ID, &self.app_id)
            .header(HEADER_TIMESTAMP, &timestamp)
            .header(HEADER_NONCE, &nonce)
            .header(HEADER_SIGNATURE, signature)
            .header("content-type", "application/json");
        if let Some(key) = auth.idempotency_key {
            req = req.header("idempotency-key", key);
        }
        let resp = req.body(body).send().await?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let (ts, nonce, sig) = (
            header(HEADER_TIMESTAMP),
            header(HEADER_NONCE),
            header(HEADER_SIGNATURE),
        );
        let retry_after = header("retry-after").parse().ok();
        let bytes = resp.bytes().await?;
        let signature_ok = signing::verify_response(&self.secret, &ts, &nonce, &bytes, &sig);
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(ApiResponse {
            status,
            body,
            signature_ok,
            retry_after,
        })
    }
}

/// A merchant's `notify_url` endpoint: receives paymux's event notifications,
/// checks their signature, and acknowledges them (or refuses, when told to).
pub struct NotifyReceiver {
    pub url: String,
    events: tokio::sync::mpsc::UnboundedReceiver<ReceivedEvent>,
    accept: std::sync::Arc<std::sync::atomic::AtomicBool>,
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Clone)]
pub struct ReceivedEvent {
    pub body: Value,
    pub signature_ok: bool,
    /// Whether this receiver acknowledged it with a 2xx.
    pub acknowledged: bool,
}

impl NotifyReceiver {
    /// Listens on a random loopback port; events are checked with `secret`.
    pub async fn start(secret: &str) -> std::io::Result<Self> {
        use axum::http::{HeaderMap, StatusCode};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/notify", listener.local_addr()?);
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let accept = Arc::new(AtomicBool::new(true));
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (secret, accept2, delay2) = (secret.to_string(), accept.clone(), delay_ms.clone());
        let app = axum::Router::new().route(
            "/notify",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let (tx, secret, accept) = (tx.clone(), secret.clone(), accept2.clone());
                let delay = std::time::Duration::from_millis(delay2.load(Ordering::SeqCst));
                async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string()
                    };
                    let signature_ok = signing::verify_response(
                        &secret,
                        &h(HEADER_TIMESTAMP),
                        &h(HEADER_NONCE),
                        &body,
                        &h(HEADER_SIGNATURE),
                    );
                    let acknowledged = accept.load(Ordering::SeqCst) && signature_ok;
                    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let _ = tx.send(ReceivedEvent {
                        body,
                        signature_ok,
                        acknowledged,
                    });
                    if acknowledged {
                        StatusCode::NO_CONTENT
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(NotifyReceiver {
            url,
            events,
            accept,
            delay_ms,
            task,
        })
    }

    /// Answer 2xx (true) or 503 (false) from now on.
    pub fn set_accepting(&self, accept: bool) {
        self.accept
            .store(accept, std::sync::atomic::Ordering::SeqCst);
    }

    /// Answer only after `delay` from now on (a slow merchant).
    pub fn set_delay(&self, delay: std::time::Duration) {
        self.delay_ms.store(
            delay.as_millis().min(u128::from(u64::MAX)) as u64,
            std::sync::atomic::Ordering::SeqCst,
        );
    }

    /// The next event received, if one arrives within `timeout`.
    pub async fn next(&mut self, timeout: std::time::Duration) -> Option<ReceivedEvent> {
        tokio::time::timeout(timeout, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Every event received so far, without waiting.
    pub fn drain(&mut self) -> Vec<ReceivedEvent> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            out.push(e);
        }
        out
    }
}

impl Drop for NotifyReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
