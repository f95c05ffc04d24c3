//! What an operator sees: request ids, and `/metrics` with HTTP and
//! channel-call histograms, backlogs, build info and help text.

#[macro_use]
mod common;

use common::spawn_app;
use serde_json::json;

on_every_backend!(requests_carry_an_id_and_metrics_show_histograms, |db| {
    let app = spawn_app(&db, |_| {}).await;
    let base = app.server.base_url();
    let r = app
        .http
        .get(format!("{base}/healthz"))
        .header("request-id", "mall-trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["request-id"],
        "mall-trace-42",
        "a client's id is kept"
    );
    let r = app
        .http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap();
    let generated = r.headers()["request-id"].to_str().unwrap().to_string();
    assert!(generated.starts_with("req_"), "{generated}");
    let r = app
        .http
        .get(format!("{base}/healthz"))
        .header("request-id", "x".repeat(200))
        .send()
        .await
        .unwrap();
    assert_ne!(
        r.headers()["request-id"],
        "x".repeat(200).as_str(),
        "an absurd id is replaced"
    );

    let created = app
        .client
        .post(
            "/v1/payments",
            &json!({
                "merchant_order_no": "OBS-1",
                "amount": 100,
                "channel": "wechat",
                "method": "native",
                "description": "Tea",
                "notify_url": app.receiver.url,
            }),
        )
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    let text = app.metrics_text().await;
    for needle in [
        "paymux_http_request_duration_seconds_bucket{",
        "route=\"/v1/payments\"",
        "paymux_http_requests_total{",
        "status=\"201\"",
        "paymux_channel_call_duration_seconds_bucket{",
        "operation=\"prepay\"",
        "paymux_channel_calls_total{",
        "outcome=\"ok\"",
        "paymux_build_info{version=",
        "paymux_notifier_undelivered",
        "paymux_poller_open_payments",
        "# HELP paymux_http_requests_total",
        "# HELP paymux_channel_call_duration_seconds",
    ] {
        assert!(
            text.contains(needle),
            "{needle} missing from /metrics:\n{text}"
        );
    }
    // Routes are labelled by pattern, never by the raw path with an id in it.
    let id = created.body["id"].as_str().unwrap();
    app.client.get(&format!("/v1/payments/{id}")).await.unwrap();
    let text = app.metrics_text().await;
    assert!(text.contains("route=\"/v1/payments/{id}\""), "{text}");
    assert!(!text.contains(id), "an id leaked into a label");
    app.server.stop();
});
