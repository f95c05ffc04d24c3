//! Back notifications (`backUrl`): a form POST signed by UnionPay. Nothing in
//! it is trusted before its `signPubKeyCert` passed the trust checks and the
//! signature verified; then it must be for this merchant.

use chrono::{DateTime, Utc};
use paymux_core::{Currency, Money};

use super::{sign, Unionpay};
use crate::{ChannelError, ChannelTrade, Notification, TradeState};

impl Unionpay {
    pub(super) fn parse_notify(
        &self,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Notification, ChannelError> {
        let params = sign::parse_form(body)?;
        self.verify_params(&params, now)?;
        let field = |name: &str| -> Result<&str, ChannelError> {
            params
                .get(name)
                .map(String::as_str)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ChannelError::Protocol(format!("notify without {name}")))
        };
        let mer_id = field("merId")?;
        if mer_id != self.config.mer_id {
            return Err(ChannelError::Protocol(format!(
                "notify for merId {mer_id}, this account is {}",
                self.config.mer_id
            )));
        }
        let txn_type = field("txnType")?;
        let resp_code = field("respCode")?;
        let amount = Money::new(sign::txn_amt_to_fen(field("txnAmt")?)?, Currency::CNY)
            .map_err(|e| ChannelError::Protocol(e.to_string()))?;
        // Only a consumption's success pays an order. Other transactions
        // notified here (cancellations, refunds made outside paymux; paymux's
        // own refunds go to their own backUrl) are acknowledged and change
        // no payment.
        let state = if txn_type == sign::TXN_CONSUME && sign::is_success(resp_code) {
            TradeState::Paid
        } else {
            TradeState::NotPaid
        };
        let query_id = field("queryId")?.to_string();
        Ok(Notification {
            event_id: query_id.clone(),
            event_type: format!("txnType {txn_type} respCode {resp_code}"),
            trade: ChannelTrade {
                out_trade_no: sign::out_trade_no_of(field("orderId")?),
                state,
                transaction_id: Some(query_id),
                amount: Some(amount),
                paid_at: None,
                merchant_account: Some(mer_id.to_string()),
                app_id: None,
            },
        })
    }
}
