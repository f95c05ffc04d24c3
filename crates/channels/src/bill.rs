//! Channel bills (对账单) as paymux reads them, whatever the channel's
//! format: a stream of [`BillRecord`]s read from a file on disk, so a bill
//! of millions of rows is matched in bounded memory.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::ChannelError;

/// One line of a bill that moved money, in minor units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BillRecord {
    /// A trade the channel settled as paid.
    Payment {
        out_trade_no: String,
        channel_trade_no: String,
        amount: i64,
        currency: String,
        /// The channel's fee, in 1/1000 of a minor unit (WeChat states fees
        /// to five decimals of a yuan).
        fee_milli: i64,
    },
    /// A refund the channel made.
    Refund {
        out_trade_no: String,
        out_refund_no: String,
        channel_refund_no: String,
        amount: i64,
        currency: String,
        /// `true` when the channel reports the refund as done.
        succeeded: bool,
    },
}

/// A bill downloaded to a temporary file (removed on drop), its integrity
/// already checked, ready to be read.
#[derive(Debug)]
pub struct BillFile {
    /// `None` for a day the channel has no bill for (nothing moved).
    path: Option<PathBuf>,
    format: BillFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillFormat {
    /// WeChat Pay's trade bill, gzip-compressed.
    WechatTradeGzip,
    /// The detail file of Alipay's trade bill, taken out of its zip (GBK).
    AlipayDetail,
}

/// Largest bill paymux downloads or unpacks (about 30 million rows).
pub const MAX_BILL_BYTES: u64 = 8 << 30;

/// Longest line paymux reads from a bill; anything longer is an error, so a
/// hostile or broken file cannot make a line grow without bound.
pub const MAX_LINE: usize = 64 * 1024;

impl BillFile {
    pub fn new(path: PathBuf, format: BillFormat) -> Self {
        BillFile {
            path: Some(path),
            format,
        }
    }

    /// The bill of a day on which nothing moved.
    pub fn empty() -> Self {
        BillFile {
            path: None,
            format: BillFormat::WechatTradeGzip,
        }
    }

    /// Where the file is (`None` for an empty bill).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The file's records, read as they are needed. Blocking I/O: call it
    /// from a blocking thread.
    pub fn records(
        &self,
    ) -> Result<Box<dyn Iterator<Item = Result<BillRecord, ChannelError>> + Send>, ChannelError>
    {
        let Some(path) = &self.path else {
            return Ok(Box::new(std::iter::empty()));
        };
        let file = File::open(path).map_err(io)?;
        match self.format {
            BillFormat::WechatTradeGzip => {
                let reader = BufReader::new(flate2::read::GzDecoder::new(file));
                Ok(Box::new(
                    crate::wechat::bill::TradeBillReader::new(reader)?.records(),
                ))
            }
            BillFormat::AlipayDetail => Ok(crate::alipay::bill::records(file)),
        }
    }
}

impl Drop for BillFile {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A temporary file that is removed when this is dropped.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(what: &str) -> Self {
        Scratch(temp_path(what))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A fresh path for a downloaded bill in the system's temporary directory.
pub fn temp_path(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!("paymux-{what}-{}", paymux_core::new_id("bill")))
}

/// Streams a download's body to `path`, at most `max` bytes, never
/// holding it in memory (small writes to the page cache).
pub async fn download_to(
    mut resp: reqwest::Response,
    path: &Path,
    max: u64,
) -> Result<(), ChannelError> {
    let mut out = File::create(path).map_err(io)?;
    let mut written: u64 = 0;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| ChannelError::Transport(format!("downloading the bill: {e}")))?
    {
        written += chunk.len() as u64;
        if written > max {
            return Err(ChannelError::Protocol(format!(
                "the bill is larger than {max} bytes"
            )));
        }
        std::io::Write::write_all(&mut out, &chunk).map_err(io)?;
    }
    Ok(())
}

pub(crate) fn io(e: std::io::Error) -> ChannelError {
    ChannelError::Protocol(format!("reading the bill: {e}"))
}

/// Reads one line (without its line ending) into `buf`, at most
/// [`MAX_LINE`] bytes. `false` at the end of the input.
pub(crate) fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> Result<bool, ChannelError> {
    buf.clear();
    let n = r
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', buf)
        .map_err(io)?;
    if n == 0 {
        return Ok(false);
    }
    if buf.len() > MAX_LINE {
        return Err(ChannelError::Protocol(format!(
            "a bill line is longer than {MAX_LINE} bytes"
        )));
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(true)
}

/// A decimal amount such as `"12.30"` or `"45.0"` scaled by `10^scale` into
/// an integer, exactly: more decimals than `scale` (unless zeros), a sign,
/// or anything but digits and one point is an error.
pub fn parse_decimal(text: &str, scale: u32) -> Result<i64, String> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(frac) {
        return Err(format!("{text:?} is not an amount"));
    }
    let (kept, rest) = frac.split_at(frac.len().min(scale as usize));
    if rest.bytes().any(|b| b != b'0') {
        return Err(format!("{text:?} has more than {scale} decimals"));
    }
    let mut value: i64 = whole
        .parse()
        .map_err(|_| format!("{text:?} is too large"))?;
    for i in 0..scale as usize {
        let d = kept.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(d))
            .ok_or_else(|| format!("{text:?} is too large"))?;
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_scale_exactly() {
        assert_eq!(parse_decimal("0.01", 2), Ok(1));
        assert_eq!(parse_decimal("45.0", 2), Ok(4500));
        assert_eq!(parse_decimal("12", 2), Ok(1200));
        assert_eq!(parse_decimal("0.01000", 2), Ok(1));
        assert_eq!(parse_decimal("0.00600", 5), Ok(600));
        assert!(parse_decimal("0.005", 2).is_err());
        assert!(parse_decimal("-1.00", 2).is_err());
        assert!(parse_decimal("", 2).is_err());
        assert!(parse_decimal(".5", 2).is_err());
        assert!(parse_decimal("1.2.3", 2).is_err());
        assert!(parse_decimal("99999999999999999999", 2).is_err());
        assert!(parse_decimal("92233720368547758.07", 2).is_ok());
        assert!(parse_decimal("92233720368547758.08", 2).is_err());
    }

    #[test]
    fn lines_are_bounded() {
        let mut buf = Vec::new();
        let mut r = std::io::Cursor::new(b"a,b\r\nlast".to_vec());
        assert!(read_line(&mut r, &mut buf).unwrap());
        assert_eq!(buf, b"a,b");
        assert!(read_line(&mut r, &mut buf).unwrap());
        assert_eq!(buf, b"last");
        assert!(!read_line(&mut r, &mut buf).unwrap());
        let long = vec![b'x'; MAX_LINE + 10];
        assert!(read_line(&mut std::io::Cursor::new(long), &mut buf).is_err());
    }
}
