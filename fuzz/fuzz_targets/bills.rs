//! Channel bills from outside: WeChat Pay's trade bill, as plain text and
//! gzip-compressed, read to the end (rows, records and the summary check);
//! Alipay's GBK detail file, and the same bytes as a zip to unpack.
#![no_main]

use std::io::{BufReader, Cursor};

use libfuzzer_sys::fuzz_target;
use paymux_channels::alipay::bill::{extract_detail, DetailReader};
use paymux_channels::bill::Scratch;
use paymux_channels::wechat::bill::TradeBillReader;

fuzz_target!(|data: &[u8]| {
    if let Ok(reader) = TradeBillReader::new(Cursor::new(data)) {
        for record in reader.records() {
            let _ = record;
        }
    }
    let gz = BufReader::new(flate2::read::GzDecoder::new(Cursor::new(data)));
    if let Ok(reader) = TradeBillReader::new(gz) {
        for row in reader.take(100_000) {
            let _ = row;
        }
    }
    for record in DetailReader::new(Cursor::new(data)) {
        let _ = record;
    }
    if data.starts_with(b"PK") {
        let (zip, detail) = (Scratch::new("fuzz-zip"), Scratch::new("fuzz-detail"));
        if std::fs::write(zip.path(), data).is_ok() {
            let _ = extract_detail(zip.path(), detail.path());
        }
    }
});
