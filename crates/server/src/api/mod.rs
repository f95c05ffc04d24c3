//! The merchant API: `/v1/...`, authenticated and signed both ways.

pub mod auth;
pub mod auth_failures;
pub mod balances;
pub mod checkout_request;
pub mod checkouts;
pub mod error;
pub mod event_types;
pub mod events;
pub mod groups;
pub mod idempotency;
pub mod listing;
pub mod payments;
pub mod qr_codes;
pub mod refund_request;
pub mod refunds;
pub mod validate;
pub mod view;

use axum::middleware;
use axum::routing::{get, post};
use axum::Router;

use crate::AppState;

pub use error::ApiError;

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/payments", post(payments::create).get(payments::find))
        .route("/v1/payments/{id}", get(payments::get))
        .route("/v1/payments/{id}/close", post(payments::close))
        .route("/v1/refunds", post(refunds::create).get(refunds::find))
        .route("/v1/refunds/{id}", get(refunds::get))
        .route(
            "/v1/checkouts",
            post(checkouts::create).get(checkouts::find),
        )
        .route("/v1/checkouts/{id}", get(checkouts::get))
        .route("/v1/checkouts/{id}/attempts", post(checkouts::attempt))
        .route("/v1/groups", post(groups::create))
        .route("/v1/groups/{id}", get(groups::get))
        .route("/v1/qr-codes", post(qr_codes::create))
        .route("/v1/qr-codes/{id}", get(qr_codes::get))
        .route("/v1/balances", get(balances::get))
        .route(
            "/v1/event-types",
            get(event_types::get).put(event_types::put),
        )
        .route("/v1/events", get(events::list))
        .route("/v1/events/{id}/retry", post(events::retry))
        .layer(middleware::from_fn_with_state(state, auth::authenticate))
}
