//! Server configuration, with the defaults a laptop sandbox needs.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that set configuration keys:
/// `PAYMUX_PUBLIC_URL`, `PAYMUX_NOTIFIER_SCHEDULE_SECS`, …
pub const ENV_PREFIX: &str = "PAYMUX_";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The URL channels reach paymux at (callbacks go to `{public_url}/notify/...`).
    /// Defaults to `http://{listen}`.
    pub public_url: Option<String>,
    /// Mount the channel simulators and give every merchant sandbox accounts.
    pub sandbox: bool,
    /// Outside sandbox the public URL must be https (WeChat Pay only calls
    /// back over https). This lets a local or test setup use http anyway; it
    /// is logged loudly at start.
    pub allow_insecure_public_url: bool,
    /// Outside sandbox merchants' `notify_url`s must be https, unless this is set.
    pub allow_http_notify_url: bool,
    /// Notifications may go to loopback, private, link-local and other
    /// internal addresses (for local tests; logged loudly at every start).
    /// Otherwise only public addresses are reached, and in sandbox loopback.
    pub allow_private_notify_url: bool,
    /// Host names notifications may reach whatever they resolve to (an
    /// operator's own endpoints on the private network).
    pub notify_allowed_hosts: Vec<String>,
    /// Proxies in front of paymux (nginx at `127.0.0.1`, say) whose
    /// `X-Real-IP` / `X-Forwarded-For` name the payer's address, which
    /// WeChat Pay H5 payments need. From any other peer those headers are
    /// ignored.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// A PostgreSQL URL (`postgres://…`); without it paymux uses SQLite in the data directory.
    pub database_url: Option<SecretString>,
    /// PostgreSQL connections this node keeps at most (SQLite has its own:
    /// one writer, four readers).
    pub database_pool_size: u32,
    /// The operator token of the admin API (`Authorization: Bearer …`).
    /// Without one the admin API does not exist.
    pub admin_token: Option<SecretString>,
    /// A file holding the master key that seals secrets at rest (the key
    /// itself can come from `PAYMUX_MASTER_KEY` instead).
    pub master_key_file: Option<std::path::PathBuf>,
    /// `text` (default) or `json` (one JSON object per line, for log collectors).
    pub log_format: LogFormat,
    /// Allowed distance between a request's timestamp and our clock.
    pub timestamp_window_secs: i64,
    /// A payment's life when the merchant gives no `expires_in_seconds`.
    pub default_expiry_secs: i64,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Serve HTTPS with this certificate chain (PEM) and key (PEM).
    pub tls_cert_file: Option<std::path::PathBuf>,
    pub tls_key_file: Option<std::path::PathBuf>,
    /// Verify client certificates issued under this CA (PEM): mutual TLS.
    pub client_ca_file: Option<std::path::PathBuf>,
    /// Refuse every TLS connection without a client certificate (a listener
    /// for the merchant API only: channels present none when calling back).
    pub client_cert_required: bool,
    /// Connection, header, body and request time limits.
    pub http: crate::http_limits::HttpLimits,
    /// Failed merchant authentication, per client address and per app.
    pub auth_failures: crate::api::auth_failures::AuthFailureLimits,
    pub notifier: NotifierConfig,
    pub poller: PollerConfig,
    pub reconcile: ReconcileConfig,
    pub rate_limit: RateLimitConfig,
    pub audit: AuditConfig,
    pub breaker: BreakerConfig,
    pub channel_http: ChannelHttpConfig,
}

/// A configured secret: never printed, compared in constant time.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(value.into())
    }

    /// Compares in constant time (over digests, so lengths do not leak either).
    pub fn matches(&self, given: &str) -> bool {
        use aws_lc_rs::digest::{digest, SHA256};
        if self.0.is_empty() {
            return false;
        }
        let a = digest(&SHA256, self.0.as_bytes());
        let b = digest(&SHA256, given.as_bytes());
        aws_lc_rs::constant_time::verify_slices_are_equal(a.as_ref(), b.as_ref()).is_ok()
    }
}

impl SecretString {
    /// The value itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Serialized masked: printing a configuration never prints its secrets.
impl Serialize for SecretString {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("********")
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"********\"")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifierConfig {
    pub enabled: bool,
    /// Delays between delivery attempts, in seconds; after the last one the event is dead.
    pub schedule_secs: Vec<u64>,
    /// How long one delivery may take before it counts as failed.
    pub timeout_secs: u64,
    /// How often the outbox is polled when nothing wakes the worker.
    pub poll_interval_ms: u64,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Deliveries in flight at once for one merchant, so that one merchant's
    /// dead endpoint never holds every slot.
    pub per_merchant_concurrency: usize,
}

/// `[audit]`: the audit trail's sealer.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// How often new rows of the trail are chained.
    pub seal_interval_ms: u64,
    /// How often the chain's head is written to the log (to anchor it).
    pub head_log_interval_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            seal_interval_ms: 1000,
            head_log_interval_secs: 3600,
        }
    }
}

/// `[rate_limit]`: how many merchant API requests each app may make, per
/// node. `app_rps = 0` turns the limit off.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per second an app may make on average.
    pub app_rps: f64,
    /// Requests an idle app may make at once.
    pub app_burst: u32,
    /// Other limits for some apps, by app id.
    pub apps: std::collections::BTreeMap<String, AppRate>,
    /// The pace of calls to the channels.
    pub outbound: OutboundConfig,
}

/// `[rate_limit.outbound]`: calls per second to the channels, per channel
/// account and operation (`prepay`, `query`, `close`, `refund`,
/// `query_refund`); absent or 0 is no limit.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// Longest a call waits for its turn; past it, it is not made (503
    /// `CHANNEL_UNAVAILABLE` with `Retry-After` for a create or refund).
    pub max_wait_ms: u64,
    /// By channel (`wechat`, `alipay`, `unionpay`): operation → calls per second.
    pub channels: std::collections::BTreeMap<String, std::collections::BTreeMap<String, f64>>,
    /// By channel account id, replacing its channel's rates.
    pub accounts: std::collections::BTreeMap<String, std::collections::BTreeMap<String, f64>>,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        // WeChat Pay's published limits per merchant (queries 1800/s,
        // orders 600/s, refunds 150/s, refund queries 300/s).
        let wechat = [
            ("prepay", 600.0),
            ("query", 1800.0),
            ("close", 600.0),
            ("refund", 150.0),
            ("query_refund", 300.0),
        ]
        .map(|(op, rps)| (op.to_string(), rps))
        .into();
        OutboundConfig {
            max_wait_ms: 1000,
            channels: [("wechat".to_string(), wechat)].into(),
            accounts: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppRate {
    pub rps: f64,
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            app_rps: 1000.0,
            app_burst: 2000,
            apps: Default::default(),
            outbound: OutboundConfig::default(),
        }
    }
}

impl RateLimitConfig {
    /// The rate `app_id` is held to (`None`: unlimited).
    pub fn for_app(&self, app_id: &str) -> Option<crate::rate_limit::Rate> {
        match self.apps.get(app_id) {
            Some(r) => crate::rate_limit::Rate::new(r.rps, r.burst),
            None => crate::rate_limit::Rate::new(self.app_rps, self.app_burst),
        }
    }
}

/// `[reconcile]`: the daily reconciliation of every account whose
/// channel's bills paymux reads.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconcileConfig {
    pub enabled: bool,
    /// From this hour (0–23, China time) yesterday's bills are fetched; the
    /// channels make them in the morning (WeChat Pay from 09:00).
    pub hour: u32,
    /// How often the worker looks for a day not reconciled yet.
    pub check_interval_secs: u64,
    /// A daily run that failed is tried again this long after.
    pub retry_failed_secs: u64,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            enabled: true,
            hour: 10,
            check_interval_secs: 300,
            retry_failed_secs: 3600,
        }
    }
}

/// Status checks of open payments at their channel: polling for lost
/// callbacks, unknown prepay outcomes, and closing expired payments.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PollerConfig {
    pub enabled: bool,
    /// Seconds after creation before an open payment is first checked.
    pub first_delay_secs: u64,
    /// Delays between later checks, in seconds; once spent, the payment is
    /// next checked when it expires.
    pub schedule_secs: Vec<u64>,
    /// A `created` payment the channel does not know is closed once it is
    /// this old: a prepay sent before then has surely arrived or failed.
    pub prepay_window_secs: u64,
    /// Delay before trying again to close an expired payment after the
    /// channel could not be reached.
    pub expiry_retry_secs: u64,
    /// How often due payments are looked for.
    pub interval_ms: u64,
    /// Checks in flight at once.
    pub concurrency: usize,
}

impl Default for PollerConfig {
    fn default() -> Self {
        PollerConfig {
            enabled: true,
            first_delay_secs: 60,
            schedule_secs: vec![60, 120, 300, 600, 1800, 3600],
            prepay_window_secs: 120,
            expiry_retry_secs: 60,
            interval_ms: 1000,
            concurrency: 8,
        }
    }
}

impl PollerConfig {
    /// The delay before the check after `attempts` checks were made, or
    /// `None` when the schedule is spent.
    pub fn delay_after(&self, attempts: usize) -> Option<Duration> {
        self.schedule_secs
            .get(attempts.checked_sub(1)?)
            .map(|s| Duration::from_secs(*s))
    }
}

/// Circuit breakers on channel calls: one per channel account and operation
/// (prepay, query, close). Only transport failures, timeouts, 5xx answers
/// and rate limits count as failures; a refusal is a healthy answer.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    pub enabled: bool,
    /// Length of the window failures are counted in.
    pub window_secs: u64,
    /// Calls in the window before its failure rate is judged.
    pub min_calls: u32,
    /// Share of failed calls in the window that opens the breaker (0–1).
    pub failure_rate: f64,
    /// Failures in a row that open the breaker whatever the window says.
    pub consecutive_failures: u32,
    /// How long an open breaker refuses calls before letting trial calls through.
    pub open_secs: u64,
    /// Trial calls let through at once when half-open; all must succeed to close it.
    pub half_open_calls: u32,
    /// Back-off after a rate-limit answer that does not say how long to wait.
    pub rate_limit_backoff_secs: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            enabled: true,
            window_secs: 60,
            min_calls: 10,
            failure_rate: 0.5,
            consecutive_failures: 5,
            open_secs: 30,
            half_open_calls: 1,
            rate_limit_backoff_secs: 1,
        }
    }
}

/// Timeouts of every call paymux makes to a channel.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelHttpConfig {
    pub connect_timeout_ms: u64,
    /// The whole call, from connecting to reading the answer. Keep it well
    /// below `poller.prepay_window_secs`.
    pub request_timeout_ms: u64,
}

impl Default for ChannelHttpConfig {
    fn default() -> Self {
        ChannelHttpConfig {
            connect_timeout_ms: 3_000,
            request_timeout_ms: 10_000,
        }
    }
}

impl ChannelHttpConfig {
    pub fn timeouts(&self) -> paymux_channels::transport::Timeouts {
        paymux_channels::transport::Timeouts {
            connect: Duration::from_millis(self.connect_timeout_ms),
            request: Duration::from_millis(self.request_timeout_ms),
        }
    }
}

/// WeChat Pay's own callback retry schedule, which merchants already know.
pub const WECHAT_SCHEDULE_SECS: [u64; 15] = [
    15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600,
];

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            sandbox: false,
            allow_insecure_public_url: false,
            allow_http_notify_url: false,
            allow_private_notify_url: false,
            notify_allowed_hosts: Vec::new(),
            trusted_proxies: Vec::new(),
            admin_token: None,
            database_url: None,
            database_pool_size: paymux_store::postgres::MAX_CONNECTIONS,
            master_key_file: None,
            log_format: LogFormat::Text,
            timestamp_window_secs: 300,
            default_expiry_secs: 2 * 3600,
            max_body_bytes: 64 * 1024,
            tls_cert_file: None,
            tls_key_file: None,
            client_ca_file: None,
            client_cert_required: false,
            http: Default::default(),
            auth_failures: Default::default(),
            notifier: NotifierConfig::default(),
            poller: PollerConfig::default(),
            reconcile: ReconcileConfig::default(),
            rate_limit: RateLimitConfig::default(),
            audit: AuditConfig::default(),
            breaker: BreakerConfig::default(),
            channel_http: ChannelHttpConfig::default(),
        }
    }
}

impl Default for NotifierConfig {
    fn default() -> Self {
        NotifierConfig {
            enabled: true,
            schedule_secs: WECHAT_SCHEDULE_SECS.to_vec(),
            timeout_secs: 10,
            poll_interval_ms: 1000,
            concurrency: 16,
            per_merchant_concurrency: 4,
        }
    }
}

impl ServerConfig {
    /// The effective configuration: defaults, then the config file (`file`,
    /// already parsed), then `PAYMUX_…` variables from `env`. Every key has a
    /// variable: its path in upper case joined by `_` (`notifier.timeout_secs`
    /// is `PAYMUX_NOTIFIER_TIMEOUT_SECS`). Lists take `1,2,3` or `[1,2,3]`.
    pub fn load(
        file: Option<serde_json::Value>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<ServerConfig, String> {
        use serde_json::Value;
        let defaults = serde_json::to_value(ServerConfig::default()).map_err(|e| e.to_string())?;
        let mut merged = file.unwrap_or_else(|| Value::Object(Default::default()));
        let Some(root) = merged.as_object_mut() else {
            return Err("the config file must be a table of keys".into());
        };
        let env: std::collections::HashMap<String, String> = env.into_iter().collect();
        let Some(default_root) = defaults.as_object() else {
            return Err("defaults are not a table".into());
        };
        for (key, default) in default_root {
            if let Some(children) = default.as_object() {
                for (child, child_default) in children {
                    let name = format!("{ENV_PREFIX}{}_{}", key, child).to_uppercase();
                    if let Some(raw) = env.get(&name) {
                        let value = env_value(&name, raw, child_default)?;
                        let table = root
                            .entry(key.clone())
                            .or_insert_with(|| Value::Object(Default::default()));
                        match table.as_object_mut() {
                            Some(t) => {
                                t.insert(child.clone(), value);
                            }
                            None => return Err(format!("{key} must be a table")),
                        }
                    }
                }
            } else {
                let name = format!("{ENV_PREFIX}{key}").to_uppercase();
                if let Some(raw) = env.get(&name) {
                    root.insert(key.clone(), env_value(&name, raw, default)?);
                }
            }
        }
        let config: ServerConfig =
            serde_json::from_value(merged).map_err(|e| format!("configuration: {e}"))?;
        if config.reconcile.hour > 23 {
            return Err("reconcile.hour must be 0 to 23 (an hour of China time)".into());
        }
        Ok(config)
    }

    /// The callback base URL channels are given: `public_url`, or
    /// `http://{addr}` when none is set. Outside sandbox it must be https
    /// unless `allow_insecure_public_url` says otherwise.
    pub fn effective_public_url(&self, addr: SocketAddr) -> Result<String, String> {
        let url = match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None if self.tls_cert_file.is_some() => format!("https://{addr}"),
            None if self.sandbox || self.allow_insecure_public_url => format!("http://{addr}"),
            None => {
                return Err(
                    "public_url is required outside sandbox: the https URL channels call back \
                     (e.g. --public-url https://pay.example.com)"
                        .into(),
                )
            }
        };
        let parsed = reqwest::Url::parse(&url).map_err(|e| format!("public_url {url:?}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() {
            return Err(format!(
                "public_url {url:?} must be an http(s) URL without query"
            ));
        }
        if parsed.scheme() != "https" && !self.sandbox && !self.allow_insecure_public_url {
            return Err(format!(
                "public_url {url:?} must be https outside sandbox: channels call back only over https \
                 (allow_insecure_public_url = true overrides this for local tests)"
            ));
        }
        Ok(url)
    }

    /// Whether a merchant may use `notify_url`: https always; http in sandbox
    /// or when `allow_http_notify_url` is set.
    pub fn check_notify_url(&self, notify_url: &str) -> Result<(), String> {
        if !(notify_url.starts_with("https://") || self.sandbox || self.allow_http_notify_url) {
            return Err("notify_url: must be an https URL".into());
        }
        // Addresses written into the URL are refused now; names are checked
        // when they are resolved for each delivery.
        if let Ok(url) = reqwest::Url::parse(notify_url) {
            if self.notify_policy().check_url(&url).is_err() {
                return Err(
                    "notify_url: must not point at a loopback, private or other internal address"
                        .into(),
                );
            }
        }
        Ok(())
    }

    /// The TLS files, when paymux serves HTTPS itself.
    pub fn tls_files(&self) -> Result<Option<crate::tls::TlsFiles>, String> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Ok(Some(crate::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.client_ca_file.clone(),
                client_cert_required: self.client_cert_required,
            })),
            (None, None) if self.client_ca_file.is_none() && !self.client_cert_required => Ok(None),
            _ => Err(
                "tls_cert_file and tls_key_file go together, and client_ca_file and \
                      client_cert_required need them"
                    .into(),
            ),
        }
    }

    /// Where merchant notifications may go.
    pub fn notify_policy(&self) -> crate::outbound::NotifyPolicy {
        crate::outbound::NotifyPolicy {
            allow_loopback: self.sandbox,
            allow_private: self.allow_private_notify_url,
            allowed_hosts: self.notify_allowed_hosts.clone(),
        }
    }
}

/// An environment variable's text as the JSON value its key takes: strings
/// stay strings, everything else (numbers, booleans, lists) is parsed.
fn env_value(
    name: &str,
    raw: &str,
    default: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    match default {
        Value::String(_) | Value::Null => Ok(Value::String(raw.to_string())),
        Value::Array(_) if !raw.trim_start().starts_with('[') => {
            serde_json::from_str(&format!("[{raw}]"))
                .map_err(|_| format!("{name}: expected a list like 1,2,3"))
        }
        _ => serde_json::from_str(raw.trim())
            .map_err(|_| format!("{name}: {raw:?} is not a valid value")),
    }
}

impl NotifierConfig {
    /// The delay before attempt number `attempts + 1`, or `None` when the schedule is spent.
    pub fn delay_after(&self, attempts: usize) -> Option<Duration> {
        self.schedule_secs
            .get(attempts.checked_sub(1)?)
            .map(|s| Duration::from_secs(*s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_runs_out() {
        let n = NotifierConfig::default();
        assert_eq!(n.delay_after(1), Some(Duration::from_secs(15)));
        assert_eq!(n.delay_after(4), Some(Duration::from_secs(180)));
        assert_eq!(n.delay_after(15), Some(Duration::from_secs(21600)));
        assert_eq!(n.delay_after(16), None);
    }

    #[test]
    fn poll_schedule_runs_out() {
        let p = PollerConfig::default();
        assert_eq!(p.delay_after(0), None);
        assert_eq!(p.delay_after(1), Some(Duration::from_secs(60)));
        assert_eq!(p.delay_after(6), Some(Duration::from_secs(3600)));
        assert_eq!(p.delay_after(7), None);
        let env = [
            ("PAYMUX_POLLER_SCHEDULE_SECS", "5,10"),
            ("PAYMUX_POLLER_FIRST_DELAY_SECS", "30"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let c = ServerConfig::load(None, env).unwrap();
        assert_eq!(c.poller.schedule_secs, vec![5, 10]);
        assert_eq!(c.poller.first_delay_secs, 30);
    }

    #[test]
    fn rate_limits_and_the_reconciliation_hour_are_configured_and_checked() {
        let env = [
            ("PAYMUX_RATE_LIMIT_APP_RPS", "50"),
            ("PAYMUX_RATE_LIMIT_APP_BURST", "10"),
            ("PAYMUX_RECONCILE_HOUR", "9"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let file = serde_json::json!({"rate_limit": {"apps": {"app_big": {"rps": 0, "burst": 1}}}});
        let c = ServerConfig::load(Some(file), env).unwrap();
        assert_eq!((c.rate_limit.app_rps, c.rate_limit.app_burst), (50.0, 10));
        assert_eq!(c.reconcile.hour, 9);
        assert!(c.rate_limit.for_app("app_any").is_some());
        assert_eq!(c.rate_limit.for_app("app_big"), None, "0 rps: no limit");
        let late = [("PAYMUX_RECONCILE_HOUR".to_string(), "24".to_string())];
        assert!(ServerConfig::load(None, late)
            .unwrap_err()
            .contains("reconcile.hour"));
    }

    #[test]
    fn public_and_notify_urls_must_be_https_outside_sandbox() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 8080));
        let mut c = ServerConfig::default();
        assert!(c.effective_public_url(addr).is_err());
        c.public_url = Some("http://pay.example.com".into());
        assert!(c.effective_public_url(addr).unwrap_err().contains("https"));
        c.public_url = Some("https://pay.example.com/".into());
        assert_eq!(
            c.effective_public_url(addr).unwrap(),
            "https://pay.example.com"
        );
        assert!(c.check_notify_url("http://mall.example.com/n").is_err());
        assert!(c.check_notify_url("https://mall.example.com/n").is_ok());
        c.allow_http_notify_url = true;
        assert!(c.check_notify_url("http://mall.example.com/n").is_ok());
        c.public_url = None;
        c.allow_insecure_public_url = true;
        assert_eq!(
            c.effective_public_url(addr).unwrap(),
            "http://127.0.0.1:8080"
        );
        let sandbox = ServerConfig {
            sandbox: true,
            ..Default::default()
        };
        assert_eq!(
            sandbox.effective_public_url(addr).unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(sandbox.check_notify_url("http://localhost/n").is_ok());
    }

    #[test]
    fn environment_overrides_the_file() {
        let file = serde_json::json!({"listen": "0.0.0.0:9000", "notifier": {"timeout_secs": 3}});
        let env = [
            ("PAYMUX_PUBLIC_URL", "https://pay.example.com"),
            ("PAYMUX_TIMESTAMP_WINDOW_SECS", "120"),
            ("PAYMUX_NOTIFIER_SCHEDULE_SECS", "1,2,3"),
            ("PAYMUX_ADMIN_TOKEN", "123456"),
            ("PAYMUX_LOG_FORMAT", "json"),
            ("PAYMUX_ALLOW_HTTP_NOTIFY_URL", "true"),
            ("PAYMUX_UNRELATED", "x"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let c = ServerConfig::load(Some(file), env).unwrap();
        assert_eq!(c.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(c.public_url.as_deref(), Some("https://pay.example.com"));
        assert_eq!(c.timestamp_window_secs, 120);
        assert_eq!(c.notifier.schedule_secs, vec![1, 2, 3]);
        assert_eq!(c.notifier.timeout_secs, 3);
        assert!(c.admin_token.as_ref().unwrap().matches("123456"));
        assert!(!c.admin_token.as_ref().unwrap().matches("12345"));
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(c.allow_http_notify_url);
        // Printing the configuration masks its secrets.
        let shown = serde_json::to_string(&c).unwrap();
        assert!(
            !shown.contains("123456") && shown.contains("********"),
            "{shown}"
        );
        assert!(!format!("{c:?}").contains("123456"));

        let bad = [(
            "PAYMUX_TIMESTAMP_WINDOW_SECS".to_string(),
            "soon".to_string(),
        )];
        assert!(ServerConfig::load(None, bad)
            .unwrap_err()
            .contains("PAYMUX_TIMESTAMP_WINDOW_SECS"));
        let unknown = serde_json::json!({"lisen": "x"});
        assert!(ServerConfig::load(Some(unknown), []).is_err());
    }

    #[test]
    fn breaker_and_timeout_keys_load() {
        let env = [
            ("PAYMUX_BREAKER_OPEN_SECS", "5"),
            ("PAYMUX_BREAKER_FAILURE_RATE", "0.25"),
            ("PAYMUX_CHANNEL_HTTP_REQUEST_TIMEOUT_MS", "2500"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let file = serde_json::json!({"breaker": {"half_open_calls": 2}});
        let c = ServerConfig::load(Some(file), env).unwrap();
        assert_eq!(c.breaker.open_secs, 5);
        assert_eq!(c.breaker.failure_rate, 0.25);
        assert_eq!(c.breaker.half_open_calls, 2);
        assert_eq!(c.breaker.window_secs, 60);
        assert_eq!(
            c.channel_http.timeouts().request,
            Duration::from_millis(2500)
        );
    }

    #[test]
    fn config_file_overrides_defaults() {
        let c: ServerConfig =
            serde_json::from_str(r#"{"sandbox": true, "notifier": {"schedule_secs": [1, 2]}}"#)
                .unwrap();
        assert!(c.sandbox);
        assert_eq!(c.notifier.schedule_secs, vec![1, 2]);
        assert_eq!(c.timestamp_window_secs, 300);
    }
}
