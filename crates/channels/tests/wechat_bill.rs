//! WeChat Pay's trade bill against a real one: the `ALL` sample bill that
//! WeChat Pay's own SDKs test with (`tests/vectors/wechat_tradebill_ALL_sample.csv`;
//! `wechat_tradebill_parse.json` names its sources and what it must parse to).

use std::io::{BufReader, Cursor};

use paymux_channels::bill::{BillFile, BillFormat, BillRecord};
use paymux_channels::wechat::bill::{TradeBillReader, TradeBillSummary};
use serde_json::Value;

fn sample() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/wechat_tradebill_ALL_sample.csv"
    ))
    .unwrap()
}

fn expected() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/wechat_tradebill_parse.json"
    ))
    .unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["expected"].clone()
}

#[test]
fn the_sample_bill_parses_to_its_rows_and_totals() {
    let want = expected();
    let mut reader = TradeBillReader::new(Cursor::new(sample())).unwrap();
    let rows: Vec<_> = reader.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(rows.len() as u64, want["detail_rows"].as_u64().unwrap());
    let first = &rows[0];
    let f = &want["first_row"];
    assert_eq!(first.trade_time, f["交易时间"].as_str().unwrap());
    assert_eq!(first.appid, f["公众账号ID"].as_str().unwrap());
    assert_eq!(first.mchid, f["商户号"].as_str().unwrap());
    assert_eq!(first.transaction_id, f["微信订单号"].as_str().unwrap());
    assert_eq!(first.out_trade_no, f["商户订单号"].as_str().unwrap());
    assert_eq!(first.trade_type, "JSAPI");
    assert_eq!(first.trade_state, "REFUND");
    assert_eq!(first.currency, "CNY");
    assert_eq!(first.settlement_amount, 0);
    assert_eq!(first.refund_id, f["微信退款单号"].as_str().unwrap());
    assert_eq!(first.out_refund_no, f["商户退款单号"].as_str().unwrap());
    assert_eq!(first.refund_amount, 1);
    assert_eq!(first.refund_status, "SUCCESS");
    assert_eq!(first.order_amount, Some(0));
    assert_eq!(first.fee_milli_fen, 0);
    // A coupon lowers what is settled, not the order's amount.
    let last = rows.last().unwrap();
    assert_eq!((last.settlement_amount, last.order_amount), (3, Some(3)));
    assert_eq!(last.fee_milli_fen, 1_000);
    assert_eq!(
        reader.summary(),
        Some(&TradeBillSummary {
            trades: 45,
            settlement_total: 47,
            refund_total: 14,
            fee_total: 8,
        })
    );
}

#[test]
fn the_sample_bill_reads_as_records_that_add_up() {
    let reader = TradeBillReader::new(Cursor::new(sample())).unwrap();
    let records: Vec<_> = reader.records().collect::<Result<_, _>>().unwrap();
    let paid: i64 = records
        .iter()
        .filter_map(|r| match r {
            BillRecord::Payment { amount, .. } => Some(*amount),
            _ => None,
        })
        .sum();
    let refunds: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            BillRecord::Refund {
                amount, succeeded, ..
            } => Some((*amount, *succeeded)),
            _ => None,
        })
        .collect();
    assert_eq!(refunds.iter().map(|r| r.0).sum::<i64>(), 14);
    assert!(refunds.iter().all(|r| r.1));
    assert_eq!(records.len(), 45);
    assert!(paid >= 47, "{paid}");
}

#[test]
fn a_bill_that_disagrees_with_its_summary_is_refused() {
    let text = String::from_utf8(sample()).unwrap();
    // One refund row's amount raised: the rows no longer add up.
    let changed = text.replacen(",`0.01,`0.00,`ORIGINAL", ",`0.02,`0.00,`ORIGINAL", 1);
    assert_ne!(changed, text);
    let reader = TradeBillReader::new(Cursor::new(changed.into_bytes())).unwrap();
    let last = reader.records().last().unwrap();
    assert!(last
        .unwrap_err()
        .to_string()
        .contains("disagree with its summary"));
}

#[test]
fn broken_bills_are_errors_never_panics() {
    let text = String::from_utf8(sample()).unwrap();
    let lines: Vec<&str> = text.split("\r\n").collect();
    let cases = [
        String::new(),
        lines[0].to_string(),
        // A row with a field missing.
        format!(
            "{}\r\n{}\r\n",
            lines[0],
            &lines[1][..lines[1].rfind(",`").unwrap()]
        ),
        // No summary values.
        format!("{}\r\n{}\r\n{}\r\n", lines[0], lines[1], lines[46]),
        // Something after the summary.
        format!(
            "{}\r\n{}\r\n{}\r\n{}\r\nmore\r\n",
            lines[0], lines[1], lines[46], lines[47]
        ),
        // An amount that is not one.
        text.replacen("`0.01,`0.00,`ORIGINAL", "`0.0x,`0.00,`ORIGINAL", 1),
        "交易时间,商户号\r\n".to_string(),
    ];
    for case in cases {
        let result = TradeBillReader::new(BufReader::new(Cursor::new(case.clone().into_bytes())))
            .and_then(|r| r.records().collect::<Result<Vec<_>, _>>());
        assert!(result.is_err(), "{case:?}");
    }
}

#[test]
fn a_gzipped_bill_file_is_read_and_removed_on_drop() {
    use std::io::Write;
    let path = paymux_channels::bill::temp_path("test");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(&sample()).unwrap();
    gz.finish().unwrap();
    let file = BillFile::new(path.clone(), BillFormat::WechatTradeGzip);
    assert_eq!(file.records().unwrap().count(), 45);
    drop(file);
    assert!(!path.exists());
}
