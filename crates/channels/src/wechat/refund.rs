//! Refunds: `POST /v3/refund/domestic/refunds`, its query and its callback.
//! WeChat refunds settle asynchronously: the call usually answers
//! PROCESSING, and the result arrives as a `REFUND.*` callback at the
//! refund's notify_url (or by query).

use chrono::{DateTime, Utc};
use http::HeaderMap;
use paymux_core::{Currency, Money};

use super::types::{RefundBody, RefundBodyAmount, RefundRecord};
use super::{path_segment, WechatPay};
use crate::{ChannelError, ChannelRefund, RefundNotification, RefundRequest, RefundState};

/// Maps WeChat's refund status to paymux's.
pub fn refund_state(s: &str) -> Result<RefundState, ChannelError> {
    Ok(match s {
        "SUCCESS" => RefundState::Succeeded,
        "PROCESSING" => RefundState::Processing,
        // CLOSED: the refund was closed; ABNORMAL: the payer's card can no
        // longer take it. Both end the refund without money moving.
        "CLOSED" | "ABNORMAL" => RefundState::Failed,
        other => {
            return Err(ChannelError::Protocol(format!(
                "unknown refund status {other:?}"
            )))
        }
    })
}

/// Converts a wire refund into paymux's view of it.
pub fn to_channel_refund(r: &RefundRecord) -> Result<ChannelRefund, ChannelError> {
    let status = r
        .status
        .as_deref()
        .or(r.refund_status.as_deref())
        .ok_or_else(|| ChannelError::Protocol("refund without a status".into()))?;
    let state = refund_state(status)?;
    let amount = match &r.amount {
        Some(a) => match a.refund {
            Some(refund) => {
                let currency = Currency::parse(a.currency.as_deref().unwrap_or("CNY"))
                    .map_err(|e| ChannelError::Protocol(e.to_string()))?;
                Some(
                    Money::new(refund, currency)
                        .map_err(|e| ChannelError::Protocol(e.to_string()))?,
                )
            }
            None => None,
        },
        None => None,
    };
    let refunded_at = match &r.success_time {
        Some(s) if !s.is_empty() => Some(
            DateTime::parse_from_rfc3339(s)
                .map_err(|e| ChannelError::Protocol(format!("success_time {s:?}: {e}")))?
                .with_timezone(&Utc),
        ),
        _ => None,
    };
    Ok(ChannelRefund {
        out_refund_no: r.out_refund_no.clone(),
        state,
        refund_id: r.refund_id.clone().filter(|s| !s.is_empty()),
        amount,
        refunded_at,
        failure: (state == RefundState::Failed).then(|| status.to_string()),
    })
}

impl WechatPay {
    pub(super) async fn create_refund(
        &self,
        req: &RefundRequest,
    ) -> Result<ChannelRefund, ChannelError> {
        let body = RefundBody {
            out_trade_no: req.out_trade_no.clone(),
            out_refund_no: req.out_refund_no.clone(),
            reason: req.reason.clone().filter(|r| !r.is_empty()),
            notify_url: Some(req.notify_url.clone()),
            amount: RefundBodyAmount {
                refund: req.amount.minor,
                total: req.total.minor,
                currency: req.amount.currency.as_str().to_string(),
            },
        };
        let body = serde_json::to_vec(&body)
            .map_err(|e| ChannelError::Protocol(format!("encoding refund body: {e}")))?;
        let resp = self
            .call(
                reqwest::Method::POST,
                "/v3/refund/domestic/refunds",
                Some(body),
            )
            .await?;
        let record: RefundRecord = resp.json()?;
        checked(&record, req)
    }

    pub(super) async fn find_refund(
        &self,
        req: &RefundRequest,
    ) -> Result<ChannelRefund, ChannelError> {
        let path = format!(
            "/v3/refund/domestic/refunds/{}",
            path_segment(&req.out_refund_no)
        );
        let resp = self.call(reqwest::Method::GET, &path, None).await?;
        let record: RefundRecord = resp.json()?;
        checked(&record, req)
    }

    pub(super) async fn parse_refund_notification(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<RefundNotification, ChannelError> {
        let (notify, plain) = self.open_notification(headers, body, now).await?;
        if !notify.event_type.starts_with("REFUND.") {
            return Err(ChannelError::Protocol(format!(
                "refund callback of type {}",
                notify.event_type
            )));
        }
        let record: RefundRecord = serde_json::from_slice(&plain)
            .map_err(|e| ChannelError::Protocol(format!("refund callback resource: {e}")))?;
        if let Some(mchid) = &record.mchid {
            if mchid != &self.config.mchid {
                return Err(ChannelError::Protocol(format!(
                    "refund callback for mchid {mchid}, this account is {}",
                    self.config.mchid
                )));
            }
        }
        Ok(RefundNotification {
            event_id: notify.id,
            out_trade_no: record.out_trade_no.clone(),
            refund: to_channel_refund(&record)?,
        })
    }
}

/// The answer must be about the refund asked for.
fn checked(record: &RefundRecord, req: &RefundRequest) -> Result<ChannelRefund, ChannelError> {
    if record.out_refund_no != req.out_refund_no || record.out_trade_no != req.out_trade_no {
        return Err(ChannelError::Protocol(format!(
            "asked about refund {} of {}, WeChat answered {} of {}",
            req.out_refund_no, req.out_trade_no, record.out_refund_no, record.out_trade_no
        )));
    }
    to_channel_refund(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refund_statuses() {
        assert_eq!(refund_state("SUCCESS").unwrap(), RefundState::Succeeded);
        assert_eq!(refund_state("PROCESSING").unwrap(), RefundState::Processing);
        assert_eq!(refund_state("CLOSED").unwrap(), RefundState::Failed);
        assert_eq!(refund_state("ABNORMAL").unwrap(), RefundState::Failed);
        assert!(refund_state("MAYBE").is_err());
    }

    #[test]
    fn a_documented_refund_answer_converts() {
        // The shape of WeChat's answer to a refund (field names per the API reference).
        let answer = r#"{"refund_id":"50000000382019052709732678859","out_refund_no":"1217752501201407033233368018",
            "transaction_id":"1217752501201407033233368018","out_trade_no":"1217752501201407033233368018",
            "channel":"ORIGINAL","user_received_account":"招商银行信用卡0403","success_time":"2020-12-01T16:18:12+08:00",
            "create_time":"2020-12-01T16:18:12+08:00","status":"SUCCESS","funds_account":"UNSETTLED",
            "amount":{"total":100,"refund":100,"payer_total":90,"payer_refund":90,"settlement_refund":100,
            "settlement_total":100,"discount_refund":10,"currency":"CNY"}}"#;
        let record: RefundRecord = serde_json::from_str(answer).unwrap();
        let r = to_channel_refund(&record).unwrap();
        assert_eq!(r.state, RefundState::Succeeded);
        assert_eq!(r.amount, Some(Money::new(100, Currency::CNY).unwrap()));
        assert_eq!(
            r.refund_id.as_deref(),
            Some("50000000382019052709732678859")
        );
        assert_eq!(
            r.refunded_at.unwrap().to_rfc3339(),
            "2020-12-01T08:18:12+00:00"
        );
        assert_eq!(r.failure, None);
    }
}
