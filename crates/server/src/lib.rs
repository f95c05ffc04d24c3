//! The paymux server: the merchant API, channel callbacks and the workers
//! that carry a payment from creation to the merchant's notification.

pub mod accounts;
pub mod admin;
pub mod api;
pub mod breaker;
pub mod callbacks;
pub mod cashier;
pub mod channels;
pub mod checkouts;
pub mod client;
pub mod config;
pub mod directory;
pub mod error;
pub mod event_types;
pub mod flow;
pub mod groups;
pub mod guarded;
pub mod http_limits;
pub mod locks;
pub mod merchants;
pub mod notifier;
pub mod observe;
pub mod ops;
pub mod outbound;
pub mod rate_limit;
pub mod reconcile;
pub mod refunds;
pub mod request_keys;
pub mod sandbox;
pub mod secrets;
pub mod signing;
pub mod state;
pub mod tls;
pub mod undelivered;
pub mod workers;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use paymux_core::{Clock, SystemClock};
use paymux_store::Store;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use config::ServerConfig;
pub use error::ServerError;
pub use state::AppState;

/// A server that is listening. Dropping it does not stop it; call [`Running::stop`].
pub struct Running {
    pub addr: SocketAddr,
    pub state: AppState,
    tasks: Vec<JoinHandle<()>>,
    /// Tells the HTTP server to stop accepting and drain (see [`Running::shutdown`]).
    draining: tokio::sync::watch::Sender<bool>,
}

impl Running {
    /// The base URL the server answers on, e.g. `http://127.0.0.1:8080`
    /// (`https://` when it serves TLS itself).
    pub fn base_url(&self) -> String {
        let scheme = if self.state.config.tls_cert_file.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops the listener and the workers at once, like a crash would: whatever
    /// was committed stays, whatever was in flight is resumed by the next start.
    pub fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }

    /// Stops gracefully (SIGTERM): no new connections; requests in flight
    /// are answered and their connections closed, for at most `grace`;
    /// then the workers stop as [`Running::stop`] does (what a worker held
    /// is taken up again when its lease lapses). Returns whether every
    /// request in flight was answered within `grace`.
    pub async fn shutdown(mut self, grace: std::time::Duration) -> bool {
        let _ = self.draining.send(true);
        let drained = match self.tasks.pop() {
            Some(server) => {
                let abort = server.abort_handle();
                let done = tokio::time::timeout(grace, server).await.is_ok();
                abort.abort();
                done
            }
            None => true,
        };
        tracing::info!(drained, "HTTP server stopped; stopping the workers");
        self.stop();
        drained
    }

    /// Waits while the HTTP server runs (until it fails; it does not end
    /// by itself). [`Running::shutdown`] may follow.
    pub async fn serving(&mut self) {
        match self.tasks.last_mut() {
            Some(server) => {
                let _ = server.await;
                // Finished: nothing to drain any more.
                self.tasks.pop();
            }
            None => std::future::pending().await,
        }
    }
}

/// Binds the listener, prepares the sandbox if asked, and starts the HTTP
/// server and the workers.
pub async fn start(config: ServerConfig, store: Arc<dyn Store>) -> Result<Running, ServerError> {
    start_with_clock(config, store, Arc::new(SystemClock)).await
}

pub async fn start_with_clock(
    config: ServerConfig,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
) -> Result<Running, ServerError> {
    let tls = match config.tls_files().map_err(ServerError::Config)? {
        Some(files) => Some(tls::acceptor(&files).map_err(ServerError::Config)?),
        None => None,
    };
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let public_url = config
        .effective_public_url(addr)
        .map_err(ServerError::Config)?;
    if !config.sandbox && !public_url.starts_with("https://") {
        let line = "!".repeat(72);
        tracing::warn!("{line}");
        tracing::warn!("INSECURE PUBLIC URL {public_url}: allowed by allow_insecure_public_url.");
        tracing::warn!("Real channels call back only over https; use this for local tests only.");
        tracing::warn!("{line}");
    }
    if config.allow_private_notify_url {
        let line = "!".repeat(72);
        tracing::warn!("{line}");
        tracing::warn!("allow_private_notify_url: notifications may reach loopback, private and");
        tracing::warn!("metadata addresses. Use this for local tests only.");
        tracing::warn!("{line}");
    }
    if !config.sandbox && config.allow_http_notify_url {
        tracing::warn!(
            "allow_http_notify_url: merchants may receive notifications over plain http"
        );
    }
    ops::metrics_handle();
    let state = AppState::new(config, store, clock, public_url)?;
    if state.sandbox.is_some() {
        sandbox::warn_loudly(&state.public_url);
        sandbox::register_existing_accounts(&state).await?;
    }

    let mut tasks = Vec::new();
    if state.config.notifier.enabled {
        tasks.push(tokio::spawn(notifier::run(state.clone())));
    }
    tasks.push(tokio::spawn(ops::purge_nonces_periodically(state.clone())));
    tasks.push(tokio::spawn(observe::watch_backlog(state.clone())));
    if state.config.poller.enabled {
        tasks.push(tokio::spawn(workers::poller::run(state.clone())));
        tasks.push(tokio::spawn(workers::refund_checks::run(state.clone())));
    }
    tasks.push(tokio::spawn(workers::audit::run(state.clone())));
    tasks.push(tokio::spawn(workers::checkouts::run(state.clone())));
    tasks.push(tokio::spawn(workers::groups::run(state.clone())));
    if state.config.reconcile.enabled {
        tasks.push(tokio::spawn(workers::reconcile::run(state.clone())));
    }

    let app = router(state.clone());
    let (draining, drain) = tokio::sync::watch::channel(false);
    tasks.push(tokio::spawn(http_limits::serve(
        listener,
        app,
        state.config.http.clone(),
        tls,
        drain,
    )));
    tracing::info!(%addr, backend = state.store.backend(), "paymux listening");
    Ok(Running {
        addr,
        state,
        tasks,
        draining,
    })
}

/// Every route paymux serves.
pub fn router(state: AppState) -> Router {
    let mut app = Router::new()
        .merge(api::router(state.clone()))
        .merge(admin::router(state.clone()))
        .merge(callbacks::router())
        .merge(cashier::router())
        .merge(ops::router())
        .fallback(|| async {
            api::ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "no such route",
            )
        });
    if let Some(sandbox) = &state.sandbox {
        app = app.nest(
            "/sim/wechat",
            paymux_sim::wechat::router(sandbox.wechat.clone()),
        );
        app = app.nest(
            "/sim/alipay",
            paymux_sim::alipay::router(sandbox.alipay.clone()),
        );
        app = app.nest(
            "/sim/unionpay",
            paymux_sim::unionpay::router(sandbox.unionpay.clone()),
        );
    }
    app.route_layer(axum::middleware::from_fn(observe::http_metrics))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            http_limits::limit,
        ))
        .layer(axum::middleware::from_fn(observe::request_id))
        .with_state(state)
}
