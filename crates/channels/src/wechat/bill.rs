//! WeChat Pay's trade bill (交易账单), as `/v3/bill/tradebill` links to it:
//! UTF-8 with a BOM, CRLF lines; a header row; detail rows whose every field
//! starts with a backtick; then a summary header and one summary row, also
//! backtick-prefixed. Amounts are yuan with two decimals (fees five).
//!
//! The reader takes one line at a time, so a bill of any size is read in
//! bounded memory.

use std::collections::HashMap;
use std::io::BufRead;

use crate::bill::{parse_decimal, read_line, BillRecord};
use crate::ChannelError;

/// The first column of the summary header, which ends the detail rows.
pub const SUMMARY_HEADER_FIRST: &str = "总交易单数";

/// One detail row. Refund rows (`trade_state` `REFUND`) repeat the trade's
/// ids and carry the refund's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeBillRow {
    pub trade_time: String,
    pub appid: String,
    pub mchid: String,
    pub transaction_id: String,
    pub out_trade_no: String,
    pub trade_type: String,
    /// `SUCCESS`, `REFUND`, `REVOKED`, …
    pub trade_state: String,
    pub currency: String,
    /// 应结订单金额, in fen.
    pub settlement_amount: i64,
    /// 订单金额, in fen: what the order was for, coupons included (absent
    /// from bills without the column).
    pub order_amount: Option<i64>,
    pub refund_id: String,
    pub out_refund_no: String,
    /// 退款金额, in fen.
    pub refund_amount: i64,
    pub refund_status: String,
    /// 手续费, in 1/100,000 of a yuan (1/1000 of a fen).
    pub fee_milli_fen: i64,
}

/// The summary row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TradeBillSummary {
    pub trades: u64,
    /// 应结订单总金额, in fen.
    pub settlement_total: i64,
    /// 退款总金额, in fen.
    pub refund_total: i64,
    /// 手续费总金额, in fen.
    pub fee_total: i64,
}

/// Reads a trade bill row by row.
pub struct TradeBillReader<R> {
    input: R,
    columns: Columns,
    width: usize,
    line: Vec<u8>,
    line_no: u64,
    summary: Option<TradeBillSummary>,
    done: bool,
}

/// Where each field paymux reads sits in a row (the columns of the `ALL`,
/// `SUCCESS` and `REFUND` bills differ).
struct Columns {
    trade_time: usize,
    appid: usize,
    mchid: usize,
    transaction_id: usize,
    out_trade_no: usize,
    trade_type: usize,
    trade_state: usize,
    currency: usize,
    settlement_amount: usize,
    order_amount: Option<usize>,
    refund_id: Option<usize>,
    out_refund_no: Option<usize>,
    refund_amount: Option<usize>,
    refund_status: Option<usize>,
    fee: usize,
}

impl Columns {
    fn from_header(names: &[&str]) -> Result<Self, ChannelError> {
        let at: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let find = |name: &str| at.get(name).copied();
        let need = |name: &str| {
            find(name).ok_or_else(|| {
                ChannelError::Protocol(format!("the bill's header has no column {name}"))
            })
        };
        Ok(Columns {
            trade_time: need("交易时间")?,
            appid: need("公众账号ID")?,
            mchid: need("商户号")?,
            transaction_id: need("微信订单号")?,
            out_trade_no: need("商户订单号")?,
            trade_type: need("交易类型")?,
            trade_state: need("交易状态")?,
            currency: need("货币种类")?,
            settlement_amount: need("应结订单金额")?,
            order_amount: find("订单金额"),
            refund_id: find("微信退款单号"),
            out_refund_no: find("商户退款单号"),
            refund_amount: find("退款金额"),
            refund_status: find("退款状态"),
            fee: need("手续费")?,
        })
    }
}

fn utf8(bytes: &[u8], line_no: u64) -> Result<&str, ChannelError> {
    std::str::from_utf8(bytes)
        .map_err(|_| ChannelError::Protocol(format!("bill line {line_no} is not UTF-8")))
}

/// A backtick-prefixed row's fields.
fn ticked(line: &str) -> Option<Vec<&str>> {
    line.strip_prefix('`')
        .map(|rest| rest.split(",`").collect())
}

impl<R: BufRead> TradeBillReader<R> {
    /// Reads the header row.
    pub fn new(mut input: R) -> Result<Self, ChannelError> {
        let mut line = Vec::new();
        if !read_line(&mut input, &mut line)? {
            return Err(ChannelError::Protocol("the bill is empty".into()));
        }
        let header = utf8(&line, 1)?;
        let header = header.strip_prefix('\u{feff}').unwrap_or(header);
        let names: Vec<&str> = header.split(',').map(str::trim).collect();
        let columns = Columns::from_header(&names)?;
        let width = names.len();
        Ok(TradeBillReader {
            input,
            columns,
            width,
            line,
            line_no: 1,
            summary: None,
            done: false,
        })
    }

    /// The summary, once every detail row has been read.
    pub fn summary(&self) -> Option<&TradeBillSummary> {
        self.summary.as_ref()
    }

    /// The rows that moved money as [`BillRecord`]s, checked against the
    /// summary at the end.
    pub fn records(self) -> impl Iterator<Item = Result<BillRecord, ChannelError>> {
        Records {
            reader: self,
            trades: 0,
            settled: 0,
            refunded: 0,
            failed: false,
        }
    }

    fn next_row(&mut self) -> Result<Option<TradeBillRow>, ChannelError> {
        if self.done {
            return Ok(None);
        }
        if !read_line(&mut self.input, &mut self.line)? {
            return Err(ChannelError::Protocol(
                "the bill ends before its summary".into(),
            ));
        }
        self.line_no += 1;
        let line_no = self.line_no;
        let text = utf8(&self.line, line_no)?;
        let Some(fields) = ticked(text) else {
            let header = text.to_owned();
            self.summary = Some(self.read_summary(&header)?);
            self.done = true;
            return Ok(None);
        };
        if fields.len() != self.width {
            return Err(ChannelError::Protocol(format!(
                "bill line {line_no} has {} fields, the header {}",
                fields.len(),
                self.width
            )));
        }
        let c = &self.columns;
        let text_at = |i: usize| fields[i].trim().to_string();
        let opt_at = |i: Option<usize>| i.map(text_at).unwrap_or_default();
        let amount = |i: usize, scale: u32| {
            parse_decimal(fields[i].trim(), scale)
                .map_err(|e| ChannelError::Protocol(format!("bill line {line_no}: {e}")))
        };
        let opt_amount = |i: Option<usize>| i.map_or(Ok(0), |i| amount(i, 2));
        Ok(Some(TradeBillRow {
            trade_time: text_at(c.trade_time),
            appid: text_at(c.appid),
            mchid: text_at(c.mchid),
            transaction_id: text_at(c.transaction_id),
            out_trade_no: text_at(c.out_trade_no),
            trade_type: text_at(c.trade_type),
            trade_state: text_at(c.trade_state),
            currency: text_at(c.currency),
            settlement_amount: amount(c.settlement_amount, 2)?,
            order_amount: c.order_amount.map(|i| amount(i, 2)).transpose()?,
            refund_id: opt_at(c.refund_id),
            out_refund_no: opt_at(c.out_refund_no),
            refund_amount: opt_amount(c.refund_amount)?,
            refund_status: opt_at(c.refund_status),
            fee_milli_fen: amount(c.fee, 5)?,
        }))
    }

    /// `header` is the summary header; its values are the next line, the last.
    fn read_summary(&mut self, header: &str) -> Result<TradeBillSummary, ChannelError> {
        let names: Vec<String> = header.split(',').map(|n| n.trim().to_string()).collect();
        if names.first().map(String::as_str) != Some(SUMMARY_HEADER_FIRST) {
            return Err(ChannelError::Protocol(format!(
                "bill line {} is neither a row nor the summary",
                self.line_no
            )));
        }
        if !read_line(&mut self.input, &mut self.line)? {
            return Err(ChannelError::Protocol(
                "the bill's summary has no values".into(),
            ));
        }
        self.line_no += 1;
        let line_no = self.line_no;
        let values = ticked(utf8(&self.line, line_no)?)
            .filter(|v| v.len() == names.len())
            .ok_or_else(|| {
                ChannelError::Protocol(format!("bill line {line_no} is not the summary's values"))
            })?;
        let value = |name: &str| -> Result<i64, ChannelError> {
            let i = names.iter().position(|n| n == name).ok_or_else(|| {
                ChannelError::Protocol(format!("the bill's summary has no {name}"))
            })?;
            parse_decimal(values[i].trim(), 2)
                .map_err(|e| ChannelError::Protocol(format!("bill summary {name}: {e}")))
        };
        let summary = TradeBillSummary {
            // `45.0`: a count written as an amount.
            trades: (value(SUMMARY_HEADER_FIRST)? / 100) as u64,
            settlement_total: value("应结订单总金额")?,
            refund_total: value("退款总金额")?,
            fee_total: value("手续费总金额")?,
        };
        let mut rest = Vec::new();
        while read_line(&mut self.input, &mut rest)? {
            if !rest.iter().all(u8::is_ascii_whitespace) {
                return Err(ChannelError::Protocol(
                    "the bill goes on after its summary".into(),
                ));
            }
        }
        Ok(summary)
    }
}

impl<R: BufRead> Iterator for TradeBillReader<R> {
    type Item = Result<TradeBillRow, ChannelError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_row() {
            Ok(row) => row.map(Ok),
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Turns rows into records and, at the end, holds them to the summary: a
/// bill whose rows do not add up to its own totals is not trusted.
struct Records<R> {
    reader: TradeBillReader<R>,
    trades: u64,
    settled: i64,
    refunded: i64,
    failed: bool,
}

impl<R: BufRead> Iterator for Records<R> {
    type Item = Result<BillRecord, ChannelError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            let row = match self.reader.next() {
                Some(Ok(row)) => row,
                Some(Err(e)) => {
                    self.failed = true;
                    return Some(Err(e));
                }
                None => {
                    self.failed = true;
                    return self.check_summary().err().map(Err);
                }
            };
            self.trades += 1;
            self.settled = self.settled.saturating_add(row.settlement_amount);
            self.refunded = self.refunded.saturating_add(row.refund_amount);
            if let Some(record) = record(row) {
                return Some(Ok(record));
            }
        }
    }
}

impl<R: BufRead> Records<R> {
    fn check_summary(&self) -> Result<(), ChannelError> {
        let s = self
            .reader
            .summary()
            .ok_or_else(|| ChannelError::Protocol("the bill has no summary".into()))?;
        let ours = (self.trades, self.settled, self.refunded);
        let theirs = (s.trades, s.settlement_total, s.refund_total);
        if ours != theirs {
            return Err(ChannelError::Protocol(format!(
                "the bill's rows (count, settled, refunded) {ours:?} disagree with its summary {theirs:?}"
            )));
        }
        Ok(())
    }
}

/// The record a row stands for: a successful trade, a refund; other rows
/// (a revoked trade) moved no money.
fn record(row: TradeBillRow) -> Option<BillRecord> {
    match row.trade_state.as_str() {
        "SUCCESS" => Some(BillRecord::Payment {
            out_trade_no: row.out_trade_no,
            channel_trade_no: row.transaction_id,
            // What the order was for, as paymux knows it: a coupon lowers
            // what is settled, not what was paid.
            amount: row.order_amount.unwrap_or(row.settlement_amount),
            currency: row.currency,
            fee_milli: row.fee_milli_fen,
        }),
        "REFUND" => Some(BillRecord::Refund {
            out_trade_no: row.out_trade_no,
            out_refund_no: row.out_refund_no,
            channel_refund_no: row.refund_id,
            amount: row.refund_amount,
            currency: row.currency,
            succeeded: row.refund_status == "SUCCESS",
        }),
        _ => None,
    }
}

/// Compressed bills larger than this are refused (about 30 million rows).
pub const MAX_DOWNLOAD_BYTES: u64 = 2 << 30;

/// What `/v3/bill/tradebill` answers.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct BillLink {
    pub hash_type: String,
    pub hash_value: String,
    pub download_url: String,
}

/// Checks the SHA-1 of the decompressed bill at `path` against the one the
/// bill's link came with. Blocking I/O.
pub fn check_gzip_sha1(path: &std::path::Path, want_hex: &str) -> Result<(), ChannelError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(crate::bill::io)?;
    let mut gz = flate2::read::GzDecoder::new(file);
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = gz.read(&mut buf).map_err(crate::bill::io)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    let got = hex::encode(ctx.finish());
    if !got.eq_ignore_ascii_case(want_hex.trim()) {
        return Err(ChannelError::Protocol(format!(
            "the bill's SHA1 is {got}, its link said {want_hex}"
        )));
    }
    Ok(())
}
