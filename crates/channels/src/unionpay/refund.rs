//! Refunds (退货): `backTransReq.do` with txnType 04, txnSubType 00, bizType
//! 000201 (000000 for QR payments), naming the paid consumption by its
//! `queryId` (`origQryId`).
//!
//! A refund is a transaction of its own at UnionPay, with its own `orderId`
//! (our refund id without the underscore) and `txnTime` (the refund's
//! creation time, China time). The synchronous answer `respCode 00` only
//! says it was accepted; the result comes as a back notification to the
//! refund's `backUrl` (`respCode 00`/`A6` = refunded) or from `queryTrans.do`
//! with the refund's own `orderId` + `txnTime` (`origRespCode`).
//!
//! UnionPay's refund notification names the refund (`orderId`) and the
//! consumption's `queryId` (`origQryId`), never the consumption's orderId;
//! paymux sends its payment id in `reqReserved`, which UnionPay returns
//! verbatim in notifications and queries, and reads it back from there.

use chrono::{DateTime, Utc};
use paymux_core::{Currency, Money, PayMethod};

use super::sign::{self, Params};
use super::{refusal, Unionpay, BACK_TRANS_PATH, DUPLICATE_ORDER, QUERY_TRANS_PATH};
use crate::{ChannelError, ChannelRefund, RefundNotification, RefundRequest, RefundState};

/// `Rejected` code when a payment has no UnionPay `queryId` recorded: a
/// refund must name it, so none can be made through UnionPay.
pub const MISSING_QUERY_ID: &str = "MISSING_QUERY_ID";

/// What a refund's result code (`origRespCode` of a query, `respCode` of a
/// notification) says: `00`/`A6` refunded; `03`/`04`/`05` (timed out,
/// unknown, accepted) still on its way; any other code a final failure.
pub fn refund_state(code: &str) -> Result<RefundState, ChannelError> {
    match code {
        "" => Err(ChannelError::Protocol(
            "refund result without a code".into(),
        )),
        c if sign::is_success(c) => Ok(RefundState::Succeeded),
        "03" | "04" | "05" => Ok(RefundState::Processing),
        _ => Ok(RefundState::Failed),
    }
}

/// A non-empty field of a UnionPay message.
fn field<'a>(p: &'a Params, name: &str) -> Option<&'a str> {
    p.get(name).map(String::as_str).filter(|v| !v.is_empty())
}

fn fen_of(p: &Params) -> Result<Option<Money>, ChannelError> {
    match field(p, "txnAmt") {
        Some(a) => Ok(Some(
            Money::new(sign::txn_amt_to_fen(a)?, Currency::CNY)
                .map_err(|e| ChannelError::Protocol(e.to_string()))?,
        )),
        None => Ok(None),
    }
}

/// `reqReserved` as paymux sends it: the payment id, nothing else.
fn payment_id_in(p: &Params) -> Option<String> {
    field(p, "reqReserved")
        .filter(|v| {
            v.starts_with("pay_")
                && v.len() <= paymux_core::PaymentId::MAX_LEN
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
        .map(str::to_string)
}

impl Unionpay {
    /// The signed fields of a refund request. Everything is derived from the
    /// request, so a repeat is the very same transaction at UnionPay.
    fn refund_fields(&self, req: &RefundRequest) -> Result<Params, ChannelError> {
        let orig_qry_id = req
            .channel_trade_no
            .as_deref()
            .filter(|q| !q.is_empty())
            .ok_or_else(|| ChannelError::Rejected {
                code: MISSING_QUERY_ID.into(),
                message: format!(
                    "UnionPay refunds name the paid consumption by its queryId (origQryId), \
                     and none is recorded for {}: refund it in UnionPay's merchant portal",
                    req.out_trade_no
                ),
            })?;
        if req.amount.currency != Currency::CNY {
            return Err(ChannelError::Rejected {
                code: "INVALID_PARAMETER".into(),
                message: "UnionPay takes CNY amounts here".into(),
            });
        }
        // QR consumptions are refunded under their own product (000000,
        // mobile channel), gateway ones under 000201, as UnionPay's samples do.
        let (biz_type, channel_type) = match req.method {
            PayMethod::Native => ("000000", "08"),
            _ => ("000201", "07"),
        };
        let mut p = self.common(sign::TXN_REFUND, "00", biz_type);
        let mut put = |k: &str, v: String| {
            p.insert(k.to_string(), v);
        };
        put("channelType", channel_type.to_string());
        put("orderId", sign::order_id_of(&req.out_refund_no)?);
        put("txnTime", sign::to_acp_time(req.created_at));
        put("txnAmt", sign::fen_to_txn_amt(req.amount.minor)?);
        put("currencyCode", sign::CURRENCY_CNY.to_string());
        put("origQryId", orig_qry_id.to_string());
        put("backUrl", req.notify_url.clone());
        // Returned verbatim in the refund's notification and query: the only
        // way they name the payment (they carry the consumption's queryId,
        // not its orderId).
        put("reqReserved", req.out_trade_no.clone());
        Ok(p)
    }

    pub(super) async fn create_refund(
        &self,
        req: &RefundRequest,
    ) -> Result<ChannelRefund, ChannelError> {
        let fields = self.refund_fields(req)?;
        let order_id = fields["orderId"].clone();
        let answer = self.call(BACK_TRANS_PATH, fields).await?;
        let code = answer.get("respCode").map(String::as_str).unwrap_or("");
        if !sign::is_success(code) {
            let msg = answer.get("respMsg").cloned().unwrap_or_default();
            return Err(match code {
                // "Duplicate transaction": an earlier request with this
                // orderId reached UnionPay and its answer was lost. It may
                // have been refunded, so the outcome is unknown: settled by query.
                DUPLICATE_ORDER => ChannelError::Transport(format!(
                    "UnionPay already has refund orderId {order_id} ({code} {msg}); its state is settled by query"
                )),
                // For a refund, "not found" is about the consumption named:
                // a refusal of this refund, not a missing refund.
                "34" => ChannelError::Rejected {
                    code: code.to_string(),
                    message: msg,
                },
                _ => refusal(&answer),
            });
        }
        Self::check_order(&answer, &order_id)?;
        check_refund_answer(&answer, req)?;
        Ok(ChannelRefund {
            out_refund_no: req.out_refund_no.clone(),
            // Accepted: the money moves later, as the notification or a query says.
            state: RefundState::Processing,
            refund_id: field(&answer, "queryId").map(str::to_string),
            amount: Some(req.amount),
            refunded_at: None,
            failure: None,
        })
    }

    pub(super) async fn find_refund(
        &self,
        req: &RefundRequest,
    ) -> Result<ChannelRefund, ChannelError> {
        let order_id = sign::order_id_of(&req.out_refund_no)?;
        let mut p = self.common(sign::TXN_QUERY, "00", "000000");
        p.insert("orderId".into(), order_id.clone());
        p.insert("txnTime".into(), sign::to_acp_time(req.created_at));
        // 34 ("no such transaction") becomes NotFound: UnionPay never got it.
        let answer = self.call_ok(QUERY_TRANS_PATH, p).await?;
        Self::check_order(&answer, &order_id)?;
        check_refund_answer(&answer, req)?;
        let orig = field(&answer, "origRespCode").unwrap_or("");
        let state = refund_state(orig)?;
        Ok(ChannelRefund {
            out_refund_no: req.out_refund_no.clone(),
            state,
            refund_id: field(&answer, "queryId").map(str::to_string),
            amount: fen_of(&answer)?,
            refunded_at: None,
            failure: (state == RefundState::Failed).then(|| {
                format!(
                    "{orig} {}",
                    answer.get("origRespMsg").map(String::as_str).unwrap_or("")
                )
                .trim_end()
                .to_string()
            }),
        })
    }

    pub(super) fn parse_refund_notify(
        &self,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<RefundNotification, ChannelError> {
        let params = sign::parse_form(body)?;
        self.verify_params(&params, now)?;
        let required = |name: &str| -> Result<&str, ChannelError> {
            field(&params, name)
                .ok_or_else(|| ChannelError::Protocol(format!("refund notify without {name}")))
        };
        let mer_id = required("merId")?;
        if mer_id != self.config.mer_id {
            return Err(ChannelError::Protocol(format!(
                "refund notify for merId {mer_id}, this account is {}",
                self.config.mer_id
            )));
        }
        let txn_type = required("txnType")?;
        if txn_type != sign::TXN_REFUND {
            return Err(ChannelError::Protocol(format!(
                "refund notify of txnType {txn_type}, not a refund (04)"
            )));
        }
        let resp_code = required("respCode")?;
        let state = refund_state(resp_code)?;
        let query_id = required("queryId")?.to_string();
        let amount = fen_of(&params)?
            .ok_or_else(|| ChannelError::Protocol("refund notify without txnAmt".into()))?;
        Ok(RefundNotification {
            event_id: query_id.clone(),
            // Empty when UnionPay did not return reqReserved: refunds are
            // found by their own id.
            out_trade_no: payment_id_in(&params).unwrap_or_default(),
            refund: ChannelRefund {
                out_refund_no: sign::out_refund_no_of(required("orderId")?),
                state,
                refund_id: Some(query_id),
                amount: Some(amount),
                refunded_at: None,
                failure: (state == RefundState::Failed).then(|| {
                    format!(
                        "{resp_code} {}",
                        params.get("respMsg").map(String::as_str).unwrap_or("")
                    )
                    .trim_end()
                    .to_string()
                }),
            },
        })
    }
}

/// An answer about a refund must be about this one: a refund transaction,
/// of the consumption named, for the amount asked.
fn check_refund_answer(answer: &Params, req: &RefundRequest) -> Result<(), ChannelError> {
    if let Some(t) = field(answer, "txnType") {
        if t != sign::TXN_REFUND {
            return Err(ChannelError::Protocol(format!(
                "asked about refund {}, UnionPay answered about txnType {t}",
                req.out_refund_no
            )));
        }
    }
    if let (Some(got), Some(sent)) = (field(answer, "origQryId"), req.channel_trade_no.as_deref()) {
        if got != sent {
            return Err(ChannelError::Protocol(format!(
                "refund {} is of queryId {got} at UnionPay, not {sent}",
                req.out_refund_no
            )));
        }
    }
    if let Some(amount) = fen_of(answer)? {
        if amount != req.amount {
            return Err(ChannelError::Protocol(format!(
                "refund {} is {} fen at UnionPay, not {}",
                req.out_refund_no, amount.minor, req.amount.minor
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refund_result_codes() {
        assert_eq!(refund_state("00").unwrap(), RefundState::Succeeded);
        assert_eq!(refund_state("A6").unwrap(), RefundState::Succeeded);
        for code in ["03", "04", "05"] {
            assert_eq!(refund_state(code).unwrap(), RefundState::Processing);
        }
        for code in ["01", "35", "60"] {
            assert_eq!(refund_state(code).unwrap(), RefundState::Failed);
        }
        assert!(refund_state("").is_err());
    }

    #[test]
    fn only_a_payment_id_is_read_from_req_reserved() {
        let mut p = Params::new();
        assert_eq!(payment_id_in(&p), None);
        p.insert(
            "reqReserved".into(),
            "pay_01KB0Z8N5V7Q4W3X2Y1Z0A9B8C".into(),
        );
        assert_eq!(
            payment_id_in(&p).as_deref(),
            Some("pay_01KB0Z8N5V7Q4W3X2Y1Z0A9B8C")
        );
        p.insert("reqReserved".into(), "{a=b}".into());
        assert_eq!(payment_id_in(&p), None);
    }
}
