//! The trade bill the simulated Alipay makes for an app's day, as Alipay
//! ships it: a zip of two GBK-encoded CSV files, the detail
//! (`…业务明细.csv`: `#` comment lines, a header, one row per trade or
//! refund, fields padded with a tab where Alipay pads them, a footer with
//! totals) and its summary (`…业务明细(汇总).csv`). Written here on its own
//! (not with paymux's reader), so the two check each other.

use std::io::Write;

use chrono::NaiveDate;
use serde_json::{json, Value};

use super::api::{success, Refusal};
use super::{lock, AlipaySim, App};
use crate::faults::BillFaults;

const DETAIL_HEADER: &str = "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,\
操作员,终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,\
商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,\
服务费（元）,分润（元）,备注";

/// The simulated service fee: 0.6 %, rounded half up to the fen (a
/// refund's, negative, the same way from zero).
fn fee(fen: i64) -> i64 {
    fen.signum() * ((fen.abs() * 6 + 500) / 1000)
}

fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", fen.abs() / 100, fen.abs() % 100)
}

/// One detail row.
struct Line {
    trade_no: String,
    out_trade_no: String,
    refund: Option<String>,
    subject: String,
    created: String,
    finished: String,
    buyer: String,
    /// Signed: a refund's is negative.
    amount: i64,
}

impl AlipaySim {
    /// `alipay.data.dataservice.bill.downloadurl.query` (`bill_type=trade`,
    /// a day): makes the app's bill of that day with the bill faults set
    /// for it and answers a link to download it from `files_base`.
    pub(super) fn bill_link(
        &self,
        app: &App,
        biz: &Value,
        files_base: &str,
    ) -> Result<Value, Refusal> {
        let field = |k: &str| biz.get(k).and_then(Value::as_str).unwrap_or("");
        if field("bill_type") != "trade" {
            return Err(Refusal::args(
                "isv.invalid-arguments",
                "模拟器只提供 trade 账单",
            ));
        }
        let date = NaiveDate::parse_from_str(field("bill_date"), "%Y-%m-%d")
            .map_err(|_| Refusal::args("isv.invalid-arguments", "bill_date 格式错误"))?;
        let faults = self.faults.take_bill_faults();
        let lines = self.bill_lines(&app.info.app_id, date, &faults);
        if lines.is_empty() {
            return Err(Refusal::business("isp.bill_not_exist", "账单不存在"));
        }
        let zip = write_zip(&app.seller_id, date, &lines)
            .map_err(|e| Refusal::system(format!("writing the bill: {e}")))?;
        let token = self.unique(24);
        self.bills.keep(&token, &app.info.app_id, zip);
        Ok(success(json!({
            "bill_download_url": format!(
                "{files_base}/bills/download?bizType=trade&fileType=csv.zip&bizDates={}&token={token}",
                date.format("%Y%m%d")
            ),
        })))
    }

    fn bill_lines(&self, app_id: &str, date: NaiveDate, faults: &BillFaults) -> Vec<Line> {
        let day = date.format("%Y-%m-%d").to_string();
        let on_day = |t: &str| t.starts_with(&day);
        let dropped = |id: &str| faults.drop.iter().any(|d| d == id);
        let mut lines = Vec::new();
        let orders = lock(&self.orders);
        for ((a, out_trade_no), o) in orders.iter() {
            let Some(paid) = o.gmt_payment.as_deref() else {
                continue;
            };
            if a != app_id || !on_day(paid) || dropped(out_trade_no) {
                continue;
            }
            let amount = faults
                .change_amount
                .get(out_trade_no)
                .copied()
                .or_else(|| paymux_channels::alipay::sign::yuan_to_minor(&o.total_amount).ok())
                .unwrap_or(0);
            lines.push(Line {
                trade_no: o.trade_no.clone(),
                out_trade_no: out_trade_no.clone(),
                refund: None,
                subject: o.subject.clone(),
                created: o.gmt_create.clone(),
                finished: paid.to_string(),
                buyer: o.buyer_id.clone(),
                amount,
            });
        }
        for ((a, out_trade_no), refunds) in lock(&self.refunds).iter() {
            let Some(o) = orders.get(&(a.clone(), out_trade_no.clone())) else {
                continue;
            };
            for r in refunds {
                if a != app_id
                    || !on_day(&r.gmt_refund_pay)
                    || dropped(&r.out_request_no)
                    || dropped(out_trade_no)
                {
                    continue;
                }
                lines.push(Line {
                    trade_no: o.trade_no.clone(),
                    out_trade_no: out_trade_no.clone(),
                    refund: Some(r.out_request_no.clone()),
                    subject: o.subject.clone(),
                    created: o.gmt_create.clone(),
                    finished: r.gmt_refund_pay.clone(),
                    buyer: o.buyer_id.clone(),
                    amount: -r.amount,
                });
            }
        }
        for i in 0..faults.add_unknown {
            lines.push(Line {
                trade_no: format!("2026{}", self.unique(24)),
                out_trade_no: format!("unknown{i}{}", self.unique(8)),
                refund: None,
                subject: "not made through paymux".into(),
                created: format!("{day} 12:00:00"),
                finished: format!("{day} 12:00:01"),
                buyer: "208810****".into(),
                amount: 100 + i64::from(i),
            });
        }
        lines.sort_by(|a, b| a.finished.cmp(&b.finished));
        lines
    }
}

fn gbk(text: &str) -> Vec<u8> {
    encoding_rs::GBK.encode(text).0.into_owned()
}

fn write_zip(seller_id: &str, date: NaiveDate, lines: &[Line]) -> std::io::Result<Vec<u8>> {
    let stamp = date.format("%Y%m%d");
    let day = date.format("%Y年%m月%d日");
    let mut detail = String::new();
    detail.push_str("#支付宝业务明细查询\r\n");
    detail.push_str(&format!("#账号：[{seller_id}0156]\r\n"));
    detail.push_str(&format!(
        "#起始日期：[{day} 00:00:00]   终止日期：[{day} 23:59:59]\r\n"
    ));
    detail.push_str("#-----------------------------------------业务明细列表----------------------------------------\r\n");
    detail.push_str(DETAIL_HEADER);
    detail.push_str("\r\n");
    let (mut trades, mut refunds, mut taken, mut given) = (0, 0, 0i64, 0i64);
    for l in lines {
        let kind = match l.refund {
            Some(_) => {
                refunds += 1;
                given += l.amount;
                "退款"
            }
            None => {
                trades += 1;
                taken += l.amount;
                "交易"
            }
        };
        let fields = [
            // Alipay pads its long ids with a tab so spreadsheets keep them as text.
            format!("{}\t", l.trade_no),
            format!("{}\t", l.out_trade_no),
            kind.into(),
            l.subject.replace([',', '\r', '\n'], " "),
            l.created.clone(),
            l.finished.clone(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            l.buyer.clone(),
            yuan(l.amount),
            yuan(l.amount),
            "0.00".into(),
            "0.00".into(),
            "0.00".into(),
            "0.00".into(),
            "0.00".into(),
            String::new(),
            "0.00".into(),
            "0.00".into(),
            l.refund.clone().unwrap_or_default(),
            yuan(-fee(l.amount)),
            "0.00".into(),
            String::new(),
        ];
        detail.push_str(&fields.join(","));
        detail.push_str("\r\n");
    }
    detail.push_str("#-----------------------------------------业务明细列表结束------------------------------------\r\n");
    detail.push_str(&format!(
        "#交易合计：{trades}笔，商家实收共{}元，商家优惠共0.00元\r\n",
        yuan(taken)
    ));
    detail.push_str(&format!(
        "#退款合计：{refunds}笔，商家实收退款共{}元，商家优惠退款共0.00元\r\n",
        yuan(given)
    ));
    detail.push_str(&format!("#导出时间：[{day} 10:00:00]\r\n"));

    let mut summary = String::new();
    summary.push_str("#支付宝业务汇总查询\r\n");
    summary.push_str(&format!("#账号：[{seller_id}0156]\r\n"));
    summary.push_str(&format!(
        "#起始日期：[{day} 00:00:00]   终止日期：[{day} 23:59:59]\r\n"
    ));
    summary.push_str("门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）,商家实收（元）,服务费（元）\r\n");
    summary.push_str(&format!(
        "合计,,{trades},{refunds},{},{},{}\r\n",
        yuan(taken + given),
        yuan(taken + given),
        yuan(-lines.iter().map(|l| fee(l.amount)).sum::<i64>())
    ));
    summary.push_str(&format!("#导出时间：[{day} 10:00:00]\r\n"));

    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file(format!("{seller_id}0156_{stamp}_业务明细.csv"), options)?;
    zip.write_all(&gbk(&detail))?;
    zip.start_file(
        format!("{seller_id}0156_{stamp}_业务明细(汇总).csv"),
        options,
    )?;
    zip.write_all(&gbk(&summary))?;
    Ok(zip.finish()?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fees_and_yuan() {
        assert_eq!(fee(700), 4);
        assert_eq!(fee(-400), -2);
        assert_eq!(yuan(-400), "-4.00");
        assert_eq!(yuan(5), "0.05");
    }
}
