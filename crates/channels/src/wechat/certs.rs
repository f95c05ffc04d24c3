//! Platform certificates: downloaded from `GET /v3/certificates`, decrypted
//! with the APIv3 key, cached by serial and refreshed for rotation.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};

use super::client::SignatureHeaders;
use super::sign;
use super::types::{CertificatesResponse, AEAD_AES_256_GCM};
use super::WechatPay;
use crate::keys::{Certificate, PublicKey};
use crate::ChannelError;

/// WeChat rotates platform certificates with an overlap; re-downloading twice
/// a day picks up a new one well before the old one stops being used.
const MAX_AGE: i64 = 12 * 3600;
/// An unknown serial triggers a download at most this often, so a flood of
/// forged callbacks cannot make paymux hammer WeChat.
const MIN_REFRESH_INTERVAL: i64 = 60;

#[derive(Default)]
pub(super) struct CertCache {
    certs: HashMap<String, Certificate>,
    fetched_at: Option<DateTime<Utc>>,
    attempted_at: Option<DateTime<Utc>>,
}

impl CertCache {
    pub fn serials(&self) -> Vec<String> {
        self.certs.keys().cloned().collect()
    }

    fn get(&self, serial: &str, now: DateTime<Utc>) -> Option<PublicKey> {
        self.certs
            .get(&serial.to_ascii_uppercase())
            .filter(|c| c.is_valid_at(now))
            .map(|c| c.public_key.clone())
    }

    fn stale(&self, now: DateTime<Utc>) -> bool {
        self.fetched_at
            .is_none_or(|t| now - t > Duration::seconds(MAX_AGE))
    }

    fn may_attempt(&self, now: DateTime<Utc>) -> bool {
        // Until a first download succeeded every need may try again; after
        // that, at most once per interval.
        self.fetched_at.is_none()
            || self
                .attempted_at
                .is_none_or(|t| now - t >= Duration::seconds(MIN_REFRESH_INTERVAL))
    }
}

impl WechatPay {
    /// The key that verifies a signature made under `serial`: the configured
    /// WeChat Pay public key when its id matches, else a platform certificate.
    pub(super) async fn verifying_key(
        &self,
        serial: &str,
        now: DateTime<Utc>,
    ) -> Result<PublicKey, ChannelError> {
        if let Some((id, key)) = &self.platform_key {
            if id == serial {
                return Ok(key.clone());
            }
        }
        let mut cache = self.certs.lock().await;
        let known = cache.get(serial, now);
        let need = known.is_none() || cache.stale(now);
        if need && cache.may_attempt(now) {
            if let Err(e) = self.refresh_locked(&mut cache, now).await {
                // A failed rotation check must not stop verification with a
                // certificate we already trust.
                match known {
                    Some(key) => {
                        tracing::warn!(error = %e, "WeChat platform certificate refresh failed");
                        return Ok(key);
                    }
                    None => return Err(e),
                }
            }
        }
        cache.get(serial, now).ok_or_else(|| {
            ChannelError::InvalidSignature(format!("unknown platform serial {serial}"))
        })
    }

    /// Downloads and installs the platform certificates. The answer is
    /// verified with a certificate it carries itself (the bootstrap WeChat's
    /// SDKs use: the download is authenticated by the merchant's request
    /// signature and the APIv3-key encryption) or with the configured
    /// public key when WeChat signed it with that.
    pub(super) async fn refresh_locked(
        &self,
        cache: &mut CertCache,
        now: DateTime<Utc>,
    ) -> Result<(), ChannelError> {
        cache.attempted_at = Some(now);
        let resp = self
            .send(reqwest::Method::GET, "/v3/certificates", None)
            .await?;
        if resp.status >= 500 {
            return Err(ChannelError::Transport(format!(
                "certificate download: HTTP {}",
                resp.status
            )));
        }
        if resp.status != 200 {
            let e: Option<super::types::ErrorBody> = serde_json::from_slice(&resp.body).ok();
            return Err(match e {
                Some(e) => ChannelError::Rejected {
                    code: e.code,
                    message: e.message,
                },
                None => ChannelError::Rejected {
                    code: format!("HTTP_{}", resp.status),
                    message: "certificate download failed".into(),
                },
            });
        }
        let list: CertificatesResponse = resp.json()?;
        let mut fresh = HashMap::new();
        for entry in &list.data {
            let enc = &entry.encrypt_certificate;
            if enc.algorithm != AEAD_AES_256_GCM {
                return Err(ChannelError::Protocol(format!(
                    "certificate encrypted with {}",
                    enc.algorithm
                )));
            }
            let pem = sign::decrypt_resource(
                &self.apiv3_key,
                &enc.nonce,
                enc.associated_data.as_deref().unwrap_or(""),
                &enc.ciphertext,
            )?;
            let pem = String::from_utf8(pem)
                .map_err(|_| ChannelError::Protocol("certificate is not UTF-8 PEM".into()))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| ChannelError::Protocol(format!("platform certificate: {e}")))?;
            if !cert.serial_no.eq_ignore_ascii_case(&entry.serial_no) {
                return Err(ChannelError::Protocol(format!(
                    "certificate serial {} listed as {}",
                    cert.serial_no, entry.serial_no
                )));
            }
            fresh.insert(cert.serial_no.to_ascii_uppercase(), cert);
        }
        let sig = SignatureHeaders::from_headers(&resp.headers)?;
        sig.check_fresh(now)?;
        let key = match &self.platform_key {
            Some((id, key)) if *id == sig.serial => key.clone(),
            _ => fresh
                .get(&sig.serial.to_ascii_uppercase())
                .or_else(|| cache.certs.get(&sig.serial.to_ascii_uppercase()))
                .filter(|c| c.is_valid_at(now))
                .map(|c| c.public_key.clone())
                .ok_or_else(|| {
                    ChannelError::InvalidSignature(format!(
                        "certificate list signed with unknown serial {}",
                        sig.serial
                    ))
                })?,
        };
        sig.verify(&key, &resp.body)?;
        // Keep certificates we already had: WeChat may still sign with an
        // older one during a rotation that this list no longer shows.
        cache.certs.extend(fresh);
        cache.fetched_at = Some(now);
        Ok(())
    }
}
