//! WeChat Pay callbacks and answers: the notification body, the decrypted
//! transaction or refund, the Authorization header, and AEAD decryption of
//! attacker-chosen ciphertext.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paymux_channels::wechat::sign::{decrypt_resource, Authorization};
use paymux_channels::wechat::types::{NotifyBody, RefundRecord, Transaction};

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<NotifyBody>(data);
    let _ = serde_json::from_slice::<Transaction>(data);
    let _ = serde_json::from_slice::<RefundRecord>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Authorization::parse(text);
        let mut parts = text.splitn(3, '\n');
        let (nonce, aad, ct) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let _ = decrypt_resource(b"0123456789abcdef0123456789abcdef", nonce, aad, ct);
    }
});
