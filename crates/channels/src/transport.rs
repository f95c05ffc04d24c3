//! The HTTP client every channel call goes through. Both timeouts are always
//! set: a channel that accepts a connection and never answers must not hold
//! a create request, a poller slot or a lease forever.

use std::time::Duration;

use crate::ChannelError;

/// Connect and whole-request timeouts of channel calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// The whole call: connect, send, wait, read the answer.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(3),
            request: Duration::from_secs(10),
        }
    }
}

/// A client with both timeouts set, shared by every account (one connection
/// pool per channel host).
pub fn client(timeouts: Timeouts) -> Result<reqwest::Client, ChannelError> {
    client_trusting(timeouts, None)
}

/// [`client`], also trusting the certificates of a PEM bundle (a sandbox
/// served over its own TLS reaches its in-process simulators through it).
pub fn client_trusting(
    timeouts: Timeouts,
    extra_roots_pem: Option<&[u8]>,
) -> Result<reqwest::Client, ChannelError> {
    if timeouts.connect.is_zero() || timeouts.request.is_zero() {
        return Err(ChannelError::Config(
            "channel HTTP timeouts must be greater than zero".into(),
        ));
    }
    let mut builder = reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.request);
    if let Some(pem) = extra_roots_pem {
        let roots = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| ChannelError::Config(format!("trusted certificates: {e}")))?;
        builder = builder.tls_certs_merge(roots);
    }
    builder
        .build()
        .map_err(|e| ChannelError::Config(format!("HTTP client: {e}")))
}

/// The longest wait a channel's `Retry-After` can impose. The header is
/// read before any signature check, so it is outside input: a huge value
/// must not suspend an account for years.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The seconds of a `Retry-After` header, when it gives seconds, at most
/// [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod retry_after_tests {
    use super::*;

    #[test]
    fn retry_after_is_bounded() {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, "30".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(30)));
        h.insert(
            http::header::RETRY_AFTER,
            "18446744073709551615".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert(http::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
