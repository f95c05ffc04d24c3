//! Builds and caches one channel client per channel account, each wrapped
//! in its circuit breakers ([`GuardedChannel`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use paymux_channels::alipay::{Alipay, AlipayConfig};
use paymux_channels::unionpay::{Unionpay, UnionpayConfig};
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
    /// In sandbox mode, what the in-process simulators verify with. Their
    /// keys are made fresh at every start, so sandbox accounts trust these
    /// rather than what was stored when they were created.
    sandbox: Option<SandboxTrust>,
    /// The pace of every client's calls, shared by them all.
    pacer: Option<Arc<crate::rate_limit::Pacer>>,
}

/// The in-process simulators' public keys and certificates.
#[derive(Debug, Clone)]
pub struct SandboxTrust {
    pub alipay_public_key: String,
    pub unionpay_root_cert: String,
    pub unionpay_middle_cert: String,
}

impl ChannelRegistry {
    /// `extra_roots_pem`: certificates channel calls also trust (a sandbox
    /// serving its own TLS, whose simulators are reached through it).
    pub fn new(
        clock: Arc<dyn Clock>,
        http_config: &ChannelHttpConfig,
        breaker: BreakerConfig,
        extra_roots_pem: Option<&[u8]>,
    ) -> Result<Self, ChannelError> {
        let http =
            paymux_channels::transport::client_trusting(http_config.timeouts(), extra_roots_pem)?;
        Ok(ChannelRegistry {
            http,
            breakers: Arc::new(Breakers::new(breaker, clock.clone())),
            clock,
            clients: RwLock::new(HashMap::new()),
            sandbox: None,
            pacer: None,
        })
    }

    /// Paces every client's calls to `[rate_limit.outbound]`.
    pub fn with_outbound_limits(mut self, config: crate::config::OutboundConfig) -> Self {
        self.pacer = Some(Arc::new(crate::rate_limit::Pacer::new(config)));
        self
    }

    pub fn with_sandbox_trust(mut self, trust: SandboxTrust) -> Self {
        self.sandbox = Some(trust);
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
            self.sandbox.as_ref(),
        )?;
        client = Arc::new(GuardedChannel::new(
            client,
            account.channel.as_str(),
            &account.id,
            self.breakers.clone(),
            self.pacer.clone(),
            self.clock.clone(),
        ));
        let mut clients = self.clients.write().unwrap_or_else(|p| p.into_inner());
        Ok(clients.entry(account.id.clone()).or_insert(client).clone())
    }
}

/// Builds the client for an account. `sandbox` holds the in-process
/// simulators' keys, which change at every start: sandbox accounts verify
/// with them instead of whatever their config recorded.
pub fn build(
    account: &ChannelAccount,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    sandbox: Option<&SandboxTrust>,
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
            if let (true, Some(trust)) = (account.sandbox, sandbox) {
                config.alipay_public_key_pem = Some(trust.alipay_public_key.clone());
            }
            Arc::new(Alipay::new(config, http)?.with_clock(clock))
        }
        ChannelKind::Unionpay => {
            let mut config: UnionpayConfig =
                serde_json::from_value(account.config.clone()).map_err(config_error)?;
            if let (true, Some(trust)) = (account.sandbox, sandbox) {
                config.root_cert_pem = trust.unionpay_root_cert.clone();
                config.middle_cert_pem = trust.unionpay_middle_cert.clone();
            }
            Arc::new(Unionpay::new(config, http)?.with_clock(clock))
        }
    })
}
