//! Refunds as WeChat Pay makes them: accepted as PROCESSING, finished a
//! moment later, announced by a signed, encrypted `REFUND.*` callback to the
//! refund's notify_url, and answered by the refund query. The simulator
//! keeps the books: refunds never exceed what the trade was paid.

use paymux_channels::wechat::to_wechat_time;
use paymux_channels::wechat::types::{RefundAmount, RefundBody, RefundRecord};
use serde::{Deserialize, Serialize};

use super::{lock, NotificationKind, OrderState, WechatSim};

/// A refund's state at the simulated WeChat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimRefundState {
    Processing,
    Success,
    /// Failed for good (injected refund failures end here).
    Abnormal,
}

#[derive(Debug, Clone)]
pub(crate) struct SimRefund {
    pub body: RefundBody,
    pub mchid: String,
    pub refund_id: String,
    pub transaction_id: Option<String>,
    pub state: SimRefundState,
    pub create_time: String,
    pub success_time: Option<String>,
    pub notification_id: String,
    /// Decided when the refund was accepted: it will end ABNORMAL.
    pub will_fail: bool,
}

/// One refund as `GET /sim/wechat/refunds` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundView {
    pub out_trade_no: String,
    pub out_refund_no: String,
    /// In fen.
    pub amount: i64,
    pub state: SimRefundState,
}

/// Why the simulated WeChat refuses a refund request: HTTP status, code, message.
pub(crate) type Refusal = (u16, &'static str, String);

impl SimRefund {
    pub(crate) fn record(&self) -> RefundRecord {
        let (status, refund_status) = match self.state {
            SimRefundState::Processing => ("PROCESSING", "PROCESSING"),
            SimRefundState::Success => ("SUCCESS", "SUCCESS"),
            SimRefundState::Abnormal => ("ABNORMAL", "ABNORMAL"),
        };
        RefundRecord {
            mchid: Some(self.mchid.clone()),
            refund_id: Some(self.refund_id.clone()),
            out_refund_no: self.body.out_refund_no.clone(),
            transaction_id: self.transaction_id.clone(),
            out_trade_no: self.body.out_trade_no.clone(),
            channel: Some("ORIGINAL".into()),
            user_received_account: Some("支付用户零钱".into()),
            success_time: self.success_time.clone(),
            create_time: Some(self.create_time.clone()),
            status: Some(status.into()),
            refund_status: Some(refund_status.into()),
            amount: Some(RefundAmount {
                total: Some(self.body.amount.total),
                refund: Some(self.body.amount.refund),
                payer_total: Some(self.body.amount.total),
                payer_refund: Some(self.body.amount.refund),
                currency: Some(self.body.amount.currency.clone()),
            }),
        }
    }
}

impl WechatSim {
    /// `POST /v3/refund/domestic/refunds` for merchant `mchid`: the refund as
    /// accepted (PROCESSING), or the same one again for a repeated request.
    pub(crate) fn accept_refund(
        &self,
        mchid: &str,
        body: RefundBody,
    ) -> Result<(RefundRecord, bool), Refusal> {
        let param = |m: &str| (400, "PARAM_ERROR", m.to_string());
        if body.out_refund_no.is_empty() || body.out_refund_no.len() > 64 {
            return Err(param("out_refund_no 长度应为 1-64"));
        }
        if body.amount.refund <= 0 || body.amount.total <= 0 {
            return Err(param("amount.refund 与 amount.total 应大于 0"));
        }
        let orders = lock(&self.orders);
        let order = orders
            .get(&(mchid.to_string(), body.out_trade_no.clone()))
            .ok_or((404, "RESOURCE_NOT_EXISTS", "订单不存在".to_string()))?;
        if order.state != OrderState::Success {
            return Err((400, "INVALID_REQUEST", "订单未支付，不能退款".into()));
        }
        if body.amount.total != order.body.amount.total {
            return Err((400, "INVALID_REQUEST", "订单金额与原订单金额不一致".into()));
        }
        let mut refunds = lock(&self.refunds);
        let key = (mchid.to_string(), body.out_refund_no.clone());
        if let Some(existing) = refunds.get(&key) {
            // The same out_refund_no again: the same refund, never a second one.
            if existing.body.out_trade_no != body.out_trade_no
                || existing.body.amount != body.amount
            {
                return Err((400, "INVALID_REQUEST", "退款单号已存在且参数不一致".into()));
            }
            return Ok((existing.record(), false));
        }
        let held: i64 = refunds
            .values()
            .filter(|r| {
                r.mchid == mchid
                    && r.body.out_trade_no == body.out_trade_no
                    && r.state != SimRefundState::Abnormal
            })
            .map(|r| r.body.amount.refund)
            .sum();
        if held + body.amount.refund > order.body.amount.total {
            return Err((
                400,
                "INVALID_REQUEST",
                "申请退款金额超过订单可退金额".into(),
            ));
        }
        let refund = SimRefund {
            mchid: mchid.to_string(),
            refund_id: format!("5030{}", self.unique(25)),
            transaction_id: order.transaction_id.clone(),
            state: SimRefundState::Processing,
            create_time: to_wechat_time(self.now()),
            success_time: None,
            notification_id: super::uuid_like(),
            will_fail: self.faults.refund_fails(),
            body,
        };
        let record = refund.record();
        refunds.insert(key, refund);
        Ok((record, true))
    }

    /// The refund as the query answers it.
    pub(crate) fn refund_record(&self, mchid: &str, out_refund_no: &str) -> Option<RefundRecord> {
        lock(&self.refunds)
            .get(&(mchid.to_string(), out_refund_no.to_string()))
            .map(SimRefund::record)
    }

    /// The bank's side of a refund: it ends (SUCCESS, or ABNORMAL when a
    /// failure was injected) and WeChat announces it to the notify_url,
    /// subject to the callback faults.
    pub(crate) async fn finish_refund(&self, mchid: &str, out_refund_no: &str) {
        let finished = {
            let mut refunds = lock(&self.refunds);
            match refunds.get_mut(&(mchid.to_string(), out_refund_no.to_string())) {
                Some(r) if r.state == SimRefundState::Processing => {
                    if r.will_fail {
                        r.state = SimRefundState::Abnormal;
                    } else {
                        r.state = SimRefundState::Success;
                        r.success_time = Some(to_wechat_time(self.now()));
                    }
                    Some(r.clone())
                }
                _ => None,
            }
        };
        let Some(refund) = finished else { return };
        let Some(merchant) = self.merchant(mchid) else {
            return;
        };
        let (event_type, summary) = match refund.state {
            SimRefundState::Success => ("REFUND.SUCCESS", "退款成功"),
            _ => ("REFUND.ABNORMAL", "退款异常"),
        };
        let kind = NotificationKind {
            event_type,
            summary,
            original_type: "refund",
        };
        let Ok(plain) = serde_json::to_vec(&refund.record()) else {
            return;
        };
        let Some(url) = refund.body.notify_url.clone() else {
            return;
        };
        match self.signed_notification(&merchant.info, &refund.notification_id, kind, &plain, None)
        {
            Ok((body, hdrs)) => {
                let request = self.callback(&url, body, hdrs);
                self.faults.deliver_callbacks(vec![request]).await;
            }
            Err(e) => tracing::warn!(error = %e, "simulator could not build a refund callback"),
        }
    }

    /// Every refund of this out_trade_no, oldest first, so tests can compare
    /// a merchant's records with the channel's.
    pub fn refunds(&self, out_trade_no: &str) -> Vec<RefundView> {
        let mut found: Vec<_> = lock(&self.refunds)
            .values()
            .filter(|r| r.body.out_trade_no == out_trade_no)
            .map(|r| {
                (
                    r.create_time.clone(),
                    RefundView {
                        out_trade_no: r.body.out_trade_no.clone(),
                        out_refund_no: r.body.out_refund_no.clone(),
                        amount: r.body.amount.refund,
                        state: r.state,
                    },
                )
            })
            .collect();
        found.sort_by(|a, b| (&a.0, &a.1.out_refund_no).cmp(&(&b.0, &b.1.out_refund_no)));
        found.into_iter().map(|(_, v)| v).collect()
    }
}
