//! Operational endpoints and housekeeping: health, readiness, metrics, the
//! OpenAPI document, and nonce purging.

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::AppState;

/// The OpenAPI 3 description of the merchant API.
pub const OPENAPI: &str = include_str!("../openapi.json");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        // Latencies as histograms (buckets), not summaries: they add up
        // across nodes.
        // Refused only for an empty bucket list, which LATENCY_BUCKETS is not.
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                crate::observe::LATENCY_BUCKETS,
            )
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then ours just stays empty.
        if metrics::set_global_recorder(recorder).is_ok() {
            crate::observe::describe();
        }
        handle
    })
}

async fn render_metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_handle().render(),
    )
}

pub async fn purge_nonces_periodically(state: AppState) {
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let now = state.clock.now();
        match state.store.purge_nonces(now).await {
            Ok(n) if n > 0 => tracing::debug!(purged = n, "expired nonces purged"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "nonce purge failed"),
        }
        let before = paymux_core::clock::later(now, -crate::api::idempotency::KEY_WINDOW);
        match state.store.purge_idempotency_records(before).await {
            Ok(n) if n > 0 => tracing::debug!(purged = n, "old idempotency keys purged"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "idempotency key purge failed"),
        }
    }
}
