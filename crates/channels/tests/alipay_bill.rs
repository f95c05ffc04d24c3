//! Alipay's trade bill detail (GBK CSV). No real Alipay bill file was
//! available; the layout follows the published description of the
//! detail file (comment lines, the 25-column header, tab-padded ids,
//! negative refund amounts, a footer), written here by hand.

use std::io::Cursor;

use paymux_channels::alipay::bill::{gbk_line, DetailReader};
use paymux_channels::bill::BillRecord;

const HEADER: &str = "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注";

fn bill(rows: &[&str]) -> Vec<u8> {
    let mut text = String::from("#支付宝业务明细查询\r\n#账号：[20880000000000000156]\r\n");
    text.push_str("#-----------------------------------------业务明细列表----------------------------------------\r\n");
    text.push_str(HEADER);
    text.push_str("\r\n");
    for r in rows {
        text.push_str(r);
        text.push_str("\r\n");
    }
    text.push_str("#-----------------------------------------业务明细列表结束------------------------------------\r\n");
    text.push_str("#交易合计：1笔，商家实收共19.99元，商家优惠共0.00元\r\n#导出时间：[2026年12月02日 10:00:00]\r\n");
    encoding_rs::GBK.encode(&text).0.into_owned()
}

const TRADE: &str = "2026120122001400000000000001\t,pay_01J0000000000000000000000\t,交易,两杯奶茶,2026-12-01 10:00:00,2026-12-01 10:00:05,,,,,buy***@example.com,19.99,19.99,0.00,0.00,0.00,0.00,0.00,,0.00,0.00,,-0.12,0.00,";
const REFUND: &str = "2026120122001400000000000001\t,pay_01J0000000000000000000000\t,退款,两杯奶茶,2026-12-01 10:00:00,2026-12-01 11:00:00,,,,,buy***@example.com,-4.00,-4.00,0.00,0.00,0.00,0.00,0.00,,0.00,0.00,ref_01J0000000000000000000000,0.02,0.00,";

fn read(bytes: Vec<u8>) -> Result<Vec<BillRecord>, String> {
    DetailReader::new(Cursor::new(bytes))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

#[test]
fn trades_and_refunds_are_read_from_gbk() {
    let records = read(bill(&[TRADE, REFUND])).unwrap();
    assert_eq!(
        records,
        [
            BillRecord::Payment {
                out_trade_no: "pay_01J0000000000000000000000".into(),
                channel_trade_no: "2026120122001400000000000001".into(),
                amount: 1999,
                currency: "CNY".into(),
                fee_milli: 12_000,
            },
            BillRecord::Refund {
                out_trade_no: "pay_01J0000000000000000000000".into(),
                out_refund_no: "ref_01J0000000000000000000000".into(),
                channel_refund_no: String::new(),
                amount: 400,
                currency: "CNY".into(),
                succeeded: true,
            },
        ]
    );
    assert_eq!(gbk_line(&encoding_rs::GBK.encode("业务明细").0), "业务明细");
}

#[test]
fn broken_details_are_errors_never_panics() {
    let short = &TRADE[..TRADE.rfind(',').unwrap()];
    let cases = [
        bill(&[short]),
        bill(&[&TRADE.replace("19.99,19.99", "19.9x,19.99")]),
        // A trade with a refund's sign.
        bill(&[&TRADE.replace(",19.99,19.99,", ",-19.99,-19.99,")]),
        // No header at all.
        encoding_rs::GBK
            .encode("#支付宝业务明细查询\r\n")
            .0
            .into_owned(),
        // Data before the header.
        encoding_rs::GBK
            .encode(&format!("{TRADE}\r\n{HEADER}\r\n"))
            .0
            .into_owned(),
        // A header without a column paymux needs.
        encoding_rs::GBK
            .encode("支付宝交易号,商户订单号\r\n")
            .0
            .into_owned(),
        // Bytes that are not GBK where an amount should be.
        bill(&[&TRADE.replace("19.99,19.99", "\u{fffd},19.99")]),
    ];
    for case in cases {
        assert!(read(case.clone()).is_err(), "{:?}", gbk_line(&case));
        // An error ends the records: the reader never repeats it forever.
        assert_eq!(DetailReader::new(Cursor::new(case)).count(), 1);
    }
    assert_eq!(DetailReader::new(Cursor::new(Vec::new())).count(), 1);
    // Rows of other business kinds move no trade money and are skipped.
    let other = TRADE.replace(",交易,", ",转账,");
    assert!(read(bill(&[&other])).unwrap().is_empty());
}
