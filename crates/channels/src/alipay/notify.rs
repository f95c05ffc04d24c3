//! Async notifies: a form POST signed by Alipay. Nothing in it is trusted
//! before the signature over the sorted parameters (minus `sign` and
//! `sign_type`) has verified; then it must be about this app and seller.

use paymux_core::{Currency, Money};

use super::{sign, trade_state, Alipay};
use crate::{ChannelError, ChannelTrade, Notification};

impl Alipay {
    pub(super) fn parse_notify(&self, body: &[u8]) -> Result<Notification, ChannelError> {
        let params = sign::parse_form(body)?;
        sign::verify_notify(&self.alipay_key, &params)?;
        let field = |name: &str| -> Result<&str, ChannelError> {
            params
                .get(name)
                .map(String::as_str)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ChannelError::Protocol(format!("notify without {name}")))
        };
        let app_id = field("app_id")?;
        if app_id != self.config.app_id {
            return Err(ChannelError::Protocol(format!(
                "notify for app_id {app_id}, this account is {}",
                self.config.app_id
            )));
        }
        let seller_id = params.get("seller_id").filter(|s| !s.is_empty()).cloned();
        if let Some(ours) = &self.config.seller_id {
            if seller_id.as_deref() != Some(ours.as_str()) {
                return Err(ChannelError::Protocol(format!(
                    "notify for seller_id {seller_id:?}, this account is {ours}"
                )));
            }
        }
        let trade_status = field("trade_status")?;
        let total = sign::yuan_to_minor(field("total_amount")?)?;
        let amount =
            Money::new(total, Currency::CNY).map_err(|e| ChannelError::Protocol(e.to_string()))?;
        let paid_at = match params.get("gmt_payment").filter(|s| !s.is_empty()) {
            Some(t) => Some(sign::parse_alipay_time(t)?),
            None => None,
        };
        Ok(Notification {
            event_id: field("notify_id")?.to_string(),
            event_type: trade_status.to_string(),
            trade: ChannelTrade {
                out_trade_no: field("out_trade_no")?.to_string(),
                state: trade_state(trade_status)?,
                transaction_id: params.get("trade_no").filter(|s| !s.is_empty()).cloned(),
                amount: Some(amount),
                paid_at,
                merchant_account: seller_id,
                app_id: Some(app_id.to_string()),
            },
        })
    }
}
