//! Refund transactions (退货, txnType 04): what UnionPay keeps of them, the
//! rules they are accepted by, and how notifications and queries show them.

use paymux_channels::unionpay::sign::{self, Params};
use serde::{Deserialize, Serialize};

use super::api::Refusal;
use super::{lock, order_key, SimError, UnionpaySim, MAX_ORDERS};

/// A refund as UnionPay holds it.
#[derive(Debug, Clone)]
pub(crate) struct Refund {
    pub mer_id: String,
    /// The refund's own orderId and txnTime (how it is queried).
    pub order_id: String,
    pub txn_time: String,
    pub txn_amt: String,
    pub fen: i64,
    /// The refunded consumption: its (merId, orderId) and queryId.
    pub orig: (String, String),
    pub orig_qry_id: String,
    pub back_url: Option<String>,
    pub req_reserved: Option<String>,
    pub biz_type: String,
    pub query_id: String,
    pub trace_no: String,
    pub trace_time: String,
    pub settle_date: String,
    /// Order of arrival, for listing.
    pub seq: u64,
    /// Accepted, then failed for good (fault injection); its amount is
    /// free to be refunded again.
    pub failed: bool,
}

/// `GET /refunds`: one refund of a paid order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimRefund {
    /// The refund's UnionPay orderId.
    pub order_id: String,
    /// The same as paymux's refund id (`ref_…`) when it is one.
    pub out_refund_no: String,
    /// In fen.
    pub amount: i64,
    pub state: SimRefundState,
    /// The refund transaction's own queryId.
    pub query_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimRefundState {
    Succeeded,
    Failed,
}

impl Refund {
    /// The result code notifications (`respCode`) and queries (`origRespCode`) carry.
    fn result(&self) -> (&'static str, &'static str) {
        if self.failed {
            ("01", "交易失败[1000001]")
        } else {
            ("00", "成功[0000000]")
        }
    }

    /// The fields of the refund transaction, as notifications and queries report it.
    fn fields(&self) -> Params {
        let mut p = Params::new();
        for (k, v) in [
            ("version", sign::VERSION),
            ("encoding", "utf-8"),
            ("signMethod", sign::SIGN_METHOD),
            ("accessType", "0"),
            ("bizType", self.biz_type.as_str()),
            ("currencyCode", sign::CURRENCY_CNY),
            ("merId", self.mer_id.as_str()),
            ("orderId", self.order_id.as_str()),
            ("origQryId", self.orig_qry_id.as_str()),
            ("queryId", self.query_id.as_str()),
            ("traceNo", self.trace_no.as_str()),
            ("traceTime", self.trace_time.as_str()),
            ("txnAmt", self.txn_amt.as_str()),
            ("txnSubType", "00"),
            ("txnTime", self.txn_time.as_str()),
            ("txnType", sign::TXN_REFUND),
        ] {
            p.insert(k.to_string(), v.to_string());
        }
        if !self.failed {
            for (k, v) in [
                ("settleAmt", self.txn_amt.as_str()),
                ("settleCurrencyCode", sign::CURRENCY_CNY),
                ("settleDate", self.settle_date.as_str()),
            ] {
                p.insert(k.to_string(), v.to_string());
            }
        }
        if let Some(r) = &self.req_reserved {
            p.insert("reqReserved".into(), r.clone());
        }
        p
    }

    fn public(&self) -> SimRefund {
        SimRefund {
            order_id: self.order_id.clone(),
            out_refund_no: sign::out_refund_no_of(&self.order_id),
            amount: self.fen,
            state: if self.failed {
                SimRefundState::Failed
            } else {
                SimRefundState::Succeeded
            },
            query_id: self.query_id.clone(),
        }
    }
}

impl UnionpaySim {
    /// A refund request (already verified as the merchant's): checked
    /// against the consumption it names and what is left of it, recorded,
    /// and answered. Returns the answer's fields and the notification to
    /// send after it. A repeated orderId is a duplicate (12) and changes
    /// nothing, so a refund is never made twice.
    pub(super) fn new_refund(
        &self,
        p: &Params,
    ) -> Result<(Params, Option<reqwest::RequestBuilder>), Refusal> {
        self.expect(p, "txnSubType", &["00"])?;
        self.expect(p, "bizType", &["000201", "000000"])?;
        self.expect(p, "channelType", &["07", "08"])?;
        let order_id = self.required(p, "orderId")?;
        if !(8..=40).contains(&order_id.len())
            || !order_id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(Refusal::format("orderId must be 8-40 letters and digits"));
        }
        let txn_time = self.required(p, "txnTime")?;
        sign::parse_acp_time(txn_time).map_err(|e| Refusal::format(e.to_string()))?;
        let txn_amt = self.required(p, "txnAmt")?;
        let fen = sign::txn_amt_to_fen(txn_amt).map_err(|e| Refusal::format(e.to_string()))?;
        if fen <= 0 {
            return Err(Refusal::format("txnAmt must be positive"));
        }
        if p.contains_key("currencyCode") {
            self.expect(p, "currencyCode", &[sign::CURRENCY_CNY])?;
        }
        let orig_qry_id = self.required(p, "origQryId")?;
        let mer_id = p["merId"].clone();
        let no_original = || Refusal::new("35", "原交易不存在或状态不正确");
        let orig = lock(&self.query_ids)
            .get(orig_qry_id)
            .filter(|(m, _)| *m == mer_id)
            .cloned()
            .ok_or_else(no_original)?;
        let now = sign::to_acp_time(self.clock.now());
        let refund = {
            let orders = lock(&self.orders);
            let order = orders.get(&orig).ok_or_else(no_original)?;
            if order.paid.is_none() {
                return Err(no_original());
            }
            // Gateway consumptions are refunded under 000201, QR ones under 000000.
            let biz_type = if order.kind == super::Kind::Qr {
                "000000"
            } else {
                "000201"
            };
            if p["bizType"] != biz_type {
                return Err(Refusal::format(format!(
                    "bizType {} does not match the original transaction's {biz_type}",
                    p["bizType"]
                )));
            }
            let paid = sign::txn_amt_to_fen(&order.txn_amt)
                .map_err(|e| Refusal::new("01", e.to_string()))?;
            let mut refunds = lock(&self.refunds);
            let key = (mer_id.clone(), order_id.to_string());
            if refunds.contains_key(&key) {
                return Err(Refusal::new("12", "重复交易 (orderId already used)"));
            }
            if refunds.len() >= MAX_ORDERS {
                return Err(Refusal::new("05", "too many refunds in the simulator"));
            }
            let held: i64 = refunds
                .values()
                .filter(|r| r.orig == orig && !r.failed)
                .map(|r| r.fen)
                .sum();
            if held >= paid {
                return Err(Refusal::new("45", "原交易已被成功退货或已被成功撤销"));
            }
            if held + fen > paid {
                return Err(Refusal::new(
                    "33",
                    format!(
                        "交易金额超限: {fen} fen asked, {} fen left to refund",
                        paid - held
                    ),
                ));
            }
            let refund = Refund {
                mer_id: mer_id.clone(),
                order_id: order_id.to_string(),
                txn_time: txn_time.to_string(),
                txn_amt: txn_amt.to_string(),
                fen,
                orig,
                orig_qry_id: orig_qry_id.to_string(),
                back_url: p.get("backUrl").filter(|u| !u.is_empty()).cloned(),
                req_reserved: p.get("reqReserved").filter(|r| !r.is_empty()).cloned(),
                biz_type: p["bizType"].clone(),
                query_id: self.unique(21),
                trace_no: self.unique(6),
                trace_time: now[4..].to_string(),
                settle_date: now[4..8].to_string(),
                seq: self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                failed: self.faults.refund_fails(),
            };
            refunds.insert(key, refund.clone());
            refund
        };
        // The synchronous answer: accepted (the result follows by notification).
        let mut answer = self.echo(p);
        for k in ["origQryId", "reqReserved"] {
            if let Some(v) = p.get(k) {
                answer.insert(k.to_string(), v.clone());
            }
        }
        answer.insert("queryId".into(), refund.query_id.clone());
        let notification = match &refund.back_url {
            Some(url) => {
                let mut n = refund.fields();
                let (code, msg) = refund.result();
                n.insert("respCode".into(), code.into());
                n.insert("respMsg".into(), msg.into());
                let signed = self
                    .sign_out(n, None)
                    .map_err(|e| Refusal::new("01", e.to_string()))?;
                Some(self.callback(url, sign::encode_form(&signed)))
            }
            None => None,
        };
        Ok((answer, notification))
    }

    /// `queryTrans.do` of a refund: its fields and result (`origRespCode`),
    /// if (merId, orderId, txnTime) is one.
    pub(super) fn refund_query(
        &self,
        mer_id: &str,
        order_id: &str,
        txn_time: &str,
    ) -> Option<Params> {
        let refunds = lock(&self.refunds);
        let refund = refunds
            .get(&(mer_id.to_string(), order_id.to_string()))
            .filter(|r| r.txn_time == txn_time)?;
        let mut p = refund.fields();
        let (code, msg) = refund.result();
        p.insert("origRespCode".into(), code.into());
        p.insert("origRespMsg".into(), msg.into());
        Some(p)
    }

    /// The refunds of a paid order, oldest first, named by paymux's payment
    /// id (or the orderId), and by its merchant when several have that orderId.
    pub fn refunds(
        &self,
        out_trade_no: &str,
        mer_id: Option<&str>,
    ) -> Result<Vec<SimRefund>, SimError> {
        let key = {
            let orders = lock(&self.orders);
            let key = order_key(&orders, out_trade_no, mer_id)?;
            if !orders.contains_key(&key) {
                return Err(SimError::OrderNotFound);
            }
            key
        };
        let mut found: Vec<(u64, SimRefund)> = lock(&self.refunds)
            .values()
            .filter(|r| r.orig == key)
            .map(|r| (r.seq, r.public()))
            .collect();
        found.sort_by_key(|(seq, _)| *seq);
        Ok(found.into_iter().map(|(_, r)| r).collect())
    }
}
