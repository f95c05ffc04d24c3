//! What every handler and worker shares.

use std::sync::Arc;
use std::time::Duration;

use paymux_core::Clock;
use paymux_store::Store;
use tokio::sync::Notify;

use crate::api::auth_failures::AuthFailures;
use crate::channels::ChannelRegistry;
use crate::locks::KeyedLocks;
use crate::{ServerConfig, ServerError};

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ServerConfig>,
    pub store: Arc<dyn Store>,
    /// Apps and channel accounts kept in memory, checked against the
    /// store's directory version on every lookup.
    pub directory: Arc<crate::directory::Directory>,
    pub clock: Arc<dyn Clock>,
    /// Where channels send callbacks, without a trailing slash.
    pub public_url: String,
    pub channels: Arc<ChannelRegistry>,
    /// Serialises work on one order inside this node (a second prepay for the
    /// same order waits for the first). Correctness still comes from the
    /// store's compare-and-set; the lock only saves duplicate channel calls.
    pub order_locks: Arc<KeyedLocks>,
    /// Wakes the notifier when a transition wrote an outbox row.
    pub outbox_wakeup: Arc<Notify>,
    /// Wakes the checkout settler when an attempt of a checkout succeeded.
    pub checkout_wakeup: Arc<Notify>,
    /// Outgoing HTTP to merchants (notifications), reaching only the
    /// addresses [`crate::outbound::NotifyPolicy`] allows, never redirected.
    pub http: crate::outbound::NotifyClient,
    /// Failed merchant authentications, for the log, metrics and back-off.
    pub auth_failures: Arc<AuthFailures>,
    /// Each app's request budget (`[rate_limit]`).
    pub app_limits: Arc<crate::rate_limit::Limiter>,
    pub sandbox: Option<Arc<crate::sandbox::Sandbox>>,
}

impl AppState {
    pub fn new(
        config: ServerConfig,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        public_url: String,
    ) -> Result<Self, ServerError> {
        let http = crate::outbound::notify_client(
            Arc::new(config.notify_policy()),
            Duration::from_secs(config.notifier.timeout_secs.max(1)),
        )
        .map_err(|e| ServerError::Config(format!("http client: {e}")))?;
        let auth_failures = Arc::new(AuthFailures::new(config.auth_failures.clone()));
        let sandbox = config
            .sandbox
            .then(|| Arc::new(crate::sandbox::Sandbox::with_clock(clock.clone())));
        // A sandbox serving HTTPS calls its own simulators over that TLS:
        // it trusts the certificates it serves (put the issuing CA in the file).
        let own_chain = match (&config.tls_cert_file, config.sandbox) {
            (Some(path), true) => Some(
                std::fs::read(path)
                    .map_err(|e| ServerError::Config(format!("{}: {e}", path.display())))?,
            ),
            _ => None,
        };
        let mut channels = ChannelRegistry::new(
            clock.clone(),
            &config.channel_http,
            config.breaker.clone(),
            own_chain.as_deref(),
        )?
        .with_outbound_limits(config.rate_limit.outbound.clone());
        if let Some(s) = &sandbox {
            let unionpay = s.unionpay.platform();
            channels = channels.with_sandbox_trust(crate::channels::SandboxTrust {
                alipay_public_key: s.alipay.platform().alipay_public_key,
                unionpay_root_cert: unionpay.root_cert,
                unionpay_middle_cert: unionpay.middle_cert,
            });
        }
        Ok(AppState {
            config: Arc::new(config),
            store,
            directory: Arc::default(),
            channels: Arc::new(channels),
            clock,
            public_url: public_url.trim_end_matches('/').to_string(),
            order_locks: Arc::new(KeyedLocks::default()),
            outbox_wakeup: Arc::new(Notify::new()),
            checkout_wakeup: Arc::new(Notify::new()),
            http,
            auth_failures,
            app_limits: Default::default(),
            sandbox,
        })
    }
}
