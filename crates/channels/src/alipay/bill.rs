//! Alipay's trade bill (业务明细), as `alipay.data.dataservice.bill.downloadurl.query`
//! links to it: a zip holding two GBK-encoded CSV files, the detail
//! (`…业务明细.csv`) and its summary (`…业务明细(汇总).csv`). The detail has
//! `#` comment lines around a header row and the data rows; fields may
//! carry trailing spaces or tabs; refunds (业务类型 `退款`) have negative
//! amounts and name the refund request in 退款批次号/请求号.
//!
//! The detail is found by its header (file names in these zips are GBK
//! too), then read one line at a time: GBK keeps `\n` a single byte that
//! never occurs inside a character, so each line is decoded on its own and
//! a bill of any size is read in bounded memory.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};

use crate::bill::{parse_decimal, read_line, BillRecord};
use crate::ChannelError;

/// The first column of the detail's header.
pub const HEADER_FIRST: &str = "支付宝交易号";

/// Decodes one GBK line (a broken byte becomes U+FFFD and then fails
/// whatever field it lands in, rather than the whole bill silently).
pub fn gbk_line(bytes: &[u8]) -> String {
    encoding_rs::GBK
        .decode_without_bom_handling(bytes)
        .0
        .into_owned()
}

/// Where the fields paymux reads sit in a row.
struct Columns {
    trade_no: usize,
    out_trade_no: usize,
    kind: usize,
    order_amount: usize,
    refund_request_no: usize,
    fee: usize,
}

impl Columns {
    fn from_header(names: &[&str]) -> Result<Self, ChannelError> {
        let at: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let need = |name: &str| {
            at.get(name).copied().ok_or_else(|| {
                ChannelError::Protocol(format!("the Alipay bill has no column {name}"))
            })
        };
        Ok(Columns {
            trade_no: need(HEADER_FIRST)?,
            out_trade_no: need("商户订单号")?,
            kind: need("业务类型")?,
            order_amount: need("订单金额（元）")?,
            refund_request_no: need("退款批次号/请求号")?,
            fee: need("服务费（元）")?,
        })
    }
}

/// A signed yuan amount (`-0.40`) as its sign and fen.
fn signed_fen(text: &str, line_no: u64) -> Result<(bool, i64), ChannelError> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let fen = parse_decimal(digits, 2)
        .map_err(|e| ChannelError::Protocol(format!("Alipay bill line {line_no}: {e}")))?;
    Ok((negative, fen))
}

/// Reads the detail file's records.
pub struct DetailReader<R> {
    input: R,
    columns: Option<Columns>,
    width: usize,
    line: Vec<u8>,
    line_no: u64,
    done: bool,
}

impl<R: BufRead> DetailReader<R> {
    pub fn new(input: R) -> Self {
        DetailReader {
            input,
            columns: None,
            width: 0,
            line: Vec::new(),
            line_no: 0,
            done: false,
        }
    }

    fn next_record(&mut self) -> Result<Option<BillRecord>, ChannelError> {
        if self.done {
            return Ok(None);
        }
        loop {
            if !read_line(&mut self.input, &mut self.line)? {
                self.done = true;
                if self.columns.is_none() {
                    return Err(ChannelError::Protocol(
                        "the Alipay bill has no detail header".into(),
                    ));
                }
                return Ok(None);
            }
            self.line_no += 1;
            let text = gbk_line(&self.line);
            let text = text.trim_start_matches('\u{feff}').trim_end();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = text
                .split(',')
                .map(|f| f.trim_matches([' ', '\t']))
                .collect();
            let Some(c) = &self.columns else {
                if fields.first() != Some(&HEADER_FIRST) {
                    return Err(ChannelError::Protocol(format!(
                        "Alipay bill line {}: data before the header",
                        self.line_no
                    )));
                }
                self.columns = Some(Columns::from_header(&fields)?);
                self.width = fields.len();
                continue;
            };
            // A trailing comma (an empty 备注) is still the header's width.
            if fields.len() != self.width {
                return Err(ChannelError::Protocol(format!(
                    "Alipay bill line {} has {} fields, the header {}",
                    self.line_no,
                    fields.len(),
                    self.width
                )));
            }
            let line_no = self.line_no;
            let (negative, amount) = signed_fen(fields[c.order_amount], line_no)?;
            let (_, fee) = signed_fen(fields[c.fee], line_no)?;
            let record = match fields[c.kind] {
                "交易" => BillRecord::Payment {
                    out_trade_no: fields[c.out_trade_no].to_string(),
                    channel_trade_no: fields[c.trade_no].to_string(),
                    amount,
                    currency: "CNY".into(),
                    fee_milli: fee * 1000,
                },
                "退款" => BillRecord::Refund {
                    out_trade_no: fields[c.out_trade_no].to_string(),
                    out_refund_no: fields[c.refund_request_no].to_string(),
                    channel_refund_no: String::new(),
                    amount,
                    currency: "CNY".into(),
                    succeeded: true,
                },
                // Other business kinds (transfers, …) moved no trade money.
                _ => continue,
            };
            if negative != matches!(record, BillRecord::Refund { .. }) {
                return Err(ChannelError::Protocol(format!(
                    "Alipay bill line {line_no}: the amount's sign does not fit its 业务类型"
                )));
            }
            return Ok(Some(record));
        }
    }
}

impl<R: BufRead> Iterator for DetailReader<R> {
    type Item = Result<BillRecord, ChannelError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_record() {
            Ok(r) => r.map(Ok),
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Finds the detail file in the bill zip at `zip_path` and writes it,
/// decompressed and still GBK, to `dest` (streamed, never whole in memory).
/// Blocking I/O.
pub fn extract_detail(
    zip_path: &std::path::Path,
    dest: &std::path::Path,
) -> Result<(), ChannelError> {
    let file = std::fs::File::open(zip_path).map_err(crate::bill::io)?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| ChannelError::Protocol(format!("the Alipay bill is not a zip: {e}")))?;
    let mut detail = None;
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| ChannelError::Protocol(format!("the Alipay bill zip: {e}")))?;
        let mut head = Vec::new();
        // Enough for the comment lines and the header row.
        (&mut entry)
            .take(4096)
            .read_to_end(&mut head)
            .map_err(crate::bill::io)?;
        let text = gbk_line(&head);
        let is_detail = text
            .lines()
            .any(|l| l.trim_start_matches('\u{feff}').starts_with(HEADER_FIRST));
        if is_detail && !gbk_line(entry.name_raw()).contains("汇总") {
            if detail.is_some() {
                return Err(ChannelError::Protocol(
                    "the Alipay bill zip holds two details".into(),
                ));
            }
            detail = Some(i);
        }
    }
    let index = detail
        .ok_or_else(|| ChannelError::Protocol("the Alipay bill zip holds no detail file".into()))?;
    let mut entry = zip
        .by_index(index)
        .map_err(|e| ChannelError::Protocol(format!("the Alipay bill zip: {e}")))?;
    let mut out = std::fs::File::create(dest).map_err(crate::bill::io)?;
    let written = std::io::copy(
        &mut (&mut entry).take(crate::bill::MAX_BILL_BYTES + 1),
        &mut out,
    )
    .map_err(crate::bill::io)?;
    if written > crate::bill::MAX_BILL_BYTES {
        return Err(ChannelError::Protocol(format!(
            "the Alipay bill's detail is larger than {} bytes",
            crate::bill::MAX_BILL_BYTES
        )));
    }
    Ok(())
}

/// The records of an extracted detail file.
pub fn records(
    file: std::fs::File,
) -> Box<dyn Iterator<Item = Result<BillRecord, ChannelError>> + Send> {
    Box::new(DetailReader::new(BufReader::new(file)))
}
