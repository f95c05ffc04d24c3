//! Refunds as Alipay makes them: `alipay.trade.refund` settles in the call
//! (`fund_change` Y), a repeat of the same `out_request_no` changes nothing
//! (`fund_change` N), `alipay.trade.fastpay.refund.query` answers what was
//! refunded, and the trade's notify_url hears a `trade_status_sync` with
//! the refund (TRADE_CLOSED once fully refunded). The simulator keeps the
//! books: refunds never exceed what the trade was paid.

use paymux_channels::alipay::sign;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::api::{success, Refusal};
use super::{lock, AlipaySim, App, TradeStatus};

/// One refund as the simulated Alipay holds it.
#[derive(Debug, Clone)]
pub(crate) struct SimRefund {
    pub out_request_no: String,
    /// In fen.
    pub amount: i64,
    pub reason: Option<String>,
    pub gmt_refund_pay: String,
}

/// One refund as `GET /sim/alipay/refunds` lists it (Alipay refunds either
/// happen in the call or not at all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundView {
    pub out_trade_no: String,
    pub out_request_no: String,
    /// In fen.
    pub amount: i64,
}

impl AlipaySim {
    /// `alipay.trade.refund`. Returns the answer and, for a new refund, the
    /// trade notify to send after it.
    pub(super) fn refund(
        &self,
        app: &App,
        biz: &Value,
    ) -> Result<(Value, Option<reqwest::RequestBuilder>), Refusal> {
        let (app_id, out_trade_no) = self.find(app, biz)?;
        // The SDKs send the amount as a string or as a JSON number; either
        // way its text is read as exact yuan, never through a float.
        let asked = match biz.get("refund_amount") {
            Some(Value::String(y)) => y.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(Refusal::args(
                    "isv.missing-refund-amount",
                    "缺少 refund_amount",
                ))
            }
        };
        let amount = match sign::yuan_to_minor(&asked) {
            Ok(fen) if fen > 0 => fen,
            _ => return Err(Refusal::args("isv.invalid-refund-amount", "退款金额无效")),
        };
        let out_request_no = biz
            .get("out_request_no")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(&out_trade_no)
            .to_string();
        let reason = biz
            .get("refund_reason")
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut orders = lock(&self.orders);
        let order = orders
            .get_mut(&(app_id.clone(), out_trade_no.clone()))
            .ok_or_else(|| Refusal::business("ACQ.TRADE_NOT_EXIST", "交易不存在"))?;
        if order.gmt_payment.is_none() {
            return Err(Refusal::business(
                "ACQ.TRADE_STATUS_ERROR",
                "交易状态不合法",
            ));
        }
        let paid =
            sign::yuan_to_minor(&order.total_amount).map_err(|e| Refusal::system(e.to_string()))?;
        let mut refunds = lock(&self.refunds);
        let trade_refunds = refunds.entry((app_id, out_trade_no.clone())).or_default();
        let refunded: i64 = trade_refunds.iter().map(|r| r.amount).sum();
        let (trade_no, buyer_id) = (order.trade_no.clone(), order.buyer_id.clone());
        // `refund_fee` is what the trade has refunded in all, not this refund.
        let answer = |refund_fee: i64, fund_change: &str, gmt: &str| -> Result<Value, Refusal> {
            Ok(success(json!({
                "trade_no": trade_no,
                "out_trade_no": out_trade_no,
                "buyer_logon_id": "sim***@alipay.com",
                "fund_change": fund_change,
                "refund_fee": yuan(refund_fee)?,
                "gmt_refund_pay": gmt,
                "buyer_user_id": buyer_id,
            })))
        };
        if let Some(done) = trade_refunds
            .iter()
            .find(|r| r.out_request_no == out_request_no)
        {
            // The same refund request again: nothing moves.
            if done.amount != amount {
                return Err(Refusal::business(
                    "ACQ.REASON_TRADE_REFUND_FEE_ERR",
                    "退款金额与原退款请求不一致",
                ));
            }
            return Ok((answer(refunded, "N", &done.gmt_refund_pay)?, None));
        }
        if refunded + amount > paid {
            return Err(Refusal::business(
                "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL",
                "退款金额超限",
            ));
        }
        if self.faults.refund_fails() {
            return Err(Refusal::business(
                "ACQ.SELLER_BALANCE_NOT_ENOUGH",
                "卖家余额不足",
            ));
        }
        let gmt = self.now_text();
        trade_refunds.push(SimRefund {
            out_request_no,
            amount,
            reason,
            gmt_refund_pay: gmt.clone(),
        });
        let refunded = refunded + amount;
        if refunded == paid {
            order.status = TradeStatus::Closed;
        }
        let node = answer(refunded, "Y", &gmt)?;
        // Alipay tells the trade's notify_url about the refund.
        let notify = match &order.notify_url {
            Some(url) => {
                let mut extra = sign::Params::new();
                extra.insert("refund_fee".into(), yuan(refunded)?);
                extra.insert("gmt_refund".into(), gmt);
                let body = self
                    .notify_body_with(app, order, None, extra)
                    .map_err(|e| Refusal::system(e.to_string()))?;
                Some(self.notify_request(url, body))
            }
            None => None,
        };
        Ok((node, notify))
    }

    /// `alipay.trade.fastpay.refund.query`: the refund, or an answer without
    /// refund data when there is none (Alipay's way of saying "not refunded").
    pub(super) fn refund_query(&self, app: &App, biz: &Value) -> Result<Value, Refusal> {
        let (app_id, out_trade_no) = self.find(app, biz)?;
        let out_request_no = biz
            .get("out_request_no")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Refusal::args("isv.missing-out-request-no", "缺少 out_request_no"))?;
        let orders = lock(&self.orders);
        let order = orders
            .get(&(app_id.clone(), out_trade_no.clone()))
            .ok_or_else(|| Refusal::business("ACQ.TRADE_NOT_EXIST", "交易不存在"))?;
        let refunds = lock(&self.refunds);
        let found = refunds
            .get(&(app_id, out_trade_no.clone()))
            .and_then(|rs| rs.iter().find(|r| r.out_request_no == out_request_no));
        let mut node = json!({
            "trade_no": order.trade_no,
            "out_trade_no": out_trade_no,
        });
        if let Some(r) = found {
            let fields = json!({
                "out_request_no": r.out_request_no,
                "total_amount": order.total_amount,
                "refund_amount": yuan(r.amount)?,
                "refund_status": "REFUND_SUCCESS",
                "refund_reason": r.reason,
                "gmt_refund_pay": r.gmt_refund_pay,
            });
            if let (Some(n), Some(f)) = (node.as_object_mut(), fields.as_object()) {
                n.extend(f.clone());
            }
        }
        Ok(success(node))
    }

    /// Every refund of this out_trade_no, oldest first, so tests can compare
    /// a merchant's records with the channel's.
    pub fn refunds(&self, out_trade_no: &str) -> Vec<RefundView> {
        lock(&self.refunds)
            .iter()
            .filter(|((_, o), _)| o == out_trade_no)
            .flat_map(|((_, o), rs)| {
                rs.iter().map(|r| RefundView {
                    out_trade_no: o.clone(),
                    out_request_no: r.out_request_no.clone(),
                    amount: r.amount,
                })
            })
            .collect()
    }
}

fn yuan(fen: i64) -> Result<String, Refusal> {
    sign::minor_to_yuan(fen).map_err(|e| Refusal::system(e.to_string()))
}
