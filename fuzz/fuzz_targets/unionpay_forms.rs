//! UnionPay back notifications and answers: form and answer parsing, the
//! string that is signed, amounts, times and order ids.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paymux_channels::unionpay::sign::{
    digest_hex, out_trade_no_of, parse_acp_time, parse_answer, parse_form, string_data,
    txn_amt_to_fen,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(params) = parse_form(data) {
        let _ = string_data(&params);
        let _ = digest_hex(&params);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(params) = parse_answer(text) {
            let _ = string_data(&params);
        }
        if let Ok(fen) = txn_amt_to_fen(text) {
            assert!(fen >= 0);
        }
        let _ = parse_acp_time(text);
        let _ = out_trade_no_of(text);
    }
});
