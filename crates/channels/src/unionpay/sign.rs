//! China UnionPay online payments (ACP 5.1.0) rules, pure functions only.
//!
//! - signing (`signMethod=01`): `stringData` is `k=v` for every field but
//!   `signature`, keys sorted by byte order, raw values, joined by `&`; the
//!   lowercase hex SHA-256 of it is signed with SHA256withRSA (so the RSA
//!   signature covers the 64 ASCII hex characters, not the digest bytes);
//! - `certId` is the signing certificate's serial number in decimal;
//! - amounts: `txnAmt` is fen as a plain digit string;
//! - times: `txnTime` / `payTimeout` are `yyyyMMddHHmmss` in China Standard Time;
//! - `orderId`: 8–40 letters and digits, derived from paymux's payment id.

use std::collections::BTreeMap;

use aws_lc_rs::digest;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use paymux_core::clock::china_standard_time;

use crate::keys::{PrivateKey, PublicKey};
use crate::ChannelError;

/// The protocol version paymux speaks.
pub const VERSION: &str = "5.1.0";
/// Certificate signatures (RSA); `11`/`12` are shared-key schemes paymux does not use.
pub const SIGN_METHOD: &str = "01";
/// `yyyyMMddHHmmss`, China Standard Time.
pub const TIME_FORMAT: &str = "%Y%m%d%H%M%S";
/// Renminbi, the only currency of domestic merchants.
pub const CURRENCY_CNY: &str = "156";

/// Transaction types (`txnType`).
pub const TXN_QUERY: &str = "00";
pub const TXN_CONSUME: &str = "01";
/// Refund (退货) of a consumption.
pub const TXN_REFUND: &str = "04";

/// Answers that mean "done" (`respCode` / `origRespCode`): `00` success and
/// `A6` partial success, which UnionPay counts as paid.
pub fn is_success(code: &str) -> bool {
    code == "00" || code == "A6"
}

/// Fields in the order UnionPay sorts them (byte order of the keys).
pub type Params = BTreeMap<String, String>;

/// The string UnionPay signs: every field but `signature`, `k=v`, sorted by
/// key, joined with `&`. Values are raw, never URL-encoded. Empty values are
/// included as received (requests simply never carry empty fields).
pub fn string_data(params: &Params) -> String {
    let mut out = String::new();
    for (k, v) in params {
        if k == "signature" {
            continue;
        }
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Lowercase hex SHA-256 of `stringData`: the bytes RSA actually signs.
pub fn digest_hex(params: &Params) -> String {
    hex::encode(digest::digest(&digest::SHA256, string_data(params).as_bytes()).as_ref())
}

/// `signature` for `params` (which must already carry `certId` and `signMethod`).
pub fn sign(key: &PrivateKey, params: &Params) -> Result<String, ChannelError> {
    key.sign_sha256(digest_hex(params).as_bytes())
}

/// Verifies `signature` over `params` with `key`. Says nothing about whose key
/// it is: callers check the certificate first ([`super::certs::TrustAnchors`]).
pub fn verify(key: &PublicKey, params: &Params) -> Result<(), ChannelError> {
    let sig = params
        .get("signature")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ChannelError::InvalidSignature("no signature field".into()))?;
    key.verify_sha256(digest_hex(params).as_bytes(), sig)
}

/// `yyyyMMddHHmmss` in China Standard Time.
pub fn to_acp_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&china_standard_time())
        .format(TIME_FORMAT)
        .to_string()
}

/// Parses `yyyyMMddHHmmss` (China Standard Time).
pub fn parse_acp_time(s: &str) -> Result<DateTime<Utc>, ChannelError> {
    if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ChannelError::Protocol(format!(
            "time {s:?} is not yyyyMMddHHmmss"
        )));
    }
    let naive = NaiveDateTime::parse_from_str(s, TIME_FORMAT)
        .map_err(|e| ChannelError::Protocol(format!("time {s:?}: {e}")))?;
    china_standard_time()
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| ChannelError::Protocol(format!("time {s:?} is ambiguous")))
}

/// fen → `txnAmt`: a plain digit string, no sign, no decimals.
pub fn fen_to_txn_amt(minor: i64) -> Result<String, ChannelError> {
    if minor <= 0 {
        return Err(ChannelError::Rejected {
            code: "INVALID_PARAMETER".into(),
            message: format!("UnionPay takes positive amounts, not {minor}"),
        });
    }
    Ok(minor.to_string())
}

/// `txnAmt` → fen, exactly: only 1–12 plain digits are an amount.
pub fn txn_amt_to_fen(s: &str) -> Result<i64, ChannelError> {
    if s.is_empty() || s.len() > 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ChannelError::Protocol(format!(
            "txnAmt {s:?} is not a fen amount"
        )));
    }
    s.parse()
        .map_err(|_| ChannelError::Protocol(format!("txnAmt {s:?} is not a fen amount")))
}

/// paymux's `out_trade_no` as UnionPay's `orderId` (8–40 letters and digits).
/// Payment ids are `pay_<ULID>`: dropping the one underscore keeps them
/// unique (the prefix and the ULID have fixed lengths), and
/// [`out_trade_no_of`] puts it back.
pub fn order_id_of(out_trade_no: &str) -> Result<String, ChannelError> {
    let order_id: String = out_trade_no.chars().filter(|c| *c != '_').collect();
    if !(8..=40).contains(&order_id.len()) || !order_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ChannelError::Rejected {
            code: "INVALID_PARAMETER".into(),
            message: format!(
                "{out_trade_no:?} cannot be a UnionPay orderId (8-40 letters and digits)"
            ),
        });
    }
    Ok(order_id)
}

/// The inverse of [`order_id_of`] for payment ids: `pay01H…` (`pay` and a
/// 26-character ULID) → `pay_01H…`; any other orderId is returned as it is.
pub fn out_trade_no_of(order_id: &str) -> String {
    with_underscore("pay", order_id)
}

/// The inverse of [`order_id_of`] for refund ids: `ref01H…` → `ref_01H…`;
/// any other orderId is returned as it is.
pub fn out_refund_no_of(order_id: &str) -> String {
    with_underscore("ref", order_id)
}

/// `{prefix}{ULID}` → `{prefix}_{ULID}`, only for a real ULID after the prefix.
fn with_underscore(prefix: &str, order_id: &str) -> String {
    match order_id.strip_prefix(prefix) {
        Some(ulid) if ulid.len() == 26 && ulid_millis(ulid).is_some() => {
            format!("{prefix}_{ulid}")
        }
        _ => order_id.to_string(),
    }
}

/// The creation time carried in a payment id's ULID (its first 48 bits are
/// milliseconds since the epoch). UnionPay identifies an order by `orderId`
/// *and* `txnTime`, and `query` is given only the id: deriving `txnTime`
/// from the id makes the prepay and every later query agree without storing it.
pub fn created_at_of(out_trade_no: &str) -> Option<DateTime<Utc>> {
    let ulid = out_trade_no.strip_prefix("pay_")?;
    if ulid.len() != 26 {
        return None;
    }
    let ms = ulid_millis(ulid)?;
    DateTime::<Utc>::from_timestamp_millis(i64::try_from(ms).ok()?)
}

fn ulid_millis(ulid: &str) -> Option<u64> {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    if !ulid
        .bytes()
        .all(|b| ALPHABET.contains(&b.to_ascii_uppercase()))
    {
        return None;
    }
    let mut ms: u64 = 0;
    for b in ulid.bytes().take(10) {
        let v = ALPHABET.iter().position(|a| *a == b.to_ascii_uppercase())? as u64;
        ms = ms.checked_mul(32)?.checked_add(v)?;
    }
    // 10 characters are 50 bits; a ULID's timestamp is 48 of them.
    (ms < 1 << 48).then_some(ms)
}

/// Parses an `application/x-www-form-urlencoded` body (callbacks, requests).
/// `signature` and `signPubKeyCert` arrive percent-encoded (`+` as `%2B`).
/// A repeated key is refused: it would make `stringData` ambiguous.
pub fn parse_form(body: &[u8]) -> Result<Params, ChannelError> {
    let mut params = Params::new();
    for (k, v) in form_urlencoded::parse(body) {
        if params.insert(k.to_string(), v.to_string()).is_some() {
            return Err(ChannelError::Protocol(format!("field {k} repeated")));
        }
    }
    Ok(params)
}

/// Encodes fields as a form body (after signing).
pub fn encode_form(params: &Params) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}

/// Parses a synchronous gateway answer. UnionPay answers `k=v&k=v` with raw,
/// *unencoded* values (base64 `+` stays `+`; certificates keep their line
/// breaks), so this splits at `&` outside `{…}`/`[…]` (reserved fields carry
/// nested `{k=v&…}`) and each pair at its first `=`.
pub fn parse_answer(body: &str) -> Result<Params, ChannelError> {
    let mut params = Params::new();
    let mut depth = 0i32;
    let mut start = 0usize;
    let bytes = body.as_bytes();
    let mut push = |pair: &str| -> Result<(), ChannelError> {
        if pair.is_empty() {
            return Ok(());
        }
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            ChannelError::Protocol(format!("answer field without '=': {pair:.40}"))
        })?;
        if params.insert(k.to_string(), v.to_string()).is_some() {
            return Err(ChannelError::Protocol(format!("answer field {k} repeated")));
        }
        Ok(())
    };
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth -= 1,
            b'&' if depth == 0 => {
                push(&body[start..i])?;
                start = i + 1;
            }
            _ => {}
        }
    }
    push(body[start..].trim_end_matches(['\r', '\n']))?;
    Ok(params)
}

/// Writes an answer the way the gateway does: raw `k=v&…`, sorted.
pub fn encode_answer(params: &Params) -> String {
    let mut out = String::new();
    for (k, v) in params {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_round_trip() {
        let id = "pay_01KB0Z8N5V7Q4W3X2Y1Z0A9B8C";
        let order_id = order_id_of(id).unwrap();
        assert_eq!(order_id, "pay01KB0Z8N5V7Q4W3X2Y1Z0A9B8C");
        assert_eq!(out_trade_no_of(&order_id), id);
        assert_eq!(
            out_trade_no_of("yansongda20220903065448"),
            "yansongda20220903065448"
        );
        assert!(order_id_of("short").is_err());
        let refund = "ref_01KB0Z8N5V7Q4W3X2Y1Z0A9B8C";
        let order_id = order_id_of(refund).unwrap();
        assert_eq!(order_id, "ref01KB0Z8N5V7Q4W3X2Y1Z0A9B8C");
        assert_eq!(out_refund_no_of(&order_id), refund);
        // A payment's orderId is not a refund id, nor the other way round.
        assert_eq!(
            out_refund_no_of("pay01KB0Z8N5V7Q4W3X2Y1Z0A9B8C"),
            "pay01KB0Z8N5V7Q4W3X2Y1Z0A9B8C"
        );
        assert_eq!(out_trade_no_of(&order_id), order_id);
        assert!(order_id_of("pay-01KB0Z8N5V7Q4W3X").is_err());
    }

    #[test]
    fn created_at_comes_from_the_ulid() {
        let before = Utc::now().timestamp_millis();
        let id = paymux_core::PaymentId::generate();
        let after = Utc::now().timestamp_millis();
        let t = created_at_of(id.as_str()).unwrap().timestamp_millis();
        assert!(before <= t && t <= after, "{before} {t} {after}");
        // Decoding by hand: "0000000010" is 32 ms.
        let t = created_at_of("pay_0000000010ZZZZZZZZZZZZZZZZ").unwrap();
        assert_eq!(t.timestamp_millis(), 32);
        assert_eq!(to_acp_time(t), "19700101080000");
        assert!(created_at_of("paymuxprobe").is_none());
        assert!(created_at_of("pay_0000000010ZZZZZZZZZZZZZZZU").is_none());
    }

    #[test]
    fn amounts_are_exact() {
        assert_eq!(fen_to_txn_amt(1999).unwrap(), "1999");
        assert!(fen_to_txn_amt(0).is_err());
        assert_eq!(txn_amt_to_fen("000136").unwrap(), 136);
        for bad in ["", "1.00", "-1", "1e3", " 1", "1234567890123"] {
            assert!(txn_amt_to_fen(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_are_china_time() {
        let t = parse_acp_time("20220903065448").unwrap();
        assert_eq!(t.to_rfc3339(), "2022-09-02T22:54:48+00:00");
        assert_eq!(to_acp_time(t), "20220903065448");
        assert!(parse_acp_time("2022-09-03").is_err());
    }

    #[test]
    fn answers_split_outside_braces() {
        let p = parse_answer("a=1&reserved={x=1&y=2}&sig=ab+/c==&cert=-----X\r\nY=\r\n").unwrap();
        assert_eq!(p["reserved"], "{x=1&y=2}");
        assert_eq!(p["sig"], "ab+/c==");
        assert_eq!(p["cert"], "-----X\r\nY=");
        assert_eq!(parse_answer(&encode_answer(&p)).unwrap(), p);
        assert!(parse_answer("a=1&a=2").is_err());
    }
}
