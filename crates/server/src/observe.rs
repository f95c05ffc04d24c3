//! What an operator sees: a request id on every request and its log lines,
//! HTTP and channel-call metrics with latency histograms, the notifier's
//! and pollers' backlogs, and a description of every metric.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::AppState;

pub const HEADER_REQUEST_ID: &str = "request-id";

/// Latency buckets, in seconds: from a cache hit to a channel timing out.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Every metric paymux writes, with its help text.
const COUNTERS: &[(&str, &str)] = &[
    (
        "paymux_rate_limited_total",
        "Requests refused for being over a rate limit, by scope (app, channel)",
    ),
    (
        "paymux_channel_paced_total",
        "Channel calls that waited for their turn at the account's pace",
    ),
    (
        "paymux_reconciliation_runs_total",
        "Reconciliation runs finished, by channel and status (succeeded, failed)",
    ),
    (
        "paymux_reconciliation_discrepancies_total",
        "Differences reconciliation runs found, by channel and kind",
    ),
    (
        "paymux_http_requests_total",
        "HTTP requests answered, by route, method and status",
    ),
    (
        "paymux_channel_calls_total",
        "Calls to a channel, by channel, operation and outcome",
    ),
    (
        "paymux_callbacks_total",
        "Payment callbacks from channels, by result",
    ),
    (
        "paymux_refund_callbacks_total",
        "Refund callbacks from channels, by result",
    ),
    (
        "paymux_notifications_total",
        "Merchant notification attempts, by result",
    ),
    (
        "paymux_payment_checks_total",
        "Status checks of open payments, by result",
    ),
    (
        "paymux_refund_checks_total",
        "Status checks of processing refunds, by result",
    ),
    (
        "paymux_payment_transitions_total",
        "Payment status changes, by the status reached",
    ),
    (
        "paymux_payments_created_total",
        "Payments created, by channel",
    ),
    (
        "paymux_payments_refused_total",
        "Creates refused before anything was written, by reason",
    ),
    (
        "paymux_refunds_created_total",
        "Refunds reserved, by channel",
    ),
    (
        "paymux_refunds_final_total",
        "Refunds that reached a final status, by status",
    ),
    (
        "paymux_auth_failures_total",
        "Failed merchant authentications, by error code",
    ),
    (
        "paymux_auth_blocked_total",
        "Client addresses blocked after repeated authentication failures",
    ),
    (
        "paymux_channel_breaker_refusals_total",
        "Channel calls refused by an open circuit breaker",
    ),
];

const HISTOGRAMS: &[(&str, &str)] = &[
    (
        "paymux_http_request_duration_seconds",
        "Time to answer an HTTP request, by route and method",
    ),
    (
        "paymux_channel_call_duration_seconds",
        "Time of a call to a channel, by channel and operation",
    ),
];

const GAUGES: &[(&str, &str)] = &[
    (
        "paymux_build_info",
        "Always 1; the version label says which paymux this is",
    ),
    (
        "paymux_channel_breaker_state",
        "Circuit breaker of an account's operation: 0 closed, 1 open, 2 half-open",
    ),
    (
        "paymux_notifier_undelivered",
        "Merchant events not acknowledged and still being retried",
    ),
    (
        "paymux_notifier_dead",
        "Merchant events whose retry schedule ran out",
    ),
    (
        "paymux_notifier_oldest_undelivered_age_seconds",
        "Age of the oldest event not acknowledged (0 when none)",
    ),
    (
        "paymux_poller_open_payments",
        "Payments not final yet (created or pending), which the poller watches",
    ),
    (
        "paymux_poller_processing_refunds",
        "Refunds not final yet, which the refund checks watch",
    ),
];

/// Describes every metric (the `# HELP` lines) and records the build.
pub fn describe() {
    for (name, help) in COUNTERS {
        metrics::describe_counter!(*name, *help);
    }
    for (name, help) in HISTOGRAMS {
        metrics::describe_histogram!(*name, metrics::Unit::Seconds, *help);
    }
    for (name, help) in GAUGES {
        metrics::describe_gauge!(*name, *help);
    }
    metrics::gauge!("paymux_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// A request id: the client's `Request-Id` if it is a sane one, else a new
/// ULID. It is on every log line of the request (a span) and on the answer.
pub async fn request_id(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(HEADER_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| (1..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| paymux_core::id::new_id("req"));
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        merchant_id = tracing::field::Empty,
        payment_id = tracing::field::Empty,
    );
    let mut response = next.run(req).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER_REQUEST_ID, v);
    }
    response
}

/// Counts and times every routed request by its route pattern (never the
/// raw path, so ids do not explode the label set).
pub async fn http_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!(
        "paymux_http_request_duration_seconds",
        "route" => route.clone(),
        "method" => method.clone()
    )
    .record(started.elapsed().as_secs_f64());
    metrics::counter!(
        "paymux_http_requests_total",
        "route" => route,
        "method" => method,
        "status" => status
    )
    .increment(1);
    response
}

/// Records one channel call: its outcome (`ok`, `rejected`, `not_found`,
/// `rate_limited`, `suspended`, `failed`) and how long it took.
pub fn channel_call(
    channel: &'static str,
    operation: &'static str,
    outcome: &'static str,
    took: Duration,
) {
    metrics::histogram!(
        "paymux_channel_call_duration_seconds",
        "channel" => channel,
        "operation" => operation
    )
    .record(took.as_secs_f64());
    metrics::counter!(
        "paymux_channel_calls_total",
        "channel" => channel,
        "operation" => operation,
        "outcome" => outcome
    )
    .increment(1);
}

/// How often the backlog gauges are refreshed.
const BACKLOG_EVERY: Duration = Duration::from_secs(15);

/// Keeps the backlog gauges current until the task is aborted.
pub async fn watch_backlog(state: AppState) {
    loop {
        let now = state.clock.now();
        match state.store.backlog().await {
            Ok(b) => {
                metrics::gauge!("paymux_notifier_undelivered").set(b.undelivered_events as f64);
                metrics::gauge!("paymux_notifier_dead").set(b.dead_events as f64);
                let age = b
                    .oldest_undelivered
                    .map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0)
                    .unwrap_or(0.0);
                metrics::gauge!("paymux_notifier_oldest_undelivered_age_seconds").set(age);
                metrics::gauge!("paymux_poller_open_payments").set(b.open_payments as f64);
                metrics::gauge!("paymux_poller_processing_refunds")
                    .set(b.processing_refunds as f64);
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the backlog"),
        }
        tokio::time::sleep(BACKLOG_EVERY).await;
    }
}
