//! Refunds: `alipay.trade.refund` and `alipay.trade.fastpay.refund.query`.
//!
//! Alipay refunds settle in the call: `fund_change` "Y" means this call
//! moved the money. "N" (or no flag) means it did not: a repeat of a refund
//! already made, or one Alipay is still working on; only the refund query
//! tells which. The query answers a refund it knows with its amount
//! (`refund_status` REFUND_SUCCESS, or absent, both mean refunded) and one
//! it does not know without refund data. `out_request_no` (our refund id)
//! makes every repeat the same refund.

use paymux_core::{Currency, Money};
use serde_json::{json, Value};

use super::{sign, str_field, Alipay};
use crate::{ChannelError, ChannelRefund, RefundRequest, RefundState};

impl Alipay {
    pub(super) async fn create_refund(
        &self,
        req: &RefundRequest,
    ) -> Result<ChannelRefund, ChannelError> {
        if req.amount.currency != Currency::CNY {
            return Err(ChannelError::Rejected {
                code: "INVALID_PARAMETER".into(),
                message: "Alipay takes CNY amounts here".into(),
            });
        }
        let mut biz = json!({
            "out_trade_no": req.out_trade_no,
            "refund_amount": sign::minor_to_yuan(req.amount.minor)?,
            "out_request_no": req.out_refund_no,
        });
        if let Some(reason) = req.reason.as_deref().filter(|r| !r.is_empty()) {
            biz["refund_reason"] = reason.into();
        }
        let node = self.call_ok("alipay.trade.refund", &biz, None).await?;
        check_trade(&node, &req.out_trade_no)?;
        if str_field(&node, "fund_change") == Some("Y") {
            return Ok(ChannelRefund {
                out_refund_no: req.out_refund_no.clone(),
                state: RefundState::Succeeded,
                refund_id: str_field(&node, "trade_no").map(str::to_string),
                amount: Some(req.amount),
                refunded_at: match str_field(&node, "gmt_refund_pay") {
                    Some(t) => Some(sign::parse_alipay_time(t)?),
                    None => None,
                },
                failure: None,
            });
        }
        // No money moved in this call: ask what became of the refund.
        match self.find_refund(req).await {
            Err(ChannelError::NotFound) => Ok(processing(req)),
            other => other,
        }
    }

    pub(super) async fn find_refund(
        &self,
        req: &RefundRequest,
    ) -> Result<ChannelRefund, ChannelError> {
        let biz = json!({
            "out_trade_no": req.out_trade_no,
            "out_request_no": req.out_refund_no,
            "query_options": ["gmt_refund_pay"],
        });
        let node = self
            .call_ok("alipay.trade.fastpay.refund.query", &biz, None)
            .await?;
        check_trade(&node, &req.out_trade_no)?;
        refund_of(&node, req)
    }
}

/// The answer must be about the trade asked for.
fn check_trade(node: &Value, out_trade_no: &str) -> Result<(), ChannelError> {
    match str_field(node, "out_trade_no") {
        Some(o) if o != out_trade_no => Err(ChannelError::Protocol(format!(
            "asked about {out_trade_no:?}, Alipay answered {o:?}"
        ))),
        _ => Ok(()),
    }
}

fn processing(req: &RefundRequest) -> ChannelRefund {
    ChannelRefund {
        out_refund_no: req.out_refund_no.clone(),
        state: RefundState::Processing,
        refund_id: None,
        amount: None,
        refunded_at: None,
        failure: None,
    }
}

/// A refund query's answer as paymux's view of the refund.
fn refund_of(node: &Value, req: &RefundRequest) -> Result<ChannelRefund, ChannelError> {
    let Some(amount) = str_field(node, "refund_amount") else {
        // No refund data: Alipay has not refunded under this out_request_no.
        return Err(ChannelError::NotFound);
    };
    if let Some(no) = str_field(node, "out_request_no") {
        if no != req.out_refund_no {
            return Err(ChannelError::Protocol(format!(
                "asked about refund {}, Alipay answered {no}",
                req.out_refund_no
            )));
        }
    }
    let state = match str_field(node, "refund_status") {
        None | Some("REFUND_SUCCESS") => RefundState::Succeeded,
        Some(_) => RefundState::Processing,
    };
    Ok(ChannelRefund {
        out_refund_no: req.out_refund_no.clone(),
        state,
        refund_id: str_field(node, "trade_no").map(str::to_string),
        amount: Some(
            Money::new(sign::yuan_to_minor(amount)?, Currency::CNY)
                .map_err(|e| ChannelError::Protocol(e.to_string()))?,
        ),
        refunded_at: match str_field(node, "gmt_refund_pay") {
            Some(t) => Some(sign::parse_alipay_time(t)?),
            None => None,
        },
        failure: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use paymux_core::PayMethod;

    fn req() -> RefundRequest {
        RefundRequest {
            out_trade_no: "pay_01".into(),
            method: PayMethod::Native,
            out_refund_no: "ref_01".into(),
            amount: Money::new(150, Currency::CNY).unwrap(),
            total: Money::new(200, Currency::CNY).unwrap(),
            reason: None,
            notify_url: "https://paymux.example/notify/alipay/a/refund".into(),
            channel_trade_no: None,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn a_documented_refund_query_answer_converts() {
        // Field names and shapes per Alipay's reference for the refund query.
        let node = json!({"code":"10000","msg":"Success","trade_no":"2014112611001004680073956707",
            "out_trade_no":"pay_01","out_request_no":"ref_01","total_amount":"2.00",
            "refund_amount":"1.50","refund_status":"REFUND_SUCCESS","gmt_refund_pay":"2014-11-27 15:45:57"});
        let r = refund_of(&node, &req()).unwrap();
        assert_eq!(r.state, RefundState::Succeeded);
        assert_eq!(r.amount, Some(Money::new(150, Currency::CNY).unwrap()));
        assert!(r.refunded_at.is_some());
        // No refund_status but refund data: refunded too.
        let mut n = node.clone();
        n.as_object_mut().unwrap().remove("refund_status");
        assert_eq!(refund_of(&n, &req()).unwrap().state, RefundState::Succeeded);
    }

    #[test]
    fn no_refund_data_means_not_refunded() {
        let node =
            json!({"code":"10000","msg":"Success","trade_no":"2014","out_trade_no":"pay_01"});
        assert!(matches!(
            refund_of(&node, &req()),
            Err(ChannelError::NotFound)
        ));
        let other = json!({"out_request_no":"ref_02","refund_amount":"1.50"});
        assert!(matches!(
            refund_of(&other, &req()),
            Err(ChannelError::Protocol(_))
        ));
    }
}
