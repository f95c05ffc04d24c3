//! Channel bills from outside: WeChat Pay's trade bill, as plain text and
//! gzip-compressed, read to the end (rows, records and the summary check).
#![no_main]

use std::io::{BufReader, Cursor};

use libfuzzer_sys::fuzz_target;
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
});
