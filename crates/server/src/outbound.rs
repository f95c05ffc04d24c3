//! Where merchant notifications may go.
//!
//! A `notify_url` is the merchant's text, so it can name anything: the
//! loopback interface, the cloud metadata service, a database on the private
//! network. paymux resolves the host itself and connects only to an address
//! it allows (public unicast, unless the operator said otherwise); IP
//! literals in any spelling (`2130706433`, `0x7f.1`, `[::ffff:127.0.0.1]`)
//! are normalised by the URL parser and checked the same way. Redirects are
//! never followed: a public endpoint answering 307 to an internal URL gets
//! no second request.

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Which destinations notifications may reach.
#[derive(Debug, Clone, Default)]
pub struct NotifyPolicy {
    /// Loopback addresses (127.0.0.0/8, ::1) are allowed: sandbox mode.
    pub allow_loopback: bool,
    /// Every address is allowed (`allow_private_notify_url`, local tests).
    pub allow_private: bool,
    /// Host names the operator allows whatever they resolve to.
    pub allowed_hosts: Vec<String>,
}

/// A destination refused by the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub host: String,
    pub addr: Option<IpAddr>,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            Some(addr) => write!(f, "{} resolves to {addr}, which is not allowed", self.host),
            None => write!(f, "{} has no allowed address", self.host),
        }
    }
}

impl StdError for Blocked {}

impl NotifyPolicy {
    fn host_allowed(&self, host: &str) -> bool {
        self.allow_private
            || self
                .allowed_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(host.trim_end_matches('.')))
    }

    /// Whether a connection to `ip` (reached through `host`) may be made.
    pub fn allows(&self, host: &str, ip: IpAddr) -> bool {
        if self.host_allowed(host) {
            return true;
        }
        match classify(ip) {
            Class::Public => true,
            Class::Loopback => self.allow_loopback,
            Class::Internal => false,
        }
    }

    /// Checks a URL before anything is sent. IP literals are decided here
    /// (the HTTP client never resolves them); host names are decided again,
    /// address by address, when [`GuardedResolver`] resolves them.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Blocked> {
        let host = url.host_str().unwrap_or_default().to_string();
        let ip = match url.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err(Blocked { host, addr: None }),
        };
        if self.allows(&host, ip) {
            Ok(())
        } else {
            Err(Blocked {
                host,
                addr: Some(ip),
            })
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Public,
    Loopback,
    /// Private, link-local, unique-local, multicast, reserved, metadata,
    /// documentation, unspecified: never a merchant's endpoint.
    Internal,
}

fn classify(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Class {
    let [a, b, c, _] = ip.octets();
    if a == 127 {
        return Class::Loopback;
    }
    let internal = a == 0                                  // "this network"
        || a == 10                                         // private
        || (a == 100 && (64..128).contains(&b))            // shared / CGNAT (Alibaba Cloud metadata 100.100.100.200)
        || (a == 169 && b == 254)                          // link-local, cloud metadata 169.254.169.254
        || (a == 172 && (16..32).contains(&b))             // private
        || (a == 192 && b == 0 && (c == 0 || c == 2))      // IETF protocol assignments, TEST-NET-1
        || (a == 192 && b == 88 && c == 99)                // 6to4 relay anycast
        || (a == 192 && b == 168)                          // private
        || (a == 198 && (b == 18 || b == 19))              // benchmarking
        || (a == 198 && b == 51 && c == 100)               // TEST-NET-2
        || (a == 203 && b == 0 && c == 113)                // TEST-NET-3
        || a >= 224; // multicast, reserved, broadcast
    if internal {
        Class::Internal
    } else {
        Class::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> Class {
    if ip.is_loopback() {
        return Class::Loopback;
    }
    let seg = ip.segments();
    // Forms that carry an IPv4 address are judged by that address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    if seg[..6] == [0, 0, 0, 0, 0, 0] {
        // IPv4-compatible (deprecated) and the unspecified address.
        return if ip.is_unspecified() {
            Class::Internal
        } else {
            classify_v4(embedded_v4(seg[6], seg[7]))
        };
    }
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        return classify_v4(embedded_v4(seg[6], seg[7])); // NAT64
    }
    if seg[0] == 0x2002 {
        return classify_v4(embedded_v4(seg[1], seg[2])); // 6to4
    }
    let internal = (seg[0] & 0xfe00) == 0xfc00             // unique local fc00::/7
        || (seg[0] & 0xffc0) == 0xfe80                     // link-local fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0                     // site-local (deprecated)
        || (seg[0] & 0xff00) == 0xff00                     // multicast
        || (seg[0] == 0x2001 && seg[1] == 0x0db8)          // documentation
        || (seg[0] == 0x2001 && seg[1] == 0)               // Teredo: hides an IPv4 peer
        || (seg[0] == 0x0100 && seg[1..4] == [0, 0, 0]); // discard-only
    if internal {
        Class::Internal
    } else {
        Class::Public
    }
}

fn embedded_v4(hi: u16, lo: u16) -> Ipv4Addr {
    let [a, b] = hi.to_be_bytes();
    let [c, d] = lo.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

/// Resolves host names and keeps only the addresses the policy allows, so
/// the connection is made to an address that was checked, never to one a
/// second lookup returned.
pub struct GuardedResolver {
    policy: Arc<NotifyPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut first_refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| {
                    let ok = policy.allows(&host, a.ip());
                    if !ok && first_refused.is_none() {
                        first_refused = Some(a.ip());
                    }
                    ok
                })
                .collect();
            if allowed.is_empty() {
                let blocked = Blocked {
                    host,
                    addr: first_refused,
                };
                return Err(Box::new(blocked) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client for merchant notifications: every URL checked by the
/// policy, names resolved by the guarded resolver, no redirects, and a
/// timeout for the whole delivery.
#[derive(Clone)]
pub struct NotifyClient {
    http: reqwest::Client,
    policy: Arc<NotifyPolicy>,
}

impl NotifyClient {
    /// A POST to `url`, or why it may not be sent.
    pub fn post(&self, url: reqwest::Url) -> Result<reqwest::RequestBuilder, Blocked> {
        self.policy.check_url(&url)?;
        Ok(self.http.post(url))
    }
}

pub fn notify_client(
    policy: Arc<NotifyPolicy>,
    timeout: Duration,
) -> Result<NotifyClient, reqwest::Error> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3).min(timeout))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(GuardedResolver {
            policy: policy.clone(),
        })
        .build()?;
    Ok(NotifyClient { http, policy })
}

/// Finds a [`Blocked`] anywhere in an error's chain of causes.
pub fn blocked_cause<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a Blocked> {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(b) = e.downcast_ref::<Blocked>() {
            return Some(b);
        }
        cause = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> NotifyPolicy {
        NotifyPolicy::default()
    }

    fn url_allowed(policy: &NotifyPolicy, url: &str) -> bool {
        policy
            .check_url(&reqwest::Url::parse(url).expect("url"))
            .is_ok()
    }

    #[test]
    fn every_spelling_of_an_internal_address_is_refused() {
        let p = strict();
        for url in [
            "http://127.0.0.1:8080/n",
            "http://2130706433:8080/n",
            "http://0x7f.1:8080/n",
            "http://0177.0.0.1/n",
            "http://127.1/n",
            "http://[::1]:8080/n",
            "http://[::ffff:127.0.0.1]/n",
            "http://[::ffff:7f00:1]/n",
            "http://[::127.0.0.1]/n",
            "http://0.0.0.0/n",
            "http://[::]/n",
            "https://10.1.2.3/n",
            "https://172.16.0.1/n",
            "https://172.31.255.255/n",
            "https://192.168.1.1/n",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.100.100.200/latest/meta-data/",
            "http://[fd00::1]/n",
            "http://[fe80::1]/n",
            "http://[ff02::1]/n",
            "http://[64:ff9b::a9fe:a9fe]/n",
            "http://[2002:a9fe:a9fe::1]/n",
            "http://224.0.0.1/n",
            "http://255.255.255.255/n",
        ] {
            assert!(!url_allowed(&p, url), "{url} must be refused");
        }
    }

    #[test]
    fn public_addresses_and_names_pass_the_url_check() {
        let p = strict();
        for url in [
            "https://1.1.1.1/n",
            "https://[2400:3200::1]/n",
            "https://172.32.0.1/n",
            "https://mall.example.com/notify",
        ] {
            assert!(url_allowed(&p, url), "{url} must be allowed");
        }
    }

    #[test]
    fn sandbox_allows_loopback_only() {
        let p = NotifyPolicy {
            allow_loopback: true,
            ..NotifyPolicy::default()
        };
        assert!(url_allowed(&p, "http://127.0.0.1:9/n"));
        assert!(url_allowed(&p, "http://[::1]:9/n"));
        assert!(!url_allowed(&p, "http://192.168.0.1/n"));
        assert!(!url_allowed(&p, "http://169.254.169.254/"));
    }

    #[test]
    fn the_operator_allow_list_and_private_override() {
        let listed = NotifyPolicy {
            allowed_hosts: vec!["hooks.internal".into()],
            ..NotifyPolicy::default()
        };
        assert!(listed.allows("hooks.internal", "10.0.0.5".parse().unwrap()));
        assert!(listed.allows("HOOKS.internal.", "10.0.0.5".parse().unwrap()));
        assert!(!listed.allows("other.internal", "10.0.0.5".parse().unwrap()));
        let open = NotifyPolicy {
            allow_private: true,
            ..NotifyPolicy::default()
        };
        assert!(url_allowed(&open, "http://10.0.0.5/n"));
    }

    #[tokio::test]
    async fn the_resolver_drops_what_the_policy_refuses() {
        let resolver = GuardedResolver {
            policy: Arc::new(strict()),
        };
        let err = match resolver.resolve("localhost".parse().unwrap()).await {
            Ok(_) => panic!("localhost must be refused"),
            Err(e) => e,
        };
        assert!(blocked_cause(err.as_ref()).is_some(), "{err}");
        let sandbox = GuardedResolver {
            policy: Arc::new(NotifyPolicy {
                allow_loopback: true,
                ..NotifyPolicy::default()
            }),
        };
        let addrs: Vec<_> = match sandbox.resolve("localhost".parse().unwrap()).await {
            Ok(a) => a.collect(),
            Err(e) => panic!("sandbox resolves localhost: {e}"),
        };
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    }
}
