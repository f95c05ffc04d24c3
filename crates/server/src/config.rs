//! Server configuration, with the defaults a laptop sandbox needs.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
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
    /// Allowed distance between a request's timestamp and our clock.
    pub timestamp_window_secs: i64,
    /// A payment's life when the merchant gives no `expires_in_seconds`.
    pub default_expiry_secs: i64,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    pub notifier: NotifierConfig,
}

#[derive(Debug, Clone, Deserialize)]
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
            timestamp_window_secs: 300,
            default_expiry_secs: 2 * 3600,
            max_body_bytes: 64 * 1024,
            notifier: NotifierConfig::default(),
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
        }
    }
}

impl ServerConfig {
    /// The callback base URL channels are given: `public_url`, or
    /// `http://{addr}` when none is set. Outside sandbox it must be https
    /// unless `allow_insecure_public_url` says otherwise.
    pub fn effective_public_url(&self, addr: SocketAddr) -> Result<String, String> {
        let url = match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
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
        if notify_url.starts_with("https://") || self.sandbox || self.allow_http_notify_url {
            return Ok(());
        }
        Err("notify_url: must be an https URL".into())
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
    fn config_file_overrides_defaults() {
        let c: ServerConfig =
            serde_json::from_str(r#"{"sandbox": true, "notifier": {"schedule_secs": [1, 2]}}"#)
                .unwrap();
        assert!(c.sandbox);
        assert_eq!(c.notifier.schedule_secs, vec![1, 2]);
        assert_eq!(c.timestamp_window_secs, 300);
    }
}
