//! Builds and caches one channel client per channel account.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use paymux_channels::alipay::{Alipay, AlipayConfig};
use paymux_channels::wechat::{WechatConfig, WechatPay};
use paymux_channels::{Channel, ChannelError};
use paymux_core::{ChannelKind, Clock};
use paymux_store::ChannelAccount;

pub struct ChannelRegistry {
    /// Shared by every account's client: one connection pool per channel host.
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    clients: RwLock<HashMap<String, Arc<dyn Channel>>>,
    /// In sandbox mode, the in-process Alipay simulator's public key. Its key
    /// is made fresh at every start, so sandbox accounts verify with this one
    /// rather than the one stored when they were created.
    sandbox_alipay_key: Option<String>,
}

impl ChannelRegistry {
    pub fn new(clock: Arc<dyn Clock>) -> Result<Self, ChannelError> {
        let http = paymux_channels::wechat::http_client()?;
        Ok(ChannelRegistry {
            http,
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
        let client: Arc<dyn Channel> = match account.channel {
            ChannelKind::Wechat => {
                let config: WechatConfig =
                    serde_json::from_value(account.config.clone()).map_err(|e| {
                        ChannelError::Config(format!("wechat account {}: {e}", account.id))
                    })?;
                Arc::new(WechatPay::new(config, self.http.clone())?.with_clock(self.clock.clone()))
            }
            ChannelKind::Alipay => {
                let mut config: AlipayConfig = serde_json::from_value(account.config.clone())
                    .map_err(|e| {
                        ChannelError::Config(format!("alipay account {}: {e}", account.id))
                    })?;
                if let (true, Some(key)) = (account.sandbox, &self.sandbox_alipay_key) {
                    config.alipay_public_key_pem = Some(key.clone());
                }
                Arc::new(Alipay::new(config, self.http.clone())?.with_clock(self.clock.clone()))
            }
        };
        let mut clients = self.clients.write().unwrap_or_else(|p| p.into_inner());
        Ok(clients.entry(account.id.clone()).or_insert(client).clone())
    }
}
