//! WeChat Pay API v3 signing rules, pure functions only.
//!
//! - request:   `METHOD\nCANONICAL_URL\nTIMESTAMP\nNONCE\nBODY\n`, SHA256withRSA
//!   with the merchant key, sent as `Authorization: WECHATPAY2-SHA256-RSA2048 …`;
//! - response and callback: `TIMESTAMP\nNONCE\nBODY\n` signed by the platform;
//! - encrypted resources: AEAD_AES_256_GCM with the APIv3 key;
//! - client-side invocation: JSAPI/mini-program `paySign`, App `sign`.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use crate::keys::{PrivateKey, PublicKey};
use crate::ChannelError;

/// The only signature scheme paymux speaks (RSA; not the ShangMi variant).
pub const SCHEMA: &str = "WECHATPAY2-SHA256-RSA2048";

/// Largest clock difference accepted on a signed response or callback.
/// WeChat's SDKs use five minutes.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// Prefix of the deliberately invalid signatures WeChat sends to probe that
/// merchants really verify.
pub const SIGNATURE_PROBE_PREFIX: &str = "WECHATPAY/SIGNTEST/";

/// The request string-to-sign. `canonical_url` is the URL's path plus `?query`
/// when there is one; `body` the exact bytes sent (empty for GET). A body that
/// already ends in `\n` still gets the closing `\n`.
pub fn request_message(
    method: &str,
    canonical_url: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut m = format!("{method}\n{canonical_url}\n{timestamp}\n{nonce}\n").into_bytes();
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// The response / callback string-to-sign (an empty 204 body gives `ts\nnonce\n\n`).
pub fn response_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = format!("{timestamp}\n{nonce}\n").into_bytes();
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// The five fields of an `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub mchid: String,
    pub nonce_str: String,
    pub timestamp: String,
    pub serial_no: String,
    pub signature: String,
}

impl Authorization {
    /// Signs a request and returns its header fields.
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        key: &PrivateKey,
        mchid: &str,
        serial_no: &str,
        method: &str,
        canonical_url: &str,
        timestamp: i64,
        nonce: &str,
        body: &[u8],
    ) -> Result<Self, ChannelError> {
        let message = request_message(method, canonical_url, timestamp, nonce, body);
        Ok(Authorization {
            mchid: mchid.to_string(),
            nonce_str: nonce.to_string(),
            timestamp: timestamp.to_string(),
            serial_no: serial_no.to_string(),
            signature: key.sign_sha256(&message)?,
        })
    }

    /// The header value, fields in the order the official Go SDK emits them.
    pub fn header_value(&self) -> String {
        format!(
            "{SCHEMA} mchid=\"{}\",nonce_str=\"{}\",timestamp=\"{}\",serial_no=\"{}\",signature=\"{}\"",
            self.mchid, self.nonce_str, self.timestamp, self.serial_no, self.signature
        )
    }

    /// Parses a header value. WeChat documents the fields as unordered and the
    /// SDKs differ in their order, so any order is accepted; every field is required.
    pub fn parse(value: &str) -> Result<Self, ChannelError> {
        let bad =
            |why: &str| ChannelError::InvalidSignature(format!("Authorization header: {why}"));
        let rest = value
            .trim()
            .strip_prefix(SCHEMA)
            .ok_or_else(|| bad("unsupported schema"))?;
        if !rest.starts_with(' ') {
            return Err(bad("unsupported schema"));
        }
        let (mut mchid, mut nonce, mut ts, mut serial, mut sig) = (None, None, None, None, None);
        for part in rest.trim().split(',') {
            let (k, v) = part
                .trim()
                .split_once('=')
                .ok_or_else(|| bad("malformed field"))?;
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .ok_or_else(|| bad("unquoted value"))?
                .to_string();
            let slot = match k.trim() {
                "mchid" => &mut mchid,
                "nonce_str" => &mut nonce,
                "timestamp" => &mut ts,
                "serial_no" => &mut serial,
                "signature" => &mut sig,
                _ => continue,
            };
            if slot.replace(v).is_some() {
                return Err(bad("duplicate field"));
            }
        }
        Ok(Authorization {
            mchid: mchid.ok_or_else(|| bad("missing mchid"))?,
            nonce_str: nonce.ok_or_else(|| bad("missing nonce_str"))?,
            timestamp: ts.ok_or_else(|| bad("missing timestamp"))?,
            serial_no: serial.ok_or_else(|| bad("missing serial_no"))?,
            signature: sig.ok_or_else(|| bad("missing signature"))?,
        })
    }
}

/// Signs a response or callback body (what the platform side does).
pub fn sign_response(
    key: &PrivateKey,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> Result<String, ChannelError> {
    key.sign_sha256(&response_message(timestamp, nonce, body))
}

/// Verifies `Wechatpay-Signature` over the raw body. Probe signatures fail.
pub fn verify_response(
    key: &PublicKey,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
    signature: &str,
) -> Result<(), ChannelError> {
    if signature.starts_with(SIGNATURE_PROBE_PREFIX) {
        return Err(ChannelError::InvalidSignature(
            "WeChat signature probe".into(),
        ));
    }
    key.verify_sha256(&response_message(timestamp, nonce, body), signature)
}

fn aead_key(apiv3_key: &[u8]) -> Result<LessSafeKey, ChannelError> {
    // AEAD_AES_256_GCM needs the 32-byte APIv3 key; anything else is a
    // configuration mistake, not a tampered message.
    let key = UnboundKey::new(&AES_256_GCM, apiv3_key)
        .map_err(|_| ChannelError::Config("the APIv3 key must be exactly 32 bytes".into()))?;
    Ok(LessSafeKey::new(key))
}

fn aead_nonce(nonce: &str) -> Result<Nonce, ChannelError> {
    // WeChat's nonces are 12 ASCII characters, used as the 96-bit GCM IV.
    Nonce::try_assume_unique_for_key(nonce.as_bytes()).map_err(|_| ChannelError::Decrypt)
}

/// Decrypts an AEAD_AES_256_GCM resource: `ciphertext_b64` is
/// base64(ciphertext || 16-byte tag), `associated_data` may be empty.
pub fn decrypt_resource(
    apiv3_key: &[u8],
    nonce: &str,
    associated_data: &str,
    ciphertext_b64: &str,
) -> Result<Vec<u8>, ChannelError> {
    let key = aead_key(apiv3_key)?;
    let nonce = aead_nonce(nonce)?;
    let mut data = B64
        .decode(ciphertext_b64.trim())
        .map_err(|_| ChannelError::Decrypt)?;
    let plain = key
        .open_in_place(nonce, Aad::from(associated_data.as_bytes()), &mut data)
        .map_err(|_| ChannelError::Decrypt)?;
    Ok(plain.to_vec())
}

/// Encrypts like WeChat does for callbacks and certificates (the simulator's side).
/// `nonce` must be 12 bytes and never reused with the same key.
pub fn encrypt_resource(
    apiv3_key: &[u8],
    nonce: &str,
    associated_data: &str,
    plaintext: &[u8],
) -> Result<String, ChannelError> {
    let key = aead_key(apiv3_key)?;
    let nonce = Nonce::try_assume_unique_for_key(nonce.as_bytes())
        .map_err(|_| ChannelError::Config("AEAD nonce must be 12 bytes".into()))?;
    let mut data = plaintext.to_vec();
    key.seal_in_place_append_tag(nonce, Aad::from(associated_data.as_bytes()), &mut data)
        .map_err(|_| ChannelError::Config("AEAD encryption failed".into()))?;
    Ok(B64.encode(data))
}

/// The string a JSAPI / mini-program `paySign` covers.
pub fn jsapi_pay_message(app_id: &str, time_stamp: &str, nonce_str: &str, package: &str) -> String {
    format!("{app_id}\n{time_stamp}\n{nonce_str}\n{package}\n")
}

/// The string an App payment `sign` covers (raw prepay_id, not `prepay_id=`).
pub fn app_pay_message(appid: &str, timestamp: &str, noncestr: &str, prepayid: &str) -> String {
    format!("{appid}\n{timestamp}\n{noncestr}\n{prepayid}\n")
}

/// A random nonce of `len` characters from [0-9A-Z] (WeChat accepts any
/// printable string up to 32 characters; 12 are needed for AEAD nonces).
pub fn random_nonce(len: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut bytes = vec![0u8; len];
    // If the system RNG fails there is nothing sensible left to do; aws-lc-rs
    // aborts internally in that case anyway, so the error path is unreachable.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    // The modulo is slightly biased; irrelevant for a value that only has to
    // be unpredictable and unique, not uniformly distributed.
    bytes
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect()
}
