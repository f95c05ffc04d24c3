//! Callbacks: verify, then decrypt, then parse. Nothing is trusted before
//! the signature over the raw body bytes has verified. Payment callbacks are
//! parsed here; refund callbacks (`refund.rs`) are opened the same way.

use chrono::{DateTime, Utc};
use http::HeaderMap;

use super::client::SignatureHeaders;
use super::sign;
use super::types::{NotifyBody, Transaction, AEAD_AES_256_GCM};
use super::{to_channel_trade, WechatPay};
use crate::{ChannelError, Notification};

impl WechatPay {
    pub(super) async fn parse_notification(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Notification, ChannelError> {
        let (notify, plain) = self.open_notification(headers, body, now).await?;
        if let Some(t) = &notify.resource.original_type {
            if t != "transaction" {
                return Err(ChannelError::Protocol(format!(
                    "callback carries a {t}, not a transaction"
                )));
            }
        }
        let t: Transaction = serde_json::from_slice(&plain)
            .map_err(|e| ChannelError::Protocol(format!("callback transaction: {e}")))?;
        // A genuine callback for another merchant number or app (signed by
        // the same platform key) is not ours to act on.
        if t.mchid.as_deref() != Some(self.config.mchid.as_str()) {
            return Err(ChannelError::Protocol(format!(
                "callback for mchid {:?}, this account is {}",
                t.mchid, self.config.mchid
            )));
        }
        if t.appid.as_deref() != Some(self.config.appid.as_str()) {
            return Err(ChannelError::Protocol(format!(
                "callback for appid {:?}, this account is {}",
                t.appid, self.config.appid
            )));
        }
        Ok(Notification {
            event_id: notify.id,
            event_type: notify.event_type,
            trade: to_channel_trade(&t)?,
        })
    }

    /// Verifies a callback's signature over the raw body, then decrypts its
    /// resource: the notification and the resource's plaintext.
    pub(super) async fn open_notification(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(NotifyBody, Vec<u8>), ChannelError> {
        let sig = SignatureHeaders::from_headers(headers)?;
        sig.check_fresh(now)?;
        let key = self.verifying_key(&sig.serial, now).await?;
        sig.verify(&key, body)?;
        let notify: NotifyBody = serde_json::from_slice(body)
            .map_err(|e| ChannelError::Protocol(format!("callback body: {e}")))?;
        let res = &notify.resource;
        if res.algorithm != AEAD_AES_256_GCM {
            return Err(ChannelError::Protocol(format!(
                "callback resource encrypted with {}",
                res.algorithm
            )));
        }
        let plain = sign::decrypt_resource(
            &self.apiv3_key,
            &res.nonce,
            res.associated_data.as_deref().unwrap_or(""),
            &res.ciphertext,
        )?;
        Ok((notify, plain))
    }
}
