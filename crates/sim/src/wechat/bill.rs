//! The trade bill (交易账单, type `ALL`) the simulated WeChat Pay writes for
//! a merchant's day, as WeChat writes it: UTF-8 with a BOM, CRLF lines, the
//! 27-column header, every detail field prefixed with a backtick, then the
//! summary header and row. Written here on its own (not with paymux's
//! reader), so the two check each other.

use chrono::{DateTime, NaiveDate};
use paymux_core::clock::china_standard_time;

use super::refund::SimRefundState;
use super::{lock, OrderState, WechatSim};
use crate::faults::BillFaults;

const HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,\
交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,\
退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
const SUMMARY_HEADER: &str =
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";

/// The simulated fee rate: 0.6 %, in 1/1000 of a fen per fen.
const FEE_MILLI_PER_FEN: i64 = 6;

/// One detail row: a successful trade or a refund.
#[derive(Debug, Clone)]
pub struct BillLine {
    /// `YYYY-MM-DD HH:MM:SS`, China time.
    pub time: String,
    pub appid: String,
    pub transaction_id: String,
    pub out_trade_no: String,
    pub openid: String,
    pub trade_type: &'static str,
    pub description: String,
    /// The order's amount in fen (0 on a refund row).
    pub amount: i64,
    /// `(refund_id, out_refund_no, amount in fen)` on a refund row.
    pub refund: Option<(String, String, i64)>,
}

/// `time` (as the simulator keeps it, RFC 3339) on China's clock, if it falls on `date`.
fn on_date(time: Option<&str>, date: NaiveDate) -> Option<String> {
    let t = DateTime::parse_from_rfc3339(time?)
        .ok()?
        .with_timezone(&china_standard_time());
    (t.date_naive() == date).then(|| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

fn yuan(fen: i64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

impl WechatSim {
    /// The merchant's bill of the China-time day `date` with `faults`
    /// applied, or `None` when nothing moved that day (WeChat then has no bill).
    pub(crate) fn trade_bill(
        &self,
        mchid: &str,
        date: NaiveDate,
        faults: &BillFaults,
    ) -> Option<String> {
        let mut rows = Vec::new();
        let dropped = |id: &str| faults.drop.iter().any(|d| d == id);
        for ((m, out_trade_no), o) in lock(&self.orders).iter() {
            if m != mchid || o.state != OrderState::Success || dropped(out_trade_no) {
                continue;
            }
            let Some(time) = on_date(o.success_time.as_deref(), date) else {
                continue;
            };
            let amount = faults
                .change_amount
                .get(out_trade_no)
                .copied()
                .unwrap_or(o.body.amount.total);
            rows.push(BillLine {
                time,
                appid: o.body.appid.clone(),
                transaction_id: o.transaction_id.clone().unwrap_or_default(),
                out_trade_no: out_trade_no.clone(),
                openid: o
                    .body
                    .payer
                    .as_ref()
                    .and_then(|p| p.openid.clone())
                    .unwrap_or_default(),
                trade_type: o.trade_type.as_str(),
                description: o.body.description.clone(),
                amount,
                refund: None,
            });
        }
        {
            let orders = lock(&self.orders);
            for ((m, out_refund_no), r) in lock(&self.refunds).iter() {
                let out_trade_no = r.body.out_trade_no.clone();
                if m != mchid
                    || r.state != SimRefundState::Success
                    || dropped(out_refund_no)
                    || dropped(&out_trade_no)
                {
                    continue;
                }
                let Some(time) = on_date(r.success_time.as_deref(), date) else {
                    continue;
                };
                let order = orders.get(&(m.clone(), out_trade_no.clone()));
                rows.push(BillLine {
                    time,
                    appid: order.map(|o| o.body.appid.clone()).unwrap_or_default(),
                    transaction_id: r.transaction_id.clone().unwrap_or_default(),
                    out_trade_no,
                    openid: String::new(),
                    trade_type: order.map_or("NATIVE", |o| o.trade_type.as_str()),
                    description: order
                        .map(|o| o.body.description.clone())
                        .unwrap_or_default(),
                    amount: 0,
                    refund: Some((
                        r.refund_id.clone(),
                        out_refund_no.clone(),
                        r.body.amount.refund,
                    )),
                });
            }
        }
        for i in 0..faults.add_unknown {
            rows.push(BillLine {
                time: format!("{date} 12:00:00"),
                appid: String::new(),
                transaction_id: format!("42000{}", self.unique(23)),
                out_trade_no: format!("unknown{i}{}", self.unique(8)),
                openid: String::new(),
                trade_type: "NATIVE",
                description: "not made through paymux".into(),
                amount: 100 + i64::from(i),
                refund: None,
            });
        }
        if rows.is_empty() {
            return None;
        }
        rows.sort_by(|a, b| a.time.cmp(&b.time));
        let mut out = Vec::with_capacity(256 * (rows.len() + 3));
        write_bill(&mut out, mchid, rows).expect("writing to memory");
        Some(String::from_utf8(out).expect("the bill is UTF-8"))
    }
}

/// Writes a whole bill of `rows` for merchant `mchid`, one line at a time
/// (so a bill of any size streams, as `paymux bench` uses it).
pub fn write_bill(
    out: &mut impl std::io::Write,
    mchid: &str,
    rows: impl IntoIterator<Item = BillLine>,
) -> std::io::Result<()> {
    let mut line = String::with_capacity(512);
    line.push('\u{feff}');
    line.push_str(HEADER);
    line.push_str("\r\n");
    out.write_all(line.as_bytes())?;
    let (mut count, mut settled, mut refunded, mut fees) = (0u64, 0i64, 0i64, 0i64);
    for r in rows {
        count += 1;
        line.clear();
        let (refund_id, out_refund_no, refund_amount) = r
            .refund
            .clone()
            .unwrap_or_else(|| ("0".into(), "0".into(), 0));
        let fee = r.amount * FEE_MILLI_PER_FEN;
        settled += r.amount;
        refunded += refund_amount;
        fees += fee;
        let (state, refund_type, refund_status) = match r.refund {
            Some(_) => ("REFUND", "ORIGINAL", "SUCCESS"),
            None => ("SUCCESS", "", ""),
        };
        let fields = [
            r.time.clone(),
            r.appid.clone(),
            mchid.to_string(),
            "0".into(),
            String::new(),
            r.transaction_id.clone(),
            r.out_trade_no.clone(),
            r.openid.clone(),
            r.trade_type.into(),
            state.into(),
            "OTHERS".into(),
            "CNY".into(),
            yuan(r.amount),
            "0.00".into(),
            refund_id,
            out_refund_no,
            yuan(refund_amount),
            "0.00".into(),
            refund_type.into(),
            refund_status.into(),
            r.description.replace([',', '`', '\r', '\n'], " "),
            String::new(),
            format!("{}.{:05}", fee / 100_000, fee % 100_000),
            "0.60%".into(),
            yuan(r.amount),
            yuan(refund_amount),
            String::new(),
        ];
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            line.push('`');
            line.push_str(f);
        }
        line.push_str("\r\n");
        out.write_all(line.as_bytes())?;
    }
    line.clear();
    line.push_str(SUMMARY_HEADER);
    line.push_str("\r\n");
    // Fees are summed exactly, then rounded to the fen.
    let fee_total = (fees + 500) / 1000;
    let summary = [
        format!("{count}.0"),
        yuan(settled),
        yuan(refunded),
        "0.00".into(),
        yuan(fee_total),
        yuan(settled),
        yuan(refunded),
    ];
    line.push('`');
    line.push_str(&summary.join(",`"));
    line.push_str("\r\n");
    out.write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_written_as_yuan() {
        assert_eq!(yuan(1), "0.01");
        assert_eq!(yuan(12_345), "123.45");
        assert_eq!(yuan(0), "0.00");
    }

    #[test]
    fn only_times_on_the_day_count() {
        let d = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        assert_eq!(
            on_date(Some("2026-12-01T23:59:59+08:00"), d).as_deref(),
            Some("2026-12-01 23:59:59")
        );
        // 16:30 UTC is already the next day in China.
        assert_eq!(
            on_date(Some("2026-11-30T16:30:00Z"), d).as_deref(),
            Some("2026-12-01 00:30:00")
        );
        assert_eq!(on_date(Some("2026-12-02T00:00:00+08:00"), d), None);
        assert_eq!(on_date(None, d), None);
    }
}
