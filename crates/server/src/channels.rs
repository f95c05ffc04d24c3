//! Builds and caches one channel client per channel account, each wrapped
//! in its circuit breakers ([`GuardedChannel`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use paymux_channels::alipay::{Alipay, AlipayConfig};
use paymux_channels::wechat::{WechatConfig, WechatPay};
use paymux_channels::{Channel, ChannelError};
use paymux_core::{ChannelKind, Clock};
use paymux_store::ChannelAccount;

use crate::config::{BreakerConfig, ChannelHttpConfig};
use crate::guarded::{Breakers, GuardedChannel};

pub struct ChannelRegistry {
    /// Shared by every account's client: one connection pool per channel host.
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    clients: RwLock<HashMap<String, Arc<dyn Channel>>>,
    /// Every account's breakers; also consulted before work is written.
    pub breakers: Arc<Breakers>,
    /// In sandbox mode, the in-process Alipay simulator's public key. Its key
    /// is made fresh at every start, so sandbox accounts verify with this one
    /// rather than the one stored when they were created.
    sandbox_alipay_key: Option<String>,
}

impl ChannelRegistry {
    pub fn new(
        clock: Arc<dyn Clock>,
        http_config: &ChannelHttpConfig,
        breaker: BreakerConfig,
    ) -> Result<Self, ChannelError> {
        let http = paymux_channels::transport::client(http_config.timeouts())?;
        Ok(ChannelRegistry {
            http,
            breakers: Arc::new(Breakers::new(breaker, clock.clone())),
            clock,
            clients: RwLock::new(HashMap::new()),
            sandbox_alipay_key: None,
        })
    }

    pub fn with_sandbox_alipay_key(mut self, public_key_pem: String) -> Self {
        self.sandbox_alipay_key = Some(public_key_pem);
        self
    }

    /// The client for an account, built on first use. Clients keep state worth
    /// keeping (downloaded platform certificates), so they are shared.
    pub fn client(&self, account: &ChannelAccount) -> Result<Arc<dyn Channel>, ChannelError> {
        if let Some(c) = self
            .clients
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&account.id)
        {
            return Ok(c.clone());
        }
        let mut client = build(
            account,
            self.http.clone(),
            self.clock.clone(),
            self.sandbox_alipay_key.as_deref(),
        )?;
        if self.breakers.enabled() {
            client = Arc::new(GuardedChannel::new(
                client,
                &account.id,
                self.breakers.clone(),
                self.clock.clone(),
            ));
        }
        let mut clients = self.clients.write().unwrap_or_else(|p| p.into_inner());
        Ok(clients.entry(account.id.clone()).or_insert(client).clone())
    }
}

/// Builds the client for an account. `sandbox_alipay_key` is the in-process
/// Alipay simulator's public key, which changes at every start: sandbox
/// accounts verify with it instead of whatever their config recorded.
pub fn build(
    account: &ChannelAccount,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    sandbox_alipay_key: Option<&str>,
) -> Result<Arc<dyn Channel>, ChannelError> {
    let config_error = |e: serde_json::Error| {
        ChannelError::Config(format!("{} account {}: {e}", account.channel, account.id))
    };
    Ok(match account.channel {
        ChannelKind::Wechat => {
            let config: WechatConfig =
                serde_json::from_value(account.config.clone()).map_err(config_error)?;
            Arc::new(WechatPay::new(config, http)?.with_clock(clock))
        }
        ChannelKind::Alipay => {
            let mut config: AlipayConfig =
                serde_json::from_value(account.config.clone()).map_err(config_error)?;
            if let (true, Some(key)) = (account.sandbox, sandbox_alipay_key) {
                config.alipay_public_key_pem = Some(key.to_string());
            }
            Arc::new(Alipay::new(config, http)?.with_clock(clock))
        }
    })
}
