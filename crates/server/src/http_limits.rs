//! What one client may cost the server: connections, time, bytes.
//!
//! Every limit here is checked before the work it protects: a connection
//! waits for a slot before it is accepted, a request line and its headers
//! must arrive within `header_read_timeout_ms`, a `Content-Length` above the
//! body limit is refused before one byte of the body is read, a body must
//! arrive within `body_timeout_ms`, and a request is answered within
//! `request_timeout_ms` or gets a 503. Bodies are buffered here once, so
//! everything downstream (authentication, handlers, callbacks) reads bytes
//! already in memory and never waits on a slow client.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::api::ApiError;
use crate::AppState;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpLimits {
    /// Connections open at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Time for a request line and its headers to arrive.
    pub header_read_timeout_ms: u64,
    /// Time for a whole request body to arrive once its headers have.
    pub body_timeout_ms: u64,
    /// Time from the headers to the last byte of the answer. Longer than a
    /// channel call (`channel_http.request_timeout_ms`) plus its bookkeeping.
    pub request_timeout_ms: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 4096,
            header_read_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
        }
    }
}

/// Accepts connections until the task is aborted, each served by hyper with
/// the header timeout (which also bounds a TLS handshake), and each holding
/// one of `max_connections` slots for as long as it is open. Once `drain`
/// says so, it stops accepting (the listener is closed), lets every open
/// connection finish the request it is on and close, and returns when they
/// all have.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut drain: tokio::sync::watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let header_timeout = Duration::from_millis(limits.header_read_timeout_ms.max(1));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    // Connections are owned by this task: aborting it (stopping the server)
    // ends them too.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            () = drained(&mut drain) => break,
            accepted = async {
                let slot = slots.clone().acquire_owned().await;
                (slot, listener.accept().await)
            } => accepted,
        };
        let (Ok(slot), accepted) = accepted else {
            return;
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off, never spin.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (app, http, tls) = (app.clone(), http.clone(), tls.clone());
        let drain = drain.clone();
        connections.spawn(async move {
            let result = match tls {
                None => serve_one(&http, stream, app, remote, None, drain).await,
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let cert = tls_stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(|c| {
                                    crate::tls::ClientCert(crate::tls::fingerprint(c.as_ref()))
                                });
                            serve_one(&http, tls_stream, app, remote, cert, drain).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, error = %e, "TLS handshake refused");
                            Ok(())
                        }
                        Err(_) => Ok(()),
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!(open = connections.len(), "draining: no new connections");
    while connections.join_next().await.is_some() {}
}

/// Returns once the server is told to drain (at once if it was already).
/// Without a sender any more (its [`crate::Running`] was dropped) it never
/// returns: dropping the handle leaves the server running, as before.
async fn drained(drain: &mut tokio::sync::watch::Receiver<bool>) {
    if drain.wait_for(|d| *d).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Serves one connection; every request carries the client's address and,
/// over TLS, the client certificate it presented. When the server drains,
/// the request in flight is answered and the connection closed after it.
async fn serve_one<IO>(
    http: &hyper::server::conn::http1::Builder,
    io: IO,
    app: Router,
    remote: SocketAddr,
    cert: Option<crate::tls::ClientCert>,
    mut drain: tokio::sync::watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = http.serve_connection(
        TokioIo::new(io),
        hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(remote));
            if let Some(cert) = &cert {
                req.extensions_mut().insert(cert.clone());
            }
            let app = app.clone();
            async move {
                let res: Result<Response, Infallible> = app.oneshot(req.map(Body::new)).await;
                res
            }
        }),
    );
    tokio::pin!(conn);
    tokio::select! {
        done = conn.as_mut() => done,
        () = drained(&mut drain) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

/// The client's address, when the request came through [`serve`].
pub fn remote_addr(req: &Request) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

/// The address of the client behind a connection from `peer`: the peer
/// itself, unless it is one of the `trusted` proxies; then the address the
/// proxy says it forwarded for (`X-Real-IP`, else the last entry of
/// `X-Forwarded-For`, the one the proxy added), when that parses.
pub fn client_ip(
    peer: std::net::IpAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[std::net::IpAddr],
) -> std::net::IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let real = header("x-real-ip").map(str::trim);
    let forwarded = header("x-forwarded-for").and_then(|v| v.rsplit(',').next().map(str::trim));
    real.or(forwarded)
        .and_then(|ip| ip.parse().ok())
        .unwrap_or(peer)
}

/// How many times the body limit an oversized body may be to be read and
/// dropped before the 413 (beyond it the connection is simply answered).
const DRAIN_FACTOR: u64 = 16;

/// Buffers the body within the size and time limits, refuses NUL in the
/// merchant and admin APIs, and bounds the whole request in time.
pub async fn limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let max = state.config.max_body_bytes;
    let limits = &state.config.http;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().parse::<u64>());
    let body_timeout = Duration::from_millis(limits.body_timeout_ms.max(1));
    match declared {
        Some(Ok(n)) if n > max as u64 => {
            // A body somewhat too large is read and dropped first, so that
            // an ordinary client gets the 413 instead of a reset while it is
            // still sending; a huge one is refused at once.
            if n <= (max as u64).saturating_mul(DRAIN_FACTOR) {
                let drain = to_bytes(req.into_body(), usize::MAX);
                let _ = tokio::time::timeout(body_timeout, drain).await;
            }
            return too_large(max);
        }
        Some(Err(_)) => return ApiError::invalid("Content-Length is not a number").into_response(),
        _ => {}
    }
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(body_timeout, to_bytes(body, max)).await {
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "REQUEST_TIMEOUT",
                format!("the request body did not arrive within {body_timeout:?}"),
            )
            .into_response()
        }
        Ok(Err(_)) => return too_large(max),
        Ok(Ok(bytes)) => bytes,
    };
    let path = parts.uri.path().to_string();
    if (path.starts_with("/v1/") || path.starts_with("/admin/"))
        && (carries_nul(parts.uri.path_and_query().map_or("", |p| p.as_str()))
            || body_has_nul(&bytes))
    {
        return ApiError::invalid("NUL characters are not accepted in paths, queries or bodies")
            .into_response();
    }
    let req = Request::from_parts(parts, Body::from(bytes));
    let request_timeout = Duration::from_millis(limits.request_timeout_ms.max(1));
    match tokio::time::timeout(request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(%path, "request timed out");
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "REQUEST_TIMEOUT",
                "the request took too long; query its outcome before retrying",
            );
            e.retry_after = Some(1);
            e.into_response()
        }
    }
}

fn too_large(max: usize) -> Response {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        format!("request body exceeds {max} bytes"),
    )
    .into_response()
}

/// A NUL in the path or query, raw or percent-encoded.
fn carries_nul(path_and_query: &str) -> bool {
    path_and_query.contains('\0') || path_and_query.as_bytes().windows(3).any(|w| w == b"%00")
}

/// A NUL in the body: a raw byte, or a JSON `\u0000` escape inside a string
/// (an escaped backslash followed by `u0000` is text, not a NUL).
fn body_has_nul(body: &[u8]) -> bool {
    if body.contains(&0) {
        return true;
    }
    let mut i = 0;
    while i < body.len() {
        if body[i] == b'\\' {
            if body[i + 1..].starts_with(b"u0000") {
                return true;
            }
            i += 2; // skip the escaped character, whatever it is
        } else {
            i += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_forwarded_address_counts_only_from_a_trusted_proxy() {
        use super::client_ip;
        let proxy: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let payer: std::net::IpAddr = "203.0.113.7".parse().unwrap();
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "198.51.100.1, 203.0.113.7".parse().unwrap(),
        );
        assert_eq!(client_ip(proxy, &h, &[proxy]), payer);
        assert_eq!(client_ip(proxy, &h, &[]), proxy, "not trusted: the peer");
        h.insert("x-real-ip", "203.0.113.9".parse().unwrap());
        assert_eq!(
            client_ip(proxy, &h, &[proxy]),
            "203.0.113.9".parse::<std::net::IpAddr>().unwrap()
        );
        h.insert("x-real-ip", "not an address".parse().unwrap());
        h.remove("x-forwarded-for");
        assert_eq!(
            client_ip(proxy, &h, &[proxy]),
            proxy,
            "unparsable: the peer"
        );
    }

    use super::*;

    #[test]
    fn nul_in_any_form_is_found() {
        assert!(carries_nul("/v1/payments?merchant_order_no=a%00b"));
        assert!(carries_nul("/v1/payments/pay_%00"));
        assert!(!carries_nul("/v1/payments?merchant_order_no=a%2500b"));
        assert!(body_has_nul(br#"{"metadata":{"k":"a\u0000b"}}"#));
        assert!(body_has_nul(b"{\"k\":\"a\0\"}"));
        assert!(!body_has_nul(br#"{"k":"a\\u0000b"}"#));
        assert!(body_has_nul(br#"{"k":"a\\\u0000b"}"#));
        assert!(!body_has_nul(br#"{"k":"trailing\\"}"#));
        assert!(!body_has_nul(b"\\"));
    }
}
